/** Main-thread handle on the inference worker: one frame in flight, promise per request. */
import { Worker } from 'node:worker_threads';
import type { BundleSummary, FromWorker, WorkerInit } from './protocol.ts';

type Result = Extract<FromWorker, { type: 'result' }>;

export class InferenceWorker {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  private exited = false;

  private constructor(private readonly worker: Worker, public bundle: BundleSummary) {
    worker.on('message', (m: FromWorker) => {
      if (m.type === 'result' || m.type === 'failed' || m.type === 'reloaded') {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (!p) return;
        if (m.type === 'failed') p.reject(new Error(m.error));
        else p.resolve(m);
      }
    });
    worker.on('exit', (code) => {
      this.exited = true;
      for (const p of this.pending.values()) p.reject(new Error(`inference worker exited (code ${code})`));
      this.pending.clear();
    });
  }

  static start(init: WorkerInit): Promise<InferenceWorker> {
    const worker = new Worker(new URL('./worker-boot.mjs', import.meta.url), { workerData: init });
    return new Promise((resolve, reject) => {
      const onMsg = (m: FromWorker) => {
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

  async close(): Promise<void> {
    if (this.exited) return;
    const done = new Promise((r) => this.worker.once('exit', r));
    this.worker.postMessage({ type: 'close' });
    await Promise.race([done, new Promise((r) => setTimeout(r, 5000))]);
    if (!this.exited) await this.worker.terminate();
  }
}
