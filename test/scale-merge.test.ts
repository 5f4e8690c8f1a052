import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { normaliseRows } from '../src/route/finch.ts';
import { applyScaleMerge, mixing, scaleMerge, type CropWindow, type FrameSize } from '../src/route/scale-merge.ts';
import { seededRandom } from '../src/score/coreset.ts';
import { perView } from './helpers/synthetic.ts';
import { cropImage, LEVEL_MAX_GAIN, LEVEL_MEAN, LEVEL_SPREAD, levelled, type RgbImage } from '../src/features/image.ts';

const D = 16;

/** A unit row near direction `axis` (0..D-1) with noise `spread`. */
function near(axis: number, spread: number, rnd: () => number): Float32Array {
  const v = Float32Array.from({ length: D }, () => (rnd() - 0.5) * spread);
  v[axis] += 1;
  return normaliseRows(v, 1, D);
}

function stack(rows: Float32Array[]): Float32Array {
  const out = new Float32Array(rows.length * D);
  rows.forEach((r, i) => out.set(r, i * D));
  return out;
}

test('mixing: one distribution mixes (about 1), two separated ones do not (0)', () => {
  const rnd = seededRandom(3);
  const a = Array.from({ length: 16 }, () => near(0, 0.4, rnd));
  const b = Array.from({ length: 16 }, () => near(0, 0.4, rnd));
  const c = Array.from({ length: 16 }, () => near(5, 0.4, rnd));
  assert.ok(mixing(stack([...a, ...b]), 16, 16, D) > 0.6);
  assert.equal(mixing(stack([...a, ...c]), 16, 16, D), 0);
  // a tight group beside a diffuse one of the same centre: the tight side keeps its links, so the pair does not count as mixed
  const tight = Array.from({ length: 16 }, () => near(0, 0.02, rnd));
  const wide = Array.from({ length: 16 }, () => near(0, 2, rnd));
  assert.ok(mixing(stack([...tight, ...wide]), 16, 16, D) < 0.3);
});

test('mixing stays in [0, ~2] and is 0 when either side has fewer than 2 rows', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 12 }), fc.integer({ min: 0, max: 12 }), fc.integer({ min: 1, max: 1000 }), (na, nb, seed) => {
      const rnd = seededRandom(seed);
      const rows = stack(Array.from({ length: na + nb }, () => near(Math.floor(rnd() * 3), 1, rnd)));
      const m = mixing(rows, na, nb, D);
      if (na < 2 || nb < 2) return m === 0;
      return m >= 0 && m <= (na + nb - 1) / Math.min(na, nb) + 1e-9;
    }),
  );
});

/**
 * Three clusters: a surface at 256x256 (0) and at 512x256 (1), FINCH having split it by frame size,
 * and another product at 256x256 (2). The embedder plays the backbone at one pixel scale: a crop of
 * the surface looks the same wherever it is taken, the other product looks like itself.
 */
function surfaceCase() {
  const frames: FrameSize[] = [];
  const labels: number[] = [];
  const product: number[] = [];
  const add = (n: number, f: FrameSize, label: number, p: number) => {
    for (let i = 0; i < n; i++) {
      frames.push(f);
      labels.push(label);
      product.push(p);
    }
  };
  add(20, { width: 256, height: 256 }, 0, 0);
  add(30, { width: 512, height: 256 }, 1, 0);
  add(20, { width: 256, height: 256 }, 2, 1);
  add(20, { width: 128, height: 300 }, 3, 2);
  const rnd = seededRandom(11);
  const calls: { image: number; window: CropWindow; level: boolean }[] = [];
  const embed = async (image: number, window: CropWindow, level: boolean) => {
    calls.push({ image, window, level });
    return near(product[image] * 4, 0.5, rnd);
  };
  return { frames, labels: Int32Array.from(labels), embed, calls };
}

