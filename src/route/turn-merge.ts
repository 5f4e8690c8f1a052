/**
 * The quarter-turn test (issue 9): is a pair of clusters one product, one of them turned 90°?
 *
 * The pose scale samples the aspect-preserving turns (180°, the two mirrors), which a frame of any
 * shape allows. A square part can also arrive turned a quarter, and an anisotropic surface (grain,
 * brushed metal) or a part with a long axis then looks like something else: FINCH gives it a group
 * of its own, and the pose rule, which never saw a quarter turn, does not join it. So a sample of
 * each cluster is turned a quarter and embedded, and compared with the real images of every other
 * cluster filmed in the turned frame size: when the turned copies mix among those images' nearest
 * neighbours (scale-merge.ts `mixing`), the two are one product. Two products stay apart: a turned
 * disc is still a disc.
 */
import { dot, normaliseRows } from './finch.ts';
import { type FrameSize, joinPairs, mixing, type ScaleMergeResult, type ScalePair, spread } from './scale-merge.ts';

/** Unit semantic embedding of `image` turned a quarter clockwise. */
export type TurnEmbedder = (image: number) => Promise<Float32Array>;

export interface TurnMergeOptions {
  /** least mixing of one cluster's turned copies with another's images (0 = never) */
  minMixing: number;
  /** images sampled per cluster */
  samples: number;
  progress?: (done: number, total: number) => void;
}

/**
 * Default least mixing, the scale test's: both read the same measure (turned copies against real
 * images instead of crops against crops); measured on the cluster study, see the README.
 */
export const TURN_MERGE = 0.4;

const key = (f: FrameSize) => `${f.width}x${f.height}`;

/** For each cluster, the other clusters with images in its turned frame sizes, and those images. */
function partners(members: number[][], sample: number[][], frames: FrameSize[], samples: number): { a: number; b: number; rows: number[] }[] {
  const out: { a: number; b: number; rows: number[] }[] = [];
  members.forEach((_, a) => {
    const turned = new Set(sample[a].map((i) => `${frames[i].height}x${frames[i].width}`));
    members.forEach((mb, b) => {
      if (a === b) return;
      const rows = mb.filter((i) => turned.has(key(frames[i])));
      if (rows.length >= 4) out.push({ a, b, rows: spread(rows, samples) });
    });
  });
  return out;
}

/**
 * Merge clusters that are one product turned a quarter. `semantic` holds the unit embeddings of the
 * images ([n, dim]); `embed` turns and embeds one image. Both directions of each pair are tested, and
 * the lower mixing counts.
 */
export async function turnMerge(labels: Int32Array, count: number, frames: FrameSize[], semantic: Float32Array, dim: number, embed: TurnEmbedder, opts: TurnMergeOptions): Promise<ScaleMergeResult> {
  const members: number[][] = Array.from({ length: count }, () => []);
  labels.forEach((c, i) => members[c].push(i));
  if (!(opts.minMixing > 0) || count < 2) return { labels: Int32Array.from(labels), count, merged: [], tested: [] };
  const sample = members.map((m) => spread(m, opts.samples));
  const pairs = partners(members, sample, frames, opts.samples);
  const need = [...new Set(pairs.map((p) => p.a))];
  const total = need.reduce((s, a) => s + sample[a].length, 0);
  const turned = new Map<number, Float32Array[]>();
  let done = 0;
  for (const a of need) {
    const rows: Float32Array[] = [];
    for (const i of sample[a]) {
      rows.push(await embed(i));
      opts.progress?.(++done, total);
    }
    turned.set(a, rows);
  }
  const r4 = (v: number) => Number(v.toFixed(4));
  const tested: ScalePair[] = pairs.map(({ a, b, rows }) => {
    const ta = turned.get(a)!;
    const x = new Float32Array((ta.length + rows.length) * dim);
    ta.forEach((e, k) => x.set(e, k * dim));
    rows.forEach((i, k) => x.set(semantic.subarray(i * dim, (i + 1) * dim), (ta.length + k) * dim));
    const mean = (from: number, to: number) => {
      const m = new Float32Array(dim);
      for (let k = from; k < to; k++) for (let t = 0; t < dim; t++) m[t] += x[k * dim + t];
      return normaliseRows(m, 1, dim);
    };
    const n = ta.length + rows.length;
    const distance = 1 - dot(mean(0, ta.length), 0, mean(ta.length, n), 0, dim);
    return { a, b, window: key(frames[rows[0]]), mixing: r4(mixing(x, ta.length, rows.length, dim)), distance: r4(distance) };
  });
  return joinPairs(labels, count, members, bothWays(tested), opts.minMixing, 'turn');
}

/**
 * One entry per pair, with the lower of its two directions' mixing: each cluster turned must land
 * among the other's images. One direction alone let a cluster holding a few images of another
 * product join it (cluster study: a brushed surface's turned copies mixed 0.85 with a group that was
 * part shuffled kolektor tiles, whose own turned copies mixed 0.12 back).
 */
function bothWays(tested: ScalePair[]): ScalePair[] {
  const out = new Map<string, ScalePair>();
  for (const t of tested) {
    const [a, b] = t.a < t.b ? [t.a, t.b] : [t.b, t.a];
    const k = `${a}|${b}`;
    const seen = out.get(k);
    out.set(k, seen ? { ...seen, mixing: Math.min(seen.mixing, t.mixing), distance: Math.max(seen.distance, t.distance) } : { ...t, a, b, mixing: t.mixing });
  }
  // a pair tested one way only (the other cluster has no image in the turned frame size) cannot merge
  const once = new Set(tested.map((t) => `${t.a}|${t.b}`));
  return [...out.values()].map((p) => (once.has(`${p.a}|${p.b}`) && once.has(`${p.b}|${p.a}`) ? p : { ...p, mixing: 0 }));
}
