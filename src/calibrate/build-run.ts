/**
 * One calibration as both the CLI (`calibrate`, `calibrate --recipe`) and the daemon's calibration
 * process run it: build the bundle, write it, inspect the held-out frames and the labelled defects
 * with it, check that each routing key routes home, and gather what the report shows.
 */
import { basename } from 'node:path';
import { calibrate, type Embedded } from './calibrate.ts';
import { calibrationOptions } from './options.ts';
import { loadEngineConfig, type EngineConfig } from '../config.ts';
import { readBundleFile, writeBundleFile, type Bundle } from '../bundle/bundle-file.ts';
import { addImages, addProduct, engineForBundle } from './incremental.ts';
import { Inspector } from '../inspect/inspector.ts';
import { readImage } from '../features/image.ts';
import { Router } from '../route/router.ts';
import { ExtractorPool } from '../features/extractor-pool.ts';
import type { ProgressFn } from '../score/patchcore.ts';
import type { MergeStep } from '../route/finch.ts';
import { bestSplit, FEW_IMAGES, SPLIT_SILHOUETTE, spread, StageClock, thumb, thumbOf, type ClusterReport, type ReportData, type Thumb, type Warning } from './report-data.ts';

export interface BuildRequest {
  images: string[];
  holdout: string[];
  /** known-class labels, one per image */
  labels?: string[];
  /** labelled defect images: scored for the report (and the F1 threshold) */
  defects?: string[];
  /** engine settings file ("" = defaults) */
  engineConfig: string;
  /** the recipe's engine settings over the file's */
  overrides?: Record<string, Record<string, unknown>>;
  backbone: string;
  threads: number;
  bundleOut: string;
  /** change one product of the bundle `base` instead of calibrating every product from `images` */
  increment?: Increment & { base: string };
}

/** A new product (its frames are `images`), or approved good images added to one cluster. */
export type Increment = { kind: 'product'; name: string } | { kind: 'images'; cluster: string };

export interface HeldOutVerdict {
  path: string;
  verdict: 'OK' | 'NG' | 'UNKNOWN';
  cluster: string | null;
  nearest: string;
  score: number | null;
}

export interface BuildOutcome {
  bundle_id: string;
  clusters: { name: string; size: number; threshold: number; routing_limit: number }[];
  heldOut: HeldOutVerdict[];
  /** per cluster: how many of its routing keys route to it, of how many */
  keysHome: { name: string; home: number; keys: number }[];
  duration_s: number;
  /** what the report shows (absent in outcomes from before the report had it) */
  report?: ReportData;
}

/** Rejected held-out frames and defects shown with their heatmap: at most this many each. */
const HEATMAPS = 6;
const THUMBS = 6;

/** The engine config a request calibrates with. */
export function requestConfig(req: Pick<BuildRequest, 'engineConfig' | 'overrides' | 'backbone' | 'threads'>): EngineConfig {
  return loadEngineConfig(req.engineConfig || undefined, { ...(req.overrides ?? {}), backbone: req.backbone, runtime: { provider: 'cpu', threads: req.threads } });
}

interface Built {
  bundle: Bundle;
  /** held-out good scores per cluster ([] for a cluster an increment left as it was) */
  heldOutScores: number[][];
  embedded: Embedded;
  /** the images `embedded` holds, in order */
  images: string[];
  /** the one cluster an increment calibrated (others are reported as unchanged) */
  changed?: number;
}

async function buildAll(req: BuildRequest, c: EngineConfig, progress: ProgressFn, log?: (m: string) => void): Promise<Built> {
  const opts = calibrationOptions(c);
  const pool = new ExtractorPool(opts.backbone, opts.runtime);
  try {
    const r = await calibrate({ ...opts, images: req.images, labels: req.labels, defects: req.defects, pool, log }, progress);
    return { bundle: r.bundle, heldOutScores: r.heldOut, embedded: r.embedded, images: req.images };
  } finally {
    await pool.release();
  }
}

/** One product of `inc.base` calibrated (or rebuilt), under the base bundle's scoring settings. */
async function buildIncrement(req: BuildRequest, inc: Increment & { base: string }, c: EngineConfig, progress: ProgressFn, log?: (m: string) => void): Promise<Built> {
  const base = readBundleFile(inc.base);
  const opts = calibrationOptions(engineForBundle(c, base));
  const pool = new ExtractorPool(opts.backbone, opts.runtime);
  try {
    // No labelled defects inside: a one-cluster calibration would route every defect of every product
    // to the new cluster (and its F1 threshold). They are scored below with the whole bundle.
    const o = { ...opts, pool, log };
    const r = inc.kind === 'product' ? await addProduct(base, req.images, inc.name, o, progress) : await addImages(base, inc.cluster, req.images, o, progress);
    for (const w of r.warnings) log?.(`warning: ${w}`);
    const heldOutScores = r.bundle.clusters.map((_, i) => (i === r.changed ? r.heldOut : []));
    return { bundle: r.bundle, heldOutScores, embedded: r.embedded, images: r.images, changed: r.changed };
  } finally {
    await pool.release();
  }
}