test('scaleMerge joins one surface split by frame size, not another product, and crops inside the frames', async () => {
  const k = surfaceCase();
  const r = await scaleMerge(k.labels, 4, k.frames, perView(k.embed), { minMixing: 0.4, samples: 16 });
  assert.equal(r.count, 3);
  // clusters 0 and 1 are one now; 2 and 3 keep their own
  assert.equal(r.labels[0], r.labels[25]);
  assert.notEqual(r.labels[0], r.labels[55]);
  assert.notEqual(r.labels[55], r.labels[80]);
  assert.deepEqual(
    r.merged.map((m) => [m.reason, m.size, m.window]),
    [['scale', 20, '256x256']],
  );
  // 0 and 2 share their frame size: compared whole (levelled crops of the full frame), they stay apart
  const same = r.tested.find((t) => t.a === 0 && t.b === 2);
  assert.equal(same?.window, '256x256');
  assert.ok(same.mixing < 0.4, JSON.stringify(same));
  assert.equal(r.tested.find((t) => t.a === 0 && t.b === 3)?.window, '128x256');
  for (const { image, window } of k.calls) {
    const f = k.frames[image];
    assert.ok(window.left >= 0 && window.top >= 0 && window.left + window.width <= f.width && window.top + window.height <= f.height, JSON.stringify({ f, window }));
  }
  // each cluster's sample is cropped once per window (cluster 1 at 256x256 and at 128x256), embedded
  // levelled and, for pairs whose frame sizes differ, as filmed at the same position
  const key = (c: { image: number; window: CropWindow }) => `${c.image}|${c.window.width}x${c.window.height}`;
  assert.equal(k.calls.length, new Set(k.calls.map((c) => `${key(c)}|${c.level}`)).size);
  const filmed = k.calls.filter((c) => !c.level);
  assert.ok(filmed.length > 0 && filmed.every((c) => k.calls.some((l) => l.level && key(l) === key(c) && l.window.left === c.window.left && l.window.top === c.window.top)));
});

test('scaleMerge with 0 is off, and applyScaleMerge renumbers the log and the split leaves', async () => {
  const k = surfaceCase();
  const off = await scaleMerge(k.labels, 4, k.frames, perView(k.embed), { minMixing: 0, samples: 16 });
  assert.equal(off.count, 4);
  assert.equal(k.calls.length, 0);
  const on = await scaleMerge(k.labels, 4, k.frames, perView(k.embed), { minMixing: 0.4, samples: 16 });
  const base = {
    labels: k.labels,
    count: 4,
    hierarchy: [],
    chosen: 0,
    reason: 'best silhouette 0.5 at 4 clusters',
    merged: [{ reason: 'small' as const, size: 3, distance: 0.1, into: 3 }],
    splits: [0, 1, 2, 3].map((c) => ({ node: `0.${c}`, size: 1, level: null, silhouette: null, groups: 1, split: false, cluster: c })),
  };
  const c = applyScaleMerge(base, on);
  assert.equal(c.count, 3);
  assert.match(c.reason, /1 scale merges .* -> 3$/);
  assert.deepEqual(
    c.splits.map((s) => s.cluster),
    [c.labels[0], c.labels[25], c.labels[55], c.labels[80]],
  );
  assert.equal(c.merged[0].into, c.labels[80]);
  assert.equal(c.merged[1].reason, 'scale');
});

test('cropImage copies the rectangle and clamps it to the frame', () => {
  const img = { width: 4, height: 3, data: Uint8Array.from({ length: 36 }, (_, i) => i) };
  const c = cropImage(img, { left: 1, top: 1, width: 2, height: 2 });
  assert.deepEqual([c.width, c.height], [2, 2]);
  assert.deepEqual([...c.data], [15, 16, 17, 18, 19, 20, 27, 28, 29, 30, 31, 32]);
  const edge = cropImage(img, { left: 3, top: 2, width: 10, height: 10 });
  assert.deepEqual([edge.width, edge.height, ...edge.data], [1, 1, 33, 34, 35]);
});

