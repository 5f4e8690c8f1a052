/**
 * Imports the two reference TFLite models from ../shared/models (or $HCE_SHARED/models) and checks
 * that the ONNX graphs classify the sample photos correctly. Skipped, with the reason, where the
 * shared folder is absent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { importTflite } from '../src/features/import-tflite.ts';
import { convertTflite, dequantize, UnsupportedOpError } from '../src/features/tflite/to-onnx.ts';
import { fitImage, readImage, toTensorData } from '../src/features/image.ts';
import { SHARED, tempDir } from './helpers/synthetic.ts';
import type { TfliteModel } from '../src/features/tflite/model.ts';

const MODELS = join(SHARED, 'models');
const skip = existsSync(join(MODELS, 'imagenet_labels.txt')) ? false : `shared models not found at ${MODELS} (set HCE_SHARED)`;

// ImageNet bird classes (1001-label indexing, 0 = background).
const BIRDS = new Set([...range(8, 25), ...range(81, 101), ...range(128, 147)]);
function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

// What a fitting label is for each sample photo.
const EXPECT: Record<string, (label: string, index: number) => boolean> = {
  'cat_720p.jpg': (l) => /cat|tabby/.test(l),
  'hot_dog.jpg': (l) => /hotdog/.test(l),
  'parrot.jpg': (l) => /macaw|lorikeet|parrot|cockatoo/.test(l),
  // Both models call this owl photo a "ruffed grouse": a bird, though not the owl; accept any bird class.
  'owl.jpg': (_l, i) => BIRDS.has(i),
  'grace_hopper.bmp': (l) => /military uniform|suit|bow tie|mortarboard|academic gown/.test(l),
};

for (const file of ['tf2_mobilenet_v2_1.0_224_ptq.tflite', 'mobilenet_v2_1.0_224_quant.tflite']) {
  test(`imported ${file} gives a fitting ImageNet label for every sample photo`, { skip }, async () => {
    const out = tempDir('import');
    const r = importTflite(join(MODELS, file), out);
    assert.deepEqual(
      r.sidecar.outputs.map((o) => [o.name, o.channels, o.stride]),
      [
        ['patch_s8', 192, 8],
        ['patch_s16', 576, 16],
        ['semantic', 1280, 32],
        ['classifier', 1001, 0],
      ],
    );
    const labels = readFileSync(join(MODELS, 'imagenet_labels.txt'), 'utf8').split('\n');
    const session = await ort.InferenceSession.create(r.onnxPath);
    for (const [photo, fits] of Object.entries(EXPECT)) {
      const img = await readImage(join(MODELS, 'samples', photo));
      const { data } = await fitImage(img, 224, 224, 'stretch');
      const x = toTensorData(data, 224, 224, r.sidecar.input.pixel.scale, r.sidecar.input.pixel.offset);
      const res = await session.run({ image: new ort.Tensor('float32', x, [1, 3, 224, 224]) });
      const p = res.classifier.data as Float32Array;
      let best = 0;
      for (let i = 1; i < p.length; i++) if (p[i] > p[best]) best = i;
      assert.ok(fits(labels[best], best), `${file} on ${photo}: top-1 is "${labels[best]}"`);
    }
    await session.release();
  });
}

test('an unsupported operator is named in the error', () => {
  const model: TfliteModel = {
    version: 3,
    tensors: [
      { index: 0, name: 'input', shape: [1, 8, 8, 3], type: 0, buffer: 0 },
      { index: 1, name: 'lstm_out', shape: [1, 8, 8, 3], type: 0, buffer: 0 },
    ],
    inputs: [0],
    outputs: [1],
    operators: [{ opcode: 16, opName: 'LSTM', inputs: [0], outputs: [1] }],
    buffers: [undefined],
  };
  assert.throws(
    () => convertTflite(model),
    (e: Error) => e instanceof UnsupportedOpError && /operator #0 \(LSTM.*not supported/.test(e.message),
  );
});

test("per-channel int8 weights are dequantized with each channel's scale and zero point", () => {
  const raw = Int8Array.from([1, 2, -1, -2, 10, 20]);
  const t = { index: 0, name: 'w', shape: [3, 2], type: 9, buffer: 0, quantization: { scale: [0.5, 0.1, 2], zeroPoint: [0, 1, 0], quantizedDimension: 0 } };
  const out = dequantize(t, new Uint8Array(raw.buffer));
  assert.deepEqual(
    Array.from(out).map((v) => Number(v.toFixed(5))),
    [0.5, 1, -0.2, -0.3, 20, 40],
  );
  const perTensor = { ...t, type: 3, quantization: { scale: [0.25], zeroPoint: [128], quantizedDimension: 0 } };
  const u = dequantize(perTensor, Uint8Array.from([128, 132, 0, 255, 129, 127]));
  assert.deepEqual(Array.from(u), [0, 1, -32, 31.75, 0.25, -0.25]);
});
