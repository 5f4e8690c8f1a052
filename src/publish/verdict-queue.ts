/**
 * The durable, bounded queue of verdicts waiting for the broker's PUBACK.
 *
 * Layout of the store directory:
 *   lock                 pid of the process that owns the queue (a second daemon must not share it)
 *   verdicts/<seq>.v     one record per verdict, seq = 16 zero-padded digits, so name order = queue order
 *   verdicts/<seq>.v.tmp a record being written (temp + rename, so a reader never sees a torn record)
 *   corrupt/             damaged records and unknown files found at start, moved aside, never deleted
 *
 * Record: "HCEV" | u8 version | 3 zero bytes | u64 LE seq | u32 LE frame id length | u32 LE payload
 * length | frame id | payload | sha256 of everything before it. The checksum is what turns a record
 * torn by a power loss or a bad sector into a loud "moved aside" instead of garbage sent to a PLC.
 *
 * Failure model: the queue never throws at its callers. When the store cannot be written (disk full,
 * read-only, I/O error) verdicts stay in memory under the same bounds, `storeError` says why, and
 * writing is retried; when the store is locked by another live process the queue is memory-only for
 * the life of this process (sharing the directory would interleave two queues' sequence numbers).
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, existsSync, fstatSync, promises as fsp, openSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

/** The file-system calls the queue makes; tests inject faults (ENOSPC, EROFS, ...) through it. */
export interface QueueFs {
  mkdir(path: string): Promise<void>;
  readdir(path: string): Promise<string[]>;
  readFile(path: string): Promise<Buffer>;
  /** start-up reads: promise reads of 70,000 small files cost seconds of thread-pool round trips */
  readFileSync(path: string): Buffer;
  /** `exclusive`: fail with EEXIST if the file exists; `sync`: fsync before resolving. */
  writeFile(path: string, data: Uint8Array, opts: { mode: number; exclusive: boolean; sync: boolean }): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
}

export const nodeQueueFs: QueueFs = {
  mkdir: async (p) => void (await fsp.mkdir(p, { recursive: true })),
  readdir: (p) => fsp.readdir(p),
  readFile: (p) => readRecordFile(p),
  readFileSync: (p) => readRecordFileSync(p),
  async writeFile(p, data, o) {
    const fh = await fsp.open(p, o.exclusive ? 'wx' : 'w', o.mode);
    try {
      await fh.writeFile(data);
      if (o.sync) await fh.sync();
    } finally {
      await fh.close();
    }
  },
  rename: (a, b) => fsp.rename(a, b),
  unlink: (p) => fsp.unlink(p),
};

/*
 * Anything can be planted in a store folder: a FIFO must not block the open, a device (/dev/zero) or
 * a huge file must not be read without bound. Records are regular files of bounded size.
 */
const RECORD_OPEN = constants.O_RDONLY | constants.O_NONBLOCK;

function checkRecordStat(size: number, isFile: boolean): void {
  if (!isFile) throw new Error('not a regular file');
  if (size > MAX_RECORD_BYTES) throw new Error(`${size} bytes: too large for a verdict record`);
}

