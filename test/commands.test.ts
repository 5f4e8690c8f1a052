import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import mqtt from 'mqtt';
import { STATE_CHANGING, authorize, parseCommand, sanitizeRequestId, senderOf, validResponseTopic, type CommandContext, type CommandDecision, type CommandPolicy } from '../src/publish/commands.ts';
import { COMMANDS, PART_ID_MAX, parseTrigger, parseTriggerMessage } from '../src/publish/topics.ts';
import { forLog, hasUnsafeChars } from '../src/publish/text.ts';
import { DaemonConfigError, loadDaemonConfig } from '../src/service/config.ts';
import { MqttPublisher, type MqttSettings, type PublisherEvents } from '../src/publish/mqtt-publisher.ts';
import { tempDir } from './helpers/synthetic.ts';
import { Mosquitto, freePort, waitFor, which } from './helpers/services.ts';

const BASE = 'hiercore/line3-cam1';
const OPEN: CommandPolicy = { control: true, token: '', maxBytes: 65536 };
const ctx = (policy: Partial<CommandPolicy> = {}, protocolVersion: 4 | 5 = 5): CommandContext => ({ base: BASE, policy: { ...OPEN, ...policy }, protocolVersion });
const msg = (name: string, payload: string | Uint8Array = '{}', properties: Record<string, unknown> = {}, retain = false) => ({
  topic: `${BASE}/cmd/${name}`,
  payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
  retain,
  properties,
});
function rejected(d: CommandDecision, re: RegExp): Extract<CommandDecision, { kind: 'reject' }> {
  assert.equal(d.kind, 'reject', JSON.stringify(d));
  const r = d as Extract<CommandDecision, { kind: 'reject' }>;
  assert.match(r.error, re);
  return r;
}

// ---------------------------------------------------------------- unit rules

test('command body: a JSON object of bounded size; empty = {}; anything else is an error response', () => {
  for (const p of ['', '   ', '\n']) assert.deepEqual((parseCommand(msg('get_stats', p), ctx()) as { body: unknown }).body, {});
  assert.deepEqual((parseCommand(msg('get_stats', '{"a":1}'), ctx()) as { body: unknown }).body, { a: 1 });
  rejected(parseCommand(msg('get_stats', 'null'), ctx()), /payload is null, not a JSON object/);
  rejected(parseCommand(msg('get_stats', '[1]'), ctx()), /an array, not a JSON object/);
  rejected(parseCommand(msg('get_stats', '42'), ctx()), /a number, not a JSON object/);
  rejected(parseCommand(msg('get_stats', '"x"'), ctx()), /a string, not a JSON object/);
  rejected(parseCommand(msg('get_stats', 'not json'), ctx()), /not JSON/);
  rejected(parseCommand(msg('get_stats', Buffer.from([0x7b, 0xff, 0x7d])), ctx()), /not valid UTF-8/);
  const big = rejected(parseCommand(msg('get_stats', Buffer.alloc(65537, 0x20)), ctx()), /65537 bytes is too big \(at most 65536, commands.max_bytes\)/);
  assert.equal(big.responseTopic, `${BASE}/cmd/get_stats/response`);
  assert.equal(parseCommand(msg('get_stats', Buffer.alloc(65536, 0x20)), ctx()).kind, 'run', 'exactly max_bytes is accepted');
  rejected(parseCommand(msg('get_stats', '{}'), ctx({ maxBytes: 1 })), /too big/);
});

test('retained commands and triggers are ignored (a retained pause would pause at every start)', () => {
  const d = parseCommand(msg('pause', '{}', {}, true), ctx());
  assert.equal(d.kind, 'ignore');
  assert.match((d as { why: string }).why, /retained command .*mosquitto_pub -r -n/);
  assert.equal(parseCommand(msg('pause', 'null', {}, true), ctx()).kind, 'ignore', 'even when it would otherwise be an error');
  assert.deepEqual(parseTriggerMessage('P-1', { retain: true }).kind, 'ignore');
  assert.equal(parseCommand({ topic: `${BASE}/cmd/pause/extra`, payload: Buffer.from('{}') }, ctx()).kind, 'ignore', 'not exactly <base>/cmd/<name>');
  assert.equal(parseCommand({ topic: 'other/line/cmd/pause', payload: Buffer.from('{}') }, ctx()).kind, 'ignore');
  assert.equal(parseCommand(msg('pa\nuse'), ctx()).kind, 'ignore', 'no response topic is built from a name with control characters');
});

