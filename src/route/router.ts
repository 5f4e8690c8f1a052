/**
 * Routing a frame to its product cluster by its semantic embedding: nearest cluster key by cosine
 * distance; beyond that cluster's routing limit the frame is `unknown` and is not scored.
 */
import { dot, normaliseRows } from './finch.ts';
import { quantile } from '../util/stats.ts';

export const KEY_MODES = ['all', 'coreset', 'mean'] as const;
export type KeyMode = (typeof KEY_MODES)[number];

export interface ClusterKeys {
  /** unit semantic vectors, [count, dim] */
  keys: Float32Array;
  count: number;
  /** cosine distance beyond which a frame nearest to this cluster is unknown */
  limit: number;
}

export interface Route {
  /** index of the cluster, or null for unknown */
  cluster: number | null;
  /** nearest cluster whether or not within its limit */
  nearest: number;
  distance: number;
  limit: number;
  /** distance to the second-nearest cluster minus `distance` (Infinity with one cluster) */
  margin: number;
}

/** Nearest-key cosine distance from unit vector `q` to each cluster. */
export function keyDistances(clusters: ClusterKeys[], q: Float32Array, dim: number): number[] {
  return clusters.map((c) => {
    let best = -Infinity;
    for (let j = 0; j < c.count; j++) best = Math.max(best, dot(c.keys, j * dim, q, 0, dim));
    return 1 - best;
  });
}

export class Router {
  constructor(
    readonly clusters: ClusterKeys[],
    readonly dim: number,
  ) {
    if (clusters.length === 0) throw new Error('a router needs at least one cluster');
    for (const c of clusters) if (c.keys.length !== c.count * dim) throw new Error(`cluster keys hold ${c.keys.length} values, expected ${c.count}x${dim}`);
  }

  route(semantic: Float32Array): Route {
    if (semantic.length !== this.dim) throw new Error(`semantic embedding has ${semantic.length} values, the router expects ${this.dim}`);
    const q = normaliseRows(semantic, 1, this.dim);
    const d = keyDistances(this.clusters, q, this.dim);
    let nearest = 0;
    for (let i = 1; i < d.length; i++) if (d[i] < d[nearest]) nearest = i;
    let second = Infinity;
    for (let i = 0; i < d.length; i++) if (i !== nearest) second = Math.min(second, d[i]);
    const limit = this.clusters[nearest].limit;
    return { cluster: d[nearest] <= limit ? nearest : null, nearest, distance: d[nearest], limit, margin: second - d[nearest] };
  }
}

/**
 * Routing keys of one cluster from its members' unit embeddings ([n, dim]): all of them, a farthest-
 * point (k-center) subset of `count`, or the normalised mean. Returns the keys and, for each member,
 * the index of the key it is (or -1), so leave-one-out distances can skip a member's own key.
 */
export function selectKeys(u: Float32Array, n: number, dim: number, mode: KeyMode, count: number): { keys: Float32Array; count: number; memberKey: Int32Array } {
  const memberKey = new Int32Array(n).fill(-1);
  if (mode === 'mean' || n === 0) {
    const m = new Float32Array(dim);
    for (let i = 0; i < n; i++) for (let k = 0; k < dim; k++) m[k] += u[i * dim + k];
    return { keys: normaliseRows(m, 1, dim), count: 1, memberKey };
  }
  if (mode === 'all' || count >= n) {
    for (let i = 0; i < n; i++) memberKey[i] = i;
    return { keys: u.slice(0, n * dim), count: n, memberKey };
  }
  // Farthest-point selection starting from the member nearest the mean: covers every pose.
  const chosen: number[] = [];
  const mean = selectKeys(u, n, dim, 'mean', 1).keys;
  let first = 0;
  for (let i = 1; i < n; i++) if (dot(u, i * dim, mean, 0, dim) > dot(u, first * dim, mean, 0, dim)) first = i;
  const minDist = new Float64Array(n).fill(Infinity);
  let next = first;
  while (chosen.length < count) {
    chosen.push(next);
    memberKey[next] = chosen.length - 1;
    let far = -1;
    for (let i = 0; i < n; i++) {
      minDist[i] = Math.min(minDist[i], 1 - dot(u, i * dim, u, next * dim, dim));
      if (memberKey[i] < 0 && (far < 0 || minDist[i] > minDist[far])) far = i;
    }
    if (far < 0) break;
    next = far;
  }
  const keys = new Float32Array(chosen.length * dim);
  chosen.forEach((r, j) => keys.set(u.subarray(r * dim, (r + 1) * dim), j * dim));
  return { keys, count: chosen.length, memberKey };
}

/**
 * Each member's distance to the nearest key of its own cluster other than itself: how far a new,
 * unseen frame of this product may lie from the keys. With a single key that is the member itself,
 * the distance to it is used.
 */
export function leaveOneOutDistances(u: Float32Array, n: number, dim: number, keys: { keys: Float32Array; count: number; memberKey: Int32Array }): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let best = -Infinity;
    for (let j = 0; j < keys.count; j++) {
      if (keys.memberKey[i] === j && keys.count > 1) continue;
      best = Math.max(best, dot(u, i * dim, keys.keys, j * dim, dim));
    }
    out[i] = 1 - best;
  }
  return out;
}

export interface LimitRule {
  /** quantile of the leave-one-out distances */
  quantile: number;
  /** multiplier on that quantile */
  scale: number;
  /**
   * floor, as a multiple of the cluster's pose scale (how far turning a part over moves it), so a
   * cluster of near-identical images does not reject every new frame; in the backbone's own units
   */
  pose_floor: number;
}

export function routingLimit(loo: ArrayLike<number>, rule: LimitRule, poseScale: number): number {
  return Math.max(rule.pose_floor * poseScale, quantile(loo, rule.quantile) * rule.scale);
}
