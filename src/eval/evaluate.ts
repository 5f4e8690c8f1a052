/**
 * `hiercore-edge evaluate`: per category, build a bank from train/good, score test/*, and report
 * image AUROC, pixel AUROC, PRO, F1-max, coreset size, fit time and per-image latency.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { FeatureExtractor, type FeatureSettings } from '../features/extractor.ts';
import { fitImage, readImage, type Geometry } from '../features/image.ts';
import { buildBank, PatchCoreModel, type CoresetSettings } from '../score/patchcore.ts';
import { auroc, f1Max, PixelMetrics } from './metrics.ts';
import { loadCategory } from './dataset.ts';
import { encodeRgb, overlayRgb } from '../score/overlay.ts';
import type { Progress } from '../util/progress.ts';
import type { ExecutionProvider } from '../features/session.ts';
import type { SearchSettings } from '../score/ann.ts';

export interface EvaluateOptions {
  dataset: string;
  categories: string[];
  backbone: string;
  /** feature settings for a category whose first training image has this size */
  features: (frame: { width: number; height: number }) => FeatureSettings;
  coreset: CoresetSettings;
  reweightNeighbours: number;
  heatmapSigma: number;
  /** how the bank is searched (the configured scoring.search; absent: exact) */
  search?: SearchSettings;
  provider: ExecutionProvider;
  threads?: number;
  saveHeatmaps?: string;
  heatmapsPerCategory?: number;
  /** evaluate on every n-th test image only (quick looks); 1 = all */
  testStride?: number;
}

export interface CategoryResult {
  image_auroc: number | null;
  pixel_auroc: number | null;
  pro: number | null;
  f1_max: number | null;
  f1_threshold: number | null;
  train_images: number;
  test_images: number;
  test_anomalous: number;
  coreset_size: number;
  source_patches: number;
  feature_extraction_s: number;
  coreset_build_s: number;
  fit_s: number;
  latency_ms: { mean: number; p50: number; p95: number; p99: number };
  input_size?: string;
}

export interface EvaluationReport {
  settings: Record<string, unknown>;
  categories: Record<string, CategoryResult>;
  mean: Record<string, number | null>;
}

export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/** Ground-truth mask fitted to the network input the way its image was (0/1 per pixel; none = all 0). */
export async function readMask(path: string | undefined, srcW: number, srcH: number, opts: Pick<FeatureSettings, 'width' | 'height' | 'fit'>): Promise<Uint8Array> {
  const n = opts.width * opts.height;
  if (!path) return new Uint8Array(n);
  const { data, info } = await sharp(path).greyscale().raw().toBuffer({ resolveWithObject: true });
  if (info.width !== srcW || info.height !== srcH) throw new Error(`mask ${path} is ${info.width}x${info.height}, its image is ${srcW}x${srcH}`);
  const fitted = await fitImage({ width: srcW, height: srcH, data: new Uint8Array(data) }, opts.width, opts.height, opts.fit, 1, 'nearest');
  const m = new Uint8Array(n);
  for (let i = 0; i < n; i++) m[i] = fitted.data[i] > 127 ? 1 : 0;
  return m;
}

/** 1 where the input holds frame content, 0 on letterbox padding (pixel metrics skip padding). */
export function contentMask(geometry: Geometry, width: number, height: number): Uint8Array {
  const valid = new Uint8Array(width * height);
  const c = geometry.content;
  for (let y = c.y; y < c.y + c.height; y++) valid.fill(1, y * width + c.x, y * width + c.x + c.width);
  return valid;
}

function round(v: number | null, digits = 4): number | null {
  return v === null || !Number.isFinite(v) ? null : Number(v.toFixed(digits));
}

