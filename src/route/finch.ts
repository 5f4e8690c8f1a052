/**
 * FINCH clustering (Sarfraz et al., CVPR 2019) on cosine distance, and the silhouette rule HierCore
 * uses to pick one partition of the FINCH hierarchy. Works on L2-normalised semantic embeddings.
 */
import { quantile } from '../util/stats.ts';
import { gatherRows } from '../util/vec.ts';

export interface Partition {
  /** cluster index of each input row, 0..count-1 */
  labels: Int32Array;
  count: number;
}

/** Rows of `x` ([n, d]) scaled to unit length (zero rows stay zero). */
export function normaliseRows(x: Float32Array, n: number, d: number): Float32Array {
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += x[i * d + k] * x[i * d + k];
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let k = 0; k < d; k++) out[i * d + k] = x[i * d + k] * inv;
  }
  return out;
}

export function dot(a: Float32Array, ao: number, b: Float32Array, bo: number, d: number): number {
  let s = 0;
  for (let k = 0; k < d; k++) s += a[ao + k] * b[bo + k];
  return s;
}

/** Index of each unit row's nearest other row by cosine similarity (ties: lowest index). */
export function firstNeighbours(u: Float32Array, n: number, d: number): Int32Array {
  const nn = new Int32Array(n).fill(-1);
  const best = new Float64Array(n).fill(-Infinity);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const s = dot(u, i * d, u, j * d, d);
      if (s > best[i]) {
        best[i] = s;
        nn[i] = j;
      }
      if (s > best[j]) {
        best[j] = s;
        nn[j] = i;
      }
    }
  }
  return nn;
}

/**
 * The `k` nearest other rows of each unit row by cosine similarity, nearest first: [n, k] indices.
 * Column 0 is firstNeighbours (same tie rule), so FINCH and the link test share one O(n^2 d) pass.
 */
export function nearestNeighbours(u: Float32Array, n: number, d: number, k: number): Int32Array {
  const kk = Math.max(1, Math.min(k, n - 1));
  const idx = new Int32Array(n * kk).fill(-1);
  const sim = new Float64Array(n * kk).fill(-Infinity);
  const offer = (i: number, j: number, s: number) => {
    const o = i * kk;
    if (s <= sim[o + kk - 1]) return;
    let p = kk - 1;
    while (p > 0 && s > sim[o + p - 1]) {
      sim[o + p] = sim[o + p - 1];
      idx[o + p] = idx[o + p - 1];
      p--;
    }
    sim[o + p] = s;
    idx[o + p] = j;
  };
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const s = dot(u, i * d, u, j * d, d);
      offer(i, j, s);
      offer(j, i, s);
    }
  }
  return idx;
}

function components(nn: Int32Array): Partition {
  const n = nn.length;
  const parent = Int32Array.from({ length: n }, (_, i) => i);
  const find = (i: number): number => {
    while (parent[i] !== i) {
      parent[i] = parent[parent[i]];
      i = parent[i];
    }
    return i;
  };
  // Edges i - nn[i]; "nn[i] = nn[j]" links are implied through the shared neighbour.
  for (let i = 0; i < n; i++) if (nn[i] >= 0) parent[find(i)] = find(nn[i]);
  const id = new Map<number, number>();
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const r = find(i);
    if (!id.has(r)) id.set(r, id.size);
    labels[i] = id.get(r)!;
  }
  return { labels, count: id.size };
}

/** Unit-length mean of the rows in each cluster: [count, d]. */
export function clusterMeans(u: Float32Array, d: number, p: Partition): Float32Array {
  const m = new Float32Array(p.count * d);
  for (let i = 0; i < p.labels.length; i++) {
    const c = p.labels[i];
    for (let k = 0; k < d; k++) m[c * d + k] += u[i * d + k];
  }
  return normaliseRows(m, p.count, d);
}

/**
 * The FINCH hierarchy: partition 1 links every row to its first neighbour; each further partition
 * does the same on the previous partition's cluster means, until one cluster remains or nothing merges.
 * Labels always refer to the original rows. Finest partition first.
 */
