/**
 * The verdict queue on its own (file-system faults injected through QueueFs) and the publisher on it
 * against a real mosquitto: broker down at boot, message-id reuse, bounded stop(), client-id takeover.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, existsSync, statSync, symlinkSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { VerdictQueue, encodeRecord, nodeQueueFs, type QueueFs, type VerdictQueueOptions } from '../src/publish/verdict-queue.ts';
import { MqttPublisher, VERDICT_WINDOW, type MqttSettings } from '../src/publish/mqtt-publisher.ts';
import { Mosquitto, freePort, publisherSettings, waitFor, which } from './helpers/services.ts';

const NO_MOSQUITTO = which('mosquitto') ? false : 'mosquitto is not installed (deploy/setup.sh installs it)';
const tmp = (p: string) => mkdtempSync(join(tmpdir(), `hce-vq-${p}-`));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ioError = (code: string) => Object.assign(new Error(`${code}: injected`), { code });

/** nodeQueueFs with switchable faults: set `fail.write = 'ENOSPC'` and every record write fails. */
function faultyFs() {
  const fail: { write?: string; mkdir?: string; unlink?: string } = {};
  const fs: QueueFs = {
    ...nodeQueueFs,
    mkdir: (p) => (fail.mkdir ? Promise.reject(ioError(fail.mkdir)) : nodeQueueFs.mkdir(p)),
    writeFile: (p, d, o) => (fail.write ? Promise.reject(ioError(fail.write)) : nodeQueueFs.writeFile(p, d, o)),
    unlink: (p) => (fail.unlink ? Promise.reject(ioError(fail.unlink)) : nodeQueueFs.unlink(p)),
  };
  return { fs, fail };
}

function opener(dir: string, extra: Partial<VerdictQueueOptions> = {}) {
  const logs: string[] = [];
  const open = (o: Partial<VerdictQueueOptions> = {}) => VerdictQueue.open({ dir, maxCount: 1000, maxBytes: 2 ** 20, log: (l, m) => logs.push(`${l} ${m}`), ...extra, ...o });
  return { logs, open };
}

const records = (dir: string) =>
  readdirSync(join(dir, 'verdicts'))
    .filter((n) => n.endsWith('.v'))
    .sort();
const settle = (q: VerdictQueue, onDisk: number) => waitFor(`${onDisk} records on disk`, () => q.stats.onDisk === onDisk, 5000, 10);

test('verdict queue: a restart reads what is left in sequence order; acknowledged records are deleted', async () => {
  const dir = tmp('order');
  const { open } = opener(dir);
  const q = await open();
  for (let i = 1; i <= 50; i++) q.push(`f/${i}`, `{"frame":${i}}`);
  await settle(q, 50);
  for (const seq of [1, 2, 3, 10, 50]) q.ack(seq);
  await waitFor('deletes', () => records(dir).length === 45);
  assert.equal((statSync(join(dir, 'verdicts', records(dir)[0])).mode & 0o777).toString(8), '640');
  assert.deepEqual(await q.close(), { onDisk: 45, memoryOnly: 0 });
  const again = await open();
  const seqs = [...again.seqs()];
  assert.deepEqual(
    seqs,
    [...Array(50).keys()].map((i) => i + 1).filter((s) => ![1, 2, 3, 10, 50].includes(s)),
  );
  const r = await again.read(4);
  assert.equal(r?.frameId, 'f/4');
  assert.equal(r?.payload.toString(), '{"frame":4}');
  assert.equal(again.push('f/new', '{}'), 50, 'numbering goes on after the highest sequence left');
  await again.close();
});

