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
import { dot, type MergeStep } from './finch.ts';
import { type FrameSize, joinPairs, meanOf, mixing, type ScaleMergeResult, type ScalePair, spread, unmerged } from './scale-merge.ts';

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
const turnedKey = (f: FrameSize) => `${f.height}x${f.width}`;

/** One directed test: cluster a's images filmed in frames that, turned, are `window`, against b's images in `window`. */
interface TurnPair {
  a: number;
  b: number;
  window: string;
  turnedRows: number[];
  rows: number[];
}

function bySize(rows: number[], size: (f: FrameSize) => string, frames: FrameSize[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const i of rows) {
    const k = size(frames[i]);
    const group = out.get(k);
    if (group) group.push(i);
    else out.set(k, [i]);
  }
  return out;
}

/**
 * For each ordered pair of clusters, the frame size in which both have the most images once a's are
 * turned (at least 4 each), and a spread sample of each there. Compared in one frame size only: the
 * semantic embedding moves with the input size, so a's turned copies from other frame sizes would
 * dilute the mixing (cluster study: a grain surface in five frame sizes against its own quarter-turned
 * square frames mixed 0.28 at a mean distance of 0.04; in the square frames alone they mix fully).
 */
function partners(members: number[][], frames: FrameSize[], samples: number): TurnPair[] {
  const turnedBySize = members.map((m) => bySize(m, turnedKey, frames));
  const realBySize = members.map((m) => bySize(m, key, frames));
  const out: TurnPair[] = [];
  members.forEach((_, a) => {
    members.forEach((_, b) => {
      if (a === b) return;
      let best: TurnPair | null = null;
      let bestCount = 3;
      for (const [window, rows] of realBySize[b]) {
        const turnedRows = turnedBySize[a].get(window) ?? [];
        const count = Math.min(rows.length, turnedRows.length);
        if (count > bestCount) {
          bestCount = count;
          best = { a, b, window, turnedRows: spread(turnedRows, samples), rows: spread(rows, samples) };
        }
      }
      if (best) out.push(best);
    });
  });
  return out;
}

/**
 * Merge clusters that are one product turned a quarter. `semantic` holds the unit embeddings of the
 * images ([n, dim]); `embed` turns and embeds one image (each image at most once). Both directions of
 * each pair are tested, and the lower mixing counts.
 */
export async function turnMerge(labels: Int32Array, count: number, frames: FrameSize[], semantic: Float32Array, dim: number, embed: TurnEmbedder, opts: TurnMergeOptions): Promise<ScaleMergeResult> {
  const members: number[][] = Array.from({ length: count }, () => []);
  labels.forEach((c, i) => members[c].push(i));
  // mixing needs more than 3 images a side: fewer samples could never merge
  if (!(opts.minMixing > 0) || !(opts.samples > 3) || count < 2) return unmerged(labels, count);
  const pairs = partners(members, frames, opts.samples);
  const need = [...new Set(pairs.flatMap((p) => p.turnedRows))];
  const turned = new Map<number, Float32Array>();
  for (const i of need) {
    turned.set(i, await embed(i));
    opts.progress?.(turned.size, need.length);
  }
  const r4 = (v: number) => Number(v.toFixed(4));
  const tested: ScalePair[] = pairs.map(({ a, b, window, turnedRows, rows }) => {
    const ta = turnedRows.map((i) => turned.get(i)!);
    const tb = rows.map((i) => semantic.subarray(i * dim, (i + 1) * dim));
    const x = new Float32Array((ta.length + tb.length) * dim);
    [...ta, ...tb].forEach((e, k) => x.set(e, k * dim));
    const distance = 1 - dot(meanOf(ta), 0, meanOf(tb), 0, dim);
    return { a, b, window, mixing: r4(mixing(x, ta.length, tb.length, dim)), distance: r4(distance) };
  });
  const judged = bothWays(tested).map((t) => (covers(members, frames, t) ? t : { ...t, mixing: 0 }));
  const moves = strays(members, frames, tested, judged, opts.minMixing);
  const moved = Int32Array.from(labels);
  for (const m of moves) for (const i of m.rows) moved[i] = m.into;
  const after: number[][] = Array.from({ length: count }, () => []);
  moved.forEach((c, i) => after[c].push(i));
  const r = joinPairs(moved, count, after, judged, opts.minMixing, 'turn');
  return { ...r, merged: [...r.merged, ...moves.map((m) => strayStep(m, r.ids))] };
}

