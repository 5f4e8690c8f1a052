/**
 * Engine settings: config/default.json, overridden by an optional site file and by CLI flags.
 * Every rejected value names its key, the value, and what is allowed.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FIT_MODES, type FitMode } from './features/image.ts';
import { EXECUTION_PROVIDERS, type ExecutionProvider } from './features/session.ts';
import type { FeatureSettings } from './features/extractor.ts';
import type { CoresetSettings } from './score/patchcore.ts';
import type { SearchSettings } from './score/ann.ts';
import { KEY_MODES, type KeyMode, type LimitRule } from './route/router.ts';

/** How held-out good scores (and so thresholds) are computed: k fold banks, or one bank with each image's own rows masked. */
export const HELD_OUT_METHODS = ['kfold', 'masked-kfold', 'leave-self-out'] as const;
export type HeldOutMethod = (typeof HELD_OUT_METHODS)[number];

/**
 * `scoring.search`: how the bank is searched. "exact" is brute force; "ann" ranks the bank in a
 * `projection_dim` PCA projection and computes exact distances to the `candidates` best (src/score/ann.ts).
 */
export const SEARCH_MODES = ['exact', 'ann'] as const;
/** Number type of the ANN's stage-1 ranking: int8 coordinates with int32 sums (VNNI-class GEMM), or float32. */
export const COARSE_TYPES = ['int8', 'float32'] as const;
export type CoarseType = (typeof COARSE_TYPES)[number];
export interface SearchConfig {
  mode: (typeof SEARCH_MODES)[number];
  projection_dim: number;
  candidates: number;
  /** stage-1 number type (ann) */
  coarse: CoarseType;
}

export interface EngineConfig {
  backbone: string;
  features: { input_size: string; fit: FitMode; pre_dim: number; dim: number };
  coreset: { ratio: number; projection_dim: number; seed: number; dtype: 'float32' | 'float16' };
  scoring: { reweight_neighbours: number; heatmap_sigma: number; search: SearchConfig };
  runtime: { provider: ExecutionProvider; threads: number };
  calibration: {
    frr_target: number;
    folds: number;
    held_out: HeldOutMethod;
    threshold: 'frr' | 'f1';
    min_cluster_size: number;
    min_silhouette: number;
    pose_merge: number;
    scale_merge: number;
    turn_merge: number;
    turned_share: number;
    keys: KeyMode;
    key_count: number;
    routing_limit: LimitRule;
    feature_cache_mb: number;
  };
}

export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export class ConfigError extends Error {}

function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v && typeof v === 'object' && !Array.isArray(v) && base[k] && typeof base[k] === 'object') out[k] = merge(base[k] as Record<string, unknown>, v as Record<string, unknown>);
    else out[k] = v;
  }
  return out;
}

function check(cond: boolean, key: string, value: unknown, allowed: string): void {
  if (!cond) throw new ConfigError(`config "${key}" = ${JSON.stringify(value)} is invalid: ${allowed}`);
}

