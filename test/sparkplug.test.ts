/**
 * Sparkplug B conformance of the station's Edge Node against a real mosquitto: every message is
 * decoded with the .proto and checked against the rule it must follow, named by the specification's
 * requirement id (Eclipse Sparkplug 3.0).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { tempDir } from './helpers/synthetic.ts';
import { Mosquitto, freePort, waitFor, which } from './helpers/services.ts';
import { SparkplugNode, METRIC, BDSEQ_FILE, type SparkplugOptions, type SparkplugCommand, type CommandMeta } from '../src/publish/sparkplug/index.ts';
import { decodePayload, encodePayload, DataType, type InPayload, type InMetric } from '../src/publish/sparkplug/codec.ts';

const skip = which('mosquitto') ? false : 'mosquitto not installed';
const GROUP = 'Plant1';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let broker: Mosquitto;
let host: Host;

interface Msg {
  topic: string;
  type: string;
  qos: number;
  retain: boolean;
  p: InPayload;
}

/** A host-side observer: MQTT 5 with retain-as-published, so the retain flag seen is the one sent. */
class Host {
  readonly msgs: Msg[] = [];
  readonly client: MqttClient;
  private subscribed = false;
  constructor(url: string) {
    this.client = mqtt.connect(url, { protocolVersion: 5, clientId: `host-${process.pid}`, reconnectPeriod: 100, clean: true, resubscribe: false });
    this.client.on('connect', () => this.client.subscribe('spBv1.0/#', { qos: 2, rap: true }, (e) => (this.subscribed = !e)));
    this.client.on('close', () => (this.subscribed = false));
    this.client.on('message', (topic, payload, packet) => {
      const [, group, type] = topic.split('/');
      if (group === 'STATE' || type === 'NCMD' || type === 'DCMD') return;
      this.msgs.push({ topic, type, qos: packet.qos, retain: packet.retain, p: decodePayload(payload) });
    });
  }
  ready(): Promise<boolean> {
    return waitFor('host observer subscribed', () => this.client.connected && this.subscribed);
  }
  of(node: string, type?: string): Msg[] {
    return this.msgs.filter((m) => m.topic.split('/')[3] === node && (!type || m.type === type));
  }
  wait(what: string, node: string, pred: (ms: Msg[]) => boolean, timeoutMs = 10_000): Promise<Msg[]> {
    return waitFor(what, () => (pred(this.of(node)) ? this.of(node) : null), timeoutMs);
  }
  publish(topic: string, payload: Uint8Array | string, opts: { qos?: 0 | 1; retain?: boolean; properties?: Record<string, unknown> } = {}): Promise<void> {
    return new Promise((r, j) => this.client.publish(topic, Buffer.from(payload), { qos: opts.qos ?? 1, retain: opts.retain ?? false, properties: opts.properties }, (e) => (e ? j(e) : r())));
  }
  end(): Promise<void> {
    return new Promise((r) => this.client.end(true, {}, () => r()));
  }
}

function options(node: string, over: Partial<SparkplugOptions> = {}): SparkplugOptions {
  return {
    url: broker.url,
    protocol_version: 5,
    client_id: '',
    username: '',
    password: '',
    ca: '',
    cert: '',
    key: '',
    reject_unauthorized: true,
    keepalive_s: 30,
    group_id: GROUP,
    node_id: node,
    device_id: 'camera',
    host_id: '',
    period_s: 0,
    state_dir: tempDir(`spb-${node}`),
    reconnect_min_ms: 400,
    reconnect_max_ms: 1000,
    ...over,
  };
}

interface Calls {
  calls: { name: SparkplugCommand; args: Record<string, unknown>; meta: CommandMeta }[];
  logs: string[];
}
function startNode(o: SparkplugOptions, command?: (name: SparkplugCommand) => Promise<unknown>): SparkplugNode & Calls {
  const calls: Calls['calls'] = [];
  const log: string[] = [];
  const n = new SparkplugNode(
    o,
    {
      command: async (name, args, meta) => {
        calls.push({ name, args, meta });
        return command ? command(name) : {};
      },
    },
    (level, msg) => log.push(`${level} ${msg}`),
  );
  return Object.assign(n, { calls, logs: log });
}

