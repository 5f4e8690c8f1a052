/**
 * Calibration recipes: what to calibrate from and by which rules, one JSON(C) object shared by
 * `hiercore-edge calibrate --recipe <file>` and the daemon's `cmd/calibrate {"recipe": {...}}`.
 * Every field is optional over a base recipe (the station's config, or the CLI's defaults); every
 * value is checked, and an error names the field. See calibration/recipe.example.jsonc.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { HELD_OUT_METHODS, type HeldOutMethod, isInputSize } from '../config.ts';

export type CapturePolicy = 'count' | 'interval' | 'trigger';
export type HeldOut = HeldOutMethod;

export interface Recipe {
  /** a folder of good images (subfolders searched), or the daemon's camera */
  source: { kind: 'folder'; path: string } | { kind: 'camera' };
  capture: {
    /** images to calibrate from (a folder: at most this many, spread over the sorted list) */
    images: number;
    policy: CapturePolicy;
    interval_s: number;
    skip_duplicates: boolean;
    skip_blank: boolean;
  };
  /** cluster = find the products (FINCH); folders = one product per first-level subfolder */
  labels: 'cluster' | 'folders';
  /** null = the engine config's value */
  bank: { dim: number | null; coreset_ratio: number | null; input_size: string | null };
  threshold: { frr_target: number | null; held_out: HeldOut | null; folds: number | null; use: 'frr' | 'f1' | null };
  /** folder of labelled defect images: scored in the report (and the F1 threshold) */
  defects: string | null;
  validation: { holdout: number; max_frr: number };
}

export class RecipeError extends Error {}

export const DEFAULT_RECIPE: Recipe = {
  source: { kind: 'camera' },
  capture: { images: 60, policy: 'count', interval_s: 1, skip_duplicates: true, skip_blank: true },
  labels: 'cluster',
  bank: { dim: null, coreset_ratio: null, input_size: null },
  threshold: { frr_target: null, held_out: null, folds: null, use: null },
  defects: null,
  validation: { holdout: 0.2, max_frr: 0.05 },
};

/** JSON with // and /* *\/ comments and trailing commas (strings are left alone). */
export function stripJsonComments(text: string): string {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else if (c === '/' && text[i + 1] === '/') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (c === '/' && text[i + 1] === '*') {
      const end = text.indexOf('*/', i + 2);
      if (end < 0) throw new RecipeError('unterminated /* comment');
      // keep line breaks so JSON.parse positions still point at the right line
      out += text.slice(i, end + 2).replace(/[^\n]/g, ' ');
      i = end + 2;
    } else {
      out += c;
      i++;
    }
  }
  return out.replace(/,(\s*[}\]])/g, '$1');
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

function fields(v: unknown, where: string, allowed: string[]): Obj {
  if (!isObj(v)) throw new RecipeError(`${where} must be a JSON object`);
  const prefix = where === 'recipe' ? '' : `${where.slice('recipe.'.length)}.`;
  for (const k of Object.keys(v)) if (!allowed.includes(k)) throw new RecipeError(`unknown recipe field "${prefix}${k.slice(0, 40)}" (${allowed.join(', ')})`);
  return v;
}

function num(v: unknown, where: string, ok: (n: number) => boolean, range: string, integer = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || !ok(v)) throw new RecipeError(`${where} must be ${integer ? 'an integer' : 'a number'} ${range}`);
  return v;
}

function oneOf<T extends string>(v: unknown, where: string, values: readonly T[]): T {
  if (!values.includes(v as T)) throw new RecipeError(`${where} must be ${values.join(', ')}`);
  return v as T;
}

function bool(v: unknown, where: string): boolean {
  if (typeof v !== 'boolean') throw new RecipeError(`${where} must be true or false`);
  return v;
}

function path(v: unknown, where: string, base: string): string {
  if (typeof v !== 'string' || !v.trim()) throw new RecipeError(`${where} must be a folder path`);
  return resolve(base, v);
}

