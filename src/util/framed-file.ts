/**
 * The container shared by bank (.hcebank) and bundle (.hcebundle) files:
 *
 *   magic    8 bytes
 *   u32 LE   format version
 *   u32 LE   header length (JSON, UTF-8, space-padded to a multiple of 8)
 *   header   JSON
 *   payload  format-specific
 *   sha256   32 bytes over everything above
 */
import { createHash } from 'node:crypto';

export function encodeFramed(magic: string, version: number, header: unknown, payload: Uint8Array[]): Uint8Array {
  let json = JSON.stringify(header);
  while (Buffer.byteLength(json) % 8 !== 0) json += ' ';
  const hdr = new TextEncoder().encode(json);
  const pre = new Uint8Array(16);
  pre.set(new TextEncoder().encode(magic), 0);
  const dv = new DataView(pre.buffer);
  dv.setUint32(8, version, true);
  dv.setUint32(12, hdr.length, true);
  const payloadLen = payload.reduce((s, p) => s + p.length, 0);
  const hash = createHash('sha256').update(pre).update(hdr);
  for (const p of payload) hash.update(p);
  const out = new Uint8Array(16 + hdr.length + payloadLen + 32);
  out.set(pre, 0);
  out.set(hdr, 16);
  let at = 16 + hdr.length;
  for (const p of payload) {
    out.set(p, at);
    at += p.length;
  }
  out.set(hash.digest(), at);
  return out;
}

export interface FramedFormat {
  magic: string;
  version: number;
  /** "bank file", "bundle": used in messages */
  what: string;
  /** extra words for a file with another magic (e.g. "this is a bank, not a bundle") */
  magicHint?: (magic: string) => string;
  /** what to do about a file of another format version */
  versionAdvice: string;
  error: new (msg: string) => Error;
}

/** Checks magic, version and header bounds; parses the JSON header. */
export function decodeFramedHeader<T>(buf: Uint8Array, f: FramedFormat, label: string): { header: T; payloadStart: number } {
  const fail = (msg: string) => new f.error(`${label}: ${msg}`);
  if (buf.length < 16 + 32) throw fail(`truncated (${buf.length} bytes is shorter than any ${f.what})`);
  const magic = new TextDecoder().decode(buf.subarray(0, 8));
  if (magic !== f.magic) throw fail(`not a hiercore-edge ${f.what} (bad magic)${f.magicHint?.(magic) ?? ''}`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const version = dv.getUint32(8, true);
  if (version !== f.version) throw fail(`${f.what.split(' ')[0]} format version ${version} is not supported by this build (supports ${f.version}); ${f.versionAdvice}`);
  const hlen = dv.getUint32(12, true);
  if (16 + hlen + 32 > buf.length) throw fail('truncated (header runs past the end of the file)');
  try {
    return { header: JSON.parse(new TextDecoder().decode(buf.subarray(16, 16 + hlen))) as T, payloadStart: 16 + hlen };
  } catch {
    throw fail('corrupted (header is not valid JSON)');
  }
}

/** Checks that the file is exactly header + `payloadLen` bytes + checksum, and the checksum. */
export function checkFramedPayload(buf: Uint8Array, payloadStart: number, payloadLen: number, f: FramedFormat, label: string): void {
  const expected = payloadStart + payloadLen + 32;
  if (buf.length < expected) throw new f.error(`${label}: truncated (${buf.length} bytes, expected ${expected})`);
  if (buf.length > expected) throw new f.error(`${label}: corrupted (${buf.length - expected} unexpected trailing bytes)`);
  const hash = createHash('sha256')
    .update(buf.subarray(0, expected - 32))
    .digest();
  if (!hash.equals(buf.subarray(expected - 32, expected))) throw new f.error(`${label}: corrupted (checksum mismatch)`);
}