const bdSeqOf = (m: Msg) => metric(m, METRIC.bdSeq).value;
function metric(m: Msg, name: string): InMetric {
  const x = m.p.metrics.find((mm) => mm.name === name);
  assert.ok(x, `${m.type} has metric ${name}`);
  return x;
}
/** Index of the first message of `type` at or after `from` */
const idx = (ms: Msg[], type: string, from = 0) => ms.findIndex((m, i) => i >= from && m.type === type);

/** Each NDEATH carries the bdSeq of the NBIRTH before it: what a host uses to pair them. */
function assertDeathsPair(ms: Msg[]): number[] {
  let born: unknown;
  const deaths: number[] = [];
  for (const m of ms) {
    if (m.type === 'NBIRTH') born = bdSeqOf(m);
    if (m.type !== 'NDEATH') continue;
    assert.equal(bdSeqOf(m), born, `NDEATH #${deaths.length} pairs with the NBIRTH before it`);
    deaths.push(bdSeqOf(m) as number);
  }
  return deaths;
}

async function restartBroker(): Promise<void> {
  await broker.stop();
  await broker.start();
  await host.ready();
}

before(async () => {
  if (skip) return;
  const dir = tempDir('spb-broker');
  // log_type all: the broker's log shows the QoS of each subscription and the clean-start flag
  broker = new Mosquitto(dir, await freePort(), 'log_type all');
  await broker.start();
  host = new Host(broker.url);
  await host.ready();
});

after(async () => {
  if (skip) return;
  await host.end();
  await broker.stop();
});

test('birth: NBIRTH (seq 0, bdSeq Int64, Rebirth false without alias) before DBIRTH; every metric named, aliased, typed, timestamped; QoS 0, not retained [tck-id-topics-nbirth-seq-num] [tck-id-topics-nbirth-bdseq-included] [tck-id-topics-nbirth-rebirth-metric] [tck-id-operational-behavior-data-commands-rebirth-name-aliases] [tck-id-payloads-alias-birth-requirement] [tck-id-payloads-alias-uniqueness] [tck-id-payloads-name-birth-data-requirement] [tck-id-payloads-metric-datatype-req] [tck-id-message-flow-device-birth-publish-nbirth-wait] [tck-id-payloads-nbirth-qos] [tck-id-payloads-nbirth-retain] [tck-id-payloads-dbirth-qos] [tck-id-payloads-dbirth-retain] [tck-id-topics-dbirth-seq] [tck-id-operational-behavior-data-publish-nbirth-values]', {
  skip,
}, async () => {
  const t0 = Date.now();
  const n = startNode(options('birth'));
  await n.start();
  const ms = await host.wait('NBIRTH and DBIRTH', 'birth', (ms) => idx(ms, 'DBIRTH') >= 0);
  assert.deepEqual(
    ms.map((m) => m.type),
    ['NBIRTH', 'DBIRTH'],
    'NBIRTH first, then DBIRTH, nothing else',
  );
  const [nb, db] = ms;
  assert.equal(nb.topic, `spBv1.0/${GROUP}/NBIRTH/birth`, '[tck-id-topics-nbirth-topic]');
  assert.equal(db.topic, `spBv1.0/${GROUP}/DBIRTH/birth/camera`, '[tck-id-topics-dbirth-topic]');
  for (const m of ms) {
    assert.equal(m.qos, 0);
    assert.equal(m.retain, false);
    assert.ok(m.p.timestamp! >= t0 - 1000 && m.p.timestamp! <= Date.now() + 1000, `${m.type} payload timestamp is now (UTC ms) [tck-id-payloads-nbirth-timestamp]`);
  }
  assert.equal(nb.p.seq, 0);
  assert.equal(db.p.seq, 1, 'DBIRTH seq = NBIRTH seq + 1');
  const bd = metric(nb, METRIC.bdSeq);
  assert.equal(bd.datatype, DataType.Int64);
  assert.equal(bd.value, 0, 'a first start begins at bdSeq 0 [tck-id-topics-nbirth-bdseq-increment]');
  const rb = metric(nb, METRIC.rebirth);
  assert.equal(rb.datatype, DataType.Boolean);
  assert.equal(rb.value, false);
  assert.equal(rb.alias, undefined, 'Node Control/Rebirth carries no alias');
  const all = [...nb.p.metrics, ...db.p.metrics];
  for (const m of all) {
    assert.ok(m.name, 'name in birth');
    assert.ok(typeof m.datatype === 'number' && m.datatype > 0, `${m.name}: datatype`);
    assert.ok(typeof m.timestamp === 'number' && m.timestamp > 0, `${m.name}: timestamp`);
    if (m.name !== METRIC.rebirth) assert.ok(typeof m.alias === 'number', `${m.name}: alias`);
    assert.ok(m.isNull !== (m.field !== undefined), `${m.name}: a value or is_null, never both or neither`);
  }
  const aliases = all.flatMap((m) => (m.alias === undefined ? [] : [m.alias]));
  assert.equal(new Set(aliases).size, aliases.length, 'aliases unique across the Edge Node (node and device metrics)');
  const lower = all.map((m) => m.name!.toLowerCase());
  assert.equal(new Set(lower).size, lower.length, 'no two names equal when lower-cased [tck-id-case-sensitivity-metric-names]');
  const names = new Set(db.p.metrics.map((m) => m.name));
  for (const want of [
    'Verdicts/OK',
    'Verdicts/NG',
    'Verdicts/UNKNOWN',
    'Verdicts/NO_FRAME',
    METRIC.lastVerdict,
    METRIC.lastScore,
    METRIC.lastNormalised,
    METRIC.lastCluster,
    METRIC.lastFrameId,
    METRIC.cameraState,
    'Latency/p95 ms',
    METRIC.bundleId,
    METRIC.bundleVersion,
    METRIC.ctlReload,
  ])
    assert.ok(names.has(want), `DBIRTH has ${want}`);
  assert.equal(metric(db, METRIC.lastFrameId).datatype, DataType.String, 'frame id is a String');
  assert.equal(metric(db, METRIC.lastVerdict).isNull, true, 'no part yet: is_null');
  await n.stop();
});

