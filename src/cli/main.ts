/** Command-line entry point: hiercore-edge <command>. */
import type { CalibrateFlags } from './calibrate-command.ts';
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { importTflite } from '../features/import-tflite.ts';
import { resolveBackbone } from '../features/default-backbone.ts';
import { coresetSettings, featureSettings, loadEngineConfig, isInputSize, PROJECT_ROOT, searchSettings, type EngineConfig } from '../config.ts';
import { evaluate } from '../eval/evaluate.ts';
import { listCategories } from '../eval/dataset.ts';
import { Progress } from '../util/progress.ts';
import { FeatureExtractor } from '../features/extractor.ts';
import { readImage } from '../features/image.ts';
import { buildBank } from '../score/patchcore.ts';
import { readBankFile, writeBankFile } from '../score/bank-file.ts';
import { calibrationOptions } from '../calibrate/options.ts';
import { evaluateMulticlass } from '../eval/multiclass.ts';
import { evaluateMixes } from '../eval/multiclass-run.ts';
import { formatSubsetReport } from '../eval/subset-table.ts';
import { readBundleFile, readBundleHeader, writeBundleFile, type BundleHeader } from '../bundle/bundle-file.ts';
import { Inspector } from '../inspect/inspector.ts';
import { KEY_MODES } from '../route/router.ts';
import { defectTypesEvaluation, readDefectTypes, registerDefectCommands } from './defects.ts';
import { newBundleId } from '../bundle/bundle-file.ts';
import { join, basename } from 'node:path';