test("response topics: only this station's command space, no wildcards, NUL, empty or overlong; otherwise the default, and the error says why", () => {
  const ok = [`${BASE}/cmd/get_stats/response`, `${BASE}/response/op-7`, `${BASE}/response/scada/42`];
  for (const t of ok) assert.ok(validResponseTopic(BASE, 'get_stats', t), t);
  const bad = [
    '',
    'a/#',
    '#',
    `${BASE}/response/+`,
    `${BASE}/response/#`,
    `${BASE}/verdict`,
    `${BASE}/cmd/pause/response`,
    `${BASE}/response/`,
    `${BASE}/response/a\u0000b`,
    `${BASE}/response/a\nb`,
    `${BASE}/response/${'x'.repeat(600)}`,
    'hiercore/other/response/x',
    `${BASE}/responsex`,
    7,
    null,
    {},
  ];
  for (const t of bad) assert.ok(!validResponseTopic(BASE, 'get_stats', t), JSON.stringify(t));
  const wild = rejected(parseCommand(msg('get_stats', '{"request_id":"r1"}', { responseTopic: 'a/#', correlationData: Buffer.from('c1') }), ctx()), /response topic a\/# contains a wildcard/);
  assert.equal(wild.responseTopic, `${BASE}/cmd/get_stats/response`);
  assert.equal(wild.requestId, 'r1');
  assert.equal(wild.correlationData?.toString(), 'c1');
  rejected(parseCommand(msg('get_stats', '{"request_id":"forged"}', { responseTopic: `${BASE}/verdict` }), ctx()), /outside this station's response space/);
  rejected(parseCommand(msg('get_stats', '{}', { responseTopic: '' }), ctx()), /is empty/);
  const fine = parseCommand(msg('get_stats', '{}', { responseTopic: `${BASE}/response/op-7` }), ctx());
  assert.equal(fine.kind, 'run');
  assert.equal((fine as { responseTopic: string }).responseTopic, `${BASE}/response/op-7`);
  rejected(parseCommand(msg('get_stats', '{}', { correlationData: Buffer.alloc(300) }), ctx()), /correlation data longer than 256 bytes/);
});

test('request_id is echoed only as a short printable string or a finite number', () => {
  assert.deepEqual(sanitizeRequestId('r-1'), { ok: true, id: 'r-1' });
  assert.deepEqual(sanitizeRequestId(17), { ok: true, id: 17 });
  assert.deepEqual(sanitizeRequestId(undefined), { ok: true, id: null });
  assert.deepEqual(sanitizeRequestId('x'.repeat(128)), { ok: true, id: 'x'.repeat(128) });
  for (const v of ['x'.repeat(129), 'a\nb', 'a\u202eb', '\ud800', { a: 1 }, [1], true]) assert.equal(sanitizeRequestId(v).ok, false, JSON.stringify(v));
  const r = rejected(parseCommand(msg('get_stats', JSON.stringify({ request_id: 'x\n<2>CRITICAL' })), ctx()), /request_id contains control characters/);
  assert.equal(r.requestId, null, 'the bad id is not echoed');
  assert.equal((parseCommand(msg('get_stats', '{"request_id": 5}'), ctx()) as { requestId: unknown }).requestId, 5);
});

test('state-changing commands need commands.control, and commands.token as MQTT 5 user property; read-only ones always run', () => {
  assert.deepEqual([...STATE_CHANGING].sort(), ['activate', 'calibrate', 'pause', 'reload', 'resume', 'rollback']);
  for (const n of ['snapshot', 'get_config', 'get_stats']) assert.deepEqual(authorize(n, undefined, { control: false, token: 'x', maxBytes: 1 }, 4), { ok: true });
  const off = authorize('pause', { token: 't' }, { control: false, token: 't', maxBytes: 1 });
  assert.ok(!off.ok && /commands.control is false/.test(off.error));
  assert.deepEqual(authorize('pause', undefined, { control: true, token: '', maxBytes: 1 }), { ok: true });
  const tok: CommandPolicy = { control: true, token: 'line3-secret', maxBytes: 1 };
  assert.deepEqual(authorize('reload', { token: 'line3-secret' }, tok), { ok: true });
  for (const [props, re] of [
    [undefined, /needs the MQTT 5 user property "token"/],
    [{ token: 'wrong' }, /does not match/],
    [{ token: ['line3-secret', 'x'] }, /more than once/],
    [{ token: 7 }, /needs/],
  ] as const) {
    const a = authorize('reload', props, tok);
    assert.ok(!a.ok && re.test(a.error), JSON.stringify(a));
    assert.ok(!a.ok && !a.error.includes('line3-secret'), 'the token is never echoed');
  }
  const v4 = authorize('pause', { token: 'line3-secret' }, tok, 4);
  assert.ok(!v4.ok && /MQTT 3.1.1 cannot carry: impossible/.test(v4.error));
  rejected(parseCommand(msg('pause'), ctx({ control: false })), /disabled here/);
  assert.equal(parseCommand(msg('pause', '{}', { userProperties: { token: 'k' } }), ctx({ token: 'k' })).kind, 'run');
  rejected(parseCommand(msg('selfdestruct'), ctx()), /unknown command "selfdestruct"; commands: reload, snapshot, pause, resume, get_config, get_stats/);
});

test('reload takes a bundle file name, never a path', () => {
  const run = parseCommand(msg('reload', '{"bundle":"line3-2026-12-01.hcebundle"}'), ctx());
  assert.equal(run.kind, 'run');
  assert.deepEqual((run as { body: unknown }).body, { bundle: 'line3-2026-12-01.hcebundle' });
  assert.equal(parseCommand(msg('reload', '{}'), ctx()).kind, 'run', 'no bundle = the configured one');
  for (const b of ['/etc/passwd', '../x.hcebundle', 'a/b', '.hidden', '', 'x'.repeat(129), 'a b', 'a\\b', 42])
    rejected(parseCommand(msg('reload', JSON.stringify({ bundle: b })), ctx()), /bundle file name/);
});

test('sender: user property client_id or sender, cleaned; otherwise "(sender not given)"', () => {
  assert.equal(senderOf({ client_id: 'scada-1' }), 'scada-1');
  assert.equal(senderOf({ sender: 'op\n<2>CRITICAL' }), 'op\\x0a<2>CRITICAL');
  assert.equal(senderOf(undefined), '(sender not given)');
  assert.equal(senderOf({ client_id: '' }), '(sender not given)');
  assert.ok(senderOf({ client_id: 'x'.repeat(1000) }).length < 100);
  assert.equal(forLog('a\u202eb\u0000'), 'a\\u{202e}b\\x00');
});

test('trigger part ids: plain text or {"part_id"}, trimmed, control characters removed, longer than 64 refused (the part is still inspected)', () => {
  assert.equal(parseTrigger('P-123'), 'P-123');
  assert.equal(parseTrigger('{"part_id": 42}'), '42');
  assert.equal(parseTrigger('{}'), null);
  assert.equal(parseTrigger(''), null);
  assert.equal(parseTrigger('  P-1\n<2>CRITICAL  '), 'P-1<2>CRITICAL');
  assert.equal(parseTrigger('{"part_id": " P-9\\u0000 "}'), 'P-9');
  assert.equal(parseTrigger('{not json'), '{not json', 'not JSON: taken as text, as before');
  assert.equal(parseTrigger('x'.repeat(PART_ID_MAX)), 'x'.repeat(PART_ID_MAX));
  const long = parseTriggerMessage('x'.repeat(PART_ID_MAX + 1));
  assert.deepEqual(long.kind === 'trigger' && [long.partId, /65 characters \(at most 64\)/.test(long.refused ?? '')], [null, true]);
  const obj = parseTriggerMessage('{"part_id": {"a": 1}}');
  assert.deepEqual(obj.kind === 'trigger' && [obj.partId, obj.refused], [null, 'part_id is object (a string or a number)']);
  assert.equal(parseTrigger('{"part_id": true}'), null);
  assert.equal(parseTriggerMessage(Buffer.alloc(65537, 0x41)).kind, 'ignore', 'oversized: not a trigger at all');
  assert.equal(parseTriggerMessage('P', { maxBytes: 0 }).kind, 'ignore');
});

// ---------------------------------------------------------------- properties

const RUNS = 2000;
const counted = <T>(label: string, runs: number, prop: fc.IProperty<[T]> | fc.IPropertyWithHooks<[T]>) => {
  const out = fc.check(prop, { numRuns: runs });
  assert.equal(out.failed, false, `${label}: ${fc.defaultReportMessage(out)}`);
  console.log(`${label}: ${out.numRuns} cases`);
  return out.numRuns;
};

const segment = fc.oneof(
  fc.constantFrom('hiercore', 'line3-cam1', 'cmd', 'response', 'verdict', 'pause', 'reload', 'get_stats', '+', '#', '', '\u0000', '\n', '..', '$SYS'),
  fc.string({ maxLength: 8 }),
);
const topicArb = fc.oneof(
  fc.array(segment, { maxLength: 7 }).map((s) => s.join('/')),
  fc.array(segment, { maxLength: 3 }).map((s) => `${BASE}/cmd/${s.join('/')}`),
  fc.array(segment, { maxLength: 3 }).map((s) => `${BASE}/response/${s.join('/')}`),
  fc.string({ unit: 'binary', maxLength: 40 }),
);
const payloadArb = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? '')),
  fc.record({ request_id: fc.anything(), bundle: fc.oneof(fc.string(), fc.anything()) }, { requiredKeys: [] }).map((v) => Buffer.from(JSON.stringify(v) ?? '')),
  fc.string({ unit: 'binary', maxLength: 200 }).map((s) => Buffer.from(s)),
  fc.constantFrom('null', '[]', '1e999', '"x"', '{"__proto__":{"x":1}}', '').map((s) => Buffer.from(s)),
);
const userPropsArb = fc.oneof(
  fc.dictionary(fc.constantFrom('token', 'client_id', 'sender', 'x'), fc.oneof(fc.string({ unit: 'binary' }), fc.array(fc.string(), { maxLength: 3 }), fc.constant('k'))),
  fc.anything(),
);
const propsArb = fc.oneof(
  fc.constant(undefined),
  fc.constant(null),
  fc.record(
    {
      responseTopic: fc.oneof(topicArb, fc.anything()),
      correlationData: fc.oneof(
        fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
        fc.anything(),
      ),
      userProperties: userPropsArb,
    },
    { requiredKeys: [] },
  ),
);
const policyArb = fc.record({ control: fc.boolean(), token: fc.oneof(fc.constant(''), fc.constant('k'), fc.string()), maxBytes: fc.oneof(fc.constant(65536), fc.nat(400)) });
const nameArb = fc.oneof({ arbitrary: fc.constantFrom(...COMMANDS, 'calibrate', 'x'), weight: 4 }, fc.string({ maxLength: 10 }));
// Mostly well-formed requests, so that "run" decisions are common enough to test what they carry.
const plausiblePayload = fc.oneof(
  {
    arbitrary: fc
      .record({ request_id: fc.oneof(fc.string({ maxLength: 12 }), fc.integer(), fc.double()), bundle: fc.constantFrom('a.hcebundle', '../a', 'b') }, { requiredKeys: [] })
      .map((v) => Buffer.from(JSON.stringify(v))),
    weight: 4,
  },
  payloadArb,
);
const plausibleProps = fc.oneof(
  {
    arbitrary: fc.record(
      {
        responseTopic: fc.constantFrom(`${BASE}/response/x`, `${BASE}/response/#`, `${BASE}/verdict`),
        correlationData: fc.uint8Array({ maxLength: 8 }).map((a) => Buffer.from(a)),
        userProperties: fc.constantFrom({ token: 'k' }, { client_id: 'op' }, {}),
      },
      { requiredKeys: [] },
    ),
    weight: 4,
  },
  propsArb,
);

