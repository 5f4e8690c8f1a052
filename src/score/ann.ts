/**
 * Approximate nearest-neighbour search for the scorer, as one ONNX graph in two stages.
 *
 * Stage 1 ranks the bank in a low-dimensional orthonormal projection (the bank's top principal
 * directions): one MatMul of [P, r+1] x [r+1, m] and TopK of the `candidates` smallest per patch.
 * Stage 2 gathers those candidate rows in full dimension and computes their exact distances; the
 * min is the patch score. Every patch score is therefore the exact distance to a real bank row, so a
 * miss in stage 1 can only over-estimate it (never hide a defect), and with candidates >= m the
 * result is the exact search's.
 */
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../features/onnx/graph.ts';
import { createSession } from '../features/session.ts';
import { bankOperand } from './knn-graph.ts';
import { seededRandom } from './coreset.ts';

/** How the scorer searches the bank: exact brute force, or the two-stage approximate search. */
export type SearchSettings = { mode: 'exact' } | { mode: 'ann'; projection_dim: number; candidates: number };

export const EXACT_SEARCH: SearchSettings = { mode: 'exact' };

export interface AnnGraphSpec {
  bank: Float32Array; // [m, dim]
  m: number;
  dim: number;
  /** [dim, r] with orthonormal columns (pcaProjection) */
  projection: Float32Array;
  r: number;
  /** the bank projected, [m, r]; computed here (in JS) when absent */
  projectedBank?: Float32Array;
  /** stage-1 candidates per patch; clamped to m */
  candidates: number;
  patches: number;
  /** adds an input `mask` [m] (0 keeps a row, +Infinity drops it) to both stages' distances */
  masked?: boolean;
}

/** x [n, d] times w [d, r] in plain JS. */
export function projectRows(x: Float32Array, n: number, d: number, w: Float32Array, r: number): Float32Array {
  const out = new Float32Array(n * r);
  const acc = new Float64Array(r);
  for (let i = 0; i < n; i++) {
    acc.fill(0);
    for (let k = 0; k < d; k++) {
      const v = x[i * d + k];
      if (v === 0) continue;
      const wo = k * r;
      for (let j = 0; j < r; j++) acc[j] += v * w[wo + j];
    }
    for (let j = 0; j < r; j++) out[i * r + j] = acc[j];
  }
  return out;
}

/**
 * The ANN scoring graph. Inputs: `patches` [P, dim] float32 and, when `masked`, `mask` [m] float32
 * (0 keeps a bank row, +Infinity drops it; leave-self-out calibration drops an image's own rows).
 * Output: `patch_scores` [P], the distance of each patch to the nearest candidate row it found.
 */
export function buildAnnGraph(spec: AnnGraphSpec): Uint8Array {
  const { bank, m, dim, r, patches: P } = spec;
  if (spec.projection.length !== dim * r) throw new Error(`projection holds ${spec.projection.length} values, expected ${dim}x${r}`);
  const k = Math.max(1, Math.min(spec.candidates, m));
  const g = new GraphBuilder('ann_');
  g.inputs.push({ name: 'patches', dims: [P, dim] });
  if (spec.masked) g.inputs.push({ name: 'mask', dims: [m] });

  // Stage 1: coarse squared distances (less |pa|^2, constant per patch) in the projection.
  const proj = g.op('MatMul', ['patches', g.floatTensor('projection', [dim, r], spec.projection)]);
  const padded = g.op('Pad', [proj, g.constInt64('pads', [0, 0, 0, 1]), g.constFloat('one', [], [1])], { mode: 'constant' });
  const coarseOperand = bankOperand(spec.projectedBank ?? projectRows(bank, m, dim, spec.projection, r), m, r);
  let coarse = g.op('MatMul', [padded, g.floatTensor('coarse_operand', [r + 1, m], coarseOperand)]);
  if (spec.masked) coarse = g.op('Add', [coarse, 'mask']);
  const [, idx] = g.node('TopK', [coarse, g.constInt64('k', [k])], { axis: 1, largest: 0, sorted: 0 }, [g.fresh('topv'), g.fresh('topi')]);

  // Stage 2: exact distances to the candidates: |b|^2 - 2ab (+ mask), min, + |a|^2.
  const norms = new Float32Array(m);
  for (let j = 0; j < m; j++) {
    let s = 0;
    for (let t = 0; t < dim; t++) s += bank[j * dim + t] * bank[j * dim + t];
    norms[j] = s;
  }
  const neg2 = bank.map((v) => -2 * v);
  const cand = g.op('Gather', [g.floatTensor('bank_neg2', [m, dim], neg2), idx], { axis: 0 }); // [P, k, dim]
  const col = g.op('Unsqueeze', ['patches', g.constInt64('axis', [2])]); // [P, dim, 1]
  const cross = g.op('Reshape', [g.op('MatMul', [cand, col]), g.constInt64('pk', [P, k])]);
  let d = g.op('Add', [cross, g.op('Gather', [g.floatTensor('bank_norms', [m], norms), idx], { axis: 0 })]);
  if (spec.masked) d = g.op('Add', [d, g.op('Gather', ['mask', idx], { axis: 0 })]);
  const minD = g.op('ReduceMin', [d], { axes: [1], keepdims: 0 });
  const a2 = g.op('ReduceSumSquare', ['patches'], { axes: [1], keepdims: 0 });
  g.op('Sqrt', [g.op('Relu', [g.op('Add', [minD, a2])])], {}, 'patch_scores');
  g.outputs.push({ name: 'patch_scores', dims: [P] });
  return g.toModel('ann_knn', 'hiercore-edge two-stage nearest-neighbour scorer');
}

