/**
 * The second built-in backbone: nsfwjs's Keras InceptionV3 up to mixed5, converted by our own
 * importer, must give the same activations as TensorFlow.js running the original model on the
 * same (reflect-padded) image; and the new Keras layers each match TF.js on a small model.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { importInceptionBackbone, INCEPTION_INPUT_PAD } from '../src/features/import-nsfwjs-inception.ts';
import { loadNsfwjsModel } from '../src/features/import-nsfwjs.ts';
import { FeatureExtractor } from '../src/features/extractor.ts';
import { convertKeras, type KerasLayer, type TfjsModel } from '../src/features/tfjs/keras-to-onnx.ts';
import { syntheticPart, tempDir } from './helpers/synthetic.ts';

async function tfjs() {
  const tf = await import('@tensorflow/tfjs-core');
  await import('@tensorflow/tfjs-backend-cpu');
  const tfl = await import('@tensorflow/tfjs-layers');
  await tf.setBackend('cpu');
  return { tf, tfl };
}

function toNchw(nhwc: Float32Array, h: number, w: number, c: number): Float32Array {
  const out = new Float32Array(nhwc.length);
  for (let k = 0; k < c; k++) for (let i = 0; i < h * w; i++) out[k * h * w + i] = nhwc[i * c + k];
  return out;
}

function maxDiffNhwcNchw(r: Float32Array, o: Float32Array, h: number, w: number, ch: number): number {
  let max = 0;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < ch; c++) max = Math.max(max, Math.abs(r[(y * w + x) * ch + c] - o[(c * h + y) * w + x]));
  return max;
}

test('InceptionV3 backbone: ONNX activations equal TensorFlow.js on the original Keras model', { timeout: 120_000 }, async () => {
  const { tf, tfl } = await tfjs();
  const dir = tempDir('inception');
  const { sidecar, onnxPath } = importInceptionBackbone(dir);
  assert.deepEqual(
    sidecar.outputs.map((o) => [o.name, o.role, o.channels, o.stride, o.source]),
    [
      ['patch_s8', 'patch', 288, 8, 'mixed2'],
      ['patch_s16', 'patch', 768, 16, 'mixed5'],
      ['semantic', 'semantic', 768, 16, 'mixed5'],
    ],
  );
  assert.deepEqual(sidecar.input.pixel, { scale: [1 / 255, 1 / 255, 1 / 255], offset: [0, 0, 0] });
  const { model, shards } = loadNsfwjsModel('inception_v3');
  const H = 100;
  const W = 123; // neither a multiple of 8: the in-graph padding must follow the size
  const p = INCEPTION_INPUT_PAD;
  const PH = H + p.before + p.after + ((8 - (H % 8)) % 8);
  const PW = W + p.before + p.after + ((8 - (W % 8)) % 8);
  const topology = JSON.parse(JSON.stringify(model.modelTopology));
  const cfg = (topology.model_config ?? topology).config;
  cfg.layers = cfg.layers.slice(0, cfg.layers.findIndex((l: { name: string }) => l.name === 'mixed5') + 1);
  cfg.layers[0].config.batch_input_shape = [null, PH, PW, 3];
  cfg.output_layers = [['mixed5', 0, 0]];
  const km = await tfl.loadLayersModel(tf.io.fromMemory(topology as never, model.weightsManifest[0].weights as never, shards.slice().buffer), { strict: false });
  const ref = tfl.model({ inputs: km.inputs, outputs: ['mixed2', 'mixed5'].map((n) => km.getLayer(n).output as never) });
  const rgb = syntheticPart(128, 3).subarray(0, H * W * 3);
  const nhwc = Float32Array.from(rgb, (v) => (v * 2) / 255 - 1);
  const x = tf.tensor4d(nhwc, [1, H, W, 3]);
  const padded = tf.mirrorPad(
    x,
    [
      [0, 0],
      [p.before, PH - H - p.before],
      [p.before, PW - W - p.before],
      [0, 0],
    ],
    'reflect',
  );
  const outs = ref.predict(padded) as unknown as { shape: number[]; data(): Promise<Float32Array> }[];
  const session = await ort.InferenceSession.create(readFileSync(onnxPath));
  const got = await session.run({ image: new ort.Tensor('float32', toNchw(nhwc, H, W, 3), [1, 3, H, W]) });
  assert.deepEqual(got.patch_s8.dims, [1, 288, Math.ceil(H / 8), Math.ceil(W / 8)], 'stride-8 grid is ceil(H/8) x ceil(W/8)');
  for (const [k, name] of ['patch_s8', 'patch_s16'].entries()) {
    const r = await outs[k].data();
    const [, h, w, ch] = outs[k].shape;
    assert.deepEqual(got[name].dims, [1, ch, h, w]);
    let scale = 0;
    for (const v of r) scale = Math.max(scale, Math.abs(v));
    const max = maxDiffNhwcNchw(r, got[name].data as Float32Array, h, w, ch);
    assert.ok(max < 1e-4 * Math.max(1, scale) + 1e-3, `${name}: max abs diff ${max} (max |activation| ${scale})`);
  }
  await session.release();
  // And it works as an engine backbone at a non-square size: P == ceil(H/8) * ceil(W/8).
  const fx = await FeatureExtractor.load(dir, { width: 200, height: 90, fit: 'letterbox', preDim: 256, dim: 64 });
  assert.equal(fx.patchCount, Math.ceil(90 / 8) * Math.ceil(200 / 8));
  assert.equal(fx.semanticDim, 768);
  await fx.release();
});

/** A tiny Keras functional model with random weights, as TF.js would save it. */
function tinyModel(layers: { name: string; class_name: string; config: Record<string, unknown>; from: string[] }[], h: number, w: number, c: number) {
  const ls: KerasLayer[] = [
    { name: 'input_1', class_name: 'InputLayer', config: { batch_input_shape: [null, h, w, c], dtype: 'float32', name: 'input_1' }, inbound_nodes: [] },
    ...layers.map((l) => ({ name: l.name, class_name: l.class_name, config: { name: l.name, ...l.config }, inbound_nodes: [l.from.map((f) => [f, 0, 0, {}])] })),
  ];
  const last = layers[layers.length - 1].name;
  return {
    class_name: 'Model',
    config: { name: 'tiny', layers: ls, input_layers: [['input_1', 0, 0]], output_layers: [[last, 0, 0]] },
    keras_version: '2.2.4',
    backend: 'tensorflow',
  };
}