test(`property: the command parser never throws, and "run" means a plain-object body, an allowed response topic and a clean request id (${RUNS} cases each)`, () => {
  let runs = 0;
  const seen = { run: 0, reject: 0, ignore: 0 };
  const check = (d: CommandDecision, topic: string, policy: CommandPolicy) => {
    seen[d.kind]++;
    if (d.kind === 'ignore') return typeof d.why === 'string';
    const name = topic.slice(`${BASE}/cmd/`.length);
    assert.ok(validResponseTopic(BASE, name, d.responseTopic), `response topic ${d.responseTopic}`);
    assert.ok(
      d.requestId === null || (typeof d.requestId === 'number' && Number.isFinite(d.requestId)) || (typeof d.requestId === 'string' && d.requestId.length <= 256 && !hasUnsafeChars(d.requestId)),
    );
    assert.ok(!hasUnsafeChars(d.sender) && d.sender.length < 200);
    if (d.kind === 'run') {
      assert.ok(d.body !== null && typeof d.body === 'object' && !Array.isArray(d.body));
      assert.ok((COMMANDS as readonly string[]).includes(d.name));
      if (STATE_CHANGING.has(d.name)) assert.ok(policy.control, 'state-changing ran without commands.control');
    }
    return true;
  };
  runs += counted(
    'parseCommand, arbitrary topics',
    RUNS,
    fc.property(fc.tuple(topicArb, payloadArb, propsArb, fc.boolean(), policyArb, fc.constantFrom(4, 5) as fc.Arbitrary<4 | 5>), ([topic, payload, properties, retain, policy, v]) =>
      check(parseCommand({ topic, payload, retain, properties: properties as never }, { base: BASE, policy, protocolVersion: v }), topic, policy),
    ),
  );
  runs += counted(
    'parseCommand, command topics',
    RUNS,
    fc.property(fc.tuple(nameArb, plausiblePayload, plausibleProps, fc.boolean(), policyArb), ([name, payload, properties, retain, policy]) =>
      check(parseCommand({ topic: `${BASE}/cmd/${name}`, payload, retain, properties: properties as never }, { base: BASE, policy, protocolVersion: 5 }), `${BASE}/cmd/${name}`, policy),
    ),
  );
  runs += counted(
    'parseCommand, hostile values in place of the message fields',
    RUNS,
    fc.property(fc.tuple(fc.anything(), fc.anything(), fc.anything()), ([topic, payload, properties]) => {
      parseCommand({ topic: topic as string, payload: payload as Uint8Array, properties: properties as never }, ctx());
      return true;
    }),
  );
  console.log(`parseCommand outcomes: ${JSON.stringify(seen)}`);
  assert.ok(seen.run > 100 && seen.reject > 100 && seen.ignore > 100, `every outcome is reached: ${JSON.stringify(seen)}`);
  assert.equal(runs, 3 * RUNS);
});

