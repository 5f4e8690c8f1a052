/**
 * The daemon's bundles, by name: a remote `reload` names a file of the configured bundle folder and
 * never passes a path, so it cannot make the worker read a device, block on a FIFO, or learn what
 * exists elsewhere on the box. The active bundle is remembered in the state folder, so that a
 * successful reload survives a restart.
 */
import { copyFileSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, statSync, unlinkSync, type Stats } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { writeFileAtomic } from '../util/files.ts';
import { readBundleHeader, type BundleHeader } from './bundle-file.ts';

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
/** `v0007-20261203`: a number that only grows (the order) and the day it was made (for people) */
const VERSION = /^v(\d{4,})-(\d{8})$/;
const VERSION_EXT = '.hcebundle';
const META_EXT = '.meta.json';

/** What is kept beside a versioned bundle: how it was made and whether it passed validation. */
export interface VersionMeta {
  /** null: activated by hand, never validated; false: kept with its report, never activated */
  validated: boolean | null;
  /** report.html of the calibration run that made it, when there was one */
  report: string | null;
  run_id: string | null;
  /** why validation failed, for the list */
  problem?: string;
}

export interface VersionEntry extends VersionMeta {
  version: string;
  path: string;
  bundle_id: string | null;
  created_at: string | null;
  clusters: number | null;
  active: boolean;
  previous: boolean;
}

export function isVersionName(v: unknown): v is string {
  return typeof v === 'string' && VERSION.test(v);
}
const MAX_NAME_BYTES = 255;
/** directory entries looked at by list(): a folder with more is misconfigured, not a reason to stall */
const MAX_ENTRIES = 1000;
/** bundle names an error lists */
const NAMES_IN_ERROR = 20;
/** header bytes read per file by list() */
const MAX_HEADER_BYTES = 8 * 2 ** 20;
const MAX_STATE_BYTES = 64 * 1024;

