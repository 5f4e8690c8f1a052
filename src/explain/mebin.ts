/**
 * MEBin, "main element binarization" (AnomalyNCD, Huang et al., CVPR 2025), on one anomaly map.
 *
 * The map is rescaled into a threshold range, binarised at 64 levels from strict to permissive,
 * eroded, and its connected components counted at each level. The count that stays the same over the
 * longest run of levels is taken as the number of defects, and the most permissive level of that run
 * as the map's threshold.
 *
 * The reference takes its range from the whole test set (smallest to largest per-map peak). A daemon
 * sees one frame at a time, so the range comes from calibration instead (`rangeFromCalibration`).
 *
 * Speed: eroding a binarised map equals binarising the map's min-filter (erosion commutes with a
 * threshold), so the map is min-filtered once, not 64 times; and the 64 component counts come from
 * one union-find sweep that adds pixels level by level, not from 64 labelling passes.
 */

export interface ThresholdRange {
  /** score mapped to level 0 (at or below it nothing is defect) */
  low: number;
  /** score mapped to level 255 */
  high: number;
}

export interface MebinOptions {
  /** level step: thresholds 255, 255-step, ... > 0 (4 gives the reference's 64 levels) */
  step?: number;
  /** shortest run of levels with one count that counts as stable (reference: 4) */
  minRun?: number;
  /** side of the square erosion kernel (reference: 6); 1 or less disables erosion */
  erode?: number;
  /**
   * give each component back the pixels erosion took from it (within the binarised map): the eroded
   * mask is what the reference returns, but it is smaller than the defect by the kernel's margin
   */
  restore?: boolean;
  /** 1 where the map holds frame content (letterbox padding is never a defect); default all */
  valid?: Uint8Array;
  /** without a stable count, return the component around the peak (see MebinResult.stable) */
  fallback?: boolean;
}

export interface MebinResult {
  /** component label per pixel (0 = background), 1..count */
  labels: Int32Array;
  count: number;
  /** chosen level (0..255, map rescaled into the range), null when nothing was stable */
  level: number | null;
  /** the chosen level in score units */
  threshold: number | null;
  /** component count at each level, strictest first */
  counts: Int32Array;
  /** length (in levels) of the stable run the choice came from; 0 when nothing was stable */
  run: number;
  /**
   * false when no count was stable: with `fallback`, the one component around the map's peak above
   * the range's low end is returned (an NG frame should point somewhere), else nothing
   */
  stable: boolean;
}

const DEFAULTS = { step: 4, minRun: 4, erode: 6, restore: true, fallback: true };

/** Levels strictest first: 255, 255-step, ... while > 0. */
export function levelsFor(step: number): number[] {
  const out: number[] = [];
  for (let t = 255; t > 0; t -= step) out.push(t);
  return out;
}

/** The map rescaled into the range: 0 at or below `low`, 255 at `high`, unclipped above. */
export function rescale(map: Float32Array, range: ThresholdRange, valid?: Uint8Array): Float32Array {
  const span = Math.max(range.high - range.low, 1e-9);
  const out = new Float32Array(map.length);
  for (let i = 0; i < map.length; i++) {
    if (valid && !valid[i]) continue;
    const v = map[i];
    out[i] = v <= range.low ? 0 : ((v - range.low) / span) * 255;
  }
  return out;
}

/**
 * Min over a k x k window (offsets -floor(k/2) .. k-1-floor(k/2), OpenCV's anchor for even k);
 * pixels outside the map are ignored, as with OpenCV's default erosion border.
 */
export function minFilter(src: Float32Array, width: number, height: number, k: number): Float32Array {
  if (k <= 1) return src.slice();
  const lo = Math.floor(k / 2);
  const hi = k - 1 - lo;
  const tmp = new Float32Array(src.length);
  const out = new Float32Array(src.length);
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++) {
      let m = Infinity;
      const x0 = Math.max(0, x - lo);
      const x1 = Math.min(width - 1, x + hi);
      for (let xx = x0; xx <= x1; xx++) if (src[row + xx] < m) m = src[row + xx];
      tmp[row + x] = m;
    }
  }
  for (let y = 0; y < height; y++) {
    const y0 = Math.max(0, y - lo);
    const y1 = Math.min(height - 1, y + hi);
    for (let x = 0; x < width; x++) {
      let m = Infinity;
      for (let yy = y0; yy <= y1; yy++) if (tmp[yy * width + x] < m) m = tmp[yy * width + x];
      out[y * width + x] = m;
    }
  }
  return out;
}

