import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { calibrate, embedImages } from '../src/calibrate/calibrate.ts';
import { ExtractorPool } from '../src/features/extractor-pool.ts';
import { evaluateSubsets, MODES, type SubsetReport } from '../src/eval/multiclass-subsets.ts';
import { allSubsets, parseSubsets, routerFor, sliceEmbedded } from '../src/eval/subsets.ts';
import { formatSubsetReport } from '../src/eval/subset-table.ts';
import { Progress } from '../src/util/progress.ts';
import { syntheticCalibrationOptions, syntheticProduct, tempDir, writePng, writeSyntheticBackbone, type ProductKind } from './helpers/synthetic.ts';

const SIZE = 96;
const KINDS: ProductKind[] = ['disc', 'plate', 'mesh'];

test('subsets: every non-empty mix, limited by size or listed', () => {
  const three = allSubsets(['a', 'b', 'c']);
  assert.equal(three.length, 7);
  assert.deepEqual(
    three.map((s) => s.length),
    [1, 1, 1, 2, 2, 2, 3],
  );
  assert.equal(new Set(three.map((s) => s.join('+'))).size, 7, 'no mix twice');
  assert.equal(allSubsets(['a', 'b', 'c', 'd', 'e']).length, 31);
  assert.equal(parseSubsets(undefined, ['a', 'b', 'c', 'd']).length, 15);
  assert.equal(parseSubsets('2', ['a', 'b', 'c', 'd']).length, 4 + 6);
  assert.deepEqual(parseSubsets('c+a, b ,a+c', ['a', 'b', 'c']), [['a', 'c'], ['b']], 'members in dataset order, duplicates dropped');
  assert.throws(() => parseSubsets('a+x', ['a', 'b']), /"x" is not one of the categories evaluated \(a, b\)/);
  assert.throws(() => parseSubsets('a+a', ['a', 'b']), /names a product twice/);
  assert.throws(() => parseSubsets('0', ['a']), /at least 1 product/);
});

async function writeProduct(root: string, kind: ProductKind, seed: number): Promise<void> {
  const put = async (sub: string, name: string, rgb: Uint8Array) => {
    mkdirSync(join(root, kind, sub), { recursive: true });
    await writePng(join(root, kind, sub, name), rgb, SIZE, SIZE);
  };
  for (let i = 0; i < 12; i++) await put('train/good', `${i}.png`, syntheticProduct(kind, SIZE, seed + i));
  for (let i = 0; i < 4; i++) {
    await put('test/good', `${i}.png`, syntheticProduct(kind, SIZE, seed + 500 + i));
    await put('test/scratch', `${i}.png`, syntheticProduct(kind, SIZE, seed + 600 + i, { x: 28 + 6 * i, y: 36, w: 12, h: 8 }));
  }
}

