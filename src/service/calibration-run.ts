/**
 * One on-site calibration run (`cmd/calibrate`): capture nominal frames from the daemon's own frame
 * stream while inspection goes on, build the bundle in a niced child process, validate it on the
 * frames it never saw, write the report, and hand the bundle back to the daemon to file and (when it
 * passed) activate. Everything lands in state_dir/calibration/runs/<run_id>/: recipe.json, images/,
 * log.txt, report.html, bundle.hcebundle (until the daemon moves it into the bundle folder).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { setPriority } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import type { CalibrationProgress, CalibrationStage } from '../web/station-control.ts';
import type { ChildMessage, ChildOutcome, ChildRequest } from '../calibrate/child-entry.ts';
import { FrameSelector } from './calibration-capture.ts';
import { validateOutcome, type Validation } from './calibration-validate.ts';
import { calibrationReport } from './calibration-report.ts';
import { engineOverrides, parseRecipe, RecipeError, type Recipe } from '../calibrate/recipe.ts';
import { listImagesRecursive } from '../eval/dataset.ts';
import type { Increment } from '../calibrate/build-run.ts';
import { PRODUCT_NAME } from '../calibrate/incremental.ts';

export { RecipeError, type Recipe };

export interface RunSettings {
  /** the whole recipe: capture, bank, threshold and validation policy (validation.max_frr) */
  recipe: Recipe;
  threads: number;
  nice: number;
  captureTimeoutMs: number;
  engineConfig: string;
  backbone: string;
  station: string;
  /** change one product of the active bundle instead of calibrating all of them */
  increment?: Increment;
}

export interface RunHooks {
  progress(p: CalibrationProgress): void;
  log(level: 'info' | 'warn' | 'error', msg: string): void;
  /** files the bundle as a new version and activates it when `validated`; returns the version */
  finish(bundleFile: string, validated: boolean, run: { runId: string; report: string; problem?: string }): Promise<{ version: string; activated: boolean }>;
  /**
   * The bundle an increment changes: the one active when the build starts (an activate or rollback
   * during the capture moves it); throws when the change no longer fits it.
   */
  incrementBase?(inc: Increment): string;
}

const RUN_ID = /^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{4}$/;
/**
 * Thumbnail mean difference below which a frame repeats the last kept one: the same synthetic part
 * with +-4 grey levels of sensor noise differs by 0.20, two different synthetic parts by 0.77-4.35
 * (scratch/helperE/dup.ts).
 */
const DUPLICATE_DIFF = 0.5;
/** thumbnail contrast below which the view is blank (lens cap, lights off) */
const BLANK_STD = 3;
/** progress within a stage is published at most this often (stage changes at once) */
const PROGRESS_MS = 500;

export function isRunId(v: unknown): v is string {
  return typeof v === 'string' && RUN_ID.test(v);
}

/**
 * The station's recipe with the overrides of one request (src/calibrate/recipe.ts: the same fields
 * and checks as `calibrate --recipe`). The daemon captures from its camera: a folder source is refused.
 */
export function recipeFrom(base: Recipe, over: Record<string, unknown> | undefined): Recipe {
  try {
    const r = parseRecipe(over, base);
    if (r.source.kind !== 'camera') throw new RecipeError('the daemon calibrates from its camera (source "camera"); calibrate a folder with "hiercore-edge calibrate --recipe"');
    // checked now, not after the capture
    if (r.defects && !listImagesRecursive(r.defects).length) throw new RecipeError(`recipe.defects: no PNG/JPEG/BMP images in ${r.defects} on the station`);
    return r;
  } catch (e) {
    throw new RecipeError(`calibrate: ${(e as Error).message}`);
  }
}

/**
 * cmd/calibrate's `add_product` ("name": the frames captured are a new product, appended to the
 * active bundle) or `add_images` ("cluster": the frames are approved good parts of that cluster,
 * whose bank and threshold alone are rebuilt); neither: a full calibration.
 */
