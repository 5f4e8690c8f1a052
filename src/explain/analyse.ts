/**
 * Offline analysis of defect frames against a bundle (discovery, evaluation): route and score with
 * the Inspector, then find regions and their descriptors. The Inspector does not hand out the patch
 * features it scored, so they are extracted a second time here (offline; one more backbone pass).
 */
import { ExtractorPool } from '../features/extractor-pool.ts';
import type { FeatureSettings } from '../features/extractor.ts';
import type { RgbImage, Geometry } from '../features/image.ts';
import type { Bundle, ClusterInfo } from '../bundle/bundle-file.ts';
import { Inspector } from '../inspect/inspector.ts';
import type { ExecutionProvider } from '../features/session.ts';
import { findRegions, type FrameRegions, type RegionSettings } from './regions.ts';
import type { CalibrationStats } from './mebin.ts';

export interface AnalysedFrame {
  verdict: 'OK' | 'NG' | 'UNKNOWN';
  cluster: ClusterInfo | null;
  score: number | null;
  heatmap: Float32Array | null;
  /** [gridHeight * gridWidth, dim] */
  patches: Float32Array | null;
  grid: { width: number; height: number };
  input: { width: number; height: number };
  fitted: Uint8Array;
  geometry: Geometry;
  frame: { width: number; height: number };
  regions: FrameRegions | null;
}

export function clusterStats(c: ClusterInfo): CalibrationStats {
  return { threshold: c.threshold, p50: c.statistics.nominal.p50 };
}

export class FrameAnalyser {
  private constructor(
    readonly bundle: Bundle,
    private readonly inspector: Inspector,
    private readonly pool: ExtractorPool,
    private readonly regionSettings: RegionSettings,
  ) {}

  static async load(bundle: Bundle, backboneDir: string, opts: { provider?: ExecutionProvider; threads?: number; regions?: RegionSettings } = {}): Promise<FrameAnalyser> {
    const inspector = await Inspector.load(bundle, backboneDir, { provider: opts.provider, threads: opts.threads });
    return new FrameAnalyser(bundle, inspector, new ExtractorPool(backboneDir, { provider: opts.provider, threads: opts.threads }), opts.regions ?? {});
  }

  clusterByName(name: string): number | undefined {
    const c = this.bundle.header.clusters.find((x) => x.name === name);
    return c?.id;
  }

  /** Route (or force `cluster`) and score; regions and patches for every frame that has a cluster. */
  async analyse(img: RgbImage, cluster?: number): Promise<AnalysedFrame> {
    const r = await this.inspector.inspect(img, cluster);
    const info = r.cluster_id === null ? null : this.bundle.header.clusters[r.cluster_id];
    const base = { verdict: r.verdict, cluster: info, score: r.score, heatmap: r.heatmap, input: r.input, fitted: r.fitted, geometry: r.geometry, frame: { width: img.width, height: img.height } };
    if (!info || !r.heatmap) return { ...base, patches: null, grid: { width: 0, height: 0 }, regions: null };
    const h = this.bundle.header.scoring;
    const settings: FeatureSettings = { width: info.features.width, height: info.features.height, fit: info.features.fit, preDim: h.pre_dim, dim: h.dim };
    const ex = await this.pool.get(settings);
    const f = await ex.extract(img);
    const regions = findRegions(r.heatmap, r.input, r.geometry, base.frame, clusterStats(info), this.regionSettings);
    return { ...base, patches: f.patches, grid: { width: ex.gridWidth, height: ex.gridHeight }, regions };
  }

  async release(): Promise<void> {
    await this.inspector.release();
    await this.pool.release();
  }
}