test('DATA: only changed metrics, by alias without name or datatype, each timestamped; seq one more each message; nothing when nothing changed; a new metric (cluster) means a new birth [tck-id-payloads-alias-data-cmd-requirement] [tck-id-topics-ndata-seq-num] [tck-id-topics-ddata-seq-num] [tck-id-topics-ddata-payload] [tck-id-topics-ndata-payload] [tck-id-payloads-ndata-qos] [tck-id-payloads-ddata-qos] [tck-id-payloads-ddata-order] [tck-id-operational-behavior-data-publish-dbirth-change] [tck-id-topics-dbirth-metric-reqs]', {
  skip,
}, async () => {
  const n = startNode(options('data'));
  await n.start();
  let ms = await host.wait('births', 'data', (ms) => idx(ms, 'DBIRTH') >= 0);
  const alias = new Map<number, string>([...ms[0].p.metrics, ...ms[1].p.metrics].filter((m) => m.alias !== undefined).map((m) => [m.alias!, m.name!]));
  const at = Date.now() - 5000;
  const update = { verdicts: { OK: 1 }, queue_depth: 3, last: { verdict: 'OK' as const, score: 1.25, normalised_score: 0.4, cluster: 'cluster-0', frame_id: 'run-1/17', part_id: 'P-1', at } };
  n.update(update);
  ms = await host.wait('NDATA and DDATA', 'data', (ms) => ms.length >= 4);
  const [nd, dd] = [ms[2], ms[3]];
  assert.equal(nd.type, 'NDATA');
  assert.equal(dd.type, 'DDATA');
  assert.equal(dd.topic, `spBv1.0/${GROUP}/DDATA/data/camera`);
  assert.deepEqual(
    ms.map((m) => m.p.seq),
    [0, 1, 2, 3],
  );
  for (const m of [nd, dd]) {
    assert.equal(m.qos, 0);
    assert.equal(m.retain, false);
    for (const x of m.p.metrics) {
      assert.equal(x.name, undefined, 'DATA carries no metric name');
      assert.equal(x.datatype, undefined, 'DATA carries no datatype');
      assert.ok(alias.has(x.alias!), `alias ${x.alias} was born`);
      assert.ok(typeof x.timestamp === 'number');
    }
  }
  assert.deepEqual(
    nd.p.metrics.map((x) => alias.get(x.alias!)),
    [METRIC.queueDepth],
  );
  const changed = new Map(dd.p.metrics.map((x) => [alias.get(x.alias!), x]));
  assert.deepEqual(
    [...changed.keys()].sort(),
    ['Last Part/Cluster', 'Last Part/Frame Id', 'Last Part/Normalised Score', 'Last Part/Part Id', 'Last Part/Score', 'Last Part/Verdict', 'Verdicts/OK'].sort(),
  );
  assert.equal(changed.get(METRIC.lastFrameId)!.value, 'run-1/17');
  assert.equal(changed.get(METRIC.lastScore)!.value, 1.25);
  assert.equal(changed.get(METRIC.lastVerdict)!.timestamp, at, 'last-part metrics carry the verdict time');
  n.update(update);
  await sleep(400);
  assert.equal(host.of('data').length, 4, 'unchanged values are not resent');
  n.update({ last: { ...update.last, score: null, frame_id: 'run-1/18', verdict: 'UNKNOWN', cluster: null } });
  ms = await host.wait('DDATA with a null', 'data', (ms) => ms.length >= 5);
  const nul = ms[4].p.metrics.find((x) => alias.get(x.alias!) === METRIC.lastScore)!;
  assert.equal(nul.isNull, true, 'a null value is is_null, without a value');
  assert.equal(nul.field, undefined);
  n.update({ clusters: { 'cluster-0': { OK: 1, NG: 0 }, 'a/b': { OK: 0, NG: 2 } } });
  ms = await host.wait('rebirth for new metrics', 'data', (ms) => idx(ms, 'DBIRTH', 5) >= 0);
  const nb2 = ms[idx(ms, 'NBIRTH', 5)];
  assert.equal(nb2.p.seq, 0);
  assert.equal(bdSeqOf(nb2), bdSeqOf(ms[0]), 'same session, same bdSeq');
  const db2 = ms[idx(ms, 'DBIRTH', 5)];
  assert.equal(metric(db2, 'Clusters/cluster-0/OK').value, 1);
  assert.equal(metric(db2, 'Clusters/a_b/NG').value, 2, 'a "/" in a cluster name does not add a tag level');
  assert.equal(metric(db2, METRIC.lastFrameId).alias, [...alias].find(([, v]) => v === METRIC.lastFrameId)![0], 'aliases stay the same across births');
  await n.stop();
});

