/**
 * Feature extractors by input size. Frames of different aspect ratios (several products on one line,
 * or "auto" input size) need one onnxruntime session per network input size. Each session holds its
 * weights and arena (tens of MB), and a line that sees many shapes would otherwise keep one per shape
 * for ever, so the pool keeps the most recently used `maxSessions` and releases the others.
 *
 * A session is released only while nothing runs on it: every extraction holds a reference for its
 * duration, and a session in use is never evicted (the pool may run over its bound while more shapes
 * than that are in flight at once, and shrinks back as they finish). What `get` hands out is a
 * handle that goes through the pool on every call, so a caller that keeps it across evictions gets
 * its session re-created instead of a released one.
 */
import { FeatureExtractor, type FeatureSettings } from './extractor.ts';
import type { RgbImage } from './image.ts';
import type { ExecutionProvider } from './session.ts';

export const DEFAULT_MAX_SESSIONS = 6;

export interface ExtractorPoolOptions {
  /** sessions kept loaded (least recently used released first); at least 1 */
  maxSessions?: number;
}

interface Slot {
  settings: FeatureSettings;
  ready: Promise<FeatureExtractor>;
  users: number;
  /** out of the map: release as soon as the last user is done */
  retired: boolean;
}

export class ExtractorPool {
  private readonly slots = new Map<string, Slot>(); // insertion order = least recently used first
  private readonly handles = new Map<string, FeatureExtractor>();
  private readonly maxSessions: number;
  private created = 0;
  private released = 0;

  constructor(
    readonly backboneDir: string,
    private readonly runtime: { provider?: ExecutionProvider; threads?: number } = {},
    opts: ExtractorPoolOptions = {},
  ) {
    this.maxSessions = Math.max(1, Math.floor(opts.maxSessions ?? DEFAULT_MAX_SESSIONS));
  }

  static key(s: FeatureSettings): string {
    return `${s.width}x${s.height}/${s.fit}/${s.preDim}/${s.dim}/${(s.layers ?? []).join(',')}`;
  }

  /** sessions created and released so far, and loaded now */
  get sessions(): { created: number; released: number; live: number } {
    return { created: this.created, released: this.released, live: this.created - this.released };
  }

  /**
   * An extractor for these settings (loaded if needed; load errors are thrown here). Its extract and
   * runTensor go through the pool; its release does nothing (the pool owns the sessions).
   */
  async get(s: FeatureSettings): Promise<FeatureExtractor> {
    const k = ExtractorPool.key(s);
    const ex = await this.use(s, async (e) => e);
    let h = this.handles.get(k);
    if (!h) {
      h = this.handle(s, ex);
      this.handles.set(k, h);
    }
    return h;
  }

  /** Run `fn` on the session for these settings; it is not released before `fn` settles. */
  async use<T>(s: FeatureSettings, fn: (ex: FeatureExtractor) => Promise<T>): Promise<T> {
    const slot = this.acquire(s);
    try {
      return await fn(await slot.ready);
    } finally {
      this.done(slot);
    }
  }

  private handle(s: FeatureSettings, first: FeatureExtractor): FeatureExtractor {
    return Object.create(first, {
      extract: { value: (img: RgbImage) => this.use(s, (e) => e.extract(img)) },
      runTensor: { value: (x: Float32Array) => this.use(s, (e) => e.runTensor(x)) },
      release: { value: async () => {} },
    }) as FeatureExtractor;
  }

  private acquire(s: FeatureSettings): Slot {
    const k = ExtractorPool.key(s);
    let slot = this.slots.get(k);
    if (slot) this.slots.delete(k);
    else slot = this.load(k, s);
    this.slots.set(k, slot); // most recently used last
    slot.users++;
    this.evict();
    return slot;
  }

  private load(k: string, s: FeatureSettings): Slot {
    const slot: Slot = { settings: s, ready: FeatureExtractor.load(this.backboneDir, s, this.runtime), users: 0, retired: false };
    this.created++;
    slot.ready.catch(() => {
      // A failed load holds no session: forget it so the next call tries again.
      this.released++;
      slot.retired = true;
      if (this.slots.get(k) === slot) this.slots.delete(k);
    });
    return slot;
  }

  private done(slot: Slot): void {
    slot.users--;
    if (slot.retired) this.free(slot);
    else this.evict();
  }

  private evict(): void {
    if (this.slots.size <= this.maxSessions) return;
    for (const [k, slot] of this.slots) {
      if (this.slots.size <= this.maxSessions) break;
      if (slot.users > 0) continue;
      this.slots.delete(k);
      this.handles.delete(k);
      slot.retired = true;
      this.free(slot);
    }
  }

  private free(slot: Slot): void {
    if (slot.users > 0) return;
    slot.users = -1; // released once only
    slot.ready
      .then(
        (e) => {
          this.released++;
          return e.release();
        },
        () => {},
      )
      .catch(() => {});
  }

  /** Releases every session; ones in use are released when their extraction finishes. */
  async release(): Promise<void> {
    const all = [...this.slots.values()];
    this.slots.clear();
    this.handles.clear();
    const idle: Promise<unknown>[] = [];
    for (const slot of all) {
      slot.retired = true;
      if (slot.users === 0) {
        slot.users = -1;
        idle.push(
          slot.ready.then(
            (e) => {
              this.released++;
              return e.release();
            },
            () => {},
          ),
        );
      }
    }
    await Promise.all(idle);
  }
}
