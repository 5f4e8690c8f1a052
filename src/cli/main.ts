/** Command-line entry point: hiercore-edge <command>. */
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { importTflite } from '../features/import-tflite.ts';
import { coresetSettings, featureSettings, loadEngineConfig, parseInputSize, type EngineConfig } from '../config.ts';
import { evaluate } from '../eval/evaluate.ts';
import { listCategories } from '../eval/dataset.ts';
import { Progress } from '../util/progress.ts';
import { FeatureExtractor } from '../features/extractor.ts';
import { readImage } from '../features/image.ts';
import { buildBank } from '../score/patchcore.ts';
import { readBankFile, writeBankFile } from '../score/bank-file.ts';

function parseSize(v: string): string {
  if (v !== 'auto' && !parseInputSize(v)) throw new InvalidArgumentError('expected "auto" or WIDTHxHEIGHT (32..4096 each), e.g. 224x224');
  return v;
}
function parseIntArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`"${v}" is not an integer`);
  return n;
}
function parseNum(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`"${v}" is not a number`);
  return n;
}

interface EngineFlags {
  config?: string;
  backbone?: string;
  inputSize?: string;
  fit?: string;
  dim?: number;
  preDim?: number;
  coresetRatio?: number;
  projectionDim?: number;
  seed?: number;
  float16?: boolean;
  reweight?: number;
  provider?: string;
  threads?: number;
}

function engineOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'site config JSON merged over config/default.json')
    .option('--backbone <dir>', 'backbone directory (backbone.json + backbone.onnx); default: config "backbone" or $HCE_BACKBONE')
    .option('--input-size <WxH|auto>', 'network input size; auto = the frames\' aspect ratio at 224x224 pixels', parseSize)
    .option('--fit <mode>', 'letterbox | stretch | crop')
    .option('--dim <n>', 'patch feature dimension', parseIntArg)
    .option('--pre-dim <n>', 'per-layer pooled dimension before concatenation', parseIntArg)
    .option('--coreset-ratio <r>', 'fraction of patches kept in the bank', parseNum)
    .option('--projection-dim <n>', 'random projection size for coreset selection (0 = none)', parseIntArg)
    .option('--seed <n>', 'coreset seed', parseIntArg)
    .option('--float16', 'store the bank payload as float16')
    .option('--reweight <b>', 'Eq. 7 re-weighting neighbours (0 = off)', parseIntArg)
    .option('--provider <ep>', 'cpu | cuda | tensorrt')
    .option('--threads <n>', 'onnxruntime intra-op threads (0 = all cores)', parseIntArg);
}

function engineConfig(f: EngineFlags): EngineConfig {
  const o: Record<string, Record<string, unknown> | string> = { features: {}, coreset: {}, scoring: {}, runtime: {} };
  const feat = o.features as Record<string, unknown>;
  const cs = o.coreset as Record<string, unknown>;
  if (f.backbone) o.backbone = f.backbone;
  if (f.inputSize) feat.input_size = f.inputSize;
  if (f.fit) feat.fit = f.fit;
  if (f.dim !== undefined) feat.dim = f.dim;
  if (f.preDim !== undefined) feat.pre_dim = f.preDim;
  if (f.coresetRatio !== undefined) cs.ratio = f.coresetRatio;
  if (f.projectionDim !== undefined) cs.projection_dim = f.projectionDim;
  if (f.seed !== undefined) cs.seed = f.seed;
  if (f.float16) cs.dtype = 'float16';
  if (f.reweight !== undefined) (o.scoring as Record<string, unknown>).reweight_neighbours = f.reweight;
  if (f.provider) (o.runtime as Record<string, unknown>).provider = f.provider;
  if (f.threads !== undefined) (o.runtime as Record<string, unknown>).threads = f.threads;
  const c = loadEngineConfig(f.config, o);
  if (!c.backbone) throw new Error('no backbone: pass --backbone <dir>, set "backbone" in the config, or set HCE_BACKBONE (make one with "hiercore-edge model import")');
  return c;
}

