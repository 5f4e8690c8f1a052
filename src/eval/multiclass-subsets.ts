/**
 * `hiercore-edge evaluate --multiclass`: every mix (subset) of the products, each calibrated twice —
 * without labels (FINCH clusters, what the daemon runs) and with folder labels (`known_class`) — and
 * measured on the test images of its products: clusters vs products, NMI and purity, routing accuracy,
 * the routed image AUROC beside the product's own single-product bank, and the leave-one-product-out
 * check (calibrate the mix without X, route X's test images: share UNKNOWN; good parts of the others
 * routed UNKNOWN by mistake).
 *
 * Kept cheap: every image is embedded once; a cluster with the same members in another mix reuses its
 * bank (calibrate's cache), and every test image is extracted once and scored once per distinct bank.
 */
import { CalibrationError, calibrate, embedImages, scoringRuntime, type CalibrationOptions, type CalibrationResult, type Embedded } from '../calibrate/calibrate.ts';
import { normaliseScore } from '../calibrate/threshold.ts';
import { ExtractorPool } from '../features/extractor-pool.ts';
import type { FeatureSettings } from '../features/extractor.ts';
import { readImage, type RgbImage } from '../features/image.ts';
import { Router } from '../route/router.ts';
import type { Bank } from '../score/bank-file.ts';
import { scorerOptionsFor } from '../score/patchcore.ts';
import { PatchScorer } from '../score/scorer.ts';
import type { Progress } from '../util/progress.ts';
import { loadCategory, type Category } from './dataset.ts';
import { auroc, nmi, purity } from './metrics.ts';
import { allSubsets, routerFor, sliceEmbedded, subsetName } from './subsets.ts';

export const MODES = ['clustered', 'known_class'] as const;
export type Mode = (typeof MODES)[number];

/** What the plant needs from a mix (issue 9): unknown products caught, good parts not, no AUROC lost. */
export const TARGETS = { routed_unknown_min: 0.99, false_unknown_max: 0.01, auroc_drop_max: 0.005 };

export type SubsetEvaluationOptions = Omit<CalibrationOptions, 'images' | 'labels' | 'defects' | 'pool' | 'cache' | 'log' | 'embedded'> & {
  dataset: string;
  categories: string[];
  testStride?: number;
  /** the mixes to calibrate (product names); default every non-empty subset of `categories` */
  subsets?: string[][];
};

export interface UnknownProductResult {
  clusters_without_it: number;
  test_images: number;
  routed_unknown: number | null;
  known_good_images: number;
  false_unknown_known_good: number | null;
}

export interface ModeResult {
  error?: string;
  clusters?: number;
  products: number;
  /** train images: clusters against products (clustered mode) */
  nmi?: number | null;
  purity?: number | null;
  cluster_sizes?: { name: string; size: number; majority: string }[];
  /** test images whose nearest cluster is their product's */
  routing_accuracy?: number | null;
  /** the mix's own test images routed UNKNOWN, all and good ones only */
  unknown_share?: number | null;
  false_unknown_good?: number | null;
  image_auroc?: Record<string, number | null>;
  /** routed AUROC minus the single-product AUROC, per product */
  auroc_delta?: Record<string, number | null>;
  unknown_product?: Record<string, UnknownProductResult>;
  calibration_s?: number;
}

export interface SubsetResult {
  name: string;
  categories: string[];
  clustered: ModeResult;
  known_class: ModeResult;
}

export interface SubsetReport {
  settings: Record<string, unknown>;
  targets: typeof TARGETS;
  single_product: Record<string, { image_auroc: number | null; test_images: number }>;
  subsets: SubsetResult[];
  work: { train_images: number; test_images: number; calibrations: number; distinct_banks: number; embed_s: number; calibrate_s: number; test_s: number; total_s: number };
}

const r4 = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? null : Number(v.toFixed(4)));
const share = (k: number, n: number) => (n ? r4(k / n) : null);

interface TestImage {
  path: string;
  cat: number;
  anomalous: boolean;
}

/** One lazily created scorer per distinct bank; banks shared between mixes are the same object. */
class Scorers {
  private readonly byBank = new Map<Bank, Promise<PatchScorer>>();
  constructor(
    private readonly pool: ExtractorPool,
    private readonly opts: SubsetEvaluationOptions,
  ) {}

  get size(): number {
    return this.byBank.size;
  }

  get(bank: Bank, settings: FeatureSettings): Promise<PatchScorer> {
    let s = this.byBank.get(bank);
    if (!s) {
      s = this.pool.get(settings).then((ex) => PatchScorer.create(bank.vectors, bank.header.count, bank.header.dim, scorerOptionsFor(ex, scoringRuntime(this.opts))));
      this.byBank.set(bank, s);
    }
    return s;
  }

