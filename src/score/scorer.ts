/**
 * PatchCore scoring of one frame's patch features against one memory bank: patch scores and heatmap
 * from the ONNX kNN graph, image score = max patch score, optionally re-weighted (paper Eq. 7).
 */
import type * as ort from 'onnxruntime-node';
import { Tensor } from 'onnxruntime-node';
import { buildHeatmapGraph, buildKnnGraph } from './knn-graph.ts';
import { annIndex, buildAnnGraph, EXACT_SEARCH, type SearchSettings } from './ann.ts';
import { createSession, type ExecutionProvider } from '../features/session.ts';
import { sqDist } from '../util/vec.ts';

export interface ScorerOptions {
  gridHeight: number;
  gridWidth: number;
  height: number;
  width: number;
  sigma?: number;
  /** neighbours for the Eq. 7 re-weighting; 0 disables it (image score = max patch distance) */
  reweightNeighbours?: number;
  /** exact brute force (default) or the two-stage approximate search (ann.ts) */
  search?: SearchSettings;
  provider?: ExecutionProvider;
  threads?: number;
}

export interface ScoreResult {
  /** NaN when a patch feature or a patch distance is not finite: a broken input is never a low score */
  score: number;
  maxPatch: number;
  patchScores: Float32Array;
  heatmap: Float32Array; // [height, width]
  timings: { knn: number; reweight: number; heatmap: number };
}

function argMax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/**
 * The first patch whose features or distance are NaN or infinite (a broken backbone, an fp16 overflow
 * on an accelerator), or -1. The search graph's min/max may silently skip a NaN, so the features are
 * checked too. Four plain sums (independent, so the CPU overlaps them) find out whether there is any (float32 values summed in float64 cannot
 * overflow at any patch count, so only a NaN or an infinity makes it non-finite); the patch is looked
 * for only then.
 */
export function firstNonFinitePatch(patches: Float32Array, dim: number, patchScores: Float32Array): number {
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  for (let i = 0; i < patchScores.length; i++) a += patchScores[i];
  const n4 = patches.length & ~3;
  for (let i = 0; i < n4; i += 4) {
    a += patches[i];
    b += patches[i + 1];
    c += patches[i + 2];
    d += patches[i + 3];
  }
  for (let i = n4; i < patches.length; i++) a += patches[i];
  if (Number.isFinite(a + b + c + d)) return -1;
  for (let p = 0; p < patchScores.length; p++) {
    if (!Number.isFinite(patchScores[p])) return p;
    for (let k = p * dim, end = k + dim; k < end; k++) if (!Number.isFinite(patches[k])) return p;
  }
  return -1;
}

/** k nearest rows of `bank` to the query (brute force), nearest first: [index, distance]. */
export function nearestRows(bank: Float32Array, m: number, dim: number, q: Float32Array, qo: number, k: number): [number, number][] {
  const best: [number, number][] = [];
  for (let j = 0; j < m; j++) {
    const d = sqDist(bank, j * dim, q, qo, dim);
    if (best.length < k || d < best[best.length - 1][1]) {
      best.push([j, d]);
      best.sort((a, b) => a[1] - b[1]);
      if (best.length > k) best.pop();
    }
  }
  return best.map(([j, d]) => [j, Math.sqrt(d)]);
}

/**
 * Eq. 7 of Roth et al.: s = (1 - softmax over the b neighbourhood of m*) * s*, where the neighbourhood
 * is m* and its nearest bank neighbours, and distances are from the test patch. A test patch whose
 * nearest bank entry sits in a sparse region of the bank gets a higher score.
 */
export function reweightScore(bank: Float32Array, m: number, dim: number, patch: Float32Array, po: number, neighbours: number): { score: number; weight: number } {
  const [nearest] = nearestRows(bank, m, dim, patch, po, 1);
  const support = nearestRows(bank, m, dim, bank, nearest[0] * dim, Math.min(neighbours, m));
  const dists = support.map(([j]) => Math.sqrt(sqDist(bank, j * dim, patch, po, dim)));
  const mx = Math.max(...dists);
  const ex = dists.map((d) => Math.exp(d - mx));
  const total = ex.reduce((a, b) => a + b, 0);
  const weight = 1 - ex[0] / total;
  return { score: weight * nearest[1], weight };
}

async function searchGraph(
  bank: Float32Array,
  m: number,
  dim: number,
  patches: number,
  search: SearchSettings,
  threads: number | undefined,
  geometry: Omit<Parameters<typeof buildKnnGraph>[0], 'bank' | 'm' | 'dim'>,
): Promise<Uint8Array> {
  if (search.mode === 'exact') return buildKnnGraph({ bank, m, dim, ...geometry });
  const index = await annIndex(bank, m, dim, search.projection_dim, threads);
  return buildAnnGraph({ bank, m, dim, ...index, candidates: search.candidates, patches, coarse: search.coarse });
}

export class PatchScorer {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly heatmapSession: ort.InferenceSession,
    readonly bank: Float32Array,
    readonly m: number,
    readonly dim: number,
    readonly opts: Required<Pick<ScorerOptions, 'gridHeight' | 'gridWidth' | 'height' | 'width' | 'sigma' | 'reweightNeighbours' | 'search'>>,
  ) {}

  static async create(bank: Float32Array, m: number, dim: number, opts: ScorerOptions): Promise<PatchScorer> {
    const full = { sigma: 4, reweightNeighbours: 0, ...opts, search: opts.search ?? EXACT_SEARCH };
    const geometry = { gridHeight: full.gridHeight, gridWidth: full.gridWidth, height: full.height, width: full.width, sigma: full.sigma };
    const session = await createSession(await searchGraph(bank, m, dim, full.gridHeight * full.gridWidth, full.search, opts.threads, geometry), opts.provider ?? 'cpu', opts.threads);
    const heatmapSession = await createSession(buildHeatmapGraph(geometry), opts.provider ?? 'cpu', opts.threads);
    return new PatchScorer(session, heatmapSession, bank, m, dim, full);
  }

  async score(patches: Float32Array): Promise<ScoreResult> {
    const P = this.opts.gridHeight * this.opts.gridWidth;
    if (patches.length !== P * this.dim) throw new Error(`expected ${P}x${this.dim} patch features, got ${patches.length} values`);
    const t0 = performance.now();
    const out = await this.session.run({ patches: new Tensor('float32', patches, [P, this.dim]) });
    const patchScores = out.patch_scores.data as Float32Array;
    const broken = firstNonFinitePatch(patches, this.dim, patchScores);
    const maxPatch = broken >= 0 ? broken : argMax(patchScores);
    const t1 = performance.now();
    let score = broken >= 0 ? Number.NaN : patchScores[maxPatch];
    if (broken < 0 && this.opts.reweightNeighbours > 0) score = reweightScore(this.bank, this.m, this.dim, patches, maxPatch * this.dim, this.opts.reweightNeighbours).score;
    const t2 = performance.now();
    const heat = await this.heatmapSession.run({ patch_scores: new Tensor('float32', patchScores, [P]) });
    const heatmap = heat.heatmap.data as Float32Array;
    const t3 = performance.now();
    return { score, maxPatch, patchScores, heatmap, timings: { knn: t1 - t0, reweight: t2 - t1, heatmap: t3 - t2 } };
  }

  async release(): Promise<void> {
    await this.session.release();
    await this.heatmapSession.release();
  }
}
