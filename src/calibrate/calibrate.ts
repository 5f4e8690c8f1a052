/**
 * `hiercore-edge calibrate`: from nominal images only, find the product types (FINCH + silhouette, or
 * folder labels), and build per cluster a PatchCore bank, routing keys with a routing limit, and a
 * threshold from held-out scores (k fold banks, or the one bank with each image's own rows masked).
 * Returns a Bundle; the caller writes it.
 */
import { readImage, type RgbImage } from '../features/image.ts';
import type { FeatureSettings } from '../features/extractor.ts';
import { ExtractorPool } from '../features/extractor-pool.ts';
import type { ExecutionProvider } from '../features/session.ts';
import { bankFromPatches, coresetBank, scorerOptionsFor, type CoresetSettings, type ScoringRuntime } from '../score/patchcore.ts';
import { MaskedScorer, rowSources } from '../score/held-out.ts';
import type { FeatureExtractor } from '../features/extractor.ts';
import type { HeldOutMethod } from '../config.ts';
import { PatchScorer } from '../score/scorer.ts';
import { clusterEmbeddings, dot, normaliseRows, poseScaleOf, type ClusteringOptions, type ClusteringResult, type PoseScales } from '../route/finch.ts';
import { keyDistances, leaveOneOutDistances, routingLimit, selectKeys, type KeyMode, type LimitRule } from '../route/router.ts';
import { f1Threshold, frrThreshold, kFolds, summarise } from './threshold.ts';
import { BUNDLE_FORMAT_VERSION, newBundleId, type Bundle, type BundleCluster, type ClusterInfo } from '../bundle/bundle-file.ts';
import type { FitMode } from '../features/image.ts';
import type { ProgressFn } from '../score/patchcore.ts';
import type { Bank } from '../score/bank-file.ts';

export interface CalibrationOptions {
  images: string[];
  /** known_class mode: one label per image (folder names); clusters are the labels */
  labels?: string[];
  /** optional labelled defect images: enable the F1-optimal threshold where they route */
  defects?: string[];
  backbone: string;
  inputSize: string;
  features: (frame: { width: number; height: number }) => FeatureSettings;
  coreset: CoresetSettings;
  scoring: { reweightNeighbours: number; sigma: number };
  clustering: ClusteringOptions;
  frrTarget: number;
  folds: number;
  /** held-out scores from k fold banks (absent: kfold) or from the full bank without each image's rows */
  heldOut?: HeldOutMethod;
  keyMode: KeyMode;
  keyCount: number;
  limit: LimitRule;
  thresholdSource: 'frr' | 'f1';
  runtime: { provider: ExecutionProvider; threads?: number };
  /** reuse extractors across calls (evaluate); calibrate creates and releases its own otherwise */
  pool?: ExtractorPool;
  /**
   * Banks and held-out scores by member set (evaluate calibrates several ways; when two calibrations
   * find the same clusters they share the work). Keyed by input size and member paths.
   */
  cache?: Map<string, { bank: Bank; heldOut: number[] }>;
  /** embeddings of `images` (same order, with pose) from embedImages, when the caller has them already */
  embedded?: Embedded;
  log?: (msg: string) => void;
}

export class CalibrationError extends Error {}

export interface Embedded {
  semantic: Float32Array; // [n, dim], unit rows
  dim: number;
  sizes: string[]; // input size key per image
  settings: Map<string, FeatureSettings>;
  /** with `withPose`: distances to the image turned 180°, mirrored left-right and top-bottom */
  pose?: PoseScales;
}

/** The three aspect-preserving ways to turn a part over, for the pose scale. */
export function turnedOver(img: RgbImage): RgbImage[] {
  const { width: w, height: h, data } = img;
  const rot = new Uint8Array(data.length);
  const flipX = new Uint8Array(data.length);
  const flipY = new Uint8Array(data.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const src = 3 * (y * w + x);
      for (let c = 0; c < 3; c++) {
        rot[3 * ((h - 1 - y) * w + (w - 1 - x)) + c] = data[src + c];
        flipX[3 * (y * w + (w - 1 - x)) + c] = data[src + c];
        flipY[3 * ((h - 1 - y) * w + x) + c] = data[src + c];
      }
    }
  }
  return [rot, flipX, flipY].map((d) => ({ width: w, height: h, data: d }));
}

