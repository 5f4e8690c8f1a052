import { test } from 'node:test';
import assert from 'node:assert/strict';
import { coveringRadius, greedyCoreset, randomProjection, seededRandom } from '../src/score/coreset.ts';
import { GemmKCenter, kthLargest } from '../src/score/kcenter-gemm.ts';
import { gatherRows } from '../src/util/vec.ts';

function blobs(n: number, dim: number, seed: number): Float32Array {
  const r = seededRandom(seed);
  const x = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    const c = i % 7;
    for (let k = 0; k < dim; k++) x[i * dim + k] = (k % 7 === c ? 5 : 0) + (r() - 0.5) * (1 + (i % 3));
  }
  return x;
}

/** Textbook greedy k-center (no pruning), started at the same point. */
function naiveGreedy(x: Float32Array, n: number, dim: number, k: number, first: number): number[] {
  const minD = new Float64Array(n).fill(Infinity);
  const sel = [first];
  let next = first;
  while (true) {
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let t = 0; t < dim; t++) s += (x[i * dim + t] - x[next * dim + t]) ** 2;
      if (s < minD[i]) minD[i] = s;
    }
    if (sel.length === k) break;
    let best = 0;
    for (let i = 1; i < n; i++) if (minD[i] > minD[best]) best = i;
    next = best;
    sel.push(next);
  }
  return sel;
}

/** Dense clusters plus a sparse tail of rare patches, the shape of nominal patch features. */
function clustersWithTail(n: number, dim: number, seed: number): Float32Array {
  const r = seededRandom(seed);
  const x = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    const rare = i % 50 === 0;
    const c = i % 5;
    for (let k = 0; k < dim; k++) x[i * dim + k] = rare ? (r() - 0.5) * 20 : (k === c ? 4 : 0) + (r() - 0.5) * 0.5;
  }
  return x;
}

test('greedy coreset covers the data better than random selection of the same size', async () => {
  const n = 3000,
    dim = 8;
  const x = clustersWithTail(n, dim, 3);
  const sel = await greedyCoreset(x, n, dim, { ratio: 0.03, projectionDim: 0, seed: 1 });
  assert.equal(sel.length, 90);
  const greedyR = coveringRadius(x, n, dim, sel);
  const r = seededRandom(9);
  for (let trial = 0; trial < 5; trial++) {
    const random = Array.from({ length: sel.length }, () => Math.floor(r() * n));
    const randomR = coveringRadius(x, n, dim, random);
    assert.ok(greedyR < 0.8 * randomR, `greedy covering radius ${greedyR} should be well below random's ${randomR}`);
  }
});

test('pruned greedy selects exactly what the plain algorithm selects', async () => {
  const n = 2500,
    dim = 16;
  const x = blobs(n, dim, 5);
  // 400 centres so the selection crosses two cell rebuilds (64 and 256).
  const sel = await greedyCoreset(x, n, dim, { ratio: 400 / n, projectionDim: 0, seed: 4 });
  const ref = naiveGreedy(x, n, dim, 400, sel[0]);
  assert.deepEqual(Array.from(sel), ref);
});