test('verdict queue: ENOSPC mid-run keeps verdicts in memory with storeError set, logged once; recovery writes them and clears it', async () => {
  const dir = tmp('enospc');
  const { fs, fail } = faultyFs();
  const { logs, open } = opener(dir, { fs, retryMs: 50 });
  const q = await open();
  for (let i = 0; i < 10; i++) q.push(`ok/${i}`, 'x'.repeat(100));
  await settle(q, 10);
  fail.write = 'ENOSPC';
  for (let i = 0; i < 20; i++) q.push(`full/${i}`, 'y'.repeat(100));
  await waitFor('storeError', () => q.storeError);
  await sleep(100);
  assert.match(q.storeError!, /ENOSPC.*kept in memory only/);
  assert.deepEqual({ depth: q.depth, onDisk: q.stats.onDisk, memoryOnly: q.stats.memoryOnly }, { depth: 30, onDisk: 10, memoryOnly: 20 });
  assert.equal((await q.read(15))?.frameId, 'full/4', 'a memory-only verdict can still be published');
  assert.equal(logs.filter((l) => /ENOSPC/.test(l)).length, 1, `one log line per state change: ${logs.join('\n')}`);
  assert.equal(records(dir).length, 10);
  q.ack(11);
  fail.write = undefined;
  // No new verdict: the retry timer alone must find that the disk has room again.
  await waitFor('recovery', () => q.storeError === null && q.stats.onDisk === 29, 5000, 10);
  assert.ok(
    logs.some((l) => /writable again: writing the \d+ verdict/.test(l)),
    logs.join('\n'),
  );
  assert.deepEqual(await q.close(), { onDisk: 29, memoryOnly: 0 });
  const again = await open();
  assert.equal(again.depth, 29);
  assert.deepEqual((await again.read(12))?.frameId, 'full/1');
  await again.close();
});

test('verdict queue: recovery is noticed on a write whose verdict the broker acknowledged before the write ended', async () => {
  const { fs, fail } = faultyFs();
  const q = await opener(tmp('fast-ack'), { fs }).open();
  fail.write = 'EIO';
  q.ack(q.push('f/1', '{}'));
  await waitFor('storeError', () => q.storeError);
  assert.match(q.storeError!, /EIO/);
  fail.write = undefined;
  q.ack(q.push('f/2', '{}'));
  await waitFor('storeError cleared', () => q.storeError === null, 2000, 10);
  assert.deepEqual(await q.close(), { onDisk: 0, memoryOnly: 0 });
});

test('verdict queue: EROFS at open leaves a memory-only queue that still queues, reads and acknowledges', async () => {
  const dir = tmp('erofs');
  const { fs, fail } = faultyFs();
  fail.mkdir = 'EROFS';
  const { logs, open } = opener(dir, { fs });
  const q = await open();
  assert.equal(q.isPersistent, false);
  assert.match(q.storeError!, /EROFS.*memory only/);
  assert.ok(logs.some((l) => /^error verdict store unusable/.test(l)));
  const seq = q.push('f/1', '{}');
  assert.equal((await q.read(seq))?.frameId, 'f/1');
  q.ack(seq);
  assert.equal(q.depth, 0);
  q.push('f/2', '{}');
  assert.deepEqual(await q.close(), { onDisk: 0, memoryOnly: 1 });
});

test('verdict queue: a store that cannot be opened at boot is retried; when it opens, the old records and the memory ones are all kept, in order', async () => {
  const dir = tmp('boot-retry');
  const first = await opener(dir).open();
  first.push('old/1', '{"n":1}');
  await settle(first, 1);
  await first.close();
  const { fs, fail } = faultyFs();
  fail.mkdir = 'ENOSPC';
  const { logs, open } = opener(dir, { fs, retryMs: 50 });
  const q = await open();
  assert.match(q.storeError!, /ENOSPC.*memory only.*retrying/);
  const a = q.push('new/1', '{}');
  const b = q.push('new/2', '{}');
  assert.ok(a > 1e15 && b === a + 1, 'memory verdicts are numbered above anything on disk');
  await sleep(200);
  assert.equal(logs.filter((l) => /unusable/.test(l)).length, 1, 'the same problem is logged once, not on every retry');
  fail.mkdir = undefined;
  await waitFor('store usable', () => q.storeError === null && q.stats.onDisk === 3, 3000, 20);
  assert.deepEqual(
    [...q.seqs()].sort((x, y) => x - y),
    [1, a, b],
  );
  assert.ok(logs.some((l) => /usable now/.test(l)));
  await q.close();
  const again = await opener(dir).open();
  assert.equal(again.depth, 3, 'all three survive a restart');
  await again.close();
});

