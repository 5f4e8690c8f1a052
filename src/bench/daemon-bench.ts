/**
 * `npm run bench:daemon`: the daemon as the plant runs it, measured from the outside. Calibrates a
 * bundle from one category's good images, replays its test images through `hiercore-edge run`
 * (folder source, trigger mode "all" = every frame, as fast as inference goes) into mosquitto (or the
 * embedded broker), and reads the verdicts back over MQTT. Prints JSON: verdicts/s, capture-to-verdict
 * latency percentiles, per-stage medians, daemon peak RSS, lost/duplicate verdicts.
 *
 *   npm run bench:daemon -- [--dataset DIR] [--category bottle] [--backbone DIR] [--frames 300] [--heatmap false]
 *
 * Without --backbone: the Coral PTQ MobileNetV2 from $HCE_SHARED/models when present, else the built-in fallback.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve, extname } from 'node:path';
import { tmpdir } from 'node:os';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { freePort } from '../util/net.ts';
import mqtt from 'mqtt';
import { loadEngineConfig, PROJECT_ROOT } from '../config.ts';
import { importTflite } from '../features/import-tflite.ts';
import { resolveBackbone } from '../features/default-backbone.ts';
import { loadCategory } from '../eval/dataset.ts';
import { calibrate } from '../calibrate/calibrate.ts';
import { calibrationOptions } from '../calibrate/options.ts';
import { writeBundleFile } from '../bundle/bundle-file.ts';
import { percentile } from '../eval/evaluate.ts';
import { Progress } from '../util/progress.ts';
import type { VerdictPayload } from '../publish/topics.ts';

const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const shared = process.env.HCE_SHARED ?? resolve(PROJECT_ROOT, '..', 'shared');
const dataset = arg('dataset') ?? join(shared, 'datasets');
const category = arg('category') ?? 'bottle';
const frames = Number(arg('frames') ?? 300);
const heatmap = arg('heatmap') !== 'false';
if (!existsSync(join(dataset, category))) {
  console.error(`bench:daemon: no category "${category}" under ${dataset} (pass --dataset or set HCE_SHARED)`);
  process.exit(2);
}
const work = mkdtempSync(join(tmpdir(), 'hce-daemon-bench-'));
let backbone = arg('backbone');
const coral = join(shared, 'models', 'tf2_mobilenet_v2_1.0_224_ptq.tflite');
if (!backbone && existsSync(coral)) {
  backbone = join(work, 'backbone');
  importTflite(coral, backbone);
}
backbone = resolveBackbone(backbone ?? '', (m) => console.error(m));
const progress = new Progress();
const cat = loadCategory(dataset, category);
const c = loadEngineConfig(arg('config'), { backbone });
progress.log(`calibrating ${category} (${cat.train.length} good images)`);
const { bundle } = await calibrate({ ...calibrationOptions(c), images: cat.train }, progress.update);
const bundlePath = join(work, 'bench.hcebundle');
writeBundleFile(bundlePath, bundle);

// The replay folder: the test images, repeated to `frames` (symlinks, no copies).
const stream = join(work, 'stream');
mkdirSync(stream);
for (let i = 0; i < frames; i++) {
  const src = cat.test[i % cat.test.length].path;
  symlinkSync(resolve(src), join(stream, `${String(i).padStart(6, '0')}${extname(src)}`));
}

let broker: ChildProcess | null = null;
let url = '';
const port = await freePort();
if (spawnSync('sh', ['-c', 'command -v mosquitto']).status === 0) {
  writeFileSync(join(work, 'mosquitto.conf'), `listener ${port} 127.0.0.1\nallow_anonymous true\n`);
  broker = spawn('mosquitto', ['-c', join(work, 'mosquitto.conf')], { stdio: 'ignore' });
  url = `mqtt://127.0.0.1:${port}`;
  await new Promise((r) => setTimeout(r, 500));
}
const site = join(work, 'site.json');
writeFileSync(
  site,
  JSON.stringify({
    station: 'bench',
    backbone,
    bundle: bundlePath,
    source: { kind: 'folder', path: stream, fps: 1000, loop: false },
    trigger: { mode: 'all' },
    mqtt: { url, embedded_port: port, store_dir: join(work, 'store'), heatmap, stats_interval_s: 0 },
    runtime: { threads: c.runtime.threads },
    archive: { dir: '' },
    metrics: { port: 0 },
    log_level: 'warn',
  }),
);
const client = await new Promise<mqtt.MqttClient>((res) => {
  const tryConnect = () => {
    const cl = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 1000, protocolVersion: 4 });
    cl.once('connect', () => res(cl));
    cl.once('error', () => {
      cl.end(true);
      setTimeout(tryConnect, 200);
    });
  };
  if (url) tryConnect();
  else setTimeout(tryConnect, 3000); // the embedded broker starts with the daemon
});
const verdicts = new Map<string, VerdictPayload & { received: number }>();
let duplicates = 0;
client.on('message', (topic, payload) => {
  if (!topic.endsWith('/verdict')) return;
  const v = JSON.parse(payload.toString()) as VerdictPayload;
  if (verdicts.has(v.frame_id)) duplicates++;
  verdicts.set(v.frame_id, { ...v, received: Date.now() });
});
await new Promise((r) => client.subscribe('hiercore/bench/verdict', { qos: 1 }, r));

const bin = join(PROJECT_ROOT, 'bin', 'hiercore-edge.js');
const daemon = spawn(process.execPath, [bin, 'run', '--config', site], { stdio: ['ignore', 'inherit', 'inherit'] });
let peakRss = 0;
const rssTimer = setInterval(() => {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${daemon.pid}/status`, 'utf8'));
    if (m) peakRss = Math.max(peakRss, Number(m[1]) / 1024);
  } catch {
    /* not yet started or gone */
  }
}, 200);
const until = Date.now() + 30 * 60_000;
while (verdicts.size < frames && Date.now() < until && daemon.exitCode === null) {
  await new Promise((r) => setTimeout(r, 100));
  progress.update('verdicts', verdicts.size, frames);
}
clearInterval(rssTimer);
daemon.kill('SIGTERM');
await new Promise((r) => daemon.once('exit', r));
client.end(true);
broker?.kill('SIGTERM');