/** The daemon's store from its config: the bundle folder is bundle_dir, else the folder of `bundle`, else <state_dir>/bundles. */
export function bundleStoreFor(c: { bundle: string; bundle_dir: string; state_dir: string; bundle_max_mb: number }): BundleStore {
  const dir = c.bundle_dir || (c.bundle ? dirname(resolve(c.bundle)) : join(c.state_dir, 'bundles'));
  return new BundleStore(resolve(dir), resolve(c.state_dir), c.bundle_max_mb * 2 ** 20);
}

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

  get folder(): string {
    return this.dir;
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
   * `replaced`: the bundle that was live until now (the one rollback returns to).
   */
  remember(path: string, configured = '', replaced = ''): void {
    mkdirSync(this.stateDir, { recursive: true });
    const old = this.remembered();
    const now = resolve(path);
    // What rollback goes back to: the bundle this one replaced (`replaced`, else the remembered one);
    // unchanged when the same bundle is remembered again.
    const before = replaced ? resolve(replaced) : (old?.path ?? '');
    const previous = before && before !== now ? before : (old?.previous ?? '');
    const state = { path: now, previous, configured: configured ? resolve(configured) : '', remembered_at: new Date().toISOString() };
    writeFileAtomic(this.statePath(), new TextEncoder().encode(`${JSON.stringify(state)}\n`));
  }

  /** The remembered bundle while it is still a bundle of the folder and the config is unchanged, else `configured`. */
  active(configured: string): string {
    const state = this.remembered();
    if (state === null || (state.configured && state.configured !== (configured ? resolve(configured) : ''))) return configured;
    const remembered = state.path;
    if (dirname(remembered) !== this.dir) return configured;
    return this.lookUp(basename(remembered))?.path ?? configured;
  }

  /** The bundle that was active before the active one (what rollback goes back to), while it is still in the folder. */
  previous(): string | null {
    const p = this.remembered()?.previous;
    if (!p || dirname(p) !== this.dir) return null;
    return this.lookUp(basename(p))?.path ?? null;
  }

  /** The path of bundle version `version`; NoSuchBundleError otherwise. */
  versionPath(version: string): string {
    if (!isVersionName(version)) throw new NoSuchBundleError(`${quoted(version)} is not a bundle version (like v0007-20261203): see "hiercore-edge bundle list"`);
    return this.resolve(`${version}${VERSION_EXT}`);
  }

  /** The version a path of the folder is, or null for a bundle that is not versioned. */
  versionOf(path: string): string | null {
    const name = basename(path);
    if (dirname(resolve(path)) !== this.dir || !name.endsWith(VERSION_EXT)) return null;
    const v = name.slice(0, -VERSION_EXT.length);
    return isVersionName(v) ? v : null;
  }

  /** Versioned bundles of the folder, oldest first, with their metadata and which is active. */
  versions(activePath: string | null = null): VersionEntry[] {
    const active = activePath ? resolve(activePath) : null;
    const previous = this.previous();
    const out: VersionEntry[] = [];
    for (const e of this.list()) {
      if (!e.name.endsWith(VERSION_EXT)) continue;
      const version = e.name.slice(0, -VERSION_EXT.length);
      if (!isVersionName(version)) continue;
      const path = join(this.dir, e.name);
      const h = header(path);
      out.push({
        version,
        path,
        bundle_id: h?.bundle_id ?? null,
        created_at: h?.created_at ?? null,
        clusters: h?.clusters.length ?? null,
        ...this.meta(version),
        active: path === active,
        previous: path === previous,
      });
    }
    return out.sort((a, b) => versionNumber(a.version) - versionNumber(b.version));
  }

  /**
   * Moves (or copies, across file systems) a finished bundle file into the folder as the next
   * version, with its metadata; returns the version. The bundle lands complete or not at all.
   */
  addVersion(file: string, meta: VersionMeta, now = new Date()): string {
    mkdirSync(this.dir, { recursive: true });
    const n = Math.max(0, ...this.versions().map((v) => versionNumber(v.version))) + 1;
    const version = `v${String(n).padStart(4, '0')}-${now.toISOString().slice(0, 10).replace(/-/g, '')}`;
    const dest = join(this.dir, `${version}${VERSION_EXT}`);
    this.writeMeta(version, meta);
    const tmp = `${dest}.part`;
    try {
      renameSync(file, dest);
    } catch {
      copyFileSync(file, tmp);
      renameSync(tmp, dest);
    }
    return version;
  }

  writeMeta(version: string, meta: VersionMeta): void {
    writeFileAtomic(join(this.dir, `${version}${META_EXT}`), new TextEncoder().encode(`${JSON.stringify(meta, null, 1)}\n`));
  }

  /** Deletes the oldest versions beyond `keep`; never the active one or the previous one. Returns what went. */
  prune(keep: number, activePath: string | null): string[] {
    const all = this.versions(activePath);
    const removable = all.filter((v) => !v.active && !v.previous);
    const excess = all.length - Math.max(keep, 0);
    const gone: string[] = [];
    for (const v of removable.slice(0, Math.max(0, excess))) {
      for (const f of [v.path, join(this.dir, `${v.version}${META_EXT}`)]) {
        try {
          unlinkSync(f);
        } catch {}
      }
      gone.push(v.version);
    }
    return gone;
  }

  private meta(version: string): VersionMeta {
    const none: VersionMeta = { validated: null, report: null, run_id: null };
    try {
      const path = join(this.dir, `${version}${META_EXT}`);
      if (lstatSync(path).size > MAX_STATE_BYTES) return none;
      const m = JSON.parse(readFileSync(path, 'utf8')) as Partial<VersionMeta>;
      return {
        validated: typeof m.validated === 'boolean' ? m.validated : null,
        report: typeof m.report === 'string' ? m.report : null,
        run_id: typeof m.run_id === 'string' ? m.run_id : null,
        ...(typeof m.problem === 'string' ? { problem: m.problem } : {}),
      };
    } catch {
      return none;
    }
  }

  private statePath(): string {
    return join(this.stateDir, STATE_FILE);
  }

  private remembered(): { path: string; previous: string; configured: string } | null {
    try {
      const st = lstatSync(this.statePath());
      if (!st.isFile() || st.size > MAX_STATE_BYTES) return null;
      const { path, previous, configured } = JSON.parse(readFileSync(this.statePath(), 'utf8')) as { path?: unknown; previous?: unknown; configured?: unknown };
      const abs = (v: unknown) => (typeof v === 'string' && isAbsolute(v) ? v : '');
      return abs(path) ? { path: abs(path), previous: abs(previous), configured: typeof configured === 'string' ? configured : '' } : null;
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

function versionNumber(v: string): number {
  return Number(VERSION.exec(v)?.[1] ?? 0);
}

function header(path: string): BundleHeader | null {
  try {
    return readBundleHeader(path, MAX_HEADER_BYTES);
  } catch {
    return null;
  }
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