test('Keras importer: pooling, concatenation, valid convs without bias and BN without scale match TensorFlow.js', { timeout: 60_000 }, async () => {
  const { tf, tfl } = await tfjs();
  const H = 13;
  const W = 10;
  const C = 4;
  const cases: { what: string; layers: Parameters<typeof tinyModel>[0] }[] = [
    { what: 'MaxPooling2D valid 3/2', layers: [{ name: 'p', class_name: 'MaxPooling2D', config: { pool_size: [3, 3], strides: [2, 2], padding: 'valid' }, from: ['input_1'] }] },
    { what: 'MaxPooling2D same 3/2', layers: [{ name: 'p', class_name: 'MaxPooling2D', config: { pool_size: [3, 3], strides: [2, 2], padding: 'same' }, from: ['input_1'] }] },
    { what: 'AveragePooling2D same 3/1', layers: [{ name: 'p', class_name: 'AveragePooling2D', config: { pool_size: [3, 3], strides: [1, 1], padding: 'same' }, from: ['input_1'] }] },
    { what: 'AveragePooling2D valid 2/2', layers: [{ name: 'p', class_name: 'AveragePooling2D', config: { pool_size: [2, 2], strides: [2, 2], padding: 'valid' }, from: ['input_1'] }] },
    {
      what: 'Conv2D valid stride 2 no bias, BN scale false, relu, Concatenate',
      layers: [
        { name: 'c1', class_name: 'Conv2D', config: { filters: 6, kernel_size: [3, 3], strides: [2, 2], padding: 'valid', use_bias: false, activation: 'linear' }, from: ['input_1'] },
        { name: 'bn', class_name: 'BatchNormalization', config: { axis: 3, epsilon: 0.001, center: true, scale: false }, from: ['c1'] },
        { name: 'a', class_name: 'Activation', config: { activation: 'relu' }, from: ['bn'] },
        { name: 'c2', class_name: 'Conv2D', config: { filters: 3, kernel_size: [1, 3], strides: [1, 1], padding: 'same', use_bias: true, activation: 'relu' }, from: ['a'] },
        { name: 'mp', class_name: 'MaxPooling2D', config: { pool_size: [3, 3], strides: [1, 1], padding: 'same' }, from: ['a'] },
        { name: 'cat', class_name: 'Concatenate', config: { axis: -1 }, from: ['a', 'c2', 'mp'] },
      ],
    },
  ];
  let seed = 1;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const x = Float32Array.from({ length: H * W * C }, () => rand() * 2 - 1);
  for (const tc of cases) {
    const topology = tinyModel(tc.layers, H, W, C);
    const km = (await tfl.models.modelFromJSON({ modelTopology: topology } as never)) as unknown as {
      weights: { name: string; shape: number[] }[];
      predict(x: unknown): { shape: number[]; data(): Promise<Float32Array> };
      setWeights(w: unknown[]): void;
    };
    // Random weights (variances positive), set in TF.js and handed to the importer by name.
    const weights = new Map<string, { shape: number[]; data: Float32Array }>();
    const values = km.weights.map((v) => {
      const n = v.shape.reduce((a, b) => a * b, 1);
      const data = Float32Array.from({ length: n }, () => (/variance/.test(v.name) ? 0.5 + rand() : rand() * 2 - 1));
      // TF.js names weights "<layer>/<part>" (maybe with a suffix); the importer reads "<layer>/<part>".
      weights.set(v.name.replace(/_\d+\//, '/'), { shape: v.shape, data });
      return tf.tensor(data, v.shape);
    });
    km.setWeights(values);
    for (const [k, v] of [...weights]) {
      const [layer, part] = k.split('/');
      weights.set(`${layer}/${part}`, v);
    }
    const ref = km.predict(tf.tensor4d(x, [1, H, W, C]));
    const r = await ref.data();
    const [, h, w, ch] = ref.shape;
    const conv = convertKeras({ modelTopology: { model_config: topology } } as unknown as TfjsModel, weights, [{ layer: tc.layers[tc.layers.length - 1].name, name: 'out' }]);
    const session = await ort.InferenceSession.create(conv.onnx);
    const got = await session.run({ image: new ort.Tensor('float32', toNchw(x, H, W, C), [1, C, H, W]) });
    assert.deepEqual(got.out.dims, [1, ch, h, w], tc.what);
    assert.equal(conv.channels.out, ch, tc.what);
    const max = maxDiffNhwcNchw(r, got.out.data as Float32Array, h, w, ch);
    assert.ok(max < 1e-4, `${tc.what}: max abs diff ${max}`);
    await session.release();
  }
});
