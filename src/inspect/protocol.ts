/** Messages between the daemon and its inference worker thread. */
import type { InspectionResult } from './inspector.ts';

export interface WorkerInit {
  bundle: string;
  backbone: string;
  provider: 'cpu' | 'cuda' | 'tensorrt';
  threads: number;
  reweightNeighbours: number;
  sigma: number;
}

export type Verdictable = Omit<InspectionResult, 'heatmap' | 'geometry' | 'fitted'>;

export type ToWorker =
  | { type: 'inspect'; id: number; width: number; height: number; data: ArrayBuffer; heatmap: boolean; image: 'always' | 'not-ok' | 'never' }
  | { type: 'reload'; id: number; bundle: string }
  | { type: 'close' };

export interface BundleSummary {
  bundle_id: string;
  created_at: string;
  path: string;
  clusters: { id: number; name: string; threshold: number; routing_limit: number; size: number }[];
}

export type FromWorker =
  | { type: 'ready'; bundle: BundleSummary }
  | { type: 'fatal'; error: string }
  | { type: 'result'; id: number; result: Verdictable; heatmapJpeg?: Uint8Array; frameJpeg?: Uint8Array; ms: number }
  | { type: 'failed'; id: number; error: string }
  | { type: 'reloaded'; id: number; bundle?: BundleSummary; error?: string };
