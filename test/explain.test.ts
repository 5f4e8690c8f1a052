import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fitGeometry } from '../src/features/image.ts';
import { countsPerLevel, mebin, minFilter, rangeFromCalibration, rescale, stableChoice, levelsFor } from '../src/explain/mebin.ts';
import { boxGap, cropBoxes, drawBoxes, findRegions } from '../src/explain/regions.ts';
import { describeRegions, embed, fitSpace, type RegionDescriptor } from '../src/explain/descriptors.ts';
import { assignType, buildTypes, clusterTypes, cutTree, discoverTypes, imageType, linkageTree, typeRegions } from '../src/explain/discover.ts';
import { nameType } from '../src/explain/archive-discovery.ts';
import { ari, hungarianF1, hungarianMax, maskIoU } from '../src/eval/defect-types.ts';
import { labelRegions, nmi } from '../src/eval/metrics.ts';

const STATS = { threshold: 2, p50: 1 }; // range [2, 6] at the default spread of 4

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Flat background with raised squares [x, y, side, value] (input pixels). */
function mapWith(w: number, h: number, squares: [number, number, number, number][], background = 1): Float32Array {
  const m = new Float32Array(w * h).fill(background);
  for (const [x0, y0, s, v] of squares) for (let y = y0; y < y0 + s; y++) for (let x = x0; x < x0 + s; x++) m[y * w + x] = v;
  return m;
}

test('two blobs under letterbox give two regions with their boxes in frame pixels', () => {
  // A 400x200 frame letterboxed into 64x64: scale 0.16, content rows 16..47.
  const g = fitGeometry(400, 200, 64, 64, 'letterbox');
  assert.deepEqual([g.scaledWidth, g.scaledHeight, g.offsetX, g.offsetY], [64, 32, 0, 16]);
  const map = mapWith(64, 64, [
    [8, 20, 10, 5],
    [40, 30, 12, 4.5],
  ]);
  const r = findRegions(map, { width: 64, height: 64 }, g, { width: 400, height: 200 }, STATS);
  assert.equal(r.regions.length, 2);
  // Largest first: the 12x12 square at input (40, 30) is frame (250, 87.5), 75 px wide.
  assert.deepEqual(r.regions[0].bbox, [250, 87, 75, 76]);
  assert.deepEqual(r.regions[1].bbox, [50, 25, 63, 63]);
  assert.equal(r.regions[0].area_px, Math.round(144 * 6.25 * 6.25));
  assert.deepEqual(r.regions[0].centroid, [287.5, 125]);
  assert.equal(r.regions[0].peak, 4.5);
  assert.equal(r.regions[1].mean_score, 5);
});

test('letterbox padding never holds a region', () => {
  const g = fitGeometry(400, 200, 64, 64, 'letterbox');
  const map = mapWith(64, 64, [
    [8, 2, 10, 5],
    [40, 30, 12, 4.5],
  ]); // the first lies in the top padding
  const r = findRegions(map, { width: 64, height: 64 }, g, { width: 400, height: 200 }, STATS);
  assert.equal(r.regions.length, 1);
  assert.equal(r.regions[0].bbox[0], 250);
});

test("a flat map at the good parts' level has no regions; the region cap holds", () => {
  const g = fitGeometry(64, 64, 64, 64, 'letterbox');
  assert.equal(findRegions(new Float32Array(64 * 64).fill(1.5), { width: 64, height: 64 }, g, { width: 64, height: 64 }, STATS).regions.length, 0);
  const many = mapWith(
    64,
    64,
    [0, 1, 2, 3].flatMap((i) => [0, 1, 2, 3].map((j) => [2 + i * 16, 2 + j * 16, 10, 5] as [number, number, number, number])),
  );
  const r = findRegions(many, { width: 64, height: 64 }, g, { width: 64, height: 64 }, STATS, { maxRegions: 5 });
  assert.equal(r.mebin.count, 16);
  assert.equal(r.regions.length, 5);
  // An NG frame whose blurred map peaks below the threshold still points at its peak.
  const low = findRegions(mapWith(64, 64, [[30, 30, 8, 1.8]]), { width: 64, height: 64 }, g, { width: 64, height: 64 }, STATS);
  assert.equal(low.regions.length, 1);
  assert.equal(low.mebin.stable, false);
  assert.deepEqual(low.regions[0].bbox, [30, 30, 8, 8]);
});