/** Index of the strictest level a value passes (value > 255 - k*step), or -1 when it passes none. */
function levelIndex(v: number, step: number, n: number): number {
  if (!(v > 0)) return -1;
  const k = Math.max(0, Math.floor((255 - v) / step) + 1);
  return k < n ? k : -1;
}

/**
 * Number of 8-connected components of (eroded > level) at every level, from one sweep: pixels are
 * added in order of the strictest level they pass; each added pixel is a new component unless it
 * joins existing ones (count -= unions).
 */
export function countsPerLevel(eroded: Float32Array, width: number, height: number, step: number): Int32Array {
  const n = levelsFor(step).length;
  // Counting sort of the pixels by level: no per-pixel allocation on the worker's hot path.
  const level = new Int32Array(eroded.length);
  const start = new Int32Array(n + 1);
  for (let i = 0; i < eroded.length; i++) {
    const k = levelIndex(eroded[i], step, n);
    level[i] = k;
    if (k >= 0) start[k + 1]++;
  }
  for (let k = 0; k < n; k++) start[k + 1] += start[k];
  const order = new Int32Array(start[n]);
  const fill = start.slice(0, n);
  for (let i = 0; i < eroded.length; i++) if (level[i] >= 0) order[fill[level[i]]++] = i;
  const parent = new Int32Array(eroded.length).fill(-1);
  const find = (i: number): number => {
    while (parent[i] !== i) {
      parent[i] = parent[parent[i]];
      i = parent[i];
    }
    return i;
  };
  const counts = new Int32Array(n);
  let components = 0;
  for (let k = 0; k < n; k++) {
    for (let o = start[k]; o < start[k + 1]; o++) {
      const p = order[o];
      parent[p] = p;
      components++;
      const x = p % width;
      const y = (p - x) / width;
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= height) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx;
          if ((dx === 0 && dy === 0) || xx < 0 || xx >= width) continue;
          const q = yy * width + xx;
          if (parent[q] < 0) continue;
          const a = find(p);
          const b = find(q);
          if (a !== b) {
            parent[a] = b;
            components--;
          }
        }
      }
    }
    counts[k] = components;
  }
  return counts;
}

/**
 * The reference's rule on a count sequence: maximal runs of one non-zero count over >= minRun levels
 * are stable; the count whose longest stable run is longest wins (ties: the count seen first, i.e. at
 * the stricter level); among that count's runs the longest (ties: the more permissive one); the chosen
 * level index is the run's most permissive end. Null when no run is stable.
 */
export function stableChoice(counts: ArrayLike<number>, minRun: number): { index: number; count: number; run: number } | null {
  const best = new Map<number, { start: number; end: number }>();
  let start = 0;
  for (let i = 1; i <= counts.length; i++) {
    if (i < counts.length && counts[i] === counts[start]) continue;
    const c = counts[start];
    const len = i - start;
    const prev = best.get(c);
    if (c !== 0 && len >= minRun && (!prev || len >= prev.end - prev.start + 1)) best.set(c, { start, end: i - 1 });
    start = i;
  }
  let win: { index: number; count: number; run: number } | null = null;
  for (const [c, r] of best) {
    const run = r.end - r.start + 1;
    if (!win || run > win.run) win = { index: r.end, count: c, run };
  }
  return win;
}

/** 8-connected components of (eroded > level); labels 1..count. */
function labelAbove(eroded: Float32Array, width: number, height: number, level: number): { labels: Int32Array; count: number } {
  const labels = new Int32Array(eroded.length);
  let count = 0;
  const stack: number[] = [];
  for (let s = 0; s < eroded.length; s++) {
    if (!(eroded[s] > level) || labels[s]) continue;
    labels[s] = ++count;
    stack.push(s);
    while (stack.length) {
      const p = stack.pop()!;
      const x = p % width;
      const y = (p - x) / width;
      for (let yy = Math.max(0, y - 1); yy <= Math.min(height - 1, y + 1); yy++) {
        for (let xx = Math.max(0, x - 1); xx <= Math.min(width - 1, x + 1); xx++) {
          const q = yy * width + xx;
          if (!labels[q] && eroded[q] > level) {
            labels[q] = count;
            stack.push(q);
          }
        }
      }
    }
  }
  return { labels, count };
}

