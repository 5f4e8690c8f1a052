/** Replay of image files (PNG/JPEG/BMP) from a file or folder, paced at a set rate, once or looped. */
import { statSync } from 'node:fs';
import { listImagesRecursive } from '../eval/dataset.ts';
import { ImageDecodeError, readImage, type RgbImage } from '../features/image.ts';
import { redactSecrets } from '../util/redact.ts';
import { DEFAULT_MAX_PIXELS } from './limits.ts';
import type { FrameSource, SourceEvents } from './types.ts';

export interface FolderSourceOptions {
  path: string;
  fps: number;
  loop: boolean;
  /** larger images are skipped undecoded (default 40 megapixels; see maxPixelsFor) */
  maxPixels?: number;
}

export class FolderSource implements FrameSource {
  readonly reconnects = 0;
  private stopped = false;
  private running: Promise<void> | null = null;
  private readonly files: string[];

  constructor(private readonly opts: FolderSourceOptions) {
    let isDir: boolean;
    try {
      isDir = statSync(opts.path).isDirectory();
    } catch {
      throw new Error(`source.path ${opts.path} does not exist`);
    }
    this.files = isDir ? listImagesRecursive(opts.path) : [opts.path];
    if (this.files.length === 0) throw new Error(`source.path ${opts.path} holds no PNG/JPEG/BMP images`);
  }

  get description(): string {
    return redactSecrets(`${this.files.length} image(s) from ${this.opts.path} at ${this.opts.fps} fps${this.opts.loop ? ', looped' : ''}`);
  }

  start(ev: SourceEvents): void {
    this.running = this.run(ev);
  }

  private async run(ev: SourceEvents): Promise<void> {
    // A bad file reports `lost`; the next good one must report `streaming` again, or health and the
    // systemd watchdog would see a dead camera while frames are being inspected.
    let streaming = false;
    const state = (s: 'streaming' | 'lost' | 'ended', detail: string) => {
      streaming = s === 'streaming';
      ev.state(s, redactSecrets(detail));
    };
    state('streaming', this.description);
    const period = 1000 / this.opts.fps;
    const maxPixels = this.opts.maxPixels ?? DEFAULT_MAX_PIXELS;
    let next = performance.now();
    do {
      for (const path of this.files) {
        if (this.stopped) return;
        const wait = next - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        next = Math.max(next + period, performance.now() - period);
        while (ev.canAccept && !ev.canAccept() && !this.stopped) await new Promise((r) => setTimeout(r, 5));
        if (this.stopped) return;
        let img: RgbImage;
        try {
          img = await readImage(path, { maxPixels });
        } catch (e) {
          // ImageDecodeError already names the file.
          state('lost', e instanceof ImageDecodeError ? `skipped ${(e as Error).message}` : `cannot read ${path}: ${(e as Error).message}`);
          continue;
        }
        if (!streaming) state('streaming', this.description);
        ev.frame({ ...img, capturedAt: Date.now(), path });
      }
    } while (this.opts.loop && !this.stopped);
    if (!this.stopped) state('ended', `replayed ${this.files.length} image(s)`);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }
}