test('verdict queue: planted FIFOs, devices and out-of-range numbers in the store are moved aside without blocking start-up', { timeout: 20_000 }, async () => {
  const dir = tmp('planted');
  const q = await opener(dir).open();
  q.push('f/1', '{}');
  await settle(q, 1);
  await q.close();
  const v = join(dir, 'verdicts');
  execFileSync('mkfifo', [join(v, '0000000000000005.v')]);
  symlinkSync('/dev/zero', join(v, '0000000000000006.v'));
  writeFileSync(join(v, '9999999999999998.v'), encodeRecord(9999999999999998, 'f/big', Buffer.from('{}')));
  const t0 = Date.now();
  const again = await opener(dir).open();
  assert.ok(Date.now() - t0 < 5000, 'start-up did not block');
  assert.deepEqual([...again.seqs()], [1]);
  assert.equal(again.stats.corrupt, 3);
  assert.equal(again.push('f/2', '{}'), 7, 'numbering continues after the highest in-range record, damaged ones included, never from a planted huge number');
  await again.close();
});

test('verdict queue: damaged records and unknown files are moved to corrupt/ with a warning, stale temp files deleted', async () => {
  const dir = tmp('corrupt');
  const { logs, open } = opener(dir);
  const q = await open();
  for (let i = 1; i <= 5; i++) q.push(`f/${i}`, `{"n":${i}}`);
  await settle(q, 5);
  await q.close();
  const v = join(dir, 'verdicts');
  const rec3 = join(v, '0000000000000003.v');
  const bytes = readFileSync(rec3);
  bytes[30] ^= 0xff;
  writeFileSync(rec3, bytes);
  writeFileSync(join(v, '0000000000000004.v'), readFileSync(join(v, '0000000000000004.v')).subarray(0, 20));
  writeFileSync(join(v, 'notes.txt'), 'garbage');
  writeFileSync(join(v, '0000000000000009.v'), encodeRecord(8, 'renamed', Buffer.from('{}')));
  writeFileSync(join(v, '0000000000000006.v.tmp'), 'half a record');
  // A complete temp record is a verdict whose rename was cut off (kill, power cut): it is kept.
  writeFileSync(join(v, '0000000000000007.v.tmp'), encodeRecord(7, 'f/7', Buffer.from('{"n":7}')));
  const again = await open();
  assert.deepEqual([...again.seqs()], [1, 2, 5, 7]);
  assert.equal((await again.read(7))?.frameId, 'f/7');
  assert.equal(again.stats.corrupt, 4);
  const moved = readdirSync(join(dir, 'corrupt'));
  assert.equal(moved.length, 4, moved.join());
  for (const n of ['0000000000000003.v', '0000000000000004.v', 'notes.txt', '0000000000000009.v'])
    assert.ok(
      moved.some((m) => m.endsWith(n)),
      `${n} moved aside`,
    );
  assert.ok(!existsSync(join(v, '0000000000000006.v.tmp')), 'stale temp file deleted');
  const warn = logs.find((l) => /damaged or unknown/.test(l)) ?? '';
  assert.match(warn, /^warn .*4 damaged or unknown file\(s\) NOT sent, 4 moved to .*corrupt.*checksum mismatch/);
  assert.equal(again.push('f/next', '{}'), 10, 'never reuses the sequence of a damaged record');
  assert.ok(!existsSync(join(v, '0000000000000007.v.tmp')) && existsSync(join(v, '0000000000000007.v')), 'recovered temp record renamed into place');
  await again.close();
});