  async release(): Promise<void> {
    for (const s of this.byBank.values()) await (await s).release();
  }
}

/** Routing and per-product accumulators of one calibrated mix in one mode. */
interface Run {
  subset: string[];
  mode: Mode;
  result: CalibrationResult;
  router: Router;
  /** product index of each cluster's majority */
  clusterCat: number[];
  perCat: Map<number, { ranking: number[]; labels: number[] }>;
  right: number;
  unknown: number;
  good: number;
  unknownGood: number;
  n: number;
}

export async function evaluateSubsets(opts: SubsetEvaluationOptions, progress: Progress): Promise<SubsetReport> {
  const t0 = performance.now();
  const subsets = opts.subsets ?? allSubsets(opts.categories);
  // Only the products some mix holds are embedded and tested.
  const cats: Category[] = opts.categories.filter((c) => subsets.some((s) => s.includes(c))).map((c) => loadCategory(opts.dataset, c));
  const names = cats.map((c) => c.name);
  const stride = Math.max(1, opts.testStride ?? 1);
  const train = cats.flatMap((c) => c.train);
  const trainCat = cats.flatMap((c, i) => c.train.map(() => i));
  const catOfPath = new Map(train.map((p, i) => [p, trainCat[i]]));
  const rowsOf = (s: string[]) => trainCat.flatMap((ci, i) => (s.includes(names[ci]) ? [i] : []));
  const pool = new ExtractorPool(opts.backbone, opts.runtime);
  const cache = new Map<string, { bank: Bank; heldOut: number[] }>();
  const scorers = new Scorers(pool, opts);
  try {
    // Embedded once, with pose: every calibration and every leave-one-out router slices these rows.
    const trainEmb = await embedImages(train, pool, opts.features, progress.update, 'embed train', true);
    const tEmbed = performance.now();

    const runs: Run[] = [];
    const results = new Map<string, SubsetResult>();
    for (const [si, s] of subsets.entries()) {
      const name = subsetName(s);
      const entry: SubsetResult = { name, categories: s, clustered: { products: s.length }, known_class: { products: s.length } };
      results.set(name, entry);
      for (const mode of MODES) {
        progress.log(`== [${si + 1}/${subsets.length}] ${name}: ${mode === 'clustered' ? 'calibration without labels (FINCH)' : 'calibration with folder labels'}`);
        const rows = rowsOf(s);
        const images = rows.map((i) => train[i]);
        try {
          const result = await calibrate(
            {
              ...opts,
              images,
              labels: mode === 'known_class' ? rows.map((i) => names[trainCat[i]]) : undefined,
              embedded: sliceEmbedded(trainEmb, rows),
              pool,
              cache,
              log: (m) => progress.log(`  ${m}`),
            },
            progress.update,
          );
          runs.push(newRun(s, mode, result, catOfPath));
          entry[mode].calibration_s = result.bundle.header.calibration.duration_s;
        } catch (e) {
          if (!(e instanceof CalibrationError)) throw e;
          entry[mode].error = e.message;
          progress.log(`  ${name} ${mode}: ${e.message}`);
        }
      }
    }
    const tCal = performance.now();

    // Single-product banks: each product's own bank from a known_class calibration (the same members).
    const singleBank = new Map<number, { bank: Bank; settings: FeatureSettings }>();
    for (const run of runs.filter((r) => r.mode === 'known_class')) {
      for (const c of run.result.bundle.clusters) {
        const ci = run.clusterCat[c.info.id];
        if (!singleBank.has(ci)) singleBank.set(ci, { bank: c.bank, settings: clusterSettings(run.result, c.info.id, trainEmb) });
      }
    }

    const test: TestImage[] = cats.flatMap((c, ci) => c.test.filter((_, i) => i % stride === 0).map((t) => ({ path: t.path, cat: ci, anomalous: t.anomalous })));
    const single = new Map<number, { ranking: number[]; labels: number[] }>();
    let dim = trainEmb.dim;
    let testSemantic = new Float32Array(0);
    for (const [ti, t] of test.entries()) {
      const img = await readImage(t.path);
      const frame = new FrameScores(img, pool, scorers, opts.features(img));
      const semantic = await frame.semantic();
      if (!testSemantic.length) {
        dim = semantic.length;
        testSemantic = new Float32Array(test.length * dim);
      }
      testSemantic.set(semantic, ti * dim);
      const sb = singleBank.get(t.cat);
      if (sb) {
        const acc = single.get(t.cat) ?? { ranking: [], labels: [] };
        acc.ranking.push(await frame.score(sb.bank, sb.settings));
        acc.labels.push(t.anomalous ? 1 : 0);
        single.set(t.cat, acc);
      }
      for (const run of runs) if (run.subset.includes(names[t.cat])) await inspectInRun(run, t, semantic, frame, trainEmb);
      progress.update('test (route and score in every mix)', ti + 1, test.length);
    }
    const tTest = performance.now();

    for (const run of runs) fillResult(results.get(subsetName(run.subset))![run.mode], run, names, trainCat, train, single);
    progress.log('== leave one product out of each mix (routing only)');
    const routers = new Map<string, { router: Router; clusters: number }>();
    for (const entry of results.values()) {
      if (entry.categories.length < 2) continue;
      for (const mode of MODES) {
        const out: Record<string, UnknownProductResult> = {};
        for (const x of entry.categories) {
          const rest = entry.categories.filter((c) => c !== x);
          const key = `${mode}|${subsetName(rest)}`;
          if (!routers.has(key)) {
            const rows = rowsOf(rest);
            const scale = { images: rows.map((i) => train[i]), features: opts.features, pool };
            routers.set(key, await routerFor(sliceEmbedded(trainEmb, rows), opts, mode === 'known_class' ? rows.map((i) => names[trainCat[i]]) : undefined, scale));
          }
          out[x] = unknownProduct(routers.get(key)!, test, testSemantic, dim, names.indexOf(x), new Set(rest.map((r) => names.indexOf(r))));
        }
        entry[mode].unknown_product = out;
      }
    }

    const distinctBanks = new Set(runs.flatMap((r) => r.result.bundle.clusters.map((c) => c.bank))).size;
    const tEnd = performance.now();
    return {
      settings: {
        backbone: runs[0]?.result.bundle.header.backbone ?? null,
        input_size: opts.inputSize,
        coreset: opts.coreset,
        frr_target: opts.frrTarget,
        held_out: opts.heldOut ?? 'kfold',
        folds: opts.folds,
        key_mode: opts.keyMode,
        routing_limit: opts.limit,
        clustering: opts.clustering,
        test_stride: stride,
        subsets: subsets.map(subsetName),
      },
      targets: TARGETS,
      single_product: Object.fromEntries(
        names.map((_, ci) => {
          const s = single.get(ci);
          return [names[ci], { image_auroc: s ? r4(auroc(s.ranking, s.labels)) : null, test_images: s?.labels.length ?? 0 }];
        }),
      ),
      subsets: [...results.values()],
      work: {
        train_images: train.length,
        test_images: test.length,
        calibrations: runs.length,
        distinct_banks: distinctBanks,
        embed_s: Number(((tEmbed - t0) / 1000).toFixed(1)),
        calibrate_s: Number(((tCal - tEmbed) / 1000).toFixed(1)),
        test_s: Number(((tTest - tCal) / 1000).toFixed(1)),
        total_s: Number(((tEnd - t0) / 1000).toFixed(1)),
      },
    };
  } finally {
    await scorers.release();
    await pool.release();
  }
}

