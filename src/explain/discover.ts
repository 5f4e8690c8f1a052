/**
 * Defect-type discovery without training: region descriptors (descriptors.ts) are grouped by
 * agglomerative clustering (Ward's linkage by default), the number of types picked by
 * silhouette unless given; each type keeps a prototype and a rejection radius so that regions seen
 * later can be given a type, or `new` when they resemble none.
 */
import { silhouette, type Partition } from '../route/finch.ts';
import { quantile } from '../util/stats.ts';
import { embed, fitSpace, unit, type DescriptorSpace, type RegionDescriptor } from './descriptors.ts';

const cosDist = (x: Float32Array, d: number, i: number, j: number) => {
  let s = 0;
  for (let k = 0; k < d; k++) s += x[i * d + k] * x[j * d + k];
  return 1 - s;
};

export interface Merge {
  a: number;
  b: number;
  distance: number;
}

export type Linkage = 'average' | 'ward';

/**
 * Agglomerative dendrogram of unit rows by the nearest-neighbour chain (O(n^2) time and memory):
 * n - 1 merges of original-row representatives, in increasing distance. Average linkage (on cosine
 * distance) and Ward's (on squared Euclidean, 2 x cosine distance for unit rows) are reducible, so the
 * chain finds the same tree as the greedy algorithm.
 */
export function linkageTree(x: Float32Array, n: number, d: number, linkage: Linkage = 'ward'): Merge[] {
  const D = new Float64Array(n * n);
  const scale = linkage === 'ward' ? 2 : 1;
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) D[i * n + j] = D[j * n + i] = scale * cosDist(x, d, i, j);
  const size = new Float64Array(n).fill(1);
  const alive = new Uint8Array(n).fill(1);
  const merges: Merge[] = [];
  const chain: number[] = [];
  let remaining = n;
  while (remaining > 1) {
    if (chain.length === 0) chain.push(alive.indexOf(1));
    const a = chain[chain.length - 1];
    const prev = chain.length > 1 ? chain[chain.length - 2] : -1;
    let b = -1;
    let best = Infinity;
    for (let j = 0; j < n; j++) {
      if (!alive[j] || j === a) continue;
      const v = D[a * n + j];
      // Prefer the previous chain element on ties, so the chain always terminates.
      if (v < best || (v === best && j === prev)) {
        best = v;
        b = j;
      }
    }
    if (b !== prev) {
      chain.push(b);
      continue;
    }
    chain.pop();
    chain.pop();
    merges.push({ a: Math.min(a, b), b: Math.max(a, b), distance: best });
    const keep = Math.min(a, b);
    const drop = Math.max(a, b);
    for (let j = 0; j < n; j++) {
      if (!alive[j] || j === a || j === b) continue;
      const v =
        linkage === 'ward'
          ? ((size[a] + size[j]) * D[a * n + j] + (size[b] + size[j]) * D[b * n + j] - size[j] * best) / (size[a] + size[b] + size[j])
          : (size[a] * D[a * n + j] + size[b] * D[b * n + j]) / (size[a] + size[b]);
      D[keep * n + j] = D[j * n + keep] = v;
    }
    size[keep] = size[a] + size[b];
    alive[drop] = 0;
    remaining--;
  }
  return merges.sort((p, q) => p.distance - q.distance);
}

/** The dendrogram cut into k clusters (labels 0..k-1 by first appearance). */
export function cutTree(merges: Merge[], n: number, k: number): Partition {
  const parent = Int32Array.from({ length: n }, (_, i) => i);
  const find = (i: number): number => {
    let root = i;
    while (parent[root] !== root) root = parent[root];
    // path compression: every node on the way points at the root
    while (parent[i] !== root) {
      const next = parent[i];
      parent[i] = root;
      i = next;
    }
    return root;
  };
  for (let m = 0; m < n - Math.max(1, Math.min(n, k)); m++) parent[find(merges[m].b)] = find(merges[m].a);
  const id = new Map<number, number>();
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const r = find(i);
    if (!id.has(r)) id.set(r, id.size);
    labels[i] = id.get(r)!;
  }
  return { labels, count: id.size };
}

/**
 * Silhouette keeps rising with k on a few dozen noisy regions (measured on bottle: 9-10 "types" out
 * of 3 when allowed 10); a line rarely has more than a handful of recurring defect types, and a
 * type too coarse is split later by naming, so auto stops at 6.
 */
export const DEFAULT_MAX_TYPES = 6;

