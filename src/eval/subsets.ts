/**
 * Product subsets for `evaluate --multiclass`: which mixes of the present categories to calibrate,
 * and the routing a calibration of one mix would have (for the leave-one-product-out check, which
 * needs no banks).
 */
import { mergeViews, viewMerges, type CalibrationOptions, type Embedded, type ViewInputs } from '../calibrate/calibrate.ts';
import { clusterEmbeddings } from '../route/finch.ts';
import { leaveOneOutDistances, Router, routingLimit, selectKeys } from '../route/router.ts';
import { poseScaleOf } from '../route/finch.ts';
import { gatherRows } from '../util/vec.ts';

/** Every non-empty subset of `names` with at most `maxSize` members, smallest first, then in name order. */
export function allSubsets(names: string[], maxSize = names.length): string[][] {
  const out: string[][] = [];
  for (let mask = 1; mask < 1 << names.length; mask++) {
    const s = names.filter((_, i) => mask & (1 << i));
    if (s.length <= maxSize) out.push(s);
  }
  return out.sort((a, b) => a.length - b.length || names.indexOf(a[0]) - names.indexOf(b[0]) || subsetName(a).localeCompare(subsetName(b)));
}

export function subsetName(s: string[]): string {
  return s.join('+');
}

/**
 * `--subsets`: "all" (default), a number N (every subset of 1..N products), or a comma-separated list
 * of mixes with '+' between products ("bottle+screw,kolektor"). Members keep the order of `present`.
 */
export function parseSubsets(spec: string | undefined, present: string[]): string[][] {
  const s = (spec ?? 'all').trim();
  if (s === 'all') return allSubsets(present);
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n < 1) throw new Error(`--subsets ${s}: the largest mix must hold at least 1 product`);
    return allSubsets(present, n);
  }
  const seen = new Set<string>();
  const out: string[][] = [];
  for (const item of s.split(',').map((x) => x.trim())) {
    if (!item) continue;
    const members = item.split('+').map((x) => x.trim());
    for (const m of members) if (!present.includes(m)) throw new Error(`--subsets: "${m}" is not one of the categories evaluated (${present.join(', ')})`);
    const sorted = present.filter((p) => members.includes(p));
    if (sorted.length !== members.length) throw new Error(`--subsets: "${item}" names a product twice`);
    const key = subsetName(sorted);
    if (!seen.has(key)) out.push(sorted);
    seen.add(key);
  }
  if (!out.length) throw new Error(`--subsets "${spec}": no mix given (e.g. "all", "2" or "bottle+screw,kolektor")`);
  return out;
}

/** The rows `rows` of precomputed embeddings, as calibrate() takes them for those images. */
export function sliceEmbedded(emb: Embedded, rows: number[]): Embedded {
  const d = emb.dim;
  const semantic = new Float32Array(rows.length * d);
  rows.forEach((r, k) => semantic.set(emb.semantic.subarray(r * d, (r + 1) * d), k * d));
  const pose = emb.pose && {
    perRow: emb.pose.perRow,
    samples: Float32Array.from(rows.flatMap((r) => Array.from(emb.pose!.samples.subarray(r * emb.pose!.perRow, (r + 1) * emb.pose!.perRow)))),
    ...(emb.pose.turned ? { turned: gatherRows(emb.pose.turned, d, rows) } : {}),
  };
  return { semantic, dim: d, sizes: rows.map((r) => emb.sizes[r]), frames: rows.map((r) => emb.frames[r]), settings: emb.settings, ...(pose ? { pose } : {}) };
}

export type RoutingSettings = Pick<CalibrationOptions, 'clustering' | 'keyMode' | 'keyCount' | 'limit'>;

/**
 * The router calibrate() would build from these embeddings (clusters by FINCH, or one per label), without
 * building any bank: keys and routing limits per cluster, the same rules (the view tests too, given
 * the images to read again).
 */
export async function routerFor(emb: Embedded, opts: RoutingSettings, labels?: string[], scale?: ViewInputs): Promise<{ router: Router; clusters: number }> {
  const n = emb.sizes.length;
  const d = emb.dim;
  let part: { labels: Int32Array; count: number };
  if (labels) {
    const names = [...new Set(labels)].sort();
    part = { labels: Int32Array.from(labels, (l) => names.indexOf(l)), count: names.length };
  } else {
    const c = clusterEmbeddings(emb.semantic, n, d, opts.clustering, emb.pose);
    part = scale ? await mergeViews(c, emb, viewMerges(opts.clustering), scale) : c;
  }
  const clusters = Array.from({ length: part.count }, (_, c) => {
    const members = Array.from({ length: n }, (_, i) => i).filter((i) => part.labels[i] === c);
    const u = sliceEmbedded(emb, members).semantic;
    const keys = selectKeys(u, members.length, d, opts.keyMode, opts.keyCount);
    const poseScale = emb.pose ? poseScaleOf(emb.pose, members) : 0;
    return { keys: keys.keys, count: keys.count, limit: routingLimit(leaveOneOutDistances(u, members.length, d, keys), opts.limit, poseScale) };
  });
  return { router: new Router(clusters, d), clusters: part.count };
}
