/**
 * `evaluate --defect-types`: defect regions and defect-type discovery on MVTec-layout data, where
 * test/<defect_type>/ gives the true type and ground_truth/ the masks.
 *
 * Per category: calibrate a one-cluster bundle from train/good exactly as `calibrate` does (so the
 * threshold range of the regions comes from the same statistics as on the line), find the regions of
 * every defective test image, and measure
 * - region quality: IoU of the binarised region mask with the ground-truth mask, and how often the
 *   region count equals the number of ground-truth components;
 * - discovery: NMI, ARI and Hungarian-matched F1 (micro, i.e. matched accuracy, as AnomalyNCD reports
 *   it) of the image types against the folders, and the number of types found vs true.
 * Every defective image is analysed, also those the threshold would pass as OK (AnomalyNCD clusters
 * all defective test images too); how many were NG is reported.
 */
import { existsSync } from 'node:fs';
import { loadCategory, type TestImage } from './dataset.ts';
import { labelRegions, nmi } from './metrics.ts';
import { readMask, contentMask } from './evaluate.ts';
import { readImage } from '../features/image.ts';
import { calibrate, type CalibrationOptions } from '../calibrate/calibrate.ts';
import { readBundleFile, writeBundleFile, type Bundle } from '../bundle/bundle-file.ts';
import { FrameAnalyser, clusterStats, type AnalysedFrame } from '../explain/analyse.ts';
import { describeRegions, type RegionDescriptor } from '../explain/descriptors.ts';
import { discoverTypes, type DiscoverOptions } from '../explain/discover.ts';
import { findRegions, type RegionSettings } from '../explain/regions.ts';
import { rangeFromCalibration, DEFAULT_SPREAD } from '../explain/mebin.ts';
import type { Progress } from '../util/progress.ts';

// ---------------------------------------------------------------- clustering metrics

/** Contingency table rows = predicted labels, columns = true labels (both remapped to 0..). */
function contingency(pred: ArrayLike<number>, truth: ArrayLike<number>): { table: number[][]; rows: number; cols: number } {
  const pi = new Map<number, number>();
  const ti = new Map<number, number>();
  for (let i = 0; i < pred.length; i++) {
    if (!pi.has(pred[i])) pi.set(pred[i], pi.size);
    if (!ti.has(truth[i])) ti.set(truth[i], ti.size);
  }
  const table = Array.from({ length: pi.size }, () => new Array<number>(ti.size).fill(0));
  for (let i = 0; i < pred.length; i++) table[pi.get(pred[i])!][ti.get(truth[i])!]++;
  return { table, rows: pi.size, cols: ti.size };
}

const choose2 = (n: number) => (n * (n - 1)) / 2;

/** Adjusted Rand index (Hubert & Arabie 1985), as scikit-learn's adjusted_rand_score. */
export function ari(pred: ArrayLike<number>, truth: ArrayLike<number>): number {
  const n = pred.length;
  const { table } = contingency(pred, truth);
  let index = 0;
  const rowSums: number[] = table.map((r) => r.reduce((a, b) => a + b, 0));
  const colSums: number[] = table[0]?.map((_, j) => table.reduce((a, r) => a + r[j], 0)) ?? [];
  for (const r of table) for (const v of r) index += choose2(v);
  const a = rowSums.reduce((s, v) => s + choose2(v), 0);
  const b = colSums.reduce((s, v) => s + choose2(v), 0);
  const expected = (a * b) / choose2(n);
  const max = (a + b) / 2;
  if (max === expected) return 1; // both partitions trivial and identical in structure
  return (index - expected) / (max - expected);
}

/**
 * Maximum-weight assignment of rows to columns of a (possibly rectangular) matrix (Hungarian
 * algorithm, Kuhn-Munkres with potentials, O(n^3)). Returns the column of each row, -1 when unmatched.
 */
export function hungarianMax(w: number[][]): number[] {
  const rows = w.length;
  const cols = rows ? w[0].length : 0;
  const n = Math.max(rows, cols);
  let big = 0;
  for (const r of w) for (const v of r) big = Math.max(big, v);
  // Minimise cost = big - weight on the square matrix padded with zero-weight entries.
  const cost = (i: number, j: number) => big - (i < rows && j < cols ? w[i][j] : 0);
  const u = new Float64Array(n + 1);
  const v = new Float64Array(n + 1);
  const p = new Int32Array(n + 1); // p[j]: row matched to column j (1-based), 0 = none
  const way = new Int32Array(n + 1);
  for (let i = 1; i <= n; i++) {
    p[0] = i;
    let j0 = 0;
    const minv = new Float64Array(n + 1).fill(Infinity);
    const used = new Uint8Array(n + 1);
    do {
      used[j0] = 1;
      const i0 = p[j0];
      let delta = Infinity;
      let j1 = 0;
      for (let j = 1; j <= n; j++) {
        if (used[j]) continue;
        const cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (let j = 0; j <= n; j++) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else minv[j] -= delta;
      }
      j0 = j1;
    } while (p[j0] !== 0);
    do {
      const j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0);
  }
  const out = new Array<number>(rows).fill(-1);
  for (let j = 1; j <= n; j++) if (p[j] && p[j] - 1 < rows && j - 1 < cols) out[p[j] - 1] = j - 1;
  return out;
}