export function incrementFrom(body: Record<string, unknown>): Increment | undefined {
  const { add_product: product, add_images: cluster } = body;
  if (product !== undefined && cluster !== undefined) throw new RecipeError('calibrate: add_product and add_images in one run; send one change at a time');
  if (product !== undefined) {
    if (typeof product !== 'string' || !PRODUCT_NAME.test(product))
      throw new RecipeError(`calibrate: add_product must be a product name (letters, digits, _ . -, at most 64), got ${JSON.stringify(product)?.slice(0, 80)}`);
    return { kind: 'product', name: product };
  }
  if (cluster !== undefined) {
    if (typeof cluster !== 'string' || !PRODUCT_NAME.test(cluster))
      throw new RecipeError(`calibrate: add_images must name a cluster of the active bundle, got ${JSON.stringify(cluster)?.slice(0, 80)}`);
    return { kind: 'images', cluster };
  }
  return undefined;
}

/** Every 1/holdout-th frame, spread over the capture, is held out. */
export function splitHoldout<T>(items: T[], fraction: number): { train: T[]; holdout: T[] } {
  const train: T[] = [];
  const holdout: T[] = [];
  items.forEach((x, i) => (Math.floor((i + 1) * fraction) > Math.floor(i * fraction) ? holdout : train).push(x));
  return { train, holdout };
}

/** calibrate()'s stage names ("[cluster-0] fold 2/4 coreset", ...) to the operator's stages. */
function stageOf(s: string): CalibrationStage {
  if (s === 'validate' || s.startsWith('defects scored')) return 'validate';
  if (s === 'report') return 'report';
  if (s.includes('clustering')) return 'clustering';
  if (s.includes('held-out') || s.includes('fold')) return 'held-out';
  if (s.includes('bank') || s.includes('features')) return 'bank';
  return 'embed';
}

function describeIncrement(inc: Increment | undefined): string {
  if (!inc) return '';
  return inc.kind === 'product' ? ` of the new product ${inc.name}` : ` to add to ${inc.cluster}`;
}

