/**
 * `npm run bench`: end-to-end speed of the product's default pipeline on one category of a
 * MVTec-layout dataset. Prints JSON: images/s, per-stage milliseconds (p50/p95), peak RSS, coreset
 * build time, and the kNN stage's GFLOP/s next to a plain onnxruntime MatMul of the same shape.
 *
 *   npm run bench -- [--dataset DIR] [--category bottle] [--backbone DIR] [--frames 200] [engine flags]
 *                    [--search exact|ann] [--ann-dim 64] [--ann-candidates 16] [--ann-coarse int8|float32]
 *
 * With --search ann it also scores every test image with exact search on the same bank and reports
 * the ANN's recall of the exact nearest neighbour (per patch), how far image scores moved, and image
 * AUROC with both searches.
 *
 * Without --backbone it imports the Coral PTQ MobileNetV2 from $HCE_SHARED/models (default ../shared).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import * as ort from 'onnxruntime-node';
import { coresetSettings, featureSettings, loadEngineConfig, PROJECT_ROOT, searchSettings } from '../config.ts';
import { importTflite } from '../features/import-tflite.ts';
import { FeatureExtractor } from '../features/extractor.ts';
import { decodeImage } from '../features/image.ts';
import { loadCategory } from '../eval/dataset.ts';
import { buildBank, PatchCoreModel } from '../score/patchcore.ts';
import { buildMatMulReference } from '../score/knn-graph.ts';
import { PatchScorer } from '../score/scorer.ts';
import { scorerOptionsFor } from '../score/patchcore.ts';
import { auroc } from '../eval/metrics.ts';
import { createSession } from '../features/session.ts';
import { percentile } from '../eval/evaluate.ts';
import { Progress } from '../util/progress.ts';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const shared = process.env.HCE_SHARED ?? resolve(PROJECT_ROOT, '..', 'shared');
const dataset = arg('dataset') ?? join(shared, 'datasets');
const category = arg('category') ?? 'bottle';
const frames = Number(arg('frames') ?? 200);
if (!existsSync(join(dataset, category))) {
  console.error(`bench: no category "${category}" under ${dataset} (pass --dataset or set HCE_SHARED)`);
  process.exit(2);
}
let backbone = arg('backbone');
if (!backbone) {
  const tflite = join(shared, 'models', 'tf2_mobilenet_v2_1.0_224_ptq.tflite');
  backbone = join(tmpdir(), 'hce-bench-backbone');
  importTflite(tflite, backbone);
}
const overrides: Record<string, Record<string, unknown>> = { features: {}, coreset: {} };
if (arg('input-size')) overrides.features.input_size = arg('input-size');
if (arg('dim')) overrides.features.dim = Number(arg('dim'));
if (arg('coreset-ratio')) overrides.coreset.ratio = Number(arg('coreset-ratio'));
if (arg('threads')) overrides.runtime = { threads: Number(arg('threads')) };
const search: Record<string, unknown> = {};
if (arg('search')) search.mode = arg('search');
if (arg('ann-dim')) search.projection_dim = Number(arg('ann-dim'));
if (arg('ann-candidates')) search.candidates = Number(arg('ann-candidates'));
if (arg('ann-coarse')) search.coarse = arg('ann-coarse');
if (Object.keys(search).length > 0) overrides.scoring = { search };
const c = loadEngineConfig(arg('config'), overrides);

const cat = loadCategory(dataset, category);
const settings = featureSettings(c, await decodeImage(readFileSync(cat.train[0])));
const fx = await FeatureExtractor.load(backbone, settings, { threads: c.runtime.threads });
const t0 = performance.now();
const bank = await buildBank(fx, cat.train, coresetSettings(c), new Progress().update);
const bankMs = performance.now() - t0;
const scoring = { reweightNeighbours: c.scoring.reweight_neighbours, sigma: c.scoring.heatmap_sigma, threads: c.runtime.threads, search: searchSettings(c) };
const tScorer = performance.now();
const model = await PatchCoreModel.create(fx, bank, scoring);
const scorerMs = performance.now() - tScorer;

// Frames: the category's test images, read into memory once so disk speed is not measured.
const files = cat.test.map((t) => readFileSync(t.path));
const stages: Record<string, number[]> = { decode_wait: [], preprocess: [], backbone_head: [], knn: [], reweight: [], heatmap: [], total: [] };
for (let i = 0; i < 5; i++) await model.inspect(await decodeImage(files[i % files.length])); // warm-up
// Decoding the next frame runs while this one is inspected, as the daemon's capture runs beside its
// inference worker; "decode_wait" is how long inspection waited for a decoded frame.
const tStart = performance.now();
let next = decodeImage(files[0]);
for (let i = 0; i < frames; i++) {
  const a = performance.now();
  const img = await next;
  const b = performance.now();
  next = decodeImage(files[(i + 1) % files.length]);
  const r = await model.inspect(img);
  const e = performance.now();
  stages.decode_wait.push(b - a);
  stages.preprocess.push(r.timings.preprocess);
  stages.backbone_head.push(r.timings.backbone);
  stages.knn.push(r.timings.knn);
  stages.reweight.push(r.timings.reweight);
  stages.heatmap.push(r.timings.heatmap);
  stages.total.push(e - a);
}
const wall = performance.now() - tStart;
await next;

function sqNorm(x: Float32Array, o: number, d: number): number {
  let s = 0;
  for (let k = 0; k < d; k++) s += x[o + k] * x[o + k];
  return s;
}

/**
 * The ANN against exact search on the same bank over every test image: recall@1 = share of patches
 * whose ANN distance is the exact nearest distance (to float32 rounding); ANN can only over-estimate a distance.
 */
