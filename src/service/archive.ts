/**
 * On-disk archive of NG and UNKNOWN parts: frame JPEG, heatmap JPEG and verdict JSON per entry, under
 * a size quota (oldest entries deleted first), so a plant can review rejects without a broker.
 */
import { mkdirSync, readdirSync, rmSync, statSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';

export class NgArchive {
  private used = 0;
  private readonly entries: { name: string; bytes: number }[] = [];

  constructor(readonly dir: string, private readonly quotaBytes: number) {
    mkdirSync(dir, { recursive: true });
    // Entry folders are named by time, so sorting by name is oldest first.
    for (const name of readdirSync(dir).filter((n) => !n.startsWith('.')).sort()) {
      const bytes = dirSize(join(dir, name));
      this.entries.push({ name, bytes });
      this.used += bytes;
    }
    this.enforce();
  }

  get bytes(): number {
    return this.used;
  }
  get count(): number {
    return this.entries.length;
  }

  add(id: string, files: Record<string, Uint8Array | string>): void {
    const name = `${new Date().toISOString().replace(/[:.]/g, '-')}_${id.replace(/[^A-Za-z0-9_-]/g, '_')}`;
    const tmp = join(this.dir, `.${name}`);
    mkdirSync(tmp, { recursive: true });
    let bytes = 0;
    for (const [file, data] of Object.entries(files)) {
      writeFileSync(join(tmp, file), data);
      bytes += typeof data === 'string' ? Buffer.byteLength(data) : data.length;
    }
    renameSync(tmp, join(this.dir, name)); // an entry appears whole or not at all
    this.entries.push({ name, bytes });
    this.used += bytes;
    this.enforce();
  }

  private enforce(): void {
    while (this.used > this.quotaBytes && this.entries.length > 0) {
      const old = this.entries.shift()!;
      rmSync(join(this.dir, old.name), { recursive: true, force: true });
      this.used -= old.bytes;
    }
  }
}

function dirSize(p: string): number {
  const s = statSync(p);
  if (!s.isDirectory()) return s.size;
  return readdirSync(p).reduce((t, f) => t + dirSize(join(p, f)), 0);
}