function parseSize(v: string): string {
  if (!isInputSize(v)) throw new InvalidArgumentError('expected "auto", "auto:S" (S x S pixels, 64..1024) or WIDTHxHEIGHT (32..4096 each), e.g. 224x224');
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
    .option('--backbone <dir>', 'backbone directory (backbone.json + backbone.onnx); default: config "backbone", $HCE_BACKBONE, else the built-in fallback')
    .option('--input-size <WxH|auto|auto:S>', "network input size; auto = the frames' aspect ratio at 224x224 pixels (auto:S at SxS)", parseSize)
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

function engineConfig(f: EngineFlags, extra: Record<string, Record<string, unknown>> = {}): EngineConfig {
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
  // flags win over `extra` (a recipe's settings), key by key within a section
  for (const [k, v] of Object.entries(extra)) o[k] = { ...v, ...((o[k] as Record<string, unknown> | undefined) ?? {}) };
  const c = loadEngineConfig(f.config, o);
  c.backbone = resolveBackbone(c.backbone, (m) => console.error(m));
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
      const ops = Object.entries(r.opCounts)
        .map(([k, v]) => `${k} x${v}`)
        .join(', ');
      console.log(`imported ${file} (${ops})`);
      for (const out of r.sidecar.outputs) console.log(`  output ${out.name}: ${out.role}, ${out.channels} channels${out.stride ? `, stride ${out.stride}` : ''}`);
      console.log(`wrote ${r.onnxPath} and ${r.sidecarPath}`);
    });

  model
    .command('fallback [name]')
    .description('import a built-in backbone from the nsfwjs npm package: mobilenet_v2 (default; up to block_10) or inception_v3 (up to mixed5; slower, see the README trade-off table)')
    .requiredOption('--out <dir>', 'output directory')
    .action(async (name: string | undefined, o: { out: string }) => {
      const n = name ?? 'mobilenet_v2';
      const importers = {
        mobilenet_v2: async () => (await import('../features/import-nsfwjs.ts')).importFallbackBackbone,
        inception_v3: async () => (await import('../features/import-nsfwjs-inception.ts')).importInceptionBackbone,
      };
      if (!(n in importers)) throw new Error(`unknown built-in backbone "${n}": one of ${Object.keys(importers).join(', ')}`);
      const r = (await importers[n as keyof typeof importers]())(resolve(o.out));
      for (const out of r.sidecar.outputs) console.log(`  output ${out.name}: ${out.role}, ${out.channels} channels, stride ${out.stride} (${out.source})`);
      console.log(`wrote ${r.onnxPath} (${r.sidecar.id})`);
    });
  model
    .command('fetch [name]')
    .description('download a pinned reference model (google-coral/test_data) and import it; needs internet')
    .requiredOption('--out <dir>', 'output directory')
    .action(async (name: string | undefined, o: { out: string }) => {
      const { fetchBackbone, CORAL_MODELS } = await import('../features/default-backbone.ts');
      const n = (name ?? 'mobilenet-v2-ptq') as keyof typeof CORAL_MODELS;
      if (!(n in CORAL_MODELS)) throw new Error(`unknown model "${n}": one of ${Object.keys(CORAL_MODELS).join(', ')}`);
      const r = await fetchBackbone(n, resolve(o.out));
      console.log(`fetched ${CORAL_MODELS[n].url} (sha256 checked) and wrote ${r.onnxPath}`);
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
      .option('--test-stride <n>', 'score every n-th test image only (quick looks)', parseIntArg, 1)
      .option('--multiclass', 'every mix of the categories, calibrated without and with folder labels: clusters, NMI, routing, routed vs single-product AUROC, leave-one-product-out UNKNOWN')
      .option('--subsets <spec>', 'multiclass: mixes to evaluate: all (default), N (mixes of 1..N products) or a list like bottle+screw,kolektor')
      .option('--scenarios', 'multiclass: instead, the five HierCore scenarios on one mix of all categories (pixel metrics, F1, one-bank baseline)')
      .option('--held-out <method>', 'multiclass: held-out good scores: kfold | masked-kfold | leave-self-out (default: calibration.held_out)')
      .option('--frr <rate>', 'multiclass: target false-reject rate for the calibrated thresholds', parseNum)
      .option('--folds <k>', 'multiclass: k-fold splits for held-out good scores', parseIntArg)
      .option('--keys <mode>', `multiclass: routing keys per cluster: ${KEY_MODES.join(' | ')}`)
      .option('--defect-types', 'defect regions and type discovery per category (test/<defect_type>/ folders): region IoU, count match, NMI/ARI/F1'),
  ).action(
    async (
      o: EngineFlags & {
        dataset: string;
        categories?: string;
        json?: string;
        saveHeatmaps?: string;
        heatmapsPerCategory: number;
        testStride: number;
        multiclass?: boolean;
        subsets?: string;
        scenarios?: boolean;
        heldOut?: string;
        defectTypes?: boolean;
        frr?: number;
        folds?: number;
        keys?: string;
      },
    ) => {
      const over: Record<string, unknown> = {};
      if (o.frr !== undefined) over.frr_target = o.frr;
      if (o.folds !== undefined) over.folds = o.folds;
      if (o.keys) over.keys = o.keys;
      const mixes = o.multiclass && !o.scenarios;
      if (mixes && o.heldOut) over.held_out = o.heldOut;
      else if (o.heldOut) over.held_out = o.heldOut;
      const c = engineConfig(o, { calibration: over });
      const categories = o.categories
        ? o.categories
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : listCategories(o.dataset);
      if (mixes && !o.defectTypes) {
        const mixReport = await evaluateMixes(c, resolve(o.dataset), categories, o, new Progress());
        if (o.json) {
          mkdirSync(dirname(resolve(o.json)), { recursive: true });
          writeFileSync(o.json, `${JSON.stringify(mixReport, null, 2)}\n`);
          console.error(`wrote ${o.json}`);
        }
        console.log(formatSubsetReport(mixReport));
        return;
      }
      const report = o.defectTypes
        ? await defectTypesEvaluation(c, resolve(o.dataset), categories)
        : o.multiclass
          ? await evaluateMulticlass({ ...calibrationOptions(c), dataset: resolve(o.dataset), categories, testStride: o.testStride }, new Progress())
          : await evaluate(
              {
                dataset: resolve(o.dataset),
                categories,
                backbone: resolve(c.backbone),
                features: (frame) => featureSettings(c, frame),
                coreset: coresetSettings(c),
                reweightNeighbours: c.scoring.reweight_neighbours,
                heatmapSigma: c.scoring.heatmap_sigma,
                search: searchSettings(c),
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
        writeFileSync(o.json, `${text}\n`);
        console.error(`wrote ${o.json}`);
      }
      console.log(text);
    },
  );

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
  engineOptions(
    program
      .command('calibrate')
      .description('build a bank bundle from nominal (good) images of one or several product types, and its HTML report')
      .option('--images <dir>', 'folder of good images (subfolders are searched; mixed products need no labels); or recipe.source')
      .requiredOption('--out <bundle>', 'bundle file to write (atomically)')
      .option('--recipe <file>', 'calibration recipe (JSON or JSONC, see calibration/recipe.example.jsonc); flags override it')
      .option('--report <file.html>', 'self-contained HTML report (default: beside the bundle, <bundle>.report.html)')
      .option('--site <file>', 'the daemon site config whose camera a recipe with source "camera" captures from (default: config/site.json)')
      .option('--known-class', 'use the first-level subfolder names as product classes instead of clustering')
      .option('--defects <dir>', 'a few labelled defect images: scored in the report, and the F1-optimal threshold')
      .option('--threshold <source>', 'frr (default: from good images) | f1 (needs --defects)')
      .option('--frr <rate>', 'target false-reject rate of good parts, e.g. 0.005', parseNum)
      .option('--folds <k>', 'k-fold splits for held-out good scores', parseIntArg)
      .option('--min-cluster-size <n>', 'smallest cluster kept (smaller ones are merged)', parseIntArg)
      .option('--keys <mode>', `routing keys per cluster: ${KEY_MODES.join(' | ')}`),
  ).action(async (o: EngineFlags & CalibrateFlags) => {
    const { calibrateCommand } = await import('./calibrate-command.ts');
    await calibrateCommand(o, (extra) => engineConfig(o, extra));
  });

  const bundle = program.command('bundle').description('calibration bundles');
  bundle
    .command('info <file>')
    .description('print a bundle: version, backbone, and per cluster its size, members, bank, threshold and routing limit')
    .option('--json', 'machine-readable output')
    .action((file: string, o: { json?: boolean }) => {
      const info = bundleSummary(readBundleHeader(resolve(file)));
      if (o.json) {
        console.log(JSON.stringify(info, null, 2));
        return;
      }
      console.log(`bundle ${info.bundle_id} (format ${info.format_version}), created ${info.created_at}`);
      console.log(`backbone ${info.backbone.id} (${info.backbone.onnx_sha256.slice(0, 12)}…), ${info.calibration.mode}, ${info.calibration.images} images`);
      const sc = info.scoring;
      console.log(
        `scoring: input ${sc.input_size}, fit ${sc.fit}, dims ${sc.pre_dim}/${sc.dim}, reweight_neighbours ${sc.reweight_neighbours}, heatmap_sigma ${sc.heatmap_sigma}${sc.legacy ? ' (format 1 bundle: not recorded, the values it has always been scored with; recalibrate to record them)' : ''}`,
      );
      for (const cl of info.clusters)
        console.log(
          `  [${cl.id}] ${cl.name}: ${cl.size} images at ${cl.input}, bank ${cl.bank_size}, threshold ${cl.threshold.toFixed(4)} (${cl.threshold_source}), routing limit ${cl.routing_limit.toFixed(4)}`,
        );
    });

  bundle
    .command('list')
    .description("the bundle versions of the daemon's bundle folder (calibrations on site): the active one marked, validated or not, report")
    .option('--config <file>', 'site config JSON of the daemon (default: config/site.json when present)')
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; json?: boolean }) => {
      const { store, active } = await daemonBundles(o.config);
      const versions = store.versions(active);
      if (o.json) return console.log(JSON.stringify({ folder: store.folder, active, versions }, null, 2));
      console.log(`bundle folder ${store.folder}; active: ${active || 'none (uncalibrated)'}`);
      for (const v of versions) {
        const mark = v.active ? '*' : v.previous ? '<' : ' ';
        const valid = v.validated === null ? 'not validated' : v.validated ? 'validated' : `FAILED validation${v.problem ? ` (${v.problem})` : ''}`;
        console.log(`${mark} ${v.version}  ${v.bundle_id ?? '(unreadable)'}  ${v.clusters ?? '?'} cluster(s)  ${valid}${v.report ? `  report ${v.report}` : ''}`);
      }
      if (!versions.length) console.log('  no versions yet (cmd/calibrate or the web page makes them)');
      else console.log('  * active, < previous (what rollback returns to)');
    });
  bundle
    .command('activate <version>')
    .description('make a bundle version the active one: the daemon loads it at its next start (a running daemon: cmd/activate)')
    .option('--config <file>', 'site config JSON of the daemon (default: config/site.json when present)')
    .action(async (version: string, o: { config?: string }) => {
      const { store, active, configured } = await daemonBundles(o.config);
      const path = store.versionPath(version);
      readBundleHeader(path); // refuses a file that is not a bundle before it is remembered
      store.remember(path, configured, active);
      console.log(`${version} is the active bundle from the next start of the daemon (now: send cmd/activate {"version": "${version}"})`);
    });
  bundle
    .command('set-types <bundle> <types.json>')
    .description('store the defect types of "defects discover" (and their names) in a bundle; writes a new bundle with a new id')
    .requiredOption('--out <file>', 'the new bundle (load it with the reload command)')
    .action((file: string, typesFile: string, o: { out: string }) => {
      const b = readBundleFile(resolve(file));
      const types = readDefectTypes(resolve(typesFile));
      if (types.backbone.onnx_sha256 !== b.header.backbone.onnx_sha256)
        throw new Error(`${typesFile} was discovered with backbone "${types.backbone.id}", the bundle uses "${b.header.backbone.id}": run defects discover with this bundle's backbone`);
      const known = new Set(b.header.clusters.map((c) => c.name));
      const stray = types.clusters.filter((t) => !known.has(t.cluster)).map((t) => t.cluster);
      if (stray.length) throw new Error(`${typesFile} has types for cluster(s) ${stray.join(', ')} that are not in ${file}`);
      const header = { ...b.header, bundle_id: newBundleId(), created_at: new Date().toISOString(), defect_types: types };
      writeBundleFile(resolve(o.out), { ...b, header });
      console.error(`wrote ${o.out} (bundle ${header.bundle_id}): ${types.clusters.map((t) => `${t.cluster}: ${t.types.map((x) => x.name ?? x.id).join(', ')}`).join('; ')}`);
    });

  engineOptions(
    bundle
      .command('add-product')
      .description('calibrate a new product from its good images alone and append it as a cluster; the other clusters are kept as they are')
      .requiredOption('--bundle <file>', 'the bundle to extend')
      .requiredOption('--images <dir>', 'good images of the new product (subfolders searched)')
      .requiredOption('--name <name>', "the new cluster's name (letters, digits, _ . -)")
      .requiredOption('--out <file>', 'the new bundle (a new id; load it with the reload command)'),
  ).action(async (o: EngineFlags & { bundle: string; images: string; name: string; out: string }) => {
    const { incrementCommand } = await import('./calibrate-command.ts');
    await incrementCommand('product', o, () => engineConfig(o));
  });
  engineOptions(
    bundle
      .command('add-images')
      .description('add approved good images to one cluster and rebuild only its bank, keys and threshold (its earlier images must still be on disk)')
      .requiredOption('--bundle <file>', 'the bundle to update')
      .requiredOption('--cluster <name>', 'the cluster the images belong to (bundle info lists them)')
      .requiredOption('--images <dir>', 'the approved good images (subfolders searched)')
      .requiredOption('--out <file>', 'the new bundle (a new id; load it with the reload command)'),
  ).action(async (o: EngineFlags & { bundle: string; images: string; cluster: string; out: string }) => {
    const { incrementCommand } = await import('./calibrate-command.ts');
    await incrementCommand('images', o, () => engineConfig(o));
  });

  engineOptions(
    program
      .command('inspect <images...>')
      .description('inspect image files with a bundle: one JSON verdict per image on stdout')
      .requiredOption('--bundle <file>', 'bundle from "hiercore-edge calibrate"')
      .option('--heatmaps <dir>', 'write a heatmap overlay PNG per inspected image'),
  ).action(async (files: string[], o: EngineFlags & { bundle: string; heatmaps?: string }) => {
    const c = engineConfig(o);
    const b = readBundleFile(resolve(o.bundle));
    // Scoring settings come from the bundle; only an explicit --reweight is checked against it.
    const inspector = await Inspector.load(b, resolve(c.backbone), {
      provider: c.runtime.provider,
      threads: c.runtime.threads,
      overrides: { reweight_neighbours: o.reweight ?? null, heatmap_sigma: null },
    });
    if (o.heatmaps) mkdirSync(o.heatmaps, { recursive: true });
    let failed = 0;
    for (const f of files) {
      try {
        const img = await readImage(resolve(f));
        const r = await inspector.inspect(img);
        const round = (v: number | null) => (v === null ? null : Number(v.toFixed(5)));
        console.log(
          JSON.stringify({
            image: f,
            verdict: r.verdict,
            cluster: r.cluster,
            score: round(r.score),
            normalised_score: round(r.normalised_score),
            threshold: round(r.threshold),
            route: { nearest: r.route.nearest, distance: round(r.route.distance), limit: round(r.route.limit) },
            ...(r.regions ? { regions: r.regions } : {}),
            bundle_id: inspector.bundleId,
          }),
        );
        const png = o.heatmaps ? await inspector.heatmapImage(r, 'png') : null;
        if (png) writeFileSync(join(o.heatmaps!, `${basename(f).replace(/\.\w+$/, '')}_${r.verdict}.png`), png);
      } catch (e) {
        failed++;
        console.error(`hiercore-edge: ${f}: ${(e as Error).message}`);
      }
    }
    await inspector.release();
    if (failed) process.exitCode = 1;
  });
  program
    .command('run')
    .description('the inspection daemon: camera -> route -> score -> MQTT (see README "Running the daemon")')
    .option('--config <file>', 'site config JSON (default: config/site.json when present)')
    .option('--print-config', 'print the effective configuration (secrets masked) and exit')
    .allowUnknownOption(true)
    .helpOption(
      '-h, --help',
      'flags: --station --backbone --bundle --source-kind --source-path --source-fps --source-loop --trigger-mode --mqtt-url --mqtt-store-dir --provider --metrics-port --log-level; everything else in the config file or HCE_* variables',
    )
    .action(async (o: { config?: string; printConfig?: boolean }, cmd: Command) => {
      const { loadDaemonConfig } = await import('../service/config.ts');
      const loaded = loadDaemonConfig({ siteFile: o.config, defaultSite: join(PROJECT_ROOT, 'config', 'site.json'), args: cmd.args });
      if (o.printConfig) {
        console.log(loaded.toString());
        return;
      }
      await runDaemon(loaded);
    });

  program
    .command('demo')
    .description('the whole loop with generated demo parts, the built-in backbone and an embedded broker (npm start)')
    .action(async () => {
      const { loadDaemonConfig } = await import('../service/config.ts');
      const { prepareDemo } = await import('../demo/demo.ts');
      const { portOr } = await import('../util/net.ts');
      const progress = new Progress();
      const demo = await prepareDemo((m) => progress.log(m), progress.update);
      const loaded = loadDaemonConfig({
        overrides: {
          station: 'demo',
          backbone: demo.backbone,
          bundle: demo.bundle,
          source: { kind: 'folder', path: demo.line, fps: 2, loop: true },
          mqtt: { store_dir: join(demo.dir, 'mqtt-store'), embedded_port: await portOr(1883), stats_interval_s: 10 },
          state_dir: join(demo.dir, 'state'),
          archive: { dir: join(demo.dir, 'archive'), quota_mb: 100 },
          metrics: { port: await portOr(9464) },
        },
      });
      await runDaemon(loaded, true);
    });
  registerDefectCommands(program);
  return program;
}

