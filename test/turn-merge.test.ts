import assert from 'node:assert/strict';
import { test } from 'node:test';
import { turnedQuarter } from '../src/features/image.ts';
import { normaliseRows } from '../src/route/finch.ts';
import { applyScaleMerge, type FrameSize, mixing, scaleMerge } from '../src/route/scale-merge.ts';
import { turnMerge } from '../src/route/turn-merge.ts';
import { seededRandom } from '../src/score/coreset.ts';
import { perView } from './helpers/synthetic.ts';

const D = 16;

function near(axis: number, spread: number, rnd: () => number): Float32Array {
  const v = Float32Array.from({ length: D }, () => (rnd() - 0.5) * spread);
  v[axis] += 1;
  return normaliseRows(v, 1, D);
}

test('turnedQuarter turns clockwise and swaps the sides', () => {
  // 3 wide, 2 high: pixels numbered 0..5 row by row (value in every channel)
  const img = { width: 3, height: 2, data: Uint8Array.from([0, 1, 2, 3, 4, 5].flatMap((v) => [v, v, v])) };
  const t = turnedQuarter(img);
  assert.deepEqual([t.width, t.height], [2, 3]);
  // clockwise: the bottom-left pixel (3) goes to the top-left
  assert.deepEqual(
    Array.from({ length: 6 }, (_, i) => t.data[3 * i]),
    [3, 0, 4, 1, 5, 2],
  );
  const back = turnedQuarter(turnedQuarter(turnedQuarter(t)));
  assert.deepEqual([...back.data], [...img.data]);
});

/**
 * A grain surface in square frames (cluster 0), the same grain turned a quarter (cluster 1, which the
 * pose rule never joins: it samples only 180° and the mirrors), another product (cluster 2), and a
 * product in other frames (cluster 3). The embedder plays the backbone: turning grain gives turned grain.
 */
function grainCase() {
  const rnd = seededRandom(5);
  const frames: FrameSize[] = [];
  const labels: number[] = [];
  const look: number[] = []; // 0 grain, 1 turned grain, 2 disc, 3 bar
  const add = (n: number, f: FrameSize, label: number, l: number) => {
    for (let i = 0; i < n; i++) {
      frames.push(f);
      labels.push(label);
      look.push(l);
    }
  };
  add(30, { width: 256, height: 256 }, 0, 0);
  add(20, { width: 256, height: 256 }, 1, 1);
  add(20, { width: 256, height: 256 }, 2, 2);
  add(20, { width: 300, height: 100 }, 3, 3);
  // looks like turned grain, but turned itself looks like a disc: only one direction matches
  add(20, { width: 256, height: 256 }, 4, 5);
  const semantic = new Float32Array(look.length * D);
  look.forEach((l, i) => semantic.set(near((l === 5 ? 1 : l) * 3, 0.5, rnd), i * D));
  const turnedLook = [1, 0, 2, 4, 0, 2];
  const calls: number[] = [];
  const embed = async (i: number) => {
    calls.push(i);
    return near(turnedLook[look[i]] * 3, 0.5, rnd);
  };
  return { frames, labels: Int32Array.from(labels), semantic, embed, calls };
}

test('turnMerge joins a product turned a quarter, keeps a turn-invariant other product apart, and turns only clusters with a partner', async () => {
  const k = grainCase();
  const r = await turnMerge(k.labels, 5, k.frames, k.semantic, D, k.embed, { minMixing: 0.4, samples: 16 });
  assert.equal(r.count, 4);
  assert.equal(r.labels[0], r.labels[35]);
  assert.notEqual(r.labels[0], r.labels[55]);
  assert.notEqual(r.labels[55], r.labels[75]);
  assert.deepEqual(
    r.merged.map((m) => [m.reason, m.size, m.window]),
    [['turn', 20, '256x256']],
  );
  // the 300x100 bar has no cluster in 100x300 frames: never turned
  assert.ok(k.calls.every((i) => k.labels[i] !== 3));
  // the disc turned is a disc: tested against grain, no mixing
  assert.ok(r.tested.some((t) => t.a === 0 && t.b === 2 && t.mixing === 0));
  // grain turned mixes with cluster 4, but cluster 4 turned is a disc: the lower direction counts
  assert.equal(r.tested.find((t) => t.a === 0 && t.b === 4)?.mixing, 0);
  assert.notEqual(r.labels[0], r.labels[95]);
});