export async function buildAndValidate(req: BuildRequest, c: EngineConfig, progress?: ProgressFn, log?: (m: string) => void): Promise<{ outcome: BuildOutcome; bundle: Bundle }> {
  const t0 = performance.now();
  const clock = new StageClock();
  const prog: ProgressFn = (stage, done, total) => {
    clock.mark(stage);
    progress?.(stage, done, total);
  };
  const { bundle, heldOutScores, embedded, images, changed } = req.increment ? await buildIncrement(req, req.increment, c, prog, log) : await buildAll(req, c, prog, log);
  writeBundleFile(req.bundleOut, bundle);

  const insp = await Inspector.load(bundle, req.backbone, { provider: 'cpu', threads: req.threads });
  const heldOut: HeldOutVerdict[] = [];
  const rejected: Thumb[] = [];
  const defectScores = bundle.clusters.map(() => [] as number[]);
  const missed: Thumb[] = [];
  let defectsUnknown = 0;
  try {
    for (const [i, path] of req.holdout.entries()) {
      prog('validate', i, req.holdout.length);
      const r = await insp.inspect(await readImage(path));
      heldOut.push({ path, verdict: r.verdict, cluster: r.cluster, nearest: r.route.nearest, score: r.score });
      if (r.verdict === 'NG' && rejected.length < HEATMAPS) {
        const png = await insp.heatmapImage(r, 'png');
        if (png) rejected.push(await thumbOf(png, `${basename(path)}: ${r.cluster} ${r.score?.toFixed(3)}`));
      }
    }
    prog('validate', req.holdout.length, req.holdout.length);
    for (const [i, path] of (req.defects ?? []).entries()) {
      prog('defects scored', i, req.defects!.length);
      const r = await insp.inspect(await readImage(path));
      if (r.cluster_id === null || r.score === null) {
        defectsUnknown++;
        continue;
      }
      defectScores[r.cluster_id].push(r.score);
      if (r.verdict === 'OK' && missed.length < HEATMAPS) {
        const png = await insp.heatmapImage(r, 'png');
        missed.push(png ? await thumbOf(png, `${basename(path)}: ${r.score.toFixed(3)}`) : await thumb(path, basename(path)));
      }
    }
  } finally {
    await insp.release();
  }
  const dim = bundle.header.semantic_dim;
  const router = new Router(
    bundle.clusters.map((k) => ({ keys: k.keys, count: k.info.keys.count, limit: k.info.routing_limit })),
    dim,
  );
  const keysHome = bundle.clusters.map((k, ci) => {
    let home = 0;
    for (let j = 0; j < k.info.keys.count; j++) if (router.route(k.keys.slice(j * dim, (j + 1) * dim)).cluster === ci) home++;
    return { name: k.info.name, home, keys: k.info.keys.count };
  });

  prog('report', 0, 1);
  const report = await reportData(bundle, heldOutScores, defectScores, embedded, images, { rejected, missed, defectsUnknown }, changed);
  report.stages = clock.result();
  return {
    bundle,
    outcome: {
      bundle_id: bundle.header.bundle_id,
      clusters: bundle.header.clusters.map((k) => ({ name: k.name, size: k.members.length, threshold: k.threshold, routing_limit: k.routing_limit })),
      heldOut,
      keysHome,
      duration_s: Number(((performance.now() - t0) / 1000).toFixed(1)),
      report,
    },
  };
}

type ClusterInfo = Bundle['clusters'][number]['info'];

/** What the bundle says of a cluster, as the report shows it. */
function clusterFigures(info: ClusterInfo): Pick<ClusterReport, 'name' | 'images' | 'bank' | 'threshold' | 'threshold_source' | 'routing_limit'> {
  return { name: info.name, images: info.members.length, bank: info.bank.count, threshold: info.threshold, threshold_source: info.threshold_source, routing_limit: info.routing_limit };
}

/** A cluster an increment kept as it was: its figures from the bundle, nothing re-measured. */
function unchangedCluster(info: ClusterInfo): ClusterReport {
  return {
    ...clusterFigures(info),
    held_out: [],
    expected_frr: 0,
    defects: [],
    split_silhouette: null,
    thumbs: [],
    unchanged: true,
  };
}