export interface ClusterChoice extends Partition {
  /** silhouette at each k tried (auto), k = 2.. */
  tried: { k: number; silhouette: number | null }[];
  reason: string;
}

export interface TypeClusteringOptions {
  /** number of types; 'auto' picks by silhouette */
  clusters: number | 'auto';
  /** most types 'auto' considers */
  maxTypes?: number;
  /** below this best silhouette everything is one type */
  minSilhouette?: number;
  linkage?: Linkage;
}

/** Cluster unit rows into types. */
export function clusterTypes(x: Float32Array, n: number, d: number, opts: TypeClusteringOptions): ClusterChoice {
  if (n === 0) return { labels: new Int32Array(0), count: 0, tried: [], reason: 'no regions' };
  if (n < 3) return { ...cutTree(n > 1 ? linkageTree(x, n, d, opts.linkage) : [], n, typeof opts.clusters === 'number' ? opts.clusters : 1), tried: [], reason: `${n} region(s): too few to split` };
  const merges = linkageTree(x, n, d, opts.linkage);
  if (opts.clusters !== 'auto') return { ...cutTree(merges, n, opts.clusters), tried: [], reason: `${opts.clusters} types requested` };
  const maxK = Math.min(opts.maxTypes ?? DEFAULT_MAX_TYPES, n - 1);
  const tried: { k: number; silhouette: number | null }[] = [];
  let best: { k: number; s: number } | null = null;
  for (let k = 2; k <= maxK; k++) {
    const s = silhouette(x, n, d, cutTree(merges, n, k));
    tried.push({ k, silhouette: s === null ? null : Number(s.toFixed(4)) });
    if (s !== null && (!best || s > best.s)) best = { k, s };
  }
  const floor = opts.minSilhouette ?? 0.05;
  if (!best || best.s < floor) return { ...cutTree(merges, n, 1), tried, reason: `best silhouette ${best ? best.s.toFixed(3) : 'none'} < ${floor}: one type` };
  return { ...cutTree(merges, n, best.k), tried, reason: `best silhouette ${best.s.toFixed(3)} at ${best.k} types` };
}

/**
 * An image's type from its regions' types: the type covering the largest region area (AnomalyNCD
 * merges region predictions weighted by region size). Ties: the lower type index. -1 without regions.
 */
export function imageType(types: ArrayLike<number>, areas: ArrayLike<number>): number {
  const votes = new Map<number, number>();
  for (let i = 0; i < types.length; i++) votes.set(types[i], (votes.get(types[i]) ?? 0) + areas[i]);
  let best = -1;
  let bestV = -Infinity;
  for (const [t, v] of [...votes].sort((p, q) => p[0] - q[0])) if (v > bestV) [best, bestV] = [t, v];
  return best;
}

export interface DefectType {
  /** stable id within its cluster: "T1", "T2", ... */
  id: string;
  /** set by a person (`defects name`); null until then */
  name: string | null;
  /** unit-length mean of the members' embedded descriptors */
  prototype: number[];
  /** cosine distance beyond which a region is `new` rather than this type */
  radius: number;
  /** regions and images it was discovered from */
  count: number;
  images: number;
}

/** The types of one product cluster. */
export interface ClusterTypes {
  cluster: string;
  space: DescriptorSpace;
  types: DefectType[];
  discovery: { regions: number; images: number; reason: string };
}

/** JSON-serialisable; stored in the bundle by the lead. */
export interface DefectTypes {
  format_version: 1;
  created_at: string;
  backbone: { id: string; onnx_sha256: string };
  bundle_id: string;
  clusters: ClusterTypes[];
}

export interface TypeSettings {
  /** member distance quantile the radius starts from */
  radiusQuantile?: number;
  /** ... times this factor */
  radiusFactor?: number;
  /** smallest radius (a type of near-identical regions must still admit some variation) */
  minRadius?: number;
}

export const DEFAULT_TYPE_SETTINGS: Required<TypeSettings> = { radiusQuantile: 0.95, radiusFactor: 1.5, minRadius: 0.02 };

const distTo = (proto: ArrayLike<number>, v: Float32Array) => {
  let s = 0;
  for (let k = 0; k < v.length; k++) s += proto[k] * v[k];
  return 1 - s;
};

