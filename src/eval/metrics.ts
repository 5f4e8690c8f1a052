/**
 * Anomaly-detection metrics: AUROC, F1-max, and PRO (per-region overlap integrated up to 30% FPR and
 * normalised, as defined with MVTec AD, Bergmann et al. 2021).
 */

/** AUROC = P(score of a positive > score of a negative), ties counting one half. */
export function auroc(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>): number | null {
  const pos: number[] = [];
  const neg: number[] = [];
  for (let i = 0; i < scores.length; i++) (labels[i] ? pos : neg).push(scores[i]);
  return aurocSplit(Float64Array.from(pos), Float64Array.from(neg));
}

/** AUROC from positive and negative scores; sorts its arguments in place. */
export function aurocSplit(pos: Float64Array | Float32Array, neg: Float64Array | Float32Array): number | null {
  if (pos.length === 0 || neg.length === 0) return null;
  pos.sort();
  neg.sort();
  // For each positive, count negatives strictly below and equal to it (two pointers over sorted arrays).
  let below = 0;
  let upto = 0;
  let sum = 0;
  for (let i = 0; i < pos.length; i++) {
    const v = pos[i];
    while (below < neg.length && neg[below] < v) below++;
    if (upto < below) upto = below;
    while (upto < neg.length && neg[upto] <= v) upto++;
    sum += below + 0.5 * (upto - below);
  }
  return sum / (pos.length * neg.length);
}

/** Best F1 over all thresholds (predict positive when score >= threshold). */
export function f1Max(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>): { f1: number; threshold: number } | null {
  const idx = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[b] - scores[a]);
  const totalPos = idx.filter((i) => labels[i]).length;
  if (totalPos === 0 || totalPos === idx.length) return null;
  let tp = 0;
  let fp = 0;
  let best = { f1: 0, threshold: Infinity };
  for (let k = 0; k < idx.length; k++) {
    if (labels[idx[k]]) tp++;
    else fp++;
    // Only evaluate at the end of a run of tied scores.
    if (k + 1 < idx.length && scores[idx[k + 1]] === scores[idx[k]]) continue;
    const f1 = (2 * tp) / (2 * tp + fp + (totalPos - tp));
    if (f1 > best.f1) best = { f1, threshold: scores[idx[k]] };
  }
  return best;
}

/** Connected components (8-connectivity) of a binary mask; returns labels (0 = background) and count. */
export function labelRegions(mask: Uint8Array, width: number, height: number): { labels: Int32Array; count: number } {
  const labels = new Int32Array(width * height);
  let count = 0;
  const stack: number[] = [];
  for (let start = 0; start < mask.length; start++) {
    if (!mask[start] || labels[start]) continue;
    count++;
    labels[start] = count;
    stack.push(start);
    while (stack.length) {
      const p = stack.pop()!;
      const x = p % width;
      const y = (p - x) / width;
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= height) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx;
          if (xx < 0 || xx >= width) continue;
          const q = yy * width + xx;
          if (mask[q] && !labels[q]) {
            labels[q] = count;
            stack.push(q);
          }
        }
      }
    }
  }
  return { labels, count };
}

/** Accumulates per-pixel results over many images for pixel AUROC and PRO. */
export class PixelMetrics {
  private readonly posChunks: Float32Array[] = [];
  private readonly negChunks: Float32Array[] = [];
  /** each ground-truth region's scores, sorted ascending */
  private readonly regions: Float32Array[] = [];

  /** `valid` (optional) marks the pixels that belong to the frame (not letterbox padding). */
  add(scores: Float32Array, mask: Uint8Array, width: number, height: number, valid?: Uint8Array): void {
    const pos: number[] = [];
    const neg: number[] = [];
    for (let i = 0; i < scores.length; i++) {
      if (valid && !valid[i]) continue;
      (mask[i] ? pos : neg).push(scores[i]);
    }
    this.posChunks.push(Float32Array.from(pos));
    this.negChunks.push(Float32Array.from(neg));
    const { labels, count } = labelRegions(mask, width, height);
    const members: number[][] = Array.from({ length: count }, () => []);
    for (let i = 0; i < labels.length; i++) if (labels[i] && (!valid || valid[i])) members[labels[i] - 1].push(scores[i]);
    for (const m of members) if (m.length) this.regions.push(Float32Array.from(m).sort());
  }

