/**
 * The built-in fallback backbone: the Keras MobileNetV2 bundled in the npm package nsfwjs 4.3.0 (MIT),
 * imported up to block_10. Its layers up to block_10 kept their ImageNet convolution kernels
 * (`trainable: false` in the saved model); later blocks were fine-tuned for another task and are never
 * read. Patch taps: block_6_expand_relu (stride 8, 192 ch, the input of the stride-16 depthwise conv,
 * as for the Coral model) and block_10_expand_relu (stride 16, 384 ch); semantic: block_10_expand_relu
 * pooled. Input RGB in [0, 1].
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { convertKeras, decodeWeights, type InputPad, type TfjsModel } from './tfjs/keras-to-onnx.ts';
import { SIDECAR_FORMAT, type Sidecar } from './sidecar.ts';
import { sha256, writeFileAtomic } from '../util/files.ts';

export const NSFWJS_VERSION = '4.3.0';
export const FALLBACK_ID = `nsfwjs-${NSFWJS_VERSION}-mobilenet_v2-block10`;
export const FALLBACK_TAPS: NsfwjsTap[] = [
  { layer: 'block_6_expand_relu', name: 'patch_s8', role: 'patch' as const, stride: 8 },
  { layer: 'block_10_expand_relu', name: 'patch_s16', role: 'patch' as const, stride: 16 },
  { layer: 'block_10_expand_relu', name: 'semantic', role: 'semantic' as const, stride: 16, pool: true },
];

/** The Keras models bundled in nsfwjs (dist/models/<name>: model.min.js + base64 weight shards). */
export type NsfwjsModelName = 'mobilenet_v2' | 'inception_v3';

export function loadNsfwjsModel(name: NsfwjsModelName = 'mobilenet_v2'): { model: TfjsModel; shards: Uint8Array; trainable: Record<string, boolean>; dir: string } {
  const req = createRequire(import.meta.url);
  let root: string;
  try {
    // Resolve only: loading nsfwjs itself would need TensorFlow.js, which is not installed.
    root = resolve(req.resolve('nsfwjs'), '..', '..', '..');
  } catch {
    throw new Error('the npm package nsfwjs is not installed (npm ci installs it): it carries the built-in backbones');
  }
  const pkgVersion = JSON.parse(readFileSync(resolve(root, 'package.json'), 'utf8')).version;
  if (pkgVersion !== NSFWJS_VERSION) throw new Error(`nsfwjs ${pkgVersion} is installed, the built-in backbones are pinned to ${NSFWJS_VERSION}: run npm ci`);
  const dir = resolve(root, 'dist', 'models', name);
  const model = req(resolve(dir, 'model.min.js')) as TfjsModel;
  // The manifest names the shards in order; each is a base64 string module.
  const paths = model.weightsManifest.flatMap((g) => g.paths);
  const parts = paths.map((p) => Buffer.from(req(resolve(dir, `${p}.min.js`)) as string, 'base64'));
  const layers = (model.modelTopology.model_config ?? model.modelTopology).config!.layers;
  const trainable = Object.fromEntries(layers.map((l) => [l.name, l.config.trainable !== false]));
  return { model, shards: new Uint8Array(Buffer.concat(parts)), trainable, dir };
}

export function importFallbackBackbone(outDir: string): { sidecar: Sidecar; onnxPath: string; layerCounts: Record<string, number> } {
  const { model, shards, trainable } = loadNsfwjsModel();
  // Refuse to build on layers that were fine-tuned away from ImageNet (a changed package would).
  const convLayers = Object.keys(trainable).filter((n) => /^(Conv1|bn_Conv1|expanded_conv|block_([0-9]|10)_)/.test(n));
  const retrained = convLayers.filter((n) => trainable[n]);
  if (retrained.length) throw new Error(`nsfwjs model has trainable layers inside block_10 (${retrained.slice(0, 3).join(', ')}…): its ImageNet features cannot be trusted`);
  return writeNsfwjsBackbone(outDir, { name: 'mobilenet_v2', id: FALLBACK_ID, taps: FALLBACK_TAPS, model, shards });
}

export interface NsfwjsTap {
  layer: string;
  name: string;
  role: 'patch' | 'semantic';
  stride: number;
  pool?: boolean;
}

/**
 * Converts a bundled nsfwjs model up to its taps and writes backbone.onnx + backbone.json. Both
 * built-ins take RGB in [0, 1], as nsfwjs feeds them and as their batch-norm statistics expect.
 */
export function writeNsfwjsBackbone(
  outDir: string,
  b: { name: NsfwjsModelName; id: string; taps: NsfwjsTap[]; model: TfjsModel; shards: Uint8Array; inputPad?: InputPad },
): { sidecar: Sidecar; onnxPath: string; layerCounts: Record<string, number> } {
  const weights = decodeWeights(b.model.weightsManifest, b.shards);
  const conv = convertKeras(
    b.model,
    weights,
    b.taps.map((t) => ({ layer: t.layer, name: t.name, pool: t.pool })),
    b.inputPad ? { inputPad: b.inputPad } : undefined,
  );
  mkdirSync(outDir, { recursive: true });
  const onnxPath = resolve(outDir, 'backbone.onnx');
  writeFileAtomic(onnxPath, conv.onnx);
  const sidecar: Sidecar = {
    format: SIDECAR_FORMAT,
    id: b.id,
    onnx: 'backbone.onnx',
    onnx_sha256: sha256(conv.onnx),
    source: { file: `nsfwjs@${NSFWJS_VERSION}/dist/models/${b.name}`, sha256: sha256(b.shards), kind: 'tfjs-layers' },
    input: {
      name: conv.inputName,
      layout: 'NCHW',
      color: 'RGB',
      height: conv.inputSize.height,
      width: conv.inputSize.width,
      dynamic_size: true,
      pixel: { scale: [1 / 255, 1 / 255, 1 / 255], offset: [0, 0, 0] },
    },
    outputs: b.taps.map((t) => ({ name: t.name, role: t.role, stride: t.stride, channels: conv.channels[t.name], source: t.layer })),
  };
  writeFileAtomic(resolve(outDir, 'backbone.json'), new TextEncoder().encode(`${JSON.stringify(sidecar, null, 2)}\n`));
  return { sidecar, onnxPath, layerCounts: conv.layerCounts };
}