/** Unit semantic embeddings of the images, each at the input size its own frame resolves to. */
export async function embedImages(
  paths: string[],
  pool: ExtractorPool,
  features: (f: { width: number; height: number }) => FeatureSettings,
  progress?: ProgressFn,
  stage = 'embed',
  withPose = false,
): Promise<Embedded> {
  let semantic = new Float32Array(0);
  let dim = 0;
  const sizes: string[] = [];
  const settings = new Map<string, FeatureSettings>();
  const pose = new Float32Array(withPose ? paths.length * 3 : 0);
  for (let i = 0; i < paths.length; i++) {
    const img = await readImage(paths[i]);
    const s = features(img);
    const key = `${s.width}x${s.height}`;
    settings.set(key, s);
    sizes.push(key);
    const ex = await pool.get(s);
    const f = await ex.extract(img);
    if (!dim) {
      dim = f.semantic.length;
      semantic = new Float32Array(paths.length * dim);
    }
    const u = normaliseRows(f.semantic, 1, dim);
    semantic.set(u, i * dim);
    if (withPose) {
      const turned = turnedOver(img);
      for (let k = 0; k < turned.length; k++) pose[i * 3 + k] = 1 - dot(u, 0, normaliseRows((await ex.extract(turned[k])).semantic, 1, dim), 0, dim);
    }
    progress?.(stage, i + 1, paths.length);
  }
  return { semantic, dim, sizes, settings, ...(withPose ? { pose: { samples: pose, perRow: 3 } } : {}) };
}

function majority(values: string[]): string {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0][0];
}

function partitionFromLabels(labels: string[]): { labels: Int32Array; count: number; names: string[] } {
  const names = [...new Set(labels)].sort();
  return { labels: Int32Array.from(labels, (l) => names.indexOf(l)), count: names.length, names };
}

/** Patch features of several images at one input size, concatenated: [n * P, dim]. */
async function extractPatches(paths: string[], pool: ExtractorPool, s: FeatureSettings, progress: ProgressFn | undefined, stage: string): Promise<Float32Array> {
  const ex = await pool.get(s);
  const per = ex.patchCount * s.dim;
  const all = new Float32Array(paths.length * per);
  for (let i = 0; i < paths.length; i++) {
    const img = await readImage(paths[i]);
    all.set((await ex.extract(img)).patches, i * per);
    progress?.(stage, i + 1, paths.length);
  }
  return all;
}

async function scoreRows(scorer: PatchScorer, all: Float32Array, per: number, rows: number[]): Promise<number[]> {
  const out: number[] = [];
  for (const r of rows) out.push((await scorer.score(all.subarray(r * per, (r + 1) * per))).score);
  return out;
}

export interface CalibrationResult {
  bundle: Bundle;
  /** held-out (k-fold) scores of each cluster's members, in member order */
  heldOut: number[][];
}