  private concat(chunks: Float32Array[]): Float32Array {
    const out = new Float32Array(chunks.reduce((a, c) => a + c.length, 0));
    let o = 0;
    for (const c of chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }

  auroc(): number | null {
    return aurocSplit(this.concat(this.posChunks), this.concat(this.negChunks));
  }

  /** PRO integrated over FPR in [0, maxFpr], divided by maxFpr (1.0 is perfect). */
  pro(maxFpr = 0.3, steps = 300): number | null {
    if (this.regions.length === 0) return null;
    const neg = this.concat(this.negChunks).sort();
    if (neg.length === 0) return null;
    const overlapAt = (t: number) => {
      // Mean over regions of the fraction of region pixels with score > t.
      let s = 0;
      for (const r of this.regions) s += (r.length - upperBound(r, t)) / r.length;
      return s / this.regions.length;
    };
    // FPR(t) = fraction of normal pixels with score > t; pick t at normal-score quantiles.
    let area = 0;
    let prevFpr = 0;
    let prevPro = overlapAt(neg[neg.length - 1]);
    for (let k = 1; k <= steps; k++) {
      const target = (maxFpr * k) / steps;
      const idx = Math.min(neg.length - 1, Math.max(0, Math.ceil(neg.length * (1 - target)) - 1));
      const t = neg[idx];
      const fpr = (neg.length - upperBound(neg, t)) / neg.length;
      const p = overlapAt(t);
      const f = Math.min(fpr, maxFpr);
      if (f > prevFpr) {
        area += ((f - prevFpr) * (p + prevPro)) / 2;
        prevFpr = f;
      }
      prevPro = p;
    }
    // Extend flat to maxFpr when ties kept the FPR below it.
    if (prevFpr < maxFpr) area += (maxFpr - prevFpr) * prevPro;
    return area / maxFpr;
  }
}

/** First index whose value is > t in an ascending array. */
function upperBound(a: Float32Array, t: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid] <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Normalised mutual information of two labelings (arithmetic-mean normalisation, as scikit-learn). */
export function nmi(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  const joint = new Map<string, number>();
  const ca = new Map<number, number>();
  const cb = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    joint.set(`${a[i]},${b[i]}`, (joint.get(`${a[i]},${b[i]}`) ?? 0) + 1);
    ca.set(a[i], (ca.get(a[i]) ?? 0) + 1);
    cb.set(b[i], (cb.get(b[i]) ?? 0) + 1);
  }
  const h = (m: Map<number, number>) => [...m.values()].reduce((s, c) => s - (c / n) * Math.log(c / n), 0);
  let mi = 0;
  for (const [k, c] of joint) {
    const [x, y] = k.split(',').map(Number);
    mi += (c / n) * Math.log((c * n) / (ca.get(x)! * cb.get(y)!));
  }
  const ha = h(ca);
  const hb = h(cb);
  if (ha === 0 && hb === 0) return 1;
  return ha + hb === 0 ? 0 : (2 * mi) / (ha + hb);
}

/** Share of items whose cluster's majority label is their own label. */
export function purity(clusters: ArrayLike<number>, truth: ArrayLike<number>): number {
  const counts = new Map<number, Map<number, number>>();
  for (let i = 0; i < clusters.length; i++) {
    const m = counts.get(clusters[i]) ?? new Map<number, number>();
    m.set(truth[i], (m.get(truth[i]) ?? 0) + 1);
    counts.set(clusters[i], m);
  }
  let hit = 0;
  for (const m of counts.values()) hit += Math.max(...m.values());
  return hit / clusters.length;
}
