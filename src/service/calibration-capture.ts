/**
 * Which live frames a calibration run keeps: a minimal capture policy (helper F's
 * src/calibrate/run/capture-policy.ts did not exist when this was written). Pure: the frame's pixels
 * and the clock in, a decision out.
 *
 * - near-duplicates (a stopped conveyor shows the same part frame after frame) are skipped: a bank of
 *   one part repeated 60 times would call every other part a defect;
 * - blank or blocked views (lens cap, a hand, lights off: almost no contrast) are flagged and skipped.
 */
export type CapturePolicy = 'count' | 'interval' | 'trigger';

export interface CaptureRules {
  policy: CapturePolicy;
  intervalMs: number;
  /** mean absolute difference (0-255) of 16x16 grey thumbnails below which a frame repeats the last kept one */
  duplicateDiff: number;
  /** standard deviation (0-255) of the thumbnail below which a view is blank */
  blankStd: number;
}

export type CaptureDecision = { keep: true } | { keep: false; why: 'duplicate' | 'blank' | 'interval' | 'not triggered' };

const SIDE = 16;

/** 16x16 grey thumbnail of a packed RGB frame (box-sampled, cheap: 256 samples per cell at most). */
export function thumbnail(f: { width: number; height: number; data: Uint8Array }): Float32Array {
  const t = new Float32Array(SIDE * SIDE);
  for (let ty = 0; ty < SIDE; ty++) {
    for (let tx = 0; tx < SIDE; tx++) {
      const x0 = Math.floor((tx * f.width) / SIDE);
      const x1 = Math.max(x0 + 1, Math.floor(((tx + 1) * f.width) / SIDE));
      const y0 = Math.floor((ty * f.height) / SIDE);
      const y1 = Math.max(y0 + 1, Math.floor(((ty + 1) * f.height) / SIDE));
      const sx = Math.max(1, Math.floor((x1 - x0) / 16));
      const sy = Math.max(1, Math.floor((y1 - y0) / 16));
      let sum = 0;
      let n = 0;
      for (let y = y0; y < y1; y += sy) {
        for (let x = x0; x < x1; x += sx) {
          const i = 3 * (y * f.width + x);
          sum += 0.299 * f.data[i] + 0.587 * f.data[i + 1] + 0.114 * f.data[i + 2];
          n++;
        }
      }
      t[ty * SIDE + tx] = sum / n;
    }
  }
  return t;
}

function std(t: Float32Array): number {
  let m = 0;
  for (const v of t) m += v;
  m /= t.length;
  let s = 0;
  for (const v of t) s += (v - m) ** 2;
  return Math.sqrt(s / t.length);
}

function meanAbsDiff(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

export class FrameSelector {
  private last: Float32Array | null = null;
  private lastAt = -Infinity;
  readonly skipped = { duplicate: 0, blank: 0 };

  constructor(private readonly r: CaptureRules) {}

  /** `triggered`: the frame answers a PLC trigger (policy trigger keeps only those). */
  offer(f: { width: number; height: number; data: Uint8Array; capturedAt: number }, triggered: boolean): CaptureDecision {
    if (this.r.policy === 'trigger' && !triggered) return { keep: false, why: 'not triggered' };
    if (this.r.policy === 'interval' && f.capturedAt - this.lastAt < this.r.intervalMs) return { keep: false, why: 'interval' };
    const t = thumbnail(f);
    if (std(t) < this.r.blankStd) {
      this.skipped.blank++;
      return { keep: false, why: 'blank' };
    }
    if (this.last && meanAbsDiff(t, this.last) < this.r.duplicateDiff) {
      this.skipped.duplicate++;
      return { keep: false, why: 'duplicate' };
    }
    this.last = t;
    this.lastAt = f.capturedAt;
    return { keep: true };
  }
}