export function validateEngineConfig(c: EngineConfig): EngineConfig {
  const int = (v: unknown) => Number.isInteger(v);
  check(
    isInputSize(c.features.input_size),
    'features.input_size',
    c.features.input_size,
    '"auto" (the frame\'s aspect ratio at 224x224\'s pixels), "auto:S" (at S x S pixels, S 64-1024) or WIDTHxHEIGHT with each side from 32 to 4096, e.g. "224x224"',
  );
  check(FIT_MODES.includes(c.features.fit), 'features.fit', c.features.fit, `one of ${FIT_MODES.join(', ')}`);
  check(int(c.features.pre_dim) && c.features.pre_dim >= 1, 'features.pre_dim', c.features.pre_dim, 'a positive integer');
  check(int(c.features.dim) && c.features.dim >= 1, 'features.dim', c.features.dim, 'a positive integer');
  check(typeof c.coreset.ratio === 'number' && c.coreset.ratio > 0 && c.coreset.ratio <= 1, 'coreset.ratio', c.coreset.ratio, 'a number in (0, 1]');
  check(int(c.coreset.projection_dim) && c.coreset.projection_dim >= 0, 'coreset.projection_dim', c.coreset.projection_dim, 'an integer >= 0 (0 = no projection)');
  check(int(c.coreset.seed), 'coreset.seed', c.coreset.seed, 'an integer');
  check(c.coreset.dtype === 'float32' || c.coreset.dtype === 'float16', 'coreset.dtype', c.coreset.dtype, 'float32 or float16');
  check(int(c.scoring.reweight_neighbours) && c.scoring.reweight_neighbours >= 0, 'scoring.reweight_neighbours', c.scoring.reweight_neighbours, 'an integer >= 0 (0 = off, the paper uses 9)');
  check(typeof c.scoring.heatmap_sigma === 'number' && c.scoring.heatmap_sigma > 0, 'scoring.heatmap_sigma', c.scoring.heatmap_sigma, 'a positive number');
  const q = c.scoring.search ?? ({} as SearchConfig);
  check(SEARCH_MODES.includes(q.mode), 'scoring.search.mode', q.mode, `one of ${SEARCH_MODES.join(', ')}`);
  check(int(q.projection_dim) && q.projection_dim >= 1, 'scoring.search.projection_dim', q.projection_dim, 'a positive integer (ann: dimensions of the first-stage projection)');
  check(int(q.candidates) && q.candidates >= 1, 'scoring.search.candidates', q.candidates, 'a positive integer (ann: bank rows checked exactly per patch)');
  check(COARSE_TYPES.includes(q.coarse), 'scoring.search.coarse', q.coarse, `one of ${COARSE_TYPES.join(', ')} (ann: number type of the first-stage ranking)`);
  check(EXECUTION_PROVIDERS.includes(c.runtime.provider), 'runtime.provider', c.runtime.provider, `one of ${EXECUTION_PROVIDERS.join(', ')}`);
  check(int(c.runtime.threads) && c.runtime.threads >= 0, 'runtime.threads', c.runtime.threads, 'an integer >= 0 (0 = all cores)');
  const k = c.calibration;
  check(typeof k.frr_target === 'number' && k.frr_target > 0 && k.frr_target < 0.5, 'calibration.frr_target', k.frr_target, 'a false-reject rate in (0, 0.5), e.g. 0.005 for 0.5%');
  check(int(k.folds) && k.folds >= 2 && k.folds <= 20, 'calibration.folds', k.folds, 'an integer from 2 to 20');
  check(typeof k.feature_cache_mb === 'number' && k.feature_cache_mb >= 0, 'calibration.feature_cache_mb', k.feature_cache_mb, 'megabytes of patch features kept between passes (0 = extract twice)');
  check(HELD_OUT_METHODS.includes(k.held_out), 'calibration.held_out', k.held_out, `one of ${HELD_OUT_METHODS.join(', ')}`);
  check(k.threshold === 'frr' || k.threshold === 'f1', 'calibration.threshold', k.threshold, '"frr" (from good images) or "f1" (needs --defects)');
  check(int(k.min_cluster_size) && k.min_cluster_size >= 2, 'calibration.min_cluster_size', k.min_cluster_size, 'an integer >= 2 (and >= folds)');
  check(typeof k.min_silhouette === 'number' && k.min_silhouette >= -1 && k.min_silhouette <= 1, 'calibration.min_silhouette', k.min_silhouette, 'a number in [-1, 1]');
  check(typeof k.pose_merge === 'number' && k.pose_merge >= 0 && k.pose_merge <= 100, 'calibration.pose_merge', k.pose_merge, 'a factor in [0, 100] (0 = never merge groups as poses)');
  check(
    typeof k.scale_merge === 'number' && k.scale_merge >= 0 && k.scale_merge <= 1,
    'calibration.scale_merge',
    k.scale_merge,
    'a mixing share in [0, 1] (0 = never merge clusters of other frame sizes)',
  );
  check(typeof k.turn_merge === 'number' && k.turn_merge >= 0 && k.turn_merge <= 1, 'calibration.turn_merge', k.turn_merge, 'a mixing share in [0, 1] (0 = never merge clusters as quarter turns)');
  check(
    typeof k.turned_share === 'number' && k.turned_share >= 0 && k.turned_share <= 1,
    'calibration.turned_share',
    k.turned_share,
    "a share in [0, 1] of a group's turned-over copies that must fall nearer the other group for a pose merge (0 = no crossing test)",
  );
  check(KEY_MODES.includes(k.keys), 'calibration.keys', k.keys, `one of ${KEY_MODES.join(', ')}`);
  check(int(k.key_count) && k.key_count >= 1, 'calibration.key_count', k.key_count, 'a positive integer');
  const rl = k.routing_limit ?? ({} as LimitRule);
  check(typeof rl.quantile === 'number' && rl.quantile > 0 && rl.quantile <= 1, 'calibration.routing_limit.quantile', rl.quantile, 'a number in (0, 1]');
  check(typeof rl.scale === 'number' && rl.scale >= 1, 'calibration.routing_limit.scale', rl.scale, 'a number >= 1');
  check(typeof rl.pose_floor === 'number' && rl.pose_floor >= 0 && rl.pose_floor <= 100, 'calibration.routing_limit.pose_floor', rl.pose_floor, "a factor in [0, 100] of the cluster's pose scale");
  return c;
}

