/**
 * `hiercore-edge calibrate`: from nominal images only, find the product types (FINCH + silhouette, or
 * folder labels), and build per cluster a PatchCore bank, routing keys with a routing limit, and a
 * threshold from held-out scores (k fold banks, or the one bank with each image's own rows masked).
 * Returns a Bundle; the caller writes it.
 */
import { cropImage, levelled, readImage, turnedQuarter, type FitMode, type RgbImage } from '../features/image.ts';
import { cacheBudgetBytes, PatchCache } from './patch-cache.ts';
import type { FeatureSettings } from '../features/extractor.ts';
import { ExtractorPool } from '../features/extractor-pool.ts';
import type { ExecutionProvider } from '../features/session.ts';
import { bankFromPatches, coresetBank, scorerOptionsFor, type CoresetSettings, type ScoringRuntime } from '../score/patchcore.ts';
import { MaskedScorer, rowSources } from '../score/held-out.ts';
import { allFinite, type FeatureExtractor } from '../features/extractor.ts';
import type { HeldOutMethod } from '../config.ts';
import { PatchScorer } from '../score/scorer.ts';
import type { SearchSettings } from '../score/ann.ts';
import { clusterEmbeddings, dot, normaliseRows, poseScaleOf, type ClusteringOptions, type ClusteringResult, type PoseScales } from '../route/finch.ts';
import { keyDistances, leaveOneOutDistances, routingLimit, selectKeys, type KeyMode, type LimitRule } from '../route/router.ts';
import { f1Threshold, frrThreshold, kFolds, summarise } from './threshold.ts';
import { BUNDLE_FORMAT_VERSION, newBundleId, type Bundle, type BundleCluster, type ClusterInfo } from '../bundle/bundle-file.ts';
import { applyScaleMerge, SCALE_MERGE, SCALE_SAMPLES, scaleMerge, type CropEmbedder, type FrameSize } from '../route/scale-merge.ts';
import { TURN_MERGE, turnMerge, type TurnEmbedder } from '../route/turn-merge.ts';
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
  /** how the bundle will be searched at inspection (recorded in it; held-out scores search the same way) */
  search?: SearchSettings;
  /** megabytes of patch features kept from the embedding pass for the banks (default 2048) */
  featureCacheMb?: number;
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
  /** each image's frame size (the scale test compares groups of different sizes at one pixel scale) */
  frames: FrameSize[];
  settings: Map<string, FeatureSettings>;
  /**
   * with `withPose`: each image's distance to one copy of it turned over — turned 180°, mirrored
   * left-right, mirrored top-bottom, in turn — so a cluster's pose scale samples all three at the cost
   * of one extra pass instead of three
   */
  pose?: PoseScales;
  /** patch features kept from this pass, by image index */
  patches?: PatchCache;
}

/** The three aspect-preserving ways to turn a part over: 0 turned 180°, 1 mirrored left-right, 2 top-bottom. */
export function turnedOver(img: RgbImage, way: 0 | 1 | 2): RgbImage {
  const { width: w, height: h, data } = img;
  const out = new Uint8Array(data.length);
  const flipX = way !== 2;
  const flipY = way !== 1;
  for (let y = 0; y < h; y++) {
    const ty = flipY ? h - 1 - y : y;
    for (let x = 0; x < w; x++) {
      const src = 3 * (y * w + x);
      const dst = 3 * (ty * w + (flipX ? w - 1 - x : x));
      out[dst] = data[src];
      out[dst + 1] = data[src + 1];
      out[dst + 2] = data[src + 2];
    }
  }
  return { width: w, height: h, data: out };
}

/**
 * Images whose turned-over copy is embedded for the pose scales: every one up to POSE_ALL, beyond that
 * an evenly spread half (at least POSE_ALL). A turned copy costs a backbone pass, as much as the
 * image itself; a group's pose scale is a 90th percentile, which half of a large set still pins down.
 */
export const POSE_ALL = 600;

export function poseSampled(i: number, n: number): boolean {
  const q = Math.max(POSE_ALL, Math.ceil(n / 2));
  return q >= n || Math.floor(((i + 1) * q) / n) > Math.floor((i * q) / n);
}

/**
 * The turned-over copy of each image (turnedOver's way 0-2), -1 for an image without one. The ways
 * go in turn over the sampled images: taken by image index, a sampling pattern could skip a way (at
 * 900 images every third image is left out, and with it every 180° turn).
 */
export function poseWays(n: number): Int8Array {
  const ways = new Int8Array(n).fill(-1);
  let k = 0;
  for (let i = 0; i < n; i++) if (poseSampled(i, n)) ways[i] = k++ % 3;
  return ways;
}

