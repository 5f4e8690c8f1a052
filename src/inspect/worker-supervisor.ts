/**
 * Keeps an inference worker alive and proves it: a heartbeat goes through the worker's own message
 * queue (so it waits behind a frame, exactly like real work), a worker that stops answering or dies
 * is replaced with the last good bundle, and a bundle load is time-boxed the same way. Health and
 * the systemd watchdog read `alive`, so a stuck worker is visible, restarted, and — if even that
 * fails — ends in a process restart by systemd instead of a station that looks fine and does nothing.
 */
import { InferenceWorker } from './worker-client.ts';
import type { BundleSummary, WorkerInit } from './protocol.ts';

export interface SupervisorOptions {
  heartbeatMs: number;
  /** no answer for this long (no request running longer than its own limit) = stuck */
  timeoutMs: number;
  reloadTimeoutMs: number;
  log: (level: 'info' | 'warn' | 'error', msg: string) => void;
  /** counted by the caller (metrics, stats) */
  restarted?: (why: string) => void;
  /** test seam: a replacement worker script */
  script?: URL;
}

export class WorkerSupervisor {
  private worker: InferenceWorker | null = null;
  private restarting: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private reloadingUntil = 0;
  /** a thread that would not end: only a process restart recovers from that */
  wedged = false;
  /** the bundle last loaded: still the answer while a replacement worker starts */
  private lastBundle!: BundleSummary;
  restarts = 0;

  private constructor(
    private init: WorkerInit,
    private readonly o: SupervisorOptions,
  ) {}

  static async start(init: WorkerInit, o: SupervisorOptions): Promise<WorkerSupervisor> {
    const s = new WorkerSupervisor(init, o);
    s.attach(await InferenceWorker.start(init, o.script));
    s.timer = setInterval(() => s.beat(), o.heartbeatMs);
    s.timer.unref();
    return s;
  }

  get bundle(): BundleSummary {
    return this.worker?.bundle ?? this.lastBundle;
  }

  /** Answered recently, or busy with a request that is still within its limit. */
  get alive(): boolean {
    const w = this.worker;
    if (!w?.isRunning || this.wedged) return false;
    return Date.now() - w.lastAnswer <= this.limitMs();
  }

  private limitMs(): number {
    return Date.now() < this.reloadingUntil ? this.o.reloadTimeoutMs : this.o.timeoutMs;
  }

  private current(): InferenceWorker {
    if (!this.worker) throw new Error('inference worker is restarting');
    return this.worker;
  }

  private attach(w: InferenceWorker): void {
    this.worker = w;
    this.lastBundle = w.bundle;
    w.onExit = (code) => {
      if (this.closed || this.worker !== w) return;
      void this.restart(`exited unexpectedly (code ${code}${w.lastError ? `: ${w.lastError}` : ''})`);
    };
  }

  private beat(): void {
    const w = this.worker;
    if (!w || this.restarting || this.closed) return;
    if (Date.now() - w.lastAnswer > this.limitMs()) {
      void this.restart(`no answer for ${Math.round((Date.now() - w.lastAnswer) / 1000)} s`);
      return;
    }
    // Only one ping queued at a time: a worker busy with a long frame must not pile them up.
    if (w.inFlight === 0) w.ping().catch(() => {});
  }

  /** Replace the worker with a fresh one on the bundle it had loaded last. */
  private restart(why: string): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.restarting) return this.restarting;
    this.restarting = (async () => {
      const old = this.worker;
      this.worker = null;
      this.restarts++;
      this.o.restarted?.(why);
      this.o.log('error', `inference worker ${why}: restarting it with bundle ${old?.bundle.bundle_id ?? '?'}`);
      if (old && !(await old.kill())) {
        this.wedged = true;
        this.o.log('error', 'the stuck inference thread does not end; health and the systemd watchdog now report failure so that the service is restarted');
      }
      const path = old?.bundle.path ?? this.init.bundle;
      try {
        const next = await InferenceWorker.start({ ...this.init, bundle: path }, this.o.script, Math.max(this.o.reloadTimeoutMs, 30_000));
        if (this.closed) return void (await next.close());
        this.attach(next);
        this.o.log('info', 'inference worker restarted');
      } catch (e) {
        this.o.log('error', `inference worker could not be restarted: ${(e as Error).message}`);
        this.wedged = true;
      }
    })().finally(() => (this.restarting = null));
    return this.restarting;
  }

  inspect(...args: Parameters<InferenceWorker['inspect']>): ReturnType<InferenceWorker['inspect']> {
    return this.current().inspect(...args);
  }

  /** Loads `path` in the worker; a load past reload_timeout restarts the worker on the old bundle. */
  async reload(path: string): Promise<BundleSummary> {
    const w = this.current();
    this.reloadingUntil = Date.now() + this.o.reloadTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const s = this.o.reloadTimeoutMs / 1000;
        void this.restart(`took longer than ${s} s to load ${path}`);
        reject(new Error(`loading the bundle took longer than ${s} s (reload_timeout_s): abandoned, the previous bundle stays active`));
      }, this.o.reloadTimeoutMs);
    });
    try {
      const b = await Promise.race([w.reload(path), timeout]);
      this.init = { ...this.init, bundle: path };
      this.lastBundle = b;
      return b;
    } finally {
      clearTimeout(timer);
      this.reloadingUntil = 0;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.restarting;
    await this.worker?.close();
  }
}
