/** Messages between the daemon and its inference worker thread. */
import type { InspectionResult } from './inspector.ts';
import type { BundleScoring, ScoringOverrides } from '../bundle/bundle-file.ts';

export interface WorkerInit {
  bundle: string;
  backbone: string;
  provider: 'cpu' | 'cuda' | 'tensorrt';
  threads: number;
  /** configured scoring settings (null = the bundle's); scoring itself always follows the bundle */
  overrides?: ScoringOverrides;
  /** largest bundle file a load reads (default DEFAULT_BUNDLE_MAX_BYTES) */
  maxBundleBytes?: number;
}

export type Verdictable = Omit<InspectionResult, 'heatmap' | 'geometry' | 'fitted' | 'region_boxes'>;

export type ToWorker =
  | { type: 'inspect'; id: number; width: number; height: number; data: ArrayBuffer; heatmap: boolean; image: 'always' | 'not-ok' | 'never' }
  | { type: 'reload'; id: number; bundle: string }
  /** heartbeat: answered in turn with frames, so a pong proves the worker is not stuck */
  | { type: 'ping'; id: number }
  | { type: 'close' };

export interface BundleSummary {
  bundle_id: string;
  created_at: string;
  path: string;
  /** `legacy` set: a format 1 bundle scored with the settings assumed for it */
  scoring: BundleScoring;
  clusters: { id: number; name: string; threshold: number; routing_limit: number; size: number }[];
}

export type FromWorker =
  | { type: 'ready'; bundle: BundleSummary }
  | { type: 'fatal'; error: string }
  | { type: 'result'; id: number; result: Verdictable; heatmapJpeg?: Uint8Array; frameJpeg?: Uint8Array; ms: number }
  | { type: 'failed'; id: number; error: string }
  | { type: 'reloaded'; id: number; bundle?: BundleSummary; error?: string }
  | { type: 'pong'; id: number };
