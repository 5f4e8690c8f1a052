/**
 * Held-out scores of good images without rebuilding a bank per fold: the cluster's coreset is built
 * once, remembering which image each row came from, and every member is scored against that bank with
 * its own rows masked out (leave-self-out). One ONNX run per image, the same cost as inspection.
 */
import type * as ort from 'onnxruntime-node';
import { Tensor } from 'onnxruntime-node';
import { GraphBuilder } from '../features/onnx/graph.ts';
import { createSession, type ExecutionProvider } from '../features/session.ts';
import { annIndex, buildAnnGraph, EXACT_SEARCH, type SearchSettings } from './ann.ts';
import { bankOperand } from './knn-graph.ts';
import { gatherRows } from '../util/vec.ts';
import { reweightScore } from './scorer.ts';
import { sqDist } from '../util/vec.ts';

/** Image index of each coreset row: rows are selected from `images` x `patchCount` concatenated patches. */
export function rowSources(selected: ArrayLike<number>, patchCount: number): Int32Array {
  return Int32Array.from(selected, (r) => Math.floor(r / patchCount));
}

/**
 * Nearest-neighbour distances of P patches to the bank, with an additive per-row mask ([m]; 0 keeps a
 * row, +Infinity drops it) applied before the min, so the bank stays one initializer for all images.
 */
export function buildMaskedKnnGraph(bank: Float32Array, m: number, dim: number, patches: number): Uint8Array {
  const g = new GraphBuilder('mknn_');
  g.inputs.push({ name: 'patches', dims: [patches, dim] }, { name: 'mask', dims: [m] });
  const ones = g.op('Pad', ['patches', g.constInt64('pads', [0, 0, 0, 1]), g.constFloat('one', [], [1])], { mode: 'constant' });
  const cross = g.op('MatMul', [ones, g.floatTensor('bank_operand', [dim + 1, m], bankOperand(bank, m, dim))]);
  const minCross = g.op('ReduceMin', [g.op('Add', [cross, 'mask'])], { axes: [1], keepdims: 0 });
  const a2 = g.op('ReduceSumSquare', ['patches'], { axes: [1], keepdims: 0 });
  g.op('Sqrt', [g.op('Relu', [g.op('Add', [minCross, a2])])], {}, 'patch_scores');
  g.outputs.push({ name: 'patch_scores', dims: [patches] });
  return g.toModel('masked_knn', 'hiercore-edge leave-self-out scorer');
}

export interface MaskedScorerOptions {
  patchCount: number;
  /** the two-stage approximate search (ann.ts) with the same mask, as inspection would search; default exact */
  search?: SearchSettings;
  reweightNeighbours?: number;
  provider?: ExecutionProvider;
  threads?: number;
}

export class MaskedScorer {
  private readonly mask: Float32Array;
  private readonly rowsOf = new Map<number, number[]>();

  private constructor(
    private readonly session: ort.InferenceSession,
    readonly bank: Float32Array,
    readonly m: number,
    readonly dim: number,
    readonly source: Int32Array,
    readonly opts: MaskedScorerOptions,
  ) {
    this.mask = new Float32Array(m);
    source.forEach((img, r) => this.rowsOf.set(img, [...(this.rowsOf.get(img) ?? []), r]));
  }

  static async create(bank: Float32Array, m: number, dim: number, source: Int32Array, opts: MaskedScorerOptions): Promise<MaskedScorer> {
    if (source.length !== m) throw new Error(`${source.length} row sources for a bank of ${m} rows`);
    const q = opts.search ?? EXACT_SEARCH;
    const graph =
      q.mode === 'ann'
        ? buildAnnGraph({ bank, m, dim, ...(await annIndex(bank, m, dim, q.projection_dim, opts.threads)), candidates: q.candidates, patches: opts.patchCount, masked: true, coarse: q.coarse })
        : buildMaskedKnnGraph(bank, m, dim, opts.patchCount);
    const session = await createSession(graph, opts.provider ?? 'cpu', opts.threads);
    return new MaskedScorer(session, bank, m, dim, source, opts);
  }

  /** Image score of `patches` against the bank without the rows that came from the given image(s). */
  async scoreWithout(patches: Float32Array, images: number | number[]): Promise<number> {
    const own = (Array.isArray(images) ? images : [images]).flatMap((i) => this.rowsOf.get(i) ?? []);
    if (own.length >= this.m) throw new Error(`every bank row comes from image(s) ${images}: nothing to score against`);
    for (const r of own) this.mask[r] = Infinity;
    try {
      const out = await this.session.run({
        patches: new Tensor('float32', patches, [this.opts.patchCount, this.dim]),
        mask: new Tensor('float32', this.mask, [this.m]),
      });
      return this.imageScore(out.patch_scores.data as Float32Array, patches, own);
    } finally {
      for (const r of own) this.mask[r] = 0;
    }
  }

  private imageScore(patchScores: Float32Array, patches: Float32Array, own: number[]): number {
    let best = 0;
    for (let i = 1; i < patchScores.length; i++) if (patchScores[i] > patchScores[best]) best = i;
    const k = this.opts.reweightNeighbours ?? 0;
    if (k <= 0) return patchScores[best];
    // Eq. 7 looks at the bank's neighbourhood of the nearest row, which must not include own rows either.
    const drop = new Set(own);
    const keep = Array.from({ length: this.m }, (_, r) => r).filter((r) => !drop.has(r));
    return reweightScore(gatherRows(this.bank, this.dim, keep), keep.length, this.dim, patches, best * this.dim, k).score;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Brute-force reference: max over patches of the distance to the nearest bank row not from `image`. */
export function leaveSelfOutScore(bank: Float32Array, m: number, dim: number, source: ArrayLike<number>, patches: Float32Array, patchCount: number, image: number): number {
  let worst = 0;
  for (let p = 0; p < patchCount; p++) {
    let best = Infinity;
    for (let r = 0; r < m; r++) if (source[r] !== image) best = Math.min(best, sqDist(bank, r * dim, patches, p * dim, dim));
    worst = Math.max(worst, Math.sqrt(best));
  }
  return worst;
}