test('turnMerge with 0 turns nothing', async () => {
  const k = grainCase();
  const r = await turnMerge(k.labels, 5, k.frames, k.semantic, D, k.embed, { minMixing: 0, samples: 16 });
  assert.equal(r.count, 5);
  assert.equal(k.calls.length, 0);
});

/** `strayIn`: the grain frame size whose quarter-turned copies sit in cluster 1 (default the square one). */
function multiSizeCase(otherProduct: number, strayIn = 0) {
  const rnd = seededRandom(9);
  const sizes: FrameSize[] = [
    { width: 256, height: 256 },
    { width: 320, height: 240 },
    { width: 400, height: 300 },
    { width: 512, height: 256 },
    { width: 224, height: 336 },
  ];
  const tall = { width: 200, height: 500 };
  const keys = [...new Set([...sizes, tall, ...sizes.map((f) => ({ width: f.height, height: f.width }))].map((f) => `${f.width}x${f.height}`))];
  const vec = (look: number, f: FrameSize) => {
    const v = near(look, 0.3, rnd);
    v[5 + keys.indexOf(`${f.width}x${f.height}`)] += 0.9;
    return normaliseRows(v, 1, D);
  };
  const frames: FrameSize[] = [];
  const looks: number[] = [];
  const labels: number[] = [];
  const add = (n: number, f: FrameSize, look: number, label: number) => {
    for (let i = 0; i < n; i++) {
      frames.push(f);
      looks.push(look);
      labels.push(label);
    }
  };
  // grain (look 0) in five frame sizes; grain turned a quarter (look 3), in cluster 1
  for (const f of sizes) add(20, f, 0, 0);
  add(20, { width: sizes[strayIn].height, height: sizes[strayIn].width }, 3, 1);
  // with otherProduct: cluster 1 is mostly another product (look 4) in tall frames
  add(otherProduct, tall, 4, 1);
  const semantic = new Float32Array(frames.length * D);
  frames.forEach((f, i) => semantic.set(vec(looks[i], f), i * D));
  const calls: number[] = [];
  const turnedLook = (l: number) => (l === 0 ? 3 : l === 3 ? 0 : 2);
  const embed = async (i: number) => {
    calls.push(i);
    return vec(turnedLook(looks[i]), { width: frames[i].height, height: frames[i].width });
  };
  return { labels: Int32Array.from(labels), frames, semantic, embed, calls };
}

test('turnMerge does not join a whole cluster on the strength of a few of its images in the tested frame size', async () => {
  const k = multiSizeCase(100);
  const r = await turnMerge(k.labels, 2, k.frames, k.semantic, D, k.embed, { minMixing: 0.4, samples: 16 });
  assert.equal(r.count, 2, `tested: ${JSON.stringify(r.tested)}`);
  // 20 square of 120 (17%) against the grain's 20 of 100: which side holds strays is not clear, nothing moves
  assert.deepEqual([...r.labels], [...k.labels], JSON.stringify(r.merged));
});

test('turnMerge moves a few quarter-turned frames, and only them, from the cluster they stray in to their product', async () => {
  const k = multiSizeCase(200);
  const r = await turnMerge(k.labels, 2, k.frames, k.semantic, D, k.embed, { minMixing: 0.4, samples: 16 });
  assert.equal(r.count, 2, `tested: ${JSON.stringify(r.tested)}`);
  // 20 of 220 (9%) of cluster 1 are square: grain turned, where grain's 100 are 20% square
  const turnedGrain = [...k.labels.keys()].filter((i) => k.labels[i] === 1 && k.frames[i].width === 256);
  const tallOnes = [...k.labels.keys()].filter((i) => k.labels[i] === 1 && k.frames[i].width === 200);
  assert.equal(turnedGrain.length, 20);
  assert.ok(turnedGrain.every((i) => r.labels[i] === r.labels[0]));
  assert.ok(tallOnes.every((i) => r.labels[i] !== r.labels[0]));
  assert.ok(
    k.labels.every((c, i) => c === 1 || r.labels[i] === r.labels[0]),
    'cluster 0 keeps all its images',
  );
  assert.deepEqual(
    r.merged.map((m) => [m.reason, m.size, m.window, m.from, m.into]),
    [['stray', 20, '256x256', r.labels[tallOnes[0]], r.labels[0]]],
  );
  // in the clustering, the leaves keep naming their product's cluster, not the strays'
  const base = {
    labels: k.labels,
    count: 2,
    hierarchy: [],
    chosen: 0,
    reason: 'split',
    merged: [],
    splits: [0, 1].map((c) => ({ node: `0.${c}`, size: 1, level: null, silhouette: null, groups: 1, split: false, cluster: c })),
  };
  const c = applyScaleMerge(base, r, 'turn');
  assert.deepEqual(
    c.splits.map((x) => x.cluster),
    [r.labels[0], r.labels[tallOnes[0]]],
  );
  assert.match(c.reason, /^split; 20 quarter-turned images moved/);
});