test('verdict queue: a lock held by a live process is a clear error naming its pid; a stale lock is taken over', async () => {
  const dir = tmp('lock');
  writeFileSync(join(dir, 'lock'), `${process.ppid}\nother-host\n`);
  const { logs, open } = opener(dir);
  const locked = await open();
  assert.equal(locked.isPersistent, false);
  assert.match(locked.storeError!, new RegExp(`in use by another process \\(pid ${process.ppid}, .*second hiercore-edge`));
  locked.push('f/1', '{}');
  assert.deepEqual(await locked.close(), { onDisk: 0, memoryOnly: 1 });
  assert.equal(readFileSync(join(dir, 'lock'), 'utf8').split('\n')[0], String(process.ppid), "the other process's lock is left alone");

  const stale = await open({ pidAlive: () => false });
  assert.equal(stale.isPersistent, true);
  assert.ok(logs.some((l) => new RegExp(`taking over the stale lock of pid ${process.ppid}`).test(l)));
  assert.equal(readFileSync(join(dir, 'lock'), 'utf8').split('\n')[0], String(process.pid));
  const second = await open();
  assert.match(second.storeError!, new RegExp(`pid ${process.pid}`), 'a second queue on the same directory in this process is refused too');
  await second.close();
  await stale.close();
  assert.ok(!existsSync(join(dir, 'lock')), 'close releases the lock');
});

test('verdict queue: the count and byte bounds drop the oldest, count them and log at a limited rate', async () => {
  const dir = tmp('bounds');
  const { logs, open } = opener(dir);
  const q = await open({ maxCount: 10 });
  for (let i = 1; i <= 25; i++) q.push(`f/${i}`, '{}');
  assert.deepEqual([...q.seqs()], [16, 17, 18, 19, 20, 21, 22, 23, 24, 25]);
  assert.equal(q.dropped, 15);
  await waitFor('files of dropped records deleted', () => records(dir).length === 10);
  assert.equal(records(dir)[0], '0000000000000016.v');
  await q.close();
  const drops = logs.filter((l) => /queue full/.test(l));
  assert.equal(drops.length, 2, `the first drop at once, the rest in one summary: ${drops.join('\n')}`);
  assert.match(drops[1], /dropped the 14 oldest unacknowledged verdict\(s\), 15 since start/);

  const size = encodeRecord(1, 'f/00', Buffer.alloc(100)).length;
  const b = await VerdictQueue.open({ dir: tmp('bytes'), maxCount: 1000, maxBytes: 5 * size, log: () => {} });
  for (let i = 10; i < 30; i++) b.push(`f/${i}`, Buffer.alloc(100));
  assert.deepEqual({ depth: b.depth, bytes: b.bytes, dropped: b.dropped }, { depth: 5, bytes: 5 * size, dropped: 15 });
  assert.equal((await b.read(20))?.frameId, 'f/29');
  await b.close();
});

// ---- the publisher against a real broker ----

function settings(o: Partial<MqttSettings>): MqttSettings {
  return publisherSettings({ url: '', station: 'vq', store_dir: join(tmp('store'), 'store'), ...o });
}

function publisher(o: Partial<MqttSettings>) {
  const logs: string[] = [];
  const p = new MqttPublisher(settings(o), { log: (l, m) => logs.push(`${l} ${m}`), trigger: () => {}, command: async () => null, connection: () => {} });
  return { p, logs };
}

/** A persistent MQTT 3.1.1 session subscribed to the verdicts: the broker keeps them for it while it is away. */
async function verdictSubscriber(url: string, id: string) {
  const frames: string[] = [];
  const c = await mqtt.connectAsync(url, { clientId: id, clean: false, protocolVersion: 4, reconnectPeriod: 200 });
  c.on('message', (_t, payload) => frames.push((JSON.parse(payload.toString()) as { frame_id: string }).frame_id));
  await c.subscribeAsync('hce/vq/verdict', { qos: 1 });
  return { c, frames, unique: () => new Set(frames).size };
}

