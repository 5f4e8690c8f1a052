import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { calibrate } from '../src/calibrate/calibrate.ts';
import { decodeBundle, encodeBundle, readBundleFile, writeBundleFile } from '../src/bundle/bundle-file.ts';
import { Inspector } from '../src/inspect/inspector.ts';
import { syntheticCalibrationOptions, syntheticProduct, tempDir, writePng, writeSyntheticBackbone, type ProductKind } from './helpers/synthetic.ts';

const SIZE = 96;

async function writeSet(dir: string, kind: ProductKind, n: number, seed0: number): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const p = join(dir, `${kind}_${String(i).padStart(3, '0')}.png`);
    await writePng(p, syntheticProduct(kind, SIZE, seed0 + i), SIZE, SIZE);
    out.push(p);
  }
  return out;
}

const options = syntheticCalibrationOptions;

test('calibrate on a mixed, unlabelled set: one cluster per product, verdicts OK/NG, unknown product rejected', async () => {
  const dir = tempDir('cal');
  const bb = writeSyntheticBackbone(join(dir, 'bb'));
  const discs = await writeSet(join(dir, 'mixed'), 'disc', 16, 100);
  const plates = await writeSet(join(dir, 'mixed'), 'plate', 16, 200);
  const images = [...discs, ...plates].sort(); // interleaving order must not matter
  const { bundle } = await calibrate(options(bb, images));
  assert.equal(bundle.clusters.length, 2, bundle.header.calibration.clustering?.reason);
  for (const c of bundle.clusters) {
    const kinds = new Set(c.info.members.map((m) => m.split('/').pop()!.split('_')[0]));
    assert.equal(kinds.size, 1, `cluster ${c.info.name} holds one product: ${[...kinds]}`);
    assert.equal(c.info.members.length, 16);
    assert.ok(c.info.threshold > c.info.statistics.nominal.p50, 'threshold above the median good score');
    assert.equal(c.info.statistics.nominal.n, 16, 'every member scored once, held out');
  }

  // Round trip through the file.
  const file = join(dir, 'lines.hcebundle');
  writeBundleFile(file, bundle);
  const back = readBundleFile(file);
  assert.deepEqual(back.header.clusters, decodeBundle(encodeBundle(bundle)).header.clusters);
  assert.deepEqual(Array.from(back.clusters[1].keys), Array.from(bundle.clusters[1].keys));
  assert.deepEqual(Array.from(back.clusters[0].bank.vectors.subarray(0, 64)), Array.from(bundle.clusters[0].bank.vectors.subarray(0, 64)));

  const insp = await Inspector.load(back, bb);
  const discCluster = back.clusters.find((c) => c.info.members[0].includes('disc_'))!.info.name;
  const plateCluster = back.clusters.find((c) => c.info.members[0].includes('plate_'))!.info.name;
  const verdicts: Record<string, string[]> = { good: [], bad: [], mesh: [] };
  for (let i = 0; i < 6; i++) {
    for (const [kind, cluster] of [
      ['disc', discCluster],
      ['plate', plateCluster],
    ] as const) {
      const good = await insp.inspect({ width: SIZE, height: SIZE, data: syntheticProduct(kind, SIZE, 900 + i) });
      assert.equal(good.cluster, cluster, `new good ${kind} routes to its cluster`);
      verdicts.good.push(good.verdict);
      const bad = await insp.inspect({ width: SIZE, height: SIZE, data: syntheticProduct(kind, SIZE, 950 + i, { x: 30 + i * 4, y: kind === 'plate' ? 12 : 40, w: 10, h: 6 }) });
      verdicts.bad.push(bad.verdict);
      if (bad.verdict === 'NG') assert.ok(bad.normalised_score! > 0.5 && bad.heatmap!.length === SIZE * SIZE);
    }
    const mesh = await insp.inspect({ width: SIZE, height: SIZE, data: syntheticProduct('mesh', SIZE, 990 + i) });
    verdicts.mesh.push(mesh.verdict);
    if (mesh.verdict === 'UNKNOWN') assert.equal(mesh.score, null, 'an unknown product is never scored');
  }
  const share = (v: string[], k: string) => v.filter((x) => x === k).length / v.length;
  assert.ok(share(verdicts.good, 'OK') >= 11 / 12, `good parts: ${verdicts.good}`);
  assert.ok(share(verdicts.bad, 'NG') >= 11 / 12, `planted defects: ${verdicts.bad}`);
  assert.equal(share(verdicts.mesh, 'UNKNOWN'), 1, `never-calibrated product: ${verdicts.mesh}`);
  await insp.release();

  // A bundle for another backbone is refused with the reason.
  const other = writeSyntheticBackbone(join(dir, 'bb2'), { seed: 5 });
  await assert.rejects(Inspector.load(back, other), /calibrated with backbone "synthetic-cnn" .* recalibrate/);
});

