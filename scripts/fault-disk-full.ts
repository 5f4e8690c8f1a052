/**
 * Fault script (slow, not in npm test): store_dir on a real, small tmpfs that is full. Phase 1: broker
 * up, 3,000 verdicts through the full disk (kept in memory, still delivered?). Phase 2: room again
 * (storeError cleared?). Phase 3: disk full and broker down, stop() (how long, and what does it say is
 * lost?). Needs root for mount(8). Run: sudo node --import tsx scripts/fault-disk-full.ts
 */
import { mkdirSync, mkdtempSync, openSync, writeSync, closeSync, unlinkSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { MqttPublisher, type MqttSettings } from '../src/publish/mqtt-publisher.ts';
import { Mosquitto, freePort, publisherSettings, waitFor } from '../test/helpers/services.ts';

const N = 3000;
const dir = mkdtempSync(join(tmpdir(), 'hce-fault-disk-'));
const mnt = join(dir, 'tmpfs');
mkdirSync(mnt);
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt], { stdio: 'pipe' });
} catch (e) {
  console.error(`cannot mount a tmpfs on ${mnt} (${(e as Error).message.trim()}): run as root, or where mount(8) is permitted`);
  process.exit(2);
}

/** Fills the file system to the last byte, so every record write fails with ENOSPC. */
function fill(path: string): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(4096, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    closeSync(fd);
  }
}

const logs: string[] = [];
const store = join(mnt, 'store');
const s = (url: string): MqttSettings => publisherSettings({ url, station: 'disk', store_dir: store, queue_max_bytes: 512 * 2 ** 20 });
const ev = { log: (l: string, m: string) => logs.push(`[${l}] ${m}`), trigger: () => {}, command: async () => null, connection: () => {} };
const verdict = (i: number) => JSON.stringify({ schema: 'hiercore-edge/verdict/1', frame_id: `disk/${i}`, frame: i, verdict: 'OK', score: 1.2, pad: 'x'.repeat(500) });

try {
  const broker = new Mosquitto(join(dir, 'broker'), await freePort());
  await broker.start();
  const seen = new Set<string>();
  const sub = await mqtt.connectAsync(broker.url, { protocolVersion: 4 });
  sub.on('message', (_t, p) => seen.add((JSON.parse(p.toString()) as { frame_id: string }).frame_id));
  await sub.subscribeAsync('hce/disk/verdict', { qos: 1 });

  const p = new MqttPublisher(s(broker.url), ev);
  await p.start();
  await p.waitConnected(5000);
  const filler = join(mnt, 'filler');
  fill(filler);
  let storeErrorSeen: string | null = null;
  const watch = setInterval(() => (storeErrorSeen ??= p.queue.storeError), 5);
  let t = Date.now();
  for (let i = 0; i < N; i++) {
    p.publishVerdict(verdict(i), `disk/${i}`);
    if (i % 100 === 99) await new Promise((r) => setImmediate(r));
  }
  const publishMs = Date.now() - t;
  await waitFor('phase 1 delivered', () => seen.size >= N && p.queue.depth === 0, 60_000, 50).catch(() => {});
  const phase1 = { delivered: seen.size, lost: N - seen.size, queue_depth_after: p.queue.depth, store_error_seen: storeErrorSeen, publish_loop_ms: publishMs };

  unlinkSync(filler);
  p.publishVerdict(verdict(N), `disk/${N}`);
  await waitFor('storeError cleared', () => p.queue.storeError === null, 10_000, 20).catch(() => {});
  const phase2 = { store_error_after_room: p.queue.storeError };

  fill(filler);
  await broker.stop();
  await waitFor('disconnected', () => !p.isConnected, 5000, 20);
  for (let i = N + 1; i <= N + 500; i++) p.publishVerdict(verdict(i), `disk/${i}`);
  await new Promise((r) => setTimeout(r, 300));
  const queueBeforeStop = p.queue;
  t = Date.now();
  const left = await p.stop(2000);
  const phase3 = { queue_before_stop: queueBeforeStop, stop_returned: left, stop_ms: Date.now() - t };
  clearInterval(watch);
  sub.end(true);
  console.log(JSON.stringify({ tmpfs: '2 MiB, filled to ENOSPC', phase1_broker_up_disk_full: phase1, phase2_room_again: phase2, phase3_broker_down_disk_full: phase3 }, null, 1));
  console.log('store log lines:');
  for (const l of logs.filter((x) => /store|queue/.test(x))) console.log(`  ${l.slice(0, 260)}`);
} finally {
  execFileSync('umount', [mnt]);
}
process.exit(0);