/** Unit semantic embeddings of the images, each at the input size its own frame resolves to. */
export async function embedImages(
  paths: string[],
  pool: ExtractorPool,
  features: (f: { width: number; height: number }) => FeatureSettings,
  progress?: ProgressFn,
  stage = 'embed',
  withPose = false,
  cache?: PatchCache,
): Promise<Embedded> {
  let semantic = new Float32Array(0);
  let dim = 0;
  const sizes: string[] = [];
  const frames: FrameSize[] = [];
  const settings = new Map<string, FeatureSettings>();
  const pose = new Float32Array(withPose ? paths.length : 0).fill(Number.NaN);
  const ways = withPose ? poseWays(paths.length) : undefined;
  let turned = new Float32Array(0);
  // Decoding runs on libuv's threads: reading the next image while the backbone runs hides most of it.
  // A read started ahead is awaited in the next turn; if this turn throws first, its rejection must not
  // surface as an unhandled one.
  const readAhead = (i: number) => {
    const p = readImage(paths[i]);
    p.catch(() => {});
    return p;
  };
  let next = paths.length ? readAhead(0) : undefined;
  for (let i = 0; i < paths.length; i++) {
    const img = await next!;
    next = i + 1 < paths.length ? readAhead(i + 1) : undefined;
    const s = features(img);
    const key = `${s.width}x${s.height}`;
    settings.set(key, s);
    sizes.push(key);
    frames.push({ width: img.width, height: img.height });
    const ex = await pool.get(s);
    const f = finiteFeatures(await ex.extract(img), paths[i]);
    if (!dim) {
      dim = f.semantic.length;
      semantic = new Float32Array(paths.length * dim);
      if (withPose) turned = new Float32Array(paths.length * dim).fill(Number.NaN);
    }
    const u = normaliseRows(f.semantic, 1, dim);
    semantic.set(u, i * dim);
    cache?.put(i, key, f.patches, true); // f is this turn's own onnxruntime output
    const way = ways?.[i] ?? -1;
    if (way >= 0) {
      const t = normaliseRows(await ex.semanticOf(turnedOver(img, way as 0 | 1 | 2)), 1, dim);
      pose[i] = 1 - dot(u, 0, t, 0, dim);
      turned.set(t, i * dim);
    }
    progress?.(stage, i + 1, paths.length);
  }
  return { semantic, dim, sizes, frames, settings, ...(withPose ? { pose: { samples: pose, perRow: 1, turned } } : {}), ...(cache ? { patches: cache } : {}) };
}

/** What the view tests need to read images again: their files, the feature settings per frame, a pool. */
export interface ViewInputs {
  images: string[];
  features: CalibrationOptions['features'];
  pool: ExtractorPool;
}

/** Least mixing of the two view tests (0 turns one off). */
export interface ViewMerges {
  turn: number;
  scale: number;
}

export function viewMerges(o: ClusteringOptions): ViewMerges {
  return { turn: o.turnMerge ?? TURN_MERGE, scale: o.scaleMerge ?? SCALE_MERGE };
}

/**
 * The view tests after the partition choice: first clusters that are one product turned a quarter
 * (turn-merge.ts), then clusters of different frame sizes that are one product at a common pixel
 * scale (scale-merge.ts) become one. Both read the images again from their files.
 */