function newRunId(now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${stamp}-${Math.floor(Math.random() * 0x10000)
    .toString(16)
    .padStart(4, '0')}`;
}

export class CalibrationRun {
  readonly runId = newRunId();
  readonly dir: string;
  private readonly images: string[] = [];
  private readonly selector: FrameSelector;
  private writes: Promise<unknown>[] = [];
  private child: ChildProcess | null = null;
  private stopped = false;
  private captureTimer: NodeJS.Timeout | null = null;
  private stageStart = Date.now();
  private lastPublished = 0;
  private captureDone!: () => void;
  private readonly captured = new Promise<void>((r) => (this.captureDone = r));
  /** resolves when the run has ended, whatever the outcome */
  readonly done: Promise<void>;
  progress: CalibrationProgress;

  constructor(
    root: string,
    private readonly s: RunSettings,
    private readonly hooks: RunHooks,
  ) {
    this.dir = join(root, this.runId);
    mkdirSync(join(this.dir, 'images'), { recursive: true });
    writeFileSync(join(this.dir, 'recipe.json'), `${JSON.stringify({ ...s.recipe, engine_config: s.engineConfig || null, increment: s.increment ?? null }, null, 1)}\n`);
    const cap = s.recipe.capture;
    this.selector = new FrameSelector({
      policy: cap.policy,
      intervalMs: cap.interval_s * 1000,
      // 0 turns a check off (no difference or contrast is below 0)
      duplicateDiff: cap.skip_duplicates ? DUPLICATE_DIFF : 0,
      blankStd: cap.skip_blank ? BLANK_STD : 0,
    });
    this.progress = {
      run_id: this.runId,
      stage: 'capture',
      detail: `capturing ${cap.images} nominal frames (${cap.policy})${describeIncrement(s.increment)}`,
      done: 0,
      total: cap.images,
      eta_s: null,
      started_at: new Date().toISOString(),
    };
    this.note(`run ${this.runId}: ${JSON.stringify(s.recipe)}`);
    this.captureTimer = setTimeout(() => this.fail(`capture: ${this.images.length} of ${cap.images} frames within ${s.captureTimeoutMs / 1000} s (calibration.capture_timeout_s)`), s.captureTimeoutMs);
    this.captureTimer.unref();
    this.done = this.run().catch((e: Error) => this.fail(e.message));
    this.publish(true);
  }

  get capturing(): boolean {
    return this.progress.stage === 'capture' && !this.stopped;
  }

  get finished(): boolean {
    return ['done', 'failed', 'stopped'].includes(this.progress.stage);
  }

  /** A live frame: kept (copied, written as PNG in the background) when the capture policy wants it. */
  offer(f: { width: number; height: number; data: Uint8Array; capturedAt: number }, triggered: boolean): void {
    const want = this.s.recipe.capture.images;
    if (!this.capturing || this.images.length >= want) return;
    const d = this.selector.offer(f, triggered);
    if (!d.keep) {
      if (d.why === 'blank' && this.selector.skipped.blank % 25 === 1) this.note(`blank or blocked view skipped (${this.selector.skipped.blank} so far): check the lens and the light`, 'warn');
      return;
    }
    const path = join(this.dir, 'images', `${String(this.images.length).padStart(4, '0')}.png`);
    this.images.push(path);
    // The frame buffer goes on to inference (and may be transferred): write a copy.
    const copy = Buffer.from(f.data);
    this.writes.push(
      sharp(copy, { raw: { width: f.width, height: f.height, channels: 3 } })
        .png({ compressionLevel: 1 })
        .toFile(path),
    );
    this.update('capture', this.images.length, want, `captured ${this.images.length} of ${want}`);
    if (this.images.length >= want) this.captureDone();
  }

  async stop(): Promise<void> {
    if (this.finished) return;
    this.stopped = true;
    this.child?.kill('SIGKILL');
    this.end('stopped', 'stopped by command', { version: null, activated: false, report: null });
    this.captureDone();
    await this.done;
  }

  private async run(): Promise<void> {
    await this.captured;
    if (this.captureTimer) clearTimeout(this.captureTimer);
    if (this.finished) return;
    await Promise.all(this.writes);
    const sk = this.selector.skipped;
    this.note(`captured ${this.images.length} frames (${sk.duplicate} near-duplicates, ${sk.blank} blank views skipped)`);
    const r = this.s.recipe;
    const { train, holdout } = splitHoldout(this.images, r.validation.holdout);
    const bundleOut = join(this.dir, 'bundle.hcebundle');
    const defects = r.defects ? listImagesRecursive(r.defects) : undefined;
    if (r.defects && !defects?.length) throw new Error(`recipe.defects: no PNG/JPEG/BMP images in ${r.defects}`);
    const outcome = await this.build({
      type: 'start',
      images: train,
      holdout,
      defects,
      engineConfig: this.s.engineConfig,
      overrides: engineOverrides(r),
      backbone: this.s.backbone,
      threads: this.s.threads,
      bundleOut,
      ...(this.s.increment ? { increment: { ...this.s.increment, base: this.baseOf(this.s.increment) } } : {}),
    });
    if (this.finished) return;
    const validation = validateOutcome(outcome, r.validation.max_frr);
    this.note(validation.passed ? 'validation passed' : `validation failed: ${validation.problems.join('; ')}`, validation.passed ? 'info' : 'warn');
    this.update('report', 0, 1, 'writing the report');
    const report = this.writeReport(outcome, validation);
    this.update('activate', 0, 1, validation.passed ? 'activating the new bundle' : 'keeping the bundle (not activated)');
    const problem = validation.passed ? undefined : validation.problems.join('; ');
    const { version, activated } = await this.hooks.finish(bundleOut, validation.passed, { runId: this.runId, report, ...(problem ? { problem } : {}) });
    this.note(`bundle ${outcome.bundle_id} filed as ${version}${activated ? ', active' : ', not activated'}`);
    this.writeReport(outcome, validation);
    if (validation.passed) this.end('done', `${version} active`, { version, activated, report });
    else this.end('failed', `validation failed: ${problem}`, { version, activated, report, error: problem });
  }

  private baseOf(inc: Increment): string {
    if (!this.hooks.incrementBase) throw new Error('this station cannot change one product of its bundle');
    const base = this.hooks.incrementBase(inc);
    this.note(`changing ${inc.kind === 'product' ? `bundle ${base}: new product ${inc.name}` : `cluster ${inc.cluster} of ${base}`}`);
    return base;
  }

  /** Forks the child, relays its progress; resolves with its outcome, rejects on failure or exit. */
  private build(req: ChildRequest): Promise<ChildOutcome> {
    const boot = fileURLToPath(new URL('../calibrate/child-boot.mjs', import.meta.url));
    const child = fork(boot, [], { execArgv: [], stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env: { ...process.env, UV_THREADPOOL_SIZE: '2', OMP_NUM_THREADS: String(Math.max(1, this.s.threads)) } });
    this.child = child;
    try {
      if (child.pid) setPriority(child.pid, Math.min(19, this.s.nice));
    } catch (e) {
      this.note(`could not lower the calibration process priority: ${(e as Error).message}`, 'warn');
    }
    const relay = (d: Buffer) => this.note(d.toString().trimEnd(), 'info', false);
    child.stdout?.on('data', relay);
    child.stderr?.on('data', relay);
    this.update('embed', 0, req.images.length, `building the bundle from ${req.images.length} frames (${req.holdout.length} held out)`);
    return new Promise((resolve, reject) => {
      let settled = false;
      child.on('message', (m: ChildMessage) => {
        if (m.type === 'progress') this.update(stageOf(m.stage), m.done, m.total, m.stage);
        else if (m.type === 'log') this.note(m.msg, 'info', false);
        else if (m.type === 'done') {
          settled = true;
          resolve(m.outcome);
        } else if (m.type === 'failed') {
          settled = true;
          reject(new Error(m.error));
        }
      });
      child.on('exit', (code, signal) => {
        this.child = null;
        if (!settled) reject(new Error(this.stopped ? 'stopped' : `calibration process ended (${signal ?? `code ${code}`}) before it finished`));
      });
      child.send(req);
    });
  }

  private writeReport(outcome: ChildOutcome | null, validation: Validation | null, error?: string): string {
    const path = join(this.dir, 'report.html');
    const log = existsSync(join(this.dir, 'log.txt')) ? readFileSync(join(this.dir, 'log.txt'), 'utf8').slice(-20_000) : '';
    writeFileSync(
      path,
      calibrationReport({
        runId: this.runId,
        station: this.s.station,
        startedAt: this.progress.started_at,
        captured: this.images.length,
        skipped: { ...this.selector.skipped },
        outcome,
        validation,
        error,
        log,
      }),
    );
    return path;
  }

  private fail(error: string): void {
    if (this.finished) return;
    this.child?.kill('SIGKILL');
    this.note(`failed: ${error}`, 'error');
    let report: string | null = null;
    try {
      report = this.writeReport(null, null, error);
    } catch {}
    this.end('failed', error, { version: null, activated: false, report, error });
    this.captureDone();
  }

  private end(stage: 'done' | 'failed' | 'stopped', detail: string, result: NonNullable<CalibrationProgress['result']>): void {
    if (this.finished) return;
    if (this.captureTimer) clearTimeout(this.captureTimer);
    if (stage === 'stopped') this.note('stopped by command: the run folder and its log are kept');
    this.progress = { ...this.progress, stage, detail, eta_s: 0, result };
    this.publish(true);
  }

  private update(stage: CalibrationStage, done: number, total: number, detail: string): void {
    if (this.finished) return;
    const changed = stage !== this.progress.stage;
    if (changed) this.stageStart = Date.now();
    const elapsed = (Date.now() - this.stageStart) / 1000;
    const eta = done > 0 && total > done ? Number(((elapsed / done) * (total - done)).toFixed(1)) : done >= total ? 0 : null;
    this.progress = { ...this.progress, stage, detail, done, total, eta_s: eta };
    this.publish(changed || done === total);
  }

  private publish(force: boolean): void {
    if (!force && Date.now() - this.lastPublished < PROGRESS_MS) return;
    this.lastPublished = Date.now();
    this.hooks.progress({ ...this.progress });
  }

  private note(msg: string, level: 'info' | 'warn' | 'error' = 'info', toJournal = true): void {
    try {
      appendFileSync(join(this.dir, 'log.txt'), `${new Date().toISOString()} ${msg}\n`);
    } catch {}
    if (toJournal) this.hooks.log(level, `calibration ${this.runId}: ${msg}`);
  }
}
