/**
 * The scale test (issue 9): is a pair of clusters one product that arrives at several frame sizes?
 *
 * The input size follows each frame's pixel count, so a surface filmed in a 512x256 window is shrunk
 * 1.4x more than the same surface in a 256x256 one, and its global embedding moves by more than the
 * pose scale: FINCH splits one texture by frame size. Comparing the two groups at one common pixel
 * scale undoes that: crop a sample of both to the frame size they share (the smaller width and the
 * smaller height), embed the crops at the input size of that window, and look at their nearest
 * neighbours. Crops of one surface mix freely; crops of two products, or of an object and a close-up
 * of it (a crop of the whole part is not the close-up's framing), stay among their own.
 */
import { dot, nearestNeighbours, normaliseRows, type ClusteringResult, type MergeStep } from './finch.ts';

export interface FrameSize {
  width: number;
  height: number;
}

export interface CropWindow extends FrameSize {
  left: number;
  top: number;
}

/**
 * Unit semantic embeddings of `image`'s crop `window`, embedded at the input size of a frame of the
 * window's size: levelled to one light level and, with `asFilmed`, also as filmed (one image read).
 */
export type CropEmbedder = (image: number, window: CropWindow, asFilmed: boolean) => Promise<{ levelled: Float32Array; filmed?: Float32Array }>;

export interface ScaleMergeOptions {
  /**
   * merge when, from both sides, at least this share of the cross-cluster neighbour links that random
   * labels would give are seen (0 = never, 1 = as mixed as one cluster)
   */
  minMixing: number;
  /** images sampled per cluster */
  samples: number;
  /** neighbours per crop */
  k?: number;
  /** seed of the crop positions */
  seed?: number;
  /** crops embedded so far, of how many */
  progress?: (done: number, total: number) => void;
}

/**
 * Default least mixing: measured on crops of one surface at five frame sizes against pairs of other
 * products (scripts/scale-study.ts; see the README's clustering section).
 */
export const SCALE_MERGE = 0.4;
/** Images sampled per cluster: a pair costs at most 2 x 16 backbone passes per common window. */
export const SCALE_SAMPLES = 16;
/**
 * A pair is tested only when the common window covers at least this share of each cluster's median
 * frame area. A window much smaller than the frames would mostly show what any two products on one
 * conveyor share (the belt), so such pairs are left as they are: one surface in frames that differ
 * by more than about 2.8x per side stays split, the safe failure. The cluster study's surfaces need
 * 0.41 at most.
 */
export const SCALE_MIN_COVER = 0.125;

export interface ScalePair {
  /** clusters (the clustering's ids) */
  a: number;
  b: number;
  window: string;
  mixing: number;
  /** cosine distance between the two clusters' mean crop embeddings */
  distance: number;
}

export interface ScaleMergeResult {
  labels: Int32Array;
  count: number;
  /** each input cluster's new id (images moved as strays follow `labels`, not this) */
  ids: Int32Array;
  merged: MergeStep[];
  /** every pair tested */
  tested: ScalePair[];
}

/** Evenly spread members of a cluster, at most `count`. */
export function spread(members: number[], count: number): number[] {
  if (members.length <= count) return members;
  return Array.from({ length: count }, (_, i) => members[Math.floor(((i + 0.5) * members.length) / count)]);
}

/** A small deterministic generator (mulberry32) for the crop positions. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Mixing of two sets of unit rows (a first, then b): for each side, the share of its rows' k nearest
 * neighbours in the other set, divided by the share random labels would give. The lower side counts.
 */
export function mixing(rows: Float32Array, na: number, nb: number, d: number, k = 3): number {
  const n = na + nb;
  // with k or fewer rows a side's links must leave it, however far apart the two are
  if (na <= k || nb <= k) return 0;
  const kk = Math.min(k, n - 1);
  const nn = nearestNeighbours(rows, n, d, kk);
  const side = (from: number, to: number, other: (j: number) => boolean, otherCount: number) => {
    let cross = 0;
    for (let i = from; i < to; i++) for (let t = 0; t < kk; t++) if (other(nn[i * kk + t])) cross++;
    return cross / ((to - from) * kk) / (otherCount / (n - 1));
  };
  return Math.min(
    side(0, na, (j) => j >= na, nb),
    // -1: no neighbour found (a NaN row compares false with everything), which is no link at all
    side(na, n, (j) => j >= 0 && j < na, na),
  );
}

/** A pair to test at window `w`; `asFilmed`: the crops are compared as filmed too, not only levelled (their frame sizes differ). */
interface TestPair {
  a: number;
  b: number;
  w: FrameSize;
  asFilmed: boolean;
}

/** Whether the two samples' frames differ in size at all (else FINCH compared them as filmed already). */
function sizesDiffer(a: number[], b: number[], frames: FrameSize[]): boolean {
  const key = (i: number) => `${frames[i].width}x${frames[i].height}`;
  const ka = new Set(a.map(key));
  const kb = new Set(b.map(key));
  return ka.size !== kb.size || [...ka].some((s) => !kb.has(s));
}