test('evaluate --multiclass on three synthetic products: 7 mixes x 2 calibrations, banks shared, unknown products caught', async () => {
  const dir = tempDir('mix');
  const bb = writeSyntheticBackbone(join(dir, 'bb'));
  const data = join(dir, 'data');
  for (const [i, k] of KINDS.entries()) await writeProduct(data, k, 1000 * (i + 1));
  const { images: _images, ...opts } = syntheticCalibrationOptions(bb, [], { heldOut: 'leave-self-out' });
  const t0 = performance.now();
  const report: SubsetReport = await evaluateSubsets({ ...opts, dataset: data, categories: KINDS }, new Progress(false));
  const took = (performance.now() - t0) / 1000;

  assert.equal(report.subsets.length, 7);
  assert.equal(report.work.calibrations, 14);
  assert.equal(report.work.test_images, 3 * 8, 'each product test image once');
  for (const s of report.subsets) {
    const cl = s.clustered;
    assert.equal(cl.error, undefined, `${s.name}: ${cl.error}`);
    assert.equal(cl.clusters, s.categories.length, `${s.name}: one cluster per product`);
    assert.equal(cl.nmi, 1);
    assert.equal(cl.purity, 1);
    assert.equal(s.known_class.clusters, s.categories.length);
    for (const mode of MODES) {
      const m = s[mode];
      assert.equal(m.routing_accuracy, 1, `${s.name} ${mode}: every test image nearest to its product`);
      assert.deepEqual(Object.keys(m.image_auroc!), s.categories);
      // With every image routed to its own product's bank, the routed ranking is the single-product one.
      if (m.unknown_share === 0) for (const c of s.categories) assert.equal(m.auroc_delta![c], 0, `${s.name} ${mode} ${c}`);
      if (s.categories.length === 1) assert.equal(m.unknown_product, undefined, 'nothing to leave out of one product');
      else {
        assert.deepEqual(Object.keys(m.unknown_product!), s.categories);
        for (const [x, u] of Object.entries(m.unknown_product!)) {
          assert.equal(u.test_images, 8);
          assert.equal(u.routed_unknown, 1, `${s.name} ${mode}: ${x} left out is UNKNOWN`);
          assert.equal(u.known_good_images, 4 * (s.categories.length - 1));
          assert.equal(u.clusters_without_it, s.categories.length - 1);
        }
      }
    }
  }
  // The cache: one bank per product, whichever mix or calibration found it.
  assert.equal(report.work.distinct_banks, 3);
  for (const k of KINDS) assert.ok(report.single_product[k].image_auroc! > 0.5, `${k}: planted scratches rank above good parts`);

  const text = formatSubsetReport(report);
  assert.equal(text.split('\n').filter((l) => /^(disc|plate|mesh)\S*\s+(clustered|known_class)\s+\d+\/\d+\s/.test(l)).length, 14, text);
  assert.doesNotMatch(text.split('\n').slice(0, 17).join('\n'), / !/, 'no routing target missed');
  const missed = structuredClone(report);
  missed.subsets[6].clustered.unknown_product!.plate.routed_unknown = 0.5;
  assert.match(formatSubsetReport(missed), /50\.0% \(plate\) !/);
  assert.ok(took < 60, `took ${took.toFixed(1)} s`);

  // --subsets: only the mixes asked for; products in none are neither embedded nor tested.
  const one = await evaluateSubsets({ ...opts, dataset: data, categories: KINDS, subsets: [['disc', 'plate']] }, new Progress(false));
  assert.deepEqual(
    one.subsets.map((s) => s.name),
    ['disc+plate'],
  );
  assert.deepEqual(Object.keys(one.single_product), ['disc', 'plate']);
  assert.equal(one.work.train_images, 24);
  assert.equal(one.work.test_images, 16);
  assert.deepEqual(one.subsets[0].clustered.unknown_product, report.subsets.find((s) => s.name === 'disc+plate')!.clustered.unknown_product, 'the same figures as in the full run');
});

test('routerFor builds the router calibrate() builds, without banks', async () => {
  const dir = tempDir('mixr');
  const bb = writeSyntheticBackbone(join(dir, 'bb'));
  const data = join(dir, 'data');
  for (const [i, k] of KINDS.slice(0, 2).entries()) await writeProduct(data, k, 1000 * (i + 1));
  const images = KINDS.slice(0, 2).flatMap((k) => Array.from({ length: 12 }, (_, i) => join(data, k, 'train/good', `${i}.png`)));
  const opts = syntheticCalibrationOptions(bb, images, { heldOut: 'leave-self-out' });
  const pool = new ExtractorPool(bb);
  const emb = await embedImages(images, pool, opts.features, undefined, 'embed', true);
  const { bundle } = await calibrate({ ...opts, pool, embedded: emb });
  const { router, clusters } = await routerFor(
    sliceEmbedded(
      emb,
      images.map((_, i) => i),
    ),
    opts,
    undefined,
    { images, features: opts.features, pool },
  );
  assert.equal(clusters, bundle.clusters.length);
  assert.deepEqual(
    router.clusters.map((c) => [c.count, c.limit]),
    bundle.clusters.map((c) => [c.info.keys.count, c.info.routing_limit]),
  );
  const labelled = await routerFor(
    emb,
    opts,
    images.map((p) => p.split('/').at(-4)!),
  );
  assert.equal(labelled.clusters, 2);
  await pool.release();
});