/** Starts the daemon with signal handling; exits the process when it stops. */
async function runDaemon(loaded: { config: import('../service/config.ts').DaemonConfig; site?: string; toString: () => string }, demo = false): Promise<void> {
  const { Daemon } = await import('../service/daemon.ts');
  const { createLogger } = await import('../service/log.ts');
  const log = createLogger(loaded.config.log_level as 'info');
  if (loaded.site) log('info', `config ${loaded.site}`);
  const daemon = new Daemon(loaded.config, log, loaded.toString);
  let exiting = false;
  let startFailed = false;
  // One shutdown path for a failed start and for a signal: stop() gets a bounded time, then the
  // process exits anyway (process.exit() can hang joining a threadpool thread still inside a
  // GStreamer call; the unit's TimeoutStopSec is the last backstop).
  const shutdown = (why: string, backstopMs: number) => {
    if (exiting) return;
    exiting = true;
    setTimeout(() => {
      log('error', `stop did not finish within ${backstopMs / 1000} s (${why}): exiting`);
      process.kill(process.pid, 'SIGKILL');
    }, backstopMs).unref();
    daemon.stop(why).then(
      () => process.exit(startFailed ? 1 : 0),
      (e: Error) => {
        log('error', `stop failed: ${e.message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM', 15_000));
  process.on('SIGINT', () => shutdown('SIGINT', 15_000));
  try {
    await daemon.start();
  } catch (e) {
    if (exiting) return; // a signal arrived during start-up; its shutdown is under way
    log('error', (e as Error).message);
    startFailed = true;
    shutdown('start-up failed', 10_000);
    return;
  }
  if (demo) {
    const t = daemon.topicsBase();
    const url = daemon.brokerUrl();
    const hostPort = url.replace(/^mqtts?:\/\//, '').split(':');
    log('info', `demo running. Watch the verdicts:  mosquitto_sub -h ${hostPort[0]} -p ${hostPort[1] ?? 1883} -v -t '${t}/#'`);
    log('info', `inspect one part on demand:       mosquitto_pub -h ${hostPort[0]} -p ${hostPort[1] ?? 1883} -t '${t}/cmd/snapshot' -m '{}'`);
    if (loaded.config.metrics.port) log('info', `metrics: http://127.0.0.1:${loaded.config.metrics.port}/metrics  health: /healthz   stop: Ctrl-C`);
  }
}

/** The daemon's bundle folder and state, from its site config. */
async function daemonBundles(config?: string) {
  const { loadDaemonConfig } = await import('../service/config.ts');
  const { bundleStoreFor } = await import('../bundle/bundle-store.ts');
  const c = loadDaemonConfig({ siteFile: config, defaultSite: join(PROJECT_ROOT, 'config', 'site.json') }).config;
  const store = bundleStoreFor(c);
  return { store, configured: c.bundle, active: store.active(c.bundle) };
}

export function bundleSummary(h: BundleHeader) {
  return {
    format_version: h.format_version,
    bundle_id: h.bundle_id,
    created_at: h.created_at,
    backbone: h.backbone,
    scoring: h.scoring,
    settings: h.settings,
    calibration: h.calibration,
    clusters: h.clusters.map((c) => ({
      id: c.id,
      name: c.name,
      size: c.members.length,
      input: `${c.features.width}x${c.features.height}`,
      members: c.members,
      bank_size: c.bank.count,
      keys: c.keys.count,
      threshold: c.threshold,
      threshold_source: c.threshold_source,
      thresholds: c.thresholds,
      routing_limit: c.routing_limit,
      statistics: c.statistics,
    })),
  };
}

const program = buildProgram();
program.parseAsync(process.argv).catch((e: Error) => {
  console.error(`hiercore-edge: ${e.message}`);
  process.exit(1);
});