test('min filter equals a brute-force 6x6 erosion window (OpenCV anchor)', () => {
  const rnd = seeded(3);
  const w = 17,
    h = 11;
  const src = Float32Array.from({ length: w * h }, () => rnd());
  const out = minFilter(src, w, h, 6);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let m = Infinity;
      for (let dy = -3; dy <= 2; dy++)
        for (let dx = -3; dx <= 2; dx++) {
          const yy = y + dy,
            xx = x + dx;
          if (yy >= 0 && yy < h && xx >= 0 && xx < w) m = Math.min(m, src[yy * w + xx]);
        }
      assert.equal(out[y * w + x], m);
    }
});

test('the one-sweep component counts equal labelling every level', () => {
  const rnd = seeded(7);
  const w = 30,
    h = 20;
  const v = Float32Array.from({ length: w * h }, () => rnd() * 300);
  const counts = countsPerLevel(v, w, h, 4);
  levelsFor(4).forEach((t, k) => {
    const mask = Uint8Array.from(v, (x) => (x > t ? 1 : 0));
    assert.equal(counts[k], labelRegions(mask, w, h).count, `level ${t}`);
  });
});

test('stable choice follows the reference rule', () => {
  // 2 holds 5 levels, 1 holds 6: 1 wins, at the permissive end of its run (index 10).
  assert.deepEqual(stableChoice([0, 0, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 3, 3], 4), { index: 12, count: 1, run: 6 });
  // Equal runs: the count seen first (stricter) wins; within a count, the later of equal runs.
  assert.deepEqual(stableChoice([2, 2, 2, 2, 1, 1, 1, 1, 2, 2, 2, 2], 4), { index: 11, count: 2, run: 4 });
  // Runs shorter than minRun and runs of zero are never stable.
  assert.equal(stableChoice([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2], 4), null);
});

test('the threshold choice is stable: shifting the background or adding noise keeps the count', () => {
  const range = rangeFromCalibration(STATS);
  assert.deepEqual(range, { low: 2, high: 6 });
  const rnd = seeded(11);
  const base = mapWith(64, 64, [
    [5, 5, 14, 5.5],
    [40, 40, 14, 4],
  ]);
  for (let trial = 0; trial < 5; trial++) {
    const noisy = base.map((v) => v + (rnd() - 0.5) * 0.2 + trial * 0.05);
    const m = mebin(noisy, 64, 64, range);
    assert.equal(m.count, 2, `trial ${trial}`);
    assert.equal(m.stable, true);
    assert.ok(m.run >= 4);
  }
  // A blob that barely clears the low end still gives a region (the peak fallback), not nothing.
  const weak = mebin(mapWith(64, 64, [[20, 20, 3, 2.05]]), 64, 64, range);
  assert.equal(weak.stable, false);
  assert.equal(weak.count, 1);
});

test('restoring erosion gives the whole square back; without it the 6x6 kernel shrinks it by 5', () => {
  const map = mapWith(40, 40, [[10, 10, 12, 5]]);
  const range = rangeFromCalibration(STATS);
  const full = mebin(map, 40, 40, range);
  const eroded = mebin(map, 40, 40, range, { restore: false });
  const area = (l: Int32Array) => l.reduce((s, v) => s + (v ? 1 : 0), 0);
  assert.equal(area(full.labels), 144);
  assert.equal(area(eroded.labels), 49);
  assert.ok(rescale(map, range)[0] === 0);
});

test('crop boxes are padded squares inside the image; near ones merge', () => {
  const crops = cropBoxes(
    [
      [100, 100, 50, 20],
      [160, 100, 10, 10],
      [10, 400, 10, 10],
    ],
    500,
    500,
  );
  assert.equal(crops.length, 2);
  for (const c of crops) {
    assert.equal(c.box[2], c.box[3]);
    assert.ok(c.box[0] >= 0 && c.box[1] >= 0 && c.box[0] + c.box[2] <= 500 && c.box[1] + c.box[3] <= 500);
  }
  assert.deepEqual(
    crops.map((c) => c.members),
    [[0, 1], [2]],
  );
  assert.equal(crops[1].box[2], 100); // minimum side: 20% of the longer image side
  assert.equal(boxGap([0, 0, 10, 10], [13, 14, 5, 5]), 5);
  const rgb = new Uint8Array(10 * 10 * 3);
  drawBoxes(rgb, 10, 10, [[2, 2, 3, 3]], [255, 0, 0]);
  assert.equal(rgb[(1 * 10 + 1) * 3], 255);
  assert.equal(rgb[(3 * 10 + 3) * 3], 0);
});