/**
 * Pixels of the binarised map (scaled > level) that erosion removed go to the component whose eroded
 * pixels lie in their kernel window (the dilation that undoes the erosion, inside the binarised map).
 */
function restoreEroded(labels: Int32Array, scaled: Float32Array, width: number, height: number, k: number, level: number): void {
  const lo = Math.floor(k / 2);
  const hi = k - 1 - lo;
  const src = labels.slice();
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = y * width + x;
      if (src[p] || !(scaled[p] > level)) continue;
      // p is in the dilation of eroded pixel q when q - p lies in the reflected window [-hi, lo].
      let found = 0;
      for (let yy = Math.max(0, y - hi); yy <= Math.min(height - 1, y + lo) && !found; yy++) {
        for (let xx = Math.max(0, x - hi); xx <= Math.min(width - 1, x + lo); xx++) {
          const l = src[yy * width + xx];
          if (l) {
            found = l;
            break;
          }
        }
      }
      labels[p] = found;
    }
  }
}

/** MEBin on one map [height, width] with the given threshold range. */
export function mebin(map: Float32Array, width: number, height: number, range: ThresholdRange, opts: MebinOptions = {}): MebinResult {
  const o = { ...DEFAULTS, ...opts };
  if (map.length !== width * height) throw new Error(`map has ${map.length} values, expected ${width}x${height}`);
  const scaled = rescale(map, range, o.valid);
  const eroded = minFilter(scaled, width, height, o.erode);
  const counts = countsPerLevel(eroded, width, height, o.step);
  const choice = stableChoice(counts, o.minRun);
  if (!choice) {
    const none = { labels: new Int32Array(map.length), count: 0, level: null, threshold: null, counts, run: 0, stable: false };
    const around = o.fallback ? peakComponent(scaled, width, height) : null;
    return around ? { ...none, ...around } : none;
  }
  const level = 255 - choice.index * o.step;
  const { labels, count } = labelAbove(eroded, width, height, level);
  if (o.restore && o.erode > 1) restoreEroded(labels, scaled, width, height, o.erode, level);
  return { labels, count, level, threshold: range.low + (level / 255) * (range.high - range.low), counts, run: choice.run, stable: true };
}

/** The component of (scaled > 0) that holds the map's peak, as label 1; null when nothing is > 0. */
function peakComponent(scaled: Float32Array, width: number, height: number): { labels: Int32Array; count: number } | null {
  let peak = 0;
  for (let i = 1; i < scaled.length; i++) if (scaled[i] > scaled[peak]) peak = i;
  if (!(scaled[peak] > 0)) return null;
  const all = labelAbove(scaled, width, height, 0);
  const keep = all.labels[peak];
  const labels = all.labels.map((l) => (l === keep ? 1 : 0));
  return { labels: Int32Array.from(labels), count: 1 };
}

/** What calibration knows about a cluster's scores (a subset of ClusterInfo). */
export interface CalibrationStats {
  threshold: number;
  /** held-out good-image scores: median */
  p50: number;
}

/**
 * The threshold range of a cluster, from calibration: level 0 at the cluster's threshold (a pixel
 * scoring below it is no more anomalous than a good part's worst patch), level 255 at `spread` times
 * the threshold's distance above the median good part. The reference's range runs from the weakest
 * to the strongest defect peak of a test set; the image threshold stands in for the weakest, and the
 * strongest is put in units of the good parts' spread, which is what calibration measured.
 */
export function rangeFromCalibration(stats: CalibrationStats, spread = DEFAULT_SPREAD): ThresholdRange {
  const gap = Math.max(stats.threshold - stats.p50, 1e-6);
  return { low: stats.threshold, high: stats.threshold + spread * gap };
}

export const DEFAULT_SPREAD = 4;