export async function mergeViews(c0: ClusteringResult, emb: Embedded, m: ViewMerges, io: ViewInputs, progress?: ProgressFn): Promise<ClusteringResult> {
  const semanticOf = async (img: RgbImage) => normaliseRows(await (await io.pool.get(io.features(img))).semanticOf(img), 1, emb.dim);
  let c = c0;
  if (m.turn > 0 && c.count > 1) {
    const turn: TurnEmbedder = async (i) => semanticOf(turnedQuarter(await readImage(io.images[i])));
    const progressOf = (done: number, total: number) => progress?.('clustering (turns)', done, total);
    c = applyScaleMerge(c, await turnMerge(c.labels, c.count, emb.frames, emb.semantic, emb.dim, turn, { minMixing: m.turn, samples: SCALE_SAMPLES, progress: progressOf }), 'turn');
  }
  if (m.scale > 0 && c.count > 1) {
    // levelled: at one light level, since FINCH splits one product by light as well as by frame size
    const crop: CropEmbedder = async (i, window, asFilmed) => {
      const img = cropImage(await readImage(io.images[i]), window);
      return { levelled: await semanticOf(levelled(img)), ...(asFilmed ? { filmed: await semanticOf(img) } : {}) };
    };
    const progressOf = (done: number, total: number) => progress?.('clustering (frame sizes)', done, total);
    c = applyScaleMerge(c, await scaleMerge(c.labels, c.count, emb.frames, crop, { minMixing: m.scale, samples: SCALE_SAMPLES, progress: progressOf }));
  }
  return c;
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

/**
 * A NaN in one image's features would make its cluster's bank and threshold NaN, and a bundle that
 * fails every part: stop at the first such image instead, naming it.
 */
function finiteFeatures<F extends { patches: Float32Array; semantic: Float32Array }>(f: F, path: string): F {
  if (allFinite(f.patches) && allFinite(f.semantic)) return f;
  throw new CalibrationError(
    `the backbone gives NaN or infinite features on ${path}: check the image, and re-import or replace the backbone (a model that breaks on some frames makes those parts NG at inspection)`,
  );
}

/** Patch features of several images at one input size, one [P, dim] block per image. */
function extractPatches(paths: string[], pool: ExtractorPool, s: FeatureSettings, progress: ProgressFn | undefined, stage: string): Promise<Float32Array[]> {
  return memberPatches({ paths, members: paths.map((_, k) => k), sizeKey: '' }, pool, s, progress, stage);
}

async function scoreRows(scorer: PatchScorer, blocks: Float32Array[], rows: number[]): Promise<number[]> {
  const out: number[] = [];
  for (const r of rows) out.push((await scorer.score(blocks[r])).score);
  return out;
}

export interface CalibrationResult {
  bundle: Bundle;
  /** held-out (k-fold) scores of each cluster's members, in member order */
  heldOut: number[][];
  /** the semantic embeddings calibration clustered (for the report's per-cluster checks) */
  embedded: Embedded;
}

export async function calibrate(opts: CalibrationOptions, progress?: ProgressFn): Promise<CalibrationResult> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const n = opts.images.length;
  if (n === 0) throw new CalibrationError('no nominal images to calibrate from');
  if (opts.labels && opts.labels.length !== n) throw new CalibrationError(`${opts.labels.length} labels for ${n} images`);
  const pool = opts.pool ?? new ExtractorPool(opts.backbone, opts.runtime);
  try {
    const emb = opts.embedded ?? (await embedImages(opts.images, pool, opts.features, progress, 'embed', true, new PatchCache(cacheBudgetBytes(opts.featureCacheMb ?? 4096))));
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
      clustering = await mergeViews(clustering, emb, viewMerges(opts.clustering), { images: opts.images, features: opts.features, pool }, progress);
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
      const cacheKey = `${sizeKey}|${heldOutMethod(opts)}|${opts.folds}|${JSON.stringify(opts.search ?? null)}|${paths.join('|')}`;
      const { bank, heldOut } = opts.cache?.get(cacheKey) ?? (await buildClusterBank({ paths, members, cache: emb.patches, sizeKey }, settings, name, pool, opts, progress));
      for (const i of members) emb.patches?.drop(i);
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
          ...(opts.search ? { search: opts.search } : {}),
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
                  splits: clustering.splits,
                  ...(clustering.turnTests ? { turn_tests: clustering.turnTests } : {}),
                  ...(clustering.scaleTests ? { scale_tests: clustering.scaleTests } : {}),
                },
              }
            : {}),
          duration_s: Number(((performance.now() - t0) / 1000).toFixed(1)),
        },
        clusters: clusters.map((c) => c.info),
      },
      clusters,
    };
    return { bundle, heldOut: built.map((b) => b.heldOut), embedded: emb };
  } finally {
    if (!opts.pool) await pool.release();
  }
}

function heldOutMethod(opts: Pick<CalibrationOptions, 'heldOut'>): HeldOutMethod {
  return opts.heldOut ?? 'kfold';
}

/** A cluster's images: paths, their indices in the calibration, and the patches kept from embedding. */
interface MemberImages {
  paths: string[];
  members: number[];
  cache?: PatchCache;
  sizeKey: string;
}

/** The members' patch features, one block per member: from the cache where it holds them at this size, else extracted. */
async function memberPatches(m: MemberImages, pool: ExtractorPool, s: FeatureSettings, progress: ProgressFn | undefined, stage: string): Promise<Float32Array[]> {
  const ex = await pool.get(s);
  const blocks = m.members.map((i) => m.cache?.take(i, m.sizeKey));
  const missing = blocks.flatMap((b, k) => (b ? [] : [k]));
  for (let j = 0; j < missing.length; j++) {
    const path = m.paths[missing[j]];
    blocks[missing[j]] = finiteFeatures(await ex.extract(await readImage(path)), path).patches;
    progress?.(stage, j + 1, missing.length);
  }
  return blocks as Float32Array[];
}

