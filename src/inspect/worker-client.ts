/** Main-thread handle on the inference worker: one frame in flight, promise per request. */
import { Worker } from 'node:worker_threads';
import type { BundleSummary, FromWorker, WorkerInit } from './protocol.ts';

type Result = Extract<FromWorker, { type: 'result' }>;

export class InferenceWorker {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  private exited = false;
  /** when the worker last answered anything (ms since epoch): the supervisor's liveness signal */
  lastAnswer = Date.now();
  /** called once when the thread ends, whatever the reason */
  onExit: (code: number) => void = () => {};
  lastError = '';

  private constructor(
    private readonly worker: Worker,
    public bundle: BundleSummary,
  ) {
    worker.on('message', (m: FromWorker) => {
      this.lastAnswer = Date.now();
      if (m.type === 'result' || m.type === 'failed' || m.type === 'reloaded' || m.type === 'pong') {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (!p) return;
        if (m.type === 'failed') p.reject(new Error(m.error));
        else p.resolve(m);
      }
    });
    // An uncaught error inside the thread must never become an uncaught error of the daemon.
    worker.on('error', (e) => (this.lastError = e.message));
    worker.on('exit', (code) => {
      this.exited = true;
      for (const p of this.pending.values()) p.reject(new Error(`inference worker exited (code ${code})`));
      this.pending.clear();
      this.onExit(code);
    });
  }

  get isRunning(): boolean {
    return !this.exited;
  }
  /** requests sent and not yet answered */
  get inFlight(): number {
    return this.pending.size;
  }

  /** `script` replaces the real worker in tests (e.g. one that hangs). */
  /** `timeoutMs` (0 = none): a start-up that takes longer is abandoned and the thread terminated. */
  static start(init: WorkerInit, script: URL = new URL('./worker-boot.mjs', import.meta.url), timeoutMs = 0): Promise<InferenceWorker> {
    const worker = new Worker(script, { workerData: init });
    return new Promise((resolve, reject) => {
      const timer = timeoutMs
        ? setTimeout(() => {
            void worker.terminate();
            reject(new Error(`inference worker did not start within ${timeoutMs / 1000} s`));
          }, timeoutMs)
        : undefined;
      const onMsg = (m: FromWorker) => {
        clearTimeout(timer);
        if (m.type === 'ready') {
          worker.off('message', onMsg);
          resolve(new InferenceWorker(worker, m.bundle));
        } else if (m.type === 'fatal') reject(new Error(m.error));
      };
      worker.on('message', onMsg);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`inference worker exited during start-up (code ${code})`)));
    });
  }

  private request<T>(msg: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.exited) return Promise.reject(new Error('inference worker is not running'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id }, transfer);
    });
  }

  inspect(frame: { width: number; height: number; data: Uint8Array }, opts: { heatmap: boolean; image: 'always' | 'not-ok' | 'never' }): Promise<Result> {
    // Copy into a transferable buffer: the frame may be a view into a larger capture buffer.
    const data = frame.data.slice().buffer;
    return this.request<Result>({ type: 'inspect', width: frame.width, height: frame.height, data, ...opts }, [data]);
  }

  async reload(bundle: string): Promise<BundleSummary> {
    const r = await this.request<Extract<FromWorker, { type: 'reloaded' }>>({ type: 'reload', bundle });
    if (r.error || !r.bundle) throw new Error(r.error ?? 'reload failed');
    this.bundle = r.bundle;
    return r.bundle;
  }

  ping(): Promise<unknown> {
    return this.request({ type: 'ping' });
  }

  /**
   * Ends the thread without its cooperation. A thread stuck in native code only ends when that call
   * returns; resolves false if it has not ended within `waitMs`.
   */
  async kill(waitMs = 5000): Promise<boolean> {
    if (this.exited) return true;
    const gone = new Promise<boolean>((r) => this.worker.once('exit', () => r(true)));
    void this.worker.terminate().catch(() => {});
    return Promise.race([gone, new Promise<boolean>((r) => setTimeout(() => r(false), waitMs).unref())]);
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const done = new Promise((r) => this.worker.once('exit', r));
    this.worker.postMessage({ type: 'close' });
    await Promise.race([done, new Promise((r) => setTimeout(r, 5000).unref())]);
    if (!this.exited) await this.worker.terminate();
  }
}
