import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clusterEmbeddings, finch, mergeClusters, normaliseRows, poseScaleOf, silhouette } from '../src/route/finch.ts';
import { POSE_ALL, poseSampled, poseWays } from '../src/calibrate/calibrate.ts';
import { seededRandom } from '../src/score/coreset.ts';

/** Gaussian blobs around random unit centres in d dimensions. */
function blobs(k: number, per: number, d: number, spread: number, seed: number): { x: Float32Array; truth: Int32Array } {
  const rnd = seededRandom(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
  const centres = normaliseRows(Float32Array.from({ length: k * d }, gauss), k, d);
  const x = new Float32Array(k * per * d);
  const truth = new Int32Array(k * per);
  for (let c = 0; c < k; c++) {
    for (let i = 0; i < per; i++) {
      const r = c * per + i;
      truth[r] = c;
      for (let j = 0; j < d; j++) x[r * d + j] = centres[c * d + j] + spread * gauss();
    }
  }
  return { x, truth };
}

/** True when two labelings are the same partition up to renaming. */
function samePartition(a: Int32Array, b: Int32Array): boolean {
  const ab = new Map<number, number>();
  const ba = new Map<number, number>();
  for (let i = 0; i < a.length; i++) {
    if ((ab.get(a[i]) ?? b[i]) !== b[i] || (ba.get(b[i]) ?? a[i]) !== a[i]) return false;
    ab.set(a[i], b[i]);
    ba.set(b[i], a[i]);
  }
  return true;
}

/** True when every cluster of `p` lies inside one cluster of `truth`. */
function refines(p: Int32Array, truth: Int32Array): boolean {
  const owner = new Map<number, number>();
  for (let i = 0; i < p.length; i++) {
    if ((owner.get(p[i]) ?? truth[i]) !== truth[i]) return false;
    owner.set(p[i], truth[i]);
  }
  return true;
}

test('FINCH on Gaussian blobs recovers the blobs', () => {
  const d = 16;
  for (const seed of [1, 2, 7]) {
    const { x, truth } = blobs(4, 30, d, 0.04, seed);
    const u = normaliseRows(x, 120, d);
    const parts = finch(u, 120, d);
    const levels = parts.map((p) => p.count).join(', ');
    assert.ok(parts.length >= 2, 'a hierarchy of several partitions');
    for (let i = 1; i < parts.length; i++) assert.ok(parts[i].count < parts[i - 1].count, 'each level is coarser');
    // Every level down to 4 clusters only joins points of one blob (first-neighbour links never cross).
    for (const p of parts.filter((q) => q.count >= 4)) assert.ok(refines(p.labels, truth), `seed ${seed}: level ${p.count} mixes blobs (${levels})`);
    // Seed 7 leaves one blob in two halves at the level above 4; the pose merge joins them (turning
    // a "part" over moves it 0.05 here, the halves are closer than 2.5x that, the blobs far beyond).
    const pose = { samples: new Float32Array(120 * 3).fill(0.05), perRow: 3 };
    const r = clusterEmbeddings(x, 120, d, { minSilhouette: 0.2, poseMerge: 2.5, minClusterSize: 5 }, pose);
    assert.equal(r.count, 4, `seed ${seed}: ${r.reason} (${levels})`);
    assert.ok(samePartition(r.labels, truth));
    if (parts.some((p) => samePartition(p.labels, truth))) {
      const plain = clusterEmbeddings(x, 120, d, { minSilhouette: 0.2, poseMerge: 0, minClusterSize: 5 }, pose);
      assert.ok(samePartition(plain.labels, truth), `seed ${seed}: silhouette picks the blob level`);
    }
  }
});

test('silhouette under cosine distance matches a hand-computed case', () => {
  // Unit vectors at angles 0, 10, 90, 100 degrees, clusters {0,1} and {2,3}.
  const deg = [0, 10, 90, 100].map((a) => (a * Math.PI) / 180);
  const u = Float32Array.from(deg.flatMap((a) => [Math.cos(a), Math.sin(a)]));
  const p = { labels: Int32Array.from([0, 0, 1, 1]), count: 2 };
  const dist = (a: number, b: number) => 1 - Math.cos(deg[a] - deg[b]);
  // point 0: a = d(0,1), b = mean(d(0,2), d(0,3)); symmetric for the rest
  const s = [0, 1, 2, 3].map((i) => {
    const own = p.labels[i];
    const mates = [0, 1, 2, 3].filter((j) => j !== i && p.labels[j] === own);
    const others = [0, 1, 2, 3].filter((j) => p.labels[j] !== own);
    const a = mates.reduce((t, j) => t + dist(i, j), 0) / mates.length;
    const b = others.reduce((t, j) => t + dist(i, j), 0) / others.length;
    return (b - a) / Math.max(a, b);
  });
  const expected = s.reduce((a, b) => a + b, 0) / 4;
  // a = 1 - cos 10° = 0.015192 for all; b = 1.086824 (points at 0° and 100°) or 0.913176 (10°, 90°)
  // -> s = 0.986022 and 0.983364, mean 0.984693
  assert.ok(Math.abs(expected - 0.984693) < 1e-5, `hand value ${expected}`);
  assert.ok(Math.abs(silhouette(u, 4, 2, p)! - expected) < 1e-6);
  assert.equal(silhouette(u, 4, 2, { labels: new Int32Array(4), count: 1 }), null, 'undefined for one cluster');
});

test('one product type stays one cluster; poses of one product are merged; tiny clusters are merged', () => {
  const d = 16;
  // One blob: FINCH splits it, the silhouette rule keeps it whole.
  const one = blobs(1, 80, d, 0.3, 3);
  const r1 = clusterEmbeddings(one.x, 80, d, { minSilhouette: 0.2, poseMerge: 2.5, minClusterSize: 10 });
  assert.equal(r1.count, 1, r1.reason);
  assert.ok(finch(normaliseRows(one.x, 80, d), 80, d)[0].count > 1, 'FINCH alone would split it');
  // Two "poses" of one product about 0.1 apart (turning it over moves it 0.1), and a rigid third
  // product (turning moves it 0.01): the poses merge, the rigid product stays apart.
  const rnd = seededRandom(9);
  const base = normaliseRows(
    Float32Array.from({ length: d }, () => rnd() - 0.5),
    1,
    d,
  );
  const turned = Float32Array.from(base, (v, i) => v + (i === 0 ? 0.45 : 0));
  const other = Float32Array.from(base, (v, i) => (i === 1 ? 3 : -v));
  const rows: number[] = [];
  const truth: number[] = [];
  for (let i = 0; i < 90; i++) {
    const c = [base, turned, other][i % 3];
    for (let j = 0; j < d; j++) rows.push(c[j] + 0.01 * (rnd() - 0.5));
    truth.push(i % 3 === 2 ? 1 : 0);
  }
  const x = Float32Array.from(rows);
  const pose = { samples: Float32Array.from({ length: 90 * 3 }, (_, k) => (Math.floor(k / 3) % 3 === 2 ? 0.01 : 0.1)), perRow: 3 };
  const without = clusterEmbeddings(x, 90, d, { minSilhouette: 0.2, poseMerge: 0, minClusterSize: 2 }, pose);
  assert.equal(without.count, 3, 'silhouette alone keeps the poses apart');
  const merged = clusterEmbeddings(x, 90, d, { minSilhouette: 0.2, poseMerge: 2.5, minClusterSize: 2 }, pose);
  assert.equal(merged.count, 2, merged.reason);
  assert.ok(samePartition(merged.labels, Int32Array.from(truth)));
  assert.equal(merged.merged[0].reason, 'pose');
  assert.ok(merged.merged[0].distance < merged.merged[0].limit!, 'merged below 2.5x the pose scale');
  // A scale-blind rule would need another distance per backbone; this one follows the pose scale:
  const shrunk = Float32Array.from(x, (v, i) => v + (i % d === 5 ? 40 : 0)); // everything pulled into a narrow cone
  const poseShrunk = { samples: Float32Array.from(pose.samples, (v) => v / 100), perRow: 3 };
  const again = clusterEmbeddings(shrunk, 90, d, { minSilhouette: 0.2, poseMerge: 2.5, minClusterSize: 2 }, poseShrunk);
  assert.ok(samePartition(again.labels, Int32Array.from(truth)), `same answer in a compressed space: ${again.reason}`);
  // A 3-member cluster next to 2 big ones is merged into its nearest, and reported.
  const u = normaliseRows(x, 90, d);
  const labels = Int32Array.from(truth);
  labels[0] = 2;
  labels[3] = 2;
  labels[6] = 2;
  const m = mergeClusters(u, d, { labels, count: 3 }, 0, 10);
  assert.equal(m.partition.count, 2);
  assert.deepEqual(
    m.merged.map((s) => [s.reason, s.size]),
    [['small', 3]],
  );
  assert.equal(m.partition.labels[0], m.partition.labels[9], 'went to its own product (base/pose cluster)');
});

/**
 * Issue 9: one product far off (here in two poses) and three closer ones. The whole set's best FINCH
 * level is "far | the rest"; the choice applied again inside the rest finds the three.
 */
function farAndThree(seed: number) {
  const d = 32;
  const rnd = seededRandom(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
  const axis = (k: number) => Float32Array.from({ length: d }, (_, j) => (j === k ? 1 : 0));
  const near = (k: number) => Float32Array.from(axis(1), (v, j) => v + (j === k ? 0.35 : 0));
  const poseB = Float32Array.from(axis(0), (v, j) => v + (j === 6 ? 0.25 : 0)); // the far product turned over
  const centres = [axis(0), poseB, near(2), near(3), near(4)];
  const counts = [60, 60, 40, 40, 40];
  const truth: number[] = [];
  const rows: number[] = [];
  const turn: number[] = [];
  centres.forEach((c, g) => {
    for (let i = 0; i < counts[g]; i++) {
      for (let j = 0; j < d; j++) rows.push(c[j] + 0.02 * gauss());
      truth.push(Math.max(0, g - 1)); // groups 0 and 1 are one product
      turn.push(g < 2 ? 0.05 : 0.01, g < 2 ? 0.05 : 0.01, g < 2 ? 0.05 : 0.01);
    }
  });
  return { x: Float32Array.from(rows), n: truth.length, d, truth: Int32Array.from(truth), pose: { samples: Float32Array.from(turn), perRow: 3 } };
}

test('a far-off product and three closer ones give 4 clusters, and every split is recorded', () => {
  for (const seed of [1, 2, 3]) {
    const { x, n, d, truth, pose } = farAndThree(seed);
    const r = clusterEmbeddings(x, n, d, { minSilhouette: 0.2, poseMerge: 2.5, minClusterSize: 10 }, pose);
    const levels = r.hierarchy.map((h) => `${h.count}:${h.silhouette?.toFixed(2)}`).join(' ');
    assert.equal(r.count, 4, `seed ${seed}: ${r.reason} (${levels})`);
    assert.ok(samePartition(r.labels, truth), `seed ${seed}: the products, the far one in both poses`);
    const root = r.splits[0];
    assert.equal(root.node, '0');
    assert.ok(root.split && root.groups < 4, `seed ${seed}: the whole set alone does not give the 4 (${root.groups} groups)`);
    const inner = r.splits.filter((s) => s.split && s.node !== '0');
    assert.ok(inner.length >= 1, 'a split inside a part');
    for (const s of r.splits) {
      const kids = r.splits.filter((c) => c.node.startsWith(`${s.node}.`) && c.node.split('.').length === s.node.split('.').length + 1);
      assert.equal(kids.length, s.split ? s.groups : 0, `node ${s.node}: one child node per group`);
      assert.equal(
        kids.reduce((t, c) => t + c.size, 0),
        s.split ? s.size : 0,
        `node ${s.node}: children hold its images`,
      );
      if (!s.split) assert.ok(s.silhouette === null || s.silhouette < 0.2 || s.groups === 1, `leaf ${s.node} says why it was not split`);
    }
    const leaves = r.splits.filter((s) => !s.split);
    assert.deepEqual(leaves.map((s) => s.cluster).sort(), [0, 1, 2, 3], 'each leaf is one final cluster');
    for (const s of leaves) assert.equal(s.size, r.labels.filter((l) => l === s.cluster).length);
    // The far product's two poses were joined by a pose merge, recorded into its cluster.
    const farLeaf = leaves.find((s) => s.cluster === r.labels[0])!;
    assert.equal(farLeaf.groups, 1, 'its node was not split: its groups merged');
    const poseMerges = r.merged.filter((m) => m.reason === 'pose' && m.into === r.labels[0]);
    assert.ok(poseMerges.length >= 1 && poseMerges.every((m) => m.distance < m.limit!), JSON.stringify(r.merged));
    assert.ok(!r.merged.some((m) => m.reason === 'small'));
  }
});

test('one product in several poses stays one cluster, also when mixed with others', () => {
  const { x, n, d, pose } = farAndThree(4);
  const far = Array.from({ length: 120 }, (_, i) => i); // the far product's two pose groups
  const xs = Float32Array.from(far.flatMap((i) => Array.from(x.subarray(i * d, (i + 1) * d))));
  const ps = { samples: pose.samples.slice(0, 120 * 3), perRow: 3 };
  const alone = clusterEmbeddings(xs, 120, d, { minSilhouette: 0.2, poseMerge: 2.5, minClusterSize: 10 }, ps);
  assert.equal(alone.count, 1, alone.reason);
  assert.ok(alone.splits[0].silhouette! >= 0.2, 'FINCH and the silhouette alone would split the poses');
  assert.equal(alone.splits.length, 1);
  assert.equal(alone.splits[0].split, false);
  // Without the pose scale the two poses are two clusters: the guard is what keeps them together.
  assert.equal(clusterEmbeddings(xs, 120, d, { minSilhouette: 0.2, poseMerge: 0, minClusterSize: 10 }, ps).count, 2);
  void n;
});

test('blobs of one product never split at any depth', () => {
  const d = 16;
  for (const seed of [3, 5, 8]) {
    const one = blobs(1, 200, d, 0.3, seed);
    const r = clusterEmbeddings(one.x, 200, d, { minSilhouette: 0.2, poseMerge: 2.5, minClusterSize: 10 });
    assert.equal(r.count, 1, `seed ${seed}: ${r.reason}`);
    assert.equal(r.splits.filter((s) => s.split).length, 0);
  }
});

test('a product that varies continuously (light, texture) is one cluster: its groups are linked, other products are not', () => {
  const d = 16;
  const rnd = seededRandom(11);
  const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
  // A texture whose look varies from frame to frame in three ways (light level, light fall-off,
  // wear): images spread evenly over a box 0.6 wide in three directions; turning a texture over does
  // not move it (pose scale 0.001), so the pose guard cannot help.
  const rows: number[] = [];
  const truth: number[] = [];
  for (let i = 0; i < 300; i++) {
    const v = [0.6 * rnd(), 0.6 * rnd(), 0.6 * rnd()];
    for (let j = 0; j < d; j++) rows.push((j === 0 ? 1 : j <= 3 ? v[j - 1] : 0) + 0.004 * gauss());
    truth.push(0);
  }
  for (let i = 0; i < 100; i++) {
    for (let j = 0; j < d; j++) rows.push((j === 5 ? 1 : 0) + 0.03 * gauss());
    truth.push(1);
  }
  const n = truth.length;
  const x = Float32Array.from(rows);
  const pose = { samples: new Float32Array(n * 3).fill(0.001), perRow: 3 };
  const opts = { minSilhouette: 0.2, poseMerge: 2.5, minClusterSize: 10 };
  const unlinked = clusterEmbeddings(x, n, d, { ...opts, linkMerge: 0 }, pose);
  assert.ok(unlinked.count > 2, `without the link test the arc is cut into pieces (${unlinked.reason})`);
  const r = clusterEmbeddings(x, n, d, opts, pose);
  assert.equal(r.count, 2, r.reason);
  assert.ok(samePartition(r.labels, Int32Array.from(truth)));
  const linked = r.merged.filter((m) => m.reason === 'linked');
  assert.ok(linked.length >= 1 && linked.every((m) => m.links! >= 0.05 && m.into === r.labels[0]), JSON.stringify(r.merged));
});

test('pose scales: every image sampled up to POSE_ALL, an even half beyond; unsampled (NaN) rows are skipped', () => {
  for (const n of [1, 7, POSE_ALL]) assert.equal(Array.from({ length: n }, (_, i) => poseSampled(i, n)).filter(Boolean).length, n);
  for (const n of [POSE_ALL + 1, 1000, 1513, 5000]) {
    const picked = Array.from({ length: n }, (_, i) => i).filter((i) => poseSampled(i, n));
    assert.equal(picked.length, Math.max(POSE_ALL, Math.ceil(n / 2)), `n ${n}`);
    // Evenly spread: no gap longer than ceil(n / picked), so every run of consecutive images has samples.
    const gaps = picked.slice(1).map((p, j) => p - picked[j]);
    assert.ok(Math.max(...gaps) <= Math.ceil(n / picked.length), `n ${n}: gap ${Math.max(...gaps)}`);
  }
  const pose = { samples: Float32Array.from([0.1, Number.NaN, 0.3, Number.NaN, 0.2]), perRow: 1 };
  assert.equal(poseScaleOf(pose, [0, 1, 2, 3, 4]), poseScaleOf({ samples: Float32Array.from([0.1, 0.3, 0.2]), perRow: 1 }, [0, 1, 2]));
  assert.equal(poseScaleOf(pose, [1, 3]), poseScaleOf(pose, [0, 2, 4]), "a group without samples takes the whole set's scale");
  // Every way of turning a part over is sampled about equally, whatever n (at 900 the image index
  // pattern would skip the 180° turn).
  for (const n of [3, 300, 900, 1513, 4000]) {
    const ways = poseWays(n);
    const count = [0, 1, 2].map((w) => ways.filter((x) => x === w).length);
    const picked = ways.filter((x) => x >= 0).length;
    assert.ok(Math.min(...count) >= Math.floor(picked / 3), `n ${n}: ways ${count}`);
  }
});

test('crossing test (opt-in): with turned copies kept, a pose merge needs them to cross over; poses merge, a near look-alike does not', () => {
  const d = 16;
  const rnd = seededRandom(21);
  const base = normaliseRows(
    Float32Array.from({ length: d }, () => rnd() - 0.5),
    1,
    d,
  );
  const flipped = normaliseRows(
    Float32Array.from(base, (v, i) => v + (i === 0 ? 0.45 : 0)),
    1,
    d,
  );
  const other = normaliseRows(
    Float32Array.from(base, (v, i) => (i === 1 ? 3 : -v)),
    1,
    d,
  );
  const groups = [base, flipped, other];
  const n = 90;
  const noisy = (c: Float32Array) => Array.from(c, (v) => v + 0.01 * (rnd() - 0.5));
  const rows = (pick: (i: number) => number) => Float32Array.from(Array.from({ length: n }, (_, i) => noisy(groups[pick(i)])).flat());
  const x = rows((i) => i % 3);
  const samples = Float32Array.from({ length: n }, (_, i) => (i % 3 === 2 ? 0.01 : 0.1));
  const opts = { minSilhouette: 0.2, poseMerge: 2.5, minClusterSize: 2, turnedShare: 0.2 };
  // Turning a part of group 0 over gives one of group 1 and back: one product in two poses.
  const crossing = rows((i) => [1, 0, 2][i % 3]);
  const poses = clusterEmbeddings(x, n, d, opts, { samples, perRow: 1, turned: normaliseRows(crossing, n, d) });
  assert.equal(poses.count, 2, poses.reason);
  // Turned over, each stays in its own group (a close-up or a negative of a part): two products,
  // though they are as near as the poses were.
  const staying = rows((i) => i % 3);
  const lookalike = clusterEmbeddings(x, n, d, opts, { samples, perRow: 1, turned: normaliseRows(staying, n, d) });
  assert.equal(lookalike.count, 3, lookalike.reason);
  // Without the turned copies, or with the test off (the default), the distance rule alone merges them.
  assert.equal(clusterEmbeddings(x, n, d, opts, { samples, perRow: 1 }).count, 2);
  assert.equal(clusterEmbeddings(x, n, d, { ...opts, turnedShare: undefined }, { samples, perRow: 1, turned: normaliseRows(staying, n, d) }).count, 2);
});