export function finch(x: Float32Array, n: number, d: number, first?: Int32Array): Partition[] {
  if (n < 2) return [{ labels: new Int32Array(n), count: n }];
  const u = normaliseRows(x, n, d);
  const out: Partition[] = [];
  let points = u;
  let m = n;
  let rowLabels = Int32Array.from({ length: n }, (_, i) => i);
  while (m > 1) {
    const step = components(m === n && first ? first : firstNeighbours(points, m, d));
    if (step.count === m) break;
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) labels[i] = step.labels[rowLabels[i]];
    const p = { labels, count: step.count };
    out.push(p);
    rowLabels = labels;
    points = clusterMeans(u, d, p);
    m = p.count;
  }
  return out;
}

/**
 * Mean silhouette of a partition under cosine distance (1 - cos) of unit rows. Uses per-cluster
 * vector sums, so it costs O(n·k·d) and no n x n matrix: sum_j (1 - x_i.x_j) = |C| - x_i.S_C.
 * Rows in singleton clusters count as 0, as in Rousseeuw (1987). Undefined (null) for k < 2 or k = n.
 */
export function silhouette(u: Float32Array, n: number, d: number, p: Partition): number | null {
  if (p.count < 2 || p.count >= n) return null;
  const sums = new Float64Array(p.count * d);
  const size = new Int32Array(p.count);
  for (let i = 0; i < n; i++) {
    const c = p.labels[i];
    size[c]++;
    for (let k = 0; k < d; k++) sums[c * d + k] += u[i * d + k];
  }
  let total = 0;
  for (let i = 0; i < n; i++) {
    const own = p.labels[i];
    if (size[own] === 1) continue;
    let a = 0;
    let b = Infinity;
    const self = dot(u, i * d, u, i * d, d);
    for (let c = 0; c < p.count; c++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += u[i * d + k] * sums[c * d + k];
      if (c === own) a = (size[c] - 1 - (s - self)) / (size[c] - 1);
      else b = Math.min(b, (size[c] - s) / size[c]);
    }
    const den = Math.max(a, b);
    total += den > 0 ? (b - a) / den : 0;
  }
  return total / n;
}

export interface ClusteringOptions {
  /** below this best silhouette the set is treated as one product (no real cluster structure) */
  minSilhouette: number;
  /**
   * two groups are one product seen in different poses when their means are closer than this many
   * times the smaller of the two groups' pose scales (0 = never merge); see PoseScales
   */
  poseMerge: number;
  /** clusters with fewer images are merged into the nearest cluster */
  minClusterSize: number;
  /** false: choose once on the whole set (HierCore as published), no splits inside the parts */
  recursive?: boolean;
  /**
   * two groups are one product with continuous variation (light, wear, texture) when at least this
   * share of the smaller group's nearest-neighbour links lead into the other (0 = never; default 0.05)
   */
  linkMerge?: number;
  /** calibrate's scale test after the choice (scale-merge.ts): least mixing at a common pixel scale to merge (default SCALE_MERGE, 0 = off) */
  scaleMerge?: number;
  /** calibrate's quarter-turn test before it (turn-merge.ts): least mixing of a turned cluster with another to merge (default TURN_MERGE, 0 = off) */
  turnMerge?: number;
  /** with turned copies kept: the share of one group's turned copies that must fall nearer the other for a pose merge (default TURNED_SHARE: off) */
  turnedShare?: number;
}

/** Neighbours per image for the link test. */
const LINK_K = 5;

/**
 * How far turning a part over moves its embedding: for each row, `perRow` cosine distances between
 * the image and copies of it rotated 180° and mirrored. A group's pose scale is the 90th percentile of
 * its members' distances. It puts the merge rule in the backbone's own units: semantic spaces differ
 * by more than 10x between backbones (measured: products 0.66+ apart with Coral MobileNetV2, 0.05+
 * with the block_10 fallback), while "further apart than a turned-over copy" means the same in both.
 */
export interface PoseScales {
  samples: Float32Array;
  perRow: number;
  /**
   * the turned-over copies' unit embeddings [n, d] (NaN rows: none embedded). With them a pose merge
   * also needs turned copies of one group to fall nearer the other group than their own: "B is A
   * turned over", which a close-up or a negative of A is not, however near.
   */
  turned?: Float32Array;
}

