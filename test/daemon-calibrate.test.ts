/**
 * On-site calibration through the daemon (issue 10): `cmd/calibrate` captures from the live frame
 * stream while inspection goes on, builds the bundle in a child process, validates and activates it;
 * and a station started without a bundle answers UNCALIBRATED until its first calibration. In-process
 * daemon, embedded broker, the tiny random backbone: no mosquitto, no ../shared.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { syntheticPart, syntheticProduct, tempDir, writePartStream, writePng, writeSyntheticBackbone, writeSyntheticBundle, writeSyntheticEngineConfig } from './helpers/synthetic.ts';
import { readBundleFile, type BundleCluster } from '../src/bundle/bundle-file.ts';
import { freePort, waitFor } from './helpers/services.ts';
import { loadDaemonConfig } from '../src/service/config.ts';
import { Daemon } from '../src/service/daemon.ts';
import type { VerdictPayload } from '../src/publish/payloads.ts';
import type { CalibrationProgress } from '../src/web/station-control.ts';
import { FrameSelector } from '../src/service/calibration-capture.ts';
import { incrementFrom, RecipeError, recipeFrom, splitHoldout } from '../src/service/calibration-run.ts';
import { stationRecipe } from '../src/calibrate/recipe.ts';
import { validateOutcome } from '../src/service/calibration-validate.ts';

const BASE = 'hiercore/cal-line';

async function startDaemon(dir: string, o: { backbone: string; bundle: string; mode: 'all' | 'mqtt'; fps: number }) {
  const port = await freePort();
  const { config } = loadDaemonConfig({
    env: {},
    overrides: {
      station: 'cal-line',
      backbone: o.backbone,
      bundle: o.bundle,
      state_dir: join(dir, 'state'),
      source: { kind: 'folder', path: join(dir, 'stream'), fps: o.fps, loop: true },
      trigger: { mode: o.mode },
      mqtt: { url: '', embedded_port: port, store_dir: join(dir, 'store'), stats_interval_s: 0, queue_fsync: false },
      commands: { control: true },
      runtime: { threads: 1 },
      archive: { dir: '' },
      metrics: { port: 0 },
      calibration: { engine_config: writeSyntheticEngineConfig(dir), images: 25, holdout: 0.2, max_frr: 0.2, threads: 1 },
    },
  });
  const lines: string[] = [];
  const daemon = new Daemon(config, (level, msg) => lines.push(`${level} ${msg}`));
  await daemon.start();
  const sub = new Listener(`mqtt://127.0.0.1:${port}`);
  await sub.ready;
  return { daemon, sub, lines };
}

class Listener {
  readonly verdicts: (VerdictPayload & { at: number })[] = [];
  readonly progress: CalibrationProgress[] = [];
  readonly states: { state: string; bundle: { id: string; version?: string } | null }[] = [];
  readonly responses: { command: string; ok: boolean; result?: unknown; error?: string }[] = [];
  readonly client: mqtt.MqttClient;
  readonly ready: Promise<void>;
  constructor(url: string) {
    this.client = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 200 });
    this.ready = new Promise((r) => this.client.once('connect', () => this.client.subscribe(`${BASE}/#`, { qos: 1 }, () => r())));
    this.client.on('message', (topic, payload) => {
      const t = topic.slice(BASE.length + 1);
      if (t === 'verdict') this.verdicts.push({ ...(JSON.parse(payload.toString()) as VerdictPayload), at: Date.now() });
      else if (t === 'calibration') this.progress.push(JSON.parse(payload.toString()));
      else if (t === 'state') this.states.push(JSON.parse(payload.toString()));
      else if (t.endsWith('/response')) this.responses.push(JSON.parse(payload.toString()));
    });
  }
  command(name: string, body: unknown): Promise<{ ok: boolean; result?: unknown; error?: string }> {
    const before = this.responses.filter((r) => r.command === name).length;
    this.client.publish(`${BASE}/cmd/${name}`, JSON.stringify(body), { qos: 1 });
    return waitFor(`response to ${name}`, () => this.responses.filter((r) => r.command === name)[before], 20_000);
  }
  close(): Promise<void> {
    return new Promise((r) => this.client.end(true, {}, () => r()));
  }
}

const rate = (vs: { at: number }[], from: number, to: number) => vs.filter((v) => v.at >= from && v.at < to).length / ((to - from) / 1000);

test('daemon: cmd/calibrate builds, validates and activates a bundle from the live stream while inspection goes on', { timeout: 120_000 }, async () => {
  const dir = tempDir('daemon-cal');
  const { backbone, bundle } = await writeSyntheticBundle(dir);
  await writePartStream(join(dir, 'stream'), 40, 7000);
  // 50 frames/s: a busy line that leaves the niced calibration some CPU. HCE_CAL_TEST_FPS=200 saturates
  // inference instead (README "Calibrating on site" has both figures).
  const fps = Number(process.env.HCE_CAL_TEST_FPS) || 50;
  const { daemon, sub } = await startDaemon(dir, { backbone, bundle, mode: 'all', fps });
  try {
    await waitFor('first verdicts', () => sub.verdicts.length >= 10, 30_000);
    const oldId = sub.verdicts[0].bundle!.id;
    const tWarm = Date.now();
    await new Promise((r) => setTimeout(r, 3000));
    const tCmd = Date.now();
    const started = await sub.command('calibrate', {});
    assert.equal(started.ok, true, JSON.stringify(started));
    const refused = await sub.command('calibrate', {});
    assert.equal(refused.ok, false);
    assert.match(refused.error!, /is under way .*one at a time/);

    const end = await waitFor('calibration finished', () => sub.progress.find((p) => p.stage === 'done' || p.stage === 'failed'), 90_000);
    const tEnd = Date.now();
    assert.equal(end.stage, 'done', JSON.stringify(end));
    assert.equal(end.result?.activated, true);
    const stages = new Set(sub.progress.map((p) => p.stage));
    for (const s of ['capture', 'embed', 'bank', 'validate', 'activate', 'done']) assert.ok(stages.has(s as never), `progress stage ${s} published (${[...stages]})`);
    assert.ok(sub.progress.every((p) => p.run_id === end.run_id && p.done <= p.total));
    assert.ok(existsSync(end.result!.report!), 'report.html written');
    const runDir = join(dir, 'state', 'calibration', 'runs', end.run_id);
    for (const f of ['recipe.json', 'log.txt', 'report.html']) assert.ok(existsSync(join(runDir, f)), f);
    const html = readFileSync(end.result!.report!, 'utf8');
    for (const part of ['Warnings', 'Time per stage', '<svg', 'data:image/jpeg;base64,']) assert.ok(html.includes(part), `report has ${part}`);
    assert.equal(readdirSync(join(runDir, 'images')).length, 25);

    const version = end.result!.version!;
    assert.match(version, /^v0001-\d{8}$/);
    await waitFor('verdicts of the new bundle', () => sub.verdicts.filter((v) => v.bundle?.version === version).length >= 10, 30_000);
    const after = [...sub.verdicts];
    const newId = after.find((v) => v.bundle?.version === version)!.bundle!.id;
    assert.notEqual(newId, oldId);
    const tLast = Date.now();

    // Inspection went on during the run, and every frame got exactly one verdict, scored against one bundle.
    const during = after.filter((v) => v.at > tCmd && v.at < tEnd && v.bundle?.id === oldId).length;
    assert.ok(during >= 5, `verdicts of the old bundle during the calibration: ${during}`);
    const byFrame = [...after].sort((a, b) => a.frame! - b.frame!);
    assert.deepEqual(
      byFrame.map((v) => v.frame),
      Array.from({ length: byFrame.length }, (_, i) => i + 1),
      'no frame lost or doubled',
    );
    const switchAt = byFrame.findIndex((v) => v.bundle!.id === newId);
    assert.ok(switchAt > 0);
    assert.ok(
      byFrame.slice(0, switchAt).every((v) => v.bundle!.id === oldId),
      'before the switch: the old bundle only',
    );
    assert.ok(
      byFrame.slice(switchAt).every((v) => v.bundle!.id === newId),
      'after the switch: the new bundle only',
    );
    const ok = byFrame.slice(switchAt).filter((v) => v.verdict === 'OK').length;
    assert.ok(ok >= 0.8 * (byFrame.length - switchAt), `good parts OK under the new bundle: ${ok}/${byFrame.length - switchAt}`);

    const before = rate(after, tWarm, tCmd);
    const whileCal = rate(after, tCmd, tEnd);
    const later = rate(after, tEnd, tLast);
    console.log(`verdicts/s: before ${before.toFixed(2)}, during calibration ${whileCal.toFixed(2)} (${((tEnd - tCmd) / 1000).toFixed(1)} s), after ${later.toFixed(2)}`);

    const list = (await sub.command('get_bundles', {})).result as { version: string; active: boolean; validated: boolean }[];
    assert.deepEqual(
      list.map((v) => [v.version, v.active, v.validated]),
      [[version, true, true]],
    );

    // Rollback returns to the bundle the calibration replaced; activate brings the version back.
    assert.equal((await sub.command('rollback', {})).ok, true);
    const n = sub.verdicts.length;
    await waitFor('verdicts of the old bundle again', () => sub.verdicts.slice(n).filter((v) => v.bundle?.id === oldId).length >= 3, 20_000);
    const act = await sub.command('activate', { version });
    assert.equal(act.ok, true, JSON.stringify(act));
    assert.equal((act.result as { active: boolean }).active, true);
    const bad = await sub.command('activate', { version: '../etc/passwd' });
    assert.equal(bad.ok, false);
  } finally {
    await daemon.stop('test end');
    await sub.close();
  }
});

test('daemon: starts without a bundle (uncalibrated, triggers answered UNCALIBRATED) and inspects after its first calibration', { timeout: 120_000 }, async () => {
  const dir = tempDir('daemon-uncal');
  const backbone = writeSyntheticBackbone(join(dir, 'bb'));
  await writePartStream(join(dir, 'stream'), 40, 8000);
  const { daemon, sub } = await startDaemon(dir, { backbone, bundle: '', mode: 'mqtt', fps: 10 });
  try {
    await waitFor('state uncalibrated', () => sub.states.find((s) => s.state === 'uncalibrated'), 20_000);
    assert.equal(daemon.control.view().mode, 'uncalibrated');
    assert.equal(daemon.control.view().bundle, null);
    sub.client.publish(`${BASE}/trigger`, 'part-1', { qos: 1 });
    const v = await waitFor('an UNCALIBRATED verdict', () => sub.verdicts.find((x) => x.part_id === 'part-1'), 20_000);
    assert.equal(v.verdict, 'UNCALIBRATED');
    assert.equal(v.score, null);
    assert.equal(v.bundle, null);
    const snap = await sub.command('snapshot', {});
    assert.equal(snap.ok, false);
    assert.match(snap.error!, /no bundle yet/);

    // A run can be cancelled: its folder and log stay.
    assert.equal((await sub.command('calibrate', { recipe: { images: 2000 } })).ok, true);
    const stop = await sub.command('calibrate', { stop: true });
    assert.equal(stop.ok, true, JSON.stringify(stop));
    const stopped = await waitFor('stopped progress', () => sub.progress.find((p) => p.stage === 'stopped'), 10_000);
    assert.ok(existsSync(join(dir, 'state', 'calibration', 'runs', stopped.run_id, 'log.txt')));
    assert.equal((await sub.command('calibrate', { recipe: { imagez: 20 } })).ok, false, 'an unknown recipe field is refused');

    assert.equal((await sub.command('calibrate', { recipe: { images: 20 } })).ok, true);
    const end = await waitFor('calibration finished', () => sub.progress.find((p) => p.stage === 'done' || p.stage === 'failed'), 90_000);
    assert.equal(end.stage, 'done', JSON.stringify(end));
    const st = await waitFor('state inspecting', () => sub.states.find((s) => s.state === 'inspecting'), 20_000);
    assert.equal(st.bundle?.version, end.result!.version);

    sub.client.publish(`${BASE}/trigger`, 'part-2', { qos: 1 });
    const v2 = await waitFor('a scored verdict', () => sub.verdicts.find((x) => x.part_id === 'part-2'), 20_000);
    assert.ok(['OK', 'NG', 'UNKNOWN'].includes(v2.verdict), v2.verdict);
    assert.equal(v2.bundle?.version, end.result!.version);
    assert.ok(v2.bundle?.id);
    // The web page's view of the same station (StationControl).
    const view = daemon.control.view();
    assert.equal(view.mode, 'inspecting');
    assert.equal(view.bundle?.version, end.result!.version);
    assert.equal(view.counts.verdicts.UNCALIBRATED, 1);
    assert.equal(daemon.control.recentVerdicts(1)[0].part_id, 'part-2');
    assert.match((await daemon.control.report(end.run_id)) ?? '', /PASSED/);
    assert.equal(await daemon.control.report('../../etc/passwd'), null);
    assert.deepEqual(
      daemon.control.bundles().map((b) => [b.version, b.active]),
      [[end.result!.version, true]],
    );

    // Remembered: rollback has nothing before the first bundle.
    const rb = await sub.command('rollback', {});
    assert.equal(rb.ok, false);
    assert.match(rb.error!, /no previous bundle/);
  } finally {
    await daemon.stop('test end');
    await sub.close();
  }
});

/** What must not change in a cluster an increment leaves alone. */
const frozen = (c: BundleCluster) => ({
  info: c.info,
  keys: Buffer.from(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength).toString('base64'),
  bank: Buffer.from(c.bank.vectors.buffer, c.bank.vectors.byteOffset, c.bank.vectors.byteLength).toString('base64'),
});