export function parseInputSize(v: unknown): { width: number; height: number } | null {
  const m = typeof v === 'string' ? /^(\d+)x(\d+)$/.exec(v) : null;
  if (!m) return null;
  const width = Number(m[1]);
  const height = Number(m[2]);
  return width >= 32 && width <= 4096 && height >= 32 && height <= 4096 ? { width, height } : null;
}

/** Pixel budget of the "auto" input size: the 224x224 the reference backbones were trained at. */
export const AUTO_INPUT_AREA = 224 * 224;

/** "auto" (224x224's pixels) or "auto:S" (S x S pixels, S from 64 to 1024): the budget in pixels, else null. */
export function autoBudget(v: unknown): number | null {
  if (v === 'auto') return AUTO_INPUT_AREA;
  const m = typeof v === 'string' ? /^auto:(\d{2,4})$/.exec(v) : null;
  const side = m ? Number(m[1]) : 0;
  return side >= 64 && side <= 1024 ? side * side : null;
}

/** Whether v is an input size the engine takes: "auto", "auto:S" or WIDTHxHEIGHT. */
export function isInputSize(v: unknown): boolean {
  return autoBudget(v) !== null || parseInputSize(v) !== null;
}

/**
 * "auto": keep the frames' aspect ratio at the pixel budget of 224x224 (or of "auto:S"), sides rounded
 * to multiples of 32 (the deepest stride), so a tall or wide frame is neither cropped nor mostly padding.
 */
export function autoInputSize(frameWidth: number, frameHeight: number, area = AUTO_INPUT_AREA): { width: number; height: number } {
  const w = Math.sqrt((area * frameWidth) / frameHeight);
  const h = area / w;
  const r = (v: number) => Math.min(4096, Math.max(64, Math.round(v / 32) * 32));
  return { width: r(w), height: r(h) };
}

/** Network input size for a frame: "auto[:S]" follows the frame's aspect ratio, "WxH" is fixed. */
export function resolveInputSize(inputSize: string, frame: { width: number; height: number }): { width: number; height: number } {
  const area = autoBudget(inputSize);
  const size = area !== null ? autoInputSize(frame.width, frame.height, area) : parseInputSize(inputSize);
  if (!size) throw new ConfigError(`input size ${JSON.stringify(inputSize)} is invalid: "auto", "auto:S" or WIDTHxHEIGHT`);
  return size;
}

/** Feature settings for frames of the given size (needed to resolve input_size "auto"). */
export function featureSettings(c: EngineConfig, frame: { width: number; height: number }): FeatureSettings {
  return { ...resolveInputSize(c.features.input_size, frame), fit: c.features.fit, preDim: c.features.pre_dim, dim: c.features.dim };
}

/** The scorer's search settings from the config. */
export function searchSettings(c: EngineConfig): SearchSettings {
  const q = c.scoring.search;
  return q.mode === 'exact' ? { mode: 'exact' } : { mode: 'ann', projection_dim: q.projection_dim, candidates: q.candidates, coarse: q.coarse };
}

export function coresetSettings(c: EngineConfig): CoresetSettings {
  return { ratio: c.coreset.ratio, projectionDim: c.coreset.projection_dim, seed: c.coreset.seed, dtype: c.coreset.dtype };
}

export function loadEngineConfig(siteFile?: string, overrides: Record<string, unknown> = {}): EngineConfig {
  const readJson = (p: string) => {
    try {
      return JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new ConfigError(`cannot read config ${p}: ${(e as Error).message}`);
    }
  };
  let c = readJson(resolve(PROJECT_ROOT, 'config', 'default.json'));
  if (siteFile) c = merge(c, readJson(siteFile));
  c = merge(c, overrides);
  if (!c.backbone && process.env.HCE_BACKBONE) c.backbone = process.env.HCE_BACKBONE;
  return validateEngineConfig(c as unknown as EngineConfig);
}