test('calibrate: one product gives one cluster; known_class uses labels; F1 threshold from defect images; tiny classes are refused', async () => {
  const dir = tempDir('cal1');
  const bb = writeSyntheticBackbone(join(dir, 'bb'));
  const discs = await writeSet(join(dir, 'discs'), 'disc', 20, 300);
  const { bundle: one } = await calibrate(options(bb, discs, { folds: 3 }));
  assert.equal(one.clusters.length, 1, one.header.calibration.clustering?.reason);

  const plates = await writeSet(join(dir, 'plates'), 'plate', 10, 400);
  const defects: string[] = [];
  mkdirSync(join(dir, 'defects'), { recursive: true });
  for (let i = 0; i < 4; i++) {
    const p = join(dir, 'defects', `d${i}.png`);
    await writePng(p, syntheticProduct('disc', SIZE, 600 + i, { x: 35, y: 30 + 5 * i, w: 12, h: 6 }), SIZE, SIZE);
    defects.push(p);
  }
  const { bundle: known } = await calibrate(options(bb, [...discs, ...plates], { labels: [...discs.map(() => 'disc'), ...plates.map(() => 'plate')], defects, thresholdSource: 'f1', folds: 3 }));
  assert.deepEqual(
    known.header.clusters.map((c) => [c.name, c.members.length]),
    [
      ['disc', 20],
      ['plate', 10],
    ],
  );
  assert.equal(known.header.calibration.mode, 'known_class');
  const disc = known.header.clusters[0];
  assert.equal(disc.thresholds.defect_images, 4, 'the defects routed to the disc cluster');
  assert.equal(disc.threshold_source, 'f1');
  assert.equal(disc.threshold, disc.thresholds.f1);
  assert.equal(known.header.clusters[1].threshold_source, 'frr', 'no defects for plates: FRR threshold kept');

  await assert.rejects(
    calibrate(options(bb, [...discs, ...plates.slice(0, 5)], { labels: [...discs.map(() => 'disc'), ...plates.slice(0, 5).map(() => 'plate')] })),
    /plate has 5 images, fewer than the minimum 8/,
  );
  await assert.rejects(calibrate(options(bb, [])), /no nominal images/);
});

test('bundle file: truncation, corruption, wrong magic and version are clear errors', async () => {
  const dir = tempDir('bundle');
  const bb = writeSyntheticBackbone(join(dir, 'bb'));
  const discs = await writeSet(join(dir, 'd'), 'disc', 10, 1);
  const bytes = encodeBundle((await calibrate(options(bb, discs, { folds: 2, coreset: { ratio: 0.05, projectionDim: 16, seed: 0, dtype: 'float16' } }))).bundle);
  const file = join(dir, 'b.hcebundle');
  writeFileSync(file, bytes);
  const ok = readBundleFile(file);
  assert.equal(ok.clusters[0].bank.header.dtype, 'float16');
  assert.throws(() => decodeBundle(bytes.subarray(0, bytes.length - 10)), /truncated/);
  const flipped = Uint8Array.from(bytes);
  flipped[bytes.length - 100] ^= 0xff;
  assert.throws(() => decodeBundle(flipped), /corrupted \(checksum mismatch\)/);
  const v3 = Uint8Array.from(bytes);
  v3[8] = 3;
  assert.throws(() => decodeBundle(v3), /format version 3 is not supported .*recalibrate/);
  const bank = Uint8Array.from(bytes);
  bank.set(new TextEncoder().encode('HCEBANK\0'), 0);
  assert.throws(() => decodeBundle(bank), /not a hiercore-edge bundle .*single bank file/);
  assert.throws(() => readBundleFile(join(dir, 'missing.hcebundle')), /cannot read bundle .*missing/);
  assert.equal(readFileSync(file).length, bytes.length);
});

/** A dark grid of pitch 12 px at any frame size: one texture, whatever the window it is filmed in (`light`: the lamp's gain). */
function grid(width: number, height: number, seed: number, light = 1): Uint8Array {
  const shift = seed % 12;
  const img = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const line = (x + shift) % 12 < 3 || (y + 2 * shift) % 12 < 3;
      const v = (line ? 20 : 190) + ((x * 7 + y * 13 + seed) % 9);
      img.set([v * light, (line ? v : v * 0.7) * light, (line ? v : v * 0.4) * light], 3 * (y * width + x));
    }
  }
  return img;
}