const images = (v: unknown, w: string) => num(v, w, (n) => n >= 4 && n <= 5000, '4-5000', true);
const intervalS = (v: unknown, w: string) => num(v, w, (n) => n >= 0 && n <= 3600, '0-3600');
const holdout = (v: unknown, w: string) => num(v, w, (n) => n >= 0 && n < 0.9, '>= 0 and < 0.9 (a fraction)');
const rate = (v: unknown, w: string) => num(v, w, (n) => n > 0 && n < 1, '> 0 and < 1 (a fraction)');
const inputSize = (v: unknown): string => {
  if (!isInputSize(v)) throw new RecipeError(`recipe.bank.input_size = ${JSON.stringify(v)?.slice(0, 40)} is invalid: "auto", "auto:S" (S x S pixels, 64-1024) or WIDTHxHEIGHT`);
  return v as string;
};
const orNull = <T>(v: unknown, f: (v: unknown) => T): T | null => (v === null ? null : f(v));

/**
 * `over` laid over `base`, every value checked. `dir`: relative paths are relative to it (the recipe
 * file's folder). The daemon's older flat fields (images, policy, interval_s, holdout) still work.
 */
export function parseRecipe(over: unknown, base: Recipe = DEFAULT_RECIPE, dir = process.cwd()): Recipe {
  const r: Recipe = structuredClone(base);
  if (over === undefined) return r;
  const o = fields(over, 'recipe', ['source', 'capture', 'labels', 'bank', 'threshold', 'defects', 'validation', 'images', 'policy', 'interval_s', 'holdout']);
  if (o.source !== undefined) {
    if (o.source === 'camera') r.source = { kind: 'camera' };
    else {
      const s = fields(o.source, 'recipe.source', ['folder']);
      r.source = { kind: 'folder', path: path(s.folder, 'recipe.source.folder', dir) };
    }
  }
  if (o.capture !== undefined) {
    const c = fields(o.capture, 'recipe.capture', ['images', 'policy', 'interval_s', 'skip_duplicates', 'skip_blank']);
    if (c.images !== undefined) r.capture.images = images(c.images, 'recipe.capture.images');
    if (c.policy !== undefined) r.capture.policy = oneOf(c.policy, 'recipe.capture.policy', ['count', 'interval', 'trigger'] as const);
    if (c.interval_s !== undefined) r.capture.interval_s = intervalS(c.interval_s, 'recipe.capture.interval_s');
    if (c.skip_duplicates !== undefined) r.capture.skip_duplicates = bool(c.skip_duplicates, 'recipe.capture.skip_duplicates');
    if (c.skip_blank !== undefined) r.capture.skip_blank = bool(c.skip_blank, 'recipe.capture.skip_blank');
  }
  // The daemon's first recipe fields, kept as shorthands.
  if (o.images !== undefined) r.capture.images = images(o.images, 'recipe.images');
  if (o.policy !== undefined) r.capture.policy = oneOf(o.policy, 'recipe.policy', ['count', 'interval', 'trigger'] as const);
  if (o.interval_s !== undefined) r.capture.interval_s = intervalS(o.interval_s, 'recipe.interval_s');
  if (o.holdout !== undefined) r.validation.holdout = holdout(o.holdout, 'recipe.holdout');
  if (o.labels !== undefined) r.labels = oneOf(o.labels, 'recipe.labels', ['cluster', 'folders'] as const);
  if (o.bank !== undefined) {
    const b = fields(o.bank, 'recipe.bank', ['dim', 'coreset_ratio', 'input_size']);
    if (b.dim !== undefined) r.bank.dim = orNull(b.dim, (v) => num(v, 'recipe.bank.dim', (n) => n >= 8 && n <= 4096, '8-4096', true));
    if (b.input_size !== undefined) r.bank.input_size = orNull(b.input_size, inputSize);
    if (b.coreset_ratio !== undefined) r.bank.coreset_ratio = orNull(b.coreset_ratio, (v) => num(v, 'recipe.bank.coreset_ratio', (n) => n > 0 && n <= 1, '> 0 and <= 1'));
  }
  if (o.threshold !== undefined) {
    const t = fields(o.threshold, 'recipe.threshold', ['frr_target', 'held_out', 'folds', 'use']);
    if (t.frr_target !== undefined) r.threshold.frr_target = orNull(t.frr_target, (v) => rate(v, 'recipe.threshold.frr_target'));
    if (t.held_out !== undefined) r.threshold.held_out = orNull(t.held_out, (v) => oneOf(v, 'recipe.threshold.held_out', HELD_OUT_METHODS));
    if (t.folds !== undefined) r.threshold.folds = orNull(t.folds, (v) => num(v, 'recipe.threshold.folds', (n) => n >= 2 && n <= 20, '2-20', true));
    if (t.use !== undefined) r.threshold.use = orNull(t.use, (v) => oneOf(v, 'recipe.threshold.use', ['frr', 'f1'] as const));
  }
  if (o.defects !== undefined) r.defects = orNull(o.defects, (v) => path(v, 'recipe.defects', dir));
  if (o.validation !== undefined) {
    const v = fields(o.validation, 'recipe.validation', ['holdout', 'max_frr']);
    if (v.holdout !== undefined) r.validation.holdout = holdout(v.holdout, 'recipe.validation.holdout');
    if (v.max_frr !== undefined) r.validation.max_frr = rate(v.max_frr, 'recipe.validation.max_frr');
  }
  if (r.threshold.use === 'f1' && !r.defects) throw new RecipeError('recipe.threshold.use "f1" needs recipe.defects (a folder of labelled defect images)');
  if (r.source.kind === 'camera' && r.validation.holdout === 0)
    throw new RecipeError('recipe.validation.holdout must be > 0 for the camera: a bundle built on site is validated on frames it never saw');
  if (r.source.kind === 'camera' && r.labels === 'folders') throw new RecipeError('recipe.labels "folders" needs a folder source (camera frames have no folder names)');
  return r;
}

