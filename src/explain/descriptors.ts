/**
 * Training-free descriptors of defect regions: what the region looks like to the backbone (the
 * anomaly-weighted mean of the PatchCore patch features inside it, as in Anomaly Clustering, Sohn et
 * al. WACV 2023, restricted to the region) plus a few shape and intensity statistics.
 *
 * The statistics live on other scales than the unit feature vector, so they are standardised over the
 * set being clustered and weighted in; the standardisation is kept (DescriptorSpace) so that regions
 * seen later at inspection land in the same space as the types they are compared with.
 */
import type { InputRegion } from './regions.ts';

export const STAT_NAMES = ['log_area', 'elongation', 'extent', 'peak', 'mean', 'radial'] as const;

export interface RegionDescriptor {
  /** unit-length weighted mean patch feature [dim] */
  feature: Float32Array;
  /** raw statistics in STAT_NAMES order */
  stats: number[];
}

/** How descriptors become vectors to compare: JSON-serialisable, stored with the types. */
export interface DescriptorSpace {
  feature_dim: number;
  /**
   * mean feature of the set the types were discovered on, subtracted before comparing: the patch
   * features are post-ReLU (all positive), so uncentred every pair of regions is nearly parallel and
   * the product's common appearance drowns what tells defects apart
   */
  feature_mean: number[];
  stat_names: string[];
  stat_mean: number[];
  stat_std: number[];
  /** share of the squared length given to the statistics (0 = features only) */
  stat_weight: number;
}

export interface DescriptorInput {
  /** [gridHeight * gridWidth, dim] */
  patches: Float32Array;
  dim: number;
  grid: { width: number; height: number };
  /** anomaly map and component labels at input size */
  heatmap: Float32Array;
  labels: Int32Array;
  input: { width: number; height: number };
  /** pixels count as much as they rise above this (the range's low end: the cluster threshold) */
  low: number;
  /** threshold and median good score of the cluster, to put intensities in its units */
  threshold: number;
  p50: number;
  /** content rectangle area and centre (input pixels), for relative size and position */
  content: { x: number; y: number; width: number; height: number };
}

/** Eigenvalue ratio (major / minor, log) of the region's pixel scatter: 0 for a disc, large for a line. */
function elongation(sxx: number, syy: number, sxy: number): number {
  const tr = sxx + syy;
  const det = sxx * syy - sxy * sxy;
  const disc = Math.sqrt(Math.max(0, (tr * tr) / 4 - det));
  const l1 = tr / 2 + disc;
  const l2 = Math.max(tr / 2 - disc, 1e-3);
  return Math.log(Math.max(1, l1 / l2)) / 2;
}

/** Descriptors of the given regions of one frame. */
export function describeRegions(x: DescriptorInput, regions: InputRegion[]): RegionDescriptor[] {
  const { width } = x.input;
  const cellW = x.input.width / x.grid.width;
  const cellH = x.input.height / x.grid.height;
  const cells = x.grid.width * x.grid.height;
  const index = new Map(regions.map((r, i) => [r.label, i]));
  const weights = regions.map(() => new Float64Array(cells));
  const mom = regions.map(() => ({ n: 0, sx: 0, sy: 0, sxx: 0, syy: 0, sxy: 0 }));
  for (let p = 0; p < x.labels.length; p++) {
    const i = index.get(x.labels[p]);
    if (i === undefined) continue;
    const px = p % width;
    const py = (p - px) / width;
    const cell = Math.min(x.grid.height - 1, Math.floor(py / cellH)) * x.grid.width + Math.min(x.grid.width - 1, Math.floor(px / cellW));
    weights[i][cell] += Math.max(x.heatmap[p] - x.low, 0) + 1e-6;
    const m = mom[i];
    m.n++;
    m.sx += px;
    m.sy += py;
    m.sxx += px * px;
    m.syy += py * py;
    m.sxy += px * py;
  }
  const gap = Math.max(x.threshold - x.p50, 1e-6);
  const cx = x.content.x + x.content.width / 2;
  const cy = x.content.y + x.content.height / 2;
  const halfDiag = Math.hypot(x.content.width, x.content.height) / 2;
  return regions.map((r, i) => {
    const f = new Float32Array(x.dim);
    const w = weights[i];
    for (let c = 0; c < cells; c++) {
      if (!w[c]) continue;
      for (let k = 0, o = c * x.dim; k < x.dim; k++) f[k] += w[c] * x.patches[o + k];
    }
    unit(f);
    const m = mom[i];
    const mx = m.sx / m.n;
    const my = m.sy / m.n;
    const stats = [
      Math.log(r.area / (x.content.width * x.content.height)),
      elongation(m.sxx / m.n - mx * mx + 1 / 12, m.syy / m.n - my * my + 1 / 12, m.sxy / m.n - mx * my),
      r.area / (r.bbox[2] * r.bbox[3]),
      (r.peak - x.threshold) / gap,
      (r.mean_score - x.threshold) / gap,
      Math.hypot(r.centroid[0] - cx, r.centroid[1] - cy) / halfDiag,
    ];
    return { feature: f, stats };
  });
}