test('turnMerge moves strays filmed in a frame size that is not square', async () => {
  // the strays are 240x320 frames: each direction of the test names the size as it is or turned
  const k = multiSizeCase(200, 1);
  const r = await turnMerge(k.labels, 2, k.frames, k.semantic, D, k.embed, { minMixing: 0.4, samples: 16 });
  const strays = [...k.labels.keys()].filter((i) => k.frames[i].width === 240);
  assert.equal(strays.length, 20);
  assert.ok(
    strays.every((i) => r.labels[i] === r.labels[0]),
    JSON.stringify(r.tested),
  );
  assert.deepEqual(
    r.merged.map((m) => [m.reason, m.size]),
    [['stray', 20]],
  );
});

test('turnMerge and scaleMerge with fewer than 4 samples a cluster merge nothing and do not throw', async () => {
  const k = multiSizeCase(0);
  for (const samples of [0, -1, Number.NaN, 3]) {
    const r = await turnMerge(k.labels, 2, k.frames, k.semantic, D, k.embed, { minMixing: 0.4, samples });
    assert.equal(r.count, 2, `samples ${samples}`);
    const s = await scaleMerge(
      k.labels,
      2,
      k.frames,
      perView(async () => k.semantic.subarray(0, D)),
      { minMixing: 0.4, samples },
    );
    assert.equal(s.count, 2, `samples ${samples}`);
  }
});

test('turnMerge moves no strays that are a third of their cluster', async () => {
  const k = multiSizeCase(40);
  const r = await turnMerge(k.labels, 2, k.frames, k.semantic, D, k.embed, { minMixing: 0.4, samples: 16 });
  assert.deepEqual([...r.labels], [...k.labels], JSON.stringify(r.merged));
  assert.equal(r.merged.length, 0);
});

test('turnMerge compares a product in several frame sizes with its quarter-turned square frames in the square size alone', async () => {
  // The embedding moves with the frame size as well as with the look (as a real backbone's does at
  // input_size auto): turned copies of cluster 0's other sizes are nothing like cluster 1.
  const k = multiSizeCase(0);
  const r = await turnMerge(k.labels, 2, k.frames, k.semantic, D, k.embed, { minMixing: 0.4, samples: 16 });
  assert.equal(r.count, 1, `tested: ${JSON.stringify(r.tested)}`);
  assert.deepEqual(
    r.merged.map((m) => [m.reason, m.window]),
    [['turn', '256x256']],
  );
  const square = (i: number) => k.frames[i].width === 256 && k.frames[i].height === 256;
  assert.ok(k.calls.every(square), 'only frames whose turned size the other cluster was filmed in are turned');
  assert.equal(new Set(k.calls).size, k.calls.length, 'each image is turned and embedded once');
});

test('mixing counts no link for a row whose neighbours are undefined (NaN)', () => {
  // two far-apart groups, one row of b NaN: before, its missing neighbours (-1) counted as links into a
  const rnd = seededRandom(4);
  const rows = new Float32Array(16 * D);
  for (let i = 0; i < 16; i++) rows.set(near(i < 8 ? 0 : 1, 0.05, rnd), i * D);
  const clean = mixing(rows, 8, 8, D);
  rows.fill(Number.NaN, 15 * D, 16 * D);
  assert.equal(clean, 0);
  assert.equal(mixing(rows, 8, 8, D), 0);
});