/** 12 grids at 96x96 and 12 at 192x96, the larger under a lamp of gain `light`; their paths. */
async function writeGrids(dir: string, light: number): Promise<string[]> {
  const images: string[] = [];
  for (let i = 0; i < 12; i++) {
    for (const [w, h, l] of [
      [96, 96, 1],
      [192, 96, light],
    ]) {
      const p = join(dir, `grid_${w}_${i}.png`);
      await writePng(p, grid(w, h, i, l), w, h);
      images.push(p);
    }
  }
  return images;
}

test('calibrate: a texture in two frame sizes, the larger frames under a dimmer lamp, is one cluster', async () => {
  const dir = tempDir('cal-scale-light');
  const bb = writeSyntheticBackbone(join(dir, 'bb'));
  mkdirSync(join(dir, 'mixed'), { recursive: true });
  const images = await writeGrids(join(dir, 'mixed'), 0.45);
  images.push(...(await writeSet(join(dir, 'mixed'), 'plate', 16, 300)));
  const { bundle } = await calibrate(options(bb, images));
  const k = bundle.header.calibration.clustering!;
  assert.equal(bundle.clusters.length, 2, `${k.reason} ${JSON.stringify(k.scale_tests)}`);
  for (const c of bundle.clusters) assert.equal(new Set(c.info.members.map((m) => m.split('/').pop()!.split('_')[0])).size, 1, k.reason);
});

test('calibrate: a texture in two frame sizes is one cluster, and the scale test that compared it with another product is in the header', async () => {
  const dir = tempDir('cal-scale');
  const bb = writeSyntheticBackbone(join(dir, 'bb'));
  mkdirSync(join(dir, 'mixed'), { recursive: true });
  const images = await writeGrids(join(dir, 'mixed'), 1);
  images.push(...(await writeSet(join(dir, 'mixed'), 'plate', 16, 300)));
  const { bundle } = await calibrate(options(bb, images));
  const k = bundle.header.calibration.clustering!;
  assert.equal(bundle.clusters.length, 2, k.reason);
  for (const c of bundle.clusters) assert.equal(new Set(c.info.members.map((m) => m.split('/').pop()!.split('_')[0])).size, 1, k.reason);
  // the plate (96x96) was compared with the grid cluster (96x96 and 192x96) cropped to 96x96 and kept apart
  const tests = k.scale_tests ?? [];
  assert.ok(tests.length >= 1, k.reason);
  for (const t of tests) assert.equal(t.window, '96x96');
  assert.ok(tests.some((t) => t.mixing < 0.4));
  assert.deepEqual(decodeBundle(encodeBundle(bundle)).header.calibration.clustering?.scale_tests, tests);
  // the quarter-turn test compared the 96x96 grids with the 96x96 plates (a turned plate is no grid)
  const turns = k.turn_tests ?? [];
  assert.ok(turns.length >= 1 && turns.every((t) => t.window === '96x96'), JSON.stringify(turns));
  assert.ok(!(k.merged as { reason: string }[]).some((m) => m.reason === 'turn'), k.reason);
  // test ids name the bundle's clusters; an id beyond them or a bad window is a clear error on reading
  for (const t of tests) assert.ok(t.a < bundle.clusters.length && t.b < bundle.clusters.length);
  const bad = structuredClone(bundle.header);
  bad.calibration.clustering!.scale_tests![0].b = 99;
  assert.throws(() => decodeBundle(encodeBundle({ ...bundle, header: bad })), /scale_tests\[0\]\.b/);
  bad.calibration.clustering!.scale_tests![0] = { ...tests[0], window: 'wide' };
  assert.throws(() => decodeBundle(encodeBundle({ ...bundle, header: bad })), /scale_tests\[0\]\.window/);
  // FINCH splits this grid by frame size (the input scales 96 px and 192 px frames differently); the
  // scale test is what joins it, and the merge is logged
  const merged = k.merged as { reason: string; window?: string }[];
  assert.ok(
    merged.some((m) => m.reason === 'scale' && m.window === '96x96'),
    k.reason,
  );
  const o = options(bb, images);
  const off = await calibrate({ ...o, clustering: { ...o.clustering, scaleMerge: 0 } });
  assert.equal(off.bundle.clusters.length, 3, off.bundle.header.calibration.clustering!.reason);
  assert.equal(off.bundle.header.calibration.clustering!.scale_tests, undefined);
});