test(`property: the trigger parser never throws, never returns control characters or more than ${PART_ID_MAX} characters (${RUNS} cases each)`, () => {
  const ok = (d: ReturnType<typeof parseTriggerMessage>) => {
    if (d.kind === 'ignore' || d.partId === null) return true;
    return d.partId.length > 0 && [...d.partId].length <= PART_ID_MAX && !hasUnsafeChars(d.partId) && d.partId === d.partId.trim();
  };
  const text = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 120 }),
    fc.jsonValue().map((v) => JSON.stringify({ part_id: v })),
    fc.string({ unit: 'binary' }).map((s) => JSON.stringify({ part_id: s })),
  );
  counted(
    'parseTriggerMessage, text',
    RUNS,
    fc.property(fc.tuple(text, fc.boolean(), fc.nat(300)), ([t, retain, maxBytes]) => ok(parseTriggerMessage(t, { retain, maxBytes }))),
  );
  counted(
    'parseTriggerMessage, bytes',
    RUNS,
    fc.property(fc.uint8Array({ maxLength: 300 }), (b) => ok(parseTriggerMessage(Buffer.from(b)))),
  );
});

test(`property: the daemon config loader throws only DaemonConfigError, whatever the overrides and environment (${RUNS} cases)`, () => {
  const envNames = [...readFileSync(join(import.meta.dirname, '..', 'src', 'service', 'config.ts'), 'utf8').matchAll(/env: '(HCE_[A-Z0-9_]+)'/g)].map((m) => m[1]);
  assert.ok(envNames.length > 30, `${envNames.length} environment variables found`);
  const defaults = loadDaemonConfig({ overrides: { source: { path: '/x' } }, env: {} }).config as unknown as Record<string, unknown>;
  const sections = Object.keys(defaults).filter((k) => defaults[k] !== null && typeof defaults[k] === 'object');
  const value = fc.oneof(
    fc.jsonValue(),
    fc.string({ unit: 'binary', maxLength: 20 }),
    fc.double(),
    fc.integer(),
    fc.anything(),
    fc.constant(undefined),
    fc.constantFrom('__proto__', 'constructor', 'mqtt://x', '/x', '5', 'null'),
  );
  const section = (k: string) => fc.dictionary(fc.oneof(fc.constantFrom(...Object.keys(defaults[k] as object)), fc.string({ maxLength: 6 })), value, { maxKeys: 4 });
  const overrides = fc.oneof(
    fc.record(Object.fromEntries(sections.map((k) => [k, fc.oneof(section(k), value)])), { requiredKeys: [] }),
    fc.dictionary(fc.oneof(fc.constantFrom(...Object.keys(defaults), '__proto__'), fc.string({ maxLength: 6 })), value, { maxKeys: 5 }),
    fc.anything(),
  );
  const env = fc.dictionary(fc.constantFrom(...envNames), fc.oneof(fc.string({ unit: 'binary', maxLength: 30 }), fc.constantFrom('', '0', '-1', 'true', 'NaN', '1e309', '5', '4', '{}', 'null')), {
    maxKeys: 6,
  });
  const protoKeys = () => Object.getOwnPropertyNames(Object.prototype).join(',');
  const before = protoKeys();
  counted(
    'loadDaemonConfig',
    RUNS,
    fc.property(fc.tuple(overrides, env), ([o, e]) => {
      try {
        loadDaemonConfig({ overrides: o as Record<string, unknown>, env: e });
      } catch (err) {
        if (!(err instanceof DaemonConfigError)) throw new Error(`threw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
      }
      return protoKeys() === before;
    }),
  );
});

// ---------------------------------------------------------------- real broker

const NO_BROKER = which('mosquitto') ? false : 'mosquitto is not installed (deploy/setup.sh installs it)';

interface Received {
  topic: string;
  text: string;
  json: Record<string, unknown> | null;
  corr?: string;
}

function watcher(url: string, opts: mqtt.IClientOptions = {}) {
  const got: Received[] = [];
  const c = mqtt.connect(url, { protocolVersion: 5, reconnectPeriod: 0, clientId: `watch-${Math.random().toString(36).slice(2)}`, ...opts });
  c.on('message', (topic, payload, packet) => {
    let json: Record<string, unknown> | null = null;
    try {
      json = JSON.parse(payload.toString());
    } catch {}
    got.push({ topic, text: payload.length > 1000 ? `(${payload.length} bytes)` : payload.toString(), json, corr: packet.properties?.correlationData?.toString() });
  });
  const ready = new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('error', reject);
  });
  return { c, got, ready };
}

function daemonSide(url: string, station: string, commands: CommandPolicy, o: Partial<MqttSettings> = {}) {
  const calls: { name: string; body: Record<string, unknown> }[] = [];
  const triggers: (string | null)[] = [];
  const logs: string[] = [];
  const connections: boolean[] = [];
  const ev: PublisherEvents = {
    log: (l, m) => logs.push(`${l} ${m}`),
    trigger: (id) => triggers.push(id),
    command: async (name, body) => {
      calls.push({ name, body });
      return { done: name };
    },
    connection: (up) => connections.push(up),
  };
  const settings: MqttSettings = {
    url,
    prefix: 'hiercore',
    station,
    protocol_version: 5 as 4 | 5,
    client_id: `hce-${station}-${Math.random().toString(36).slice(2)}`,
    username: '',
    password: '',
    ca: '',
    cert: '',
    key: '',
    reject_unauthorized: true,
    store_dir: join(tempDir('cmd-store'), 'store'),
    keepalive_s: 30,
    commands,
    queue_max: 1000,
    queue_max_bytes: 2 ** 20,
    max_packet_bytes: commands.maxBytes + 4096,
    ...o,
  };
  const p = new MqttPublisher(settings, ev);
  const connected = async () => {
    await p.start();
    const w = (p as unknown as { waitConnected?: () => Promise<void> }).waitConnected;
    if (w) await w.call(p);
    await waitFor(`${station} connected`, () => connections.includes(true));
    // The subscription is sent right after CONNACK; a round trip through the broker covers its SUBACK.
    await new Promise((r) => setTimeout(r, 300));
  };
  return { p, calls, triggers, logs, connections, connected };
}

test('MQTT commands against a real broker: malformed, retained, forged and oversized messages never crash or disconnect the daemon', { skip: NO_BROKER, timeout: 90_000 }, async () => {
  const dir = tempDir('cmd-broker');
  const broker = new Mosquitto(dir, await freePort(), 'max_packet_size 4194304');
  await broker.start();
  const w = watcher(broker.url);
  await w.ready;
  await new Promise((r) => w.c.subscribe('hiercore/#', { qos: 1 }, r));
  const pub = (topic: string, payload: string | Buffer, properties?: mqtt.IClientPublishOptions['properties'], retain = false) =>
    new Promise<void>((r) => w.c.publish(topic, payload, { qos: 1, retain, properties }, () => r()));
  let n = 0;
  /** Publishes with fresh correlation data (MQTT 5 echoes it) and returns the response to it. */
  const ask = async (topic: string, payload: string | Buffer, properties: mqtt.IClientPublishOptions['properties'] = {}, timeoutMs = 5000) => {
    const corr = `c${++n}`;
    await pub(topic, payload, { ...properties, correlationData: Buffer.from(corr) });
    return waitFor(`response to ${topic} (${corr})`, () => w.got.find((m) => m.corr === corr && m.topic !== topic), timeoutMs);
  };

  // Retained messages left from before the daemon started: they must not run.
  await pub('hiercore/ctl/cmd/pause', '{}', undefined, true);
  await pub('hiercore/ctl/cmd/get_stats', 'null', undefined, true);
  await pub('hiercore/ctl/trigger', 'P-OLD', undefined, true);

  const ctl = daemonSide(broker.url, 'ctl', { control: true, token: 'line3-secret', maxBytes: 65536 });
  const locked = daemonSide(broker.url, 'locked', { control: false, token: '', maxBytes: 65536 });
  const v4 = daemonSide(broker.url, 'v4', { control: true, token: 'line3-secret', maxBytes: 65536 }, { protocol_version: 4 });
  const all = [ctl, locked, v4];
  try {
    for (const d of all) await d.connected();
    await waitFor('retained messages reported', () => ctl.logs.filter((l) => /ignored: retained/.test(l)).length >= 3);
    assert.deepEqual(ctl.calls, [], 'retained pause did not run');
    assert.deepEqual(ctl.triggers, [], 'retained trigger did not fire');

    for (const [payload, re] of [
      ['null', /payload is null/],
      ['[]', /an array/],
      ['42', /a number/],
      ['"x"', /a string/],
      ['not json', /not JSON/],
      [Buffer.from([0xc3, 0x28]), /not valid UTF-8/],
    ] as const) {
      const r = await ask('hiercore/ctl/cmd/get_stats', payload);
      assert.equal(r.topic, 'hiercore/ctl/cmd/get_stats/response');
      assert.equal(r.json?.ok, false);
      assert.match(String(r.json?.error), re);
    }
    const wild = await ask('hiercore/ctl/cmd/get_stats', '{"request_id":"w1"}', { responseTopic: 'a/#' });
    assert.deepEqual([wild.topic, wild.json?.request_id, wild.json?.ok], ['hiercore/ctl/cmd/get_stats/response', 'w1', false]);
    assert.match(String(wild.json?.error), /contains a wildcard/);
    const forged = await ask('hiercore/ctl/cmd/get_stats', JSON.stringify({ request_id: 'forged-verdict' }), { responseTopic: 'hiercore/ctl/verdict' });
    assert.equal(forged.topic, 'hiercore/ctl/cmd/get_stats/response');
    assert.match(String(forged.json?.error), /outside this station's response space/);
    const own = await ask('hiercore/ctl/cmd/get_stats', '{}', { responseTopic: 'hiercore/ctl/response/op-7', userProperties: { client_id: 'op\u202e7' } });
    assert.deepEqual([own.topic, own.json?.ok], ['hiercore/ctl/response/op-7', true]);
    // mosquitto itself disconnects a client whose user property holds C0 controls; format characters pass.
    assert.ok(
      ctl.logs.some((l) => l === 'info command get_stats (sender op\\u{202e}7): ok'),
      ctl.logs.join('\n'),
    );
    assert.ok(ctl.logs.some((l) => /^info command get_stats \(sender \(sender not given\)\): refused: payload is null/.test(l)));

    // 1 MB: over MQTT 3.1.1 it reaches the client and our bound refuses it; over MQTT 5 the broker
    // drops it first when the client announced a maximum packet size.
    const huge = Buffer.alloc(1 << 20, 0x20);
    await pub('hiercore/v4/cmd/get_stats', huge);
    const big = await waitFor('1 MB refusal', () => w.got.find((m) => m.topic === 'hiercore/v4/cmd/get_stats/response' && /too big/.test(String(m.json?.error))));
    assert.match(String(big.json?.error), /1048576 bytes is too big \(at most 65536/);
    const announces = /maximumPacketSize/.test(readFileSync(join(import.meta.dirname, '..', 'src', 'publish', 'mqtt-publisher.ts'), 'utf8'));
    const corr = `c${++n}`;
    await pub('hiercore/ctl/cmd/get_stats', huge, { correlationData: Buffer.from(corr) });
    if (announces) {
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(
        w.got.find((m) => m.corr === corr && m.topic.endsWith('/response')),
        undefined,
        'MQTT 5: the broker dropped the oversized command',
      );
    } else {
      const r = await waitFor('MQTT 5 1 MB refusal', () => w.got.find((m) => m.corr === corr && m.topic.endsWith('/response')));
      assert.match(String(r.json?.error), /too big/);
    }
    console.log(`1 MB command over MQTT 5: ${announces ? 'dropped by the broker (maximumPacketSize)' : 'refused by commands.max_bytes (no maximumPacketSize announced yet)'}`);

    assert.match(String((await ask('hiercore/locked/cmd/pause', '{}', { userProperties: { token: 'line3-secret' } })).json?.error), /commands.control is false/);
    assert.match(String((await ask('hiercore/ctl/cmd/pause', '{}')).json?.error), /needs the MQTT 5 user property "token"/);
    assert.match(String((await ask('hiercore/ctl/cmd/pause', '{}', { userProperties: { token: 'guess' } })).json?.error), /does not match/);
    const changing = () => ctl.calls.filter((c) => STATE_CHANGING.has(c.name));
    assert.deepEqual(changing(), [], 'no state-changing command ran so far');
    const paused = await ask('hiercore/ctl/cmd/pause', '{"request_id": 9}', { userProperties: { token: 'line3-secret', client_id: 'scada-1' } });
    assert.deepEqual(paused.json, { schema: 'hiercore-edge/response/1', command: 'pause', request_id: 9, ok: true, result: { done: 'pause' } });
    assert.deepEqual(changing(), [{ name: 'pause', body: { request_id: 9 } }]);
    assert.ok(ctl.logs.includes('info command pause request 9 (sender scada-1): ok'));
    await pub('hiercore/v4/cmd/pause', '{"request_id":"v4"}');
    const v4r = await waitFor('3.1.1 pause refusal', () => w.got.find((m) => m.topic === 'hiercore/v4/cmd/pause/response'));
    assert.match(String(v4r.json?.error), /MQTT 3.1.1 cannot carry: impossible/);
    assert.match(String((await ask('hiercore/ctl/cmd/reload', '{"bundle":"../../etc/passwd"}', { userProperties: { token: 'line3-secret' } })).json?.error), /bundle file name/);

    await pub('hiercore/ctl/trigger', 'P-1\n<2>CRITICAL');
    await pub('hiercore/ctl/trigger', 'y'.repeat(65));
    await pub('hiercore/ctl/trigger', '{"part_id": 7}');
    await waitFor('three triggers', () => ctl.triggers.length >= 3);
    assert.deepEqual(ctl.triggers, ['P-1<2>CRITICAL', null, '7']);

    await new Promise((r) => setTimeout(r, 500));
    for (const d of all) assert.deepEqual(d.connections, [true], `${d.p.topics.base}: connected once, never dropped (${d.logs.join(' | ')})`);
    assert.deepEqual(
      w.got.filter((m) => m.topic.endsWith('/verdict')),
      [],
      'nothing on any verdict topic',
    );
    assert.equal(ctl.logs.filter((l) => /ignored: retained/.test(l)).length, 3, 'each retained message logged once');
  } finally {
    for (const d of all) await d.p.stop(200).catch(() => {});
    w.c.end(true);
    await broker.stop();
  }
});

test("deploy/mosquitto/acl.example: clients without rights never reach the daemon; the operator's commands and the PLC's triggers do", {
  skip: NO_BROKER || (which('mosquitto_passwd') ? false : 'mosquitto_passwd is not installed'),
  timeout: 60_000,
}, async () => {
  const dir = tempDir('cmd-acl');
  const users = { 'hiercore-edge-line3-cam1': 'd-pw', 'plc-line3': 'p-pw', scada: 's-pw', viewer: 'v-pw', intruder: 'i-pw' };
  const passwd = join(dir, 'passwd');
  for (const [i, [u, pw]] of Object.entries(users).entries()) {
    const r = spawnSync('mosquitto_passwd', [...(i === 0 ? ['-c'] : []), '-b', passwd, u, pw], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  }
  const acl = join(import.meta.dirname, '..', 'deploy', 'mosquitto', 'acl.example');
  const broker = new Mosquitto(join(dir, 'broker'), await freePort(), [`password_file ${passwd}`, `acl_file ${acl}`].join('\n'));
  await broker.start();
  const daemon = daemonSide(
    broker.url,
    'line3-cam1',
    { control: false, token: '', maxBytes: 65536 },
    { username: 'hiercore-edge-line3-cam1', password: 'd-pw', client_id: 'hiercore-edge-line3-cam1' },
  );
  const login = (u: keyof typeof users | null) => watcher(broker.url, u ? { username: u, password: users[u] } : {});
  const clients = { anonymous: login(null), intruder: login('intruder'), viewer: login('viewer'), plc: login('plc-line3'), scada: login('scada') };
  try {
    await daemon.connected();
    for (const c of Object.values(clients)) await c.ready;
    for (const c of Object.values(clients)) await new Promise((r) => c.c.subscribe('hiercore/#', { qos: 1 }, r));
    for (const [who, c] of Object.entries(clients)) {
      await new Promise((r) => c.c.publish(`${BASE}/cmd/get_stats`, JSON.stringify({ request_id: who }), { qos: 1 }, () => r(null)));
      await new Promise((r) => c.c.publish(`${BASE}/trigger`, who, { qos: 1 }, () => r(null)));
      await new Promise((r) => c.c.publish(`${BASE}/verdict`, `{"forged_by":"${who}"}`, { qos: 1 }, () => r(null)));
    }
    await waitFor("the operator's command and the PLC's trigger", () => daemon.calls.length >= 1 && daemon.triggers.length >= 1);
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(
      daemon.calls.map((c) => c.body.request_id),
      ['scada'],
      'only the operator commands',
    );
    assert.deepEqual(daemon.triggers, ['plc'], 'only the PLC triggers');
    assert.ok(
      clients.scada.got.some((m) => m.topic === `${BASE}/cmd/get_stats/response` && m.json?.request_id === 'scada'),
      'the operator reads the response',
    );
    for (const [who, c] of Object.entries(clients))
      assert.deepEqual(
        c.got.filter((m) => m.topic.endsWith('/verdict')),
        [],
        `${who} saw no forged verdict`,
      );
    assert.ok(
      clients.viewer.got.some((m) => m.topic === `${BASE}/status` && m.text === 'online'),
      'the daemon may publish its status; the viewer reads it',
    );
    assert.deepEqual(clients.intruder.got, [], 'a user with no ACL entries reads nothing');
    assert.deepEqual(clients.anonymous.got, [], 'anonymous clients read nothing');
  } finally {
    await daemon.p.stop(200).catch(() => {});
    for (const c of Object.values(clients)) c.c.end(true);
    await broker.stop();
  }
});