test('seq runs 0-255 and wraps to 0, one more in every message from the Edge Node [tck-id-payloads-sequence-num-incrementing] [tck-id-payloads-sequence-num-always-included] [tck-id-payloads-ddata-seq-inc]', {
  skip,
}, async () => {
  const n = startNode(options('wrap'));
  await n.start();
  await host.wait('births', 'wrap', (ms) => idx(ms, 'DBIRTH') >= 0);
  for (let i = 1; i <= 300; i++) n.update({ verdicts: { OK: i } });
  const ms = await host.wait('302 messages', 'wrap', (ms) => ms.length >= 302);
  const seqs = ms.map((m) => m.p.seq);
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], (seqs[i - 1]! + 1) % 256, `message ${i}`);
  assert.equal(seqs[256], 0, 'after 255 comes 0');
  assert.ok(seqs.every((s) => typeof s === 'number' && s >= 0 && s <= 255));
  await n.stop();
});

test('bdSeq: +1 on every MQTT CONNECT across three broker restarts and a node restart, NBIRTH = Will; intentional stop sends NDEATH with it; persisted atomically [tck-id-topics-nbirth-bdseq-increment] [tck-id-topics-nbirth-bdseq-matching] [tck-id-payloads-nbirth-bdseq-repeat] [tck-id-payloads-ndeath-bdseq] [tck-id-message-flow-edge-node-birth-publish-will-message-payload-bdSeq] [tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath] [tck-id-payloads-ndeath-will-message-publisher-disconnect-mqtt50]', {
  skip,
}, async () => {
  const o = options('restarts');
  const n = startNode(o);
  await n.start();
  const births = (k: number) => host.wait(`${k} NBIRTHs`, 'restarts', (ms) => ms.filter((m) => m.type === 'NBIRTH').length >= k, 15_000);
  await births(1);
  for (let k = 2; k <= 4; k++) {
    await restartBroker();
    await births(k);
  }
  await n.stop();
  const lastBirth = host.of('restarts').length - 2;
  await host.wait('NDEATH on stop', 'restarts', (ms) => idx(ms, 'NDEATH', lastBirth) >= 0);
  const n2 = startNode(o);
  await n2.start();
  const ms = await births(5);
  assert.deepEqual(ms.filter((m) => m.type === 'NBIRTH').map(bdSeqOf), [0, 1, 2, 3, 4]);
  const deaths = assertDeathsPair(ms);
  assert.equal(deaths.at(-1), 3, "NDEATH of the stopped node carries its last connection's bdSeq");
  assert.equal(JSON.parse(readFileSync(join(o.state_dir, BDSEQ_FILE), 'utf8')).bdSeq, 4);
  await n2.stop();
});

