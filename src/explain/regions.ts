/**
 * Defect regions of an NG frame: MEBin components of its anomaly map, measured in the network input
 * and reported in frame pixels; plus the square crops around them that defect-type discovery looks at.
 */
import type { Geometry } from '../features/image.ts';
import { mebin, rangeFromCalibration, DEFAULT_SPREAD, type CalibrationStats, type MebinOptions, type MebinResult } from './mebin.ts';

/** [x, y, width, height]; x, y of the top-left pixel */
export type Box = [number, number, number, number];

/** One defect region as verdicts carry it, in frame pixels. */
export interface Region {
  bbox: Box;
  area_px: number;
  centroid: [number, number];
  /** highest anomaly score inside the region (score units, as the verdict's score) */
  peak: number;
  mean_score: number;
  /** defect type id or name, or 'new'; set by type assignment */
  type?: string;
  /** distance to that type's prototype */
  type_distance?: number;
}

/** A region in network-input pixels, with the component label it came from. */
export interface InputRegion {
  label: number;
  bbox: Box;
  area: number;
  centroid: [number, number];
  peak: number;
  mean_score: number;
}

export interface RegionSettings {
  /** threshold range: see rangeFromCalibration */
  spread?: number;
  /** most regions reported per frame (the largest are kept) */
  maxRegions?: number;
  mebin?: MebinOptions;
}

export const DEFAULT_MAX_REGIONS = 8;

/** Per-component box, area, centroid and scores; largest first. */
export function measureComponents(labels: Int32Array, count: number, map: Float32Array, width: number): InputRegion[] {
  const acc = Array.from({ length: count }, () => ({ x0: Infinity, y0: Infinity, x1: -1, y1: -1, n: 0, sx: 0, sy: 0, peak: -Infinity, sum: 0 }));
  for (let p = 0; p < labels.length; p++) {
    const l = labels[p];
    if (!l) continue;
    const a = acc[l - 1];
    const x = p % width;
    const y = (p - x) / width;
    if (x < a.x0) a.x0 = x;
    if (x > a.x1) a.x1 = x;
    if (y < a.y0) a.y0 = y;
    if (y > a.y1) a.y1 = y;
    a.n++;
    a.sx += x;
    a.sy += y;
    a.sum += map[p];
    if (map[p] > a.peak) a.peak = map[p];
  }
  return acc
    .map((a, i) => ({
      label: i + 1,
      bbox: [a.x0, a.y0, a.x1 - a.x0 + 1, a.y1 - a.y0 + 1] as Box,
      area: a.n,
      centroid: [a.sx / a.n + 0.5, a.sy / a.n + 0.5] as [number, number],
      peak: a.peak,
      mean_score: a.sum / a.n,
    }))
    .filter((r) => r.area > 0)
    .sort((a, b) => b.area - a.area || a.label - b.label);
}

/** Input-pixel coordinates to frame pixels under the fit geometry (letterbox, stretch or crop). */
export function inputToFrame(geometry: Geometry, frame: { width: number; height: number }): { x: (v: number) => number; y: (v: number) => number; sx: number; sy: number } {
  const sx = frame.width / geometry.scaledWidth;
  const sy = frame.height / geometry.scaledHeight;
  return { x: (v) => (v - geometry.offsetX) * sx, y: (v) => (v - geometry.offsetY) * sy, sx, sy };
}

const r2 = (v: number) => Math.round(v * 100) / 100;
const r5 = (v: number) => Number(v.toPrecision(5));

export function toFrameRegion(r: InputRegion, geometry: Geometry, frame: { width: number; height: number }): Region {
  const m = inputToFrame(geometry, frame);
  const clampX = (v: number) => Math.min(frame.width, Math.max(0, v));
  const clampY = (v: number) => Math.min(frame.height, Math.max(0, v));
  const x0 = Math.floor(clampX(m.x(r.bbox[0])));
  const y0 = Math.floor(clampY(m.y(r.bbox[1])));
  const x1 = Math.ceil(clampX(m.x(r.bbox[0] + r.bbox[2])));
  const y1 = Math.ceil(clampY(m.y(r.bbox[1] + r.bbox[3])));
  return {
    bbox: [x0, y0, Math.max(1, x1 - x0), Math.max(1, y1 - y0)],
    area_px: Math.round(r.area * m.sx * m.sy),
    centroid: [r2(clampX(m.x(r.centroid[0]))), r2(clampY(m.y(r.centroid[1])))],
    peak: r5(r.peak),
    mean_score: r5(r.mean_score),
  };
}

/** 1 inside the geometry's content rectangle (frame pixels), 0 on letterbox padding. */
export function contentValid(geometry: Geometry, width: number, height: number): Uint8Array {
  const v = new Uint8Array(width * height);
  const c = geometry.content;
  for (let y = c.y; y < c.y + c.height; y++) v.fill(1, y * width + c.x, y * width + c.x + c.width);
  return v;
}

export interface FrameRegions {
  /** in frame pixels, largest first, at most maxRegions */
  regions: Region[];
  /** the same regions in input pixels (for drawing on the heatmap and for descriptors) */
  input: InputRegion[];
  mebin: MebinResult;
}

/**
 * Regions of one anomaly map (network input size) of a frame, with the threshold range from the
 * cluster's calibration. Letterbox padding is excluded. A map with no region in that range (its
 * peak below the threshold) gets the one region around its peak (MebinResult.stable false).
 */