/** Share of group `a`'s turned copies nearer group `b`'s mean than `a`'s own. */
function crossShare(pose: PoseScales, d: number, means: Float32Array, rowsA: number[], a: number, b: number): number {
  const t = pose.turned!;
  let n = 0;
  let hits = 0;
  for (const r of rowsA) {
    if (Number.isNaN(t[r * d])) continue;
    n++;
    if (dot(t, r * d, means, b * d, d) > dot(t, r * d, means, a * d, d)) hits++;
  }
  return n ? hits / n : 0;
}

/**
 * Default share for the crossing test: 0, off. On the cluster study it kept products apart (purity
 * >= 0.98 in 79 of 81 mixes instead of 30; 15 pass instead of 11) but real screws, turned to any
 * angle, then split in two in some runs (routed AUROC -1.8 points), and the outcome flipped with the
 * share (0.2: 1 or 2 clusters, 0.1: 2, 0.05: 1). So it is a study option (--turned-share) until
 * the test is robust.
 */
export const TURNED_SHARE = 0;

export function poseScaleOf(pose: PoseScales, rows: ArrayLike<number>): number {
  const v: number[] = [];
  // NaN: no turned copy was embedded for that image (calibrate.ts poseSampled). A group none of
  // whose images has one takes the whole set's scale: unknown is not "does not move".
  for (let i = 0; i < rows.length; i++)
    for (let k = 0; k < pose.perRow; k++) {
      const s = pose.samples[rows[i] * pose.perRow + k];
      if (!Number.isNaN(s)) v.push(s);
    }
  if (!v.length) for (const s of pose.samples) if (!Number.isNaN(s)) v.push(s);
  return v.length ? quantile(v, 0.9) : 0;
}

export interface MergeStep {
  /** stray: images of one frame size moved from cluster `from` (the quarter-turn test, turn-merge.ts) */
  reason: 'pose' | 'linked' | 'small' | 'scale' | 'turn' | 'stray';
  /** images in the absorbed cluster (stray: images moved) */
  size: number;
  /** cosine distance between the two cluster means */
  distance: number;
  /** pose merges: the distance below which they were one product */
  limit?: number;
  /** linked merges: share of the smaller group's nearest-neighbour links that lead into the other */
  links?: number;
  /** scale merges: the common frame size both were cropped to ("WxH") and their mixing there */
  window?: string;
  mixing?: number;
  /** final id of the cluster it went into */
  into: number;
  /** strays: final id of the cluster they left */
  from?: number;
}

/**
 * One "one product or several?" test of the recursive partition choice. Node "0" is the whole set,
 * "0.1" its second part, and so on. A node is split when the rule that keeps one product whole would
 * split it on its own: its best FINCH level reaches `minSilhouette`, and more than one group is left
 * after the pose and small-cluster merges.
 */
export interface SplitStep {
  node: string;
  /** images in the node */
  size: number;
  /** clusters of the node's best FINCH level (null: no level with 2..size/minClusterSize clusters) */
  level: number | null;
  silhouette: number | null;
  /** groups left after the pose and small-cluster merges inside the node */
  groups: number;
  split: boolean;
  /** final cluster ids of a node that was not split (a product) */
  cluster?: number;
}

export interface ClusteringResult extends Partition {
  /** every FINCH partition with its silhouette (null where undefined) */
  hierarchy: { count: number; silhouette: number | null }[];
  /** index into hierarchy of the partition picked by silhouette for the whole set, or -1 for "one cluster" */
  chosen: number;
  reason: string;
  merged: MergeStep[];
  /** every split test, parents before children */
  splits: SplitStep[];
  /** the scale test's pairs (scale-merge.ts), when it ran; cluster ids are the final ones (a = b: merged) */
  scaleTests?: { a: number; b: number; window: string; mixing: number; distance: number }[];
  /** the quarter-turn test's pairs (turn-merge.ts), when it ran; final cluster ids too */
  turnTests?: { a: number; b: number; window: string; mixing: number; distance: number }[];
}

interface RowMerge {
  reason: 'pose' | 'linked' | 'small';
  /** rows (original indices) of the absorbed group */
  rows: number[];
  distance: number;
  limit?: number;
  links?: number;
}