test('bdSeq wraps 255 -> 0 across restarts [tck-id-message-flow-edge-node-birth-publish-will-message-payload-bdSeq]', { skip }, async () => {
  const o = options('bdwrap');
  writeFileSync(join(o.state_dir, BDSEQ_FILE), JSON.stringify({ bdSeq: 254 }));
  for (const want of [255, 0]) {
    const n = startNode(o);
    await n.start();
    const ms = await host.wait(`NBIRTH bdSeq ${want}`, 'bdwrap', (ms) => ms.some((m) => m.type === 'NBIRTH' && bdSeqOf(m) === want));
    await n.stop();
    await host.wait('NDEATH', 'bdwrap', (x) => x.length > ms.length && x.at(-1)!.type === 'NDEATH');
  }
});

test('SIGKILL: the broker delivers the Will of the current connection (bdSeq incremented on each reconnect), NDEATH QoS 1, not retained, bdSeq only, no seq; nothing Sparkplug is retained [tck-id-message-flow-edge-node-birth-publish-will-message-qos] [tck-id-message-flow-edge-node-birth-publish-will-message-will-retained] [tck-id-payloads-ndeath-will-message] [tck-id-topics-ndeath-payload] [tck-id-topics-ndeath-seq] [tck-id-payloads-ndeath-bdseq] [tck-id-message-flow-edge-node-birth-publish-will-message-topic]', {
  skip,
}, async () => {
  const o = options('killed');
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'helpers', 'sparkplug-node.ts'), JSON.stringify(o)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise((r) => child.once('exit', r));
  try {
    const births = (k: number) => host.wait(`${k} NBIRTHs from the child (${out.slice(-300)})`, 'killed', (ms) => ms.filter((m) => m.type === 'NBIRTH').length >= k, 30_000);
    await births(1);
    await restartBroker();
    await births(2);
    await restartBroker();
    await births(3);
    await host.wait('DDATA after the last birth', 'killed', (ms) => ms.at(-1)!.type === 'DDATA');
    const alive = host.of('killed').length;
    child.kill('SIGKILL');
    await exited;
    const ms = await host.wait('NDEATH after SIGKILL', 'killed', (ms) => idx(ms, 'NDEATH', alive) >= 0);
    const d = ms[idx(ms, 'NDEATH', alive)];
    assert.equal(d.topic, `spBv1.0/${GROUP}/NDEATH/killed`);
    assert.equal(d.qos, 1, 'Will QoS 1 (observer subscribed at QoS 2)');
    assert.equal(d.retain, false, 'Will not retained (retain-as-published)');
    assert.equal(d.p.seq, undefined, 'NDEATH has no seq');
    assert.deepEqual(
      d.p.metrics.map((m) => [m.name, m.datatype]),
      [[METRIC.bdSeq, DataType.Int64]],
    );
    const nbirths = ms.filter((m) => m.type === 'NBIRTH').map(bdSeqOf);
    assert.deepEqual(nbirths, [0, 1, 2]);
    assert.equal(bdSeqOf(d), 2, 'the Will registered with the third CONNECT, not the first');
    assertDeathsPair(ms);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
  const late = mqtt.connect(broker.url, { protocolVersion: 5, clientId: `late-${process.pid}` });
  const retained: string[] = [];
  late.on('message', (t, _p, pk) => pk.retain && retained.push(t));
  await new Promise<void>((r) => late.on('connect', () => late.subscribe('spBv1.0/+/+/#', { qos: 1 }, () => r())));
  await sleep(300);
  late.end(true);
  assert.deepEqual(retained, [], 'no Sparkplug message is retained');
});