/**
 * Most a cluster may give up as strays, as a share of its images: more is not a few misplaced frames
 * but a product of its own in that frame size, and stays where FINCH put it.
 */
export const STRAY_SHARE = 0.25;
/** The receiving cluster must hold at least this many times the giver's share of the frame size: which side the strays are on must be clear. */
const STRAY_RATIO = 2;

interface StrayMove {
  rows: number[];
  from: number;
  into: number;
  pair: ScalePair;
}

/** The two directions of a pair name one frame size as it is and turned (a's turned frames are b's real ones, and back). */
const sameWindow = (w: string, v: string) => w === v || w === v.split('x').reverse().join('x');

const inWindow = (rows: number[], frames: FrameSize[], window: string) => rows.filter((i) => key(frames[i]) === window || turnedKey(frames[i]) === window);

/**
 * Pairs that mix both ways in one frame size but fail `covers`: the frames of that size in the cluster
 * where they are a small share are the other product turned a quarter, which FINCH put with a
 * product of like outline. They move, alone, to the other cluster; the rest of both stays apart.
 * Cluster study: about 20 quarter-turned square frames of a brushed surface sat in kolektor's
 * cluster of tall frames (6% of it), where they would have been scored against kolektor's bank.
 */
function strays(members: number[][], frames: FrameSize[], tested: ScalePair[], judged: ScalePair[], minMixing: number): StrayMove[] {
  const directed = new Map(tested.map((t) => [`${t.a}|${t.b}`, t]));
  const candidates = judged.flatMap((p) => {
    const [there, back] = [directed.get(`${p.a}|${p.b}`), directed.get(`${p.b}|${p.a}`)];
    // a pair that merges, or that did not mix in one window both ways, has no strays
    if (p.mixing > 0 || !there || !back || !sameWindow(there.window, back.window)) return [];
    const both = Math.min(there.mixing, back.mixing);
    return both >= minMixing ? [{ ...p, mixing: both }] : [];
  });
  const taken = new Set<number>();
  const out: StrayMove[] = [];
  for (const p of candidates.sort((x, y) => y.mixing - x.mixing)) {
    const share = (c: number) => inWindow(members[c], frames, p.window).length / members[c].length;
    const [from, into] = share(p.a) <= share(p.b) ? [p.a, p.b] : [p.b, p.a];
    if (share(from) >= STRAY_SHARE || share(into) < STRAY_RATIO * share(from) || taken.has(from) || taken.has(into)) continue;
    taken.add(from).add(into);
    out.push({ rows: inWindow(members[from], frames, p.window), from, into, pair: p });
  }
  return out;
}

function strayStep(m: StrayMove, ids: Int32Array): MergeStep {
  return { reason: 'stray', size: m.rows.length, distance: m.pair.distance, window: m.pair.window, mixing: m.pair.mixing, into: ids[m.into], from: ids[m.from] };
}

/**
 * Whether the tested frame size holds at least half of the smaller cluster (in it or turned to it):
 * what was compared must stand for the cluster that merges, not for a few of its images. Cluster
 * study: a brushed surface's quarter-turned square frames, which FINCH had put with kolektor's tall
 * frames, mixed with the surface turned and joined all of kolektor to it; 22 of 355 images of that
 * cluster were square.
 */
function covers(members: number[][], frames: FrameSize[], t: ScalePair): boolean {
  const small = members[t.a].length <= members[t.b].length ? members[t.a] : members[t.b];
  const inWindow = small.filter((i) => key(frames[i]) === t.window || turnedKey(frames[i]) === t.window).length;
  return inWindow >= small.length / 2;
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