async function fidelity() {
  const exact = await PatchScorer.create(bank.vectors, M, D, scorerOptionsFor(fx, { ...scoring, search: { mode: 'exact' } }));
  let hits = 0;
  let total = 0;
  let maxRel = 0;
  const exactScores: number[] = [];
  const annScores: number[] = [];
  for (const t of cat.test) {
    const f = await fx.extract(await decodeImage(readFileSync(t.path)));
    const e = await exact.score(f.patches);
    const a = await model.scorer.score(f.patches);
    for (let p = 0; p < e.patchScores.length; p++) {
      const de = e.patchScores[p];
      const da = a.patchScores[p];
      // Both searches expand |a|^2 - 2ab + |b|^2 in float32: squared distances agree to ~1e-6 |a|^2, so
      // near-duplicate patches (d ~ 0) would count as misses under a relative tolerance.
      if (da * da - de * de <= 1e-5 * sqNorm(f.patches, p * D, D)) hits++;
      maxRel = Math.max(maxRel, (da - de) / Math.max(de, 1e-6));
    }
    total += e.patchScores.length;
    exactScores.push(e.score);
    annScores.push(a.score);
  }
  await exact.release();
  const labels = cat.test.map((t) => t.anomalous);
  const scoreRel = Math.max(...exactScores.map((e, i) => (annScores[i] - e) / Math.max(e, 1e-6)));
  return {
    test_images: cat.test.length,
    recall_at_1: Number((hits / total).toFixed(5)),
    max_patch_overestimate: Number(maxRel.toFixed(5)),
    max_image_score_overestimate: Number(scoreRel.toFixed(5)),
    image_auroc_exact: auroc(exactScores, labels),
    image_auroc_ann: auroc(annScores, labels),
  };
}

// kNN GFLOP/s against a bare MatMul of the same [P, D+1] x [D+1, M] shape, timed the same way.
const P = fx.patchCount;
const D = bank.header.dim;
const M = bank.header.count;
const exactFlops = 2 * P * (D + 1) * M;
const q = scoring.search;
// ANN: projection, coarse MatMul, exact distances to the candidates (TopK and Gather are not FLOPs).
const flops = q.mode === 'ann' ? 2 * P * (D * q.projection_dim + (q.projection_dim + 1) * M + Math.min(q.candidates, M) * D) : exactFlops;
const ref = await createSession(buildMatMulReference(P, D, M), 'cpu', c.runtime.threads);
const a = new ort.Tensor('float32', new Float32Array(P * (D + 1)).fill(0.5), [P, D + 1]);
for (let i = 0; i < 5; i++) await ref.run({ a });
const refTimes: number[] = [];
for (let i = 0; i < Math.min(frames, 100); i++) {
  const s = performance.now();
  await ref.run({ a });
  refTimes.push(performance.now() - s);
}
const med = (v: number[]) =>
  percentile(
    [...v].sort((x, y) => x - y),
    0.5,
  );
const knnGflops = flops / (med(stages.knn) * 1e6);
// the reference is the exact search's MatMul, so its rate is of the exact FLOPs
const refGflops = exactFlops / (med(refTimes) * 1e6);

const summary = (v: number[]) => {
  const s = [...v].sort((x, y) => x - y);
  return { p50: Number(percentile(s, 0.5).toFixed(2)), p95: Number(percentile(s, 0.95).toFixed(2)), mean: Number((v.reduce((x, y) => x + y, 0) / v.length).toFixed(2)) };
};
const out = {
  category,
  backbone: fx.sidecar.id,
  settings: { ...settings, coreset_ratio: c.coreset.ratio, reweight_neighbours: c.scoring.reweight_neighbours, search: scoring.search, threads: c.runtime.threads || 'all' },
  frames,
  images_per_s: Number(((frames * 1000) / wall).toFixed(1)),
  latency_ms: summary(stages.total),
  stages_ms: Object.fromEntries(
    Object.entries(stages)
      .filter(([k]) => k !== 'total')
      .map(([k, v]) => [k, summary(v)]),
  ),
  peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
  bank: {
    patches: bank.header.coreset.source_patches,
    coreset: M,
    dim: D,
    build_s: Number((bankMs / 1000).toFixed(2)),
    coreset_selection_s: Number(((bank.header.coreset.build_ms ?? 0) / 1000).toFixed(2)),
    scorer_setup_s: Number((scorerMs / 1000).toFixed(2)),
  },
  search_fidelity: scoring.search.mode === 'ann' ? await fidelity() : undefined,
  knn: {
    shape: `[${P}, ${D + 1}] x [${D + 1}, ${M}]`,
    gflop_per_image: Number((flops / 1e9).toFixed(3)),
    exact_gflop_per_image: Number((exactFlops / 1e9).toFixed(3)),
    gflops: Number(knnGflops.toFixed(1)),
    matmul_reference_gflops: Number(refGflops.toFixed(1)),
    fraction_of_matmul: Number((knnGflops / refGflops).toFixed(3)),
  },
};
console.log(JSON.stringify(out, null, 2));
await model.release();
await fx.release();
await ref.release();
