import { test } from 'node:test';
import assert from 'node:assert/strict';
import { auroc, f1Max, labelRegions, PixelMetrics } from '../src/eval/metrics.ts';

test('AUROC matches hand-computed cases', () => {
  assert.equal(auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]), 1);
  assert.equal(auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]), 0);
  // pos {0.5, 0.9}, neg {0.1, 0.5, 0.7}: pairs won 0.5>0.1, (0.5=0.5 half), 0.9>all three -> (1 + 0.5 + 3) / 6
  assert.equal(auroc([0.5, 0.9, 0.1, 0.5, 0.7], [1, 1, 0, 0, 0]), 4.5 / 6);
  assert.equal(auroc([0.3, 0.4], [0, 0]), null);
});

test('F1-max picks the best threshold', () => {
  const r = f1Max([0.9, 0.8, 0.4, 0.3, 0.2], [1, 1, 0, 1, 0])!;
  // threshold 0.8: tp 2, fp 0, fn 1 -> 0.8; threshold 0.3: tp 3 fp 1 fn 0 -> 6/7
  assert.ok(Math.abs(r.f1 - 6 / 7) < 1e-12);
  assert.equal(r.threshold, 0.3);
});

test('regions are 8-connected', () => {
  const m = Uint8Array.from([1, 0, 0, 0, 1, 0, 0, 0, 1]); // a diagonal line
  assert.equal(labelRegions(m, 3, 3).count, 1);
  const m2 = Uint8Array.from([1, 0, 1, 0, 0, 0, 1, 0, 1]);
  assert.equal(labelRegions(m2, 3, 3).count, 4);
});

test('pixel AUROC and PRO on a hand-made case', () => {
  // 4x4 image, one 2x2 defect region in the corner; scores rank defect pixels first.
  const w = 4,
    h = 4;
  const mask = new Uint8Array(16);
  for (const i of [0, 1, 4, 5]) mask[i] = 1;
  const perfect = new Float32Array(16).map((_, i) => (mask[i] ? 1 : 0.1 + i / 100));
  const pm = new PixelMetrics();
  pm.add(perfect, mask, w, h);
  assert.equal(pm.auroc(), 1);
  assert.ok(Math.abs(pm.pro()! - 1) < 1e-9, `PRO of a perfect map is 1, got ${pm.pro()}`);

  // Half of the region scores below every normal pixel: overlap is 0.5 at every FPR <= 0.3.
  const half = perfect.slice();
  half[4] = 0;
  half[5] = 0;
  const pm2 = new PixelMetrics();
  pm2.add(half, mask, w, h);
  assert.ok(Math.abs(pm2.pro()! - 0.5) < 0.02, `expected ~0.5, got ${pm2.pro()}`);
  assert.equal(pm2.auroc(), 0.5); // 2 of 4 defect pixels beat all 12 normals, 2 lose to all

  // Pixels outside the frame content (valid = 0) are ignored.
  const valid = new Uint8Array(16).fill(1);
  valid[4] = valid[5] = 0;
  const pm3 = new PixelMetrics();
  pm3.add(half, mask, w, h, valid);
  assert.equal(pm3.auroc(), 1);
});
