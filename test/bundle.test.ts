import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  BUNDLE_MAGIC,
  BundleFileError,
  checkScoringOverrides,
  decodeBundle,
  decodeBundleHeader,
  encodeBundle,
  NO_SCORING_OVERRIDES,
  readBundleFileBounded,
  readBundleHeader,
  ScoringMismatchError,
  writeBundleFile,
  type Bundle,
  type BundleHeader,
} from '../src/bundle/bundle-file.ts';
import { BundleStore, NoSuchBundleError } from '../src/bundle/bundle-store.ts';
import { encodeFramed } from '../src/util/framed-file.ts';
import type { Bank } from '../src/score/bank-file.ts';
import { seededRandom } from '../src/score/coreset.ts';
import { calibrate } from '../src/calibrate/calibrate.ts';
import { Inspector, type InspectorOptions } from '../src/inspect/inspector.ts';
import { FeatureExtractor } from '../src/features/extractor.ts';
import { PatchCoreModel } from '../src/score/patchcore.ts';
import { syntheticCalibrationOptions, syntheticPart, tempDir, writeNominalSet, writeSyntheticBackbone } from './helpers/synthetic.ts';

// ---------- a small valid bundle, made without a backbone ----------

const SEMANTIC_DIM = 4;
const DIM = 8;

function tinyBank(count: number, dtype: 'float32' | 'float16', seed: number): Bank {
  const r = seededRandom(seed);
  return {
    header: {
      format_version: 1,
      created_at: '2024-01-01T00:00:00.000Z',
      backbone: { id: 'tiny', onnx_sha256: 'ab'.repeat(32) },
      features: { width: 64, height: 64, fit: 'letterbox', pre_dim: 16, dim: DIM, layers: ['p8'], grid: [8, 8] },
      coreset: { ratio: 0.1, projection_dim: 4, seed: 0, source_patches: 640, source_images: 10 },
      count,
      dim: DIM,
      dtype,
    },
    vectors: new Float32Array(count * DIM).map(() => r() - 0.5),
  };
}

const summary = { n: 10, mean: 1, std: 0.1, min: 0.8, p50: 1, p90: 1.1, p99: 1.2, max: 1.3 };

function tinyBundle(): Bundle {
  const clusters = [
    { keyCount: 2, bank: tinyBank(5, 'float32', 1) },
    { keyCount: 3, bank: tinyBank(4, 'float16', 2) },
  ].map(({ keyCount, bank }, id) => ({
    info: {
      id,
      name: `cluster-${id}`,
      members: [`/data/good/${id}_a.png`, `/data/good/${id}_b.png`],
      features: { width: 64, height: 64, fit: 'letterbox' as const },
      keys: { count: keyCount, offset: 0, length: 0 },
      bank: { count: bank.header.count, offset: 0, length: 0 },
      threshold: 1.5,
      threshold_source: 'frr' as const,
      thresholds: { frr: 1.5 },
      routing_limit: 0.3,
      statistics: { nominal: summary, key_distance: summary, pose_scale: 0.01 },
    },
    keys: new Float32Array(keyCount * SEMANTIC_DIM).map((_, i) => (i % 5) / 5),
    bank,
  }));
  return {
    header: {
      format_version: 2,
      bundle_id: 'tiny-bundle',
      created_at: '2024-01-01T00:00:00.000Z',
      backbone: { id: 'tiny', onnx_sha256: 'ab'.repeat(32) },
      semantic_dim: SEMANTIC_DIM,
      scoring: { input_size: '64x64', fit: 'letterbox', pre_dim: 16, dim: DIM, reweight_neighbours: 9, heatmap_sigma: 4 },
      settings: { frr_target: 0.005, folds: 2, key_mode: 'all', routing_limit: { quantile: 1, scale: 3, pose_floor: 1 } },
      calibration: { mode: 'cluster', images: 20, duration_s: 0.1 },
      clusters: clusters.map((c) => c.info),
    },
    clusters,
  };
}

const TINY = encodeBundle(tinyBundle());

/** The header JSON and the sections of an encoded bundle, to re-frame them with a valid checksum. */
function split(bytes: Uint8Array): { header: Record<string, unknown>; payload: Uint8Array } {
  const hlen = new DataView(bytes.buffer, bytes.byteOffset).getUint32(12, true);
  return { header: JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + hlen))), payload: bytes.subarray(16 + hlen, bytes.length - 32) };
}

