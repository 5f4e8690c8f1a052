import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Router, leaveOneOutDistances, routingLimit, selectKeys } from '../src/route/router.ts';
import { quantile } from '../src/util/stats.ts';
import { normaliseRows } from '../src/route/finch.ts';
import { f1Threshold, frrThreshold, kFolds, normaliseScore, summarise } from '../src/calibrate/threshold.ts';
import { seededRandom } from '../src/score/coreset.ts';

const unit = (...v: number[]) => normaliseRows(Float32Array.from(v), 1, v.length);

test('router: nearest key wins; beyond the cluster limit the frame is unknown', () => {
  const a = { keys: Float32Array.from([...unit(1, 0, 0), ...unit(1, 0.1, 0)]), count: 2, limit: 0.05 };
  const b = { keys: unit(0, 1, 0), count: 1, limit: 0.2 };
  const r = new Router([a, b], 3);
  const near = r.route(Float32Array.from([2, 0.1, 0]));
  assert.equal(near.cluster, 0);
  assert.ok(near.distance < 0.002, `distance ${near.distance}`);
  assert.ok(Math.abs(near.margin - (1 - 0.1 / Math.hypot(2, 0.1) - near.distance)) < 1e-6, 'margin = second-nearest minus nearest distance');
  const toB = r.route(Float32Array.from([0.3, 1, 0]));
  assert.equal(toB.cluster, 1, 'scale does not matter, direction does');
  // 45 degrees between a and c: 1 - cos 45° = 0.29 > a's 0.05 limit -> unknown, nearest still reported
  const unknown = r.route(Float32Array.from([1, 0, 1]));
  assert.equal(unknown.cluster, null);
  assert.equal(unknown.nearest, 0);
  assert.equal(unknown.limit, 0.05);
  assert.throws(() => r.route(new Float32Array(4)), /has 4 values, the router expects 3/);
  assert.throws(() => new Router([], 3), /at least one cluster/);
});

test('routing keys and limits: leave-one-out distances skip the member itself; coreset keys cover all poses', () => {
  const rnd = seededRandom(4);
  const d = 8;
  // two tight poses of one product
  const rows: number[] = [];
  for (let i = 0; i < 40; i++) for (let j = 0; j < d; j++) rows.push((j === (i % 2 ? 0 : 1) ? 1 : 0.05) + 0.01 * rnd());
  const u = normaliseRows(Float32Array.from(rows), 40, d);
  const all = selectKeys(u, 40, d, 'all', 0);
  const loo = leaveOneOutDistances(u, 40, d, all);
  assert.ok(Math.max(...loo) < 0.01, 'each member has a twin in its pose');
  assert.ok(Math.min(...loo) > 0, 'its own key is not counted');
  const core = selectKeys(u, 40, d, 'coreset', 2);
  assert.equal(core.count, 2);
  const poses = [0, 1].map((k) => (core.keys[k * d] > core.keys[k * d + 1] ? 'A' : 'B')).sort();
  assert.deepEqual(poses, ['A', 'B'], 'farthest-point keys cover both poses');
  const mean = selectKeys(u, 40, d, 'mean', 1);
  assert.equal(mean.count, 1);
  assert.ok(Math.min(...leaveOneOutDistances(u, 40, d, mean)) > 0.1, 'the mean lies between the poses');
  assert.equal(routingLimit([0.01, 0.02, 0.03], { quantile: 1, scale: 3, pose_floor: 1 }, 0.02), 0.09);
  assert.equal(routingLimit([0.001, 0.002], { quantile: 1, scale: 3, pose_floor: 1 }, 0.05), 0.05, 'pose floor');
  assert.equal(routingLimit([0.001, 0.002], { quantile: 1, scale: 3, pose_floor: 2 }, 0.05), 0.1, 'pose floor factor');
  assert.equal(quantile([4, 1, 3, 2], 0.5), 2.5);
});

test('thresholds from good scores: FRR quantile, F1 with defects, normalised score, k-fold split', () => {
  const rnd = seededRandom(11);
  const good = Array.from({ length: 1000 }, () => 1 + rnd()); // uniform 1..2
  const t = frrThreshold(good, 0.01);
  const rejected = good.filter((s) => s > t).length / good.length;
  assert.ok(Math.abs(rejected - 0.01) <= 0.001, `rejects ${rejected} of good parts at FRR 1%`);
  assert.ok(t > 1.98 && t < 2, `threshold ${t}`);
  assert.throws(() => frrThreshold([], 0.01), /no held-out nominal scores/);
  assert.throws(() => frrThreshold(good, 0), /must be in \(0, 1\)/);
  // Defects at 1.9..2.9: the F1-optimal cut separates the overlap better than the FRR one.
  const defects = Array.from({ length: 50 }, () => 1.9 + rnd());
  const f1 = f1Threshold(good, defects)!;
  const ng = (s: number) => s > f1.threshold;
  const tp = defects.filter(ng).length;
  const fp = good.filter(ng).length;
  const f1check = (2 * tp) / (2 * tp + fp + (defects.length - tp));
  assert.ok(Math.abs(f1check - f1.f1) < 1e-9, 'the threshold achieves the reported F1 under "score > threshold"');
  assert.equal(f1Threshold(good, []), null);
  assert.equal(normaliseScore(2, 2, 1), 0.5);
  assert.equal(normaliseScore(1, 2, 1), 0);
  assert.equal(normaliseScore(3, 2, 1), 1);
  assert.equal(normaliseScore(5, 2, 1), 1);
  assert.equal(normaliseScore(5, 2, 1, false), 2, 'unclipped for ranking');
  const s = summarise([1, 2, 3, 4]);
  assert.deepEqual([s.n, s.mean, s.min, s.p50, s.max], [4, 2.5, 1, 2.5, 4]);
  const folds = kFolds(23, 5, 0);
  const sizes = [0, 1, 2, 3, 4].map((f) => folds.filter((x) => x === f).length);
  assert.deepEqual(sizes.sort(), [4, 4, 5, 5, 5]);
  assert.deepEqual(Array.from(kFolds(23, 5, 0)), Array.from(folds), 'deterministic');
  assert.throws(() => kFolds(3, 5, 0), /3 images cannot be split into 5 folds/);
});
