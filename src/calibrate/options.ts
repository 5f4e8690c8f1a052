/** Calibration options from the engine config (shared by calibrate, evaluate --multiclass and the demo). */
import { resolve } from 'node:path';
import { coresetSettings, featureSettings, searchSettings, type EngineConfig } from '../config.ts';
import type { CalibrationOptions } from './calibrate.ts';

export function calibrationOptions(c: EngineConfig): Omit<CalibrationOptions, 'images'> {
  const k = c.calibration;
  return {
    backbone: resolve(c.backbone),
    inputSize: c.features.input_size,
    features: (frame) => featureSettings(c, frame),
    coreset: coresetSettings(c),
    scoring: { reweightNeighbours: c.scoring.reweight_neighbours, sigma: c.scoring.heatmap_sigma },
    clustering: { minSilhouette: k.min_silhouette, poseMerge: k.pose_merge, scaleMerge: k.scale_merge, turnMerge: k.turn_merge, turnedShare: k.turned_share, minClusterSize: k.min_cluster_size },
    frrTarget: k.frr_target,
    folds: k.folds,
    heldOut: k.held_out,
    keyMode: k.keys,
    keyCount: k.key_count,
    limit: k.routing_limit,
    thresholdSource: k.threshold,
    runtime: { provider: c.runtime.provider, threads: c.runtime.threads },
    featureCacheMb: k.feature_cache_mb,
    search: searchSettings(c),
  };
}