export function buildProgram(): Command {
  const program = new Command('hiercore-edge').description('Edge visual inspection: PatchCore anomaly scoring with semantic routing').showHelpAfterError();

  const model = program.command('model').description('backbone models');
  model
    .command('import <file>')
    .description('convert a TFLite CNN to backbone.onnx + backbone.json')
    .requiredOption('--out <dir>', 'output directory')
    .option('--id <id>', 'backbone id (default: file name)')
    .action((file: string, o: { out: string; id?: string }) => {
      const r = importTflite(resolve(file), resolve(o.out), o.id);
      const ops = Object.entries(r.opCounts).map(([k, v]) => `${k} x${v}`).join(', ');
      console.log(`imported ${file} (${ops})`);
      for (const out of r.sidecar.outputs) console.log(`  output ${out.name}: ${out.role}, ${out.channels} channels${out.stride ? `, stride ${out.stride}` : ''}`);
      console.log(`wrote ${r.onnxPath} and ${r.sidecarPath}`);
    });

  engineOptions(
    program
      .command('evaluate')
      .description('PatchCore quality on MVTec-AD-layout data: image/pixel AUROC, PRO, F1-max, latency')
      .requiredOption('--dataset <root>', 'dataset root (<cat>/train/good, <cat>/test/..., <cat>/ground_truth/...)')
      .option('--categories <list>', 'comma-separated categories (default: all under the root)')
      .option('--json <file>', 'write the report here')
      .option('--save-heatmaps <dir>', 'write heatmap overlays for a sample of test images')
      .option('--heatmaps-per-category <n>', 'how many overlays per category', parseIntArg, 12)
      .option('--test-stride <n>', 'score every n-th test image only (quick looks)', parseIntArg, 1),
  ).action(async (o: EngineFlags & { dataset: string; categories?: string; json?: string; saveHeatmaps?: string; heatmapsPerCategory: number; testStride: number }) => {
    const c = engineConfig(o);
    const categories = o.categories ? o.categories.split(',').map((s) => s.trim()).filter(Boolean) : listCategories(o.dataset);
    const report = await evaluate(
      {
        dataset: resolve(o.dataset),
        categories,
        backbone: resolve(c.backbone),
        features: (frame) => featureSettings(c, frame),
        coreset: coresetSettings(c),
        reweightNeighbours: c.scoring.reweight_neighbours,
        heatmapSigma: c.scoring.heatmap_sigma,
        provider: c.runtime.provider,
        threads: c.runtime.threads,
        saveHeatmaps: o.saveHeatmaps ? resolve(o.saveHeatmaps) : undefined,
        heatmapsPerCategory: o.heatmapsPerCategory,
        testStride: o.testStride,
      },
      new Progress(),
    );
    const text = JSON.stringify(report, null, 2);
    if (o.json) {
      mkdirSync(dirname(resolve(o.json)), { recursive: true });
      writeFileSync(o.json, text + '\n');
      console.error(`wrote ${o.json}`);
    }
    console.log(text);
  });

  const bank = program.command('bank').description('single-product memory banks');
  engineOptions(
    bank
      .command('build')
      .description('build a PatchCore memory bank from a folder of good images')
      .requiredOption('--images <dir>', 'folder of nominal (good) images')
      .requiredOption('--out <file>', 'bank file to write (atomically)'),
  ).action(async (o: EngineFlags & { images: string; out: string }) => {
    const c = engineConfig(o);
    const { listImages } = await import('../eval/dataset.ts');
    const images = listImages(resolve(o.images));
    if (images.length === 0) throw new Error(`no PNG/JPEG/BMP images in ${o.images}`);
    const first = await readImage(images[0]);
    const fx = await FeatureExtractor.load(resolve(c.backbone), featureSettings(c, first), { provider: c.runtime.provider, threads: c.runtime.threads });
    const b = await buildBank(fx, images, coresetSettings(c), new Progress().update);
    writeBankFile(resolve(o.out), b);
    console.log(`wrote ${o.out}: ${b.header.count} x ${b.header.dim} from ${images.length} images (${b.header.coreset.source_patches} patches)`);
    await fx.release();
  });
  bank
    .command('info <file>')
    .description('print a bank file header')
    .action((file: string) => {
      console.log(JSON.stringify(readBankFile(resolve(file)).header, null, 2));
    });
  return program;
}

const program = buildProgram();
program.parseAsync(process.argv).catch((e: Error) => {
  console.error(`hiercore-edge: ${e.message}`);
  process.exit(1);
});
