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
import { writeFileAtomic } from '../util/files.ts';
import { checkFramedPayload, decodeFramedHeader, encodeFramed, type FramedFormat } from '../util/framed-file.ts';
import type { FitMode } from '../features/image.ts';

export const BANK_MAGIC = 'HCEBANK\0';
export const BANK_FORMAT_VERSION = 1;

export interface BankHeader {
  format_version: number;
  created_at: string;
  backbone: { id: string; onnx_sha256: string };
  features: { width: number; height: number; fit: FitMode; pre_dim: number; dim: number; layers: string[]; grid: [number, number] };
  coreset: {
    ratio: number;
    projection_dim: number;
    seed: number;
    source_patches: number;
    source_images: number;
    build_ms?: number;
    /** banks before 2026-12-03 may record a two-stage selection */
    group_images?: number;
    group_share?: number;
  };
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
  const e = exp - 127 + 15;
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

const FORMAT: FramedFormat = {
  magic: BANK_MAGIC,
  version: BANK_FORMAT_VERSION,
  what: 'bank file',
  versionAdvice: 'rebuild the bank with "hiercore-edge calibrate"',
  error: BankFileError,
};

export function encodeBank(bank: Bank): Uint8Array {
  const { header, vectors } = bank;
  if (vectors.length !== header.count * header.dim) throw new BankFileError(`bank has ${vectors.length} values, header says ${header.count}x${header.dim}`);
  let payload: Uint8Array;
  if (header.dtype === 'float16') {
    const h = new Uint16Array(vectors.length);
    for (let i = 0; i < vectors.length; i++) h[i] = toFloat16(vectors[i]);
    payload = new Uint8Array(h.buffer);
  } else {
    payload = new Uint8Array(vectors.buffer, vectors.byteOffset, vectors.byteLength);
  }
  return encodeFramed(BANK_MAGIC, BANK_FORMAT_VERSION, { ...header, format_version: BANK_FORMAT_VERSION }, [payload]);
}

export function decodeBank(buf: Uint8Array, label = 'bank'): Bank {
  const { header, payloadStart: start } = decodeFramedHeader<BankHeader>(buf, FORMAT, label);
  const bytesPer = header.dtype === 'float16' ? 2 : header.dtype === 'float32' ? 4 : 0;
  if (!bytesPer || !(header.count > 0) || !(header.dim > 0)) throw new BankFileError(`${label}: corrupted (bad header fields dtype/count/dim)`);
  checkFramedPayload(buf, start, header.count * header.dim * bytesPer, FORMAT, label);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
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
export function assertBankMatches(
  header: BankHeader,
  expected: { backboneId: string; onnxSha256: string; width: number; height: number; fit: FitMode; preDim: number; dim: number },
  label = 'bank',
): void {
  const f = header.features;
  if (header.backbone.onnx_sha256 !== expected.onnxSha256) {
    throw new BankFileError(
      `${label} was built with backbone "${header.backbone.id}" (${header.backbone.onnx_sha256.slice(0, 12)}…), but the loaded backbone is "${expected.backboneId}" (${expected.onnxSha256.slice(0, 12)}…); recalibrate or load the matching backbone`,
    );
  }
  const diffs: string[] = [];
  if (f.width !== expected.width || f.height !== expected.height) diffs.push(`input ${f.width}x${f.height} vs ${expected.width}x${expected.height}`);
  if (f.fit !== expected.fit) diffs.push(`fit ${f.fit} vs ${expected.fit}`);
  if (f.pre_dim !== expected.preDim || f.dim !== expected.dim) diffs.push(`feature dims ${f.pre_dim}/${f.dim} vs ${expected.preDim}/${expected.dim}`);
  if (diffs.length) throw new BankFileError(`${label} was built with other feature settings (${diffs.join('; ')})`);
}