/** Three planted directions, each with small noise, in 32 dims. */
function planted(perGroup: number, noise: number, seed = 5): { x: Float32Array; truth: number[]; d: number } {
  const rnd = seeded(seed);
  const d = 32;
  const centres = [0, 1, 2].map(() => Float32Array.from({ length: d }, () => rnd() - 0.5));
  const rows: number[][] = [];
  const truth: number[] = [];
  for (let g = 0; g < 3; g++)
    for (let i = 0; i < perGroup; i++) {
      const v = Array.from(centres[g], (c) => c + (rnd() - 0.5) * noise);
      const n = Math.hypot(...v);
      rows.push(v.map((x) => x / n));
      truth.push(g);
    }
  return { x: Float32Array.from(rows.flat()), truth, d };
}

test('clustering recovers planted groups and picks their number', () => {
  const { x, truth, d } = planted(15, 0.2);
  for (const linkage of ['ward', 'average'] as const) {
    const c = clusterTypes(x, truth.length, d, { clusters: 'auto', linkage });
    assert.equal(c.count, 3, `${linkage}: ${c.reason}`);
    assert.equal(nmi(c.labels, truth), 1);
  }
  const merges = linkageTree(x, truth.length, d);
  assert.equal(merges.length, truth.length - 1);
  assert.ok(merges.every((m, i) => i === 0 || m.distance >= merges[i - 1].distance));
  assert.equal(cutTree(merges, truth.length, 1).count, 1);
  assert.equal(clusterTypes(x, truth.length, d, { clusters: 2 }).count, 2);
});

test('an image takes the type covering most of its region area', () => {
  assert.equal(imageType([0, 1, 1], [50, 20, 20]), 0);
  assert.equal(imageType([0, 1, 1], [30, 20, 20]), 1);
  assert.equal(imageType([], []), -1);
});

test('assignType: near a prototype gives its type, far from all gives new', () => {
  const { x, truth, d } = planted(10, 0.2);
  const types = buildTypes(
    x,
    d,
    { labels: Int32Array.from(truth), count: 3 },
    truth.map((_, i) => i),
  );
  assert.equal(types.length, 3);
  const member = assignType(x.subarray(0, d), types);
  assert.notEqual(member.type, 'new');
  assert.equal(member.type !== 'new' && member.type.id, 'T1');
  const far = new Float32Array(d);
  for (let k = 0; k < d; k++) far[k] = -types[0].prototype[k] - types[1].prototype[k] - types[2].prototype[k];
  const n = Math.hypot(...far);
  const a = assignType(
    far.map((v) => v / n),
    types,
  );
  assert.equal(a.type, 'new');
  assert.ok(a.distance > 1);
  assert.equal(assignType(far, []).type, 'new');
});

test('descriptors: weighted mean of the patch features inside a region; discovery and typing end to end', () => {
  // 4x4 grid of 8-px patches on a 32x32 input; patch features are one-hot by column group.
  const dim = 4;
  const frames = [0, 1, 2, 3, 4, 5].map((i) => {
    const kind = i % 2; // kind 0 defects sit on patches whose feature is e0, kind 1 on e3
    const patches = new Float32Array(16 * dim);
    for (let c = 0; c < 16; c++) patches[c * dim + (c % 4 < 2 ? 0 : 3)] = 1;
    const x0 = kind === 0 ? 2 : 18;
    const heat = mapWith(32, 32, [[x0, 4 + i, 10, 5]]);
    const g = fitGeometry(32, 32, 32, 32, 'letterbox');
    const r = findRegions(heat, { width: 32, height: 32 }, g, { width: 32, height: 32 }, STATS);
    const ds = describeRegions(
      { patches, dim, grid: { width: 4, height: 4 }, heatmap: heat, labels: r.mebin.labels, input: { width: 32, height: 32 }, low: 2, threshold: 2, p50: 1, content: g.content },
      r.input,
    );
    return { kind, r, ds };
  });
  assert.deepEqual(Array.from(frames[0].ds[0].feature), [1, 0, 0, 0]);
  assert.deepEqual(Array.from(frames[1].ds[0].feature), [0, 0, 0, 1]);
  const descriptors: RegionDescriptor[] = frames.flatMap((f) => f.ds);
  const found = discoverTypes({ descriptors, image: frames.map((_, i) => i), area: frames.map((f) => f.r.input[0].area), images: frames.length }, { clusters: 'auto' });
  assert.equal(found.types.length, 2);
  assert.equal(
    nmi(
      found.imageTypes,
      frames.map((f) => f.kind),
    ),
    1,
  );
  const ct = { cluster: 'c', space: found.space, types: found.types, discovery: { regions: 6, images: 6, reason: '' } };
  const typed = typeRegions(frames[2].r.regions, frames[2].ds, ct);
  assert.equal(typed[0].type, found.types[found.imageTypes[2]].id);
  const space = fitSpace(descriptors, 0.5);
  const e = embed(descriptors[0], space);
  assert.ok(Math.abs(Math.hypot(...e) - 1) < 1e-6);
  assert.throws(() => embed({ feature: new Float32Array(3), stats: [] }, space), /feature values/);
});

