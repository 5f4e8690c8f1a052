/**
 * The inspection engine behind `inspect` and the daemon: frame -> semantic embedding -> route to a
 * cluster (or unknown) -> PatchCore score against that cluster's bank -> verdict against its threshold.
 */
import type { RgbImage, Geometry } from '../features/image.ts';
import { ExtractorPool } from '../features/extractor-pool.ts';
import type { FeatureSettings } from '../features/extractor.ts';
import { PatchScorer } from '../score/scorer.ts';
import { scorerOptionsFor } from '../score/patchcore.ts';
import type { ExecutionProvider } from '../features/session.ts';
import { Router, type Route } from '../route/router.ts';
import { resolveInputSize } from '../config.ts';
import { BundleFileError, checkScoringOverrides, NO_SCORING_OVERRIDES, type Bundle, type ClusterInfo, type ScoringOverrides } from '../bundle/bundle-file.ts';
import { normaliseScore } from '../calibrate/threshold.ts';
import { encodeRgb, overlayRgb } from '../score/overlay.ts';
import { drawBoxes, findRegions, type Box, type Region } from '../explain/regions.ts';
import { describeRegions } from '../explain/descriptors.ts';
import { typeRegions, type ClusterTypes } from '../explain/discover.ts';

export type VerdictKind = 'OK' | 'NG' | 'UNKNOWN';

export interface InspectionResult {
  verdict: VerdictKind;
  /** cluster name, or null when unknown */
  cluster: string | null;
  cluster_id: number | null;
  score: number | null;
  /** 0..1, 0.5 at the threshold (see normaliseScore) */
  normalised_score: number | null;
  threshold: number | null;
  route: { nearest: string; nearest_id: number; distance: number; limit: number; margin: number };
  /** anomaly map at the network input size of the cluster (null when unknown) */
  heatmap: Float32Array | null;
  /** the frame as fitted to `input` (RGB), for drawing the heatmap over */
  fitted: Uint8Array;
  geometry: Geometry;
  input: { width: number; height: number };
  timings_ms: { preprocess: number; backbone: number; route: number; knn: number; reweight: number; heatmap: number; regions: number };
  /** NG only: defect regions in frame pixels (MEBin), typed when the bundle has defect types */
  regions: Region[] | null;
  /** the same regions' boxes in input pixels, for drawing on the heatmap */
  region_boxes: Box[];
  /** set when the score could not be computed (NaN/infinite features): the part is NG, never OK */
  fault?: 'non-finite score';
}

/** Scoring settings come from the bundle (its thresholds hold only under them), not from here. */
export interface InspectorOptions {
  provider?: ExecutionProvider;
  threads?: number;
  /** configured scoring settings: each non-null one must equal the bundle's, else the load fails */
  overrides?: ScoringOverrides;
}

interface LoadedCluster {
  info: ClusterInfo;
  settings: FeatureSettings;
  scorer: PatchScorer;
  /** defect types discovered from this cluster's rejects (hiercore-edge defects discover) */
  types: ClusterTypes | null;
}

export class Inspector {
  private constructor(
    readonly bundle: Bundle,
    private readonly pool: ExtractorPool,
    private readonly router: Router,
    private readonly clusters: LoadedCluster[],
  ) {}

  get bundleId(): string {
    return this.bundle.header.bundle_id;
  }

  static async load(bundle: Bundle, backboneDir: string, opts: InspectorOptions = {}): Promise<Inspector> {
    checkScoringOverrides(opts.overrides ?? NO_SCORING_OVERRIDES, bundle.header);
    const sc = bundle.header.scoring;
    const scoring = { reweightNeighbours: sc.reweight_neighbours, sigma: sc.heatmap_sigma, search: sc.search, provider: opts.provider, threads: opts.threads };
    const pool = new ExtractorPool(backboneDir, { provider: opts.provider, threads: opts.threads });
    const loaded: LoadedCluster[] = [];
    try {
      const h = bundle.header;
      for (const c of bundle.clusters) {
        const settings: FeatureSettings = { width: c.info.features.width, height: c.info.features.height, fit: c.info.features.fit, preDim: h.scoring.pre_dim, dim: h.scoring.dim };
        const ex = await pool.get(settings);
        if (ex.modelSha256 !== h.backbone.onnx_sha256) {
          throw new BundleFileError(
            `bundle was calibrated with backbone "${h.backbone.id}" (${h.backbone.onnx_sha256.slice(0, 12)}…), but ${backboneDir} holds "${ex.sidecar.id}" (${ex.modelSha256.slice(0, 12)}…): recalibrate, or point to the backbone it was made with`,
          );
        }
        if (ex.semanticDim !== h.semantic_dim) throw new BundleFileError(`bundle semantic_dim ${h.semantic_dim} does not match the backbone's ${ex.semanticDim}`);
        const b = c.bank;
        if (b.header.features.grid[0] !== ex.gridHeight || b.header.features.grid[1] !== ex.gridWidth)
          throw new BundleFileError(`cluster ${c.info.name}: bank grid ${b.header.features.grid} does not match the backbone's ${ex.gridHeight}x${ex.gridWidth}`);
        const scorer = await PatchScorer.create(b.vectors, b.header.count, b.header.dim, scorerOptionsFor(ex, scoring));
        loaded.push({ info: c.info, settings, scorer, types: h.defect_types?.clusters.find((t) => t.cluster === c.info.name) ?? null });
      }
      const router = new Router(
        bundle.clusters.map((c) => ({ keys: c.keys, count: c.info.keys.count, limit: c.info.routing_limit })),
        h.semantic_dim,
      );
      return new Inspector(bundle, pool, router, loaded);
    } catch (e) {
      for (const l of loaded) await l.scorer.release();
      await pool.release();
      throw e;
    }
  }

