/**
 * `hiercore-edge calibrate` with a recipe (or the flags that make one): pick the images (folder, or
 * frames grabbed from the station's camera), hold some out, build, validate, write the bundle and its
 * self-contained HTML report.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import sharp from 'sharp';
import { listImagesRecursive } from '../eval/dataset.ts';
import { readImage } from '../features/image.ts';
import { FrameSelector } from '../service/calibration-capture.ts';
import { splitHoldout } from '../service/calibration-run.ts';
import { validateOutcome } from '../service/calibration-validate.ts';
import { validationHtml } from '../service/calibration-report.ts';
import type { EngineConfig } from '../config.ts';
import type { ProgressFn } from '../score/patchcore.ts';
import { buildAndValidate, type BuildOutcome } from './build-run.ts';
import { esc, reportPage } from './report-html.ts';
import { spread } from './report-data.ts';
import { RecipeError, type Recipe } from './recipe.ts';
import type { Validation } from '../service/calibration-validate.ts';

/** Same rules as the daemon's capture (calibration-run.ts). */
const DUPLICATE_DIFF = 0.5;
const BLANK_STD = 3;

export interface CliRun {
  recipe: Recipe;
  /** the recipe file, for the report */
  recipeFile?: string;
  config: EngineConfig;
  out: string;
  report: string;
  /** the daemon's site config (camera source) */
  siteConfig?: string;
  progress?: ProgressFn;
  log: (m: string) => void;
}

export interface CliResult {
  outcome: BuildOutcome;
  validation: Validation | null;
  skipped: { duplicate: number; blank: number };
  images: number;
}

/** The folder's images the capture rules keep: near-duplicates and blank views out, at most `images`. */
async function selectFolder(r: Recipe, root: string, log: (m: string) => void) {
  const all = listImagesRecursive(root);
  if (!all.length) throw new RecipeError(`recipe.source.folder: no PNG/JPEG/BMP images in ${root} or its subfolders`);
  if (!r.capture.skip_duplicates && !r.capture.skip_blank) return { images: spread(all, r.capture.images), skipped: { duplicate: 0, blank: 0 } };
  const sel = new FrameSelector({ policy: 'count', intervalMs: 0, duplicateDiff: r.capture.skip_duplicates ? DUPLICATE_DIFF : 0, blankStd: r.capture.skip_blank ? BLANK_STD : 0 });
  const kept: string[] = [];
  for (const p of all) if (sel.offer({ ...(await readImage(p)), capturedAt: 0 }, false).keep) kept.push(p);
  if (sel.skipped.duplicate || sel.skipped.blank) log(`${sel.skipped.duplicate} near-duplicate and ${sel.skipped.blank} blank image(s) skipped`);
  return { images: spread(kept, r.capture.images), skipped: { ...sel.skipped } };
}

/** Frames from the station's configured camera (GStreamer or a folder source), as PNGs in `dir`. */
async function grabCamera(r: Recipe, siteConfig: string | undefined, dir: string, log: (m: string) => void) {
  if (r.capture.policy === 'trigger') throw new RecipeError('recipe.capture.policy "trigger" needs PLC triggers: run it in the daemon (cmd/calibrate {"recipe": ...})');
  const { loadDaemonConfig } = await import('../service/config.ts');
  const { PROJECT_ROOT } = await import('../config.ts');
  const s = loadDaemonConfig({ siteFile: siteConfig, defaultSite: join(PROJECT_ROOT, 'config', 'site.json') }).config.source;
  let source: import('../capture/types.ts').FrameSource;
  try {
    if (s.kind === 'folder' || s.kind === 'file') {
      const { FolderSource } = await import('../capture/folder-source.ts');
      source = new FolderSource({ path: s.path, fps: s.fps, loop: false });
    } else {
      const { GstSource } = await import('../capture/gst-source.ts');
      source = new GstSource(s as import('../capture/pipelines.ts').SourceConfig);
    }
  } catch (e) {
    throw new RecipeError(`recipe.source "camera": ${(e as Error).message}. If the daemon runs this camera, calibrate there: cmd/calibrate {"recipe": ...}`);
  }
  mkdirSync(dir, { recursive: true });
  const sel = new FrameSelector({
    policy: r.capture.policy,
    intervalMs: r.capture.interval_s * 1000,
    duplicateDiff: r.capture.skip_duplicates ? DUPLICATE_DIFF : 0,
    blankStd: r.capture.skip_blank ? BLANK_STD : 0,
  });
  const images: string[] = [];
  const writes: Promise<unknown>[] = [];
  log(`capturing ${r.capture.images} frames from ${source.description} (${r.capture.policy})`);
  await new Promise<void>((done, fail) => {
    const timer = setTimeout(() => fail(new RecipeError(`camera: ${images.length} of ${r.capture.images} frames within 900 s`)), 900_000);
    source.start({
      frame: (f) => {
        if (images.length >= r.capture.images || !sel.offer(f, false).keep) return;
        const p = join(dir, `${String(images.length).padStart(4, '0')}.png`);
        images.push(p);
        writes.push(
          sharp(Buffer.from(f.data), { raw: { width: f.width, height: f.height, channels: 3 } })
            .png({ compressionLevel: 1 })
            .toFile(p),
        );
        if (images.length >= r.capture.images) {
          clearTimeout(timer);
          done();
        }
      },
      state: (st, detail) => {
        if (st === 'ended' && images.length < r.capture.images) {
          clearTimeout(timer);
          fail(new RecipeError(`camera source ended after ${images.length} of ${r.capture.images} frames: ${detail}`));
        }
      },
    });
  }).finally(() => source.stop());
  await Promise.all(writes);
  return { images, skipped: { ...sel.skipped } };
}

