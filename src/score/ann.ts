/**
 * Approximate nearest-neighbour search for the scorer, as one ONNX graph in two stages.
 *
 * Stage 1 ranks the bank in a low-dimensional orthonormal projection (the bank's top principal
 * directions): one MatMul of [P, r+1] x [r+1, m] and TopK of the `candidates` smallest per patch.
 * With `coarse: int8` that MatMul is a u8 x s8 MatMulInteger on quantised, centred coordinates
 * (src/score/ann-int8.ts), about a third less stage-1 time on a VNNI/dot-product CPU.
 * Stage 2 gathers those candidate rows in full dimension and computes their exact distances; the
 * min is the patch score. Every patch score is therefore the exact distance to a real bank row, so a
 * miss in stage 1 can only over-estimate it (never hide a defect), and with candidates >= m the
 * result is the exact search's.
 */
import * as ort from 'onnxruntime-node';
import type { CoarseType } from '../config.ts';
import { GraphBuilder } from '../features/onnx/graph.ts';
import { createSession } from '../features/session.ts';
import { bankOperand } from './knn-graph.ts';
import { seededRandom } from './coreset.ts';
import { int8CoarseOperand, int8Coarse, int8Initializers, type Int8Initializers } from './ann-int8.ts';

/**
 * How the scorer searches the bank: exact brute force, or the two-stage approximate search.
 * `coarse` absent means float32 (what bundles written before it existed were calibrated with).
 */
export type SearchSettings = { mode: 'exact' } | { mode: 'ann'; projection_dim: number; candidates: number; coarse?: CoarseType };

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
  /** patches per tile; default annTileRows(patches, m) */
  tileRows?: number;
  /** bank columns per block of the two-level top-k; default ANN_BLOCK, 0 = one plain TopK */
  blockSize?: number;
  /** stage-1 number type; default float32 */
  coarse?: CoarseType;
}

/** Block width of the two-level top-k (blockTopK). */
export const ANN_BLOCK = 64;

/** Stage-1 distances of dummy columns that pad the bank to whole blocks: far, but finite. */
const FAR = 1e30;

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
 * Patches per tile: the stage-1 value matrix of one tile is kept near 6 MB. Materialising the
 * whole [P, m] matrix at once (78 MB for a 25k-row bank) made onnxruntime take fresh pages every run;
 * equal tiles reuse one buffer, which halved stage 1 on this CPU (scratch study, m 10k-53k). Tiles of
 * 6 MB rather than 16 MB (64 rather than 167 patches at m 25k) stay in the last-level cache between the
 * GEMM and the block minima: 13.3 -> 11.2 ms (int8), 16 -> 14.5 ms (float32) on the 2-core AMD box.
 */
export function annTileRows(patches: number, m: number): number {
  return Math.max(16, Math.min(patches, Math.floor(1_600_000 / Math.max(1, m))));
}

/**
 * The ANN scoring graph. Inputs: `patches` [P, dim] float32 and, when `masked`, `mask` [m] float32
 * (0 keeps a bank row, +Infinity drops it; leave-self-out calibration drops an image's own rows).
 * Output: `patch_scores` [P], the distance of each patch to the nearest candidate row it found.
 */
export function buildAnnGraph(spec: AnnGraphSpec): Uint8Array {
  const { m, dim, r, patches: P } = spec;
  if (spec.projection.length !== dim * r) throw new Error(`projection holds ${spec.projection.length} values, expected ${dim}x${r}`);
  const g = new GraphBuilder('ann_');
  g.inputs.push({ name: 'patches', dims: [P, dim] });
  if (spec.masked) g.inputs.push({ name: 'mask', dims: [m] });
  const shared = annInitializers(g, spec);
  const rows = Math.max(1, spec.tileRows ?? annTileRows(P, m));
  const sizes: number[] = [];
  for (let o = 0; o < P; o += rows) sizes.push(Math.min(rows, P - o));
  const tiles =
    sizes.length === 1
      ? ['patches']
      : g.node(
          'Split',
          ['patches', g.constInt64('tiles', sizes)],
          { axis: 0 },
          sizes.map(() => g.fresh('tile')),
        );
  const scores = tiles.map((t, i) => annTile(g, shared, t, sizes[i], spec));
  if (scores.length === 1) g.op('Identity', scores, {}, 'patch_scores');
  else g.op('Concat', scores, { axis: 0 }, 'patch_scores');
  g.outputs.push({ name: 'patch_scores', dims: [P] });
  return g.toModel('ann_knn', 'hiercore-edge two-stage nearest-neighbour scorer');
}