test('daemon: cmd/calibrate add_product adds a new product from the camera and add_images rebuilds one cluster; the others stay byte for byte', { timeout: 120_000 }, async () => {
  const dir = tempDir('daemon-inc');
  const { backbone, bundle } = await writeSyntheticBundle(dir); // discs
  // A product the bundle has never seen arrives on the line.
  const stream = join(dir, 'stream');
  mkdirSync(stream);
  for (let i = 0; i < 40; i++) await writePng(join(stream, `${String(i).padStart(4, '0')}.png`), syntheticProduct('plate', 96, 9000 + i), 96, 96);
  const { daemon, sub } = await startDaemon(dir, { backbone, bundle, mode: 'all', fps: 20 });
  try {
    await waitFor('first verdicts', () => sub.verdicts.length >= 10, 30_000);
    const first = sub.verdicts.length;
    const unknown = sub.verdicts.filter((v) => v.verdict === 'UNKNOWN').length;
    assert.ok(unknown >= 0.8 * first, `the new product is UNKNOWN before it is added: ${unknown}/${first}`);
    const base = readBundleFile(bundle);
    const disc = base.clusters[0].info.name;

    for (const [body, why] of [
      [{ add_product: disc }, /already has a cluster/],
      [{ add_images: 'nope' }, /no cluster "nope"/],
      [{ add_product: 'a', add_images: disc }, /one change at a time/],
      [{ add_product: '../x' }, /product name/],
    ] as const) {
      const r = await sub.command('calibrate', body);
      assert.equal(r.ok, false, JSON.stringify(body));
      assert.match(r.error!, why);
    }

    assert.equal((await sub.command('calibrate', { add_product: 'plate' })).ok, true);
    const end = await waitFor('add_product finished', () => sub.progress.find((p) => p.stage === 'done' || p.stage === 'failed'), 90_000);
    assert.equal(end.stage, 'done', JSON.stringify(end));
    const added = readBundleFile(join(dir, `${end.result!.version}.hcebundle`));
    assert.deepEqual(
      added.clusters.map((c) => c.info.name),
      [disc, 'plate'],
    );
    assert.deepEqual(frozen(added.clusters[0]), frozen(base.clusters[0]), 'the disc cluster is untouched by add_product');
    assert.match(readFileSync(end.result!.report!, 'utf8'), /Unchanged by this run/);
    const n = sub.verdicts.length;
    const scored = await waitFor(
      'verdicts of the new bundle',
      () => {
        const mine = sub.verdicts.slice(n).filter((v) => v.bundle?.version === end.result!.version);
        return mine.length >= 10 ? mine : undefined;
      },
      30_000,
    );
    const plates = scored.filter((v) => v.cluster === 'plate' && v.verdict === 'OK').length;
    console.log(`before add_product: ${unknown}/${first} UNKNOWN; after: ${plates}/${scored.length} OK in plate`);
    assert.ok(plates >= 0.8 * scored.length, `the new product is routed to its cluster and passes: ${plates}/${scored.length}`);

    // Approved good images of one cluster: only its bank and threshold are rebuilt.
    const before = sub.progress.length;
    assert.equal((await sub.command('calibrate', { add_images: 'plate', recipe: { images: 10 } })).ok, true);
    const end2 = await waitFor('add_images finished', () => sub.progress.slice(before).find((p) => p.stage === 'done' || p.stage === 'failed'), 90_000);
    assert.equal(end2.stage, 'done', JSON.stringify(end2));
    const grown = readBundleFile(join(dir, `${end2.result!.version}.hcebundle`));
    assert.deepEqual(frozen(grown.clusters[0]), frozen(base.clusters[0]), 'the disc cluster is untouched by add_images');
    assert.equal(grown.clusters[1].info.members.length, added.clusters[1].info.members.length + 8, 'the 8 new training frames (2 held out) join the plate cluster');
    assert.notDeepEqual(frozen(grown.clusters[1]).bank, frozen(added.clusters[1]).bank);
  } finally {
    await daemon.stop('test end');
    await sub.close();
  }
});