/**
 * The pairs to test (the window covers enough) and the common window of each: the smaller width and
 * height of both samples. Pairs filmed in the same frame sizes are tested too: the crops are levelled
 * to one light level, and FINCH splits one product by light at a single frame size as well.
 */
function pairsToTest(sample: number[][], frames: FrameSize[]): TestPair[] {
  const out: TestPair[] = [];
  for (let a = 0; a < sample.length; a++) {
    for (let b = a + 1; b < sample.length; b++) {
      const both = [...sample[a], ...sample[b]];
      const w = { width: Math.min(...both.map((i) => frames[i].width)), height: Math.min(...both.map((i) => frames[i].height)) };
      const cover = (c: number) => (w.width * w.height) / medianArea(sample[c], frames);
      if (Math.min(cover(a), cover(b)) >= SCALE_MIN_COVER) out.push({ a, b, w, asFilmed: sizesDiffer(sample[a], sample[b], frames) });
    }
  }
  return out;
}

function medianArea(rows: number[], frames: FrameSize[]): number {
  const a = rows.map((i) => frames[i].width * frames[i].height).sort((x, y) => x - y);
  return a[a.length >> 1];
}

/** Unit mean of some unit rows. */
export function meanOf(rows: Float32Array[]): Float32Array {
  const m = new Float32Array(rows[0].length);
  for (const r of rows) for (let k = 0; k < m.length; k++) m[k] += r[k];
  return normaliseRows(m, 1, m.length);
}

/**
 * Merge clusters that are one product at several frame sizes. `labels` are the clustering's, `frames`
 * each image's frame size. Pairs are joined most-mixed first (a union: a product in three frame sizes
 * ends as one cluster). Crops are embedded once per cluster and window.
 */
export async function scaleMerge(labels: Int32Array, count: number, frames: FrameSize[], embed: CropEmbedder, opts: ScaleMergeOptions): Promise<ScaleMergeResult> {
  const members: number[][] = Array.from({ length: count }, () => []);
  labels.forEach((c, i) => members[c].push(i));
  // mixing needs more than 3 images a side: fewer samples could never merge
  if (!(opts.minMixing > 0) || !(opts.samples > 3) || count < 2) return unmerged(labels, count);
  const sample = members.map((m) => spread(m, opts.samples));
  const pairs = pairsToTest(sample, frames);
  const crops = await cropEmbeddings(pairs, sample, frames, embed, opts);
  const r4 = (v: number) => Number(v.toFixed(4));
  const tested = pairs.map(({ a, b, w, asFilmed }) => {
    const levelledMix = mixingOf(crops.get(cropKey(a, w, true))!, crops.get(cropKey(b, w, true))!, opts.k);
    // the larger counts: either view showing one product is evidence of one product (two products mix in neither)
    const filmed = asFilmed ? mixingOf(crops.get(cropKey(a, w, false))!, crops.get(cropKey(b, w, false))!, opts.k) : undefined;
    const best = filmed && filmed.mixing > levelledMix.mixing ? filmed : levelledMix;
    return { a, b, window: `${w.width}x${w.height}`, mixing: r4(best.mixing), distance: r4(best.distance) };
  });
  return joinPairs(labels, count, members, tested, opts.minMixing, 'scale');
}

const cropKey = (c: number, w: FrameSize, level: boolean) => `${c}|${w.width}x${w.height}|${level ? 'levelled' : 'filmed'}`;

/** Mixing of two clusters' crops and the cosine distance between their means. */
function mixingOf(ea: Float32Array[], eb: Float32Array[], k?: number): { mixing: number; distance: number } {
  const d = ea[0].length;
  const rows = new Float32Array((ea.length + eb.length) * d);
  [...ea, ...eb].forEach((e, i) => rows.set(e, i * d));
  return { mixing: mixing(rows, ea.length, eb.length, d, k), distance: 1 - dot(meanOf(ea), 0, meanOf(eb), 0, d) };
}

/**
 * Each cluster's sampled images cropped at random positions to each window its pairs need, embedded
 * once levelled and, where a pair compares them as filmed, once as filmed (at the same positions).
 */
