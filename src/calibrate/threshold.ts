/**
 * Per-cluster decision thresholds from nominal images only: held-out nominal scores (k-fold) give the
 * score distribution of good parts the bank has not seen; the threshold is its (1 - FRR) quantile.
 */
import { quantile } from '../util/stats.ts';
import { f1Max } from '../eval/metrics.ts';
import { seededRandom } from '../score/coreset.ts';

export interface ScoreSummary {
  n: number;
  mean: number;
  std: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export function summarise(scores: ArrayLike<number>): ScoreSummary {
  const n = scores.length;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += scores[i] / n;
  let v = 0;
  for (let i = 0; i < n; i++) v += (scores[i] - mean) ** 2;
  const r = (x: number) => Number(x.toFixed(5));
  return {
    n,
    mean: r(mean),
    std: r(Math.sqrt(v / Math.max(1, n - 1))),
    min: r(quantile(scores, 0)),
    p50: r(quantile(scores, 0.5)),
    p90: r(quantile(scores, 0.9)),
    p99: r(quantile(scores, 0.99)),
    max: r(quantile(scores, 1)),
  };
}

/**
 * Score at which a share `frr` of good parts would be rejected. With fewer than 1/frr held-out scores
 * the empirical quantile falls between the top scores; it is never below the median.
 */
export function frrThreshold(nominal: ArrayLike<number>, frr: number): number {
  if (nominal.length === 0) throw new Error('no held-out nominal scores to set a threshold from');
  if (!(frr > 0 && frr < 1)) throw new Error(`target false-reject rate ${frr} must be in (0, 1)`);
  return quantile(nominal, 1 - frr);
}

/** F1-optimal threshold from held-out nominal scores and scores of labelled defect images. */
export function f1Threshold(nominal: ArrayLike<number>, defects: ArrayLike<number>): { threshold: number; f1: number } | null {
  if (defects.length === 0 || nominal.length === 0) return null;
  const scores = [...Array.from(nominal), ...Array.from(defects)];
  const labels = [...new Array(nominal.length).fill(0), ...new Array(defects.length).fill(1)];
  const best = f1Max(scores, labels);
  if (!best) return null;
  // f1Max counts score >= t as a defect; verdicts use score > threshold, so sit between the two scores.
  let below = -Infinity;
  for (const v of scores) if (v < best.threshold && v > below) below = v;
  return { f1: best.f1, threshold: Number.isFinite(below) ? (below + best.threshold) / 2 : best.threshold - 1e-6 };
}

/**
 * Score mapped to 0..1 with 0.5 at the threshold and 0 at the median good part, so scores of clusters
 * with different scales compare. Linear on both sides; 1 = twice as far above the threshold as the
 * median good part is below it. Unclipped when `clip` is false (for ranking).
 */
export function normaliseScore(score: number, threshold: number, median: number, clip = true): number {
  const spread = Math.max(threshold - median, 1e-6);
  const v = 0.5 + (0.5 * (score - threshold)) / spread;
  return clip ? Math.min(1, Math.max(0, v)) : v;
}

/** Deterministic k-fold split of 0..n-1: fold index of each item (shuffled, sizes differ by at most 1). */
export function kFolds(n: number, k: number, seed: number): Int32Array {
  if (k < 2) throw new Error(`k-fold needs at least 2 folds, got ${k}`);
  if (n < k) throw new Error(`${n} images cannot be split into ${k} folds`);
  const order = Array.from({ length: n }, (_, i) => i);
  const rnd = seededRandom(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const fold = new Int32Array(n);
  order.forEach((item, pos) => (fold[item] = pos % k));
  return fold;
}
