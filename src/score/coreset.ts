/**
 * Greedy k-center coreset (PatchCore Sec. 3.2, Sener & Savarese 2018) on a Johnson-Lindenstrauss
 * random projection of the patch features.
 *
 * Plain greedy selection costs k*N*d. Two exact engines share it out: KCenter below skips whole cells
 * of points using the triangle inequality (fast on small or background-heavy sets, no session), and
 * GemmKCenter (kcenter-gemm.ts) batches the distance updates into MatMuls, which holds on textures
 * where the pruning skips nothing. Both select what the plain algorithm selects.
 */

import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../features/onnx/graph.ts';
import { createSession } from '../features/session.ts';
import { contiguous, type Rows, sqDist } from '../util/vec.ts';
import { GemmKCenter } from './kcenter-gemm.ts';

export interface CoresetOptions {
  /** fraction of points to keep (0 < ratio <= 1) */
  ratio: number;
  /** JL projection size; 0 keeps the original features */
  projectionDim: number;
  seed: number;
  /** Which exact greedy runs: auto picks the batched GEMM one above GEMM_MIN_ROWS rows. */
  engine?: 'auto' | 'pruned' | 'gemm';
  onProgress?: (done: number, total: number) => void;
}

/** Below this many rows the pruned JS greedy is fast enough and needs no session. */
export const GEMM_MIN_ROWS = 20000;

/** Mulberry32: small, fast, and the same sequence on every platform. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(rand: () => number): number {
  const u = Math.max(rand(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

/** The [dim, outDim] Gaussian JL matrix, scaled by 1/sqrt(outDim) so distances are preserved on average. */
export function projectionMatrix(dim: number, outDim: number, seed: number): Float32Array {
  const rand = seededRandom(seed);
  const r = new Float32Array(dim * outDim);
  const s = 1 / Math.sqrt(outDim);
  for (let i = 0; i < r.length; i++) r[i] = gaussian(rand) * s;
  return r;
}

/** Project [n, dim] rows onto `outDim` random directions, in plain JS (reference for the ONNX path). */
export function randomProjection(x: Float32Array, n: number, dim: number, outDim: number, seed: number): Float32Array {
  const r = projectionMatrix(dim, outDim, seed);
  const out = new Float32Array(n * outDim);
  const acc = new Float64Array(outDim);
  for (let i = 0; i < n; i++) {
    acc.fill(0);
    const xo = i * dim;
    for (let k = 0; k < dim; k++) {
      const v = x[xo + k];
      if (v === 0) continue;
      const ro = k * outDim;
      for (let j = 0; j < outDim; j++) acc[j] += v * r[ro + j];
    }
    out.set(acc, i * outDim);
  }
  return out;
}

/**
 * Indices of the selected coreset rows of x ([n, dim]), in selection order. Deterministic for a seed.
 */
export async function greedyCoreset(x: Rows, n: number, dim: number, opts: CoresetOptions): Promise<Int32Array> {
  if (!(opts.ratio > 0 && opts.ratio <= 1)) throw new Error(`coreset ratio must be in (0, 1], got ${opts.ratio}`);
  const k = Math.max(1, Math.min(n, Math.round(n * opts.ratio)));
  if (k === n) return Int32Array.from({ length: n }, (_, i) => i);
  const d = opts.projectionDim > 0 && opts.projectionDim < dim ? opts.projectionDim : dim;
  const proj = d === dim ? contiguous(x) : await projectOnnx(x, n, dim, projectionMatrix(dim, d, opts.seed), d);
  return exactGreedy(proj, n, d, k, opts);
}

async function exactGreedy(x: Float32Array, n: number, d: number, k: number, opts: CoresetOptions): Promise<Int32Array> {
  const engine = opts.engine ?? 'auto';
  if (engine === 'pruned' || (engine === 'auto' && n < GEMM_MIN_ROWS)) return new KCenter(x, n, d).select(k, opts.seed, opts.onProgress);
  const kc = await GemmKCenter.create(x, n, d);
  try {
    return await kc.select(k, seededRandom(opts.seed ^ 0x9e3779b9), opts.onProgress);
  } finally {
    await kc.release();
  }
}

/** x's rows in runs for the projection: its own blocks, or chunks of 16,384 rows of one array. */
function projectionParts(x: Rows, n: number, dim: number): Float32Array[] {
  if (Array.isArray(x)) return x as Float32Array[];
  const chunk = 16384;
  const parts: Float32Array[] = [];
  for (let s = 0; s < n; s += chunk) parts.push((x as Float32Array).subarray(s * dim, Math.min(n, s + chunk) * dim));
  return parts;
}

/** x [n, dim] times r [dim, outDim] as an onnxruntime MatMul, in row chunks to bound memory. */
async function projectOnnx(x: Rows, n: number, dim: number, r: Float32Array, outDim: number): Promise<Float32Array> {
  const g = new GraphBuilder('jl_');
  g.inputs.push({ name: 'x', dims: ['n', dim] });
  g.floatTensor('r', [dim, outDim], r);
  g.op('MatMul', ['x', 'r'], {}, 'y');
  g.outputs.push({ name: 'y', dims: ['n', outDim] });
  const session = await createSession(g.toModel('projection'));
  const out = new Float32Array(n * outDim);
  try {
    let s = 0;
    for (const part of projectionParts(x, n, dim)) {
      const rows = part.length / dim;
      const res = await session.run({ x: new ort.Tensor('float32', part, [rows, dim]) });
      out.set(res.y.data as Float32Array, s * outDim);
      s += rows;
    }
  } finally {
    await session.release();
  }
  return out;
}

