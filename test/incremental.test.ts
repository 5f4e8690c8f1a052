import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { calibrate } from '../src/calibrate/calibrate.ts';
import { addImages, addProduct } from '../src/calibrate/incremental.ts';
import { decodeBundle, encodeBundle, type BundleCluster } from '../src/bundle/bundle-file.ts';
import { encodeBank } from '../src/score/bank-file.ts';
import { Inspector } from '../src/inspect/inspector.ts';
import { syntheticCalibrationOptions, syntheticProduct, tempDir, writePng, writeSyntheticBackbone, type ProductKind } from './helpers/synthetic.ts';

const SIZE = 96;

async function writeSet(dir: string, kind: ProductKind, n: number, seed0: number): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const p = join(dir, `${kind}_${String(seed0 + i).padStart(4, '0')}.png`);
    await writePng(p, syntheticProduct(kind, SIZE, seed0 + i), SIZE, SIZE);
    out.push(p);
  }
  return out;
}

/** What must not change in a cluster another increment did not touch. */
function frozen(c: BundleCluster) {
  const { keys, bank, ...rest } = c.info;
  return { info: rest, keys: Buffer.from(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength).toString('base64'), bank: Buffer.from(encodeBank(c.bank)).toString('base64') };
}

test('incremental: add-product appends one cluster and add-images rebuilds one, the others stay byte-identical', async () => {
  const dir = tempDir('incr');
  const bb = writeSyntheticBackbone(join(dir, 'bb'));
  const discs = await writeSet(join(dir, 'disc'), 'disc', 12, 100);
  const plates = await writeSet(join(dir, 'plate'), 'plate', 12, 200);
  const images = [...discs, ...plates];
  const opts = syntheticCalibrationOptions(bb, []);
  const { images: _, ...clusterOpts } = opts;
  const { bundle: base } = await calibrate({ ...opts, images, labels: images.map((p) => (p.includes('disc_') ? 'disc' : 'plate')) });
  // Through the file format, as the CLI reads it.
  const b0 = decodeBundle(encodeBundle(base));
  assert.deepEqual(
    b0.clusters.map((c) => c.info.name),
    ['disc', 'plate'],
  );

  // A new product, calibrated alone.
  const meshes = await writeSet(join(dir, 'mesh'), 'mesh', 12, 300);
  const added = await addProduct(b0, meshes, 'mesh', clusterOpts);
  const b1 = decodeBundle(encodeBundle(added.bundle));
  assert.deepEqual(
    b1.clusters.map((c) => c.info.name),
    ['disc', 'plate', 'mesh'],
  );
  assert.notEqual(b1.header.bundle_id, b0.header.bundle_id);
  assert.equal(b1.header.calibration.images, 36);
  for (const i of [0, 1]) assert.deepEqual(frozen(b1.clusters[i]), frozen(b0.clusters[i]), `${b0.clusters[i].info.name} untouched by add-product`);
  assert.equal(b1.clusters[2].info.id, 2);
  assert.equal(b1.clusters[2].info.members.length, 12);
  await assert.rejects(addProduct(b1, meshes, 'mesh', clusterOpts), /already has a cluster "mesh"/);

  const insp = await Inspector.load(b1, bb);
  try {
    for (let i = 0; i < 4; i++) {
      const mesh = await insp.inspect({ width: SIZE, height: SIZE, data: syntheticProduct('mesh', SIZE, 990 + i) });
      assert.equal(mesh.cluster, 'mesh', 'a new part of the added product routes to its new cluster');
      const disc = await insp.inspect({ width: SIZE, height: SIZE, data: syntheticProduct('disc', SIZE, 980 + i) });
      assert.equal(disc.cluster, 'disc', 'the old products still route home');
    }
  } finally {
    await insp.release();
  }

  // Approved good images for one cluster: only its bank, keys and threshold are rebuilt.
  const moreDiscs = await writeSet(join(dir, 'disc-more'), 'disc', 8, 500);
  const grown = await addImages(b1, 'disc', [...moreDiscs, discs[0]], clusterOpts);
  const b2 = decodeBundle(encodeBundle(grown.bundle));
  assert.deepEqual(
    b2.clusters.map((c) => c.info.name),
    ['disc', 'plate', 'mesh'],
  );
  for (const i of [1, 2]) assert.deepEqual(frozen(b2.clusters[i]), frozen(b1.clusters[i]), `${b1.clusters[i].info.name} untouched by add-images`);
  const d = b2.clusters[0].info;
  assert.equal(d.id, 0);
  assert.equal(d.members.length, 20, 'old members and the new ones (a repeated one counted once)');
  assert.equal(d.statistics.nominal.n, 20, 'threshold from the held-out scores of all 20');
  assert.equal(grown.heldOut.length, 20);
  assert.notDeepEqual(frozen(b2.clusters[0]).bank, frozen(b1.clusters[0]).bank, 'the disc bank was rebuilt');
  assert.equal(b2.header.calibration.images, 44);
  await assert.rejects(addImages(b2, 'bolt', moreDiscs, clusterOpts), /no cluster "bolt"/);
  await assert.rejects(addImages(b2, 'disc', moreDiscs, clusterOpts), /already in disc/);
});
