/**
 * Cameras through GStreamer (gstreamer-superficial 1.7.4). Everything this binding needs handled lives
 * here and nowhere else:
 *  - each pending pull() and pollBus() holds a libuv threadpool thread (bin/hiercore-edge.js sizes
 *    UV_THREADPOOL_SIZE before anything uses the pool);
 *  - bus polling ends with stop(): pollBus() is called again after every play();
 *  - a missing or unplugged camera may produce no error at all: a frame timeout detects the stall;
 *  - every new Pipeline leaks about 1 MB and 4 fds: one pipeline is reused across reconnects and a
 *    fresh one is built only after repeated failures, at most MAX_REBUILDS times per run;
 *  - rows of RGB buffers are padded to 4 bytes: frames are repacked when the stride differs.
 */
import { createRequire } from 'node:module';
import type { FrameSource, SourceEvents, SourceState } from './types.ts';
import { describeLaunch, launchString, type SourceConfig } from './pipelines.ts';
import { redactSecrets } from '../util/redact.ts';

interface GstAppSink {
  pull(cb: (buf: Buffer | null, caps?: Record<string, unknown>) => void): void;
}
interface GstPipeline {
  play(): void;
  stop(): void;
  pollBus(cb: (msg: Record<string, unknown>) => void): void;
  findChild(name: string): GstAppSink | null;
}
interface GstModule {
  Pipeline: new (launch: string) => GstPipeline;
}

export const MAX_REBUILDS = 20;

export function loadGstreamer(): GstModule {
  try {
    return createRequire(import.meta.url)('gstreamer-superficial') as GstModule;
  } catch (e) {
    throw new Error(
      `GStreamer capture is unavailable (${(e as Error).message.split('\n')[0]}): run deploy/setup.sh, then npm ci, so that gstreamer-superficial is built against the GStreamer headers`,
    );
  }
}

/** Packed RGB from a buffer whose rows may be padded to 4 bytes. */
export function packRgb(buf: Uint8Array, width: number, height: number): Uint8Array {
  const row = width * 3;
  const stride = Math.floor(buf.length / height);
  if (stride === row) return new Uint8Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + row * height));
  if (stride < row) throw new Error(`frame buffer of ${buf.length} bytes is too small for ${width}x${height} RGB`);
  const out = new Uint8Array(row * height);
  for (let y = 0; y < height; y++) out.set(buf.subarray(y * stride, y * stride + row), y * row);
  return out;
}

export class GstSource implements FrameSource {
  reconnects = 0;
  private readonly gst: GstModule;
  private pipeline: GstPipeline | null = null;
  private rebuilds = 0;
  private failures = 0;
  private stopped = false;
  private generation = 0;
  private lastFrame = 0;
  private timer: NodeJS.Timeout | null = null;
  private ev: SourceEvents | null = null;
  private size = { width: 0, height: 0 };
  private streaming = false;

  constructor(
    private readonly cfg: SourceConfig,
    private readonly backoff = { initialMs: 1000, maxMs: 30000 },
  ) {
    this.gst = loadGstreamer();
    launchString(cfg); // reject a bad kind now, not at first frame
  }

  get description(): string {
    return `${this.cfg.kind}: ${describeLaunch(this.cfg)}`;
  }

  start(ev: SourceEvents): void {
    this.ev = ev;
    this.open();
  }

  private build(): GstPipeline {
    try {
      return new this.gst.Pipeline(launchString(this.cfg));
    } catch (e) {
      throw new Error(`GStreamer could not build the pipeline "${describeLaunch(this.cfg)}": ${redactSecrets((e as Error).message)}`);
    }
  }

  private open(): void {
    if (this.stopped) return;
    const gen = ++this.generation;
    try {
      if (!this.pipeline || (this.failures > 0 && this.failures % 5 === 0 && this.rebuilds < MAX_REBUILDS)) {
        if (this.pipeline) {
          this.rebuilds++;
          this.pipeline.stop();
        }
        this.pipeline = this.build();
      }
      const p = this.pipeline;
      const sink = p.findChild('hce_sink');
      if (!sink) throw new Error('pipeline has no hce_sink appsink');
      this.report('starting', this.description);
      p.play();
      p.pollBus((msg) => this.onBus(gen, msg));
      this.lastFrame = Date.now();
      this.streaming = false;
      const onData = (buf: Buffer | null, caps?: Record<string, unknown>) => {
        if (gen !== this.generation || this.stopped) return;
        if (caps && typeof caps.width === 'number' && typeof caps.height === 'number') this.size = { width: caps.width, height: caps.height };
        if (buf) {
          this.onBuffer(buf);
          sink.pull(onData);
        } else if (!caps) {
          this.lose(gen, 'end of stream');
        } else sink.pull(onData);
      };
      sink.pull(onData);
      this.armTimer(gen);
    } catch (e) {
      this.lose(gen, (e as Error).message);
    }
  }

  private onBuffer(buf: Buffer): void {
    const { width, height } = this.size;
    if (!width || !height) return;
    this.lastFrame = Date.now();
    this.failures = 0;
    if (!this.streaming) {
      this.streaming = true;
      this.report('streaming', `${width}x${height}`);
    }
    this.ev?.frame({ width, height, data: packRgb(buf, width, height), capturedAt: this.lastFrame });
  }

  /** GStreamer error texts quote the element's properties, location URLs with credentials included. */
  private report(s: SourceState, detail: string): void {
    this.ev?.state(s, redactSecrets(detail));
  }

  private onBus(gen: number, msg: Record<string, unknown>): void {
    if (gen !== this.generation) return;
    const type = String(msg.type ?? '');
    if (type === 'error' || msg.name === 'GstMessageError') this.lose(gen, `GStreamer error from ${msg._src_element_name ?? 'pipeline'}: ${msg.message ?? msg.debug ?? JSON.stringify(msg)}`);
    else if (type === 'eos') this.lose(gen, 'end of stream');
  }

  private armTimer(gen: number): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = setInterval(
      () => {
        if (gen !== this.generation) return;
        if (Date.now() - this.lastFrame > this.cfg.frame_timeout_ms) this.lose(gen, `no frame for ${this.cfg.frame_timeout_ms} ms`);
      },
      Math.min(1000, this.cfg.frame_timeout_ms / 2),
    );
    this.timer.unref();
  }

  private lose(gen: number, why: string): void {
    if (gen !== this.generation || this.stopped) return;
    this.generation++; // late callbacks of this attempt are ignored
    if (this.timer) clearInterval(this.timer);
    this.failures++;
    try {
      this.pipeline?.stop();
    } catch {
      /* already stopped */
    }
    const delay = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** Math.min(10, this.failures - 1));
    this.report('lost', `${why}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
    setTimeout(() => {
      if (this.stopped) return;
      this.reconnects++;
      this.open();
    }, delay).unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.generation++;
    if (this.timer) clearInterval(this.timer);
    try {
      this.pipeline?.stop();
    } catch {
      /* already stopped */
    }
  }
}