export async function reportData(
  bundle: Bundle,
  heldOut: number[][],
  defects: number[][],
  emb: { semantic: Float32Array; dim: number },
  images: string[],
  seen: { rejected: Thumb[]; missed: Thumb[]; defectsUnknown: number },
  changed?: number,
): Promise<ReportData> {
  const h = bundle.header;
  const index = new Map(images.map((p, i) => [p, i]));
  const warnings: Warning[] = [];
  const clusters: ClusterReport[] = [];
  for (const [ci, k] of bundle.clusters.entries()) {
    const info = k.info;
    if (changed !== undefined && ci !== changed) {
      clusters.push(unchangedCluster(info));
      continue;
    }
    const scores = heldOut[ci] ?? [];
    const u = new Float32Array(info.members.length * emb.dim);
    info.members.forEach((m, j) => {
      const i = index.get(m)!;
      u.set(emb.semantic.subarray(i * emb.dim, (i + 1) * emb.dim), j * emb.dim);
    });
    const split = bestSplit(u, info.members.length, emb.dim);
    const over = scores.map((s, j) => ({ s, m: info.members[j] })).filter((x) => x.s > info.threshold);
    // An FRR threshold puts about frr_target x n held-out good images above it by construction.
    const allowed = info.threshold_source === 'frr' ? Math.ceil(h.settings.frr_target * scores.length) : 0;
    const overThumbs = () => Promise.all(spread(over, THUMBS).map((x) => thumb(x.m, `${basename(x.m)}: ${x.s.toFixed(3)}`)));
    clusters.push({
      ...clusterFigures(info),
      held_out: scores.map((s) => Number(s.toFixed(5))),
      expected_frr: scores.length ? Number((over.length / scores.length).toFixed(4)) : 0,
      defects: defects[ci].map((s) => Number(s.toFixed(5))),
      split_silhouette: split,
      thumbs: await Promise.all(spread(info.members, THUMBS).map((m) => thumb(m, basename(m)))),
      ...(over.length && over.length <= allowed ? { tail: await overThumbs() } : {}),
    });
    if (info.members.length < FEW_IMAGES)
      warnings.push({ text: `${info.name}: only ${info.members.length} images; its threshold rests on a few held-out scores. Add good images of this product (${FEW_IMAGES} or more).` });
    if (split !== null && split >= SPLIT_SILHOUETTE) {
      const steps = (h.calibration.clustering?.merged ?? []) as Partial<MergeStep>[];
      const scaled = steps.filter((m) => m.reason === 'scale' && m.into === info.id).length;
      const turned = steps.filter((m) => m.reason === 'turn' && m.into === info.id).length;
      const merged =
        (info.statistics.merged_groups ? ` (${info.statistics.merged_groups} FINCH group(s) were merged into it as other poses of one product)` : '') +
        (scaled ? ` (${scaled} group(s) of other frame sizes were merged into it by the scale test: cropped to one pixel scale they look alike, so a split by frame size is expected)` : '') +
        (turned ? ` (${turned} group(s) were merged into it as the product turned a quarter, so a split by orientation is expected)` : '');
      warnings.push({
        text: `${info.name} looks like two products: a split of it alone has silhouette ${split.toFixed(2)} (>= ${SPLIT_SILHOUETTE})${merged}. Check its thumbnails; if they are two products, calibrate with folder labels.`,
      });
    }
    if (over.length > allowed)
      warnings.push({
        text: `${info.name}: ${over.length} good image(s) score above the threshold when held out (they would be rejected)${allowed ? `, more than the ${allowed} the false-reject target allows` : ''}. Check them for defects or unusual views.`,
        images: await overThumbs(),
      });
    const minDefect = defects[ci].length ? Math.min(...defects[ci]) : Infinity;
    const likeDefects = scores.filter((s) => s >= minDefect).length;
    if (likeDefects) warnings.push({ text: `${info.name}: ${likeDefects} good image(s) score as high as the lowest-scoring labelled defect (${minDefect.toFixed(3)}).` });
  }
  if (seen.rejected.length) warnings.push({ text: 'Held-out good frames rejected by the new bundle (heatmaps):', images: seen.rejected });
  if (seen.missed.length) warnings.push({ text: 'Labelled defects the new bundle passes as OK (their scores are below the threshold):', images: seen.missed });
  if (seen.defectsUnknown) warnings.push({ text: `${seen.defectsUnknown} labelled defect image(s) routed to no cluster (UNKNOWN): another product, or far off the good parts.` });
  return {
    mode: h.calibration.mode,
    ...(h.calibration.clustering ? { clustering: h.calibration.clustering } : {}),
    frr_target: h.settings.frr_target,
    clusters,
    stages: [],
    warnings,
    defects_unknown: seen.defectsUnknown,
  };
}