/** A recipe file (JSON or JSONC); relative paths in it are relative to its folder. */
export function readRecipeFile(file: string, base: Recipe = DEFAULT_RECIPE): Recipe {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new RecipeError(`recipe ${file}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(stripJsonComments(text));
  } catch (e) {
    throw new RecipeError(`recipe ${file}: not valid JSON(C): ${(e as Error).message}`);
  }
  try {
    return parseRecipe(json, base, dirname(resolve(file)));
  } catch (e) {
    throw new RecipeError(`recipe ${file}: ${(e as Error).message}`);
  }
}

/** The recipe's engine settings as overrides for loadEngineConfig (only what the recipe sets). */
export function engineOverrides(r: Recipe): Record<string, Record<string, unknown>> {
  const o: Record<string, Record<string, unknown>> = { features: {}, coreset: {}, calibration: {} };
  if (r.bank.dim !== null) o.features.dim = r.bank.dim;
  if (r.bank.coreset_ratio !== null) o.coreset.ratio = r.bank.coreset_ratio;
  if (r.bank.input_size !== null) o.features.input_size = r.bank.input_size;
  const t = r.threshold;
  if (t.frr_target !== null) o.calibration.frr_target = t.frr_target;
  if (t.held_out !== null) o.calibration.held_out = t.held_out;
  if (t.folds !== null) o.calibration.folds = t.folds;
  if (t.use !== null) o.calibration.threshold = t.use;
  return o;
}

/** The daemon's default recipe from its calibration.* settings (camera source). */
export function stationRecipe(k: { images: number; policy: CapturePolicy; interval_s: number; holdout: number; max_frr: number }): Recipe {
  const r = structuredClone(DEFAULT_RECIPE);
  r.capture = { ...r.capture, images: k.images, policy: k.policy, interval_s: k.interval_s };
  r.validation = { holdout: k.holdout, max_frr: k.max_frr };
  return r;
}