export function findRegions(
  heatmap: Float32Array,
  input: { width: number; height: number },
  geometry: Geometry,
  frame: { width: number; height: number },
  stats: CalibrationStats,
  settings: RegionSettings = {},
): FrameRegions {
  const range = rangeFromCalibration(stats, settings.spread ?? DEFAULT_SPREAD);
  const valid = contentValid(geometry, input.width, input.height);
  let m = mebin(heatmap, input.width, input.height, range, { valid, ...settings.mebin });
  if (m.count === 0 && settings.mebin?.fallback !== false) {
    // An NG frame's image score is its worst patch; the blurred map can peak below the threshold.
    // Then the defect is where the map rises above halfway from the good parts' median to its peak.
    // A map without contrast (peak within half the good parts' spread of its floor) points nowhere.
    let peak = -Infinity;
    let floor = Infinity;
    for (let i = 0; i < heatmap.length; i++) {
      if (!valid[i]) continue;
      if (heatmap[i] > peak) peak = heatmap[i];
      if (heatmap[i] < floor) floor = heatmap[i];
    }
    if (peak > stats.p50 && peak - floor > (stats.threshold - stats.p50) / 2)
      m = mebin(heatmap, input.width, input.height, { low: (stats.p50 + peak) / 2, high: range.high }, { valid, ...settings.mebin, minRun: Infinity });
  }
  const all = measureComponents(m.labels, m.count, heatmap, input.width);
  const kept = all.slice(0, settings.maxRegions ?? DEFAULT_MAX_REGIONS);
  return { regions: kept.map((r) => toFrameRegion(r, geometry, frame)), input: kept, mebin: m };
}

/** Minimum gap between two boxes (0 when they touch, negative when they overlap). */
export function boxGap(a: Box, b: Box): number {
  const dx = Math.max(b[0] - (a[0] + a[2]), a[0] - (b[0] + b[2]));
  const dy = Math.max(b[1] - (a[1] + a[3]), a[1] - (b[1] + b[3]));
  if (dx < 0 && dy < 0) return Math.max(dx, dy);
  return Math.hypot(Math.max(0, dx), Math.max(0, dy));
}

/** A square of side `side` centred on (cx, cy), shifted to lie inside the image (side capped to it). */
function squareAt(cx: number, cy: number, side: number, w: number, h: number): Box {
  const s = Math.max(1, Math.min(Math.round(side), w, h));
  const x = Math.min(w - s, Math.max(0, Math.round(cx - s / 2)));
  const y = Math.min(h - s, Math.max(0, Math.round(cy - s / 2)));
  return [x, y, s, s];
}

export interface CropSettings {
  /** added to the region's longer side (reference: 0.1) */
  padding?: number;
  /** smallest crop side as a share of the image's longer side (reference: 0.2, a "radius" of 0.1) */
  minSide?: number;
  /** crops closer than this share of the image's longer side are merged (reference: 0.01) */
  mergeGap?: number;
}

/**
 * Square crops around region boxes (any pixel space, image w x h): padded, at least `minSide`, inside
 * the image; crops that overlap or lie within `mergeGap` of each other are merged into one square
 * around both, until none are. Returns each crop with the indices of the boxes it covers, largest first.
 */
export function cropBoxes(boxes: Box[], w: number, h: number, s: CropSettings = {}): { box: Box; members: number[] }[] {
  const padding = s.padding ?? 0.1;
  const longer = Math.max(w, h);
  const minSide = (s.minSide ?? 0.2) * longer;
  const gap = (s.mergeGap ?? 0.01) * longer;
  let crops = boxes.map((b, i) => ({ box: squareAt(b[0] + b[2] / 2, b[1] + b[3] / 2, Math.max(Math.max(b[2], b[3]) * (1 + padding), minSide), w, h), members: [i] }));
  for (let merged = true; merged; ) {
    merged = false;
    for (let i = 0; i < crops.length && !merged; i++) {
      for (let j = i + 1; j < crops.length && !merged; j++) {
        if (boxGap(crops[i].box, crops[j].box) >= gap) continue;
        const a = crops[i].box;
        const b = crops[j].box;
        const x0 = Math.min(a[0], b[0]);
        const y0 = Math.min(a[1], b[1]);
        const x1 = Math.max(a[0] + a[2], b[0] + b[2]);
        const y1 = Math.max(a[1] + a[3], b[1] + b[3]);
        const box = squareAt((x0 + x1) / 2, (y0 + y1) / 2, Math.max(x1 - x0, y1 - y0), w, h);
        crops = [...crops.filter((_, k) => k !== i && k !== j), { box, members: [...crops[i].members, ...crops[j].members].sort((p, q) => p - q) }];
        merged = true;
      }
    }
  }
  return crops.sort((p, q) => q.box[2] * q.box[3] - p.box[2] * p.box[3] || p.members[0] - q.members[0]);
}

/** Rectangle outlines of the boxes drawn into an interleaved RGB image in place (input pixels). */
export function drawBoxes(rgb: Uint8Array, width: number, height: number, boxes: Box[], colour: [number, number, number] = [255, 255, 255], thickness = 1): void {
  const put = (x: number, y: number) => {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    const o = (y * width + x) * 3;
    rgb[o] = colour[0];
    rgb[o + 1] = colour[1];
    rgb[o + 2] = colour[2];
  };
  for (const [bx, by, bw, bh] of boxes) {
    for (let t = 0; t < thickness; t++) {
      for (let x = bx - t; x < bx + bw + t; x++) {
        put(x, by - 1 - t);
        put(x, by + bh + t);
      }
      for (let y = by - 1 - t; y <= by + bh + t; y++) {
        put(bx - 1 - t, y);
        put(bx + bw + t, y);
      }
    }
  }
}
