/**
 * Defect types end to end on synthetic parts with two kinds of planted defect (a dark scratch on the
 * disc, a bright spot on the background): discovery over a folder of rejects, the types stored in the
 * bundle, and inspection assigning each new reject's regions the type of its kind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { syntheticPart, tempDir, writePng, writeSyntheticBundle } from './helpers/synthetic.ts';
import { discoverArchive } from '../src/explain/archive-discovery.ts';
import { readBundleFile } from '../src/bundle/bundle-file.ts';
import { Inspector } from '../src/inspect/inspector.ts';

const scratch = (i: number) => ({ x: 38 + (i % 8), y: 44 + (i % 5), w: 12, h: 5 });
const spot = (i: number) => ({ x: 4 + (i % 6), y: 4 + (i % 4), w: 8, h: 8 });

test('defect types: two planted kinds are discovered as two types, stored in the bundle, and assigned at inspection', { timeout: 120_000 }, async () => {
  const dir = tempDir('defect-types');
  const { backbone, bundle } = await writeSyntheticBundle(dir);
  const rejects = join(dir, 'rejects');
  mkdirSync(rejects);
  for (let i = 0; i < 12; i++) {
    await writePng(join(rejects, `scratch_${i}.png`), syntheticPart(96, 80_000 + i, scratch(i)), 96, 96);
    await writePng(join(rejects, `spot_${i}.png`), syntheticPart(96, 81_000 + i, spot(i)), 96, 96);
  }
  const b = readBundleFile(bundle);
  const cluster = b.header.clusters[0].name;
  const d = await discoverArchive(rejects, b, backbone, { clusters: 2, cluster });
  assert.equal(d.clusters.length, 1);
  const images = d.clusters[0].images;
  assert.equal(images.length, 24, `every reject analysed (skipped: ${JSON.stringify(d.skipped)})`);
  // Purity of the image-level types against the planted kind.
  const byType = new Map<number, string[]>();
  for (const im of images) byType.set(im.type, [...(byType.get(im.type) ?? []), im.path.includes('scratch') ? 'scratch' : 'spot']);
  const pure = [...byType.values()].reduce((n, kinds) => n + Math.max(kinds.filter((k) => k === 'scratch').length, kinds.filter((k) => k === 'spot').length), 0);
  assert.ok(pure / images.length >= 0.9, `types separate the kinds: ${JSON.stringify([...byType])}`);

  const typed = { ...b, header: { ...b.header, defect_types: d.types } };
  const insp = await Inspector.load(typed, backbone, { threads: 1 });
  try {
    const typeOf = async (rgb: Uint8Array) => {
      const r = await insp.inspect({ width: 96, height: 96, data: rgb });
      assert.equal(r.verdict, 'NG');
      assert.ok(r.regions && r.regions.length > 0 && r.regions.every((x) => typeof x.type === 'string'), JSON.stringify(r.regions));
      return r.regions[0].type!;
    };
    const s = [await typeOf(syntheticPart(96, 90_001, scratch(3))), await typeOf(syntheticPart(96, 90_002, scratch(6)))];
    const p = [await typeOf(syntheticPart(96, 90_003, spot(1))), await typeOf(syntheticPart(96, 90_004, spot(4)))];
    assert.equal(s[0], s[1], `scratches get one type: ${s}`);
    assert.equal(p[0], p[1], `spots get one type: ${p}`);
    assert.notEqual(s[0], p[0], 'and the two kinds different ones');
  } finally {
    await insp.release();
  }
});
