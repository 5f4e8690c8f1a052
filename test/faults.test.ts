/**
 * The fault suite through the whole daemon (README "Faults and what the daemon does"): hostile MQTT
 * clients, a broker that is down at boot, a bad file in the replay, a trigger flood, bundles that are
 * not bundles, a start-up that fails. Every check here failed on the daemon before these fixes.
 * The slow ones (70,000 queued verdicts, a full disk, a soak) are scripts in scripts/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import mqtt from 'mqtt';
import { syntheticPart, tempDir, writePng, writeSyntheticBundle } from './helpers/synthetic.ts';
import { DaemonProcess, Mosquitto, freePort, waitFor, which } from './helpers/services.ts';
import { readBundleFile, writeBundleFile } from '../src/bundle/bundle-file.ts';
import type { VerdictPayload } from '../src/publish/payloads.ts';

const NO_MOSQUITTO = which('mosquitto') ? false : 'mosquitto is not installed (deploy/setup.sh installs it)';
const BASE = 'hiercore/fault-line';

async function replayFolder(dir: string, n: number): Promise<string> {
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < n; i++) await writePng(join(dir, `${String(i).padStart(3, '0')}.png`), syntheticPart(96, 60_000 + i), 96, 96);
  writeFileSync(join(dir, '005-broken.png'), Buffer.from('\x89PNG\r\n\x1a\n this is not a png'));
  return dir;
}

/** A second bundle with its own id (same calibration), to tell reloads apart. */
function copyWithNewId(from: string, to: string, id: string): void {
  const b = readBundleFile(from);
  writeBundleFile(to, { ...b, header: { ...b.header, bundle_id: id } });
}

class Client {
  readonly got: { topic: string; text: string; props?: mqtt.IPublishPacket['properties'] }[] = [];
  private constructor(readonly c: mqtt.MqttClient) {
    c.on('message', (topic, payload, packet) => this.got.push({ topic, text: payload.toString(), props: packet.properties }));
  }
  static async connect(url: string, id: string): Promise<Client> {
    const c = mqtt.connect(url, { clientId: id, protocolVersion: 5, reconnectPeriod: 200 });
    await new Promise((r) => c.once('connect', r));
    await new Promise((r) => c.subscribe(`${BASE}/#`, { qos: 1 }, r));
    await new Promise((r) => c.subscribe('a/#', { qos: 1 }, r));
    return new Client(c);
  }
  publish(topic: string, payload: string | Buffer, opts: mqtt.IClientPublishOptions = {}): Promise<void> {
    return new Promise((r) => this.c.publish(topic, payload, { qos: 1, ...opts }, () => r()));
  }
  verdicts(): VerdictPayload[] {
    return this.got
      .filter((m) => m.topic === `${BASE}/verdict`)
      .flatMap((m) => {
        try {
          return [JSON.parse(m.text) as VerdictPayload];
        } catch {
          return [];
        }
      });
  }
  responses(name: string): Record<string, any>[] {
    return this.got.filter((m) => m.topic === `${BASE}/cmd/${name}/response`).map((m) => JSON.parse(m.text));
  }
  close(): Promise<void> {
    return new Promise((r) => this.c.end(true, {}, () => r()));
  }
}

