/** The `calibrate` command's action: a recipe from the file and the flags, then the run. */
import { dirname, join, basename, resolve } from 'node:path';
import type { EngineConfig } from '../config.ts';
import { Progress } from '../util/progress.ts';
import { DEFAULT_RECIPE, engineOverrides, parseRecipe, readRecipeFile, RecipeError, type Recipe } from '../calibrate/recipe.ts';
import { runCliCalibration } from '../calibrate/cli-calibrate.ts';

export interface CalibrateFlags {
  images?: string;
  out: string;
  recipe?: string;
  report?: string;
  site?: string;
  knownClass?: boolean;
  defects?: string;
  threshold?: string;
  frr?: number;
  folds?: number;
  minClusterSize?: number;
  keys?: string;
}

/** Without a recipe file: every image of the folder, none skipped or held out (what calibrate always did). */
const FLAGS_BASE: Recipe = {
  ...structuredClone(DEFAULT_RECIPE),
  capture: { ...DEFAULT_RECIPE.capture, images: 5000, skip_duplicates: false, skip_blank: false },
  validation: { holdout: 0, max_frr: 0.05 },
};
/** A recipe file's base: a folder's images are all taken unless it says how many. */
const FILE_BASE: Recipe = { ...structuredClone(DEFAULT_RECIPE), capture: { ...DEFAULT_RECIPE.capture, images: 5000 } };

export function recipeOf(o: CalibrateFlags): Recipe {
  if (!o.recipe && !o.images) throw new RecipeError('calibrate needs --images <dir> or --recipe <file>');
  const over: Record<string, unknown> = {};
  if (o.images) over.source = { folder: resolve(o.images) };
  if (o.knownClass) over.labels = 'folders';
  if (o.defects) over.defects = resolve(o.defects);
  const base = o.recipe ? readRecipeFile(o.recipe, FILE_BASE) : FLAGS_BASE;
  return parseRecipe(over, base);
}

export async function calibrateCommand(o: CalibrateFlags, config: (extra: Record<string, Record<string, unknown>>) => EngineConfig): Promise<void> {
  const recipe = recipeOf(o);
  const extra = engineOverrides(recipe);
  const flags: Record<string, unknown> = {};
  if (o.threshold) flags.threshold = o.threshold;
  if (o.frr !== undefined) flags.frr_target = o.frr;
  if (o.folds !== undefined) flags.folds = o.folds;
  if (o.minClusterSize !== undefined) flags.min_cluster_size = o.minClusterSize;
  if (o.keys) flags.keys = o.keys;
  extra.calibration = { ...extra.calibration, ...flags };
  const c = config(extra);
  if (c.calibration.threshold === 'f1' && !recipe.defects) throw new Error('threshold "f1" needs labelled defect images: pass --defects <dir>');
  const report = resolve(o.report ?? join(dirname(resolve(o.out)), `${basename(o.out).replace(/\.hcebundle$/, '')}.report.html`));
  const progress = new Progress();
  const { outcome, validation } = await runCliCalibration({ recipe, recipeFile: o.recipe, config: c, out: o.out, report, siteConfig: o.site, progress: progress.update, log: (m) => progress.log(m) });
  console.log(`wrote ${o.out}: ${outcome.clusters.length} cluster(s) in ${outcome.duration_s} s; report ${report}`);
  for (const cl of outcome.clusters) console.log(`  ${cl.name}: ${cl.size} images, threshold ${cl.threshold.toFixed(4)}, routing limit ${cl.routing_limit.toFixed(4)}`);
  for (const w of outcome.report?.warnings ?? []) console.log(`  warning: ${w.text}`);
  if (validation) {
    console.log(validation.passed ? `validation passed (held-out images, max FRR ${recipe.validation.max_frr})` : `validation FAILED: ${validation.problems.join('; ')}`);
    if (!validation.passed) process.exitCode = 2;
  }
}

export interface IncrementFlags {
  bundle: string;
  images: string;
  out: string;
  name?: string;
  cluster?: string;
}

/** `bundle add-product` / `bundle add-images`: one cluster calibrated or rebuilt, the others kept. */
export async function incrementCommand(kind: 'product' | 'images', o: IncrementFlags, config: () => EngineConfig): Promise<void> {
  const { readBundleFile, writeBundleFile } = await import('../bundle/bundle-file.ts');
  const { listImagesRecursive } = await import('../eval/dataset.ts');
  const { calibrationOptions } = await import('../calibrate/options.ts');
  const { addImages, addProduct, engineForBundle } = await import('../calibrate/incremental.ts');
  const b = readBundleFile(resolve(o.bundle));
  const images = listImagesRecursive(resolve(o.images));
  if (!images.length) throw new Error(`no PNG/JPEG/BMP images in ${o.images} or its subfolders`);
  const progress = new Progress();
  const opts = { ...calibrationOptions(engineForBundle(config(), b)), log: (m: string) => progress.log(m) };
  const r = kind === 'product' ? await addProduct(b, images, o.name!, opts, progress.update) : await addImages(b, o.cluster!, images, opts, progress.update);
  writeBundleFile(resolve(o.out), r.bundle);
  const name = kind === 'product' ? o.name! : o.cluster!;
  const c = r.bundle.header.clusters.find((x) => x.name === name)!;
  console.log(
    `wrote ${o.out} (bundle ${r.bundle.header.bundle_id}): ${name} ${kind === 'product' ? 'added' : 'rebuilt'} from ${c.members.length} images, threshold ${c.threshold.toFixed(4)}, routing limit ${c.routing_limit.toFixed(4)}; the other ${r.bundle.clusters.length - 1} cluster(s) unchanged`,
  );
  for (const w of r.warnings) console.log(`  warning: ${w}`);
}