export async function evaluate(opts: EvaluateOptions, progress: Progress): Promise<EvaluationReport> {
  const results: Record<string, CategoryResult> = {};
  const perCategory: Record<string, FeatureSettings> = {};
  let backboneId = '';
  for (const name of opts.categories) {
    const cat = loadCategory(opts.dataset, name);
    const features = opts.features(await readImage(cat.train[0]));
    perCategory[name] = features;
    const { width, height } = features;
    const extractor = await FeatureExtractor.load(opts.backbone, features, { provider: opts.provider, threads: opts.threads });
    backboneId = extractor.sidecar.id;
    progress.log(`[${name}] ${cat.train.length} train images, ${cat.test.length} test images${cat.hasMasks ? '' : ' (no masks: image metrics only)'}`);
    const tFit = performance.now();
    const bank = await buildBank(extractor, cat.train, opts.coreset, (s, d, t) => progress.update(`[${name}] ${s}`, d, t));
    const fitS = (performance.now() - tFit) / 1000;
    const model = await PatchCoreModel.create(extractor, bank, {
      reweightNeighbours: opts.reweightNeighbours,
      sigma: opts.heatmapSigma,
      search: opts.search,
      provider: opts.provider,
      threads: opts.threads,
    });
    const scores: number[] = [];
    const labels: number[] = [];
    const latencies: number[] = [];
    const pixels = new PixelMetrics();
    const stride = Math.max(1, opts.testStride ?? 1);
    const test = cat.test.filter((_, i) => i % stride === 0);
    const heatDir = opts.saveHeatmaps ? join(opts.saveHeatmaps, name) : undefined;
    if (heatDir) mkdirSync(heatDir, { recursive: true });
    const everyNth = Math.max(1, Math.floor(test.length / (opts.heatmapsPerCategory ?? 12)));
    const saved: { path: string; heatmap: Float32Array; i: number }[] = [];
    for (let i = 0; i < test.length; i++) {
      const t = test[i];
      const img = await readImage(t.path);
      const t0 = performance.now();
      const r = await model.inspect(img);
      latencies.push(performance.now() - t0);
      scores.push(r.score);
      labels.push(t.anomalous ? 1 : 0);
      if (cat.hasMasks) {
        const mask = await readMask(t.mask, img.width, img.height, features);
        pixels.add(r.heatmap, mask, width, height, contentMask(r.geometry, width, height));
      }
      if (heatDir && i % everyNth === 0) saved.push({ path: t.path, heatmap: r.heatmap.slice(), i });
      progress.update(`[${name}] test`, i + 1, test.length);
    }
    if (heatDir) {
      const nominal = scores.filter((_, i) => !labels[i]).sort((a, b) => a - b);
      const low = percentile(nominal, 0.5);
      const high = Math.max(...scores);
      for (const s of saved) {
        const img = await readImage(s.path);
        const { data } = await fitImage(img, width, height, features.fit);
        const png = await encodeRgb(overlayRgb(data, s.heatmap, width, height, low, high), width, height);
        const t = test[s.i];
        writeFileSync(
          join(
            heatDir,
            `${t.defect}_${t.path
              .split('/')
              .pop()!
              .replace(/\.\w+$/, '')}_score${scores[s.i].toFixed(2)}.png`,
          ),
          png,
        );
      }
    }
    const sortedLat = [...latencies].sort((a, b) => a - b);
    const f1 = f1Max(scores, labels);
    results[name] = {
      image_auroc: round(auroc(scores, labels)),
      pixel_auroc: cat.hasMasks ? round(pixels.auroc()) : null,
      pro: cat.hasMasks ? round(pixels.pro()) : null,
      f1_max: f1 ? round(f1.f1) : null,
      f1_threshold: f1 ? round(f1.threshold) : null,
      train_images: cat.train.length,
      test_images: test.length,
      test_anomalous: labels.filter(Boolean).length,
      coreset_size: bank.header.count,
      source_patches: bank.header.coreset.source_patches,
      feature_extraction_s: round(Number(bank.header.calibration?.feature_ms ?? 0) / 1000, 2)!,
      coreset_build_s: round((bank.header.coreset.build_ms ?? 0) / 1000, 2)!,
      fit_s: round(fitS, 2)!,
      latency_ms: {
        mean: round(latencies.reduce((a, b) => a + b, 0) / latencies.length, 2)!,
        p50: round(percentile(sortedLat, 0.5), 2)!,
        p95: round(percentile(sortedLat, 0.95), 2)!,
        p99: round(percentile(sortedLat, 0.99), 2)!,
      },
    };
    results[name].input_size = `${width}x${height}`;
    progress.log(`[${name}] image AUROC ${results[name].image_auroc}  pixel AUROC ${results[name].pixel_auroc}  PRO ${results[name].pro}  F1-max ${results[name].f1_max}`);
    await model.release();
    await extractor.release();
  }
  const mean: Record<string, number | null> = {};
  for (const key of ['image_auroc', 'pixel_auroc', 'pro', 'f1_max'] as const) {
    const vals = Object.values(results)
      .map((r) => r[key])
      .filter((v): v is number => v !== null);
    mean[key] = vals.length ? round(vals.reduce((a, b) => a + b, 0) / vals.length) : null;
  }
  return {
    settings: { backbone: backboneId, features: perCategory, coreset: opts.coreset, reweight_neighbours: opts.reweightNeighbours, search: opts.search ?? { mode: 'exact' }, provider: opts.provider },
    categories: results,
    mean,
  };
}