const vs = [...verdicts.values()].sort((a, b) => a.frame! - b.frame!);
// Skip the first 10 verdicts: session warm-up is not the steady state the line runs in.
const steady = vs.slice(10);
const span = (steady.at(-1)!.received - steady[0].received) / 1000;
const lat = (k: string) => steady.map((v) => v.latency_ms[k]).sort((a, b) => a - b);
const pct = (a: number[]) => ({ p50: Number(percentile(a, 0.5).toFixed(1)), p95: Number(percentile(a, 0.95).toFixed(1)), p99: Number(percentile(a, 0.99).toFixed(1)) });
console.log(
  JSON.stringify(
    {
      category,
      backbone: bundle.header.backbone.id,
      broker: url ? 'mosquitto' : 'embedded (aedes)',
      frames,
      verdicts: vs.length,
      lost: frames - vs.length,
      duplicates,
      heatmap,
      verdicts_per_s: Number(((steady.length - 1) / span).toFixed(1)),
      inference_ms: pct(lat('inference')),
      capture_to_verdict_ms_note: 'folder source in "all" mode queues frames ahead of inference, so this includes queueing',
      capture_to_verdict_ms: pct(lat('capture_to_verdict')),
      stages_ms_p50: Object.fromEntries(['preprocess', 'backbone', 'route', 'knn', 'heatmap'].map((k) => [k, Number(percentile(lat(k), 0.5).toFixed(2))])),
      daemon_peak_rss_mb: Math.round(peakRss),
      verdicts_by_kind: { OK: vs.filter((v) => v.verdict === 'OK').length, NG: vs.filter((v) => v.verdict === 'NG').length, UNKNOWN: vs.filter((v) => v.verdict === 'UNKNOWN').length },
    },
    null,
    2,
  ),
);
process.exit(vs.length === frames ? 0 : 1);