/** Prototypes and radii of the clusters of embedded rows. */
export function buildTypes(x: Float32Array, d: number, p: Partition, imageOf: ArrayLike<number>, s: TypeSettings = {}): DefectType[] {
  const o = { ...DEFAULT_TYPE_SETTINGS, ...s };
  const out: DefectType[] = [];
  for (let c = 0; c < p.count; c++) {
    const rows: number[] = [];
    for (let i = 0; i < p.labels.length; i++) if (p.labels[i] === c) rows.push(i);
    const proto = new Float32Array(d);
    for (const i of rows) for (let k = 0; k < d; k++) proto[k] += x[i * d + k];
    unit(proto);
    const dists = rows.map((i) => distTo(proto, x.subarray(i * d, (i + 1) * d)));
    const radius = Math.max(o.minRadius, quantile(dists, o.radiusQuantile) * o.radiusFactor);
    out.push({
      id: `T${c + 1}`,
      name: null,
      prototype: Array.from(proto, (v) => Number(v.toFixed(6))),
      radius: Number(radius.toFixed(5)),
      count: rows.length,
      images: new Set(rows.map((i) => imageOf[i])).size,
    });
  }
  return out;
}

export type TypeAssignment = { type: DefectType; distance: number } | { type: 'new'; distance: number; nearest: DefectType | null };

/** Nearest type of an embedded descriptor, or 'new' beyond that type's radius (or with no types). */
export function assignType(v: Float32Array, types: DefectType[]): TypeAssignment {
  let best: DefectType | null = null;
  let bestD = Infinity;
  for (const t of types) {
    if (t.prototype.length !== v.length) throw new Error(`type ${t.id} has a ${t.prototype.length}-value prototype, the descriptor ${v.length}`);
    const dd = distTo(t.prototype, v);
    if (dd < bestD) [best, bestD] = [t, dd];
  }
  if (!best || bestD > best.radius) return { type: 'new', distance: best ? bestD : Infinity, nearest: best };
  return { type: best, distance: bestD };
}

/** Type label for a verdict: the person's name when given, else the id. */
export const typeLabel = (a: TypeAssignment) => (a.type === 'new' ? 'new' : (a.type.name ?? a.type.id));

export interface DiscoveryInput {
  descriptors: RegionDescriptor[];
  /** image index of each descriptor */
  image: number[];
  /** region area of each descriptor (any unit, for the vote) */
  area: number[];
  images: number;
}

export interface Discovery {
  space: DescriptorSpace;
  /** type index of each region */
  regionTypes: Int32Array;
  /** type index of each image (-1: no regions) */
  imageTypes: Int32Array;
  types: DefectType[];
  choice: ClusterChoice;
}

export interface DiscoverOptions extends TypeClusteringOptions, TypeSettings {
  statWeight?: number;
}

/** Discover the types of one product cluster's regions. */
export function discoverTypes(input: DiscoveryInput, opts: DiscoverOptions): Discovery {
  const n = input.descriptors.length;
  const space = fitSpace(input.descriptors, opts.statWeight);
  const d = space.feature_dim + space.stat_names.length;
  const x = new Float32Array(n * d);
  input.descriptors.forEach((r, i) => x.set(embed(r, space), i * d));
  const choice = clusterTypes(x, n, d, opts);
  const types = buildTypes(x, d, choice, input.image, opts);
  const imageTypes = new Int32Array(input.images).fill(-1);
  for (let im = 0; im < input.images; im++) {
    const rows = input.image.flatMap((v, i) => (v === im ? [i] : []));
    if (rows.length)
      imageTypes[im] = imageType(
        rows.map((i) => choice.labels[i]),
        rows.map((i) => input.area[i]),
      );
  }
  return { space, regionTypes: choice.labels, imageTypes, types, choice };
}

/**
 * Regions of one NG frame with their types (for the inspector): each region's descriptor is embedded
 * in the cluster's type space and assigned; `new` beyond every radius. Returns copies.
 */
export function typeRegions<R extends { type?: string; type_distance?: number }>(regions: R[], descriptors: RegionDescriptor[], ct: ClusterTypes): R[] {
  return regions.map((r, i) => {
    const a = assignType(embed(descriptors[i], ct.space), ct.types);
    // Infinity (no types for the cluster) would reach JSON as null: leave the distance out instead.
    return { ...r, type: typeLabel(a), ...(Number.isFinite(a.distance) ? { type_distance: Number(a.distance.toFixed(4)) } : {}) };
  });
}

/** Per-type region counts of typed regions (for stats and Prometheus). */
export function countTypes(regions: { type?: string }[], into: Map<string, number> = new Map()): Map<string, number> {
  for (const r of regions) if (r.type) into.set(r.type, (into.get(r.type) ?? 0) + 1);
  return into;
}
