/** Counters behind the `stats` message and `get_stats`: plain numbers, one owner, no globals. */
import { percentile } from '../eval/evaluate.ts';
import type { Verdict } from '../publish/payloads.ts';

const LATENCY_WINDOW = 500;

export class StationStats {
  framesIn = 0;
  inspected = 0;
  dropped = 0;
  errors = 0;
  workerRestarts = 0;
  archiveErrors = 0;
  readonly verdicts: Record<Verdict, number> = { OK: 0, NG: 0, UNKNOWN: 0, NO_FRAME: 0, UNCALIBRATED: 0 };
  readonly triggers = { received: 0, refused: 0, no_frame: 0 };
  /** defect regions per type ("untyped" without defect types in the bundle) */
  readonly defectRegions: Record<string, number> = {};
  private readonly latency: number[] = [];

  verdict(v: Verdict, captureToVerdictMs?: number): void {
    this.verdicts[v]++;
    if (v === 'NO_FRAME') this.triggers.no_frame++;
    else if (v !== 'UNCALIBRATED') this.inspected++;
    if (captureToVerdictMs === undefined) return;
    this.latency.push(captureToVerdictMs);
    if (this.latency.length > LATENCY_WINDOW) this.latency.shift();
  }

  latencyPercentiles(): { p50: number; p95: number; p99: number } | null {
    if (!this.latency.length) return null;
    const s = [...this.latency].sort((a, b) => a - b);
    const p = (q: number) => Number(percentile(s, q).toFixed(1));
    return { p50: p(0.5), p95: p(0.95), p99: p(0.99) };
  }
}