export async function runCliCalibration(o: CliRun): Promise<CliResult> {
  const r = o.recipe;
  const picked = r.source.kind === 'folder' ? await selectFolder(r, r.source.path, o.log) : await grabCamera(r, o.siteConfig, `${o.out}.frames`, o.log);
  const { train, holdout } = r.validation.holdout > 0 ? splitHoldout(picked.images, r.validation.holdout) : { train: picked.images, holdout: [] };
  let labels: string[] | undefined;
  if (r.labels === 'folders') {
    const root = r.source.kind === 'folder' ? r.source.path : '';
    labels = train.map((p) => relative(root, p).split(sep)[0]);
    if (labels.some((l, i) => l === relative(root, train[i]))) throw new RecipeError(`recipe.labels "folders" needs one subfolder per product under ${root}; found images directly in it`);
  }
  const defects = r.defects ? listImagesRecursive(r.defects) : undefined;
  if (r.defects && !defects?.length) throw new RecipeError(`recipe.defects: no PNG/JPEG/BMP images in ${r.defects}`);
  o.log(`calibrating from ${train.length} good images${holdout.length ? ` (${holdout.length} more held out to validate)` : ''}${defects ? ` and ${defects.length} defect images` : ''}`);
  mkdirSync(dirname(resolve(o.out)), { recursive: true });
  const { outcome } = await buildAndValidate(
    { images: train, holdout, labels, defects, engineConfig: '', backbone: resolve(o.config.backbone), threads: o.config.runtime.threads ?? 0, bundleOut: resolve(o.out) },
    o.config,
    o.progress,
    o.log,
  );
  const validation = holdout.length ? validateOutcome(outcome, r.validation.max_frr) : null;
  mkdirSync(dirname(resolve(o.report)), { recursive: true });
  writeFileSync(o.report, cliReport(o, outcome, validation, picked.skipped, picked.images.length));
  return { outcome, validation, skipped: picked.skipped, images: picked.images.length };
}

function cliReport(o: CliRun, outcome: BuildOutcome, v: Validation | null, skipped: { duplicate: number; blank: number }, picked: number): string {
  const r = o.recipe;
  const src = r.source.kind === 'folder' ? `folder ${esc(r.source.path)}` : 'the station camera';
  const lead = `<p>Bundle ${esc(relative(dirname(resolve(o.report)), resolve(o.out)) || o.out)} from ${src}, ${esc(new Date().toISOString())}${o.recipeFile ? `, recipe ${esc(o.recipeFile)}` : ''}.
${picked} images picked (${skipped.duplicate} near-duplicates and ${skipped.blank} blank views skipped).</p>
${v ? validationHtml(outcome, v) : `<p>Bundle ${esc(outcome.bundle_id)}, built in ${outcome.duration_s} s; no images held out (recipe.validation.holdout 0), so no validation on unseen images.</p>`}`;
  return reportPage('Calibration report', lead, outcome.report, `<h2>Recipe</h2><pre>${esc(JSON.stringify(r, null, 1))}</pre>`);
}