/** The FINCH levels restricted to `rows`, relabelled 0..k-1, one per distinct count of 2..maxCount clusters. */
function restrictedLevels(parts: Partition[], rows: number[], maxCount: number): Partition[] {
  const out: Partition[] = [];
  for (const p of parts) {
    const id = new Map<number, number>();
    const labels = new Int32Array(rows.length);
    rows.forEach((r, i) => {
      if (!id.has(p.labels[r])) id.set(p.labels[r], id.size);
      labels[i] = id.get(p.labels[r])!;
    });
    if (id.size >= 2 && id.size <= maxCount && id.size < rows.length && !out.some((q) => q.count === id.size)) out.push({ labels, count: id.size });
  }
  return out;
}

/**
 * Recursive partition choice. FINCH's hierarchy can lack a level with one cluster per product: with
 * one far product and three closer ones the best level is "far | the rest" and no level holds all
 * four (issue 9). So the choice is applied again inside each part, with the same stopping rule as for
 * the whole set, until no part splits. One product stays one cluster at any depth exactly when it does
 * alone, which the silhouette and pose guards already ensure; a product whose orientation groups were
 * cut apart by a split higher up is joined again by a last pose merge over all parts. Then clusters
 * under `minClusterSize` are merged into the nearest, as before.
 */
export function clusterEmbeddings(x: Float32Array, n: number, d: number, opts: ClusteringOptions, pose?: PoseScales): ClusteringResult {
  const u = normaliseRows(x, n, d);
  const k = Math.min(LINK_K, n - 1);
  const nn = n > 1 ? nearestNeighbours(u, n, d, k) : new Int32Array(0);
  const parts = finch(
    u,
    n,
    d,
    Int32Array.from({ length: n > 1 ? n : 0 }, (_, i) => nn[i * k]),
  );
  const hierarchy = parts.map((p) => ({ count: p.count, silhouette: silhouette(u, n, d, p) }));
  const linkMin = opts.linkMerge ?? 0.05;
  const localOf = new Int32Array(n).fill(-1);
  const linksOf = (rows: number[]) => {
    if (!(linkMin > 0) || k < 1) return undefined;
    rows.forEach((r, i) => (localOf[r] = i));
    const out = new Int32Array(rows.length * k);
    rows.forEach((r, i) => {
      for (let t = 0; t < k; t++) out[i * k + t] = localOf[nn[r * k + t]];
    });
    for (const r of rows) localOf[r] = -1;
    return { nn: out, k, min: linkMin };
  };
  const splits: SplitStep[] = [];
  const merges: RowMerge[] = [];
  const seen = new Set<string>();
  const leaves: { node: string; rows: number[] }[] = [];
  // The whole set may use every level (as HierCore); parts only levels whose clusters average
  // minClusterSize images: finer ones cannot be products, and their silhouettes cost O(n^2 d).
  const queue: { node: string; rows: number[] }[] = [{ node: '0', rows: Array.from({ length: n }, (_, i) => i) }];
  let chosen = -1;
  while (queue.length) {
    const { node, rows } = queue.shift()!;
    const root = node === '0';
    const levels = root ? parts : restrictedLevels(parts, rows, Math.max(2, Math.floor(rows.length / Math.max(1, opts.minClusterSize))));
    const sub = root ? u : gatherRows(u, d, rows);
    let best = -1;
    let bestS = -Infinity;
    levels.forEach((p, i) => {
      const s = root ? hierarchy[i].silhouette : silhouette(sub, rows.length, d, p);
      if (s !== null && s > bestS) [best, bestS] = [i, s];
    });
    const step: SplitStep = { node, size: rows.length, level: best < 0 ? null : levels[best].count, silhouette: best < 0 ? null : Number(bestS.toFixed(4)), groups: 1, split: false };
    splits.push(step);
    if (best < 0 || bestS < opts.minSilhouette) {
      leaves.push({ node, rows });
      continue;
    }
    if (root) chosen = best;
    const local = mergeGroups(
      sub,
      d,
      levels[best],
      opts.poseMerge,
      opts.minClusterSize,
      pose && { samples: gatherPose(pose, rows), perRow: pose.perRow, turned: opts.turnedShare && pose.turned ? gatherRows(pose.turned, d, rows) : undefined },
      linksOf(rows),
      opts.turnedShare,
    );
    step.groups = local.count;
    // a part re-tests the merges its parent made; record each merge once
    for (const m of local.log) {
      const g = { ...m, rows: m.rows.map((i) => rows[i]) };
      const key = `${g.reason}:${g.rows.join(',')}`;
      if (!seen.has(key)) merges.push(g);
      seen.add(key);
    }
    if (local.count < 2) {
      leaves.push({ node, rows });
      continue;
    }
    step.split = true;
    const kids: number[][] = Array.from({ length: local.count }, () => []);
    local.labels.forEach((c, i) => kids[c].push(rows[i]));
    kids.forEach((k, i) => (opts.recursive === false ? leaves.push({ node: `${node}.${i}`, rows: k }) : queue.push({ node: `${node}.${i}`, rows: k })));
  }
  const labels = new Int32Array(n);
  leaves.forEach((l, c) => {
    for (const r of l.rows) labels[r] = c;
  });
  const last = mergeGroups(u, d, { labels, count: leaves.length }, opts.poseMerge, opts.minClusterSize, pose, linksOf(Array.from({ length: n }, (_, i) => i)), opts.turnedShare);
  merges.push(...last.log);
  const into = (rows: number[]) => {
    const votes = new Map<number, number>();
    for (const r of rows) votes.set(last.labels[r], (votes.get(last.labels[r]) ?? 0) + 1);
    return [...votes].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0][0];
  };
  const r4 = (v: number) => Number(v.toFixed(4));
  const merged = merges.map((m) => ({
    reason: m.reason,
    size: m.rows.length,
    distance: r4(m.distance),
    ...(m.limit !== undefined ? { limit: r4(m.limit) } : {}),
    ...(m.links !== undefined ? { links: r4(m.links) } : {}),
    into: into(m.rows),
  }));
  for (const s of splits) {
    const leaf = leaves.find((l) => l.node === s.node);
    if (leaf) s.cluster = into(leaf.rows);
  }
  const done = splits.filter((s) => s.split).length;
  const top = splits[0];
  let reason =
    top.level === null
      ? 'no FINCH partition with 2..n-1 clusters: one cluster'
      : top.silhouette! < opts.minSilhouette
        ? `best silhouette ${top.silhouette!.toFixed(3)} (${top.level} clusters) < ${opts.minSilhouette}: one cluster`
        : `best silhouette ${top.silhouette!.toFixed(3)} at ${top.level} clusters`;
  if (done > 1) reason += `; ${done - 1} further splits inside the parts -> ${leaves.length}`;
  const count = (why: MergeStep['reason']) => merged.filter((m) => m.reason === why).length;
  if (merged.length) reason += `; ${count('pose')} pose, ${count('linked')} linked and ${count('small')} small-cluster merges -> ${last.count}`;
  return { labels: last.labels, count: last.count, hierarchy, chosen, reason, merged, splits };
}