  /** Routing settings of a frame of this size: its own input size ("auto") with the bundle's feature dims. */
  private routingSettings(frame: { width: number; height: number }): FeatureSettings {
    const s = this.bundle.header.scoring;
    return { ...resolveInputSize(s.input_size, frame), fit: s.fit, preDim: s.pre_dim, dim: s.dim };
  }

  /**
   * Route and score one frame. `cluster` forces the cluster (evaluation of "class known at inspection");
   * the route is still computed and reported.
   */
  async inspect(img: RgbImage, cluster?: number): Promise<InspectionResult> {
    const rs = this.routingSettings(img);
    const ex = await this.pool.get(rs);
    let f = await ex.extract(img);
    const timings = { preprocess: f.timings.preprocess, backbone: f.timings.backbone, route: 0, knn: 0, reweight: 0, heatmap: 0, regions: 0 };
    const t0 = performance.now();
    const route: Route = this.router.route(f.semantic);
    timings.route = performance.now() - t0;
    const nearest = this.clusters[route.nearest];
    const routeInfo = { nearest: nearest.info.name, nearest_id: route.nearest, distance: route.distance, limit: route.limit, margin: route.margin };
    const target = cluster ?? route.cluster;
    if (target === null) {
      return {
        verdict: 'UNKNOWN',
        cluster: null,
        cluster_id: null,
        score: null,
        normalised_score: null,
        threshold: null,
        route: routeInfo,
        heatmap: null,
        fitted: f.fitted,
        geometry: f.geometry,
        input: { width: rs.width, height: rs.height },
        timings_ms: timings,
        regions: null,
        region_boxes: [],
      };
    }
    const c = this.clusters[target];
    if (!c) throw new Error(`cluster ${target} is not in this bundle (it has ${this.clusters.length})`);
    let cex = ex;
    if (c.settings.width !== rs.width || c.settings.height !== rs.height) {
      // The cluster was calibrated at another input size (frames of a different aspect ratio).
      cex = await this.pool.get(c.settings);
      f = await cex.extract(img);
      timings.preprocess += f.timings.preprocess;
      timings.backbone += f.timings.backbone;
    }
    const r = await c.scorer.score(f.patches);
    Object.assign(timings, { knn: r.timings.knn, reweight: r.timings.reweight, heatmap: r.timings.heatmap });
    const median = c.info.statistics.nominal.p50;
    // Written so that a NaN score fails the part: only a score proven at or below the threshold passes.
    const verdict = r.score <= c.info.threshold ? 'OK' : 'NG';
    const finite = Number.isFinite(r.score);
    const t1 = performance.now();
    // OK frames pay nothing for regions; a map of NaNs has none to find.
    const found = verdict === 'NG' && finite ? this.regionsOf(c, r.heatmap, f, img, { width: cex.gridWidth, height: cex.gridHeight }) : null;
    timings.regions = performance.now() - t1;
    return {
      verdict,
      cluster: c.info.name,
      cluster_id: c.info.id,
      score: r.score,
      normalised_score: normaliseScore(r.score, c.info.threshold, median),
      threshold: c.info.threshold,
      route: routeInfo,
      heatmap: r.heatmap,
      fitted: f.fitted,
      geometry: f.geometry,
      input: { width: c.settings.width, height: c.settings.height },
      timings_ms: timings,
      regions: found?.regions ?? null,
      region_boxes: found?.boxes ?? [],
      ...(finite ? {} : { fault: 'non-finite score' as const }),
    };
  }

  /** MEBin regions of an NG map, in frame pixels; typed against the cluster's defect types if any. */
  private regionsOf(
    c: LoadedCluster,
    heatmap: Float32Array,
    f: { patches: Float32Array; geometry: Geometry },
    img: RgbImage,
    grid: { width: number; height: number },
  ): { regions: Region[]; boxes: Box[] } {
    const input = { width: c.settings.width, height: c.settings.height };
    const stats = { threshold: c.info.threshold, p50: c.info.statistics.nominal.p50 };
    const fr = findRegions(heatmap, input, f.geometry, img, stats);
    let regions = fr.regions;
    if (c.types && regions.length) {
      const ds = describeRegions({ patches: f.patches, dim: c.settings.dim, grid, heatmap, labels: fr.mebin.labels, input, low: stats.threshold, ...stats, content: f.geometry.content }, fr.input);
      try {
        regions = typeRegions(regions, ds, c.types);
      } catch {
        // A defect-type table that does not fit this cluster's features leaves the regions untyped.
      }
    }
    return { regions, boxes: fr.input.map((x) => x.bbox) };
  }

  /**
   * The heatmap drawn over the frame, encoded; null for an unknown frame. Colour scale: blue at the
   * cluster's median good part, red at twice the threshold's distance above it.
   */
  async heatmapImage(r: InspectionResult, format: 'png' | 'jpeg'): Promise<Uint8Array | null> {
    if (!r.heatmap || r.threshold === null || r.cluster_id === null) return null;
    const median = this.clusters[r.cluster_id].info.statistics.nominal.p50;
    const { width, height } = r.input;
    const rgb = overlayRgb(r.fitted, r.heatmap, width, height, median, 2 * r.threshold - median);
    if (r.region_boxes.length) drawBoxes(rgb, width, height, r.region_boxes);
    return new Uint8Array(await encodeRgb(rgb, width, height, format));
  }

  async release(): Promise<void> {
    for (const c of this.clusters) await c.scorer.release();
    await this.pool.release();
  }
}