test('Rebirth: NCMD Node Control/Rebirth=true -> full NBIRTH + DBIRTH with the same bdSeq, seq from 0; NCMD and DCMD subscribed at QoS 1 [tck-id-operational-behavior-data-commands-rebirth-action-1] [tck-id-operational-behavior-data-commands-rebirth-action-2] [tck-id-operational-behavior-data-commands-rebirth-action-3] [tck-id-message-flow-edge-node-ncmd-subscribe] [tck-id-message-flow-device-dcmd-subscribe] [tck-id-message-flow-phid-sparkplug-clean-session-50]', {
  skip,
}, async () => {
  const o = options('rebirth');
  const n = startNode(o);
  await n.start();
  await host.wait('births', 'rebirth', (ms) => idx(ms, 'DBIRTH') >= 0);
  n.update({ verdicts: { NG: 2 } });
  await host.wait('DDATA', 'rebirth', (ms) => ms.length >= 3);
  const ncmd = encodePayload({ timestamp: Date.now(), metrics: [{ name: METRIC.rebirth, timestamp: Date.now(), type: 'Boolean', withDatatype: true, value: true }] });
  await host.publish(`spBv1.0/${GROUP}/NCMD/rebirth`, ncmd, { qos: 0 });
  const ms = await host.wait('rebirth', 'rebirth', (ms) => idx(ms, 'DBIRTH', 3) >= 0);
  assert.deepEqual(
    ms.slice(3).map((m) => m.type),
    ['NBIRTH', 'DBIRTH'],
    'no DATA between the request and the new births',
  );
  assert.equal(ms[3].p.seq, 0);
  assert.equal(ms[4].p.seq, 1);
  assert.equal(bdSeqOf(ms[3]), bdSeqOf(ms[0]), 'same bdSeq: no new MQTT session');
  assert.equal(metric(ms[4], 'Verdicts/NG').value, 2, 'the new DBIRTH has the current values');
  const log = broker.log;
  const id = `hiercore-edge-rebirth-spb`;
  assert.match(log, new RegExp(`New client connected from .* as ${id} \\(p5, c1`), 'clean start');
  assert.match(log, new RegExp(`${id} 1 spBv1\\.0/${GROUP}/NCMD/rebirth\\b`), 'NCMD subscribed at QoS 1');
  assert.match(log, new RegExp(`${id} 1 spBv1\\.0/${GROUP}/DCMD/rebirth/camera\\b`), 'DCMD subscribed at QoS 1');
  await n.stop();
});

