// Shared by the study scripts: every image's patch features at the size its first image resolves to.
import { featureSettings, type EngineConfig } from '../src/config.ts';
import type { ExtractorPool } from '../src/features/extractor-pool.ts';
import type { FeatureExtractor } from '../src/features/extractor.ts';
import { readImage } from '../src/features/image.ts';

/** Patch features of `paths`, concatenated: [paths.length * patchCount, dim], and the extractor used. */
export async function patchesOf(pool: ExtractorPool, c: EngineConfig, paths: string[]): Promise<{ ex: FeatureExtractor; all: Float32Array }> {
  let ex: FeatureExtractor | undefined;
  let all = new Float32Array(0);
  for (let i = 0; i < paths.length; i++) {
    const img = await readImage(paths[i]);
    ex ??= await pool.get(featureSettings(c, img));
    const p = (await ex.extract(img)).patches;
    if (!all.length) all = new Float32Array(paths.length * p.length);
    all.set(p, i * p.length);
  }
  return { ex: ex!, all };
}
