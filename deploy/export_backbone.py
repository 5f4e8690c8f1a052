#!/usr/bin/env python3
"""Export a torchvision ResNet backbone to ONNX plus the hiercore-edge sidecar (backbone.json).

Patch layers: layer2 (stride 8) and layer3 (stride 16), as in PatchCore. Semantic layer: layer4,
global-average-pooled. Needs PyTorch and torchvision; pretrained ImageNet weights need internet the
first time (torchvision caches them). --weights none exports random weights (for testing the loader).

  python3 deploy/export_backbone.py --arch wide_resnet50_2 --out models/wrn50
  hiercore-edge evaluate --backbone models/wrn50 ...
"""
import argparse
import hashlib
import json
import os
import sys

import torch
import torchvision

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
CHANNELS = {
    "resnet18": (128, 256, 512),
    "resnet50": (512, 1024, 2048),
    "wide_resnet50_2": (512, 1024, 2048),
}


class Taps(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        l2 = n.layer2(n.layer1(x))
        l3 = n.layer3(l2)
        l4 = n.layer4(l3)
        return l2, l3, torch.mean(l4, dim=(2, 3))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(CHANNELS), default="wide_resnet50_2")
    ap.add_argument("--weights", choices=["imagenet", "none"], default="imagenet")
    ap.add_argument("--size", type=int, default=224, help="nominal input size recorded in the sidecar")
    ap.add_argument("--out", required=True, help="output directory")
    a = ap.parse_args()

    ctor = getattr(torchvision.models, a.arch)
    if a.weights == "imagenet":
        try:
            net = ctor(weights="DEFAULT")
        except TypeError:  # torchvision < 0.13
            net = ctor(pretrained=True)
    else:
        try:
            net = ctor(weights=None)
        except TypeError:
            net = ctor(pretrained=False)
    model = Taps(net.eval())
    os.makedirs(a.out, exist_ok=True)
    onnx_path = os.path.join(a.out, "backbone.onnx")
    dummy = torch.zeros(1, 3, a.size, a.size)
    with torch.no_grad():
        torch.onnx.export(
            model, dummy, onnx_path, opset_version=17,
            input_names=["image"], output_names=["layer2", "layer3", "semantic"],
            dynamic_axes={"image": {2: "height", 3: "width"}, "layer2": {2: "h8", 3: "w8"}, "layer3": {2: "h16", 3: "w16"}},
        )
    with open(onnx_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    c2, c3, c4 = CHANNELS[a.arch]
    sidecar = {
        "format": "hiercore-edge.backbone/1",
        "id": f"{a.arch}-{a.weights}",
        "onnx": "backbone.onnx",
        "onnx_sha256": digest,
        "source": {"file": f"torchvision.models.{a.arch}", "sha256": "", "kind": "torchvision"},
        "input": {
            "name": "image", "layout": "NCHW", "color": "RGB", "height": a.size, "width": a.size, "dynamic_size": True,
            # network input = (pixel/255 - mean) / std
            "pixel": {"scale": [1 / (255 * s) for s in STD], "offset": [-m / s for m, s in zip(MEAN, STD)]},
        },
        "outputs": [
            {"name": "layer2", "role": "patch", "stride": 8, "channels": c2},
            {"name": "layer3", "role": "patch", "stride": 16, "channels": c3},
            {"name": "semantic", "role": "semantic", "stride": 32, "channels": c4},
        ],
    }
    with open(os.path.join(a.out, "backbone.json"), "w") as f:
        json.dump(sidecar, f, indent=2)
        f.write("\n")
    print(f"wrote {onnx_path} and backbone.json ({a.arch}, weights={a.weights})", file=sys.stderr)


if __name__ == "__main__":
    main()