test('publisher: broker down at boot — start() resolves, verdicts queue on disk, all arrive once the broker comes', { skip: NO_MOSQUITTO, timeout: 40_000 }, async () => {
  const broker = new Mosquitto(tmp('broker-late'), await freePort(), 'max_queued_messages 0');
  await broker.start();
  const sub = await verdictSubscriber(broker.url, 'sub-late');
  await sub.c.endAsync();
  await broker.stop();
  const { p, logs } = publisher({ url: broker.url });
  const t0 = Date.now();
  await p.start();
  assert.ok(Date.now() - t0 < 2000, 'start() does not wait for the broker');
  await assert.rejects(p.waitConnected(1200), /not reachable within 1.2 s.*ECONNREFUSED/);
  for (let i = 0; i < 600; i++) p.publishVerdict(JSON.stringify({ frame_id: `r/${i}` }), `r/${i}`);
  assert.equal(p.queue.depth, 600);
  assert.equal(p.queue.inflight, 0);
  try {
    await broker.start();
    await p.waitConnected(10_000);
    const again = await verdictSubscriber(broker.url, 'sub-late');
    await waitFor('all verdicts', () => again.unique() === 600 && p.queue.depth === 0, 20_000);
    assert.equal(logs.filter((l) => /ECONNREFUSED/.test(l)).length, 1, 'the reconnect loop does not log every second');
    const left = await p.stop(2000);
    assert.deepEqual(left, { onDisk: 0, memoryOnly: 0 });
    assert.deepEqual(readdirSync(join(p['s'].store_dir, 'verdicts')), [], 'acknowledged verdicts left the disk');
    await again.c.endAsync();
  } finally {
    await p.stop(100);
    await broker.stop();
  }
});

test('publisher: message ids are reused all the time but never by two unacknowledged verdicts; order is by sequence', { skip: NO_MOSQUITTO, timeout: 40_000 }, async () => {
  const broker = new Mosquitto(tmp('broker-ids'), await freePort(), 'max_queued_messages 0\nmax_inflight_messages 0');
  await broker.start();
  const sub = await verdictSubscriber(broker.url, 'sub-ids');
  const { p } = publisher({ url: broker.url });
  try {
    await p.start();
    await p.waitConnected(5000);
    const client = p['client'];
    const open = new Set<number>();
    let collisions = 0;
    let peak = 0;
    const uses = new Map<number, number>();
    client.on('packetsend', (pk) => {
      if (pk.cmd !== 'publish' || pk.topic !== 'hce/vq/verdict') return;
      const id = pk.messageId!;
      if (open.has(id)) collisions++;
      open.add(id);
      peak = Math.max(peak, open.size);
      uses.set(id, (uses.get(id) ?? 0) + 1);
    });
    client.on('packetreceive', (pk) => pk.cmd === 'puback' && open.delete(pk.messageId!));
    const n = 4000;
    for (let i = 0; i < n; i++) p.publishVerdict(JSON.stringify({ frame_id: `i/${i}` }), `i/${i}`);
    await waitFor('all verdicts', () => sub.unique() === n && p.queue.depth === 0, 30_000);
    assert.equal(collisions, 0);
    assert.ok(peak <= VERDICT_WINDOW, `at most ${VERDICT_WINDOW} in flight (saw ${peak})`);
    assert.ok(Math.max(...uses.values()) >= 10, 'ids were reused many times over: the scale of the 65,535 wrap, compressed');
    const firsts = [...new Map(sub.frames.map((f) => [f, Number(f.split('/')[1])])).values()];
    assert.deepEqual(
      firsts,
      [...firsts].sort((a, b) => a - b),
      'delivered in queue order',
    );
  } finally {
    await p.stop(500);
    await sub.c.endAsync();
    await broker.stop();
  }
});

