/**
 * Bank bundle (.hcebundle): everything one calibration produced, in one file written atomically.
 *
 *   "HCEBNDL\0"  8 bytes magic
 *   u32 LE      format version (1)
 *   u32 LE      header length (JSON, UTF-8, space-padded to a multiple of 8)
 *   header      JSON: BundleHeader (clusters, thresholds, routing limits, statistics, section table)
 *   sections    per cluster: routing keys (float32 [count, semantic_dim]) and its bank (a complete
 *               .hcebank image with its own checksum), at the offsets the header lists
 *   sha256      32 bytes over everything above
 */
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { writeFileAtomic } from '../util/files.ts';
import { checkFramedPayload, decodeFramedHeader, encodeFramed, type FramedFormat } from '../util/framed-file.ts';
import { decodeBank, encodeBank, type Bank } from '../score/bank-file.ts';
import type { FitMode } from '../features/image.ts';
import type { ScoreSummary } from './threshold.ts';
import type { KeyMode, LimitRule } from '../route/router.ts';

export const BUNDLE_MAGIC = 'HCEBNDL\0';
export const BUNDLE_FORMAT_VERSION = 1;

export interface ClusterInfo {
  id: number;
  /** folder label in known_class mode, else "cluster-<id>" */
  name: string;
  members: string[];
  features: { width: number; height: number; fit: FitMode };
  keys: { count: number; offset: number; length: number };
  bank: { count: number; offset: number; length: number };
  threshold: number;
  threshold_source: 'frr' | 'f1';
  thresholds: { frr: number; f1?: number; f1_score?: number; defect_images?: number };
  routing_limit: number;
  statistics: {
    /** held-out (k-fold) scores of this cluster's good images */
    nominal: ScoreSummary;
    /** leave-one-out nearest-key distances of the members */
    key_distance: ScoreSummary;
    /** 90th percentile of how far turning a member over moves its embedding (the backbone's unit) */
    pose_scale: number;
    /** FINCH groups merged into this cluster because they were one product in other poses */
    merged_groups?: number;
  };
}

export interface BundleHeader {
  format_version: number;
  /** unique per calibration run; verdicts carry it */
  bundle_id: string;
  created_at: string;
  backbone: { id: string; onnx_sha256: string };
  semantic_dim: number;
  settings: {
    input_size: string;
    fit: FitMode;
    pre_dim: number;
    dim: number;
    frr_target: number;
    folds: number;
    key_mode: KeyMode;
    routing_limit: LimitRule;
  };
  calibration: {
    mode: 'cluster' | 'known_class';
    images: number;
    clustering?: { hierarchy: { count: number; silhouette: number | null }[]; chosen: number; reason: string; merged: unknown[] };
    duration_s: number;
  };
  clusters: ClusterInfo[];
}

export interface BundleCluster {
  info: ClusterInfo;
  keys: Float32Array;
  bank: Bank;
}

export interface Bundle {
  header: BundleHeader;
  clusters: BundleCluster[];
}

export class BundleFileError extends Error {}

export function newBundleId(): string {
  return randomUUID();
}

export function encodeBundle(b: Bundle): Uint8Array {
  const sections: Uint8Array[] = [];
  let offset = 0;
  const clusters = b.clusters.map((c) => {
    if (c.keys.length !== c.info.keys.count * b.header.semantic_dim) throw new BundleFileError(`cluster ${c.info.id}: ${c.keys.length} key values, expected ${c.info.keys.count}x${b.header.semantic_dim}`);
    const keys = new Uint8Array(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
    const bank = encodeBank(c.bank);
    const info: ClusterInfo = { ...c.info, keys: { count: c.info.keys.count, offset, length: keys.length }, bank: { count: c.bank.header.count, offset: offset + keys.length, length: bank.length } };
    sections.push(keys, bank);
    offset += keys.length + bank.length;
    return info;
  });
  return encodeFramed(BUNDLE_MAGIC, BUNDLE_FORMAT_VERSION, { ...b.header, format_version: BUNDLE_FORMAT_VERSION, clusters }, sections);
}

const FORMAT: FramedFormat = {
  magic: BUNDLE_MAGIC,
  version: BUNDLE_FORMAT_VERSION,
  what: 'bundle',
  magicHint: (magic) => (magic === 'HCEBANK\0' ? ' (this is a single bank file; build a bundle with "hiercore-edge calibrate")' : ''),
  versionAdvice: 'recalibrate with this version',
  error: BundleFileError,
};

/** Header only: enough for `bundle info` and for comparing bundles, without decoding the banks. */
export function decodeBundleHeader(buf: Uint8Array, label = 'bundle'): { header: BundleHeader; payloadStart: number } {
  const r = decodeFramedHeader<BundleHeader>(buf, FORMAT, label);
  const h = r.header;
  if (!Array.isArray(h.clusters) || h.clusters.length === 0 || !(h.semantic_dim > 0)) throw new BundleFileError(`${label}: corrupted (no clusters or no semantic_dim in the header)`);
  return r;
}

export function decodeBundle(buf: Uint8Array, label = 'bundle'): Bundle {
  const { header, payloadStart } = decodeBundleHeader(buf, label);
  checkFramedPayload(buf, payloadStart, header.clusters.reduce((s, c) => Math.max(s, c.bank.offset + c.bank.length), 0), FORMAT, label);
  const clusters = header.clusters.map((info) => {
    const k = buf.subarray(payloadStart + info.keys.offset, payloadStart + info.keys.offset + info.keys.length);
    const keys = new Float32Array(k.length / 4);
    new Uint8Array(keys.buffer).set(k);
    const bank = decodeBank(buf.subarray(payloadStart + info.bank.offset, payloadStart + info.bank.offset + info.bank.length), `${label} cluster ${info.id} bank`);
    return { info, keys, bank };
  });
  return { header, clusters };
}

export function writeBundleFile(path: string, b: Bundle): void {
  writeFileAtomic(path, encodeBundle(b));
}

function readBytes(path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new BundleFileError(`cannot read bundle ${path}: ${(e as Error).message}`);
  }
}

export function readBundleFile(path: string): Bundle {
  return decodeBundle(readBytes(path), path);
}

export function readBundleHeader(path: string): BundleHeader {
  return decodeBundleHeader(readBytes(path), path).header;
}