export async function calibrate(opts: CalibrationOptions, progress?: ProgressFn): Promise<CalibrationResult> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const n = opts.images.length;
  if (n === 0) throw new CalibrationError('no nominal images to calibrate from');
  if (opts.labels && opts.labels.length !== n) throw new CalibrationError(`${opts.labels.length} labels for ${n} images`);
  const pool = opts.pool ?? new ExtractorPool(opts.backbone, opts.runtime);
  try {
    const emb = opts.embedded ?? (await embedImages(opts.images, pool, opts.features, progress, 'embed', true));
    if (emb.sizes.length !== n || !emb.pose) throw new CalibrationError(`precomputed embeddings cover ${emb.sizes.length} images${emb.pose ? '' : ' without pose'}, calibrating ${n}`);
    const { semantic, dim } = emb;

    // 1. Which images belong together.
    let clustering: ClusteringResult | undefined;
    let part: { labels: Int32Array; count: number; names: string[] };
    if (opts.labels) {
      part = partitionFromLabels(opts.labels);
      log(`known_class: ${part.count} classes from folder names (${part.names.join(', ')})`);
    } else {
      if (n < opts.clustering.minClusterSize)
        throw new CalibrationError(`${n} images are fewer than the minimum cluster size ${opts.clustering.minClusterSize}: add nominal images or lower calibration.min_cluster_size`);
      progress?.('clustering', 0, 1);
      clustering = clusterEmbeddings(semantic, n, dim, opts.clustering, emb.pose);
      progress?.('clustering', 1, 1);
      part = { labels: clustering.labels, count: clustering.count, names: Array.from({ length: clustering.count }, (_, i) => `cluster-${i}`) };
      log(`clustering: ${clustering.reason}`);
    }

    // 2. Per cluster: keys, routing limit, fold banks -> held-out scores, final bank.
    const built: { info: Omit<ClusterInfo, 'keys' | 'bank'>; keys: Float32Array; keyCount: number; bank: Bank; heldOut: number[]; settings: FeatureSettings }[] = [];
    for (let c = 0; c < part.count; c++) {
      const members = opts.images.map((_, i) => i).filter((i) => part.labels[i] === c);
      const name = part.names[c];
      if (members.length < opts.clustering.minClusterSize) {
        throw new CalibrationError(
          `${name} has ${members.length} images, fewer than the minimum ${opts.clustering.minClusterSize} for a bank and a threshold: add images of that class or lower calibration.min_cluster_size`,
        );
      }
      const sizeKey = majority(members.map((i) => emb.sizes[i]));
      const settings = emb.settings.get(sizeKey)!;
      const odd = members.filter((i) => emb.sizes[i] !== sizeKey).length;
      log(`[${name}] ${members.length} images at ${sizeKey}${odd ? ` (${odd} of another aspect ratio are fitted to it)` : ''}`);

      const u = new Float32Array(members.length * dim);
      members.forEach((i, k) => u.set(semantic.subarray(i * dim, (i + 1) * dim), k * dim));
      const keys = selectKeys(u, members.length, dim, opts.keyMode, opts.keyCount);
      const loo = leaveOneOutDistances(u, members.length, dim, keys);
      const poseScale = poseScaleOf(emb.pose!, members);
      const limit = routingLimit(loo, opts.limit, poseScale);

      const paths = members.map((i) => opts.images[i]);
      const cacheKey = `${sizeKey}|${heldOutMethod(opts)}|${opts.folds}|${paths.join('|')}`;
      const { bank, heldOut } = opts.cache?.get(cacheKey) ?? (await buildClusterBank(paths, settings, name, pool, opts, progress));
      opts.cache?.set(cacheKey, { bank, heldOut });
      const frr = frrThreshold(heldOut, opts.frrTarget);
      const nominal = summarise(heldOut);
      log(
        `[${name}] bank ${bank.header.count} patches; held-out good scores p50 ${nominal.p50} p99 ${nominal.p99} max ${nominal.max}; threshold ${frr.toFixed(4)} (FRR ${opts.frrTarget}); routing limit ${limit.toFixed(4)}`,
      );
      built.push({
        info: {
          id: c,
          name,
          members: paths,
          features: { width: settings.width, height: settings.height, fit: settings.fit as FitMode },
          threshold: frr,
          threshold_source: 'frr',
          thresholds: { frr },
          routing_limit: limit,
          statistics: {
            nominal,
            key_distance: summarise(loo),
            pose_scale: Number(poseScale.toFixed(5)),
            ...(clustering ? { merged_groups: clustering.merged.filter((m) => m.reason === 'pose' && m.into === c).length } : {}),
          },
        },
        keys: keys.keys,
        keyCount: keys.count,
        bank,
        heldOut,
        settings,
      });
    }

    // 3. Labelled defects (optional): route each to its nearest cluster and score it there.
    if (opts.defects?.length) {
      const dEmb = await embedImages(opts.defects, pool, opts.features, progress, 'defects embed');
      const clusterKeys = built.map((b) => ({ keys: b.keys, count: b.keyCount, limit: b.info.routing_limit }));
      const byCluster = new Map<number, number[]>();
      for (let i = 0; i < opts.defects.length; i++) {
        const d = keyDistances(clusterKeys, dEmb.semantic.subarray(i * dim, (i + 1) * dim), dim);
        const c = d.indexOf(Math.min(...d));
        byCluster.set(c, [...(byCluster.get(c) ?? []), i]);
      }
      for (const [c, rows] of byCluster) {
        const b = built[c];
        const ex = await pool.get(b.settings);
        const scorer = await PatchScorer.create(b.bank.vectors, b.bank.header.count, b.bank.header.dim, scorerOptionsFor(ex, scoringRuntime(opts)));
        const patches = await extractPatches(
          rows.map((r) => opts.defects![r]),
          pool,
          b.settings,
          progress,
          `[${b.info.name}] defects`,
        );
        const scores = await scoreRows(
          scorer,
          patches,
          ex.patchCount * b.settings.dim,
          rows.map((_, j) => j),
        );
        await scorer.release();
        const f1 = f1Threshold(b.heldOut, scores);
        if (f1) {
          b.info.thresholds = { ...b.info.thresholds, f1: f1.threshold, f1_score: Number(f1.f1.toFixed(4)), defect_images: rows.length };
          log(`[${b.info.name}] ${rows.length} defect images: F1-optimal threshold ${f1.threshold.toFixed(4)} (F1 ${f1.f1.toFixed(3)} on held-out good + defects)`);
        }
      }
    }
    for (const b of built) {
      if (opts.thresholdSource === 'f1') {
        if (b.info.thresholds.f1 === undefined) log(`[${b.info.name}] no defect images routed here: keeping the FRR threshold`);
        else {
          b.info.threshold = b.info.thresholds.f1;
          b.info.threshold_source = 'f1';
        }
      }
    }

    const first = await pool.get(built[0].settings);
    const clusters: BundleCluster[] = built.map((b) => ({
      info: { ...b.info, keys: { count: b.keyCount, offset: 0, length: 0 }, bank: { count: b.bank.header.count, offset: 0, length: 0 } },
      keys: b.keys,
      bank: b.bank,
    }));
    const bundle: Bundle = {
      header: {
        format_version: BUNDLE_FORMAT_VERSION,
        bundle_id: newBundleId(),
        created_at: new Date().toISOString(),
        backbone: { id: first.sidecar.id, onnx_sha256: first.modelSha256 },
        semantic_dim: dim,
        scoring: {
          input_size: opts.inputSize,
          fit: built[0].settings.fit,
          pre_dim: built[0].settings.preDim,
          dim: built[0].settings.dim,
          reweight_neighbours: opts.scoring.reweightNeighbours,
          heatmap_sigma: opts.scoring.sigma,
        },
        settings: {
          frr_target: opts.frrTarget,
          folds: opts.folds,
          key_mode: opts.keyMode,
          routing_limit: opts.limit,
        },
        calibration: {
          mode: opts.labels ? 'known_class' : 'cluster',
          images: n,
          ...(clustering
            ? {
                clustering: {
                  hierarchy: clustering.hierarchy.map((h) => ({ count: h.count, silhouette: h.silhouette === null ? null : Number(h.silhouette.toFixed(4)) })),
                  chosen: clustering.chosen,
                  reason: clustering.reason,
                  merged: clustering.merged,
                },
              }
            : {}),
          duration_s: Number(((performance.now() - t0) / 1000).toFixed(1)),
        },
        clusters: clusters.map((c) => c.info),
      },
      clusters,
    };
    return { bundle, heldOut: built.map((b) => b.heldOut) };
  } finally {
    if (!opts.pool) await pool.release();
  }
}

