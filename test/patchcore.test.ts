import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { FeatureExtractor, type FeatureSettings } from '../src/features/extractor.ts';
import { buildBank, PatchCoreModel } from '../src/score/patchcore.ts';
import { auroc } from '../src/eval/metrics.ts';
import { syntheticPart, tempDir, writeNominalSet, writeSyntheticBackbone } from './helpers/synthetic.ts';

const SIZE = 96;
const settings: FeatureSettings = { width: SIZE, height: SIZE, fit: 'letterbox', preDim: 64, dim: 32 };

test('PatchCore separates planted defects from nominal parts and localises them', async () => {
  const dir = tempDir('pc');
  const bb = writeSyntheticBackbone(join(dir, 'bb'));
  const train = await writeNominalSet(join(dir, 'train'), 24, SIZE, 100);
  const fx = await FeatureExtractor.load(bb, settings);
  assert.equal(fx.gridWidth, 12);
  assert.equal(fx.patchCount, 144);
  const bank = await buildBank(fx, train, { ratio: 0.25, projectionDim: 16, seed: 0, dtype: 'float32' });
  assert.equal(bank.header.count, Math.round(24 * 144 * 0.25));
  const model = await PatchCoreModel.create(fx, bank);
  const scores: number[] = [];
  const labels: number[] = [];
  let localised = 0;
  for (let i = 0; i < 12; i++) {
    const good = { width: SIZE, height: SIZE, data: syntheticPart(SIZE, 500 + i) };
    scores.push((await model.inspect(good)).score);
    labels.push(0);
    const defect = { x: 20 + ((i * 7) % 50), y: 25 + ((i * 11) % 40), w: 8, h: 4 };
    const bad = { width: SIZE, height: SIZE, data: syntheticPart(SIZE, 700 + i, defect) };
    const r = await model.inspect(bad);
    scores.push(r.score);
    labels.push(1);
    let arg = 0;
    for (let p = 1; p < r.heatmap.length; p++) if (r.heatmap[p] > r.heatmap[arg]) arg = p;
    const px = arg % SIZE,
      py = Math.floor(arg / SIZE);
    if (Math.abs(px - (defect.x + 4)) <= 10 && Math.abs(py - (defect.y + 2)) <= 10) localised++;
  }
  const a = auroc(scores, labels)!;
  assert.ok(a >= 0.95, `image AUROC on planted defects ${a}`);
  assert.ok(localised >= 10, `heatmap peak on the defect in ${localised}/12 images`);
  await model.release();
  await fx.release();
});

test('the extractor validates the backbone against its sidecar with a forward pass', async () => {
  const dir = tempDir('sidecar');
  const wrongStride = writeSyntheticBackbone(join(dir, 'a'), { sidecarPatch: (s) => (s.outputs[0].stride = 4) });
  await assert.rejects(FeatureExtractor.load(wrongStride, settings), /gave 144 cells, but stride 4 .* means 24x24=576; fix "stride"/);
  const wrongSem = writeSyntheticBackbone(join(dir, 'b'), { sidecarPatch: (s) => (s.outputs[2].channels = 64) });
  await assert.rejects(FeatureExtractor.load(wrongSem, settings), /semantic output "sem" has 32 channels, the sidecar says 64/);
  const wrongName = writeSyntheticBackbone(join(dir, 'c'), { sidecarPatch: (s) => (s.outputs[1].name = 'layer3') });
  await assert.rejects(FeatureExtractor.load(wrongName, settings), /names output "layer3", but the ONNX model's outputs are: p8, p16, sem/);
  const wrongChannels = writeSyntheticBackbone(join(dir, 'd'), { sidecarPatch: (s) => (s.outputs[0].channels = 99) });
  await assert.rejects(FeatureExtractor.load(wrongChannels, settings), /does not fit its sidecar at 96x96 \(a test forward pass failed\)/);
  const tampered = writeSyntheticBackbone(join(dir, 'e'));
  writeFileSync(join(tampered, 'backbone.onnx'), 'garbage');
  await assert.rejects(FeatureExtractor.load(tampered, settings), /does not match its sidecar/);
  await assert.rejects(FeatureExtractor.load(join(dir, 'missing'), settings), /cannot read backbone sidecar/);
});

test('non-square inputs give a non-square patch grid', async () => {
  const bb = writeSyntheticBackbone(join(tempDir('ns'), 'bb'));
  const fx = await FeatureExtractor.load(bb, { ...settings, width: 64, height: 160 });
  assert.equal(fx.gridWidth, 8);
  assert.equal(fx.gridHeight, 20);
  const f = await fx.extract({ width: 40, height: 100, data: new Uint8Array(40 * 100 * 3).fill(128) });
  assert.equal(f.patches.length, 160 * 32);
  assert.equal(f.semantic.length, 32);
  const norm = Math.hypot(...f.semantic);
  assert.ok(Math.abs(norm - 1) < 1e-4 || norm === 0, 'semantic embedding is L2-normalised');
  await fx.release();
});

test('the semantic-only pass gives the same embedding as the full extraction', async () => {
  const bb = writeSyntheticBackbone(join(tempDir('sem'), 'bb'));
  const fx = await FeatureExtractor.load(bb, settings);
  for (const seed of [1, 2]) {
    const img = { width: SIZE, height: SIZE, data: syntheticPart(SIZE, seed) };
    const full = (await fx.extract(img)).semantic;
    const alone = await fx.semanticOf(img);
    assert.equal(alone.length, full.length);
    for (let i = 0; i < full.length; i++) assert.ok(Math.abs(alone[i] - full[i]) < 1e-6, `component ${i}: ${alone[i]} vs ${full[i]}`);
  }
  await fx.release();
});