interface AnnInitializers {
  projection: string;
  /** float32 stage 1 */
  coarseOperand?: string;
  /** int8 stage 1 */
  int8?: Int8Initializers;
  bankNeg2: string;
  bankNorms: string;
  k: number;
  /** block width of the two-level top-k, 0 for one plain TopK */
  block: number;
  /** stage-1 columns: m padded to whole blocks */
  columns: number;
  /** the mask padded to `columns` (masked graphs only) */
  coarseMask?: string;
}

/**
 * The two-level top-k pays off once there are many blocks per candidate; below that one TopK over
 * the row is as cheap.
 */
function blockWidth(spec: AnnGraphSpec, k: number): number {
  const b = spec.blockSize ?? ANN_BLOCK;
  return b > 0 && spec.m >= 4 * k * b ? b : 0;
}

/** [r+1, columns]: the bank's coarse operand, padded with dummy columns at distance FAR. */
function paddedCoarseOperand(projected: Float32Array, m: number, r: number, columns: number): Float32Array {
  const base = bankOperand(projected, m, r);
  if (columns === m) return base;
  const w = new Float32Array((r + 1) * columns);
  for (let k = 0; k <= r; k++) w.set(base.subarray(k * m, (k + 1) * m), k * columns);
  w.fill(FAR, r * columns + m, (r + 1) * columns);
  return w;
}

function annInitializers(g: GraphBuilder, spec: AnnGraphSpec): AnnInitializers {
  const { bank, m, dim, r } = spec;
  const norms = new Float32Array(m);
  for (let j = 0; j < m; j++) {
    let s = 0;
    for (let t = 0; t < dim; t++) s += bank[j * dim + t] * bank[j * dim + t];
    norms[j] = s;
  }
  const k = Math.max(1, Math.min(spec.candidates, m));
  const block = blockWidth(spec, k);
  const int8 = spec.coarse === 'int8';
  const columns = block > 0 ? Math.ceil(m / block) * block : m;
  let projection = spec.projection;
  let projected = spec.projectedBank ?? projectRows(bank, m, dim, spec.projection, r);
  if (int8) ({ projection, projected } = spreadVariance(projection, projected, dim, m, r));
  const coarseMask = int8 || !spec.masked ? undefined : columns > m ? g.op('Pad', ['mask', g.constInt64('mask_pads', [0, columns - m]), g.constFloat('far', [], [FAR])], { mode: 'constant' }) : 'mask';
  return {
    projection: g.floatTensor('projection', [dim, r], projection),
    coarseOperand: int8 ? undefined : g.floatTensor('coarse_operand', [r + 1, columns], paddedCoarseOperand(projected, m, r, columns)),
    int8: int8 ? int8Initializers(g, int8CoarseOperand(projected, m, r, columns), r, columns, m, !!spec.masked) : undefined,
    bankNeg2: g.floatTensor(
      'bank_neg2',
      [m, dim],
      bank.map((v) => -2 * v),
    ),
    bankNorms: g.floatTensor('bank_norms', [m], norms),
    k,
    block,
    columns,
    coarseMask,
  };
}

/**
 * Indices [n, k] of the k smallest of `coarse` [n, columns], exactly, without one TopK over every
 * column (onnxruntime's TopK was as slow as the stage-1 MatMul): the minimum of each block of
 * `block` columns, the k blocks with the smallest minima, and a TopK over those k blocks. Exact
 * because every block holding one of the k smallest values has its minimum among the k smallest
 * block minima. Padding column j maps to row j mod m (int8 pads with copies of rows 0..; float32 with
 * far dummies that a real row always beats); stage 2 measures that row exactly.
 */
