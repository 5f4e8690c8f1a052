/**
 * `npm run bench`: end-to-end speed of the product's default pipeline on one category of a
 * MVTec-layout dataset. Prints JSON: images/s, per-stage milliseconds (p50/p95), peak RSS, coreset
 * build time, and the kNN stage's GFLOP/s next to a plain onnxruntime MatMul of the same shape.
 *
 *   npm run bench -- [--dataset DIR] [--category bottle] [--backbone DIR] [--frames 200] [engine flags]
 *
 * Without --backbone it imports the Coral PTQ MobileNetV2 from $HCE_SHARED/models (default ../shared).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import * as ort from 'onnxruntime-node';
import { coresetSettings, featureSettings, loadEngineConfig, PROJECT_ROOT } from '../config.ts';
import { importTflite } from '../features/import-tflite.ts';
import { FeatureExtractor } from '../features/extractor.ts';
import { decodeImage } from '../features/image.ts';
import { loadCategory } from '../eval/dataset.ts';
import { buildBank, PatchCoreModel } from '../score/patchcore.ts';
import { buildMatMulReference } from '../score/knn-graph.ts';
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
const c = loadEngineConfig(arg('config'), overrides);

const cat = loadCategory(dataset, category);
const settings = featureSettings(c, await decodeImage(readFileSync(cat.train[0])));
const fx = await FeatureExtractor.load(backbone, settings, { threads: c.runtime.threads });
const t0 = performance.now();
const bank = await buildBank(fx, cat.train, coresetSettings(c), new Progress().update);
const bankMs = performance.now() - t0;
const model = await PatchCoreModel.create(fx, bank, { reweightNeighbours: c.scoring.reweight_neighbours, sigma: c.scoring.heatmap_sigma, threads: c.runtime.threads });

// Frames: the category's test images, read into memory once so disk speed is not measured.
const files = cat.test.map((t) => readFileSync(t.path));
const stages: Record<string, number[]> = { decode: [], preprocess: [], backbone_head: [], knn: [], reweight: [], heatmap: [], total: [] };
for (let i = 0; i < 5; i++) await model.inspect(await decodeImage(files[i % files.length])); // warm-up
const tStart = performance.now();
for (let i = 0; i < frames; i++) {
  const a = performance.now();
  const img = await decodeImage(files[i % files.length]);
  const b = performance.now();
  const r = await model.inspect(img);
  const e = performance.now();
  stages.decode.push(b - a);
  stages.preprocess.push(r.timings.preprocess);
  stages.backbone_head.push(r.timings.backbone);
  stages.knn.push(r.timings.knn);
  stages.reweight.push(r.timings.reweight);
  stages.heatmap.push(r.timings.heatmap);
  stages.total.push(e - a);
}
const wall = performance.now() - tStart;

// kNN GFLOP/s against a bare MatMul of the same [P, D+1] x [D+1, M] shape, timed the same way.
const P = fx.patchCount;
const D = bank.header.dim;
const M = bank.header.count;
const flops = 2 * P * (D + 1) * M;
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
const refGflops = flops / (med(refTimes) * 1e6);

const summary = (v: number[]) => {
  const s = [...v].sort((x, y) => x - y);
  return { p50: Number(percentile(s, 0.5).toFixed(2)), p95: Number(percentile(s, 0.95).toFixed(2)), mean: Number((v.reduce((x, y) => x + y, 0) / v.length).toFixed(2)) };
};
const out = {
  category,
  backbone: fx.sidecar.id,
  settings: { ...settings, coreset_ratio: c.coreset.ratio, reweight_neighbours: c.scoring.reweight_neighbours, threads: c.runtime.threads || 'all' },
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
  },
  knn: {
    shape: `[${P}, ${D + 1}] x [${D + 1}, ${M}]`,
    gflop_per_image: Number((flops / 1e9).toFixed(3)),
    gflops: Number(knnGflops.toFixed(1)),
    matmul_reference_gflops: Number(refGflops.toFixed(1)),
    fraction_of_matmul: Number((knnGflops / refGflops).toFixed(3)),
  },
};
console.log(JSON.stringify(out, null, 2));
await model.release();
await fx.release();
await ref.release();
