/**
 * Soak: the daemon for a long run against a real mosquitto, with broker outages, snapshots and
 * hostile command payloads along the way; RSS sampled from /proc. Not a test (it takes half an hour
 * by default); its figures go into the README.
 *
 *   node --import tsx scripts/soak.ts [--minutes 30] [--outage-every-min 5]
 *
 * Prints JSON: RSS first/last/max and its growth between the first and the last fifth, verdicts
 * received vs inspected (lost), duplicates, NO_FRAME count, worker restarts.
 */
import { join } from 'node:path';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import mqtt from 'mqtt';
import { syntheticPart, tempDir, writePng, writeSyntheticBundle } from '../test/helpers/synthetic.ts';
import { DaemonProcess, Mosquitto, freePort, waitFor } from '../test/helpers/services.ts';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const minutes = arg('minutes', 30);
const outageEvery = arg('outage-every-min', 5) * 60_000;
const base = 'hiercore/soak';

const dir = tempDir('soak');
const { backbone, bundle } = await writeSyntheticBundle(dir);
mkdirSync(join(dir, 'stream'));
for (let i = 0; i < 40; i++) await writePng(join(dir, 'stream', `${String(i).padStart(3, '0')}.png`), syntheticPart(96, 90_000 + i, i % 7 === 6 ? { x: 30, y: 40, w: 10, h: 6 } : undefined), 96, 96);
const broker = new Mosquitto(join(dir, 'broker'), await freePort());
await broker.start();
const metricsPort = await freePort();
const cfg = join(dir, 'site.json');
writeFileSync(
  cfg,
  JSON.stringify({
    station: 'soak',
    backbone,
    bundle,
    state_dir: join(dir, 'state'),
    source: { kind: 'folder', path: join(dir, 'stream'), fps: 25, loop: true },
    trigger: { mode: 'all' },
    mqtt: { url: broker.url, store_dir: join(dir, 'store'), stats_interval_s: 5 },
    runtime: { threads: 1 },
    archive: { dir: join(dir, 'archive'), quota_mb: 20 },
    metrics: { port: metricsPort },
  }),
);

const seen = new Map<string, number>();
let duplicates = 0;
const sub = mqtt.connect(broker.url, { clientId: 'soak-sub', clean: false, protocolVersion: 5, reconnectPeriod: 200, properties: { sessionExpiryInterval: 7200 } });
sub.on('connect', () => sub.subscribe(`${base}/verdict`, { qos: 1 }));
sub.on('message', (_t, p) => {
  const v = JSON.parse(p.toString()) as { frame_id: string };
  if (seen.has(v.frame_id)) duplicates++;
  seen.set(v.frame_id, 1);
});
await waitFor('subscriber', () => sub.connected, 10_000);

const daemon = new DaemonProcess(cfg);
const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${daemon.proc.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
const metric = async (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text())?.[1] ?? 0);
await waitFor('first verdict', () => seen.size > 0, 60_000);

const samples: { t: number; rss: number }[] = [];
const t0 = Date.now();
let nextOutage = t0 + outageEvery;
let outages = 0;
const hostile = ['null', '[]', '"x"', '{"request_id": {"a": 1}}', 'x'.repeat(100_000)];
while (Date.now() - t0 < minutes * 60_000) {
  await new Promise((r) => setTimeout(r, 10_000));
  samples.push({ t: (Date.now() - t0) / 1000, rss: rss() });
  sub.publish(`${base}/cmd/get_stats`, hostile[samples.length % hostile.length]);
  sub.publish(`${base}/cmd/snapshot`, '{}');
  if (Date.now() > nextOutage) {
    await broker.stop();
    await new Promise((r) => setTimeout(r, 10_000));
    await broker.start();
    outages++;
    nextOutage = Date.now() + outageEvery;
  }
}
const inspected = await metric('hce_frames_inspected_total');
const restarts = await metric('hce_worker_restarts_total');
daemon.kill('SIGTERM');
const code = await daemon.exited;
await new Promise((r) => setTimeout(r, 3000));
const fifth = Math.max(1, Math.floor(samples.length / 5));
const mean = (xs: { rss: number }[]) => xs.reduce((s, x) => s + x.rss, 0) / xs.length;
console.log(
  JSON.stringify(
    {
      minutes,
      outages,
      exit_code: code,
      inspected,
      received: seen.size,
      lost: Math.max(0, inspected - seen.size),
      duplicates,
      worker_restarts: restarts,
      rss_mb: {
        first: samples[0]?.rss,
        last: samples.at(-1)?.rss,
        max: Math.max(...samples.map((s) => s.rss)),
        first_fifth_mean: Number(mean(samples.slice(0, fifth)).toFixed(1)),
        last_fifth_mean: Number(mean(samples.slice(-fifth)).toFixed(1)),
      },
    },
    null,
    1,
  ),
);
sub.end(true);
await broker.stop();
process.exit(0);