test('DCMD: writable Device Control metrics run station commands through the handler; value types checked, bundle by name only, retained ignored; outcome in Device Control/Last Result [tck-id-operational-behavior-data-commands-dcmd-verb] [tck-id-operational-behavior-data-commands-dcmd-metric-value] [tck-id-payloads-alias-data-cmd-requirement]', {
  skip,
}, async () => {
  // a retained DCMD reaches the node as a replay when it subscribes: it must run nothing
  const replay = encodePayload({ timestamp: Date.now(), metrics: [{ name: METRIC.ctlPause, timestamp: Date.now(), type: 'Boolean', withDatatype: true, value: true }] });
  await host.publish(`spBv1.0/${GROUP}/DCMD/dcmd/camera`, replay, { retain: true });
  const n = startNode(options('dcmd'), async (name) => {
    if (name === 'snapshot') throw new Error('no frame within 2000 ms');
    return {};
  });
  await n.start();
  const [, db] = await host.wait('births', 'dcmd', (ms) => idx(ms, 'DBIRTH') >= 0);
  await host.publish(`spBv1.0/${GROUP}/DCMD/dcmd/camera`, '', { retain: true }); // clears the retained one
  const aliasOf = (name: string) => metric(db, name).alias!;
  const resultAlias = aliasOf(METRIC.lastResult);
  const dcmd = (metrics: { alias: number; type: 'Boolean' | 'String'; value: boolean | string }[]) =>
    host.publish(`spBv1.0/${GROUP}/DCMD/dcmd/camera`, encodePayload({ timestamp: Date.now(), metrics: metrics.map((m) => ({ ...m, timestamp: Date.now(), withDatatype: false })) }), {
      qos: 0,
      properties: { userProperties: { token: 't0k' } },
    });
  const results = () => host.of('dcmd', 'DDATA').flatMap((m) => m.p.metrics.filter((x) => x.alias === resultAlias).map((x) => x.value as string));
  const expectResult = (text: string) => waitFor(`Last Result "${text}" (have ${JSON.stringify(results())})`, () => results().includes(text), 5000);

  await dcmd([{ alias: aliasOf(METRIC.ctlPause), type: 'Boolean', value: true }]);
  await expectResult('pause: ok');
  assert.equal(n.calls[0].name, 'pause');
  assert.deepEqual(n.calls[0].meta.user_properties, { token: 't0k' });
  assert.equal(n.calls[0].meta.metric, METRIC.ctlPause);
  await dcmd([{ alias: aliasOf(METRIC.ctlReload), type: 'String', value: 'line3-2026.hcebundle' }]);
  await expectResult('reload: ok');
  assert.deepEqual(n.calls.at(-1)!.args, { bundle: 'line3-2026.hcebundle' });
  await dcmd([{ alias: aliasOf(METRIC.ctlReload), type: 'String', value: '../../etc/passwd' }]);
  await waitFor('reload refused', () => results().some((r) => r.startsWith('reload: refused: bundle must be a file name')), 5000);
  await dcmd([{ alias: aliasOf(METRIC.ctlSnapshot), type: 'Boolean', value: true }]);
  await expectResult('snapshot: failed: no frame within 2000 ms');
  await dcmd([{ alias: aliasOf(METRIC.ctlResume), type: 'String', value: 'yes' }]);
  await waitFor('type refused', () => results().some((r) => r.startsWith('resume: refused: Device Control/Resume takes a Boolean')), 5000);
  const before = n.calls.length;
  await dcmd([{ alias: aliasOf(METRIC.ctlPause), type: 'Boolean', value: false }]);
  await dcmd([{ alias: aliasOf(METRIC.cameraState), type: 'String', value: 'lost' }]);
  await sleep(400);
  assert.equal(n.calls.length, before, 'false, retained and read-only writes run nothing');
  assert.deepEqual(
    n.calls.map((c) => c.name),
    ['pause', 'reload', 'snapshot'],
  );
  assert.ok(
    n.logs.some((l) => l.includes('retained spBv1.0/Plant1/DCMD/dcmd/camera ignored')),
    'the retained replay was seen and ignored',
  );
  await n.stop();
});