/** Luminance mean and standard deviation, as levelled measures them. */
function lumaStats(img: RgbImage): [number, number] {
  const y: number[] = [];
  for (let i = 0; i < img.data.length; i += 3) y.push(0.299 * img.data[i] + 0.587 * img.data[i + 1] + 0.114 * img.data[i + 2]);
  const m = y.reduce((a, b) => a + b, 0) / y.length;
  return [m, Math.sqrt(y.reduce((a, b) => a + (b - m) ** 2, 0) / y.length)];
}

test('levelled: the same frame under another gain and offset levels to the same image', () => {
  // a frame with values 64..192 under a lamp 0.5x..1.6x as bright and a black level shifted by up to 30
  const frame = fc.record({
    w: fc.integer({ min: 4, max: 24 }),
    h: fc.integer({ min: 4, max: 24 }),
    seed: fc.integer(),
    gain: fc.double({ min: 0.5, max: 1.6, noNaN: true }),
    offset: fc.integer({ min: -30, max: 30 }),
  });
  fc.assert(
    fc.property(frame, ({ w, h, seed, gain, offset }) => {
      const rnd = seededRandom(seed);
      const data = new Uint8Array(w * h * 3);
      for (let i = 0; i < data.length; i += 3) {
        const base = 64 + rnd() * 118;
        for (let c = 0; c < 3; c++) data[i + c] = Math.round(base + rnd() * 10);
      }
      const lit = Uint8Array.from(data, (v) => Math.max(0, Math.min(255, Math.round((v - 128) * gain + 128 + offset))));
      // where the needed gain is past its bound (an almost flat frame), levelling stops short by design
      fc.pre(lumaStats({ width: w, height: h, data: lit })[1] > (1.05 * LEVEL_SPREAD) / LEVEL_MAX_GAIN);
      const a = levelled({ width: w, height: h, data });
      const b = levelled({ width: w, height: h, data: lit });
      // rounding the relit frame to 8 bits moves each value by up to 0.5 before the (at most 3x) gain
      const worst = a.data.reduce((m, v, i) => Math.max(m, Math.abs(v - b.data[i])), 0);
      assert.ok(worst <= 3, `largest difference ${worst}`);
      const [mean, sd] = lumaStats(a);
      assert.ok(Math.abs(mean - LEVEL_MEAN) < 1.5 && Math.abs(sd - LEVEL_SPREAD) < 1.5, `${mean} ${sd}`);
    }),
    { numRuns: 200 },
  );
});

test('levelled keeps colour and does not blow a flat frame up', () => {
  // a red part in light and shade: levelled per channel it would turn gray; one gain keeps it red
  const red = { width: 16, height: 1, data: Uint8Array.from({ length: 48 }, (_, i) => (i % 3 ? 30 : 100 + 8 * Math.floor(i / 3))) };
  const l = levelled(red).data;
  for (let p = 0; p < 48; p += 3) assert.ok(l[p] > l[p + 1] + 40 && l[p + 1] === l[p + 2], String([...l]));
  // a flat frame with one pixel 1 level off: the gain stops at 3, so that pixel moves by 3, not to 255
  const flat = { width: 8, height: 8, data: new Uint8Array(192).fill(90) };
  flat.data.fill(91, 0, 3);
  const f = levelled(flat).data;
  assert.ok(
    f.every((v) => Math.abs(v - LEVEL_MEAN) <= 3),
    String([...f.slice(0, 6)]),
  );
  assert.deepEqual([...levelled({ width: 0, height: 0, data: new Uint8Array(0) }).data], []);
});

