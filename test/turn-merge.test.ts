import assert from 'node:assert/strict';
import { test } from 'node:test';
import { turnedQuarter } from '../src/features/image.ts';
import { normaliseRows } from '../src/route/finch.ts';
import type { FrameSize } from '../src/route/scale-merge.ts';
import { turnMerge } from '../src/route/turn-merge.ts';
import { seededRandom } from '../src/score/coreset.ts';

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
