import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PatchScorer, nearestRows, reweightScore } from '../src/score/scorer.ts';
import { gaussianKernel } from '../src/score/knn-graph.ts';
import { seededRandom } from '../src/score/coreset.ts';

function randomMatrix(rows: number, cols: number, seed: number, scale = 1): Float32Array {
  const r = seededRandom(seed);
  return new Float32Array(rows * cols).map(() => (r() - 0.5) * scale);
}

test('ONNX kNN distances equal brute-force JS distances', async () => {
  const gh = 6,
    gw = 5,
    dim = 37,
    m = 211;
  const bank = randomMatrix(m, dim, 1, 4);
  const patches = randomMatrix(gh * gw, dim, 2, 4);
  const scorer = await PatchScorer.create(bank, m, dim, { gridHeight: gh, gridWidth: gw, height: 48, width: 40 });
  const r = await scorer.score(patches);
  for (let p = 0; p < gh * gw; p++) {
    const [[, d]] = nearestRows(bank, m, dim, patches, p * dim, 1);
    assert.ok(Math.abs(r.patchScores[p] - d) < 1e-3 * Math.max(1, d), `patch ${p}: onnx ${r.patchScores[p]} vs js ${d}`);
  }
  const max = Math.max(...r.patchScores);
  assert.equal(r.score, max, 'image score is the max patch score');
  await scorer.release();
});

test('a patch equal to a bank entry scores zero', async () => {
  const dim = 8,
    m = 20;
  const bank = randomMatrix(m, dim, 3);
  const patches = new Float32Array(4 * dim);
  patches.set(bank.subarray(5 * dim, 6 * dim), 0);
  patches.set(bank.subarray(9 * dim, 10 * dim), dim);
  patches.set(bank.subarray(0, dim), 2 * dim);
  patches.set(bank.subarray(0, dim), 3 * dim);
  const scorer = await PatchScorer.create(bank, m, dim, { gridHeight: 2, gridWidth: 2, height: 40, width: 40 });
  const r = await scorer.score(patches);
  for (const s of r.patchScores) assert.ok(s < 1e-3, `expected ~0, got ${s}`);
  await scorer.release();
});

test('heatmap has the input size, peaks at the anomalous patch and is blurred with sigma 4', async () => {
  const gh = 8,
    gw = 8,
    dim = 4,
    H = 64,
    W = 64;
  const bank = new Float32Array(dim); // one all-zero entry: a patch's score is its norm
  const patches = new Float32Array(gh * gw * dim);
  const hot = 2 * gw + 5; // row 2, column 5
  patches[hot * dim] = 10;
  const scorer = await PatchScorer.create(bank, 1, dim, { gridHeight: gh, gridWidth: gw, height: H, width: W, sigma: 4 });
  const r = await scorer.score(patches);
  assert.equal(r.heatmap.length, H * W);
  let arg = 0;
  for (let i = 1; i < r.heatmap.length; i++) if (r.heatmap[i] > r.heatmap[arg]) arg = i;
  const py = Math.floor(arg / W),
    px = arg % W;
  // Patch (2, 5) covers pixels y 16..23, x 40..47.
  assert.ok(py >= 16 && py < 24 && px >= 40 && px < 48, `peak at (${px}, ${py})`);
  // The blur spreads the peak: below the raw patch score, and not zero 6 px away.
  assert.ok(r.heatmap[arg] < 10 && r.heatmap[arg] > 2);
  assert.ok(r.heatmap[py * W + px - 6] > 0.3 * r.heatmap[arg]);
  // Far corner stays cold.
  assert.ok(r.heatmap[(H - 1) * W] < 1e-3);
  await scorer.release();
});

test('Gaussian kernel: normalised, radius 4 sigma, symmetric', () => {
  const k = gaussianKernel(4);
  assert.equal(k.length, 33);
  assert.ok(Math.abs(k.reduce((a, b) => a + b, 0) - 1) < 1e-6);
  for (let i = 0; i < 16; i++) assert.equal(k[i], k[32 - i]);
});

test('Eq. 7 re-weighting: an isolated nearest entry weighs more than one in a dense region', () => {
  const dim = 2;
  // dense cluster near the origin and one isolated entry at (10, 0)
  const bank = Float32Array.from([0, 0, 0.1, 0, 0, 0.1, 0.1, 0.1, -0.1, 0, 10, 0]);
  const m = 6;
  const nearDense = Float32Array.from([0, 1]);
  const nearIsolated = Float32Array.from([10, 1]);
  const a = reweightScore(bank, m, dim, nearDense, 0, 3);
  const b = reweightScore(bank, m, dim, nearIsolated, 0, 3);
  assert.ok(a.weight < b.weight, `dense ${a.weight} vs isolated ${b.weight}`);
  assert.ok(b.weight > 0.9);
});