/**
 * Share of items whose predicted cluster is matched to their true class under the best one-to-one
 * matching (micro F1 after Hungarian matching, as AnomalyNCD and SimGCD report "F1"/ACC);
 * unmatched clusters count as wrong.
 */
export function hungarianF1(pred: ArrayLike<number>, truth: ArrayLike<number>): number {
  if (pred.length === 0) return 0;
  const { table } = contingency(pred, truth);
  const match = hungarianMax(table);
  let hit = 0;
  match.forEach((j, i) => {
    if (j >= 0) hit += table[i][j];
  });
  return hit / pred.length;
}

// ---------------------------------------------------------------- region quality

export function maskIoU(pred: ArrayLike<number>, truth: ArrayLike<number>, valid?: ArrayLike<number>): number {
  let inter = 0;
  let union = 0;
  for (let i = 0; i < pred.length; i++) {
    if (valid && !valid[i]) continue;
    const a = pred[i] ? 1 : 0;
    const b = truth[i] ? 1 : 0;
    inter += a & b;
    union += a | b;
  }
  return union === 0 ? 1 : inter / union;
}

// ---------------------------------------------------------------- evaluation

export interface DefectFrame {
  test: TestImage;
  truth: number;
  analysed: AnalysedFrame;
  mask: Uint8Array | null;
}

export interface DefectTypesOptions {
  dataset: string;
  categories: string[];
  backbone: string;
  /** calibration settings as `calibrate` would use them (calibrationOptions of the engine config) */
  calibration: Omit<CalibrationOptions, 'images'>;
  regions?: RegionSettings;
  discover?: DiscoverOptions;
  /** keep calibrated bundles here (<dir>/<category>.hcebundle) and reuse them when present */
  bundleCache?: string;
}

export interface CategoryDefectResult {
  defective_images: number;
  ng_images: number;
  true_types: number;
  regions: {
    with_regions: number;
    mean_count: number;
    mask_iou: number | null;
    /** over the frames the threshold calls NG (the only ones the daemon gives regions) */
    mask_iou_ng: number | null;
    count_match: number | null;
    ms_per_map: number;
  };
  discovery: { types_found: number; nmi: number; ari: number; f1: number; reason: string; per_type?: Record<string, Record<string, number>> } | null;
}

const r4 = (v: number) => Number(v.toFixed(4));

async function bundleFor(name: string, train: string[], opts: DefectTypesOptions, progress: Progress): Promise<Bundle> {
  const cached = opts.bundleCache ? `${opts.bundleCache}/${name}.hcebundle` : null;
  if (cached && existsSync(cached)) return readBundleFile(cached);
  progress.log(`[${name}] calibrating from ${train.length} good images`);
  const { bundle } = await calibrate({ ...opts.calibration, images: train, labels: train.map(() => name) }, progress.update);
  if (cached) writeBundleFile(cached, bundle);
  return bundle;
}

/** Analyse every defective test image of a category. */
export async function collectDefectFrames(opts: DefectTypesOptions, name: string, progress: Progress): Promise<{ frames: DefectFrame[]; truthNames: string[]; bundle: Bundle }> {
  const cat = loadCategory(opts.dataset, name);
  const bundle = await bundleFor(name, cat.train, opts, progress);
  const analyser = await FrameAnalyser.load(bundle, opts.backbone, { provider: opts.calibration.runtime.provider, threads: opts.calibration.runtime.threads, regions: opts.regions });
  const defective = cat.test.filter((t) => t.anomalous);
  const truthNames = [...new Set(defective.map((t) => t.defect))].sort();
  const frames: DefectFrame[] = [];
  try {
    for (let i = 0; i < defective.length; i++) {
      const t = defective[i];
      const img = await readImage(t.path);
      const analysed = await analyser.analyse(img, 0);
      const mask = t.mask ? await readMask(t.mask, img.width, img.height, { ...analysed.input, fit: bundle.header.scoring.fit }) : null;
      frames.push({ test: t, truth: truthNames.indexOf(t.defect), analysed, mask });
      progress.update(`[${name}] regions`, i + 1, defective.length);
    }
  } finally {
    await analyser.release();
  }
  return { frames, truthNames, bundle };
}

