/**
 * What the calibration report shows beyond the bundle header, gathered where the images are (the
 * calibration process): thumbnails and heatmaps as data: URIs, held-out scores, defect scores, stage
 * times and warnings. Plain JSON, so it crosses the daemon's IPC unchanged.
 */
import sharp from 'sharp';
import type { Bundle } from '../bundle/bundle-file.ts';
import { finch, silhouette } from '../route/finch.ts';

export interface Thumb {
  label: string;
  uri: string;
}

export interface ClusterReport {
  name: string;
  images: number;
  bank: number;
  threshold: number;
  threshold_source: 'frr' | 'f1';
  routing_limit: number;
  /** held-out good scores of the members (k-fold or leave-self-out, as calibrated) */
  held_out: number[];
  /** share of held_out above the threshold: the false-reject rate calibration expects */
  expected_frr: number;
  /** scores of the labelled defect images routed here */
  defects: number[];
  /** best silhouette of a split of this cluster alone (null: no split) */
  split_silhouette: number | null;
  thumbs: Thumb[];
  /** held-out good images above the threshold, as many as the false-reject target allows (not a warning) */
  tail?: Thumb[];
  /** kept as it was by an incremental run (add a product / add images to another cluster) */
  unchanged?: boolean;
}

export interface Warning {
  text: string;
  images?: Thumb[];
}

export interface ReportData {
  mode: 'cluster' | 'known_class';
  clustering?: Bundle['header']['calibration']['clustering'];
  frr_target: number;
  clusters: ClusterReport[];
  stages: { stage: string; seconds: number }[];
  warnings: Warning[];
  /** labelled defects that no cluster took (UNKNOWN) */
  defects_unknown: number;
}

/** Below this many images the threshold rests on a handful of held-out scores. */
export const FEW_IMAGES = 30;
/**
 * A split of one cluster this clean suggests two products under one bank. Measured (mnv2-ptq, 36
 * images each): bottle 0.20, screw 0.43 (one product in many rotations); bottle + screw as one 0.86.
 */
export const SPLIT_SILHOUETTE = 0.6;
const THUMB_PX = 96;

export async function thumb(path: string, label: string, px = THUMB_PX): Promise<Thumb> {
  const jpg = await sharp(path).resize(px, px, { fit: 'inside' }).jpeg({ quality: 70 }).toBuffer();
  return { label, uri: `data:image/jpeg;base64,${jpg.toString('base64')}` };
}

export async function thumbOf(buf: Uint8Array, label: string, px = THUMB_PX * 1.5): Promise<Thumb> {
  const jpg = await sharp(buf).resize(Math.round(px), Math.round(px), { fit: 'inside' }).jpeg({ quality: 75 }).toBuffer();
  return { label, uri: `data:image/jpeg;base64,${jpg.toString('base64')}` };
}

/** A few members spread over the cluster. */
export function spread<T>(items: T[], k: number): T[] {
  if (items.length <= k) return items;
  return Array.from({ length: k }, (_, i) => items[Math.floor((i * items.length) / k)]);
}

/** Best silhouette over the FINCH partitions of the rows (unit embeddings), null when none splits. */
export function bestSplit(u: Float32Array, n: number, d: number): number | null {
  if (n < 4) return null;
  let best: number | null = null;
  for (const p of finch(u, n, d)) {
    const s = silhouette(u, n, d, p);
    if (s !== null && (best === null || s > best)) best = s;
  }
  return best === null ? null : Number(best.toFixed(4));
}

/**
 * Times between stage changes of calibrate()'s progress, by stage family ("[cluster-0] fold 2/5
 * coreset" counts as "[cluster-0] held-out").
 */
export class StageClock {
  private current: string | null = null;
  private since = performance.now();
  private readonly totals = new Map<string, number>();

  static family(stage: string): string {
    const m = /^(\[[^\]]+\] )?(.*)$/.exec(stage)!;
    const rest = m[2];
    const fam = /fold|held-out/.test(rest) ? 'held-out' : /^bank/.test(rest) ? 'bank' : rest.split(' ')[0];
    return `${m[1] ?? ''}${fam}`;
  }

  mark(stage: string): void {
    const f = StageClock.family(stage);
    if (f === this.current) return;
    this.close();
    this.current = f;
  }

  private close(): void {
    const now = performance.now();
    if (this.current) this.totals.set(this.current, (this.totals.get(this.current) ?? 0) + (now - this.since) / 1000);
    this.since = now;
  }

  result(): { stage: string; seconds: number }[] {
    this.close();
    this.current = null;
    return [...this.totals].map(([stage, s]) => ({ stage, seconds: Number(s.toFixed(1)) }));
  }
}