test('coreset selection is deterministic for a seed and changes with it', async () => {
  const n = 2000,
    dim = 32;
  const x = blobs(n, dim, 7);
  const a = await greedyCoreset(x, n, dim, { ratio: 0.05, projectionDim: 8, seed: 11 });
  const b = await greedyCoreset(x, n, dim, { ratio: 0.05, projectionDim: 8, seed: 11 });
  const c = await greedyCoreset(x, n, dim, { ratio: 0.05, projectionDim: 8, seed: 12 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  // Held as one block per "image" (calibration's layout), the rows are the same matrix.
  const blocks = Array.from({ length: 20 }, (_, i) => x.slice(i * 100 * dim, (i + 1) * 100 * dim));
  assert.deepEqual(await greedyCoreset(blocks, n, dim, { ratio: 0.05, projectionDim: 8, seed: 11 }), a);
  assert.deepEqual(await greedyCoreset(blocks, n, dim, { ratio: 0.05, projectionDim: 0, seed: 11 }), await greedyCoreset(x, n, dim, { ratio: 0.05, projectionDim: 0, seed: 11 }));
  assert.deepEqual(gatherRows(blocks, dim, a), gatherRows(x, dim, a));
});

test('random projection roughly preserves distances (Johnson-Lindenstrauss)', () => {
  const n = 50,
    dim = 256,
    out = 128;
  const x = blobs(n, dim, 2);
  const p = randomProjection(x, n, dim, out, 3);
  const ratios: number[] = [];
  for (let i = 1; i < n; i++) {
    let a = 0,
      b = 0;
    for (let k = 0; k < dim; k++) a += (x[k] - x[i * dim + k]) ** 2;
    for (let k = 0; k < out; k++) b += (p[k] - p[i * out + k]) ** 2;
    ratios.push(Math.sqrt(b / a));
  }
  const mean = ratios.reduce((s, v) => s + v, 0) / ratios.length;
  assert.ok(mean > 0.9 && mean < 1.1, `mean distance ratio ${mean}`);
  assert.ok(Math.min(...ratios) > 0.7 && Math.max(...ratios) < 1.3);
});

test('a ratio outside (0, 1] is refused', async () => {
  await assert.rejects(greedyCoreset(new Float32Array(10), 10, 1, { ratio: 0, projectionDim: 0, seed: 0 }), /ratio/);
});

/** Replays a selection in float64 and returns the worst ratio of a pick's distance to the farthest point's. */
function worstGreedyRatio(x: Float32Array, n: number, dim: number, sel: ArrayLike<number>): number {
  const minD = new Float64Array(n).fill(Infinity);
  let worst = 1;
  for (let s = 0; s < sel.length; s++) {
    if (s > 0) {
      let max = 0;
      for (let i = 0; i < n; i++) if (minD[i] > max) max = minD[i];
      if (max > 0) worst = Math.min(worst, minD[sel[s]] / max);
    }
    for (let i = 0; i < n; i++) {
      let v = 0;
      for (let t = 0; t < dim; t++) v += (x[i * dim + t] - x[sel[s] * dim + t]) ** 2;
      if (v < minD[i]) minD[i] = v;
    }
  }
  return worst;
}

test('batched GEMM greedy: every pick is the farthest point from the picks before it, across many pool rounds', async () => {
  for (const [seed, data] of [
    [1, blobs],
    [2, clustersWithTail],
  ] as const) {
    const n = 3000,
      dim = 16,
      k = 300;
    const x = data(n, dim, seed);
    // A pool of 64 forces dozens of batched passes instead of one.
    const kc = await GemmKCenter.create(x, n, dim, 64);
    const sel = await kc.select(k, seededRandom(seed), undefined);
    await kc.release();
    assert.equal(new Set(sel).size, k, 'no row picked twice');
    const ratio = worstGreedyRatio(x, n, dim, sel);
    assert.ok(ratio > 1 - 1e-4, `a pick was only ${ratio} of the farthest distance (seed ${seed})`);
  }
});

test('batched GEMM greedy agrees with the pruned one on coverage, through greedyCoreset', async () => {
  const n = 4000,
    dim = 12;
  const x = clustersWithTail(n, dim, 8);
  const gemm = await greedyCoreset(x, n, dim, { ratio: 0.05, projectionDim: 0, seed: 6, engine: 'gemm' });
  const pruned = await greedyCoreset(x, n, dim, { ratio: 0.05, projectionDim: 0, seed: 6, engine: 'pruned' });
  assert.equal(gemm[0], pruned[0], 'same first pick for a seed');
  assert.equal(gemm.length, pruned.length);
  const rg = coveringRadius(x, n, dim, gemm);
  const rp = coveringRadius(x, n, dim, pruned);
  assert.ok(Math.abs(rg - rp) <= 1e-3 * rp, `covering radius ${rg} vs ${rp}`);
});

test('batched GEMM greedy on duplicated rows: distinct picks, every distinct point covered before any repeat', async () => {
  const distinct = 50,
    n = 500,
    dim = 4;
  const r = seededRandom(3);
  const base = Float32Array.from({ length: distinct * dim }, () => r() * 10);
  const x = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) x.set(base.subarray((i % distinct) * dim, ((i % distinct) + 1) * dim), i * dim);
  const kc = await GemmKCenter.create(x, n, dim, 16);
  const sel = await kc.select(200, seededRandom(1), undefined);
  await kc.release();
  assert.equal(new Set(sel).size, 200);
  assert.equal(new Set(Array.from(sel.slice(0, distinct), (i) => i % distinct)).size, distinct, 'the first 50 picks are the 50 distinct points');
});

test('kthLargest matches a sort, with ties', () => {
  const r = seededRandom(4);
  const v = Float32Array.from({ length: 1001 }, () => Math.floor(r() * 40));
  const sorted = Array.from(v).sort((a, b) => b - a);
  for (const k of [1, 2, 17, 500, 1000, 1001]) assert.equal(kthLargest(v, k), sorted[k - 1]);
});

test('batched GEMM greedy stays exact on features far from the origin (the GEMM form works on centred rows)', async () => {
  const n = 2000,
    dim = 16;
  const x = blobs(n, dim, 3).map((v) => v + 1e5);
  const kc = await GemmKCenter.create(x, n, dim, 64);
  const sel = await kc.select(100, seededRandom(2), undefined);
  await kc.release();
  const ratio = worstGreedyRatio(x, n, dim, sel);
  assert.ok(ratio > 1 - 1e-3, `a pick was only ${ratio} of the farthest distance`);
});