/** Modified Gram-Schmidt on the r columns of q [d, r], in place; a degenerate column is re-seeded. */
function orthonormalise(q: Float64Array, d: number, r: number, rand: () => number): void {
  for (let j = 0; j < r; j++) {
    for (let attempt = 0; attempt < 3; attempt++) {
      for (let i = 0; i < j; i++) {
        let dot = 0;
        for (let t = 0; t < d; t++) dot += q[t * r + i] * q[t * r + j];
        for (let t = 0; t < d; t++) q[t * r + j] -= dot * q[t * r + i];
      }
      let n = 0;
      for (let t = 0; t < d; t++) n += q[t * r + j] * q[t * r + j];
      n = Math.sqrt(n);
      if (n > 1e-10) {
        for (let t = 0; t < d; t++) q[t * r + j] /= n;
        break;
      }
      for (let t = 0; t < d; t++) q[t * r + j] = rand() - 0.5;
    }
  }
}

/** a [n, d] (transposed first when `transposeA`, then [d, n]) times b in onnxruntime: the O(m dim^2) products. */
export async function onnxMatMul(a: Float32Array, aDims: [number, number], b: Float32Array, bDims: [number, number], transposeA = false, threads?: number): Promise<Float32Array> {
  const g = new GraphBuilder('mm_');
  g.inputs.push({ name: 'a', dims: aDims }, { name: 'b', dims: bDims });
  g.op('MatMul', [transposeA ? g.op('Transpose', ['a'], { perm: [1, 0] }) : 'a', 'b'], {}, 'c');
  g.outputs.push({ name: 'c', dims: [transposeA ? aDims[1] : aDims[0], bDims[1]] });
  const session = await createSession(g.toModel('matmul'), 'cpu', threads);
  try {
    const out = await session.run({ a: new ort.Tensor('float32', a, aDims), b: new ort.Tensor('float32', b, bDims) });
    return out.c.data as Float32Array;
  } finally {
    await session.release();
  }
}

/** Centred second-moment matrix [dim, dim] of the bank rows. */
async function covariance(bank: Float32Array, m: number, dim: number, threads?: number): Promise<Float64Array> {
  const gram = await onnxMatMul(bank, [m, dim], bank, [m, dim], true, threads);
  const mean = new Float64Array(dim);
  for (let j = 0; j < m; j++) for (let t = 0; t < dim; t++) mean[t] += bank[j * dim + t];
  for (let t = 0; t < dim; t++) mean[t] /= m;
  const c = new Float64Array(dim * dim);
  for (let a = 0; a < dim; a++) for (let b = 0; b < dim; b++) c[a * dim + b] = gram[a * dim + b] / m - mean[a] * mean[b];
  return c;
}

/**
 * An orthonormal [dim, r] basis of the bank's top-r principal subspace (seeded subspace iteration on
 * the covariance). Only the subspace matters for projected distances, so no eigen-solve is needed;
 * any orthonormal basis keeps the search correct, a better one only raises stage-1 recall.
 */
export async function pcaProjection(bank: Float32Array, m: number, dim: number, r: number, opts: { seed?: number; iterations?: number; threads?: number } = {}): Promise<Float32Array> {
  if (!(r >= 1 && r <= dim)) throw new Error(`projection dimension ${r} must be in [1, ${dim}]`);
  const rand = seededRandom(opts.seed ?? 0);
  const c = await covariance(bank, m, dim, opts.threads);
  let q = new Float64Array(dim * r).map(() => rand() - 0.5);
  orthonormalise(q, dim, r, rand);
  const c32 = Float32Array.from(c);
  for (let it = 0; it < (opts.iterations ?? 6); it++) {
    const next = Float64Array.from(await onnxMatMul(c32, [dim, dim], Float32Array.from(q), [dim, r], false, opts.threads));
    orthonormalise(next, dim, r, rand);
    q = next;
  }
  return Float32Array.from(q);
}

/** What the ANN graph needs besides the bank: the projection and the bank projected with it. */
export async function annIndex(bank: Float32Array, m: number, dim: number, r: number, threads?: number): Promise<{ projection: Float32Array; projectedBank: Float32Array; r: number }> {
  const rr = Math.min(r, dim);
  const projection = await pcaProjection(bank, m, dim, rr, { threads });
  const projectedBank = await onnxMatMul(bank, [m, dim], projection, [dim, rr], false, threads);
  return { projection, projectedBank, r: rr };
}