test('publisher: stop() returns within its timeout with the broker dead, silent, or frozen mid-flight', { skip: NO_MOSQUITTO, timeout: 40_000 }, async () => {
  const timed = async (p: MqttPublisher, ms: number) => {
    const t0 = Date.now();
    const left = await p.stop(ms);
    return { left, took: Date.now() - t0 };
  };
  const dead = publisher({ url: `mqtt://127.0.0.1:${await freePort()}` });
  await dead.p.start();
  for (let i = 0; i < 20; i++) dead.p.publishVerdict('{}', `d/${i}`);
  await sleep(200);
  const d = await timed(dead.p, 500);
  assert.deepEqual(d.left, { onDisk: 20, memoryOnly: 0 });
  assert.ok(d.took < 2000, `dead broker: ${d.took} ms`);

  const silent: Server = createServer(() => {}).listen(0, '127.0.0.1');
  await new Promise((r) => silent.once('listening', r));
  const quiet = publisher({ url: `mqtt://127.0.0.1:${(silent.address() as { port: number }).port}` });
  await quiet.p.start();
  quiet.p.publishVerdict('{}', 'q/1');
  const q = await timed(quiet.p, 500);
  assert.ok(q.took < 2000, `broker accepting TCP but never answering: ${q.took} ms`);
  silent.close();

  // mosquitto's max_inflight_messages is the receive maximum of its CONNACK: the window must honour it.
  const broker = new Mosquitto(tmp('broker-frozen'), await freePort(), 'max_inflight_messages 25');
  await broker.start();
  const frozen = publisher({ url: broker.url });
  await frozen.p.start();
  await frozen.p.waitConnected(5000);
  const proc = (broker as unknown as { proc: { kill: (s: string) => void } }).proc;
  proc.kill('SIGSTOP');
  try {
    for (let i = 0; i < 30; i++) frozen.p.publishVerdict('{}', `z/${i}`);
    await sleep(100);
    assert.deepEqual({ inflight: frozen.p.queue.inflight, depth: frozen.p.queue.depth }, { inflight: 25, depth: 30 });
    const f = await timed(frozen.p, 800);
    assert.deepEqual(f.left, { onDisk: 30, memoryOnly: 0 });
    assert.ok(f.took < 800 + 1700, `frozen broker: ${f.took} ms`);
    assert.ok(frozen.p['client'].stream.destroyed, 'the socket is closed, not left half-open to a broker that never answers');
  } finally {
    proc.kill('SIGCONT');
    await broker.stop();
  }
});

/** Just enough of an MQTT 5 broker to accept a CONNECT and then say "session taken over" (0x8E). */
async function takeoverBroker(): Promise<Server> {
  const server = createServer((sock) => {
    sock.once('data', () => {
      sock.write(Buffer.from([0x20, 0x03, 0x00, 0x00, 0x00]));
      setTimeout(() => sock.end(Buffer.from([0xe0, 0x02, 0x8e, 0x00])), 100);
    });
    sock.on('error', () => {});
  }).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  return server;
}

test('publisher: a second client with the same configured client_id is named in the log; default ids differ per instance', { skip: NO_MOSQUITTO, timeout: 40_000 }, async () => {
  const a = publisher({}).p;
  const b = publisher({}).p;
  assert.match(a.clientId, /^hiercore-edge-vq-[0-9a-f]{8}$/);
  assert.notEqual(a.clientId, b.clientId);

  const fake = await takeoverBroker();
  const taken = publisher({ url: `mqtt://127.0.0.1:${(fake.address() as { port: number }).port}`, client_id: 'line3-cam1' });
  await taken.p.start();
  await waitFor('MQTT 5 takeover logged', () => taken.logs.find((l) => /^error MQTT session taken over: another client .* same client id "line3-cam1".*two daemons/.test(l)), 10_000);
  await taken.p.stop(100);
  fake.close();

  // mosquitto 2.0 closes the old connection without a DISCONNECT: the pattern of short sessions has to tell.
  const broker = new Mosquitto(tmp('broker-twins'), await freePort());
  await broker.start();
  const twins = [5, 5, 4, 4].map((v, i) => publisher({ url: broker.url, client_id: `line3-cam1-v${v}`, protocol_version: v as 4 | 5, store_dir: join(tmp(`twin${i}`), 's') }));
  try {
    await Promise.all(twins.map((t) => t.p.start()));
    for (const v of [5, 4]) {
      const logs = () => twins.flatMap((t) => t.logs);
      await waitFor(
        `MQTT ${v} flapping logged`,
        () => logs().find((l) => new RegExp(`closed the connection \\d+ times in a minute right after accepting it: another client with the same client id "line3-cam1-v${v}"`).test(l)),
        20_000,
      );
    }
  } finally {
    await Promise.all(twins.map((t) => t.p.stop(100)));
    await broker.stop();
  }
});