test('calibration pieces: capture skips repeats and blank views, hold-out split, recipe checks, validation rules', () => {
  const part = (seed: number) => ({ width: 96, height: 96, data: syntheticPart(96, seed), capturedAt: 0 });
  const sel = new FrameSelector({ policy: 'count', intervalMs: 0, duplicateDiff: 0.5, blankStd: 3 });
  const a = part(1);
  assert.deepEqual(sel.offer(a, false), { keep: true });
  const noisy = { ...a, data: a.data.map((v, i) => Math.max(0, Math.min(255, v + ((i * 7919) % 9) - 4))) };
  assert.deepEqual(sel.offer(noisy, false), { keep: false, why: 'duplicate' }, 'the same part with sensor noise');
  assert.deepEqual(sel.offer(part(2), false), { keep: true });
  assert.deepEqual(sel.offer({ ...a, data: new Uint8Array(96 * 96 * 3).fill(12) }, false), { keep: false, why: 'blank' });
  const trig = new FrameSelector({ policy: 'trigger', intervalMs: 0, duplicateDiff: 0.5, blankStd: 3 });
  assert.equal(trig.offer(part(3), false).keep, false);
  assert.equal(trig.offer(part(3), true).keep, true);
  const every = new FrameSelector({ policy: 'interval', intervalMs: 1000, duplicateDiff: 0.5, blankStd: 3 });
  assert.equal(every.offer({ ...part(4), capturedAt: 10_000 }, false).keep, true);
  assert.equal(every.offer({ ...part(5), capturedAt: 10_500 }, false).keep, false);
  assert.equal(every.offer({ ...part(6), capturedAt: 11_000 }, false).keep, true);

  const { train, holdout } = splitHoldout([...Array(25).keys()], 0.2);
  assert.deepEqual(holdout, [4, 9, 14, 19, 24]);
  assert.equal(train.length, 20);

  const base = stationRecipe({ images: 60, policy: 'count', interval_s: 1, holdout: 0.2, max_frr: 0.05 });
  assert.deepEqual(recipeFrom(base, { images: 30, policy: 'interval' }), { ...base, capture: { ...base.capture, images: 30, policy: 'interval' } });
  assert.throws(() => recipeFrom(base, { images: 2 }), /4-5000/);
  assert.throws(() => recipeFrom(base, { holdout: 0 }), /holdout/);
  assert.throws(() => recipeFrom(base, { path: '/etc' }), /unknown recipe field "path"/);

  const outcome = (verdicts: string[], home = 4) => ({
    bundle_id: 'b',
    clusters: [{ name: 'cluster-0', size: 20, threshold: 1, routing_limit: 0.1 }],
    heldOut: verdicts.map((v, i) => ({ path: `${i}.png`, verdict: v as 'OK', cluster: v === 'UNKNOWN' ? null : 'cluster-0', nearest: 'cluster-0', score: null })),
    keysHome: [{ name: 'cluster-0', home, keys: 4 }],
    duration_s: 1,
  });
  assert.equal(validateOutcome(outcome(['OK', 'OK', 'OK', 'OK', 'OK']), 0.05).passed, true);
  const frr = validateOutcome(outcome(['OK', 'OK', 'OK', 'OK', 'UNKNOWN']), 0.05);
  assert.equal(frr.passed, false, 'an UNKNOWN held-out good frame is a reject of its nearest cluster');
  assert.equal(frr.clusters[0].frr, 0.2);
  assert.match(validateOutcome(outcome(['OK'], 3), 0.05).problems.join(), /1 of 4 routing keys route elsewhere/);
  assert.match(validateOutcome(outcome([]), 0.05).problems.join(), /no held-out frames/);

  // cmd/calibrate's one-product changes.
  assert.equal(incrementFrom({ recipe: { images: 5 } }), undefined);
  assert.deepEqual(incrementFrom({ add_product: 'gear-b.2' }), { kind: 'product', name: 'gear-b.2' });
  assert.deepEqual(incrementFrom({ add_images: 'cluster-1' }), { kind: 'images', cluster: 'cluster-1' });
  for (const bad of [{ add_product: 5 }, { add_product: '' }, { add_images: null }, { add_images: 'a/b' }, { add_product: 'x'.repeat(65) }])
    assert.throws(() => incrementFrom(bad), RecipeError, JSON.stringify(bad));
});