function gatherPose(pose: PoseScales, rows: number[]): Float32Array {
  const out = new Float32Array(rows.length * pose.perRow);
  rows.forEach((r, i) => out.set(pose.samples.subarray(r * pose.perRow, (r + 1) * pose.perRow), i * pose.perRow));
  return out;
}

/**
 * Agglomerative clean-up of a partition: first, while some pair of groups is closer than `poseMerge`
 * times the smaller of their pose scales, merge the pair that is relatively closest; then merge
 * clusters under `minSize` (smallest first) into the nearest.
 */
export function mergeClusters(u: Float32Array, d: number, p: Partition, poseMerge: number, minSize: number, pose?: PoseScales): { partition: Partition; merged: MergeStep[] } {
  const g = mergeGroups(u, d, p, poseMerge, minSize, pose);
  const r4 = (v: number) => Number(v.toFixed(4));
  return {
    partition: { labels: g.labels, count: g.count },
    merged: g.log.map((m) => ({
      reason: m.reason,
      size: m.rows.length,
      distance: r4(m.distance),
      ...(m.limit !== undefined ? { limit: r4(m.limit) } : {}),
      ...(m.links !== undefined ? { links: r4(m.links) } : {}),
      into: g.labels[m.rows[0]],
    })),
  };
}

/** mergeClusters with each merge's absorbed rows, labels renumbered 0..k-1 in order of first appearance. */
function mergeGroups(
  u: Float32Array,
  d: number,
  p: Partition,
  poseMerge: number,
  minSize: number,
  pose?: PoseScales,
  links?: { nn: Int32Array; k: number; min: number },
  turnedShare = TURNED_SHARE,
): Partition & { log: RowMerge[] } {
  const labels = Int32Array.from(p.labels);
  const alive = new Set<number>(Array.from({ length: p.count }, (_, i) => i));
  const log: RowMerge[] = [];
  const size = new Int32Array(p.count);
  for (const l of labels) size[l]++;
  const rowsOf = (c: number) => {
    const r: number[] = [];
    for (let i = 0; i < labels.length; i++) if (labels[i] === c) r.push(i);
    return r;
  };
  const absorb = (from: number, into: number, reason: RowMerge['reason'], distance: number, limit?: number, share?: number) => {
    log.push({ reason, rows: rowsOf(from), distance, limit, ...(share !== undefined ? { links: share } : {}) });
    for (let i = 0; i < labels.length; i++) if (labels[i] === from) labels[i] = into;
    size[into] += size[from];
    alive.delete(from);
  };
  const dist = (means: Float32Array, a: number, b: number) => 1 - dot(means, a * d, means, b * d, d);
  while (alive.size > 1 && poseMerge > 0 && pose) {
    const means = clusterMeans(u, d, { labels, count: p.count });
    const scale = new Map([...alive].map((c) => [c, poseScaleOf(pose, rowsOf(c))]));
    let best: { a: number; b: number; ratio: number; distance: number; limit: number } | null = null;
    for (const a of alive) {
      for (const b of alive) {
        if (a >= b) continue;
        const limit = poseMerge * Math.min(scale.get(a)!, scale.get(b)!);
        const distance = dist(means, a, b);
        if (!(limit > 0 && distance < limit && (!best || distance / limit < best.ratio))) continue;
        if (turnedShare > 0 && pose.turned && Math.max(crossShare(pose, d, means, rowsOf(a), a, b), crossShare(pose, d, means, rowsOf(b), b, a)) < turnedShare) continue;
        best = { a, b, ratio: distance / limit, distance, limit };
      }
    }
    if (!best) break;
    const [into, from] = size[best.a] >= size[best.b] ? [best.a, best.b] : [best.b, best.a];
    absorb(from, into, 'pose', best.distance, best.limit);
  }
  // Linked: groups whose images run into one another are one product with continuous variation;
  // distinct products share (almost) no nearest-neighbour links.
  while (alive.size > 1 && links) {
    const cross = new Map<number, number>();
    for (let i = 0; i < labels.length; i++) {
      for (let t = 0; t < links.k; t++) {
        const j = links.nn[i * links.k + t];
        if (j < 0 || labels[j] === labels[i]) continue;
        const [a, b] = labels[i] < labels[j] ? [labels[i], labels[j]] : [labels[j], labels[i]];
        cross.set(a * p.count + b, (cross.get(a * p.count + b) ?? 0) + 1);
      }
    }
    let best: { a: number; b: number; share: number } | null = null;
    for (const [key, e] of cross) {
      const a = Math.floor(key / p.count);
      const b = key % p.count;
      const share = e / (links.k * Math.min(size[a], size[b]));
      if (share >= links.min && (!best || share > best.share)) best = { a, b, share };
    }
    if (!best) break;
    const means = clusterMeans(u, d, { labels, count: p.count });
    const [into, from] = size[best.a] >= size[best.b] ? [best.a, best.b] : [best.b, best.a];
    absorb(from, into, 'linked', dist(means, best.a, best.b), undefined, best.share);
  }
  while (alive.size > 1) {
    let smallest = -1;
    for (const c of alive) if (size[c] < minSize && (smallest < 0 || size[c] < size[smallest])) smallest = c;
    if (smallest < 0) break;
    const means = clusterMeans(u, d, { labels, count: p.count });
    let into = -1;
    for (const c of alive) if (c !== smallest && (into < 0 || dist(means, smallest, c) < dist(means, smallest, into))) into = c;
    absorb(smallest, into, 'small', dist(means, smallest, into));
  }
  const id = new Map<number, number>();
  for (let i = 0; i < labels.length; i++) {
    if (!id.has(labels[i])) id.set(labels[i], id.size);
    labels[i] = id.get(labels[i])!;
  }
  return { labels, count: id.size, log };
}