async function readRecordFile(p: string): Promise<Buffer> {
  const fh = await fsp.open(p, RECORD_OPEN);
  try {
    const st = await fh.stat();
    checkRecordStat(st.size, st.isFile());
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

function readRecordFileSync(p: string): Buffer {
  const fd = openSync(p, RECORD_OPEN);
  try {
    const st = fstatSync(fd);
    checkRecordStat(st.size, st.isFile());
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

export type QueueLog = (level: 'info' | 'warn' | 'error', msg: string) => void;

export interface VerdictQueueOptions {
  dir: string;
  /** most verdicts kept; beyond it the oldest are dropped */
  maxCount: number;
  /** most record bytes kept (memory-only ones included); beyond it the oldest are dropped */
  maxBytes: number;
  log: QueueLog;
  fs?: QueueFs;
  /** fsync each record: survives power loss, costs a disk flush per verdict (off: survives a killed daemon) */
  fsync?: boolean;
  /** while the store fails, how often to try writing memory-only verdicts again */
  retryMs?: number;
  pidAlive?: (pid: number) => boolean;
}

export interface VerdictRecord {
  seq: number;
  frameId: string;
  payload: Buffer;
}

export interface QueueStats {
  depth: number;
  bytes: number;
  /** dropped by the bounds since start */
  dropped: number;
  /** damaged records moved aside since start */
  corrupt: number;
  onDisk: number;
  memoryOnly: number;
  storeError: string | null;
}

type DiskState = 'pending' | 'writing' | 'yes' | 'no';

interface Rec {
  seq: number;
  bytes: number;
  disk: DiskState;
  /** kept until the record is on disk; then read back from the file when needed */
  frameId?: string;
  payload?: Buffer;
  gone?: boolean;
}

const MAGIC = Buffer.from('HCEV');
const VERSION = 1;
const HEAD = 24;
const SUM = 32;
const REC_NAME = /^(\d{16})\.v$/;
/** numbers stay exact integers well past any real queue's lifetime */
const MAX_SEQ = 8e15;
/** first number of verdicts queued while the store could not be opened (above any disk record) */
const MEMORY_SEQ_BASE = 4e15;
/** a record is a verdict JSON: anything larger on disk is not one of ours */
const MAX_RECORD_BYTES = 16 * 2 ** 20;
const WRITE_CONCURRENCY = 8;
/** start-up reads between two yields to the event loop: keeps each block of it short */
const LOAD_CHUNK = 500;
const DROP_LOG_MS = 10_000;
/** Lock files this process holds: the same pid in a lock file is stale unless it is in here. */
const HELD_LOCKS = new Set<string>();

export function encodeRecord(seq: number, frameId: string, payload: Buffer): Buffer {
  const id = Buffer.from(frameId);
  const out = Buffer.alloc(HEAD + id.length + payload.length + SUM);
  MAGIC.copy(out, 0);
  out[4] = VERSION;
  out.writeBigUInt64LE(BigInt(seq), 8);
  out.writeUInt32LE(id.length, 16);
  out.writeUInt32LE(payload.length, 20);
  id.copy(out, HEAD);
  payload.copy(out, HEAD + id.length);
  createHash('sha256')
    .update(out.subarray(0, out.length - SUM))
    .digest()
    .copy(out, out.length - SUM);
  return out;
}

/** Throws with the reason when the record is damaged or is not the one its name says. */
export function decodeRecord(buf: Buffer, seq: number): VerdictRecord {
  if (buf.length < HEAD + SUM || !buf.subarray(0, 4).equals(MAGIC)) throw new Error(`not a verdict record (${buf.length} bytes)`);
  if (buf[4] !== VERSION) throw new Error(`record version ${buf[4]} (this build reads ${VERSION})`);
  const idLen = buf.readUInt32LE(16);
  const payLen = buf.readUInt32LE(20);
  if (HEAD + idLen + payLen + SUM !== buf.length) throw new Error(`truncated: ${buf.length} bytes, header says ${HEAD + idLen + payLen + SUM}`);
  const sum = createHash('sha256')
    .update(buf.subarray(0, buf.length - SUM))
    .digest();
  if (!sum.equals(buf.subarray(buf.length - SUM))) throw new Error('checksum mismatch');
  if (Number(buf.readBigUInt64LE(8)) !== seq) throw new Error(`holds sequence ${buf.readBigUInt64LE(8)}, named ${seq}`);
  return { seq, frameId: buf.subarray(HEAD, HEAD + idLen).toString(), payload: buf.subarray(HEAD + idLen, HEAD + idLen + payLen) };
}

const recName = (seq: number) => `${String(seq).padStart(16, '0')}.v`;
function errText(e: unknown): string {
  const msg = String((e as Error)?.message ?? e);
  const code = (e as NodeJS.ErrnoException)?.code;
  return code && !msg.startsWith(code) ? `${code}: ${msg}` : msg;
}
const errCode = (e: unknown) => (e as NodeJS.ErrnoException)?.code ?? 'error';

function defaultPidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function mapChunked<T, R>(items: T[], fn: (t: T) => R): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += LOAD_CHUNK) {
    for (const t of items.slice(i, i + LOAD_CHUNK)) out.push(fn(t));
    await new Promise((r) => setImmediate(r));
  }
  return out;
}

export class VerdictQueue {
  private readonly fs: QueueFs;
  private readonly vdir: string;
  private readonly lockPath: string;
  /** insertion order = sequence order: records are only ever appended with a growing seq */
  private readonly recs = new Map<number, Rec>();
  private readonly writeQ = new Set<Rec>();
  private nextSeq = 1;
  private openTimer: NodeJS.Timeout | null = null;
  private lastOpenProblem = '';
  private totalBytes = 0;
  private onDiskCount = 0;
  private droppedCount = 0;
  private corruptCount = 0;
  private error: string | null = null;
  private errorCode: string | null = null;
  private persistent = false;
  private closed = false;
  private writing = 0;
  private idleWaiters: (() => void)[] = [];
  private retryTimer: NodeJS.Timeout | null = null;
  private drops = { pending: 0, lastLog: 0, timer: null as NodeJS.Timeout | null };

  private constructor(private readonly o: VerdictQueueOptions) {
    this.fs = o.fs ?? nodeQueueFs;
    this.vdir = join(o.dir, 'verdicts');
    this.lockPath = join(o.dir, 'lock');
  }

  /** Never rejects: a store that cannot be used leaves a memory-only queue with `storeError` set. */
  static async open(o: VerdictQueueOptions): Promise<VerdictQueue> {
    const q = new VerdictQueue(o);
    await q.init();
    return q;
  }

  get depth(): number {
    return this.recs.size;
  }
  get bytes(): number {
    return this.totalBytes;
  }
  get dropped(): number {
    return this.droppedCount;
  }
  get storeError(): string | null {
    return this.error;
  }
  /** false when the store could not be opened or locked: nothing is written for this process's life */
  get isPersistent(): boolean {
    return this.persistent;
  }
  get stats(): QueueStats {
    return {
      depth: this.depth,
      bytes: this.totalBytes,
      dropped: this.droppedCount,
      corrupt: this.corruptCount,
      onDisk: this.onDiskCount,
      memoryOnly: this.depth - this.onDiskCount,
      storeError: this.error,
    };
  }

  /** Sequence numbers still queued, oldest first. */
  seqs(): IterableIterator<number> {
    return this.recs.keys();
  }

  has(seq: number): boolean {
    return this.recs.has(seq);
  }

  /** Synchronous and never throws: the verdict is queued (in memory at once, on disk soon). */
  push(frameId: string, payload: string | Buffer): number {
    const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
    const rec: Rec = { seq: this.nextSeq++, bytes: HEAD + Buffer.byteLength(frameId) + body.length + SUM, disk: 'no', frameId, payload: body };
    this.recs.set(rec.seq, rec);
    this.totalBytes += rec.bytes;
    if (this.persistent && !this.closed) this.queueWrite(rec);
    this.enforceBounds();
    return rec.seq;
  }

  /**
   * The record, from memory when it is not on disk yet (captured synchronously, so the hot path of a
   * connected broker never reads back), else from its file. null: acknowledged, dropped or damaged.
   */
  read(seq: number): Promise<VerdictRecord | null> {
    const rec = this.recs.get(seq);
    if (!rec) return Promise.resolve(null);
    if (rec.payload) return Promise.resolve({ seq, frameId: rec.frameId!, payload: rec.payload });
    return this.readFromDisk(rec);
  }

  /** The broker has it: forget it, and delete its file. */
  ack(seq: number): void {
    const rec = this.recs.get(seq);
    if (rec) this.remove(rec);
  }

  /** Waits up to `timeoutMs` for writes in progress, releases the lock; counts what is left. */
  async close(timeoutMs = 2000): Promise<{ onDisk: number; memoryOnly: number }> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.openTimer) clearTimeout(this.openTimer);
    this.writeQ.clear();
    this.flushDropLog();
    await this.bounded(new Promise<void>((r) => (this.writing === 0 ? r() : this.idleWaiters.push(r))), timeoutMs);
    const left = { onDisk: this.onDiskCount, memoryOnly: this.depth - this.onDiskCount };
    if (this.persistent) {
      await this.bounded(
        this.fs.unlink(this.lockPath).catch(() => {}),
        500,
      );
      HELD_LOCKS.delete(this.lockPath);
      this.persistent = false;
    }
    return left;
  }

  private bounded(p: Promise<unknown>, ms: number): Promise<unknown> {
    let t: NodeJS.Timeout;
    return Promise.race([p, new Promise((r) => (t = setTimeout(r, ms)))]).finally(() => clearTimeout(t));
  }

  private async init(): Promise<void> {
    const problem = await this.openStore();
    if (problem) return this.memoryOnly(problem);
    warnAboutLevelStore(this.o.dir, this.o.log);
    await this.load();
  }

  /** null once the folder exists and this process holds its lock, else why not. */
  private async openStore(): Promise<string | null> {
    try {
      await this.fs.mkdir(this.vdir);
    } catch (e) {
      return `cannot create ${this.vdir} (${errText(e)})`;
    }
    const lockProblem = await this.takeLock();
    if (lockProblem) return lockProblem;
    this.persistent = true;
    return null;
  }

  /**
   * The store is tried again every retryMs (a full disk gets space, a second daemon exits). Memory
   * verdicts are numbered far above anything on disk, so the records found when it opens are older
   * and never share a number with them.
   */
  private memoryOnly(why: string): void {
    this.error = `verdict store unusable: ${why}; verdicts are kept in memory only (lost if the daemon stops before the broker acknowledges them); retrying`;
    if (why !== this.lastOpenProblem) this.o.log('error', this.error);
    this.lastOpenProblem = why;
    this.nextSeq = Math.max(this.nextSeq, MEMORY_SEQ_BASE);
    if (this.closed) return;
    this.openTimer = setTimeout(() => void this.retryOpen(), this.o.retryMs ?? 5000);
    this.openTimer.unref();
  }

  private async retryOpen(): Promise<void> {
    this.openTimer = null;
    if (this.closed) return;
    const problem = await this.openStore();
    if (problem) return this.memoryOnly(problem);
    this.error = null;
    this.errorCode = '';
    this.o.log('info', `verdict store ${this.o.dir} is usable now: writing the ${this.recs.size} verdict(s) held in memory`);
    const held = [...this.recs.values()];
    await this.load();
    for (const r of held) if (r.disk === 'no' && !r.gone) this.queueWrite(r);
  }

  /** null when this process now holds the lock, else why not. */
  private async takeLock(): Promise<string | null> {
    const body = Buffer.from(`${process.pid}\n${hostname()}\n${new Date().toISOString()}\n`);
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await this.fs.writeFile(this.lockPath, body, { mode: 0o640, exclusive: true, sync: false });
        HELD_LOCKS.add(this.lockPath);
        return null;
      } catch (e) {
        if (errCode(e) !== 'EEXIST') return `cannot create the lock file ${this.lockPath} (${errText(e)})`;
      }
      const holder = await this.lockHolder();
      const alive = holder !== null && (holder === process.pid ? HELD_LOCKS.has(this.lockPath) : (this.o.pidAlive ?? defaultPidAlive)(holder));
      if (alive) return `${this.o.dir} is in use by another process (pid ${holder}, lock file ${this.lockPath}): is a second hiercore-edge running for this station? Give each its own mqtt.store_dir`;
      this.o.log('warn', `verdict store ${this.o.dir}: taking over the stale lock of pid ${holder ?? '(unreadable lock file)'}, which is not running`);
      await this.fs.unlink(this.lockPath).catch(() => {});
    }
    return `cannot take the lock ${this.lockPath} (it keeps coming back: another process is starting on it)`;
  }

  private async lockHolder(): Promise<number | null> {
    try {
      const pid = Number((await this.fs.readFile(this.lockPath)).toString().split('\n')[0]);
      return Number.isInteger(pid) && pid > 0 ? pid : null;
    } catch {
      return null;
    }
  }

  private async load(): Promise<void> {
    const t0 = Date.now();
    let names: string[];
    try {
      names = (await this.fs.readdir(this.vdir)).sort();
    } catch (e) {
      return this.setError('read', e);
    }
    const bad: { name: string; why: string }[] = [];
    const found: number[] = [];
    for (const name of names) {
      const m = REC_NAME.exec(name);
      if (name.endsWith('.tmp')) {
        const seq = await this.recoverTemp(name);
        if (seq !== null) found.push(seq);
      } else if (m && Number(m[1]) < MAX_SEQ) found.push(Number(m[1]));
      else bad.push({ name, why: m ? 'sequence number out of range' : 'not a verdict record name' });
    }
    found.splice(0, found.length, ...new Set(found));
    const sizes = await mapChunked(found, (seq) => this.checkRecord(seq));
    found.forEach((seq, i) => {
      const size = sizes[i];
      if (typeof size !== 'number') return bad.push({ name: recName(seq), why: size.message });
      this.recs.set(seq, { seq, bytes: size, disk: 'yes' });
      this.totalBytes += size;
      this.onDiskCount++;
    });
    this.nextSeq = Math.max(this.nextSeq, (found.at(-1) ?? 0) + 1);
    await this.quarantine(bad);
    if (this.recs.size)
      this.o.log('info', `verdict queue ${this.o.dir}: ${this.recs.size} verdict(s) (${(this.totalBytes / 2 ** 20).toFixed(1)} MB) waiting from before, read in ${Date.now() - t0} ms`);
    this.enforceBounds();
  }

  /**
   * A complete, checksummed temp record is a verdict whose rename a power cut or a kill interrupted:
   * keep it. A torn one was never counted as stored: delete it.
   */
  private async recoverTemp(name: string): Promise<number | null> {
    const m = REC_NAME.exec(name.slice(0, -'.tmp'.length));
    const path = join(this.vdir, name);
    if (m) {
      const seq = Number(m[1]);
      try {
        decodeRecord(this.fs.readFileSync(path), seq);
        await this.fs.rename(path, join(this.vdir, recName(seq)));
        return seq;
      } catch {
        // torn or foreign: falls through to deletion
      }
    }
    await this.fs.unlink(path).catch(() => {});
    return null;
  }

  /** The record's size, or why it cannot be sent. */
  private checkRecord(seq: number): number | Error {
    try {
      const b = this.fs.readFileSync(join(this.vdir, recName(seq)));
      decodeRecord(b, seq);
      return b.length;
    } catch (e) {
      return e as Error;
    }
  }

  private async quarantine(bad: { name: string; why: string }[]): Promise<void> {
    if (!bad.length) return;
    const dir = join(this.o.dir, 'corrupt');
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    let moved = 0;
    await this.fs.mkdir(dir).catch(() => {});
    for (const b of bad) {
      const ok = await this.fs.rename(join(this.vdir, b.name), join(dir, `${stamp}-${b.name}`)).then(
        () => true,
        () => false,
      );
      if (ok) moved++;
    }
    this.corruptCount += bad.length;
    const sample = bad
      .slice(0, 3)
      .map((b) => `${b.name}: ${b.why}`)
      .join('; ');
    this.o.log('warn', `verdict queue ${this.vdir}: ${bad.length} damaged or unknown file(s) NOT sent, ${moved} moved to ${dir} for inspection (${sample}${bad.length > 3 ? '; …' : ''})`);
  }

  /**
   * A record that does not decode is damaged: moved aside. A read that fails (EIO, EMFILE) may work
   * later: the record stays queued and the store error says why (the caller retries in a while).
   */
  private async readFromDisk(rec: Rec): Promise<VerdictRecord | null> {
    let bytes: Buffer;
    try {
      bytes = await this.fs.readFile(join(this.vdir, recName(rec.seq)));
    } catch (e) {
      if (rec.gone) return null;
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') this.remove(rec, false);
      else this.setError('read', e);
      return null;
    }
    try {
      return decodeRecord(bytes, rec.seq);
    } catch (e) {
      if (rec.gone) return null;
      this.remove(rec, false);
      await this.quarantine([{ name: recName(rec.seq), why: (e as Error).message }]);
      return null;
    }
  }

  private queueWrite(rec: Rec): void {
    rec.disk = 'pending';
    this.writeQ.add(rec);
    this.drainWrites();
  }

  private drainWrites(): void {
    for (const rec of this.writeQ) {
      if (this.writing >= WRITE_CONCURRENCY) return;
      this.writeQ.delete(rec);
      void this.write(rec);
    }
  }

  private async write(rec: Rec): Promise<void> {
    const path = join(this.vdir, recName(rec.seq));
    this.writing++;
    rec.disk = 'writing';
    try {
      await this.fs.writeFile(`${path}.tmp`, encodeRecord(rec.seq, rec.frameId!, rec.payload!), { mode: 0o640, exclusive: false, sync: this.o.fsync === true });
      await this.fs.rename(`${path}.tmp`, path);
      this.wrote(rec, path);
    } catch (e) {
      await this.fs.unlink(`${path}.tmp`).catch(() => {});
      rec.disk = 'no';
      // Also when the verdict is acknowledged meanwhile: the next one may not be so lucky.
      this.setError('write', e);
    } finally {
      this.writing--;
      if (!this.closed) this.drainWrites();
      if (this.writing === 0) this.idleWaiters.splice(0).forEach((r) => r());
    }
  }

  private wrote(rec: Rec, path: string): void {
    rec.disk = 'yes';
    // Before anything else: a connected broker often acknowledges a verdict before its write ends.
    if (this.error) this.recovered();
    if (rec.gone) {
      void this.unlinkRecord(path);
      return;
    }
    this.onDiskCount++;
    rec.frameId = undefined;
    rec.payload = undefined;
  }

  private recovered(): void {
    const waiting = [...this.recs.values()].filter((r) => r.disk === 'no');
    this.o.log('info', `verdict store ${this.o.dir} writable again${waiting.length ? `: writing the ${waiting.length} verdict(s) kept in memory meanwhile` : ''}`);
    this.error = this.errorCode = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    for (const r of waiting) this.queueWrite(r);
  }

  private setError(op: 'write' | 'read' | 'delete', e: unknown): void {
    const code = `${op}:${errCode(e)}`;
    const what =
      op === 'delete'
        ? 'acknowledged verdicts cannot be deleted, so they will be sent again after a restart'
        : 'new verdicts are kept in memory only (same bounds) and still published, but lost if the daemon stops before the broker acknowledges them';
    this.error = `cannot ${op} in ${this.vdir} (${errText(e)}): ${what}`;
    if (code !== this.errorCode) this.o.log('error', `verdict store: ${this.error}`);
    this.errorCode = code;
    if (op === 'write') this.scheduleRetry();
  }

  /** Without new verdicts nothing would try the store again: probe it with the oldest memory-only one. */
  private scheduleRetry(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.error || this.closed) return;
      for (const r of this.recs.values()) {
        if (r.disk === 'no') return this.queueWrite(r);
      }
    }, this.o.retryMs ?? 5000);
    this.retryTimer.unref();
  }

  private async unlinkRecord(path: string): Promise<void> {
    try {
      await this.fs.unlink(path);
    } catch (e) {
      if (errCode(e) !== 'ENOENT') this.setError('delete', e);
    }
  }

  private remove(rec: Rec, deleteFile = true): void {
    this.recs.delete(rec.seq);
    this.writeQ.delete(rec);
    this.totalBytes -= rec.bytes;
    rec.gone = true;
    if (rec.disk !== 'yes') return;
    this.onDiskCount--;
    if (deleteFile) void this.unlinkRecord(join(this.vdir, recName(rec.seq)));
  }

  private enforceBounds(): void {
    let n = 0;
    for (const rec of this.recs.values()) {
      if (this.recs.size <= this.o.maxCount && this.totalBytes <= this.o.maxBytes) break;
      this.remove(rec);
      n++;
    }
    if (!n) return;
    this.droppedCount += n;
    this.drops.pending += n;
    const wait = this.drops.lastLog + DROP_LOG_MS - Date.now();
    if (wait <= 0) this.flushDropLog();
    else this.drops.timer ??= setTimeout(() => this.flushDropLog(), wait).unref();
  }

  private flushDropLog(): void {
    if (this.drops.timer) clearTimeout(this.drops.timer);
    this.drops.timer = null;
    if (!this.drops.pending) return;
    const mb = (this.o.maxBytes / 2 ** 20).toFixed(1);
    this.o.log('warn', `verdict queue full (bounds: ${this.o.maxCount} verdicts, ${mb} MB): dropped the ${this.drops.pending} oldest unacknowledged verdict(s), ${this.droppedCount} since start`);
    this.drops.pending = 0;
    this.drops.lastLog = Date.now();
  }
}

/** Versions before 0.2 kept verdicts in LevelDB here; those are not read any more, so say so once. */
function warnAboutLevelStore(dir: string, log: VerdictQueueOptions['log']): void {
  if (existsSync(join(dir, 'CURRENT')) && existsSync(join(dir, 'LOCK'))) {
    log('warn', `${dir} still holds a LevelDB verdict store of an earlier version; verdicts queued there are not sent by this version (delete the LevelDB files once the broker has them)`);
  }
}
