/**
 * `hiercore-edge evaluate --multiclass --scenarios`: the HierCore scenarios on a mixed stream of every category.
 *
 *   single_class        labels at calibration and inspection: one bank per category, category given
 *   known_class_routed  labels at calibration, none at inspection: per-category banks, semantic routing
 *   clustered_given     no labels at calibration (FINCH), category known at inspection (its cluster)
 *   hiercore            no labels anywhere: FINCH clusters and routing (what the daemon runs)
 *   one_bank            plain multi-class PatchCore: one bank and one threshold for everything
 *
 * Scores are compared across clusters through the normalised score (0.5 at each cluster's threshold,
 * unclipped for ranking); a frame routed `unknown` counts as rejected (score +inf).
 */
import { calibrate, embedImages, scoringRuntime, type CalibrationOptions, type CalibrationResult } from '../calibrate/calibrate.ts';
import { Inspector, type InspectionResult } from '../inspect/inspector.ts';
import { ExtractorPool } from '../features/extractor-pool.ts';
import { readImage } from '../features/image.ts';
import { routerFor, sliceEmbedded } from './subsets.ts';
import { frrThreshold, normaliseScore } from '../calibrate/threshold.ts';
import { auroc, nmi, purity, PixelMetrics } from './metrics.ts';
import { contentMask, readMask } from './evaluate.ts';
import { loadCategory, type Category } from './dataset.ts';
import type { Progress } from '../util/progress.ts';
import type { Bank } from '../score/bank-file.ts';

