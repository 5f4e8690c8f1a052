/**
 * On-disk archive of NG and UNKNOWN parts: frame JPEG, heatmap JPEG and verdict JSON per entry, under
 * a size quota (oldest entries deleted first), so a plant can review rejects without a broker.
 *
 * An entry is written into a hidden temp folder `.<name>` and renamed into place, so it appears whole
 * or not at all. A failed write (full disk) removes its temp folder; folders left by a crash are
 * removed at the next start. Nothing outside the quota stays behind.
 */
import * as nodeFs from 'node:fs';
import { join } from 'node:path';

/** The file operations the archive uses; injectable so full-disk failures can be tested. */
export type ArchiveFs = Pick<typeof nodeFs, 'mkdirSync' | 'readdirSync' | 'rmSync' | 'statSync' | 'writeFileSync' | 'renameSync'>;

export interface ArchiveOptions {
  fs?: ArchiveFs;
  log?: (level: 'info' | 'warn', msg: string) => void;
}

export class ArchiveError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

const FILE_MODE = 0o640;
const DIR_MODE = 0o750;
// Entry folders are named by ISO time; a temp folder is the same name behind a dot.
const TEMP_ENTRY = /^\.\d{4}-\d\d-\d\dT/;

export class NgArchive {
  private used = 0;
  private readonly entries: { name: string; bytes: number }[] = [];
  private readonly fs: ArchiveFs;
  private failed = 0;
  /** what the constructor found: whole entries (counted in the quota) and removed crash leftovers */
  readonly found: { entries: number; bytes: number; removedTemp: number };

  constructor(
    readonly dir: string,
    private readonly quotaBytes: number,
    opts: ArchiveOptions = {},
  ) {
    this.fs = opts.fs ?? nodeFs;
    this.fs.mkdirSync(dir, { recursive: true, mode: DIR_MODE });
    let removedTemp = 0;
    // Sorting by name is oldest first.
    for (const name of this.fs.readdirSync(dir).sort()) {
      if (TEMP_ENTRY.test(name)) {
        this.fs.rmSync(join(dir, name), { recursive: true, force: true });
        removedTemp++;
      } else if (!name.startsWith('.')) {
        const bytes = dirSize(this.fs, join(dir, name));
        this.entries.push({ name, bytes });
        this.used += bytes;
      }
    }
    this.found = { entries: this.entries.length, bytes: this.used, removedTemp };
    opts.log?.(
      'info',
      `archive ${dir}: ${this.entries.length} entries, ${(this.used / 2 ** 20).toFixed(1)} MB of ${(quotaBytes / 2 ** 20).toFixed(1)} MB${removedTemp ? `; removed ${removedTemp} partly written entr${removedTemp === 1 ? 'y' : 'ies'} left by an earlier run` : ''}`,
    );
    this.enforce();
  }

  get bytes(): number {
    return this.used;
  }
  get count(): number {
    return this.entries.length;
  }
  /** adds that failed (and left nothing behind) since start */
  get failures(): number {
    return this.failed;
  }

  /** Throws ArchiveError when the entry could not be written; nothing of it stays on disk then. */
  add(id: string, files: Record<string, Uint8Array | string>): void {
    const name = `${new Date().toISOString().replace(/[:.]/g, '-')}_${id.replace(/[^A-Za-z0-9_-]/g, '_')}`;
    const tmp = join(this.dir, `.${name}`);
    let bytes = 0;
    try {
      this.fs.mkdirSync(tmp, { recursive: true, mode: DIR_MODE });
      for (const [file, data] of Object.entries(files)) {
        this.fs.writeFileSync(join(tmp, file), data, { mode: FILE_MODE });
        bytes += typeof data === 'string' ? Buffer.byteLength(data) : data.length;
      }
      this.fs.renameSync(tmp, join(this.dir, name));
    } catch (e) {
      this.failed++;
      throw this.failure(tmp, name, e as NodeJS.ErrnoException);
    }
    this.entries.push({ name, bytes });
    this.used += bytes;
    this.enforce();
  }

  private failure(tmp: string, name: string, e: NodeJS.ErrnoException): ArchiveError {
    let cleanup = '';
    try {
      this.fs.rmSync(tmp, { recursive: true, force: true });
    } catch (r) {
      cleanup = `; its temp folder ${tmp} could not be removed either (${(r as Error).message})`;
    }
    const why = e.code === 'ENOSPC' ? 'the disk is full' : e.code === 'EDQUOT' ? 'the disk quota is exhausted' : e.message;
    return new ArchiveError(`entry ${name} not archived in ${this.dir}: ${why}${cleanup}`, e.code);
  }

  private enforce(): void {
    while (this.used > this.quotaBytes && this.entries.length > 0) {
      const old = this.entries.shift()!;
      this.fs.rmSync(join(this.dir, old.name), { recursive: true, force: true });
      this.used -= old.bytes;
    }
  }
}

function dirSize(fs: ArchiveFs, p: string): number {
  const s = fs.statSync(p);
  if (!s.isDirectory()) return s.size;
  return fs.readdirSync(p).reduce((t, f) => t + dirSize(fs, join(p, f)), 0);
}
