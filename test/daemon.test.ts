/**
 * The daemon end to end against a real mosquitto: replayed frames -> verdicts and heatmaps, broker
 * outage, daemon SIGKILL with verdicts queued, systemd notifications. Skips (with the reason) where
 * mosquitto is not installed; deploy/setup.sh installs it, so CI runs these.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import mqtt from 'mqtt';
import { syntheticPart, tempDir, writePng, writeSyntheticBundle } from './helpers/synthetic.ts';
import { DaemonProcess, Mosquitto, connectWhenUp, freePort, waitFor, which } from './helpers/services.ts';
import type { VerdictPayload } from '../src/publish/topics.ts';

const NO_MOSQUITTO = which('mosquitto') ? false : 'mosquitto is not installed (deploy/setup.sh installs it)';

/** n parts, every 5th with a planted defect; file names say which. */
async function writeStream(dir: string, n: number, seed0: number): Promise<void> {
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < n; i++) {
    const bad = i % 5 === 4;
    const defect = bad ? { x: 30 + (i % 30), y: 35 + (i % 20), w: 10, h: 6 } : undefined;
    await writePng(join(dir, `${String(i).padStart(4, '0')}_${bad ? 'bad' : 'good'}.png`), syntheticPart(96, seed0 + i, defect), 96, 96);
  }
}

