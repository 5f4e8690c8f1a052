/** Replay of image files (PNG/JPEG/BMP) from a file or folder, paced at a set rate, once or looped. */
import { statSync } from 'node:fs';
import { listImagesRecursive } from '../eval/dataset.ts';
import { readImage } from '../features/image.ts';
import type { FrameSource, SourceEvents } from './types.ts';

export interface FolderSourceOptions {
  path: string;
  fps: number;
  loop: boolean;
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
    return `${this.files.length} image(s) from ${this.opts.path} at ${this.opts.fps} fps${this.opts.loop ? ', looped' : ''}`;
  }

  start(ev: SourceEvents): void {
    this.running = this.run(ev);
  }

  private async run(ev: SourceEvents): Promise<void> {
    ev.state('streaming', this.description);
    const period = 1000 / this.opts.fps;
    let next = performance.now();
    do {
      for (const path of this.files) {
        if (this.stopped) return;
        const wait = next - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        next = Math.max(next + period, performance.now() - period);
        while (ev.canAccept && !ev.canAccept() && !this.stopped) await new Promise((r) => setTimeout(r, 5));
        if (this.stopped) return;
        try {
          const img = await readImage(path);
          ev.frame({ ...img, capturedAt: Date.now(), path });
        } catch (e) {
          ev.state('lost', `cannot read ${path}: ${(e as Error).message}`);
        }
      }
    } while (this.opts.loop && !this.stopped);
    if (!this.stopped) ev.state('ended', `replayed ${this.files.length} image(s)`);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }
}
