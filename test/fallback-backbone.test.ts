/**
 * The built-in fallback backbone: nsfwjs's Keras MobileNetV2, converted by our own importer, must
 * give the same activations as TensorFlow.js running the original model (a dev dependency).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { importFallbackBackbone, loadNsfwjsModel } from '../src/features/import-nsfwjs.ts';
import { FeatureExtractor } from '../src/features/extractor.ts';
import { decodeWeights, convertKeras, UnsupportedLayerError } from '../src/features/tfjs/keras-to-onnx.ts';
import { SHARED, syntheticPart, tempDir } from './helpers/synthetic.ts';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { sha256 } from '../src/util/files.ts';

test('fallback backbone: ONNX activations equal TensorFlow.js on the original Keras model', { timeout: 120_000 }, async () => {
  const tf = await import('@tensorflow/tfjs-core');
  await import('@tensorflow/tfjs-backend-cpu');
  const tfl = await import('@tensorflow/tfjs-layers');
  await tf.setBackend('cpu');
  const dir = tempDir('fallback');
  const { sidecar, onnxPath } = importFallbackBackbone(dir);
  assert.deepEqual(
    sidecar.outputs.map((o) => [o.name, o.channels, o.stride]),
    [
      ['patch_s8', 192, 8],
      ['patch_s16', 384, 16],
      ['semantic', 384, 16],
    ],
  );
  const { model, shards } = loadNsfwjsModel();
  const H = 160;
  const W = 224; // not the training size: the importer's padding must hold for other sizes too
  const topology = JSON.parse(JSON.stringify(model.modelTopology));
  // The reference runs the same truncated network at the test size (the classifier head is fixed to 224).
  const cfg = (topology.model_config ?? topology).config;
  cfg.layers = cfg.layers.slice(0, cfg.layers.findIndex((l: { name: string }) => l.name === 'block_10_expand_relu') + 1);
  cfg.layers[0].config.batch_input_shape = [null, H, W, 3];
  cfg.output_layers = [['block_10_expand_relu', 0, 0]];
  const km = await tfl.loadLayersModel(tf.io.fromMemory(topology as never, model.weightsManifest[0].weights as never, shards.slice().buffer), { strict: false });
  const ref = tfl.model({ inputs: km.inputs, outputs: ['block_6_expand_relu', 'block_10_expand_relu'].map((n) => km.getLayer(n).output as never) });
  const rgb = syntheticPart(224, 3).subarray(0, H * W * 3);
  const nhwc = Float32Array.from(rgb, (v) => v / 255);
  const outs = ref.predict(tf.tensor4d(nhwc, [1, H, W, 3])) as unknown as { shape: number[]; data(): Promise<Float32Array> }[];
  const session = await ort.InferenceSession.create(readFileSync(onnxPath));
  const nchw = new Float32Array(3 * H * W);
  for (let c = 0; c < 3; c++) for (let i = 0; i < H * W; i++) nchw[c * H * W + i] = nhwc[i * 3 + c];
  const got = await session.run({ image: new ort.Tensor('float32', nchw, [1, 3, H, W]) });
  for (const [k, name] of ['patch_s8', 'patch_s16'].entries()) {
    const r = await outs[k].data();
    const [, h, w, ch] = outs[k].shape;
    assert.deepEqual(got[name].dims, [1, ch, h, w]);
    const o = got[name].data as Float32Array;
    let max = 0;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < ch; c++) max = Math.max(max, Math.abs(r[(y * w + x) * ch + c] - o[(c * h + y) * w + x]));
    assert.ok(max < 1e-3, `${name}: max abs diff ${max}`);
  }
  await session.release();
  // And it works as an engine backbone, at a non-square size.
  const fx = await FeatureExtractor.load(dir, { width: 352, height: 128, fit: 'letterbox', preDim: 256, dim: 64 });
  assert.equal(fx.patchCount, 16 * 44);
  assert.equal(fx.semanticDim, 384);
  await fx.release();
});

test('Keras importer: unknown layers and broken weight data are clear errors', () => {
  const { model, shards } = loadNsfwjsModel();
  assert.throws(() => decodeWeights(model.weightsManifest, shards.subarray(0, shards.length - 5)), /weights run past the end|weight data is/);
  const weights = decodeWeights(model.weightsManifest, shards);
  assert.throws(() => convertKeras(model, weights, [{ layer: 'no_such_layer', name: 'x' }]), /layer "no_such_layer" is not in the model/);
  // The classifier head uses Dense/Dropout: asking for it names the unsupported layer instead of guessing.
  const layers = (model.modelTopology.model_config ?? model.modelTopology).config!.layers;
  const dense = layers.find((l) => l.class_name === 'Dense')!;
  assert.throws(
    () => convertKeras(model, weights, [{ layer: dense.name, name: 'x' }]),
    (e: Error) => e instanceof UnsupportedLayerError && /is not supported by the importer/.test(e.message),
  );
});

test('model fetch: checks the pinned sha256, and says what to do offline', async () => {
  const { fetchBackbone, CORAL_MODELS } = await import('../src/features/default-backbone.ts');
  const out = tempDir('fetch');
  const offline = (() => Promise.reject(new TypeError('fetch failed'))) as unknown as typeof fetch;
  await assert.rejects(
    fetchBackbone('mobilenet-v2-ptq', out, offline),
    /cannot download https:\/\/github.com\/google-coral\/test_data\/raw\/[0-9a-f]{40}\/tf2_mobilenet_v2_1.0_224_ptq.tflite \(fetch failed\)\. Without internet: copy tf2_mobilenet_v2_1.0_224_ptq.tflite \(sha256 5d3137/,
  );
  const tampered = (() => Promise.resolve(new Response(new Uint8Array([1, 2, 3])))) as unknown as typeof fetch;
  await assert.rejects(fetchBackbone('mobilenet-v2-ptq', out, tampered), /has sha256 039058c6.*expected 5d3137.*not imported/);
  // The pins are those of the reference copies in ../shared, where present.
  for (const m of Object.values(CORAL_MODELS)) {
    const local = join(SHARED, 'models', m.file);
    if (existsSync(local)) assert.equal(sha256(readFileSync(local)), m.sha256, m.file);
  }
});