/** The members' bank and their held-out scores, by the configured method. */
async function buildClusterBank(
  m: MemberImages,
  settings: FeatureSettings,
  name: string,
  pool: ExtractorPool,
  opts: CalibrationOptions,
  progress?: ProgressFn,
): Promise<{ bank: Bank; heldOut: number[] }> {
  const patches = await memberPatches(m, pool, settings, progress, `[${name}] features`);
  const paths = m.paths;
  const ex = await pool.get(settings);
  const build = heldOutMethod(opts) === 'kfold' ? kFoldBank : maskedBank;
  return build(ex, patches, paths.length, name, opts, progress);
}

type BankBuilder = (ex: FeatureExtractor, patches: Float32Array[], images: number, name: string, opts: CalibrationOptions, progress?: ProgressFn) => Promise<{ bank: Bank; heldOut: number[] }>;

/**
 * One coreset; each member scored against it with the rows of its held-out group masked: its own
 * rows (leave-self-out) or those of its whole fold (masked-kfold). Costs one coreset and one kNN per
 * image instead of k + 1 coresets.
 */
const maskedBank: BankBuilder = async (ex, patches, images, name, opts, progress) => {
  const { bank, selected } = await coresetBank(ex, patches, images, opts.coreset, (s, d, t) => progress?.(`[${name}] bank ${s}`, d, t));
  const scorer = await MaskedScorer.create(bank.vectors, bank.header.count, bank.header.dim, rowSources(selected, ex.patchCount), {
    patchCount: ex.patchCount,
    reweightNeighbours: opts.scoring.reweightNeighbours,
    search: opts.search,
    provider: opts.runtime.provider,
    threads: opts.runtime.threads,
  });
  try {
    const groups = heldOutGroups(images, opts);
    const heldOut = new Array<number>(images);
    progress?.(`[${name}] held-out scores`, 0, images);
    let done = 0;
    for (const g of groups) {
      for (const i of g) {
        heldOut[i] = await scorer.scoreWithout(patches[i], g);
        progress?.(`[${name}] held-out scores`, ++done, images);
      }
    }
    return { bank, heldOut };
  } finally {
    await scorer.release();
  }
};

/** Which images are masked together: each alone (leave-self-out), or the k folds of k-fold. */
function heldOutGroups(images: number, opts: CalibrationOptions): number[][] {
  if (heldOutMethod(opts) === 'leave-self-out') return Array.from({ length: images }, (_, i) => [i]);
  const folds = Math.min(opts.folds, images);
  const fold = kFolds(images, folds, opts.coreset.seed);
  const groups: number[][] = Array.from({ length: folds }, () => []);
  for (let i = 0; i < images; i++) groups[fold[i]].push(i);
  return groups.filter((g) => g.length);
}

/** k-fold held-out scores of the members, then the bank from all of them. */
const kFoldBank: BankBuilder = async (ex, patches, images, name, opts, progress) => {
  const members = Array.from({ length: images }, (_, k) => k);
  const folds = Math.min(opts.folds, images);
  const fold = kFolds(images, folds, opts.coreset.seed);
  const heldOut = new Array<number>(images);
  progress?.(`[${name}] held-out folds`, 0, folds);
  for (let f = 0; f < folds; f++) {
    const train = members.filter((k) => fold[k] !== f);
    const test = members.filter((k) => fold[k] === f);
    const bank = await bankFromPatches(
      ex,
      train.map((k) => patches[k]),
      train.length,
      opts.coreset,
      (s, d, t) => progress?.(`[${name}] fold ${f + 1}/${folds} ${s}`, d, t),
    );
    const scorer = await PatchScorer.create(bank.vectors, bank.header.count, bank.header.dim, scorerOptionsFor(ex, scoringRuntime(opts)));
    const scores = await scoreRows(scorer, patches, test);
    test.forEach((k, j) => (heldOut[k] = scores[j]));
    await scorer.release();
    progress?.(`[${name}] held-out folds`, f + 1, folds);
  }
  const bank = await bankFromPatches(ex, patches, images, opts.coreset, (s, d, t) => progress?.(`[${name}] bank ${s}`, d, t));
  return { bank, heldOut };
};

export function scoringRuntime(opts: Pick<CalibrationOptions, 'scoring' | 'runtime' | 'search'>): ScoringRuntime {
  return { sigma: opts.scoring.sigma, reweightNeighbours: opts.scoring.reweightNeighbours, search: opts.search, provider: opts.runtime.provider, threads: opts.runtime.threads };
}
