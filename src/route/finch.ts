/**
 * FINCH clustering (Sarfraz et al., CVPR 2019) on cosine distance, and the silhouette rule HierCore
 * uses to pick one partition of the FINCH hierarchy. Works on L2-normalised semantic embeddings.
 */
import { quantile } from '../util/stats.ts';

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
export function finch(x: Float32Array, n: number, d: number): Partition[] {
  if (n < 2) return [{ labels: new Int32Array(n), count: n }];
  const u = normaliseRows(x, n, d);
  const out: Partition[] = [];
  let points = u;
  let m = n;
  let rowLabels = Int32Array.from({ length: n }, (_, i) => i);
  while (m > 1) {
    const step = components(firstNeighbours(points, m, d));
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
}

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
}

export function poseScaleOf(pose: PoseScales, rows: ArrayLike<number>): number {
  const v: number[] = [];
  for (let i = 0; i < rows.length; i++) for (let k = 0; k < pose.perRow; k++) v.push(pose.samples[rows[i] * pose.perRow + k]);
  return v.length ? quantile(v, 0.9) : 0;
}

export interface MergeStep {
  reason: 'pose' | 'small';
  /** images in the absorbed cluster */
  size: number;
  /** cosine distance between the two cluster means */
  distance: number;
  /** pose merges: the distance below which they were one product */
  limit?: number;
  /** final id of the cluster it went into */
  into: number;
}

export interface ClusteringResult extends Partition {
  /** every FINCH partition with its silhouette (null where undefined) */
  hierarchy: { count: number; silhouette: number | null }[];
  /** index into hierarchy of the partition picked by silhouette, or -1 for "one cluster" */
  chosen: number;
  reason: string;
  merged: MergeStep[];
}

/**
 * Pick the FINCH partition with the best silhouette, as HierCore does. Then two guards the plant
 * needs: groups that are one product in different poses are merged (FINCH splits a part that arrives
 * in several orientations into look-alike groups), and clusters below `minClusterSize` are merged
 * into the cluster with the nearest mean, never kept. A set with no partition above `minSilhouette`
 * is one cluster.
 */
export function clusterEmbeddings(x: Float32Array, n: number, d: number, opts: ClusteringOptions, pose?: PoseScales): ClusteringResult {
  const u = normaliseRows(x, n, d);
  const parts = finch(u, n, d);
  const hierarchy = parts.map((p) => ({ count: p.count, silhouette: silhouette(u, n, d, p) }));
  let chosen = -1;
  for (let i = 0; i < parts.length; i++) {
    const s = hierarchy[i].silhouette;
    if (s !== null && (chosen < 0 || s > hierarchy[chosen].silhouette!)) chosen = i;
  }
  let reason: string;
  let p: Partition;
  if (chosen < 0) {
    reason = 'no FINCH partition with 2..n-1 clusters: one cluster';
    p = { labels: new Int32Array(n), count: 1 };
  } else if (hierarchy[chosen].silhouette! < opts.minSilhouette) {
    reason = `best silhouette ${hierarchy[chosen].silhouette!.toFixed(3)} (${parts[chosen].count} clusters) < ${opts.minSilhouette}: one cluster`;
    chosen = -1;
    p = { labels: new Int32Array(n), count: 1 };
  } else {
    reason = `best silhouette ${hierarchy[chosen].silhouette!.toFixed(3)} at ${parts[chosen].count} clusters`;
    p = parts[chosen];
  }
  const { partition, merged } = mergeClusters(u, d, p, opts.poseMerge, opts.minClusterSize, pose);
  if (merged.length) reason += `; ${merged.filter((m) => m.reason === 'pose').length} pose and ${merged.filter((m) => m.reason === 'small').length} small-cluster merges -> ${partition.count}`;
  return { ...partition, hierarchy, chosen, reason, merged };
}

/**
 * Agglomerative clean-up of a partition: first, while some pair of groups is closer than `poseMerge`
 * times the smaller of their pose scales, merge the pair that is relatively closest; then merge
 * clusters under `minSize` (smallest first) into the nearest.
 */
export function mergeClusters(u: Float32Array, d: number, p: Partition, poseMerge: number, minSize: number, pose?: PoseScales): { partition: Partition; merged: MergeStep[] } {
  const labels = Int32Array.from(p.labels);
  const alive = new Set<number>(Array.from({ length: p.count }, (_, i) => i));
  const log: { reason: 'pose' | 'small'; size: number; distance: number; limit?: number; from: number; into: number }[] = [];
  const size = new Int32Array(p.count);
  for (const l of labels) size[l]++;
  const rowsOf = (c: number) => {
    const r: number[] = [];
    for (let i = 0; i < labels.length; i++) if (labels[i] === c) r.push(i);
    return r;
  };
  const absorb = (from: number, into: number, reason: 'pose' | 'small', distance: number, limit?: number) => {
    for (let i = 0; i < labels.length; i++) if (labels[i] === from) labels[i] = into;
    log.push({ reason, size: size[from], distance, limit, from, into });
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
        if (limit > 0 && distance < limit && (!best || distance / limit < best.ratio)) best = { a, b, ratio: distance / limit, distance, limit };
      }
    }
    if (!best) break;
    const [into, from] = size[best.a] >= size[best.b] ? [best.a, best.b] : [best.b, best.a];
    absorb(from, into, 'pose', best.distance, best.limit);
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
  // Renumber 0..k-1 in order of first appearance.
  const id = new Map<number, number>();
  for (let i = 0; i < labels.length; i++) {
    if (!id.has(labels[i])) id.set(labels[i], id.size);
    labels[i] = id.get(labels[i])!;
  }
  const finalId = (c: number): number => {
    const next = log.find((m) => m.from === c);
    return next ? finalId(next.into) : id.get(c)!;
  };
  const r4 = (v: number) => Number(v.toFixed(4));
  return {
    partition: { labels, count: id.size },
    merged: log.map((m) => ({ reason: m.reason, size: m.size, distance: r4(m.distance), ...(m.limit !== undefined ? { limit: r4(m.limit) } : {}), into: finalId(m.into) })),
  };
}