async function rssMb(pid: number): Promise<number> {
  const { readFileSync } = await import('node:fs');
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

async function healthz(port: number): Promise<{ status: number; body: any }> {
  const r = await fetch(`http://127.0.0.1:${port}/healthz`);
  return { status: r.status, body: await r.json() };
}

test('faults: hostile clients, broker down at boot, a broken replay file, a trigger flood, bundles by name', { skip: NO_MOSQUITTO, timeout: 240_000 }, async () => {
  const dir = tempDir('faults');
  const { backbone, bundle } = await writeSyntheticBundle(dir);
  const bundles = join(dir, 'bundles');
  mkdirSync(bundles);
  copyFileSync(bundle, join(bundles, 'line-a.hcebundle'));
  copyWithNewId(bundle, join(bundles, 'line-b.hcebundle'), 'bundle-b');
  const broker = new Mosquitto(join(dir, 'broker'), await freePort());
  const metricsPort = await freePort();
  const cfgFile = join(dir, 'site.json');
  writeFileSync(
    cfgFile,
    JSON.stringify({
      station: 'fault-line',
      backbone,
      bundle: join(bundles, 'line-a.hcebundle'),
      bundle_dir: bundles,
      state_dir: join(dir, 'state'),
      source: { kind: 'folder', path: await replayFolder(join(dir, 'stream'), 12), fps: 20, loop: true },
      trigger: { mode: 'mqtt', window_ms: 1500, queue_max: 16 },
      mqtt: { url: broker.url, store_dir: join(dir, 'store'), stats_interval_s: 0 },
      commands: { control: true, token: 'line-secret' },
      runtime: { threads: 1 },
      archive: { dir: join(dir, 'archive'), quota_mb: 5 },
      metrics: { port: metricsPort },
    }),
  );

  // Retained commands left on the broker by someone else, before the daemon ever starts.
  await broker.start();
  const early = await Client.connect(broker.url, 'early');
  await early.publish(`${BASE}/cmd/pause`, '{}', { retain: true, properties: { userProperties: { token: 'line-secret' } } });
  await early.publish(`${BASE}/cmd/get_stats`, 'null', { retain: true });
  await early.close();
  await broker.stop();

  let daemon = new DaemonProcess(cfgFile);
  let c: Client | null = null;
  try {
    // Broker down at boot: the daemon starts and inspects anyway.
    await waitFor('ready without a broker', () => /ready: camera, model and bundle are up, broker not connected/.test(daemon.out), 60_000);
    assert.equal(daemon.proc.exitCode, null, 'still running');
    await broker.start();
    c = await Client.connect(broker.url, 'operator');
    await waitFor('status online', async () => (await healthz(metricsPort)).body.mqtt === true, 30_000);

    // The broken replay file does not leave the camera "lost": the next good frame is streaming again.
    await waitFor('healthy after the broken file', async () => (await healthz(metricsPort)).status === 200, 20_000).catch((e) => {
      throw new Error(`${e.message}: ${daemon.out.slice(-1500)}`);
    });
    assert.match(daemon.out, /005-broken.png/);

    // Retained pause was ignored: a trigger is inspected.
    await c.publish(`${BASE}/trigger`, 'P-1\n<2>CRITICAL forged journal line');
    await waitFor('triggered verdict', () => c!.verdicts().some((v) => v.verdict !== 'NO_FRAME' && v.part_id?.startsWith('P-1')), 20_000);
    const v1 = c.verdicts().find((v) => v.part_id?.startsWith('P-1'))!;
    assert.doesNotMatch(v1.part_id!, /[\n\r]/, 'control characters removed from part ids');
    assert.ok(Date.parse(v1.captured_at!) >= Date.parse(v1.triggered_at!), 'bound to a frame captured after the trigger');
    assert.doesNotMatch(daemon.out, /^<2>CRITICAL/m);
    assert.equal(c.responses('get_stats').length, 0, 'retained commands get no answer: they are ignored');

    // Hostile command payloads and response topics: answered or ignored, never a crash or a disconnect.
    await c.publish(`${BASE}/cmd/get_stats`, 'null');
    await c.publish(`${BASE}/cmd/get_stats`, '{}', { properties: { responseTopic: 'a/#' } });
    await c.publish(`${BASE}/cmd/get_stats`, '{"request_id": "forged"}', { properties: { responseTopic: `${BASE}/verdict` } });
    await c.publish(`${BASE}/cmd/get_config`, Buffer.alloc(200_000, 0x7b));
    await waitFor('error responses', () => c!.responses('get_stats').length >= 3, 20_000).catch((e) => {
      throw new Error(`${e.message}: ${JSON.stringify(c!.responses('get_stats'))}; daemon: ${daemon.out.slice(-1500)}`);
    });
    assert.equal(c.responses('get_stats')[0].ok, false);
    assert.equal(c.got.filter((m) => m.topic.startsWith('a/')).length, 0, 'nothing published on a wildcard topic');
    assert.equal(c.got.filter((m) => m.topic === `${BASE}/verdict` && m.text.includes('hiercore-edge/response')).length, 0, 'no response on the verdict topic');
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(c.responses('get_config').length, 0, 'the broker dropped the 200 KB command: above the maximum packet size the daemon asked for');
    assert.equal(daemon.proc.exitCode, null);
    assert.doesNotMatch(daemon.out, /MQTT connection .* lost/, 'the daemon was never disconnected');

    // State-changing commands need the token; a bundle is chosen by name, never by path.
    await c.publish(`${BASE}/cmd/pause`, '{}');
    await c.publish(`${BASE}/cmd/reload`, '{"bundle": "/dev/zero"}', { properties: { userProperties: { token: 'line-secret' } } });
    await waitFor('refusals', () => c!.responses('pause').length >= 1 && c!.responses('reload').length >= 1, 20_000);
    assert.equal(c.responses('pause')[0].ok, false);
    assert.equal(c.responses('reload')[0].ok, false);
    const rssBefore = await rssMb(daemon.proc.pid!);
    await c.publish(`${BASE}/cmd/reload`, '{"bundle": "line-b.hcebundle"}', { properties: { userProperties: { token: 'line-secret' } } });
    await waitFor('reload', () => c!.responses('reload').length >= 2, 30_000);
    assert.equal(c.responses('reload')[1].ok, true, JSON.stringify(c.responses('reload')[1]));
    assert.ok((await rssMb(daemon.proc.pid!)) < rssBefore + 200, 'no runaway memory from a reload');

    // Triggers while paused are answered at once with NO_FRAME, not bound to a frame seconds later.
    await c.publish(`${BASE}/cmd/pause`, '{}', { properties: { userProperties: { token: 'line-secret' } } });
    await waitFor('paused', () => c!.responses('pause').some((r) => r.ok), 10_000);
    await c.publish(`${BASE}/trigger`, 'P-paused');
    await waitFor('NO_FRAME while paused', () => c!.verdicts().some((v) => v.part_id === 'P-paused'), 10_000);
    const np = c.verdicts().find((v) => v.part_id === 'P-paused')!;
    assert.equal(np.verdict, 'NO_FRAME');
    assert.equal(np.reason, 'paused');
    await c.publish(`${BASE}/cmd/resume`, '{}', { properties: { userProperties: { token: 'line-secret' } } });
    await waitFor('resumed', () => c!.responses('resume').some((r) => r.ok), 10_000);

    // A trigger flood: bounded, counted, memory flat.
    const rss0 = await rssMb(daemon.proc.pid!);
    for (let i = 0; i < 3000; i++) c.c.publish(`${BASE}/trigger`, `F-${i}`, { qos: 0 });
    await new Promise((r) => setTimeout(r, 3000));
    const stats = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    assert.match(stats, /hce_triggers_total\{outcome="refused"\} [1-9]/);
    assert.ok((await rssMb(daemon.proc.pid!)) < rss0 + 150, 'trigger flood does not grow memory');

    // An inspected verdict after the reload carries the new bundle (a trigger a second until one is).
    const inspectedB = () => c!.verdicts().some((v) => v.verdict !== 'NO_FRAME' && v.bundle?.id === 'bundle-b');
    for (let i = 0; i < 20 && !inspectedB(); i++) {
      await c.publish(`${BASE}/trigger`, `B-${i}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    assert.ok(
      inspectedB(),
      `verdicts after the reload carry the new bundle: ${JSON.stringify(
        c
          .verdicts()
          .slice(-5)
          .map((v) => [v.verdict, v.part_id, v.bundle?.id, v.reason]),
      )}`,
    );
    daemon.kill('SIGTERM');
    assert.equal(await daemon.exited, 0, daemon.out.slice(-1500));

    // The reload survives a restart.
    daemon = new DaemonProcess(cfgFile);
    await waitFor('restarted with the reloaded bundle', () => /bundle bundle-b:/.test(daemon.out), 60_000);
  } finally {
    daemon.kill('SIGKILL');
    await c?.close();
    await broker.stop();
  }
});

test('faults: a start-up that fails exits non-zero within seconds; a scoring setting that disagrees with the bundle is an error', { timeout: 90_000 }, async () => {
  const dir = tempDir('faults-start');
  const { backbone, bundle } = await writeSyntheticBundle(dir);
  mkdirSync(join(dir, 'stream'));
  await writePng(join(dir, 'stream', 'a.png'), syntheticPart(96, 1), 96, 96);
  const run = async (over: Record<string, unknown>) => {
    const file = join(dir, `site-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        station: 'fault-line',
        backbone,
        bundle,
        state_dir: join(dir, 'state'),
        source: { kind: 'folder', path: join(dir, 'stream') },
        mqtt: { url: 'mqtt://127.0.0.1:1', store_dir: join(dir, 'store') },
        metrics: { port: 0 },
        archive: { dir: '' },
        ...over,
      }),
    );
    const t0 = Date.now();
    const d = new DaemonProcess(file);
    const code = await d.exited;
    return { code, ms: Date.now() - t0, out: d.out };
  };
  const broken = join(dir, 'broken.hcebundle');
  writeFileSync(broken, 'HCEBNDL\0 truncated');
  const a = await run({ bundle: broken });
  assert.notEqual(a.code, 0);
  assert.ok(a.ms < 20_000, `exited after ${a.ms} ms`);
  assert.match(a.out, /broken.hcebundle/);
  const b = await run({ scoring: { reweight_neighbours: 9 } });
  assert.notEqual(b.code, 0);
  assert.match(b.out, /reweight_neighbours/);
});
