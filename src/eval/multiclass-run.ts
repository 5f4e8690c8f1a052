/** `evaluate --multiclass` from the engine config: which held-out method, which mixes. */
import { readFileSync } from 'node:fs';
import { calibrationOptions } from '../calibrate/options.ts';
import type { EngineConfig } from '../config.ts';
import type { Progress } from '../util/progress.ts';
import { evaluateSubsets, type SubsetReport } from './multiclass-subsets.ts';
import { parseSubsets } from './subsets.ts';

/** Whether a site config file chooses calibration.held_out itself (then the evaluation keeps its choice). */
export function configSetsHeldOut(file?: string): boolean {
  if (!file) return false;
  const c = JSON.parse(readFileSync(file, 'utf8')) as { calibration?: { held_out?: unknown } };
  return c.calibration?.held_out !== undefined;
}

/**
 * Many mixes mean many calibrations: unless the user chose (flag or site file), held-out scores come
 * from leave-self-out, one coreset per cluster instead of folds + 1.
 */
export function subsetHeldOut(flag: string | undefined, configFile?: string): Record<string, unknown> {
  if (flag) return { held_out: flag };
  return configSetsHeldOut(configFile) ? {} : { held_out: 'leave-self-out' };
}

export function evaluateMixes(c: EngineConfig, dataset: string, categories: string[], o: { subsets?: string; testStride?: number }, progress: Progress): Promise<SubsetReport> {
  return evaluateSubsets({ ...calibrationOptions(c), dataset, categories, testStride: o.testStride, subsets: parseSubsets(o.subsets, categories) }, progress);
}
