/**
 * Fault script (slow, not in npm test): 70,000 verdicts queued through MqttPublisher while the broker
 * is down (more than the 65,535 MQTT message ids), the daemon restarted, the broker brought up; counts
 * what a subscriber receives. Run: node --import tsx scripts/fault-queue-70k.ts [count] [--fsync]
 */
import { mkdtempSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { MqttPublisher, type MqttSettings } from '../src/publish/mqtt-publisher.ts';
import { Mosquitto, freePort, publisherSettings, waitFor } from '../test/helpers/services.ts';

const N = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 70_000);
const dir = mkdtempSync(join(tmpdir(), 'hce-fault-70k-'));
const verdictTopic = 'hce/fault/verdict';

function verdict(i: number): string {
  return JSON.stringify({
    schema: 'hiercore-edge/verdict/1',
    frame_id: `run-70k/${i}`,
    frame: i,
    run_id: 'run-70k',
    part_id: `P-${i}`,
    station: 'fault',
    timestamp: new Date().toISOString(),
    verdict: i % 7 ? 'OK' : 'NG',
    cluster: 'cluster-0',
    score: 1.234,
    normalised_score: 0.45,
    threshold: 2.74,
    route: { nearest: 'cluster-0', distance: 0.093, limit: 0.115 },
    latency_ms: { queue: 1, inference: 38.2, preprocess: 2.1, backbone: 7.1, route: 0.9, knn: 6.3, heatmap: 0.9, capture_to_verdict: 40 },
    bundle: { id: 'b', created_at: '2025-01-01T00:00:00Z' },
    heatmap: true,
    image: false,
  });
}

function publisher(url: string, store: string): MqttPublisher {
  const s: MqttSettings = publisherSettings({ url, station: 'fault', store_dir: store, queue_max_bytes: 512 * 2 ** 20, queue_fsync: process.argv.includes('--fsync') });
  return new MqttPublisher(s, { log: (l, m) => l !== 'info' && console.error(`  [${l}] ${m.slice(0, 200)}`), trigger: () => {}, command: async () => null, connection: () => {} });
}

async function subscriber(url: string) {
  const seen = new Map<string, number>();
  let total = 0;
  const c = await mqtt.connectAsync(url, { clientId: 'fault-70k-sub', clean: false, protocolVersion: 4, reconnectPeriod: 200 });
  c.on('message', (_t, p) => {
    total++;
    const id = (JSON.parse(p.toString()) as { frame_id: string }).frame_id;
    seen.set(id, (seen.get(id) ?? 0) + 1);
  });
  await c.subscribeAsync(verdictTopic, { qos: 1 });
  return { c, seen, total: () => total };
}

const broker = new Mosquitto(join(dir, 'broker'), await freePort(), 'max_queued_messages 0');
await broker.start();
(await subscriber(broker.url)).c.end(true);
await broker.stop();

const store = join(dir, 'store');
const first = publisher(broker.url, store);
await first.start();
let t = Date.now();
for (let i = 0; i < N; i++) first.publishVerdict(verdict(i), `run-70k/${i}`);
const enqueueMs = Date.now() - t;
await waitFor('records written', () => first['q']!.stats.onDisk === N, 600_000, 100);
const writtenMs = Date.now() - t;
const left = await first.stop(1000);
const diskBytes = Number(execFileSync('du', ['-sb', join(store, 'verdicts')], { encoding: 'utf8' }).split('\t')[0]);

const second = publisher(broker.url, store);
t = Date.now();
await second.start();
const startupMs = Date.now() - t;
const queuedAfterRestart = second.queue.depth;

await broker.start();
const sub = await subscriber(broker.url);
t = Date.now();
await waitFor('queue drained', () => second.queue.depth === 0, 600_000, 100);
await waitFor('subscriber caught up', () => sub.seen.size >= N, 20_000, 100).catch(() => {});
await new Promise((r) => setTimeout(r, 1000));
const deliverMs = Date.now() - t;
const after = await second.stop(2000);
await sub.c.endAsync();
await broker.stop();

const unique = [...sub.seen.keys()].filter((k) => Number(k.split('/')[1]) < N).length;
console.log(
  JSON.stringify(
    {
      verdicts: N,
      enqueue_ms: enqueueMs,
      all_on_disk_ms: writtenMs,
      stop_left: left,
      disk_bytes: diskBytes,
      queue_startup_ms: startupMs,
      queued_after_restart: queuedAfterRestart,
      deliver_ms: deliverMs,
      delivered_unique: unique,
      lost: N - unique,
      duplicates: sub.total() - unique,
      left_after_delivery: after,
      peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    },
    null,
    1,
  ),
);
process.exit(0);