function siteConfig(dir: string, o: { backbone: string; bundle: string; url: string; source: string; fps: number; store: string; metricsPort: number; mode?: string }): string {
  const file = join(dir, `site-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      station: 'test-line',
      backbone: o.backbone,
      bundle: o.bundle,
      state_dir: join(dir, 'state'),
      source: { kind: 'folder', path: o.source, fps: o.fps, loop: false },
      trigger: { mode: o.mode ?? 'all' },
      mqtt: { url: o.url, store_dir: o.store, stats_interval_s: 1 },
      runtime: { threads: 1 },
      archive: { dir: join(dir, 'archive'), quota_mb: 1 },
      metrics: { port: o.metricsPort },
    }),
  );
  return file;
}

class Subscriber {
  readonly verdicts = new Map<string, VerdictPayload>();
  heatmaps = 0;
  duplicates = 0;
  private client: mqtt.MqttClient;
  constructor(url: string, id: string) {
    // A persistent session: verdicts published while this client is away are kept by the broker.
    this.client = mqtt.connect(url, { clientId: id, clean: false, reconnectPeriod: 200, protocolVersion: 5, properties: { sessionExpiryInterval: 3600 } });
    this.client.on('connect', () => this.client.subscribe('hiercore/test-line/#', { qos: 1 }));
    this.client.on('message', (topic, payload) => {
      if (topic.endsWith('/verdict')) {
        const v = JSON.parse(payload.toString()) as VerdictPayload;
        if (this.verdicts.has(v.frame_id)) this.duplicates++;
        this.verdicts.set(v.frame_id, v);
      } else if (topic.endsWith('/heatmap')) {
        assert.equal(payload[0], 0xff, 'heatmap is a JPEG');
        this.heatmaps++;
      }
    });
  }
  ofRun(run: string): VerdictPayload[] {
    return [...this.verdicts.values()].filter((v) => v.run_id === run);
  }
  close(): Promise<void> {
    return new Promise((r) => this.client.end(true, {}, () => r()));
  }
}

async function metric(port: number, name: string): Promise<number> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

test('daemon: 300 replayed frames give 300 verdicts with the planted defects NG, through a 5 s broker outage', { skip: NO_MOSQUITTO, timeout: 180_000 }, async () => {
  const dir = tempDir('daemon');
  const { backbone, bundle } = await writeSyntheticBundle(dir);
  await writeStream(join(dir, 'stream'), 300, 10_000);
  const broker = new Mosquitto(join(dir, 'broker'), await freePort());
  await broker.start();
  const sub = new Subscriber(broker.url, 'test-sub-1');
  const metricsPort = await freePort();
  const daemon = new DaemonProcess(siteConfig(dir, { backbone, bundle, url: broker.url, source: join(dir, 'stream'), fps: 40, store: join(dir, 'store'), metricsPort }));
  try {
    await waitFor('first verdicts', () => sub.verdicts.size >= 60, 60_000);
    await broker.stop();
    const during = await metric(metricsPort, 'hce_frames_inspected_total');
    await new Promise((r) => setTimeout(r, 5000));
    const after = await metric(metricsPort, 'hce_frames_inspected_total');
    assert.ok(after > during, `inspection went on while the broker was down (${during} -> ${after})`);
    await broker.start();
    await waitFor('300 verdicts', () => sub.verdicts.size >= 300, 90_000);
    const vs = [...sub.verdicts.values()];
    assert.equal(new Set(vs.map((v) => v.run_id)).size, 1);
    assert.deepEqual(
      vs.map((v) => v.frame!).sort((a, b) => a - b),
      Array.from({ length: 300 }, (_, i) => i + 1),
      'every frame exactly once after de-duplication',
    );
    const bad = vs.filter((v) => v.source_file!.includes('_bad'));
    const good = vs.filter((v) => v.source_file!.includes('_good'));
    assert.equal(bad.length, 60);
    assert.equal(bad.filter((v) => v.verdict === 'NG').length, 60, 'every planted defect is NG');
    // Each NG verdict says where: one of its regions lies on the planted defect (frame pixels).
    for (const v of bad) {
      const i = Number(/(\d{4})_bad/.exec(v.source_file!)![1]);
      const d = { x: 30 + (i % 30), y: 35 + (i % 20), w: 10, h: 6 };
      assert.ok(v.regions && v.regions.length >= 1 && v.regions.length <= 8, `regions on NG frame ${i}`);
      // The synthetic backbone's grid is 8 px: a region may sit up to 1.5 cells off the painted box.
      const near = v.regions.some(({ centroid: [cx, cy] }) => Math.hypot(cx - (d.x + d.w / 2), cy - (d.y + d.h / 2)) <= 12);
      assert.ok(near, `a region of frame ${i} lies on the defect at ${JSON.stringify(d)}: ${JSON.stringify(v.regions)}`);
    }
    assert.ok(
      good.filter((v) => v.verdict === 'OK').every((v) => v.regions === undefined),
      'OK verdicts carry no regions',
    );
    const goodOk = good.filter((v) => v.verdict === 'OK').length;
    assert.ok(goodOk >= 0.97 * good.length, `good parts OK: ${goodOk}/${good.length}`);
    for (const v of vs.slice(0, 5)) {
      assert.equal(v.schema, 'hiercore-edge/verdict/1');
      assert.ok(v.cluster && v.threshold! > 0 && v.latency_ms.capture_to_verdict >= 0 && v.bundle?.id);
    }
    assert.ok(sub.heatmaps > 0, 'heatmaps published');
    daemon.kill('SIGTERM');
    assert.equal(await daemon.exited, 0, `clean exit on SIGTERM\n${daemon.out.slice(-2000)}`);
    assert.match(daemon.out, /stopping \(SIGTERM\)/);
  } finally {
    daemon.kill('SIGKILL');
    await sub.close();
    await broker.stop();
  }
});

test('daemon: verdicts queued while the broker is down survive a SIGKILL of the daemon', { skip: NO_MOSQUITTO, timeout: 180_000 }, async () => {
  const dir = tempDir('daemon-kill');
  const { backbone, bundle } = await writeSyntheticBundle(dir);
  await writeStream(join(dir, 'stream'), 40, 20_000);
  const broker = new Mosquitto(join(dir, 'broker'), await freePort());
  await broker.start();
  const sub = new Subscriber(broker.url, 'test-sub-2');
  const metricsPort = await freePort();
  const cfg = siteConfig(dir, { backbone, bundle, url: broker.url, source: join(dir, 'stream'), fps: 10, store: join(dir, 'store'), metricsPort });
  const first = new DaemonProcess(cfg);
  let second: DaemonProcess | null = null;
  try {
    await waitFor('first verdict', () => sub.verdicts.size >= 1, 60_000);
    const run1 = [...sub.verdicts.values()][0].run_id;
    await broker.stop();
    await waitFor('all 40 frames inspected with the broker down', async () => (await metric(metricsPort, 'hce_frames_inspected_total')) >= 40, 60_000);
    await new Promise((r) => setTimeout(r, 500));
    const before = sub.ofRun(run1).length;
    assert.ok(before < 40, `some verdicts were still queued at the kill (${before} delivered)`);
    first.kill('SIGKILL');
    await first.exited;
    await broker.start();
    second = new DaemonProcess(cfg);
    await waitFor('the queued verdicts of the killed run', () => sub.ofRun(run1).length >= 40, 60_000);
    assert.deepEqual(
      sub
        .ofRun(run1)
        .map((v) => v.frame!)
        .sort((a, b) => a - b),
      Array.from({ length: 40 }, (_, i) => i + 1),
    );
  } finally {
    first.kill('SIGKILL');
    second?.kill('SIGKILL');
    await sub.close();
    await broker.stop();
  }
});

test('daemon: systemd gets READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 on NOTIFY_SOCKET', {
  skip: NO_MOSQUITTO || (which('python3') ? false : 'python3 is needed for the test notify socket'),
  timeout: 120_000,
}, async () => {
  const dir = tempDir('notify');
  const { backbone, bundle } = await writeSyntheticBundle(dir);
  await writeStream(join(dir, 'stream'), 10, 30_000);
  const broker = new Mosquitto(join(dir, 'broker'), await freePort());
  await broker.start();
  const sock = join(dir, 'notify.sock');
  // Node has no unix datagram sockets; a few lines of Python play systemd's side.
  const py = spawn('python3', [
    '-u',
    '-c',
    `import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint('LISTENING',flush=True)\nwhile True:\n  print(s.recv(4096).decode().replace('\\n','|'),flush=True)`,
    sock,
  ]);
  let got = '';
  py.stdout.on('data', (d) => (got += d.toString()));
  await waitFor('notify socket', () => got.includes('LISTENING'));
  const cfg = siteConfig(dir, { backbone, bundle, url: broker.url, source: join(dir, 'stream'), fps: 5, store: join(dir, 'store'), metricsPort: 0, mode: 'free' });
  const daemon = new DaemonProcess(cfg, { NOTIFY_SOCKET: sock, WATCHDOG_USEC: '1500000' });
  try {
    await waitFor('READY=1 and WATCHDOG=1', () => got.includes('READY=1') && got.includes('WATCHDOG=1'), 60_000);
    assert.match(got, /STATUS=loading model and bundle/);
    assert.match(got, /STATUS=inspecting \(free-run\)/);
    assert.ok(got.indexOf('READY=1') < got.indexOf('WATCHDOG=1'), 'watchdog pings start after READY');
    daemon.kill('SIGTERM');
    assert.equal(await daemon.exited, 0);
    await waitFor('STOPPING=1', () => got.includes('STOPPING=1'), 5000);
  } finally {
    daemon.kill('SIGKILL');
    py.kill();
    await broker.stop();
  }
});

test('daemon: PLC trigger with part id, and the command topics (pause, resume, snapshot, reload, get_config), on the embedded broker', { timeout: 120_000 }, async () => {
  const dir = tempDir('daemon-cmd');
  const { backbone, bundle } = await writeSyntheticBundle(dir);
  await writeStream(join(dir, 'stream'), 10, 40_000);
  const port = await freePort();
  const file = join(dir, 'site.json');
  writeFileSync(
    file,
    JSON.stringify({
      station: 'test-line',
      backbone,
      bundle,
      source: { kind: 'folder', path: join(dir, 'stream'), fps: 20, loop: true },
      trigger: { mode: 'mqtt' },
      mqtt: { url: '', embedded_port: port, store_dir: join(dir, 'store'), username: 'line', password: 'not-shown', stats_interval_s: 0 },
      commands: { control: true },
      state_dir: join(dir, 'state'),
      metrics: { port: 0 },
      archive: { dir: '' },
    }),
  );
  const daemon = new DaemonProcess(file);
  const c = await connectWhenUp(port);
  const got: { topic: string; body: any }[] = [];
  c.on('message', (topic, payload) => {
    if (topic.endsWith('/heatmap')) return;
    try {
      got.push({ topic, body: JSON.parse(payload.toString()) });
    } catch {
      got.push({ topic, body: payload.toString() });
    }
  });
  await new Promise((r) => c.subscribe('hiercore/test-line/#', { qos: 1 }, r));
  const verdicts = () => got.filter((m) => m.topic.endsWith('/verdict')).map((m) => m.body as VerdictPayload);
  const response = (name: string) => got.filter((m) => m.topic.endsWith(`/cmd/${name}/response`)).map((m) => m.body);
  try {
    await waitFor('status online', () => got.some((m) => m.topic.endsWith('/status') && m.body === 'online'), 30_000).catch((e) => {
      throw new Error(`${e.message}; got ${JSON.stringify(got).slice(0, 500)}; daemon: ${daemon.out.slice(-1500)}`);
    });
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(verdicts().length, 0, 'trigger mode inspects nothing without a trigger');
    c.publish('hiercore/test-line/trigger', 'P-1001', { qos: 1 });
    c.publish('hiercore/test-line/trigger', JSON.stringify({ part_id: 'P-1002' }), { qos: 1 });
    await waitFor('two triggered verdicts', () => verdicts().length >= 2, 20_000);
    assert.deepEqual(
      verdicts().map((v) => v.part_id),
      ['P-1001', 'P-1002'],
    );

    c.publish('hiercore/test-line/cmd/pause', '{"request_id": "r1"}');
    await waitFor('pause response', () => response('pause').length, 10_000);
    assert.deepEqual(response('pause')[0], { schema: 'hiercore-edge/response/1', command: 'pause', request_id: 'r1', ok: true, result: { paused: true } });
    c.publish('hiercore/test-line/cmd/snapshot', '{}');
    await waitFor('snapshot response', () => response('snapshot').length, 20_000);
    const snap = response('snapshot')[0];
    assert.equal(snap.ok, true, JSON.stringify(snap));
    assert.ok(['OK', 'NG'].includes(snap.result.verdict) && snap.result.heatmap === true && snap.result.image === true, 'snapshot publishes heatmap and image even while paused');
    c.publish('hiercore/test-line/cmd/resume', '');
    await waitFor('resume response', () => response('resume').length, 10_000);

    c.publish('hiercore/test-line/cmd/get_config', '{}');
    await waitFor('get_config response', () => response('get_config').length, 10_000);
    const cfg = response('get_config')[0].result;
    assert.equal(cfg.station, 'test-line');
    assert.notEqual(cfg.mqtt.password, 'not-shown', 'secrets are masked');

    const before = verdicts().at(-1)!.bundle!.id;
    c.publish('hiercore/test-line/cmd/reload', '{}');
    await waitFor('reload response', () => response('reload').length, 20_000);
    assert.equal(response('reload')[0].ok, true, JSON.stringify(response('reload')[0]));
    c.publish('hiercore/test-line/trigger', 'P-1003', { qos: 1 });
    await waitFor('verdict after reload', () => verdicts().some((v) => v.part_id === 'P-1003'), 20_000);
    assert.equal(verdicts().find((v) => v.part_id === 'P-1003')!.bundle!.id, before, 'same file, same bundle id');

    c.publish('hiercore/test-line/cmd/reload', JSON.stringify({ bundle: 'missing.hcebundle' }));
    c.publish('hiercore/test-line/cmd/selfdestruct', '{}');
    c.publish('hiercore/test-line/cmd/pause', 'not json');
    await waitFor('error responses', () => response('reload').length >= 2 && response('selfdestruct').length && response('pause').length >= 2, 10_000);
    assert.match(response('reload')[1].error, /no bundle "missing.hcebundle" in the bundle folder.*available: line.hcebundle/);
    assert.match(response('selfdestruct')[0].error, /unknown command "selfdestruct"; commands: reload, snapshot, pause, resume, get_config, get_stats/);
    assert.match(response('pause')[1].error, /not JSON/);
    daemon.kill('SIGTERM');
    assert.equal(await daemon.exited, 0, daemon.out.slice(-1500));
  } finally {
    daemon.kill('SIGKILL');
    c.end(true);
  }
});

test('daemon: a camera that stops is reported lost on MQTT and in metrics, reconnected, and inspection resumes', { skip: spawnSyncOk('gstreamer-superficial'), timeout: 120_000 }, async () => {
  const dir = tempDir('daemon-cam');
  const { backbone, bundle } = await writeSyntheticBundle(dir);
  const port = await freePort();
  const metricsPort = await freePort();
  const file = join(dir, 'site.json');
  // A "camera" that delivers 15 frames and then ends, every time it is opened.
  writeFileSync(
    file,
    JSON.stringify({
      station: 'test-line',
      backbone,
      bundle,
      source: { kind: 'gstreamer', pipeline: 'videotestsrc num-buffers=15 pattern=ball ! video/x-raw,width=96,height=96,framerate=30/1', frame_timeout_ms: 2000 },
      trigger: { mode: 'free' },
      mqtt: { url: '', embedded_port: port, store_dir: join(dir, 'store'), stats_interval_s: 0, heatmap: false },
      state_dir: join(dir, 'state'),
      metrics: { port: metricsPort },
      archive: { dir: '' },
    }),
  );
  const daemon = new DaemonProcess(file);
  const camera: { state: string; reconnects: number }[] = [];
  let verdicts = 0;
  let c: mqtt.MqttClient | null = null;
  try {
    c = await connectWhenUp(port);
    c.on('message', (topic, payload) => {
      if (topic.endsWith('/camera')) camera.push(JSON.parse(payload.toString()));
      if (topic.endsWith('/verdict')) verdicts++;
    });
    await new Promise((r) => c!.subscribe('hiercore/test-line/#', { qos: 1 }, r));
    await waitFor('loss and recovery', () => camera.some((s) => s.state === 'lost') && camera.some((s) => s.state === 'streaming' && s.reconnects >= 1), 60_000);
    const seen = verdicts;
    await waitFor('verdicts after the reconnect', () => verdicts > seen, 30_000);
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    assert.match(text, /^hce_camera_reconnects_total [1-9]/m);
    assert.match(daemon.out, /camera lost: end of stream; reconnecting in/);
  } finally {
    daemon.kill('SIGTERM');
    await daemon.exited;
    c?.end(true);
  }
});

function spawnSyncOk(mod: string): string | false {
  const r = spawnSync(process.execPath, ['-e', `require('${mod}')`], { cwd: join(import.meta.dirname, '..') });
  return r.status === 0 ? false : `${mod} is not built (deploy/setup.sh, then npm ci)`;
}