test('NMI, ARI and Hungarian F1 against hand-computed cases', () => {
  const truth = [0, 0, 0, 1, 1, 1];
  assert.equal(ari([1, 1, 1, 0, 0, 0], truth), 1);
  assert.equal(hungarianF1([1, 1, 1, 0, 0, 0], truth), 1);
  // One item moved: contingency [[2,0],[1,3]] -> index 1+3 = 4, rows C(2,2)+C(4,2) = 7, columns 3+3 = 6,
  // expected 7*6/15 = 2.8, max 6.5: ARI 1.2/3.7 (scikit-learn: 0.32432).
  assert.ok(Math.abs(ari([0, 0, 1, 1, 1, 1], truth) - 1.2 / 3.7) < 1e-12);
  assert.ok(Math.abs(hungarianF1([0, 0, 1, 1, 1, 1], truth) - 5 / 6) < 1e-12);
  // Everything in one cluster: ARI 0; only one class can be matched.
  assert.equal(ari([0, 0, 0, 0, 0, 0], truth), 0);
  assert.equal(hungarianF1([0, 0, 0, 0, 0, 0], truth), 0.5);
  // More clusters than classes: the unmatched cluster counts as wrong.
  assert.ok(Math.abs(hungarianF1([0, 0, 2, 1, 1, 1], truth) - 5 / 6) < 1e-12);
  // MI = ln2/3 - ln2/6 + ln(3/2)/2 = 0.31826; H = 0.63651 and ln 2: NMI = 2 MI / (sum) = 0.47871
  assert.ok(Math.abs(nmi([0, 0, 1, 1, 1, 1], truth) - 0.47871) < 1e-4);
  assert.deepEqual(
    hungarianMax([
      [1, 5, 0],
      [4, 4, 1],
    ]),
    [1, 0],
  );
  assert.deepEqual(
    hungarianMax([
      [0, 3],
      [2, 0],
      [9, 9],
    ]),
    [1, -1, 0],
  ); // 3 + 9 beats 2 + 9 and 3 + 2
  assert.equal(maskIoU([1, 1, 0, 0], [1, 0, 1, 0]), 1 / 3);
  assert.equal(maskIoU([1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]), 1 / 2);
});

test('naming a type: by id, refused when unknown or ambiguous', () => {
  const t = {
    format_version: 1 as const,
    created_at: '',
    backbone: { id: 'b', onnx_sha256: 'x' },
    bundle_id: 'u',
    clusters: ['a', 'b'].map((cluster) => ({
      cluster,
      space: fitSpace([{ feature: new Float32Array([1]), stats: [0, 0, 0, 0, 0, 0] }]),
      types: [{ id: 'T1', name: null, prototype: [1], radius: 0.1, count: 1, images: 1 }],
      discovery: { regions: 1, images: 1, reason: '' },
    })),
  };
  assert.throws(() => nameType(t, 'T1', 'scratch'), /pass --cluster/);
  assert.throws(() => nameType(t, 'T9', 'scratch'), /no type "T9"/);
  const named = nameType(t, 'T1', 'scratch', 'b');
  assert.equal(named.clusters[1].types[0].name, 'scratch');
  assert.equal(named.clusters[0].types[0].name, null);
});
