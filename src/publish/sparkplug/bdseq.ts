/**
 * The birth/death sequence number outlives the process: a host pairs each NDEATH with the NBIRTH of
 * the same bdSeq, so a restarted station that started again at the number of its previous session
 * could have its fresh session declared dead by that session's late Will.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../../util/files.ts';

export const BDSEQ_FILE = 'sparkplug-bdseq.json';

export class BdSeqStore {
  constructor(readonly path: string) {}

  /** The bdSeq of the last Will registered, or null when none was (a first start: the next is 0). */
  last(): number | null {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    const v = (JSON.parse(text) as { bdSeq?: unknown }).bdSeq;
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > 255) throw new Error(`${this.path}: bdSeq ${JSON.stringify(v)} is not an integer 0-255`);
    return v as number;
  }

  /** Takes the number for the next MQTT CONNECT and records it before the CONNECT is sent. */
  advance(): number {
    const prev = this.last();
    const next = prev === null ? 0 : (prev + 1) & 0xff;
    mkdirSync(dirname(this.path), { recursive: true });
    writeFileAtomic(this.path, Buffer.from(`${JSON.stringify({ bdSeq: next, at: new Date().toISOString() })}\n`));
    return next;
  }
}