async function cropEmbeddings(pairs: TestPair[], sample: number[][], frames: FrameSize[], embed: CropEmbedder, opts: ScaleMergeOptions): Promise<Map<string, Float32Array[]>> {
  const jobs = new Map<string, { c: number; w: FrameSize; asFilmed: boolean }>();
  for (const p of pairs) {
    for (const c of [p.a, p.b]) {
      const key = `${c}|${p.w.width}x${p.w.height}`;
      jobs.set(key, { c, w: p.w, asFilmed: p.asFilmed || !!jobs.get(key)?.asFilmed });
    }
  }
  const total = [...jobs.values()].reduce((s, j) => s + sample[j.c].length * (j.asFilmed ? 2 : 1), 0);
  const rnd = random(opts.seed ?? 1);
  const out = new Map<string, Float32Array[]>();
  let done = 0;
  // by window, so the extractor pool serves one input size at a time
  const order = [...jobs].sort((x, y) => x[1].w.width - y[1].w.width || x[1].w.height - y[1].w.height || x[1].c - y[1].c);
  for (const [, { c, w, asFilmed }] of order) {
    const level: Float32Array[] = [];
    const filmed: Float32Array[] = [];
    for (const i of sample[c]) {
      const f = frames[i];
      const window = { left: Math.floor(rnd() * (f.width - w.width + 1)), top: Math.floor(rnd() * (f.height - w.height + 1)), width: w.width, height: w.height };
      const e = await embed(i, window, asFilmed);
      level.push(e.levelled);
      if (asFilmed) filmed.push(e.filmed!);
      done += asFilmed ? 2 : 1;
      opts.progress?.(done, total);
    }
    out.set(cropKey(c, w, true), level);
    if (asFilmed) out.set(cropKey(c, w, false), filmed);
  }
  return out;
}

/** The result of a test that merged nothing. */
export function unmerged(labels: Int32Array, count: number): ScaleMergeResult {
  return { labels: Int32Array.from(labels), count, ids: Int32Array.from({ length: count }, (_, i) => i), merged: [], tested: [] };
}

/** A merge is vetoed by a tested pair between the two groups mixing below this share of the least mixing. */
export const VETO_SHARE = 0.25;

/** Union of the pairs that mix enough, most mixed first, with one log entry per absorbed cluster. */
export function joinPairs(labels: Int32Array, count: number, members: number[][], tested: ScalePair[], minMixing: number, reason: 'scale' | 'turn'): ScaleMergeResult {
  const parent = Array.from({ length: count }, (_, i) => i);
  const find = (i: number): number => {
    while (parent[i] !== i) i = parent[i];
    return i;
  };
  const size = members.map((m) => m.length);
  const steps: { into: number; size: number; pair: ScalePair }[] = [];
  const veto = minMixing * VETO_SHARE;
  // any tested pair between the two groups that clearly does not mix stops the merge: a cluster that
  // mixes with two products must not bridge them
  const clash = (ra: number, rb: number) => tested.some((t) => t.mixing < veto && ((find(t.a) === ra && find(t.b) === rb) || (find(t.a) === rb && find(t.b) === ra)));
  for (const t of [...tested].sort((x, y) => y.mixing - x.mixing)) {
    if (t.mixing < minMixing) break;
    const [ra, rb] = [find(t.a), find(t.b)];
    if (ra === rb || clash(ra, rb)) continue;
    const [into, from] = size[ra] >= size[rb] ? [ra, rb] : [rb, ra];
    steps.push({ into, size: size[from], pair: t });
    parent[from] = into;
    size[into] += size[from];
  }
  const id = new Map<number, number>();
  const out = new Int32Array(labels.length);
  labels.forEach((c, i) => {
    const r = find(c);
    if (!id.has(r)) id.set(r, id.size);
    out[i] = id.get(r)!;
  });
  const ids = Int32Array.from({ length: count }, (_, c) => id.get(find(c)) ?? -1);
  const merged: MergeStep[] = steps.map((s) => ({ reason, size: s.size, distance: s.pair.distance, window: s.pair.window, mixing: s.pair.mixing, into: ids[s.into] }));
  return { labels: out, count: id.size, ids, merged, tested };
}

const WHY = { scale: 'one product at several frame sizes', turn: 'one product turned a quarter' };

/** The clustering with the scale (or turn) merges applied: labels, counts, the ids its log refers to, the reason and the tests. */
export function applyScaleMerge(c: ClusteringResult, s: ScaleMergeResult, kind: 'scale' | 'turn' = 'scale'): ClusteringResult {
  const newId = s.ids;
  const joins = s.merged.filter((m) => m.reason !== 'stray').length;
  const strays = s.merged.filter((m) => m.reason === 'stray');
  let reason = joins ? `${c.reason}; ${joins} ${kind} merges (${WHY[kind]}) -> ${s.count}` : c.reason;
  if (strays.length) reason += `; ${strays.reduce((n, m) => n + m.size, 0)} quarter-turned images moved to the cluster of their product`;
  // tests name clusters by the ids they end with (a = b: merged), as the bundle's clusters do
  const remap = (ts?: ScalePair[]) => ts?.map((t) => ({ ...t, a: newId[t.a], b: newId[t.b] }));
  return {
    ...c,
    labels: s.labels,
    count: s.count,
    reason,
    merged: [...c.merged.map((m) => ({ ...m, into: newId[m.into], ...(m.from === undefined ? {} : { from: newId[m.from] }) })), ...s.merged],
    splits: c.splits.map((x) => (x.cluster === undefined ? x : { ...x, cluster: newId[x.cluster] })),
    turnTests: remap(kind === 'turn' ? s.tested : c.turnTests),
    scaleTests: remap(kind === 'scale' ? s.tested : c.scaleTests),
  };
}