function newRun(subset: string[], mode: Mode, result: CalibrationResult, catOfPath: Map<string, number>): Run {
  const b = result.bundle;
  const clusterCat = b.clusters.map((c) => majority(c.info.members.map((m) => catOfPath.get(m)!)));
  const router = new Router(
    b.clusters.map((c) => ({ keys: c.keys, count: c.info.keys.count, limit: c.info.routing_limit })),
    b.header.semantic_dim,
  );
  return { subset, mode, result, router, clusterCat, perCat: new Map(), right: 0, unknown: 0, good: 0, unknownGood: 0, n: 0 };
}

function majority(xs: number[]): number {
  const counts = new Map<number, number>();
  for (const x of xs) counts.set(x, (counts.get(x) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0][0];
}

/** The feature settings a cluster's bank was built at (as calibrate extracted its members). */
function clusterSettings(result: CalibrationResult, id: number, emb: Embedded): FeatureSettings {
  const h = result.bundle.header;
  const f = result.bundle.clusters[id].info.features;
  return emb.settings.get(`${f.width}x${f.height}`) ?? { width: f.width, height: f.height, fit: f.fit, preDim: h.scoring.pre_dim, dim: h.scoring.dim };
}

/** One test frame: extracted once per input size, scored once per bank. */
class FrameScores {
  private readonly patches = new Map<string, Promise<{ patches: Float32Array; semantic: Float32Array }>>();
  private readonly scores = new Map<Bank, number>();
  constructor(
    private readonly img: RgbImage,
    private readonly pool: ExtractorPool,
    private readonly scorers: Scorers,
    private readonly routing: FeatureSettings,
  ) {}

  private features(s: FeatureSettings) {
    const key = ExtractorPool.key(s);
    let f = this.patches.get(key);
    if (!f) {
      f = this.pool.get(s).then((ex) => ex.extract(this.img));
      this.patches.set(key, f);
    }
    return f;
  }

  /** The routing embedding, at the frame's own input size as the inspector computes it. */
  async semantic(): Promise<Float32Array> {
    return (await this.features(this.routing)).semantic;
  }

  async score(bank: Bank, settings: FeatureSettings): Promise<number> {
    const known = this.scores.get(bank);
    if (known !== undefined) return known;
    const scorer = await this.scorers.get(bank, settings);
    const s = (await scorer.score((await this.features(settings)).patches)).score;
    this.scores.set(bank, s);
    return s;
  }
}

async function inspectInRun(run: Run, t: TestImage, semantic: Float32Array, frame: FrameScores, emb: Embedded): Promise<void> {
  const route = run.router.route(semantic);
  run.n++;
  if (run.clusterCat[route.nearest] === t.cat) run.right++;
  if (!t.anomalous) run.good++;
  const acc = run.perCat.get(t.cat) ?? { ranking: [], labels: [] };
  run.perCat.set(t.cat, acc);
  acc.labels.push(t.anomalous ? 1 : 0);
  if (route.cluster === null) {
    // UNKNOWN is never scored and never passes: it ranks above every scored frame.
    run.unknown++;
    if (!t.anomalous) run.unknownGood++;
    acc.ranking.push(Infinity);
    return;
  }
  const c = run.result.bundle.clusters[route.cluster];
  const raw = await frame.score(c.bank, clusterSettings(run.result, route.cluster, emb));
  // Across clusters scores compare through the normalised score (0.5 at each threshold), unclipped.
  acc.ranking.push(normaliseScore(raw, c.info.threshold, c.info.statistics.nominal.p50, false));
}

function fillResult(out: ModeResult, run: Run, names: string[], trainCat: number[], train: string[], single: Map<number, { ranking: number[]; labels: number[] }>): void {
  const b = run.result.bundle;
  out.clusters = b.clusters.length;
  if (run.mode === 'clustered') {
    const index = new Map(train.map((p, i) => [p, i]));
    const clusterOf: number[] = [];
    const truth: number[] = [];
    for (const c of b.clusters)
      for (const m of c.info.members) {
        clusterOf.push(c.info.id);
        truth.push(trainCat[index.get(m)!]);
      }
    out.nmi = r4(nmi(clusterOf, truth));
    out.purity = r4(purity(clusterOf, truth));
  }
  out.cluster_sizes = b.clusters.map((c) => ({ name: c.info.name, size: c.info.members.length, majority: names[run.clusterCat[c.info.id]] }));
  out.routing_accuracy = share(run.right, run.n);
  out.unknown_share = share(run.unknown, run.n);
  out.false_unknown_good = share(run.unknownGood, run.good);
  out.image_auroc = {};
  out.auroc_delta = {};
  for (const x of run.subset) {
    const ci = names.indexOf(x);
    const acc = run.perCat.get(ci);
    const routed = acc ? auroc(acc.ranking, acc.labels) : null;
    const s = single.get(ci);
    const base = s ? auroc(s.ranking, s.labels) : null;
    out.image_auroc[x] = r4(routed);
    out.auroc_delta[x] = routed === null || base === null ? null : r4(routed - base);
  }
}

function unknownProduct(r: { router: Router; clusters: number }, test: TestImage[], semantic: Float32Array, dim: number, held: number, rest: Set<number>): UnknownProductResult {
  let heldN = 0;
  let heldUnknown = 0;
  let goodN = 0;
  let goodUnknown = 0;
  test.forEach((t, i) => {
    const isHeld = t.cat === held;
    if (!isHeld && (t.anomalous || !rest.has(t.cat))) return;
    const unknown = r.router.route(semantic.subarray(i * dim, (i + 1) * dim)).cluster === null;
    if (isHeld) {
      heldN++;
      if (unknown) heldUnknown++;
    } else {
      goodN++;
      if (unknown) goodUnknown++;
    }
  });
  return { clusters_without_it: r.clusters, test_images: heldN, routed_unknown: share(heldUnknown, heldN), known_good_images: goodN, false_unknown_known_good: share(goodUnknown, goodN) };
}
