/** Building a PatchCore memory bank from nominal images, and scoring frames against it. */
import type { FeatureExtractor } from '../features/extractor.ts';
import { readImage, type RgbImage, type Geometry } from '../features/image.ts';
import { greedyCoreset } from './coreset.ts';
import { gatherRows, type Rows, valueCount } from '../util/vec.ts';
import type { Bank, BankHeader } from './bank-file.ts';
import { PatchScorer, type ScorerOptions } from './scorer.ts';
import type { ExecutionProvider } from '../features/session.ts';
import type { SearchSettings } from './ann.ts';

export interface CoresetSettings {
  ratio: number;
  projectionDim: number;
  seed: number;
  dtype: 'float32' | 'float16';
}

export type ProgressFn = (stage: string, done: number, total: number) => void;

export async function buildBank(extractor: FeatureExtractor, images: string[], cs: CoresetSettings, progress?: ProgressFn): Promise<Bank> {
  if (images.length === 0) throw new Error('no nominal images to build a bank from');
  const P = extractor.patchCount;
  const D = extractor.settings.dim;
  const all = new Float32Array(images.length * P * D);
  const t0 = performance.now();
  for (let i = 0; i < images.length; i++) {
    const f = await extractor.extract(await readImage(images[i]));
    all.set(f.patches, i * P * D);
    progress?.('features', i + 1, images.length);
  }
  const t1 = performance.now();
  const bank = await bankFromPatches(extractor, all, images.length, cs, progress);
  bank.header.calibration = { feature_ms: Math.round(t1 - t0) };
  return bank;
}

/** A bank from patch features already extracted: `all` holds `images` x patchCount rows of `dim`. */
export async function bankFromPatches(extractor: FeatureExtractor, all: Rows, images: number, cs: CoresetSettings, progress?: ProgressFn): Promise<Bank> {
  return (await coresetBank(extractor, all, images, cs, progress)).bank;
}

/** bankFromPatches, also returning which rows of `all` were selected (held-out scoring masks by source image). */
export async function coresetBank(extractor: FeatureExtractor, all: Rows, images: number, cs: CoresetSettings, progress?: ProgressFn): Promise<{ bank: Bank; selected: Int32Array }> {
  const D = extractor.settings.dim;
  const n = images * extractor.patchCount;
  if (valueCount(all) < n * D) throw new Error(`expected ${n}x${D} patch features, got ${valueCount(all)} values`);
  const t1 = performance.now();
  const idx = await greedyCoreset(all, n, D, {
    ratio: cs.ratio,
    projectionDim: cs.projectionDim,
    seed: cs.seed,
    onProgress: (d, t) => progress?.('coreset', d, t),
  });
  const t2 = performance.now();
  const vectors = gatherRows(all, D, idx);
  const s = extractor.settings;
  const header: BankHeader = {
    format_version: 1,
    created_at: new Date().toISOString(),
    backbone: { id: extractor.sidecar.id, onnx_sha256: extractor.modelSha256 },
    features: {
      width: s.width,
      height: s.height,
      fit: s.fit,
      pre_dim: s.preDim,
      dim: D,
      layers: s.layers ?? extractor.sidecar.outputs.filter((o) => o.role === 'patch').map((o) => o.name),
      grid: [extractor.gridHeight, extractor.gridWidth],
    },
    coreset: { ratio: cs.ratio, projection_dim: cs.projectionDim, seed: cs.seed, source_patches: n, source_images: images, build_ms: Math.round(t2 - t1) },
    count: idx.length,
    dim: D,
    dtype: cs.dtype,
  };
  return { bank: { header, vectors }, selected: idx };
}

export interface Inspection {
  score: number;
  heatmap: Float32Array;
  geometry: Geometry;
  semantic: Float32Array;
  timings: { preprocess: number; backbone: number; knn: number; reweight: number; heatmap: number };
}

export interface ScoringRuntime {
  reweightNeighbours?: number;
  /** nearest-neighbour search: exact (default) or the two-stage ANN graph (ann.ts) */
  search?: SearchSettings;
  sigma?: number;
  provider?: ExecutionProvider;
  threads?: number;
}

/** Scorer geometry for the patches this extractor produces, with the scoring/runtime settings. */
export function scorerOptionsFor(extractor: FeatureExtractor, opts: ScoringRuntime): ScorerOptions {
  const s = extractor.settings;
  return {
    gridHeight: extractor.gridHeight,
    gridWidth: extractor.gridWidth,
    height: s.height,
    width: s.width,
    sigma: opts.sigma ?? 4,
    reweightNeighbours: opts.reweightNeighbours ?? 0,
    search: opts.search,
    provider: opts.provider,
    threads: opts.threads,
  };
}

/** One bank plus the extractor that feeds it. */
export class PatchCoreModel {
  private constructor(
    readonly extractor: FeatureExtractor,
    readonly scorer: PatchScorer,
    readonly bank: Bank,
  ) {}

  static async create(extractor: FeatureExtractor, bank: Bank, opts: ScoringRuntime = {}): Promise<PatchCoreModel> {
    const scorer = await PatchScorer.create(bank.vectors, bank.header.count, bank.header.dim, scorerOptionsFor(extractor, opts));
    return new PatchCoreModel(extractor, scorer, bank);
  }

  async inspect(img: RgbImage): Promise<Inspection> {
    const f = await this.extractor.extract(img);
    const r = await this.scorer.score(f.patches);
    return { score: r.score, heatmap: r.heatmap, geometry: f.geometry, semantic: f.semantic, timings: { ...f.timings, ...r.timings } };
  }

  async release(): Promise<void> {
    await this.scorer.release();
  }
}