test('primary host STATE: no birth until online, an older timestamp ignored, offline -> NDEATH, reconnect and wait again [tck-id-message-flow-edge-node-birth-publish-phid-wait] [tck-id-message-flow-edge-node-birth-publish-phid-wait-id] [tck-id-message-flow-edge-node-birth-publish-phid-wait-online] [tck-id-message-flow-edge-node-birth-publish-phid-wait-timestamp] [tck-id-message-flow-edge-node-birth-publish-phid-offline] [tck-id-operational-behavior-edge-node-termination-host-offline] [tck-id-operational-behavior-edge-node-termination-host-offline-reconnect] [tck-id-operational-behavior-edge-node-termination-host-offline-timestamp] [tck-id-operational-behavior-edge-node-birth-sequence-wait]', {
  skip,
}, async () => {
  const hostId = 'scada-1';
  const state = (online: boolean, timestamp: number, id = hostId) => host.publish(`spBv1.0/STATE/${id}`, JSON.stringify({ online, timestamp }), { retain: true });
  const n = startNode(options('gated', { host_id: hostId }));
  await n.start();
  await waitFor('connected', () => n.connected);
  await state(true, Date.now(), 'other-host');
  await sleep(800);
  assert.equal(host.of('gated').length, 0, 'no birth before the primary host is online (another host id does not count)');
  const t = Date.now();
  await state(true, t);
  let ms = await host.wait('births once online', 'gated', (ms) => idx(ms, 'DBIRTH') >= 0);
  const b0 = bdSeqOf(ms[0]) as number;
  await state(false, t - 1000);
  await sleep(600);
  n.update({ verdicts: { OK: 5 } });
  ms = await host.wait('DDATA still flows', 'gated', (ms) => ms.length >= 3);
  assert.deepEqual(
    ms.map((m) => m.type),
    ['NBIRTH', 'DBIRTH', 'DDATA'],
    'an offline STATE older than the online one is ignored',
  );
  await state(false, t + 1);
  ms = await host.wait('NDEATH on offline', 'gated', (ms) => idx(ms, 'NDEATH') >= 0);
  assert.equal(bdSeqOf(ms[idx(ms, 'NDEATH')]), b0);
  await waitFor('reconnected with the next bdSeq', () => n.connected && n.currentBdSeq === b0 + 1, 10_000);
  await state(true, t - 500);
  await sleep(800);
  assert.equal(idx(host.of('gated'), 'NBIRTH', 1), -1, 'no birth while offline, nor on an online STATE older than the offline one');
  await state(true, t + 2);
  ms = await host.wait('births after online again', 'gated', (ms) => idx(ms, 'NBIRTH', 1) >= 0 && idx(ms, 'DBIRTH', idx(ms, 'NBIRTH', 1)) >= 0);
  assert.equal(bdSeqOf(ms[idx(ms, 'NBIRTH', 1)]), b0 + 1, "the new session's bdSeq");
  assert.match(broker.log, /hiercore-edge-gated-spb 1 spBv1\.0\/STATE\/scada-1\b/, 'STATE subscribed at QoS 1');
  await n.stop();
  await host.publish(`spBv1.0/STATE/${hostId}`, '', { retain: true });
  await host.publish('spBv1.0/STATE/other-host', '', { retain: true });
});

test('MQTT 3.1.1: clean session, NDEATH published before DISCONNECT on stop [tck-id-payloads-ndeath-will-message-publisher-disconnect-mqtt311] [tck-id-message-flow-phid-sparkplug-clean-session-311]', {
  skip,
}, async () => {
  const n = startNode(options('v311', { protocol_version: 4 }));
  await n.start();
  const ms = await host.wait('births', 'v311', (ms) => idx(ms, 'DBIRTH') >= 0);
  await n.stop();
  const d = (await host.wait('NDEATH', 'v311', (x) => idx(x, 'NDEATH') >= 0)).find((m) => m.type === 'NDEATH')!;
  assert.equal(bdSeqOf(d), bdSeqOf(ms[0]));
  assert.match(broker.log, /as hiercore-edge-v311-spb \(p2, c1/);
});

test('options: reserved characters in ids are refused before connecting [tck-id-topic-structure-namespace-valid-edge-node-id] [tck-id-topic-structure-namespace-valid-group-id] [tck-id-topic-structure-namespace-valid-device-id]', {
  skip,
}, async () => {
  await assert.rejects(startNode(options('x', { group_id: 'a/b' })).start(), /sparkplug.group_id "a\/b" contains a reserved character/);
  await assert.rejects(startNode(options('x+', {})).start(), /sparkplug.node_id .* reserved/);
  await assert.rejects(startNode(options('x', { device_id: '#' })).start(), /sparkplug.device_id .* reserved/);
  await assert.rejects(startNode(options('x', { ca: '/nonexistent/ca.pem' })).start(), /mqtt.ca \/nonexistent\/ca.pem/);
});