export function unit(v: Float32Array): Float32Array {
  let s = 0;
  for (let k = 0; k < v.length; k++) s += v[k] * v[k];
  const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
  for (let k = 0; k < v.length; k++) v[k] *= inv;
  return v;
}

/**
 * Measured on bottle (63 defect images, Ward, threshold spread 4): weight 0 gave NMI 0.51, 0.2 gave
 * 0.34, 0.4 gave 0.35; neighbouring settings move NMI by +-0.15 on a set this small, so the default
 * is features only and the statistics stay available (and in the descriptor) for lines where size
 * is what tells types apart.
 */
export const DEFAULT_STAT_WEIGHT = 0;

/** Standardisation of the statistics over the set of descriptors being clustered. */
export function fitSpace(ds: RegionDescriptor[], statWeight = DEFAULT_STAT_WEIGHT): DescriptorSpace {
  if (ds.length === 0) throw new Error('no region descriptors to fit a descriptor space on');
  const k = STAT_NAMES.length;
  const mean = new Array<number>(k).fill(0);
  const std = new Array<number>(k).fill(0);
  for (const d of ds) for (let j = 0; j < k; j++) mean[j] += d.stats[j] / ds.length;
  for (const d of ds) for (let j = 0; j < k; j++) std[j] += (d.stats[j] - mean[j]) ** 2 / ds.length;
  const fm = new Array<number>(ds[0].feature.length).fill(0);
  for (const d of ds) for (let j = 0; j < fm.length; j++) fm[j] += d.feature[j] / ds.length;
  return {
    feature_dim: ds[0].feature.length,
    feature_mean: fm.map((v) => Number(v.toFixed(6))),
    stat_names: [...STAT_NAMES],
    stat_mean: mean,
    stat_std: std.map((v) => Math.sqrt(v) || 1),
    stat_weight: statWeight,
  };
}

/**
 * The vector types are compared on: centred unit feature scaled to sqrt(1 - w), standardised statistics
 * scaled so that a typical set member's statistics carry a share w of the squared length; unit length.
 */
export function embed(d: RegionDescriptor, s: DescriptorSpace): Float32Array {
  if (d.feature.length !== s.feature_dim) throw new Error(`descriptor has ${d.feature.length} feature values, the type space ${s.feature_dim}`);
  const k = s.stat_names.length;
  const out = new Float32Array(s.feature_dim + k);
  const centred = unit(Float32Array.from(d.feature, (v, j) => v - s.feature_mean[j]));
  const fw = Math.sqrt(1 - s.stat_weight);
  for (let j = 0; j < s.feature_dim; j++) out[j] = centred[j] * fw;
  const sw = Math.sqrt(s.stat_weight / k);
  for (let j = 0; j < k; j++) out[s.feature_dim + j] = ((d.stats[j] - s.stat_mean[j]) / s.stat_std[j]) * sw;
  return unit(out);
}
