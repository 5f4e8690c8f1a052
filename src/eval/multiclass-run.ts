/** `evaluate --multiclass` from the engine config: which mixes. */
import { calibrationOptions } from '../calibrate/options.ts';
import type { EngineConfig } from '../config.ts';
import type { Progress } from '../util/progress.ts';
import { evaluateSubsets, type SubsetReport } from './multiclass-subsets.ts';
import { parseSubsets } from './subsets.ts';

export function evaluateMixes(c: EngineConfig, dataset: string, categories: string[], o: { subsets?: string; testStride?: number }, progress: Progress): Promise<SubsetReport> {
  return evaluateSubsets({ ...calibrationOptions(c), dataset, categories, testStride: o.testStride, subsets: parseSubsets(o.subsets, categories) }, progress);
}