function heldOutMethod(opts: Pick<CalibrationOptions, 'heldOut'>): HeldOutMethod {
  return opts.heldOut ?? 'kfold';
}

/** The members' bank and their held-out scores, by the configured method. */
async function buildClusterBank(
  paths: string[],
  settings: FeatureSettings,
  name: string,
  pool: ExtractorPool,
  opts: CalibrationOptions,
  progress?: ProgressFn,
): Promise<{ bank: Bank; heldOut: number[] }> {
  const patches = await extractPatches(paths, pool, settings, progress, `[${name}] features`);
  const ex = await pool.get(settings);
  const build = heldOutMethod(opts) === 'leave-self-out' ? leaveSelfOutBank : kFoldBank;
  return build(ex, patches, paths.length, name, opts, progress);
}

type BankBuilder = (ex: FeatureExtractor, patches: Float32Array, images: number, name: string, opts: CalibrationOptions, progress?: ProgressFn) => Promise<{ bank: Bank; heldOut: number[] }>;

/**
 * One coreset; each member scored against it without its own rows. Costs one coreset and one kNN per
 * image instead of k + 1 coresets.
 */
const leaveSelfOutBank: BankBuilder = async (ex, patches, images, name, opts, progress) => {
  const per = ex.patchCount * ex.settings.dim;
  const { bank, selected } = await coresetBank(ex, patches, images, opts.coreset, (s, d, t) => progress?.(`[${name}] bank ${s}`, d, t));
  const scorer = await MaskedScorer.create(bank.vectors, bank.header.count, bank.header.dim, rowSources(selected, ex.patchCount), {
    patchCount: ex.patchCount,
    reweightNeighbours: opts.scoring.reweightNeighbours,
    provider: opts.runtime.provider,
    threads: opts.runtime.threads,
  });
  try {
    const heldOut: number[] = [];
    progress?.(`[${name}] held-out scores`, 0, images);
    for (let i = 0; i < images; i++) {
      heldOut.push(await scorer.scoreWithout(patches.subarray(i * per, (i + 1) * per), i));
      progress?.(`[${name}] held-out scores`, i + 1, images);
    }
    return { bank, heldOut };
  } finally {
    await scorer.release();
  }
};

