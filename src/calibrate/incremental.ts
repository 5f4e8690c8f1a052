/**
 * Changing one product of a bundle without recalibrating the others:
 *  - addProduct: calibrate only the new images, as one new cluster, appended;
 *  - addImages: add approved good images to one cluster and rebuild only its bank, keys, routing
 *    limit and threshold (from all its images: the old members must still be on disk).
 * Every other cluster keeps its bank, keys, threshold and routing limit as they were (byte for byte
 * in the file): a cluster's routing limit and threshold depend on its own members only. The new
 * cluster is calibrated with the bundle's scoring settings, so its scores compare with the others'.
 */
import { existsSync } from 'node:fs';
import { newBundleId, type Bundle, type BundleCluster } from '../bundle/bundle-file.ts';
import type { EngineConfig } from '../config.ts';
import { Router } from '../route/router.ts';
import type { ProgressFn } from '../score/patchcore.ts';
import { calibrate, CalibrationError, type CalibrationOptions, type Embedded } from './calibrate.ts';

export type ClusterOptions = Omit<CalibrationOptions, 'images' | 'labels' | 'embedded' | 'cache'>;

/** The engine config with the bundle's scoring and calibration settings (what its thresholds hold under). */
export function engineForBundle(c: EngineConfig, b: Bundle): EngineConfig {
  const h = b.header;
  const s = h.scoring;
  return {
    ...c,
    features: { ...c.features, input_size: s.input_size, fit: s.fit, pre_dim: s.pre_dim, dim: s.dim },
    scoring: { ...c.scoring, reweight_neighbours: s.reweight_neighbours, heatmap_sigma: s.heatmap_sigma },
    calibration: { ...c.calibration, frr_target: h.settings.frr_target, folds: h.settings.folds, keys: h.settings.key_mode, routing_limit: h.settings.routing_limit },
  };
}

/** One cluster calibrated from `images` alone (known_class with one label). */
async function calibrateCluster(b: Bundle, images: string[], name: string, opts: ClusterOptions, progress?: ProgressFn): Promise<{ cluster: BundleCluster; heldOut: number[]; embedded: Embedded }> {
  if (images.length === 0) throw new CalibrationError('no images to calibrate from');
  const { bundle: one, heldOut, embedded } = await calibrate({ ...opts, images, labels: images.map(() => name) }, progress);
  const h = b.header;
  const o = one.header;
  if (o.backbone.onnx_sha256 !== h.backbone.onnx_sha256)
    throw new CalibrationError(`the bundle was calibrated with backbone "${h.backbone.id}", this run uses "${o.backbone.id}": pass the bundle's backbone (--backbone)`);
  const mismatch = (['input_size', 'fit', 'pre_dim', 'dim', 'reweight_neighbours', 'heatmap_sigma'] as const).filter((k) => o.scoring[k] !== h.scoring[k]);
  if (mismatch.length || o.semantic_dim !== h.semantic_dim)
    throw new CalibrationError(`scoring settings differ from the bundle's (${mismatch.join(', ') || 'semantic_dim'}): the new cluster's scores would not compare`);
  return { cluster: one.clusters[0], heldOut: heldOut[0], embedded };
}

function withClusters(b: Bundle, clusters: BundleCluster[], images: number): Bundle {
  const header = {
    ...b.header,
    bundle_id: newBundleId(),
    created_at: new Date().toISOString(),
    calibration: { ...b.header.calibration, images },
    clusters: clusters.map((c) => c.info),
  };
  return { header, clusters };
}

/** Which existing cluster, if any, takes the new cluster's routing keys (the product may be known already). */
export function keysTakenBy(b: Bundle, c: BundleCluster): string[] {
  const dim = b.header.semantic_dim;
  const router = new Router(
    b.clusters.map((k) => ({ keys: k.keys, count: k.info.keys.count, limit: k.info.routing_limit })),
    dim,
  );
  const taken = new Set<string>();
  for (let j = 0; j < c.info.keys.count; j++) {
    const r = router.route(c.keys.slice(j * dim, (j + 1) * dim));
    if (r.cluster !== null) taken.add(b.clusters[r.cluster].info.name);
  }
  return [...taken];
}

export interface IncrementResult {
  bundle: Bundle;
  /** index of the new or rebuilt cluster in bundle.clusters */
  changed: number;
  /** its held-out good scores */
  heldOut: number[];
  /** the images it was calibrated from and their embeddings (for the report) */
  images: string[];
  embedded: Embedded;
  warnings: string[];
}

/** A product (cluster) name: letters, digits, _ . - only, at most 64 (it names files and topics' payloads). */
export const PRODUCT_NAME = /^[\w.-]{1,64}$/;

export async function addProduct(b: Bundle, images: string[], name: string, opts: ClusterOptions, progress?: ProgressFn): Promise<IncrementResult> {
  if (!PRODUCT_NAME.test(name)) throw new CalibrationError(`product name "${name.slice(0, 70)}": letters, digits, _ . - only, at most 64`);
  if (b.clusters.some((c) => c.info.name === name)) throw new CalibrationError(`the bundle already has a cluster "${name}": use add-images to extend it`);
  const { cluster, heldOut, embedded } = await calibrateCluster(b, images, name, opts, progress);
  cluster.info.id = b.clusters.length;
  const warnings: string[] = [];
  const taken = keysTakenBy(b, cluster);
  if (taken.length) warnings.push(`some images of ${name} route to ${taken.join(', ')} in the old bundle: the product may be one already calibrated, or the two overlap (check the routing of both)`);
  return { bundle: withClusters(b, [...b.clusters, cluster], b.header.calibration.images + images.length), changed: b.clusters.length, heldOut, images, embedded, warnings };
}

export async function addImages(b: Bundle, clusterName: string, images: string[], opts: ClusterOptions, progress?: ProgressFn): Promise<IncrementResult> {
  const at = b.clusters.findIndex((c) => c.info.name === clusterName);
  if (at < 0) throw new CalibrationError(`no cluster "${clusterName}" in the bundle (${b.clusters.map((c) => c.info.name).join(', ')})`);
  const old = b.clusters[at].info;
  const missing = old.members.filter((m) => !existsSync(m));
  if (missing.length)
    throw new CalibrationError(`${missing.length} of the ${old.members.length} images ${clusterName} was calibrated from are gone (first: ${missing[0]}): its bank is rebuilt from all of them`);
  const known = new Set(old.members);
  const fresh = images.filter((p) => !known.has(p));
  if (!fresh.length) throw new CalibrationError(`every image given is already in ${clusterName}`);
  const members = [...old.members, ...fresh];
  const { cluster, heldOut, embedded } = await calibrateCluster(b, members, clusterName, opts, progress);
  cluster.info.id = old.id;
  const warnings: string[] = [];
  const others = { ...b, clusters: b.clusters.filter((_, i) => i !== at) };
  const taken = keysTakenBy(others, cluster);
  if (taken.length) warnings.push(`some images of ${clusterName} now route to ${taken.join(', ')}: the added images may include another product`);
  const clusters = b.clusters.map((c, i) => (i === at ? cluster : c));
  return { bundle: withClusters(b, clusters, b.header.calibration.images + fresh.length), changed: at, heldOut, images: members, embedded, warnings };
}
