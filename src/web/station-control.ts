/**
 * What the local web page may see and do on the station: the daemon implements it, the page's server
 * (src/web/) only talks to it. Keeping the page behind this interface lets it be tested against a
 * fake station and keeps HTTP concerns out of the daemon.
 */
import type { VerdictPayload } from '../publish/payloads.ts';
import type { Increment } from '../calibrate/build-run.ts';

/** `uncalibrated`: running without a bundle (camera, MQTT, page up; no verdicts scored). */
export type StationMode = 'starting' | 'uncalibrated' | 'inspecting' | 'paused' | 'stopping';

export interface StationView {
  station: string;
  mode: StationMode;
  camera: { state: string; detail: string };
  /** the active bundle, or null before the first calibration */
  bundle: { id: string; version: string; created_at: string; clusters: string[] } | null;
  /** verdicts since start, per verdict and per cluster (cluster "" = none, e.g. UNKNOWN) */
  counts: { verdicts: Record<string, number>; clusters: Record<string, number> };
}

export type CalibrationStage = 'capture' | 'embed' | 'clustering' | 'bank' | 'held-out' | 'validate' | 'report' | 'activate' | 'done' | 'failed' | 'stopped';

/** One progress report of a calibration run; the same object is published on `<base>/calibration`. */
export interface CalibrationProgress {
  run_id: string;
  stage: CalibrationStage;
  /** free text for the operator, e.g. "[cluster-1] bank coreset" */
  detail: string;
  done: number;
  total: number;
  /** seconds left in this stage, null when not yet known */
  eta_s: number | null;
  started_at: string;
  /** set when stage is done/failed: the bundle version written and whether it went live */
  result?: { version: string | null; activated: boolean; report: string | null; error?: string };
}

export interface BundleVersion {
  version: string;
  bundle_id: string | null;
  created_at: string | null;
  clusters: number | null;
  active: boolean;
  /** false: kept with its report, never activated (failed validation) */
  validated: boolean | null;
  report: string | null;
}

export interface StartCalibration {
  /** recipe overrides (images to capture, interval, ...); absent: the station's default recipe */
  recipe?: Record<string, unknown>;
  /** change one product of the active bundle instead of calibrating every product */
  increment?: Increment;
}

export interface StationControl {
  view(): StationView;
  /** most recent verdicts, newest first (at most `limit`) */
  recentVerdicts(limit: number): VerdictPayload[];
  /** JPEG of the latest heatmap overlay (null when none yet) */
  latestHeatmap(): Uint8Array | null;
  /** JPEG of the latest frame (null when none yet) */
  latestFrame(): Uint8Array | null;
  /** subscribe to verdicts and calibration progress as they happen; returns the unsubscribe */
  onEvent(fn: (e: { kind: 'verdict'; verdict: VerdictPayload } | { kind: 'calibration'; progress: CalibrationProgress }) => void): () => void;

  calibration(): CalibrationProgress | null;
  startCalibration(req: StartCalibration): Promise<CalibrationProgress>;
  stopCalibration(): Promise<void>;
  /** the self-contained HTML report of a run, or null if there is none */
  report(runId: string): Promise<string | null>;

  bundles(): BundleVersion[];
  activate(version: string): Promise<BundleVersion>;
  rollback(): Promise<BundleVersion>;
}
