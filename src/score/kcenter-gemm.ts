/**
 * Greedy k-center whose distance updates run as onnxruntime MatMuls, for banks too large for the
 * pruned JS loop (KCenter in coreset.ts): on a textured product the triangle-inequality pruning
 * skips almost nothing and a 500k-patch cluster took most of an hour.
 *
 * The selection is still the plain greedy one, evaluated lazily. A pool holds the M points farthest
 * from the chosen centres and is kept exact in JS while centres are chosen from it; every point
 * outside the pool is at most tau (the largest distance outside it) from its nearest centre and can
 * only get closer, so while the pool's farthest point is at least tau it is the global farthest
 * point. Once it drops below tau, the centres chosen since the last pass update every point in one
 * batched pass (|x|^2 - 2xc + |c|^2 as one GEMM, min over the batch), and a new pool is drawn.
 */
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../features/onnx/graph.ts';
import { createSession } from '../features/session.ts';
import { gatherRows, sqDist } from '../util/vec.ts';
import { bankOperand } from './knn-graph.ts';

/** Floats of the [rows, batch] cross-term block one session run may hold. */
const BLOCK_FLOATS = 4 << 20;

function updateGraph(d: number): Uint8Array {
  const g = new GraphBuilder('kc_');
  g.inputs.push({ name: 'x', dims: ['r', d + 1] }, { name: 'w', dims: [d + 1, 'b'] }, { name: 'xn', dims: ['r'] }, { name: 'old', dims: ['r'] });
  const cross = g.op('MatMul', ['x', 'w']);
  const nearest = g.op('Add', [g.op('ReduceMin', [cross], { axes: [1], keepdims: 0 }), 'xn']);
  g.op('Min', [g.op('Relu', [nearest]), 'old'], {}, 'min_d');
  g.outputs.push({ name: 'min_d', dims: ['r'] });
  return g.toModel('kcenter_update');
}

/** k-th largest value of v (1-based), by quickselect on a copy. */
export function kthLargest(v: Float32Array, k: number): number {
  const a = Float32Array.from(v);
  let lo = 0;
  let hi = a.length - 1;
  const target = k - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] > pivot) i++;
      while (a[j] < pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i++] = a[j];
        a[j--] = t;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target];
  }
  return a[target];
}

/** Rows minus their mean: distances are unchanged, and the norms in the GEMM form stay small. */
function centred(x: Float32Array, n: number, d: number): Float32Array {
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += x[i * d + j];
  for (let j = 0; j < d; j++) mean[j] /= n;
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) out[i * d + j] = x[i * d + j] - mean[j];
  return out;
}

export class GemmKCenter {
  private readonly xp: Float32Array; // [n, d+1]: each point with a trailing 1 for the |c|^2 row
  private readonly xn: Float32Array; // |x|^2
  private readonly minD: Float32Array;
  private readonly taken: Uint8Array;

  private readonly points: Float32Array; // centred copy: |x|^2 - 2xc + |c|^2 loses precision far from 0

  private constructor(
    raw: Float32Array,
    private readonly n: number,
    private readonly d: number,
    private readonly session: ort.InferenceSession,
    private readonly poolSize: number,
  ) {
    this.points = centred(raw, n, d);
    const points = this.points;
    this.xp = new Float32Array(n * (d + 1));
    this.xn = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) {
        const v = points[i * d + j];
        this.xp[i * (d + 1) + j] = v;
        s += v * v;
      }
      this.xp[i * (d + 1) + d] = 1;
      this.xn[i] = s;
    }
    this.minD = new Float32Array(n).fill(Number.MAX_VALUE);
    this.taken = new Uint8Array(n);
  }

  static async create(points: Float32Array, n: number, d: number, poolSize = 1024): Promise<GemmKCenter> {
    return new GemmKCenter(points, n, d, await createSession(updateGraph(d)), Math.min(poolSize, n));
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  /** Indices of k selected rows in selection order; the first is drawn from `rand`. */
  async select(k: number, rand: () => number, onProgress?: (done: number, total: number) => void): Promise<Int32Array> {
    const selected = new Int32Array(k);
    selected[0] = Math.floor(rand() * this.n);
    this.taken[selected[0]] = 1;
    let done = 1;
    let batch = [selected[0]];
    while (true) {
      await this.update(batch);
      onProgress?.(done, k);
      if (done === k) return selected;
      batch = this.chooseFromPool(selected, done, k);
      done += batch.length;
    }
  }

  /** Greedy picks from the current pool while they are provably the global farthest points. */
  private chooseFromPool(selected: Int32Array, done: number, k: number): number[] {
    const { pool, tau } = this.drawPool();
    const { d } = this;
    const m = pool.length;
    const px = gatherRows(this.points, d, pool);
    const pd = Float64Array.from(pool, (i) => this.minD[i]);
    const batch: number[] = [];
    while (done + batch.length < k) {
      let best = -1;
      for (let j = 0; j < m; j++) if (pd[j] >= 0 && (best < 0 || pd[j] > pd[best])) best = j;
      // The first pick of a pool is the global farthest by construction (tau bounds the rest).
      if (best < 0 || (batch.length > 0 && pd[best] < tau)) break;
      const pick = pool[best];
      selected[done + batch.length] = pick;
      this.taken[pick] = 1;
      batch.push(pick);
      pd[best] = -1;
      for (let j = 0; j < m; j++) {
        if (pd[j] <= 0) continue;
        const v = sqDist(px, best * d, px, j * d, d);
        if (v < pd[j]) pd[j] = v;
      }
    }
    return batch;
  }

  /** The poolSize farthest untaken points, and tau: no untaken point outside the pool is farther. */
  private drawPool(): { pool: Int32Array; tau: number } {
    const { n, minD, taken } = this;
    const untaken = new Float32Array(n);
    for (let i = 0; i < n; i++) untaken[i] = taken[i] ? -1 : minD[i];
    const m = this.poolSize;
    const tau = m < n ? kthLargest(untaken, m + 1) : -1;
    const pool: number[] = [];
    for (let i = 0; i < n && pool.length < m; i++) if (untaken[i] > tau) pool.push(i);
    // Ties at tau (duplicate patches): fill up with them; they are as far as anything outside.
    for (let i = 0; i < n && pool.length < m; i++) if (untaken[i] === tau && tau >= 0) pool.push(i);
    return { pool: Int32Array.from(pool), tau };
  }

  /** minD <- min(minD, distance to each centre of the batch), for every point, in GEMM blocks (the kNN scorer's operand). */
  private async update(batch: number[]): Promise<void> {
    const { d, n } = this;
    const b = batch.length;
    const wt = new ort.Tensor('float32', bankOperand(gatherRows(this.points, d, batch), b, d), [d + 1, b]);
    const rows = Math.max(256, Math.floor(BLOCK_FLOATS / b));
    for (let s = 0; s < n; s += rows) {
      const r = Math.min(rows, n - s);
      const res = await this.session.run({
        x: new ort.Tensor('float32', this.xp.subarray(s * (d + 1), (s + r) * (d + 1)), [r, d + 1]),
        w: wt,
        xn: new ort.Tensor('float32', this.xn.subarray(s, s + r), [r]),
        old: new ort.Tensor('float32', this.minD.subarray(s, s + r), [r]),
      });
      this.minD.set(res.min_d.data as Float32Array, s);
    }
    for (const c of batch) this.minD[c] = 0;
  }
}