function blockTopK(g: GraphBuilder, coarse: string, n: number, w: AnnInitializers, m: number): string {
  const { k, block, columns } = w;
  const blocks = g.op('Reshape', [coarse, g.constInt64('nbs', [n, columns / block, block])]);
  const minima = g.op('ReduceMin', [blocks], { axes: [2], keepdims: 0 }); // [n, blocks]
  const [, best] = g.node('TopK', [minima, g.constInt64('kb', [k])], { axis: 1, largest: 0, sorted: 0 }, [g.fresh('bv'), g.fresh('bi')]);
  const picked = g.op('GatherND', [blocks, g.op('Unsqueeze', [best, g.constInt64('ax2', [2])])], { batch_dims: 1 }); // [n, k, block]
  const flat = g.op('Reshape', [picked, g.constInt64('nkb', [n, k * block])]);
  const [, local] = g.node('TopK', [flat, g.constInt64('kl', [k])], { axis: 1, largest: 0, sorted: 0 }, [g.fresh('lv'), g.fresh('li')]);
  const width = g.int64Tensor(g.fresh('block'), [], [block]);
  const blockOf = g.op('GatherElements', [best, g.op('Div', [local, width])], { axis: 1 });
  const index = g.op('Add', [g.op('Mul', [blockOf, width]), g.op('Mod', [local, width])]);
  return columns > m ? g.op('Mod', [index, g.int64Tensor(g.fresh('rows'), [], [m])]) : index;
}

function floatCoarse(g: GraphBuilder, w: AnnInitializers, proj: string): string {
  const padded = g.op('Pad', [proj, g.constInt64('pads', [0, 0, 0, 1]), g.constFloat('one', [], [1])], { mode: 'constant' });
  const coarse = g.op('MatMul', [padded, w.coarseOperand!]);
  return w.coarseMask ? g.op('Add', [coarse, w.coarseMask]) : coarse;
}

/** Both stages for one tile of `n` patches; returns the tile's patch scores [n]. */
function annTile(g: GraphBuilder, w: AnnInitializers, tile: string, n: number, spec: AnnGraphSpec): string {
  // Stage 1: coarse squared distances (less |pa|^2, constant per patch) in the projection.
  const proj = g.op('MatMul', [tile, w.projection]);
  const coarse = w.int8 ? int8Coarse(g, w.int8, proj, n) : floatCoarse(g, w, proj);
  const idx = w.block > 0 ? blockTopK(g, coarse, n, w, spec.m) : g.node('TopK', [coarse, g.constInt64('k', [w.k])], { axis: 1, largest: 0, sorted: 0 }, [g.fresh('topv'), g.fresh('topi')])[1];

  // Stage 2: exact distances to the candidates: |b|^2 - 2ab (+ mask), min, + |a|^2.
  const cand = g.op('Gather', [w.bankNeg2, idx], { axis: 0 }); // [n, k, dim]
  const col = g.op('Unsqueeze', [tile, g.constInt64('axis', [2])]); // [n, dim, 1]
  const cross = g.op('Reshape', [g.op('MatMul', [cand, col]), g.constInt64('nk', [n, w.k])]);
  let d = g.op('Add', [cross, g.op('Gather', [w.bankNorms, idx], { axis: 0 })]);
  if (spec.masked) d = g.op('Add', [d, g.op('Gather', ['mask', idx], { axis: 0 })]);
  const minD = g.op('ReduceMin', [d], { axes: [1], keepdims: 0 });
  const a2 = g.op('ReduceSumSquare', [tile], { axes: [1], keepdims: 0 });
  return g.op('Sqrt', [g.op('Relu', [g.op('Add', [minD, a2])])]);
}

/**
 * The same subspace in a seeded random rotation of its basis. Projected distances do not change, but
 * the variance is spread evenly over the coordinates: in the principal basis the first coordinate's
 * range sets the int8 step for all of them, and the small ones keep only a few levels.
 */
function spreadVariance(projection: Float32Array, projected: Float32Array, dim: number, m: number, r: number): { projection: Float32Array; projected: Float32Array } {
  const rand = seededRandom(7);
  const q = new Float64Array(r * r).map(() => rand() - 0.5);
  orthonormalise(q, r, r, rand);
  const q32 = Float32Array.from(q);
  return { projection: projectRows(projection, dim, r, q32, r), projected: projectRows(projected, m, r, q32, r) };
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
