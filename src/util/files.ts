import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function sha256File(path: string): string {
  return sha256(readFileSync(path));
}

/**
 * Write a file so that a reader sees either the old or the new content, never a torn one, even if the
 * box loses power: temp file in the same directory, fsync, rename, fsync the directory.
 */
export function writeFileAtomic(path: string, chunks: Uint8Array | Uint8Array[]): void {
  const parts = Array.isArray(chunks) ? chunks : [chunks];
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  // Bundles, banks and state hold the plant's data: group-readable (operators), not world-readable.
  const fd = openSync(tmp, 'w', 0o640);
  try {
    for (const p of parts) {
      let off = 0;
      while (off < p.byteLength) off += writeSync(fd, p, off, p.byteLength - off);
    }
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      /* already gone */
    }
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  try {
    const dfd = openSync(dirname(path), 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename itself is still atomic.
  }
}