/**
 * Greedy k-center with exact pruning. Points are stored cell by cell, a cell being the points whose
 * nearest centre was the same when the cells were last rebuilt; a cell keeps that centre and its
 * radius. A new centre c cannot get closer to any member than its current distance when
 * |c - cellCentre| - radius >= sqrt(max member distance), so the whole cell is skipped.
 * Cells are rebuilt at 64, 256, 1024, ... centres so they stay tight as the coreset grows.
 */
class KCenter {
  private p: Float32Array; // points, permuted cell by cell
  private order: Int32Array; // permuted position -> original index
  private minD: Float64Array; // squared distance to the nearest centre, by permuted position
  private nearest: Int32Array; // that centre's selection number
  private cellStart = new Int32Array([0]);
  private cellEnd: Int32Array;
  private cellCentre = new Float32Array(0);
  private cellRadius = new Float64Array([Infinity]);
  private cellMax: Float64Array;
  private centres: Float32Array[] = [];

  constructor(
    points: Float32Array,
    private readonly n: number,
    private readonly d: number,
  ) {
    this.p = points;
    this.order = Int32Array.from({ length: n }, (_, i) => i);
    this.minD = new Float64Array(n).fill(Infinity);
    this.nearest = new Int32Array(n).fill(-1);
    this.cellEnd = new Int32Array([n]);
    this.cellMax = new Float64Array([Infinity]);
  }

  select(k: number, seed: number, onProgress?: (done: number, total: number) => void): Int32Array {
    const selected = new Int32Array(k);
    const rand = seededRandom(seed ^ 0x9e3779b9);
    let pos = Math.floor(rand() * this.n); // permuted position of the next centre
    let regroupAt = 64;
    const every = Math.max(1, Math.floor(k / 100));
    for (let sel = 0; sel < k; sel++) {
      selected[sel] = this.order[pos];
      const c = this.p.slice(pos * this.d, pos * this.d + this.d);
      this.centres.push(c);
      this.addCentre(c, sel);
      if (sel + 1 === regroupAt && sel + 1 < k) {
        this.regroup();
        regroupAt *= 4;
      }
      pos = this.farthest();
      if (onProgress && (sel % every === 0 || sel === k - 1)) onProgress(sel + 1, k);
    }
    return selected;
  }

  private addCentre(c: Float32Array, sel: number): void {
    const { d, p, minD, nearest } = this;
    const cells = this.cellStart.length;
    for (let g = 0; g < cells; g++) {
      const gm = this.cellMax[g];
      if (gm === 0) continue;
      if (this.cellRadius[g] !== Infinity) {
        const bound = Math.sqrt(sqDist(c, 0, this.cellCentre, g * d, d)) - this.cellRadius[g];
        if (bound > 0 && bound * bound >= gm) continue;
      }
      let m = 0;
      for (let i = this.cellStart[g], e = this.cellEnd[g]; i < e; i++) {
        let v = minD[i];
        if (v > 0) {
          const dd = sqDist(c, 0, p, i * d, d);
          if (dd < v) {
            minD[i] = v = dd;
            nearest[i] = sel;
          }
        }
        if (v > m) m = v;
      }
      this.cellMax[g] = m;
    }
  }

  private farthest(): number {
    let bestG = 0;
    for (let g = 1; g < this.cellMax.length; g++) if (this.cellMax[g] > this.cellMax[bestG]) bestG = g;
    let best = this.cellStart[bestG];
    for (let i = best + 1, e = this.cellEnd[bestG]; i < e; i++) if (this.minD[i] > this.minD[best]) best = i;
    return best;
  }

  /** Rebuild cells from each point's nearest centre and store points contiguously per cell. */
  private regroup(): void {
    const { n, d } = this;
    const cells = this.centres.length;
    const counts = new Int32Array(cells + 1);
    for (let i = 0; i < n; i++) counts[this.nearest[i] + 1]++;
    const start = new Int32Array(cells);
    for (let g = 1; g < cells; g++) start[g] = start[g - 1] + counts[g];
    const end = start.slice();
    const p2 = new Float32Array(n * d);
    const order2 = new Int32Array(n);
    const minD2 = new Float64Array(n);
    const nearest2 = new Int32Array(n);
    const radius = new Float64Array(cells);
    for (let i = 0; i < n; i++) {
      const g = this.nearest[i];
      const j = end[g]++;
      p2.set(this.p.subarray(i * d, i * d + d), j * d);
      order2[j] = this.order[i];
      minD2[j] = this.minD[i];
      nearest2[j] = g;
      if (this.minD[i] > radius[g]) radius[g] = this.minD[i];
    }
    this.p = p2;
    this.order = order2;
    this.minD = minD2;
    this.nearest = nearest2;
    this.cellStart = start;
    this.cellEnd = end;
    this.cellCentre = new Float32Array(cells * d);
    this.centres.forEach((c, g) => this.cellCentre.set(c, g * d));
    // At rebuild time each member's distance to its cell centre is its current minimum.
    this.cellRadius = radius.map(Math.sqrt);
    this.cellMax = radius;
  }
}

/** Largest distance from any row to its nearest selected row (the covering radius), in x's space. */
export function coveringRadius(x: Float32Array, n: number, dim: number, selected: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < n; i++) {
    let best = Infinity;
    for (let j = 0; j < selected.length; j++) {
      const v = sqDist(x, i * dim, x, selected[j] * dim, dim);
      if (v < best) best = v;
    }
    if (best > worst) worst = best;
  }
  return Math.sqrt(worst);
}