/** Region quality and discovery over analysed frames (re-running the regions with `regions` settings). */
export function scoreDefectFrames(frames: DefectFrame[], truthNames: string[], regionSettings: RegionSettings = {}, discover: DiscoverOptions = { clusters: 'auto' }): CategoryDefectResult {
  const ious: number[] = [];
  const iousNg: number[] = [];
  let matches = 0;
  let withMasks = 0;
  let withRegions = 0;
  let regionTotal = 0;
  let ms = 0;
  const descriptors: RegionDescriptor[] = [];
  const image: number[] = [];
  const area: number[] = [];
  frames.forEach((f, fi) => {
    const a = f.analysed;
    const info = a.cluster!;
    const t0 = performance.now();
    const r = findRegions(a.heatmap!, a.input, a.geometry, a.frame, clusterStats(info), regionSettings);
    ms += performance.now() - t0;
    regionTotal += r.regions.length;
    if (r.regions.length) withRegions++;
    if (f.mask) {
      withMasks++;
      const kept = new Set(r.input.map((x) => x.label));
      const pred = r.mebin.labels.map((l) => (kept.has(l) ? 1 : 0));
      const iou = maskIoU(pred, f.mask, contentMask(a.geometry, a.input.width, a.input.height));
      ious.push(iou);
      if (a.verdict === 'NG') iousNg.push(iou);
      if (labelRegions(f.mask, a.input.width, a.input.height).count === r.regions.length) matches++;
    }
    const low = rangeFromCalibration(clusterStats(info), regionSettings.spread ?? DEFAULT_SPREAD).low;
    const ds = describeRegions(
      {
        patches: a.patches!,
        dim: a.patches!.length / (a.grid.width * a.grid.height),
        grid: a.grid,
        heatmap: a.heatmap!,
        labels: r.mebin.labels,
        input: a.input,
        low,
        threshold: info.threshold,
        p50: info.statistics.nominal.p50,
        content: a.geometry.content,
      },
      r.input,
    );
    ds.forEach((d, k) => {
      descriptors.push(d);
      image.push(fi);
      area.push(r.input[k].area);
    });
  });
  let discovery: CategoryDefectResult['discovery'] = null;
  if (truthNames.length > 1 && descriptors.length > 0) {
    const found = discoverTypes({ descriptors, image, area, images: frames.length }, discover);
    // An image without regions is its own "no region" prediction, which no true type can match well.
    const pred = Array.from(found.imageTypes, (t) => (t < 0 ? found.types.length : t));
    const truth = frames.map((f) => f.truth);
    const perType: Record<string, Record<string, number>> = {};
    frames.forEach((f, i) => {
      const k = pred[i] < found.types.length ? found.types[pred[i]].id : 'none';
      perType[truthNames[f.truth]] ??= {};
      perType[truthNames[f.truth]][k] = (perType[truthNames[f.truth]][k] ?? 0) + 1;
    });
    discovery = { types_found: found.types.length, nmi: r4(nmi(pred, truth)), ari: r4(ari(pred, truth)), f1: r4(hungarianF1(pred, truth)), reason: found.choice.reason, per_type: perType };
  }
  return {
    defective_images: frames.length,
    ng_images: frames.filter((f) => f.analysed.verdict === 'NG').length,
    true_types: truthNames.length,
    regions: {
      with_regions: withRegions,
      mean_count: r4(regionTotal / Math.max(1, frames.length)),
      mask_iou: ious.length ? r4(ious.reduce((s, v) => s + v, 0) / ious.length) : null,
      mask_iou_ng: iousNg.length ? r4(iousNg.reduce((s, v) => s + v, 0) / iousNg.length) : null,
      count_match: withMasks ? r4(matches / withMasks) : null,
      ms_per_map: r4(ms / Math.max(1, frames.length)),
    },
    discovery,
  };
}

export interface DefectTypesReport {
  settings: Record<string, unknown>;
  categories: Record<string, CategoryDefectResult>;
  mean: { nmi: number | null; ari: number | null; f1: number | null; mask_iou: number | null; count_match: number | null };
}

export async function evaluateDefectTypes(opts: DefectTypesOptions, progress: Progress): Promise<DefectTypesReport> {
  const categories: Record<string, CategoryDefectResult> = {};
  for (const name of opts.categories) {
    const { frames, truthNames } = await collectDefectFrames(opts, name, progress);
    const res = scoreDefectFrames(frames, truthNames, opts.regions, opts.discover);
    categories[name] = res;
    const d = res.discovery;
    progress.log(
      `[${name}] ${res.defective_images} defective (${res.ng_images} NG), regions: IoU ${res.regions.mask_iou} count match ${res.regions.count_match}; ${d ? `types ${d.types_found} found / ${res.true_types} true, NMI ${d.nmi} ARI ${d.ari} F1 ${d.f1}` : `${res.true_types} defect type(s): no discovery measure`}`,
    );
  }
  const mean = (f: (r: CategoryDefectResult) => number | null | undefined) => {
    const v = Object.values(categories)
      .map(f)
      .filter((x): x is number => typeof x === 'number');
    return v.length ? r4(v.reduce((a, b) => a + b, 0) / v.length) : null;
  };
  return {
    settings: { backbone: opts.backbone, regions: opts.regions ?? {}, discover: opts.discover ?? { clusters: 'auto' } },
    categories,
    mean: {
      nmi: mean((r) => r.discovery?.nmi),
      ari: mean((r) => r.discovery?.ari),
      f1: mean((r) => r.discovery?.f1),
      mask_iou: mean((r) => r.regions.mask_iou),
      count_match: mean((r) => r.regions.count_match),
    },
  };
}
