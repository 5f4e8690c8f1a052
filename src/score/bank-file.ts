/**
 * Memory-bank file (.hcebank):
 *
 *   "HCEBANK\0"  8 bytes magic
 *   u32 LE      format version (1)
 *   u32 LE      header length in bytes (JSON, UTF-8, space-padded to a multiple of 8)
 *   header      JSON: BankHeader
 *   payload     count x dim values, float32 or float16, little-endian
 *   sha256      32 bytes over everything above
 *
 * The checksum catches torn copies and bit rot; the header pins the backbone (by hash) and the
 * preprocessing so a bank is never scored against features it was not built from.
 */
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { writeFileAtomic } from '../util/files.ts';
import type { FitMode } from '../features/image.ts';

export const BANK_MAGIC = 'HCEBANK\0';
export const BANK_FORMAT_VERSION = 1;

export interface BankHeader {
  format_version: number;
  created_at: string;
  backbone: { id: string; onnx_sha256: string };
  features: { width: number; height: number; fit: FitMode; pre_dim: number; dim: number; layers: string[]; grid: [number, number] };
  coreset: { ratio: number; projection_dim: number; seed: number; source_patches: number; source_images: number; build_ms?: number };
  count: number;
  dim: number;
  dtype: 'float32' | 'float16';
  /** free-form calibration facts (score distribution of nominal images, threshold) */
  calibration?: Record<string, unknown>;
}

export interface Bank {
  header: BankHeader;
  vectors: Float32Array; // [count, dim]
}

export class BankFileError extends Error {}

export function toFloat16(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    if ((mant >>> (shift - 1)) & 1) h += 1;
    return sign | h;
  }
  let h = sign | (e << 10) | (mant >>> 13);
  if (mant & 0x1000) h += 1; // round half up; carries into the exponent correctly
  return h;
}

export function fromFloat16(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function encodeBank(bank: Bank): Uint8Array {
  const { header, vectors } = bank;
  if (vectors.length !== header.count * header.dim) throw new BankFileError(`bank has ${vectors.length} values, header says ${header.count}x${header.dim}`);
  let json = JSON.stringify({ ...header, format_version: BANK_FORMAT_VERSION });
  while (Buffer.byteLength(json) % 8 !== 0) json += ' ';
  const hdr = new TextEncoder().encode(json);
  const pre = new Uint8Array(16);
  pre.set(new TextEncoder().encode(BANK_MAGIC), 0);
  const dv = new DataView(pre.buffer);
  dv.setUint32(8, BANK_FORMAT_VERSION, true);
  dv.setUint32(12, hdr.length, true);
  let payload: Uint8Array;
  if (header.dtype === 'float16') {
    const h = new Uint16Array(vectors.length);
    for (let i = 0; i < vectors.length; i++) h[i] = toFloat16(vectors[i]);
    payload = new Uint8Array(h.buffer);
  } else {
    payload = new Uint8Array(vectors.buffer, vectors.byteOffset, vectors.byteLength);
  }
  const hash = createHash('sha256').update(pre).update(hdr).update(payload).digest();
  const out = new Uint8Array(pre.length + hdr.length + payload.length + 32);
  out.set(pre, 0);
  out.set(hdr, 16);
  out.set(payload, 16 + hdr.length);
  out.set(hash, 16 + hdr.length + payload.length);
  return out;
}

export function decodeBank(buf: Uint8Array, label = 'bank'): Bank {
  if (buf.length < 16 + 32) throw new BankFileError(`${label}: truncated (${buf.length} bytes is shorter than any bank file)`);
  const magic = new TextDecoder().decode(buf.subarray(0, 8));
  if (magic !== BANK_MAGIC) throw new BankFileError(`${label}: not a hiercore-edge bank file (bad magic)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const version = dv.getUint32(8, true);
  if (version !== BANK_FORMAT_VERSION) {
    throw new BankFileError(`${label}: bank format version ${version} is not supported by this build (supports ${BANK_FORMAT_VERSION}); rebuild the bank with "hiercore-edge calibrate"`);
  }
  const hlen = dv.getUint32(12, true);
  if (16 + hlen + 32 > buf.length) throw new BankFileError(`${label}: truncated (header runs past the end of the file)`);
  let header: BankHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(buf.subarray(16, 16 + hlen)));
  } catch {
    throw new BankFileError(`${label}: corrupted (header is not valid JSON)`);
  }
  const bytesPer = header.dtype === 'float16' ? 2 : header.dtype === 'float32' ? 4 : 0;
  if (!bytesPer || !(header.count > 0) || !(header.dim > 0)) throw new BankFileError(`${label}: corrupted (bad header fields dtype/count/dim)`);
  const payloadLen = header.count * header.dim * bytesPer;
  const expected = 16 + hlen + payloadLen + 32;
  if (buf.length < expected) throw new BankFileError(`${label}: truncated (${buf.length} bytes, expected ${expected})`);
  if (buf.length > expected) throw new BankFileError(`${label}: corrupted (${buf.length - expected} unexpected trailing bytes)`);
  const hash = createHash('sha256').update(buf.subarray(0, expected - 32)).digest();
  if (!hash.equals(buf.subarray(expected - 32, expected))) throw new BankFileError(`${label}: corrupted (checksum mismatch)`);
  const start = 16 + hlen;
  const vectors = new Float32Array(header.count * header.dim);
  if (bytesPer === 2) {
    for (let i = 0; i < vectors.length; i++) vectors[i] = fromFloat16(dv.getUint16(start + 2 * i, true));
  } else {
    for (let i = 0; i < vectors.length; i++) vectors[i] = dv.getFloat32(start + 4 * i, true);
  }
  return { header, vectors };
}

export function writeBankFile(path: string, bank: Bank): void {
  writeFileAtomic(path, encodeBank(bank));
}

export function readBankFile(path: string): Bank {
  let buf: Uint8Array;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new BankFileError(`cannot read bank ${path}: ${(e as Error).message}`);
  }
  return decodeBank(buf, path);
}

/** Refuse a bank built with another backbone or other feature settings. */
export function assertBankMatches(header: BankHeader, expected: { backboneId: string; onnxSha256: string; width: number; height: number; fit: FitMode; preDim: number; dim: number }, label = 'bank'): void {
  const f = header.features;
  if (header.backbone.onnx_sha256 !== expected.onnxSha256) {
    throw new BankFileError(`${label} was built with backbone "${header.backbone.id}" (${header.backbone.onnx_sha256.slice(0, 12)}…), but the loaded backbone is "${expected.backboneId}" (${expected.onnxSha256.slice(0, 12)}…); recalibrate or load the matching backbone`);
  }
  const diffs: string[] = [];
  if (f.width !== expected.width || f.height !== expected.height) diffs.push(`input ${f.width}x${f.height} vs ${expected.width}x${expected.height}`);
  if (f.fit !== expected.fit) diffs.push(`fit ${f.fit} vs ${expected.fit}`);
  if (f.pre_dim !== expected.preDim || f.dim !== expected.dim) diffs.push(`feature dims ${f.pre_dim}/${f.dim} vs ${expected.preDim}/${expected.dim}`);
  if (diffs.length) throw new BankFileError(`${label} was built with other feature settings (${diffs.join('; ')})`);
}