/** A format 1 file: what calibrate wrote before the scoring section existed. */
function asFormat1(bytes: Uint8Array): Uint8Array {
  const { header, payload } = split(bytes);
  const { scoring, settings, ...rest } = header as { scoring: Record<string, unknown>; settings: Record<string, unknown> };
  const { input_size, fit, pre_dim, dim } = scoring;
  return encodeFramed(BUNDLE_MAGIC, 1, { ...rest, format_version: 1, settings: { input_size, fit, pre_dim, dim, ...settings } }, [payload]);
}

// ---------- property tests of the reader ----------

interface Outcome {
  ok: number;
  refused: number;
}

/** Decodes; anything thrown but a BundleFileError, a slow decode or an outsized result fails the test. */
function decodeOrRefuse(bytes: Uint8Array, tally: Outcome): boolean {
  const t0 = performance.now();
  try {
    const b = decodeBundle(bytes, 'case');
    // Float16 banks decode to twice their bytes; nothing else may exceed the file.
    const held = b.clusters.reduce((s, c) => s + c.keys.byteLength + c.bank.vectors.byteLength, 0);
    assert.ok(held <= 2 * bytes.length, `decoded ${held} bytes from a ${bytes.length}-byte file`);
    encodeBundle(b);
    tally.ok++;
    return true;
  } catch (e) {
    if (!(e instanceof BundleFileError)) throw new Error(`not a BundleFileError: ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    tally.refused++;
    return false;
  } finally {
    assert.ok(performance.now() - t0 < 2000, 'a decode finishes promptly');
  }
}

function report(t: { diagnostic: (m: string) => void }, what: string, o: Outcome): void {
  t.diagnostic(`${what}: ${o.ok + o.refused} cases (${o.ok} decoded, ${o.refused} refused with BundleFileError)`);
}

test('bundle reader: the tiny bundle round-trips, and format 1 reads as legacy', () => {
  const b = decodeBundle(TINY);
  assert.equal(b.header.format_version, 2);
  assert.deepEqual(b.header.scoring, { input_size: '64x64', fit: 'letterbox', pre_dim: 16, dim: DIM, reweight_neighbours: 9, heatmap_sigma: 4 });
  assert.deepEqual(Array.from(b.clusters[1].keys), Array.from(tinyBundle().clusters[1].keys));

  const old = decodeBundle(asFormat1(TINY));
  assert.equal(old.header.format_version, 1);
  assert.deepEqual(old.header.scoring, { input_size: '64x64', fit: 'letterbox', pre_dim: 16, dim: DIM, reweight_neighbours: 0, heatmap_sigma: 4, legacy: true });
  assert.equal('input_size' in old.header.settings, false, 'feature settings live in scoring only');
  const again = decodeBundle(encodeBundle(old));
  assert.equal(again.header.format_version, 2);
  assert.equal(again.header.scoring.legacy, true, 're-encoding keeps the "assumed" mark');

  const v3 = Uint8Array.from(TINY);
  v3[8] = 3;
  assert.throws(
    () => decodeBundle(v3),
    (e: Error) => e instanceof BundleFileError && /format version 3 is not supported .*recalibrate/.test(e.message),
  );
});

test('bundle reader: the ANN stage-1 type is optional (older bundles ranked in float32) and checked when present', () => {
  const withSearch = (search: unknown) => {
    const b = tinyBundle();
    (b.header.scoring as unknown as Record<string, unknown>).search = search;
    return encodeBundle(b);
  };
  const older = decodeBundle(withSearch({ mode: 'ann', projection_dim: 4, candidates: 8 }));
  assert.equal(older.header.scoring.search?.mode, 'ann');
  assert.equal(older.header.scoring.search && 'coarse' in older.header.scoring.search, false);
  const int8 = decodeBundle(withSearch({ mode: 'ann', projection_dim: 4, candidates: 8, coarse: 'int8' }));
  assert.deepEqual(int8.header.scoring.search, { mode: 'ann', projection_dim: 4, candidates: 8, coarse: 'int8' });
  assert.throws(() => decodeBundle(withSearch({ mode: 'ann', projection_dim: 4, candidates: 8, coarse: 'int4' })), /scoring\.search\.coarse/);
});

test('bundle reader (property): arbitrary bytes, with and without a valid prefix', (t) => {
  const tally = { ok: 0, refused: 0 };
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 4096 }), (bytes) => void decodeOrRefuse(bytes, tally)),
    { numRuns: 3000, seed: 1 },
  );
  const prefixed = fc.tuple(fc.constantFrom(0, 1, 2, 3, 0xffffffff), fc.oneof(fc.nat(64), fc.nat(8192), fc.constant(0xffffffff)), fc.uint8Array({ maxLength: 4096 })).map(([version, hlen, rest]) => {
    const out = new Uint8Array(16 + rest.length);
    out.set(new TextEncoder().encode(BUNDLE_MAGIC));
    new DataView(out.buffer).setUint32(8, version, true);
    new DataView(out.buffer).setUint32(12, hlen, true);
    out.set(rest, 16);
    return out;
  });
  fc.assert(
    fc.property(prefixed, (bytes) => void decodeOrRefuse(bytes, tally)),
    { numRuns: 3000, seed: 2 },
  );
  report(t, 'arbitrary bytes', tally);
  assert.equal(tally.ok, 0);
});

test('bundle reader: a truncation at every length is refused', (t) => {
  const tally = { ok: 0, refused: 0 };
  for (const bytes of [TINY, asFormat1(TINY)]) {
    for (let n = 0; n < bytes.length; n++) assert.equal(decodeOrRefuse(bytes.subarray(0, n), tally), false, `truncated to ${n}`);
  }
  report(t, 'truncations', tally);
});

test('bundle reader (property): random byte flips are refused; with the checksum repaired, decoded or refused', (t) => {
  const flips = fc.array(fc.record({ at: fc.nat(TINY.length - 1), xor: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 8 });
  const apply = (list: { at: number; xor: number }[]) => {
    const b = Uint8Array.from(TINY);
    for (const f of list) b[f.at] ^= f.xor;
    return b;
  };
  const plain = { ok: 0, refused: 0 };
  fc.assert(
    fc.property(flips, (list) => {
      const b = apply(list);
      if (!b.every((x, i) => x === TINY[i])) assert.equal(decodeOrRefuse(b, plain), false);
    }),
    { numRuns: 4000, seed: 3 },
  );
  report(t, 'byte flips', plain);

  // Re-hashing after the flips gets them past the checksum, into the framing, header and bank checks.
  const repaired = { ok: 0, refused: 0 };
  fc.assert(
    fc.property(flips, (list) => {
      const b = apply(list);
      const hlen = new DataView(b.buffer).getUint32(12, true);
      if (16 + hlen + 32 <= b.length) {
        const body = b.subarray(0, b.length - 32);
        b.set(createHash('sha256').update(body).digest(), b.length - 32);
      }
      decodeOrRefuse(b, repaired);
    }),
    { numRuns: 4000, seed: 4 },
  );
  report(t, 'byte flips, checksum repaired', repaired);
});

/** Every path into a JSON value (objects and arrays), for picking one to mutate. */
function paths(v: unknown, at: (string | number)[] = []): (string | number)[][] {
  if (typeof v !== 'object' || v === null) return [];
  const keys: (string | number)[] = Array.isArray(v) ? v.map((_, i) => i) : Object.keys(v);
  return keys.flatMap((k) => [[...at, k], ...paths((v as Record<string | number, unknown>)[k], [...at, k])]);
}

const hostile = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(null, -1, 0, 1, 0.5, -0.5, 3, 2 ** 31, 2 ** 32, 2 ** 53, -(2 ** 53), 1e308, -1e308, '', 'x', '4', [], {}, [1, 2], true, false));

test('bundle reader (property): random header mutations, re-framed with a valid checksum, are decoded or refused', (t) => {
  const tally = { ok: 0, refused: 0 };
  for (const [i, base] of [TINY, asFormat1(TINY)].entries()) {
    const { header, payload } = split(base);
    const version = i === 0 ? 2 : 1;
    const all = paths(header);
    const mutation = fc.record({ p: fc.nat(all.length - 1), remove: fc.boolean(), value: hostile });
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 3 }), fc.boolean(), (list, replaceRoot) => {
        let h: unknown = structuredClone(header);
        for (const m of list) {
          const path = all[m.p];
          let node = h as Record<string | number, unknown>;
          for (const k of path.slice(0, -1)) {
            if (typeof node[k] !== 'object' || node[k] === null) return;
            node = node[k] as Record<string | number, unknown>;
          }
          const key = path.at(-1)!;
          if (Array.isArray(node) && typeof key !== 'number') return; // e.g. "length" of what is now an array
          if (m.remove) delete node[key];
          else node[key] = m.value;
        }
        if (replaceRoot && list[0].remove) h = list[0].value;
        decodeOrRefuse(encodeFramed(BUNDLE_MAGIC, version, h, [payload]), tally);
      }),
      { numRuns: 4000, seed: 5 + i },
    );
  }
  report(t, 'header mutations', tally);
  assert.ok(tally.ok > 0 && tally.refused > 0, 'both outcomes were exercised');
});

test('bundle reader: headers that claim more than the file holds are refused without allocating it', () => {
  const { header, payload } = split(TINY);
  const huge = structuredClone(header) as unknown as BundleHeader;
  huge.clusters[0].keys = { count: 2 ** 40, offset: 0, length: 2 ** 40 * SEMANTIC_DIM * 4 };
  const before = process.memoryUsage().arrayBuffers;
  assert.throws(
    () => decodeBundle(encodeFramed(BUNDLE_MAGIC, 2, huge, [payload])),
    (e: Error) => e instanceof BundleFileError && /truncated/.test(e.message),
  );
  assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 2 ** 20);
});

// ---------- reading files: only regular files, bounded ----------

test('readBundleFileBounded: FIFO, /dev/zero, a directory and an oversize file are refused before reading', () => {
  const dir = tempDir('bounded');
  const file = join(dir, 'a.hcebundle');
  writeFileSync(file, TINY);
  assert.equal(readBundleFileBounded(file, TINY.length).header.bundle_id, 'tiny-bundle');
  const fifo = join(dir, 'pipe');
  execFileSync('mkfifo', [fifo]);
  const t0 = Date.now();
  for (const p of [fifo, '/dev/zero', dir]) {
    assert.throws(
      () => readBundleFileBounded(p, 2 ** 30),
      (e: Error) => e instanceof BundleFileError && /not a regular file/.test(e.message),
      p,
    );
  }
  assert.ok(Date.now() - t0 < 2000, 'nothing blocked');
  assert.throws(() => readBundleFileBounded(file, TINY.length - 1), /bytes is more than the limit/);
  assert.throws(
    () => readBundleFileBounded(join(dir, 'missing'), 100),
    (e: Error) => e instanceof BundleFileError && /cannot read bundle/.test(e.message),
  );
  assert.throws(() => readBundleHeader(fifo), /not a regular file/);
  assert.equal(readBundleHeader(file).bundle_id, 'tiny-bundle');
  assert.throws(() => readBundleHeader(file, 16), /header of \d+ bytes is larger/);
  writeFileSync(join(dir, 'short'), TINY.subarray(0, 100));
  assert.throws(() => readBundleHeader(join(dir, 'short')), /truncated/);
});

// ---------- scoring settings ----------

test('checkScoringOverrides: null takes the bundle value; a different one names key, bundle value and configured value', () => {
  const h = decodeBundleHeader(TINY).header;
  checkScoringOverrides(NO_SCORING_OVERRIDES, h);
  checkScoringOverrides({ reweight_neighbours: 9, heatmap_sigma: 4 }, h);
  assert.throws(
    () => checkScoringOverrides({ reweight_neighbours: 0, heatmap_sigma: null }, h),
    (e: Error) => e instanceof ScoringMismatchError && /scoring\.reweight_neighbours is configured as 0, but bundle tiny-bundle was calibrated with reweight_neighbours 9/.test(e.message),
  );
  assert.throws(() => checkScoringOverrides({ reweight_neighbours: null, heatmap_sigma: 2 }, h), /scoring\.heatmap_sigma is configured as 2, .*heatmap_sigma 4/);
  const legacy = decodeBundleHeader(asFormat1(TINY)).header;
  assert.throws(
    () => checkScoringOverrides({ reweight_neighbours: 9, heatmap_sigma: null }, legacy),
    /configured as 9, but bundle tiny-bundle predates recorded scoring settings and is scored with reweight_neighbours 0.*recalibrate with 9/,
  );
});

test("Inspector.load scores with the bundle's re-weighting; a disagreeing override is refused", async () => {
  const dir = tempDir('scoring');
  const bb = writeSyntheticBackbone(join(dir, 'bb'));
  const images = await writeNominalSet(join(dir, 'calib'), 10, 96, 7000);
  const { bundle: made } = await calibrate(syntheticCalibrationOptions(bb, images, { folds: 2, scoring: { reweightNeighbours: 9, sigma: 4 } }));
  const file = join(dir, 'rw9.hcebundle');
  writeBundleFile(file, made);
  const bundle = readBundleFileBounded(file, 2 ** 30);
  assert.equal(bundle.header.scoring.reweight_neighbours, 9);
  assert.equal(bundle.header.scoring.heatmap_sigma, 4);

  const img = { width: 96, height: 96, data: syntheticPart(96, 7100) };
  const scoreWith = async (b: Bundle, opts?: InspectorOptions) => {
    const insp = await Inspector.load(b, bb, opts);
    try {
      return (await insp.inspect(img, 0)).score!;
    } finally {
      await insp.release();
    }
  };
  const s9 = await scoreWith(bundle);
  const fx = await FeatureExtractor.load(bb, { width: 96, height: 96, fit: 'letterbox', preDim: 64, dim: 32 });
  const expect = async (reweightNeighbours: number) => {
    const m = await PatchCoreModel.create(fx, bundle.clusters[0].bank, { reweightNeighbours, sigma: 4 });
    const s = (await m.inspect(img)).score;
    await m.release();
    return s;
  };
  const [e9, e0] = [await expect(9), await expect(0)];
  await fx.release();
  assert.notEqual(e9, e0, 're-weighting changes the score of this part');
  assert.ok(Math.abs(s9 - e9) < 1e-4, `scored with reweight 9 without any option: ${s9} vs ${e9}`);
  assert.ok(Math.abs((await scoreWith(bundle, { overrides: { reweight_neighbours: 9, heatmap_sigma: 4 } })) - e9) < 1e-4, 'an agreeing override is fine');

  await assert.rejects(
    Inspector.load(bundle, bb, { overrides: { reweight_neighbours: 0, heatmap_sigma: null } }),
    (e: Error) => e instanceof ScoringMismatchError && /scoring\.reweight_neighbours is configured as 0, but bundle .* calibrated with reweight_neighbours 9/.test(e.message),
  );
  await assert.rejects(Inspector.load(bundle, bb, { overrides: { reweight_neighbours: null, heatmap_sigma: 1 } }), /scoring\.heatmap_sigma is configured as 1/);

  // The same bundle as a format 1 file is scored as such files always were: without re-weighting.
  const legacy = decodeBundle(asFormat1(encodeBundle(bundle)));
  assert.equal(legacy.header.scoring.legacy, true);
  assert.ok(Math.abs((await scoreWith(legacy)) - e0) < 1e-4, 'legacy bundle scored with reweight 0');
});

// ---------- BundleStore ----------

function storeFixture() {
  const root = tempDir('store');
  const dir = join(root, 'bundles');
  const outside = join(root, 'outside');
  mkdirSync(dir);
  mkdirSync(outside);
  writeFileSync(join(dir, 'a.hcebundle'), TINY);
  writeBundleFile(join(dir, 'b.hcebundle'), { ...tinyBundle(), header: { ...tinyBundle().header, bundle_id: 'bundle-b' } });
  writeFileSync(join(dir, '.hidden.hcebundle'), TINY);
  writeFileSync(join(dir, 'notes.txt'), 'not a bundle');
  writeFileSync(join(dir, 'big.hcebundle'), new Uint8Array(TINY.length + 4096));
  writeFileSync(join(outside, 'secret.hcebundle'), TINY);
  symlinkSync(join(outside, 'secret.hcebundle'), join(dir, 'out.hcebundle'));
  symlinkSync('../outside/secret.hcebundle', join(dir, 'rel-out.hcebundle'));
  symlinkSync('/dev/zero', join(dir, 'zero.hcebundle'));
  symlinkSync('a.hcebundle', join(dir, 'alias.hcebundle'));
  symlinkSync(join(dir, 'nowhere'), join(dir, 'dangling.hcebundle'));
  execFileSync('mkfifo', [join(dir, 'pipe.hcebundle')]);
  mkdirSync(join(dir, 'sub.hcebundle'));
  const state = join(root, 'state');
  return { root, dir, outside, state, store: new BundleStore(dir, state, TINY.length + 1024) };
}

test('BundleStore.resolve: bundles by plain name; every other attempt gets the same message, revealing nothing outside', () => {
  const { dir, outside, store } = storeFixture();
  assert.equal(store.resolve('a.hcebundle'), join(dir, 'a.hcebundle'));
  assert.equal(store.resolve('alias.hcebundle'), join(dir, 'alias.hcebundle'), 'a symlink that stays inside the folder');

  const attempts = [
    '../outside/secret.hcebundle',
    '..',
    '.',
    '',
    '/etc/passwd',
    join(dir, 'a.hcebundle'),
    join(outside, 'secret.hcebundle'),
    'a.hcebundle\0',
    'a.hcebundle\0.txt',
    '.hidden.hcebundle',
    'out.hcebundle',
    'rel-out.hcebundle',
    'zero.hcebundle',
    'pipe.hcebundle',
    'big.hcebundle',
    'missing.hcebundle',
    'dangling.hcebundle',
    'sub.hcebundle',
    'sub.hcebundle/x',
    'a\\b',
    'x'.repeat(300),
    '/dev/zero',
    '/proc/self/environ',
  ];
  const messages = new Set<string>();
  const t0 = Date.now();
  for (const name of attempts) {
    assert.throws(
      () => store.resolve(name),
      (e: Error) => {
        assert.ok(e instanceof NoSuchBundleError, `${name}: ${e.constructor.name}`);
        messages.add(e.message.replace(/^no bundle (".*?"|\(.*?\)) in/, 'no bundle <name> in'));
        return true;
      },
    );
  }
  assert.throws(() => store.resolve(42 as unknown as string), NoSuchBundleError);
  assert.ok(Date.now() - t0 < 3000, 'nothing blocked (FIFO, /dev/zero)');
  assert.equal(messages.size, 1, [...messages].join('\n'));
  const [message] = messages;
  assert.match(message, /in the bundle folder: give the file name of a bundle there .*not a path; available: a\.hcebundle, alias\.hcebundle, b\.hcebundle$/);
  for (const leak of [outside, dir, '/dev', 'ENOENT', 'EACCES', 'ELOOP', 'FIFO', 'symlink', 'secret', 'hidden', 'big', 'notes'])
    assert.ok(!message.includes(leak), `message mentions ${leak}: ${message}`);
});

test('BundleStore.list: names, sizes, mtimes and bundle ids of the loadable files only', () => {
  const { store } = storeFixture();
  const list = store.list();
  assert.deepEqual(
    list.map((e) => [e.name, e.bundle_id]),
    [
      ['a.hcebundle', 'tiny-bundle'],
      ['alias.hcebundle', 'tiny-bundle'],
      ['b.hcebundle', 'bundle-b'],
      ['notes.txt', null],
    ],
  );
  assert.equal(list[0].size, TINY.length);
  assert.ok(!Number.isNaN(Date.parse(list[0].mtime)));
  assert.deepEqual(new BundleStore('/nonexistent/folder', '/tmp', 100).list(), []);
});

test('BundleStore.remember/active: a reload survives a restart while the file is still a bundle of the folder', () => {
  const { dir, state, store, outside } = storeFixture();
  const configured = join(dir, 'a.hcebundle');
  assert.equal(store.active(configured), configured, 'nothing remembered yet');
  store.remember(store.resolve('b.hcebundle'));
  assert.deepEqual(readdirSync(state), ['active-bundle.json'], 'written atomically, no temp file left');

  const restarted = new BundleStore(dir, state, TINY.length + 1024);
  assert.equal(restarted.active(configured), join(dir, 'b.hcebundle'));

  restarted.remember(join(outside, 'secret.hcebundle'));
  assert.equal(new BundleStore(dir, state, TINY.length + 1024).active(configured), configured, 'a remembered path outside the folder is ignored');
  restarted.remember(join(dir, 'big.hcebundle'));
  assert.equal(new BundleStore(dir, state, TINY.length + 1024).active(configured), configured, 'no longer loadable: the configured one');
  writeFileSync(join(state, 'active-bundle.json'), '{not json');
  assert.equal(new BundleStore(dir, state, TINY.length + 1024).active(configured), configured, 'a damaged state file: the configured one');
  assert.ok(existsSync(join(state, 'active-bundle.json')) && readFileSync(join(state, 'active-bundle.json'), 'utf8').length > 0);
});