export const SCENARIOS = ['single_class', 'known_class_routed', 'clustered_given', 'hiercore', 'one_bank'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export type MulticlassOptions = Omit<CalibrationOptions, 'images' | 'labels' | 'defects' | 'pool' | 'cache' | 'log'> & {
  dataset: string;
  categories: string[];
  testStride?: number;
};

interface Decision {
  /** NG or UNKNOWN = rejected */
  perCluster: boolean;
  /** the same raw score against one threshold shared by all clusters */
  global: boolean;
}

interface CategoryScenario {
  ranking: number[];
  labels: number[];
  pixels: PixelMetrics;
  decisions: Decision[];
  routedRight: number;
  unknown: number;
  unknownNominal: number;
}

const r4 = (v: number | null) => (v === null || !Number.isFinite(v) ? null : Number(v.toFixed(4)));

function f1(d: { rejected: boolean; anomalous: boolean }[]) {
  const tp = d.filter((x) => x.rejected && x.anomalous).length;
  const fp = d.filter((x) => x.rejected && !x.anomalous).length;
  const fn = d.filter((x) => !x.rejected && x.anomalous).length;
  const good = d.filter((x) => !x.anomalous).length;
  const bad = d.length - good;
  return { frr: good ? fp / good : null, escape_rate: bad ? fn / bad : null, f1: tp + fp + fn ? (2 * tp) / (2 * tp + fp + fn) : null };
}

export async function evaluateMulticlass(opts: MulticlassOptions, progress: Progress) {
  const cats: Category[] = opts.categories.map((c) => loadCategory(opts.dataset, c));
  const train = cats.flatMap((c) => c.train);
  const trainCat = cats.flatMap((c, i) => c.train.map(() => i));
  const stride = Math.max(1, opts.testStride ?? 1);
  const pool = new ExtractorPool(opts.backbone, opts.runtime);
  const cache = new Map<string, { bank: Bank; heldOut: number[] }>();
  const log = (m: string) => progress.log(m);
  // Embedded once (with pose): all three calibrations and the unknown-product check use the same.
  const trainEmb = await embedImages(train, pool, opts.features, progress.update, 'embed train', true);
  const base = { ...opts, pool, cache, log, embedded: trainEmb };

  progress.log(`== calibration with folder labels (known_class): ${train.length} images`);
  const known = await calibrate({ ...base, images: train, labels: trainCat.map((i) => cats[i].name) }, progress.update);
  progress.log('== calibration without labels (FINCH)');
  const clustered = await calibrate({ ...base, images: train }, progress.update);
  progress.log('== one bank for everything');
  const single = await calibrate({ ...base, images: train, labels: train.map(() => 'all') }, progress.update);

  const clusterOf = new Map(clustered.bundle.clusters.flatMap((c) => c.info.members.map((m) => [m, c.info.id] as const)));
  const trainClusters = train.map((p) => clusterOf.get(p)!);
  // Majority cluster of each category, for "class known at inspection" with unlabelled calibration.
  const majorityCluster = cats.map((_, ci) => {
    const counts = new Map<number, number>();
    trainClusters.forEach((c, i) => trainCat[i] === ci && counts.set(c, (counts.get(c) ?? 0) + 1));
    return [...counts.entries()].sort((a, b) => b[1] - a[1])[0][0];
  });
  const clusterMajorityCat = clustered.bundle.clusters.map((c) => {
    const counts = new Map<number, number>();
    c.info.members.forEach((m) => {
      const ci = trainCat[train.indexOf(m)];
      counts.set(ci, (counts.get(ci) ?? 0) + 1);
    });
    return [...counts.entries()].sort((a, b) => b[1] - a[1])[0][0];
  });

  const runtime = scoringRuntime(opts);
  const inspectors = {
    known: await Inspector.load(known.bundle, opts.backbone, runtime),
    clustered: await Inspector.load(clustered.bundle, opts.backbone, runtime),
    single: await Inspector.load(single.bundle, opts.backbone, runtime),
  };
  const globalThreshold = (r: CalibrationResult) => frrThreshold(r.heldOut.flat(), opts.frrTarget);
  const global = { known: globalThreshold(known), clustered: globalThreshold(clustered), single: globalThreshold(single) };

  const results: Record<string, Record<Scenario, CategoryScenario>> = {};
  const fresh = (): CategoryScenario => ({ ranking: [], labels: [], pixels: new PixelMetrics(), decisions: [], routedRight: 0, unknown: 0, unknownNominal: 0 });
  for (const [ci, cat] of cats.entries()) {
    results[cat.name] = Object.fromEntries(SCENARIOS.map((s) => [s, fresh()])) as Record<Scenario, CategoryScenario>;
    const test = cat.test.filter((_, i) => i % stride === 0);
    for (const [ti, t] of test.entries()) {
      const img = await readImage(t.path);
      const runs: Record<Scenario, { r: InspectionResult; b: CalibrationResult; g: number; rightCluster: boolean }> = {
        single_class: { r: await inspectors.known.inspect(img, ci), b: known, g: global.known, rightCluster: true },
        known_class_routed: { r: await inspectors.known.inspect(img), b: known, g: global.known, rightCluster: false },
        clustered_given: { r: await inspectors.clustered.inspect(img, majorityCluster[ci]), b: clustered, g: global.clustered, rightCluster: true },
        hiercore: { r: await inspectors.clustered.inspect(img), b: clustered, g: global.clustered, rightCluster: false },
        one_bank: { r: await inspectors.single.inspect(img, 0), b: single, g: global.single, rightCluster: true },
      };
      // Routing accuracy counts the nearest cluster; frames beyond its limit are counted as unknown apart.
      runs.known_class_routed.rightCluster = runs.known_class_routed.r.route.nearest_id === ci;
      runs.hiercore.rightCluster = clusterMajorityCat[runs.hiercore.r.route.nearest_id] === ci;
      for (const s of SCENARIOS) {
        const { r, b, g, rightCluster } = runs[s];
        const acc = results[cat.name][s];
        acc.labels.push(t.anomalous ? 1 : 0);
        if (rightCluster) acc.routedRight++;
        if (r.verdict === 'UNKNOWN') {
          acc.unknown++;
          if (!t.anomalous) acc.unknownNominal++;
          acc.ranking.push(Infinity);
          acc.decisions.push({ perCluster: true, global: true });
        } else {
          const info = b.bundle.clusters[r.cluster_id!].info;
          acc.ranking.push(normaliseScore(r.score!, info.threshold, info.statistics.nominal.p50, false));
          acc.decisions.push({ perCluster: r.verdict === 'NG', global: r.score! > g });
        }
        if (cat.hasMasks) {
          // A frame routed unknown is rejected whole (image level); its anomaly map for the pixel
          // metrics is the one its nearest cluster gives.
          const scored = r.heatmap ? r : await (s === 'hiercore' ? inspectors.clustered : inspectors.known).inspect(img, r.route.nearest_id);
          const { width, height } = scored.input;
          const mask = await readMask(t.mask, img.width, img.height, { width, height, fit: opts.features(img).fit });
          const info = b.bundle.clusters[scored.cluster_id!].info;
          const heat = Float32Array.from(scored.heatmap!, (v) => normaliseScore(v, info.threshold, info.statistics.nominal.p50, false));
          acc.pixels.add(heat, mask, width, height, contentMask(scored.geometry, width, height));
        }
      }
      progress.update(`[${cat.name}] test`, ti + 1, test.length);
    }
  }

  // Unknown product: calibrate routing without one category, then route everything of it.
  progress.log('== unknown-product check (leave one category out of calibration)');
  const allTest = cats.flatMap((c, ci) => c.test.filter((_, i) => i % stride === 0).map((t) => ({ ...t, ci })));
  const testEmb = await embedImages(
    allTest.map((t) => t.path),
    pool,
    opts.features,
    progress.update,
    'embed test',
  );
  const d = trainEmb.dim;
  const unknownProduct: Record<string, unknown> = {};
  for (const [hi, held] of cats.entries()) {
    const rows = train.map((_, i) => i).filter((i) => trainCat[i] !== hi);
    const { router, clusters } = await routerFor(sliceEmbedded(trainEmb, rows), opts, undefined, { images: rows.map((i) => train[i]), features: opts.features, pool });
    const cl = { count: clusters };
    const isUnknown = (v: Float32Array) => router.route(v).cluster === null;
    let heldUnknown = 0;
    let heldTotal = 0;
    train.forEach((_, i) => {
      if (trainCat[i] !== hi) return;
      heldTotal++;
      if (isUnknown(trainEmb.semantic.subarray(i * d, (i + 1) * d))) heldUnknown++;
    });
    const knownNominal = { n: 0, unknown: 0 };
    const knownAll = { n: 0, unknown: 0 };
    allTest.forEach((t, i) => {
      const u = isUnknown(testEmb.semantic.subarray(i * d, (i + 1) * d));
      if (t.ci === hi) {
        heldTotal++;
        if (u) heldUnknown++;
        return;
      }
      knownAll.n++;
      if (u) knownAll.unknown++;
      if (!t.anomalous) {
        knownNominal.n++;
        if (u) knownNominal.unknown++;
      }
    });
    unknownProduct[held.name] = {
      clusters_without_it: cl.count,
      held_out_images: heldTotal,
      routed_unknown: r4(heldUnknown / heldTotal),
      false_unknown_known_good: r4(knownNominal.unknown / knownNominal.n),
      false_unknown_known_all: r4(knownAll.unknown / knownAll.n),
    };
    progress.log(`[unknown ${held.name}] ${heldUnknown}/${heldTotal} routed unknown; known good parts routed unknown ${knownNominal.unknown}/${knownNominal.n}`);
  }

  for (const i of Object.values(inspectors)) await i.release();
  await pool.release();

  const categories: Record<string, Record<string, unknown>> = {};
  for (const [name, per] of Object.entries(results)) {
    categories[name] = Object.fromEntries(
      SCENARIOS.map((s) => {
        const a = per[s];
        const rows = a.decisions.map((dd, i) => ({ anomalous: a.labels[i] === 1, ...dd }));
        const pc = f1(rows.map((r) => ({ anomalous: r.anomalous, rejected: r.perCluster })));
        const gl = f1(rows.map((r) => ({ anomalous: r.anomalous, rejected: r.global })));
        const hasMasks = cats.find((c) => c.name === name)!.hasMasks;
        return [
          s,
          {
            image_auroc: r4(auroc(a.ranking, a.labels)),
            pixel_auroc: hasMasks ? r4(a.pixels.auroc()) : null,
            pro: hasMasks ? r4(a.pixels.pro()) : null,
            per_cluster_threshold: { frr: r4(pc.frr), escape_rate: r4(pc.escape_rate), f1: r4(pc.f1) },
            global_threshold: { frr: r4(gl.frr), escape_rate: r4(gl.escape_rate), f1: r4(gl.f1) },
            routing_accuracy: r4(a.routedRight / a.labels.length),
            unknown_share: r4(a.unknown / a.labels.length),
            unknown_share_good: r4(a.unknownNominal / Math.max(1, a.labels.filter((l) => !l).length)),
          },
        ];
      }),
    );
  }
  const mean = Object.fromEntries(
    SCENARIOS.map((s) => {
      const vals = (k: (v: any) => number | null) => {
        const xs = Object.values(categories)
          .map((c) => k(c[s]))
          .filter((v): v is number => v !== null);
        return xs.length ? r4(xs.reduce((p, q) => p + q, 0) / xs.length) : null;
      };
      return [
        s,
        {
          image_auroc: vals((v) => v.image_auroc),
          pixel_auroc: vals((v) => v.pixel_auroc),
          pro: vals((v) => v.pro),
          f1_per_cluster: vals((v) => v.per_cluster_threshold.f1),
          f1_global: vals((v) => v.global_threshold.f1),
        },
      ];
    }),
  );
  return {
    settings: {
      backbone: known.bundle.header.backbone,
      input_size: opts.inputSize,
      coreset: opts.coreset,
      frr_target: opts.frrTarget,
      folds: opts.folds,
      key_mode: opts.keyMode,
      routing_limit: opts.limit,
      clustering: opts.clustering,
      test_stride: stride,
    },
    clustering: {
      clusters: clustered.bundle.clusters.length,
      categories: cats.length,
      nmi: r4(nmi(trainClusters, trainCat)),
      purity: r4(purity(trainClusters, trainCat)),
      reason: clustered.bundle.header.calibration.clustering?.reason,
      hierarchy: clustered.bundle.header.calibration.clustering?.hierarchy,
      cluster_sizes: clustered.bundle.clusters.map((c) => ({ name: c.info.name, size: c.info.members.length, majority_category: cats[clusterMajorityCat[c.info.id]].name })),
    },
    thresholds: {
      global: { known_class: r4(global.known), clustered: r4(global.clustered), one_bank: r4(global.single) },
      per_cluster: Object.fromEntries(
        clustered.bundle.clusters.map((c) => [c.info.name, { threshold: r4(c.info.threshold), routing_limit: r4(c.info.routing_limit), nominal: c.info.statistics.nominal }]),
      ),
    },
    calibration_s: { known_class: known.bundle.header.calibration.duration_s, clustered: clustered.bundle.header.calibration.duration_s, one_bank: single.bundle.header.calibration.duration_s },
    categories,
    mean,
    unknown_product: unknownProduct,
  };
}