/** k-fold held-out scores of the members, then the bank from all of them. */
const kFoldBank: BankBuilder = async (ex, patches, images, name, opts, progress) => {
  const per = ex.patchCount * ex.settings.dim;
  const members = Array.from({ length: images }, (_, k) => k);
  const folds = Math.min(opts.folds, images);
  const fold = kFolds(images, folds, opts.coreset.seed);
  const heldOut = new Array<number>(images);
  progress?.(`[${name}] held-out folds`, 0, folds);
  for (let f = 0; f < folds; f++) {
    const train = members.filter((k) => fold[k] !== f);
    const test = members.filter((k) => fold[k] === f);
    const sub = new Float32Array(train.length * per);
    train.forEach((k, j) => sub.set(patches.subarray(k * per, (k + 1) * per), j * per));
    const bank = await bankFromPatches(ex, sub, train.length, opts.coreset, (s, d, t) => progress?.(`[${name}] fold ${f + 1}/${folds} ${s}`, d, t));
    const scorer = await PatchScorer.create(bank.vectors, bank.header.count, bank.header.dim, scorerOptionsFor(ex, scoringRuntime(opts)));
    const scores = await scoreRows(scorer, patches, per, test);
    test.forEach((k, j) => (heldOut[k] = scores[j]));
    await scorer.release();
    progress?.(`[${name}] held-out folds`, f + 1, folds);
  }
  const bank = await bankFromPatches(ex, patches, images, opts.coreset, (s, d, t) => progress?.(`[${name}] bank ${s}`, d, t));
  return { bank, heldOut };
};

export function scoringRuntime(opts: Pick<CalibrationOptions, 'scoring' | 'runtime'>): ScoringRuntime {
  return { sigma: opts.scoring.sigma, reweightNeighbours: opts.scoring.reweightNeighbours, provider: opts.runtime.provider, threads: opts.runtime.threads };
}
