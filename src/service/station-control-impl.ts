/**
 * StationControl (what the local web page sees and does) backed by the daemon. The daemon feeds it
 * verdicts, images and calibration progress as they happen; the page's actions go back through the
 * same daemon methods the MQTT commands use, so both paths share every rule.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { VerdictPayload } from '../publish/payloads.ts';
import type { BundleVersion, CalibrationProgress, StartCalibration, StationControl, StationView } from '../web/station-control.ts';
import { isRunId } from './calibration-run.ts';

/** What the daemon provides to it. */
export interface StationPort {
  view(): Omit<StationView, 'counts'>;
  calibration(): CalibrationProgress | null;
  startCalibration(req: StartCalibration): Promise<CalibrationProgress>;
  stopCalibration(): Promise<void>;
  runsDir(): string;
  bundles(): BundleVersion[];
  activate(version: string): Promise<BundleVersion>;
  rollback(): Promise<BundleVersion>;
}

type StationEvent = { kind: 'verdict'; verdict: VerdictPayload } | { kind: 'calibration'; progress: CalibrationProgress };

const RECENT_MAX = 200;

export class DaemonStationControl implements StationControl {
  private readonly recent: VerdictPayload[] = [];
  private readonly listeners = new Set<(e: StationEvent) => void>();
  private readonly counts = { verdicts: {} as Record<string, number>, clusters: {} as Record<string, number> };
  private heatmap: Uint8Array | null = null;
  private frame: Uint8Array | null = null;

  constructor(private readonly port: StationPort) {}

  /** Called by the daemon for every verdict it publishes. */
  noteVerdict(v: VerdictPayload, heatmapJpeg?: Uint8Array, frameJpeg?: Uint8Array): void {
    this.recent.unshift(v);
    if (this.recent.length > RECENT_MAX) this.recent.pop();
    this.counts.verdicts[v.verdict] = (this.counts.verdicts[v.verdict] ?? 0) + 1;
    const c = v.cluster ?? '';
    this.counts.clusters[c] = (this.counts.clusters[c] ?? 0) + 1;
    if (heatmapJpeg) this.heatmap = heatmapJpeg;
    if (frameJpeg) this.frame = frameJpeg;
    this.emit({ kind: 'verdict', verdict: v });
  }

  noteFrame(jpeg: Uint8Array): void {
    this.frame = jpeg;
  }

  noteProgress(p: CalibrationProgress): void {
    this.emit({ kind: 'calibration', progress: p });
  }

  /** A listener that throws (a closed page) must not reach the daemon. */
  private emit(e: StationEvent): void {
    for (const fn of this.listeners) {
      try {
        fn(e);
      } catch {}
    }
  }

  view(): StationView {
    return { ...this.port.view(), counts: { verdicts: { ...this.counts.verdicts }, clusters: { ...this.counts.clusters } } };
  }
  recentVerdicts(limit: number): VerdictPayload[] {
    return this.recent.slice(0, Math.max(0, Math.min(RECENT_MAX, Math.floor(limit) || 0)));
  }
  latestHeatmap(): Uint8Array | null {
    return this.heatmap;
  }
  latestFrame(): Uint8Array | null {
    return this.frame;
  }
  onEvent(fn: (e: StationEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  calibration(): CalibrationProgress | null {
    return this.port.calibration();
  }
  startCalibration(req: StartCalibration): Promise<CalibrationProgress> {
    return this.port.startCalibration(req);
  }
  stopCalibration(): Promise<void> {
    return this.port.stopCalibration();
  }
  /** Only a run id of the runs folder: never a path. */
  async report(runId: string): Promise<string | null> {
    if (!isRunId(runId)) return null;
    const path = join(this.port.runsDir(), runId, 'report.html');
    return existsSync(path) ? readFileSync(path, 'utf8') : null;
  }
  bundles(): BundleVersion[] {
    return this.port.bundles();
  }
  activate(version: string): Promise<BundleVersion> {
    return this.port.activate(version);
  }
  rollback(): Promise<BundleVersion> {
    return this.port.rollback();
  }
}
