/**
 * `hiercore-edge defects ...`: defect-type discovery over the NG archive and naming of the types;
 * and the engine side of `evaluate --defect-types`. main.ts registers these (registerDefectCommands).
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { loadEngineConfig, type EngineConfig } from '../config.ts';
import { resolveBackbone } from '../features/default-backbone.ts';
import { readBundleFile } from '../bundle/bundle-file.ts';
import { calibrationOptions } from '../calibrate/options.ts';
import { Progress } from '../util/progress.ts';
import { writeFileAtomic } from '../util/files.ts';
import { discoverArchive, discoveryReport, nameType } from '../explain/archive-discovery.ts';
import type { DefectTypes } from '../explain/discover.ts';
import { evaluateDefectTypes, type DefectTypesReport } from '../eval/defect-types.ts';
import type { ExecutionProvider } from '../features/session.ts';

const utf8 = (s: string) => new TextEncoder().encode(s);

function parseClusters(v: string): number | 'auto' {
  if (v === 'auto') return 'auto';
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected "auto" or a number of types >= 1');
  return n;
}

export function readDefectTypes(path: string): DefectTypes {
  const t = JSON.parse(readFileSync(path, 'utf8')) as DefectTypes;
  if (t.format_version !== 1 || !Array.isArray(t.clusters)) throw new Error(`${path} is not a defect-types file (format_version 1 with clusters)`);
  return t;
}

interface DiscoverFlags {
  archive: string;
  bundle: string;
  backbone?: string;
  config?: string;
  clusters: number | 'auto';
  cluster?: string;
  out: string;
  report: string;
  provider?: string;
  threads?: number;
}

async function discoverAction(o: DiscoverFlags): Promise<void> {
  const c = loadEngineConfig(o.config, {
    ...(o.backbone ? { backbone: o.backbone } : {}),
    runtime: { ...(o.provider ? { provider: o.provider } : {}), ...(o.threads !== undefined ? { threads: o.threads } : {}) },
  });
  const backbone = resolve(resolveBackbone(c.backbone, (m) => console.error(m)));
  const bundle = readBundleFile(resolve(o.bundle));
  const progress = new Progress();
  const d = await discoverArchive(resolve(o.archive), bundle, backbone, {
    clusters: o.clusters,
    cluster: o.cluster,
    provider: c.runtime.provider as ExecutionProvider,
    threads: c.runtime.threads,
    progress: (i, n) => progress.update('regions', i, n),
  });
  mkdirSync(dirname(resolve(o.out)), { recursive: true });
  writeFileAtomic(resolve(o.out), utf8(`${JSON.stringify(d.types, null, 1)}\n`));
  mkdirSync(dirname(resolve(o.report)), { recursive: true });
  writeFileAtomic(resolve(o.report), utf8(await discoveryReport(d)));
  for (const cl of d.clusters)
    console.log(
      `${cl.types.cluster}: ${cl.types.types.length} types from ${cl.types.discovery.regions} regions in ${cl.types.discovery.images} images (${cl.types.discovery.reason}): ${cl.types.types.map((t) => `${t.id} ${t.count}`).join(', ')}`,
    );
  if (d.skipped.length) console.log(`skipped ${d.skipped.length} frames (no region, or no product); see the report`);
  console.log(`wrote ${o.out} and ${o.report}`);
}

export function registerDefectCommands(program: Command): void {
  const defects = program.command('defects').description('defect regions and defect types: discover types in the NG archive, name them');
  defects
    .command('discover')
    .description('find defect types in NG archive entries (or a folder of images) without training; writes types JSON and an HTML report')
    .requiredOption('--archive <dir>', 'NG archive folder (entries with frame.jpg + verdict.json) or a folder of images')
    .requiredOption('--bundle <file>', 'the bundle the frames were inspected with')
    .option('--backbone <dir>', 'backbone directory (default: config "backbone", $HCE_BACKBONE, else the built-in fallback)')
    .option('--config <file>', 'site config JSON merged over config/default.json')
    .option('--cluster <name>', 'product cluster of frames without an archived verdict (default: route each frame; defects often route as UNKNOWN)')
    .option('--clusters <auto|K>', 'number of types per product cluster', parseClusters, 'auto' as const)
    .option('--out <file>', 'defect types JSON to write', 'types.json')
    .option('--report <file>', 'HTML report to write', 'report.html')
    .option('--provider <ep>', 'cpu | cuda | tensorrt')
    .option('--threads <n>', 'onnxruntime intra-op threads (0 = all cores)', (v) => Number.parseInt(v, 10))
    .action(discoverAction);
  defects
    .command('name <types> <typeId> <name>')
    .description('give a discovered type a name, e.g. defects name types.json T2 "scratch"')
    .option('--cluster <name>', 'product cluster, when the id exists in several')
    .action((file: string, id: string, name: string, o: { cluster?: string }) => {
      const path = resolve(file);
      const next = nameType(readDefectTypes(path), id, name, o.cluster);
      writeFileAtomic(path, utf8(`${JSON.stringify(next, null, 1)}\n`));
      console.log(`${id} is now "${name}" in ${file}`);
    });
}

/** `evaluate --defect-types`: regions and type discovery per category, at the engine config's settings. */
export async function defectTypesEvaluation(c: EngineConfig, dataset: string, categories: string[], opts: { clusters?: number | 'auto'; bundleCache?: string } = {}): Promise<DefectTypesReport> {
  return evaluateDefectTypes(
    { dataset, categories, backbone: resolve(c.backbone), calibration: calibrationOptions(c), discover: { clusters: opts.clusters ?? 'auto' }, bundleCache: opts.bundleCache },
    new Progress(),
  );
}