test('scaleMerge leaves a pair alone when the common window is a small part of the frames', async () => {
  const frames: FrameSize[] = [...Array.from({ length: 16 }, () => ({ width: 1024, height: 1024 })), ...Array.from({ length: 16 }, () => ({ width: 1024, height: 96 }))];
  const labels = Int32Array.from(frames, (_, i) => (i < 16 ? 0 : 1));
  const rnd = seededRandom(2);
  let calls = 0;
  const embed = async () => {
    calls++;
    return near(0, 0.5, rnd);
  };
  const r = await scaleMerge(labels, 2, frames, perView(embed), { minMixing: 0.4, samples: 16 });
  assert.equal(r.count, 2);
  assert.equal(calls, 0);
  assert.deepEqual(r.tested, []);
});

test('mixing is 0 when a side has k rows or fewer (its links must leave it, however far)', () => {
  const rnd = seededRandom(8);
  const far = stack([...Array.from({ length: 3 }, () => near(0, 0.1, rnd)), ...Array.from({ length: 3 }, () => near(9, 0.1, rnd))]);
  assert.equal(mixing(far, 3, 3, D, 3), 0);
});

test('scaleMerge: a cluster that mixes with two products does not bridge them', async () => {
  // 0 and 2 are different products; 1 looks like both (half its crops like each). 0-1 and 1-2 mix, 0-2 does not.
  const frames: FrameSize[] = [
    ...Array.from({ length: 16 }, () => ({ width: 256, height: 256 })),
    ...Array.from({ length: 16 }, () => ({ width: 512, height: 256 })),
    ...Array.from({ length: 16 }, () => ({ width: 256, height: 512 })),
  ];
  const labels = Int32Array.from(frames, (_, i) => Math.floor(i / 16));
  const rnd = seededRandom(4);
  const embed = async (i: number) => near(i < 16 ? 0 : i >= 32 ? 8 : i % 2 ? 0 : 8, 0.3, rnd);
  const r = await scaleMerge(labels, 3, frames, perView(embed), { minMixing: 0.4, samples: 16 });
  const mixOf = (a: number, b: number) => r.tested.find((t) => t.a === a && t.b === b)!.mixing;
  assert.ok(mixOf(0, 1) >= 0.4 && mixOf(1, 2) >= 0.4 && mixOf(0, 2) === 0, JSON.stringify(r.tested));
  assert.notEqual(r.labels[0], r.labels[40], 'the two products stay apart');
  assert.equal(r.count, 2);
  // after applyScaleMerge the tests name the final clusters: the merged pair names one cluster twice
  const base = { labels, count: 3, hierarchy: [], chosen: 0, reason: 'x', merged: [], splits: [] };
  const c = applyScaleMerge(base, r);
  for (const t of c.scaleTests!) assert.ok(t.a < c.count && t.b < c.count);
  assert.equal(c.scaleTests!.filter((t) => t.a === t.b).length, 1);
});

test('scaleMerge joins a pair whose crops mix as filmed or levelled, and not one that mixes in neither', async () => {
  const frames: FrameSize[] = [...Array.from({ length: 16 }, () => ({ width: 256, height: 256 })), ...Array.from({ length: 16 }, () => ({ width: 512, height: 256 }))];
  const labels = Int32Array.from(frames, (_, i) => (i < 16 ? 0 : 1));
  const rnd = seededRandom(12);
  const cases: [string, (i: number, level: boolean) => number, number][] = [
    ['mix as filmed only (the light makes them differ only once levelled)', (i, level) => (level ? labels[i] * 4 : 0), 1],
    ['mix levelled only (a dimmer lamp on the larger frames)', (i, level) => (level ? 0 : labels[i] * 4), 1],
    ['mix in neither', (i) => labels[i] * 4, 2],
  ];
  for (const [name, axis, count] of cases) {
    const r = await scaleMerge(
      labels,
      2,
      frames,
      perView(async (i, _w, level) => near(axis(i, level), 0.5, rnd)),
      { minMixing: 0.4, samples: 16 },
    );
    assert.equal(r.count, count, `${name}: ${JSON.stringify(r.tested)}`);
  }
});
