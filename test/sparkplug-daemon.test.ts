/**
 * Sparkplug B through the whole daemon: the station's births carry its bundle and clusters, verdicts
 * move the Device's counters, the last part's frame id matches the JSON verdict stream, and a DCMD
 * write runs a station command under the same rules as the JSON topics.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import mqtt from 'mqtt';
import { syntheticPart, tempDir, writePng, writeSyntheticBundle } from './helpers/synthetic.ts';
import { DaemonProcess, Mosquitto, freePort, waitFor, which } from './helpers/services.ts';
import { decodePayload, encodePayload, type InPayload } from '../src/publish/sparkplug/codec.ts';
import { METRIC } from '../src/publish/sparkplug/metrics.ts';

const skip = which('mosquitto') ? false : 'mosquitto is not installed (deploy/setup.sh installs it)';

test('daemon + Sparkplug: births with bundle and clusters, counters follow verdicts, frame id matches the JSON stream, DCMD pause obeys commands.control', { skip, timeout: 120_000 }, async () => {
  const dir = tempDir('spb-daemon');
  const { backbone, bundle } = await writeSyntheticBundle(dir);
  mkdirSync(join(dir, 'stream'));
  for (let i = 0; i < 10; i++) await writePng(join(dir, 'stream', `${i}.png`), syntheticPart(96, 70_000 + i), 96, 96);
  const broker = new Mosquitto(join(dir, 'broker'), await freePort());
  await broker.start();
  const got: { topic: string; p: InPayload | null; json?: any }[] = [];
  const host = mqtt.connect(broker.url, { protocolVersion: 5, clientId: 'scada' });
  host.on('message', (topic, payload) => {
    if (topic.startsWith('spBv1.0/')) got.push({ topic, p: decodePayload(payload) });
    else got.push({ topic, p: null, json: JSON.parse(payload.toString()) });
  });
  await new Promise((r) => host.once('connect', r));
  await new Promise((r) => host.subscribe(['spBv1.0/plant/#', 'hiercore/spb-line/verdict'], { qos: 1 }, r));
  const cfg = join(dir, 'site.json');
  writeFileSync(
    cfg,
    JSON.stringify({
      station: 'spb-line',
      backbone,
      bundle,
      state_dir: join(dir, 'state'),
      source: { kind: 'folder', path: join(dir, 'stream'), fps: 10, loop: true },
      trigger: { mode: 'all' },
      mqtt: { url: broker.url, store_dir: join(dir, 'store'), stats_interval_s: 0, heatmap: false },
      sparkplug: { enabled: true, group_id: 'plant', period_s: 0 },
      commands: { control: false },
      metrics: { port: 0 },
      archive: { dir: '' },
      runtime: { threads: 1 },
    }),
  );
  const daemon = new DaemonProcess(cfg);
  const metricOf = (p: InPayload | null, name: string) => p?.metrics.find((m) => m.name === name);
  try {
    await waitFor('DBIRTH with the bundle', () => got.find((m) => m.topic === 'spBv1.0/plant/DBIRTH/spb-line/camera' && metricOf(m.p, 'Bundle/Id')?.value), 60_000).catch((e) => {
      throw new Error(`${e.message}: ${got.map((m) => m.topic).join(', ')}; ${daemon.out.slice(-1500)}`);
    });
    const births = got.filter((m) => m.topic.includes('BIRTH'));
    assert.ok(births[0].topic.includes('NBIRTH'), 'NBIRTH first');
    const dbirth = births.find((m) => m.topic.includes('DBIRTH'))!.p!;
    const aliasOf = new Map(dbirth.metrics.map((m) => [m.alias, m.name]));
    assert.ok(
      dbirth.metrics.some((m) => m.name?.startsWith('Clusters/cluster-0/')),
      "the bundle's clusters are metrics",
    );
    // DDATA carry aliases only; find the last part's frame id among them.
    await waitFor('DDATA with a frame id', () => got.some((m) => m.topic.endsWith('DDATA/spb-line/camera') && m.p!.metrics.some((x) => aliasOf.get(x.alias) === 'Last Part/Frame Id')), 30_000);
    const frameIds = got.filter((m) => m.topic.endsWith('DDATA/spb-line/camera')).flatMap((m) => m.p!.metrics.filter((x) => aliasOf.get(x.alias) === 'Last Part/Frame Id').map((x) => String(x.value)));
    await waitFor('the JSON verdict of every Sparkplug frame id', () => frameIds.every((id) => got.some((m) => m.json?.frame_id === id)), 20_000);
    // The OK counter in DDATA only grows, and never runs ahead of the OK verdicts on the JSON stream.
    const okAlias = dbirth.metrics.find((m) => m.name === 'Verdicts/OK')!.alias;
    const oks = () => got.filter((m) => m.topic.endsWith('DDATA/spb-line/camera')).flatMap((m) => m.p!.metrics.filter((x) => x.alias === okAlias).map((x) => Number(x.value)));
    await waitFor('OK counter moving', () => oks().length >= 3, 20_000);
    const seq = oks();
    assert.ok(seq.every((v, i) => i === 0 || v >= seq[i - 1]) && seq.at(-1)! > seq[0], `Verdicts/OK grows: ${seq.join(',')}`);
    await new Promise((r) => setTimeout(r, 500));
    const okJson = got.filter((m) => m.json?.verdict === 'OK').length;
    assert.ok(seq.at(-1)! <= okJson, `counter ${seq.at(-1)} vs ${okJson} OK verdicts on the JSON stream`);

    // DCMD pause with commands.control off: refused, reported in Last Result, nothing paused.
    const pause = encodePayload({ timestamp: Date.now(), metrics: [{ name: METRIC.ctlPause, timestamp: Date.now(), type: 'Boolean', withDatatype: true, value: true }] });
    host.publish('spBv1.0/plant/DCMD/spb-line/camera', Buffer.from(pause), { qos: 0 });
    await waitFor(
      'Last Result',
      () =>
        got.some(
          (m) =>
            m.topic.endsWith('DDATA/spb-line/camera') &&
            m.p!.metrics.some((x) => aliasOf.get(x.alias) === METRIC.lastResult && /pause: .*disabled here \(commands.control is false\)/.test(String(x.value))),
        ),
      20_000,
    ).catch((e) => {
      const results = got
        .filter((m) => m.p)
        .flatMap((m) => m.p!.metrics.filter((x) => x.name === METRIC.lastResult || aliasOf.get(x.alias) === METRIC.lastResult).map((x) => `${m.topic}: ${String(x.value)}`));
      throw new Error(
        `${e.message}: ${results.join(' | ')}; ${daemon.out
          .split('\n')
          .filter((l) => /sparkplug|command/i.test(l))
          .join('\n')}`,
      );
    });
    const pausedAlias = dbirth.metrics.find((m) => m.name === 'Paused')!.alias;
    assert.ok(!got.some((m) => m.p?.metrics.some((x) => x.alias === pausedAlias && x.value === true)), 'the refused DCMD paused nothing');
    const before = got.filter((m) => m.json).length;
    await waitFor('verdicts still flowing after the refused pause', () => got.filter((m) => m.json).length > before + 3, 20_000);
    daemon.kill('SIGKILL');
    await waitFor('NDEATH from the broker when the daemon is killed', () => got.some((m) => m.topic === 'spBv1.0/plant/NDEATH/spb-line'), 30_000);
  } finally {
    daemon.kill('SIGKILL');
    host.end(true);
    await broker.stop();
  }
});
