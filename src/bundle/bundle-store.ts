/**
 * The daemon's bundles, by name: a remote `reload` names a file of the configured bundle folder and
 * never passes a path, so it cannot make the worker read a device, block on a FIFO, or learn what
 * exists elsewhere on the box. The active bundle is remembered in the state folder, so that a
 * successful reload survives a restart.
 */
import { lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { writeFileAtomic } from '../util/files.ts';
import { readBundleHeader } from './bundle-file.ts';

export interface BundleEntry {
  name: string;
  size: number;
  mtime: string;
  /** null when the file's header does not read as a bundle */
  bundle_id: string | null;
}

/**
 * The one error for a name that does not resolve, whatever the reason: a message that differed
 * between "outside the folder", "missing" and "a device" would tell a remote client what exists.
 */
export class NoSuchBundleError extends Error {}

const STATE_FILE = 'active-bundle.json';
const MAX_NAME_BYTES = 255;
/** directory entries looked at by list(): a folder with more is misconfigured, not a reason to stall */
const MAX_ENTRIES = 1000;
/** bundle names an error lists */
const NAMES_IN_ERROR = 20;
/** header bytes read per file by list() */
const MAX_HEADER_BYTES = 8 * 2 ** 20;
const MAX_STATE_BYTES = 64 * 1024;

export class BundleStore {
  private readonly dir: string;
  private readonly stateDir: string;

  constructor(
    bundleDir: string,
    stateDir: string,
    private readonly maxBytes: number,
  ) {
    this.dir = resolve(bundleDir);
    this.stateDir = resolve(stateDir);
  }

  /** The path of bundle `name` of the folder; NoSuchBundleError (listing what is there) otherwise. */
  resolve(name: string): string {
    const found = this.lookUp(name);
    if (!found) throw this.noSuchBundle(name);
    return found.path;
  }

  /** The loadable files of the folder, by name, with the bundle id from each header. */
  list(): BundleEntry[] {
    let names: string[];
    try {
      names = readdirSync(this.dir).sort().slice(0, MAX_ENTRIES);
    } catch {
      return [];
    }
    const out: BundleEntry[] = [];
    for (const name of names) {
      const found = this.lookUp(name);
      if (found) out.push({ name, size: found.stats.size, mtime: found.stats.mtime.toISOString(), bundle_id: headerId(found.path) });
    }
    return out;
  }

  /**
   * Persists `path` as the active bundle (atomically: a power cut leaves the old or the new one),
   * with the configured bundle it replaced: an engineer who later edits `bundle` in the config means it.
   */
  remember(path: string, configured = ''): void {
    mkdirSync(this.stateDir, { recursive: true });
    const state = { path: resolve(path), configured: configured ? resolve(configured) : '', remembered_at: new Date().toISOString() };
    writeFileAtomic(this.statePath(), new TextEncoder().encode(`${JSON.stringify(state)}\n`));
  }

  /** The remembered bundle while it is still a bundle of the folder and the config is unchanged, else `configured`. */
  active(configured: string): string {
    const state = this.remembered();
    if (state === null || (state.configured && state.configured !== resolve(configured))) return configured;
    const remembered = state.path;
    if (dirname(remembered) !== this.dir) return configured;
    return this.lookUp(basename(remembered))?.path ?? configured;
  }

  private statePath(): string {
    return join(this.stateDir, STATE_FILE);
  }

  private remembered(): { path: string; configured: string } | null {
    try {
      const st = lstatSync(this.statePath());
      if (!st.isFile() || st.size > MAX_STATE_BYTES) return null;
      const { path, configured } = JSON.parse(readFileSync(this.statePath(), 'utf8')) as { path?: unknown; configured?: unknown };
      return typeof path === 'string' && isAbsolute(path) ? { path, configured: typeof configured === 'string' ? configured : '' } : null;
    } catch {
      return null;
    }
  }

  /** Never throws: any reason a name does not resolve is the same null. */
  private lookUp(name: unknown): { path: string; stats: Stats } | null {
    if (!isPlainName(name)) return null;
    const path = join(this.dir, name);
    try {
      let stats = lstatSync(path);
      if (stats.isSymbolicLink()) {
        const real = realpathSync(path);
        if (!isInside(realpathSync(this.dir), real)) return null;
        stats = statSync(real);
      }
      return stats.isFile() && stats.size <= this.maxBytes ? { path, stats } : null;
    } catch {
      return null;
    }
  }

  private noSuchBundle(name: unknown): NoSuchBundleError {
    const names = this.list()
      .filter((e) => e.bundle_id !== null)
      .map((e) => e.name);
    const shown = names.slice(0, NAMES_IN_ERROR).join(', ') + (names.length > NAMES_IN_ERROR ? ` and ${names.length - NAMES_IN_ERROR} more` : '');
    const mb = Math.round(this.maxBytes / 2 ** 20);
    return new NoSuchBundleError(
      `no bundle ${quoted(name)} in the bundle folder: give the file name of a bundle there (a regular file of at most ${mb} MB), not a path; available: ${shown || 'none'}`,
    );
  }
}

/** A file name of the folder itself: no separators, no NUL or control characters, not hidden (so not "." or ".."). */
export function isPlainName(name: unknown): name is string {
  return typeof name === 'string' && name.length > 0 && Buffer.byteLength(name) <= MAX_NAME_BYTES && !name.startsWith('.') && !/[/\\\x00-\x1f\x7f]/.test(name);
}

function isInside(root: string, path: string): boolean {
  const r = relative(root, path);
  return r !== '' && !isAbsolute(r) && r.split(sep)[0] !== '..';
}

function headerId(path: string): string | null {
  try {
    return readBundleHeader(path, MAX_HEADER_BYTES).bundle_id;
  } catch {
    return null;
  }
}

/** The name as the client sent it, bounded and printable: echoing input reveals nothing. */
function quoted(name: unknown): string {
  if (typeof name !== 'string') return `(a ${name === null ? 'null' : typeof name}, not a file name)`;
  return JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name);
}
