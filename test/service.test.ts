import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { loadDaemonConfig } from '../src/service/config.ts';
import { NgArchive } from '../src/service/archive.ts';
import { parseTrigger, topics } from '../src/publish/topics.ts';
import { MqttPublisher, type MqttSettings } from '../src/publish/mqtt-publisher.ts';
import { tempDir } from './helpers/synthetic.ts';
import { Mosquitto, freePort, which } from './helpers/services.ts';

test('daemon config: defaults, site file, env and flags; errors name key, value and what is allowed', () => {
  const ok = loadDaemonConfig({ overrides: { source: { path: '/data' } }, env: { HCE_STATION: 'line-2', HCE_MQTT_USERNAME: 'line2', HCE_MQTT_PASSWORD: 's3cret' }, args: ['--source-fps', '12'] });
  assert.equal(ok.config.station, 'line-2');
  assert.equal(ok.config.source.fps, 12);
  assert.equal(ok.config.mqtt.protocol_version, 5);
  assert.doesNotMatch(ok.toString(), /s3cret/, 'secrets are masked when printed');
  const bad = (o: Parameters<typeof loadDaemonConfig>[0], re: RegExp) => assert.throws(() => loadDaemonConfig(o), re);
  bad({}, /"source.path" is required for source.kind "folder"/);
  bad({ overrides: { source: { path: '/x', kind: 'usb' } } }, /source.kind: must be one of the possible values: \["folder",.*value was "usb"/);
  bad({ overrides: { source: { path: '/x' } }, env: { HCE_MQTT_PROTOCOL_VERSION: '3' } }, /mqtt.protocol_version: must be one of the possible values: \[4,5\]: value was 3/);
  bad({ overrides: { source: { path: '/x' }, camera: 1 } }, /'camera' not declared in the schema/);
  bad({ overrides: { source: { path: '/x' } }, args: ['--station', 'line 2'] }, /station: must be 1-64 characters/);
  bad({ overrides: { source: { kind: 'rtsp' } } }, /"source.url" is required for source.kind "rtsp"/);
  bad({ overrides: { source: { path: '/x' }, mqtt: { url: 'http://x' } } }, /"mqtt.url" = "http:\/\/x" is invalid/);
  bad({ overrides: { source: { path: '/x' }, mqtt: { cert: '/c.pem' } } }, /"mqtt.cert" and "mqtt.key" go together/);
  bad({ overrides: { source: { path: '/x' }, mqtt: { password: 'p' } } }, /"mqtt.password" is set but "mqtt.username" is empty/);
  bad({ siteFile: '/nonexistent/site.json' }, /config file \/nonexistent\/site.json does not exist/);
});

test('NG archive keeps whole entries under its quota, oldest deleted first, and counts what it finds', () => {
  const dir = tempDir('archive');
  const a = new NgArchive(dir, 2500);
  for (let i = 0; i < 5; i++) a.add(`f${i}`, { 'frame.jpg': new Uint8Array(1000), 'verdict.json': '{}' });
  assert.ok(a.bytes <= 2500, `${a.bytes} bytes`);
  const names = readdirSync(dir).sort();
  assert.equal(names.length, 2);
  assert.match(names[0], /_f3$/);
  assert.match(names[1], /_f4$/);
  const again = new NgArchive(dir, 1500);
  assert.equal(again.count, 1, 'a restart re-reads the archive and applies a smaller quota');
});

test('topics and trigger payloads', () => {
  const t = topics('hiercore', 'line-1');
  assert.equal(t.verdict, 'hiercore/line-1/verdict');
  assert.equal(t.response('reload'), 'hiercore/line-1/cmd/reload/response');
  assert.equal(parseTrigger('P-123'), 'P-123');
  assert.equal(parseTrigger('{"part_id": 42}'), '42');
  assert.equal(parseTrigger('{}'), null);
  assert.equal(parseTrigger(''), null);
});

const NO_TLS = !which('mosquitto') ? 'mosquitto is not installed (deploy/setup.sh installs it)' : !which('openssl') ? 'openssl is not installed' : false;

test('MQTT: password and TLS listeners work, bad credentials and unknown CAs are refused with a clear reason', { skip: NO_TLS, timeout: 60_000 }, async () => {
  const dir = tempDir('tls');
  const sh = (cmd: string) => {
    const r = spawnSync('sh', ['-c', cmd], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
  };
  sh('openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=test-ca" -keyout ca.key -out ca.pem 2>/dev/null');
  sh('openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null');
  sh('printf "subjectAltName=IP:127.0.0.1\\n" > san.ext && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem 2>/dev/null');
  sh('openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other-ca" -keyout other.key -out other.pem 2>/dev/null');
  sh(
    'openssl req -newkey rsa:2048 -nodes -subj "/CN=line3-cam1" -keyout client.key -out client.csr 2>/dev/null && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem 2>/dev/null',
  );
  sh('chmod 644 *.key && mosquitto_passwd -b -c passwd line3 right-password');
  const pwPort = await freePort();
  const tlsPort = await freePort();
  const certPort = await freePort();
  const broker = new Mosquitto(
    join(dir, 'broker'),
    await freePort(),
    [
      `listener ${pwPort} 127.0.0.1`,
      'allow_anonymous false',
      `password_file ${join(dir, 'passwd')}`,
      `listener ${tlsPort} 127.0.0.1`,
      'allow_anonymous true',
      `cafile ${join(dir, 'ca.pem')}`,
      `certfile ${join(dir, 'server.pem')}`,
      `keyfile ${join(dir, 'server.key')}`,
      `listener ${certPort} 127.0.0.1`,
      'allow_anonymous true',
      `cafile ${join(dir, 'ca.pem')}`,
      `certfile ${join(dir, 'server.pem')}`,
      `keyfile ${join(dir, 'server.key')}`,
      'require_certificate true',
    ].join('\n'),
    'per_listener_settings true',
  );
  await broker.start();
  const logs: string[] = [];
  const settings = (o: Partial<MqttSettings>): MqttSettings => ({
    url: '',
    prefix: 'hiercore',
    station: 's',
    protocol_version: 5,
    client_id: `t-${Math.random()}`,
    username: '',
    password: '',
    ca: '',
    cert: '',
    key: '',
    reject_unauthorized: true,
    store_dir: join(dir, `store-${Math.random()}`),
    keepalive_s: 30,
    commands: { control: false, token: '', maxBytes: 65536 },
    queue_max: 1000,
    queue_max_bytes: 2 ** 20,
    max_packet_bytes: 65536 + 4096,
    ...o,
  });
  const connect = async (o: Partial<MqttSettings>) => {
    const p = new MqttPublisher(settings(o), { log: (_l, m) => logs.push(m), trigger: () => {}, command: async () => null, connection: () => {} });
    try {
      // start() rejects only for local configuration errors (the missing CA); the broker's verdict comes from waitConnected.
      await p.start();
      await p.waitConnected(8000);
      return 'connected';
    } catch (e) {
      return (e as Error).message;
    } finally {
      await p.stop(100).catch(() => {});
    }
  };
  try {
    for (const v of [5, 4] as const) {
      assert.equal(await connect({ url: `mqtt://127.0.0.1:${pwPort}`, username: 'line3', password: 'right-password', protocol_version: v }), 'connected', `MQTT ${v} with password`);
      assert.match(await connect({ url: `mqtt://127.0.0.1:${pwPort}`, username: 'line3', password: 'wrong', protocol_version: v }), /refused the login .*check mqtt.username \/ mqtt.password/);
    }
    assert.ok(
      logs.some((l) => /refused the login/.test(l)),
      'the refusal is logged',
    );
    assert.equal(await connect({ url: `mqtts://127.0.0.1:${tlsPort}`, ca: join(dir, 'ca.pem') }), 'connected', 'TLS with the plant CA');
    assert.match(await connect({ url: `mqtts://127.0.0.1:${tlsPort}`, ca: join(dir, 'other.pem') }), /MQTT error: .*(self.signed|unable to verify|certificate)/i);
    assert.match(await connect({ url: `mqtts://127.0.0.1:${tlsPort}`, ca: join(dir, 'missing.pem') }), /mqtt.ca .*missing.pem: ENOENT/);
    assert.equal(
      await connect({ url: `mqtts://127.0.0.1:${certPort}`, ca: join(dir, 'ca.pem'), cert: join(dir, 'client.pem'), key: join(dir, 'client.key') }),
      'connected',
      'client certificate accepted',
    );
    assert.match(await connect({ url: `mqtts://127.0.0.1:${certPort}`, ca: join(dir, 'ca.pem') }), /MQTT (error|broker)/, 'no client certificate: refused');
  } finally {
    await broker.stop();
  }
});

test('hiercore-edge run: a bad config exits 1 before opening anything, naming key, value and what is allowed', () => {
  const bin = join(import.meta.dirname, '..', 'bin', 'hiercore-edge.js');
  const r = spawnSync(process.execPath, [bin, 'run', '--source-kind', 'usb', '--source-path', '/x'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /invalid configuration: source.kind: must be one of the possible values: \["folder",.*value was "usb"/);
  const missing = spawnSync(process.execPath, [bin, 'run', '--source-path', '/x', '--bundle', '/nonexistent.hcebundle', '--backbone', '/tmp', '--metrics-port', '0'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /bundle \/nonexistent.hcebundle does not exist: run "hiercore-edge calibrate/);
});

test("config/site.example.json, the README's starting point, is a valid daemon configuration", () => {
  const l = loadDaemonConfig({ siteFile: join(import.meta.dirname, '..', 'config', 'site.example.json') });
  assert.equal(l.config.station, 'line3-cam1');
  assert.equal(l.config.commands.control, false, 'remote control is off in the example');
  assert.equal(l.config.scoring.reweight_neighbours, null, 'scoring settings come from the bundle');
});
