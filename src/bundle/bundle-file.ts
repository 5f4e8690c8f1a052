/**
 * Bank bundle (.hcebundle): everything one calibration produced, in one file written atomically.
 *
 *   "HCEBNDL\0"  8 bytes magic
 *   u32 LE      format version (2; version 1 is still read)
 *   u32 LE      header length (JSON, UTF-8, space-padded to a multiple of 8)
 *   header      JSON: BundleHeader (scoring settings, clusters, thresholds, routing limits, statistics,
 *               section table)
 *   sections    per cluster: routing keys (float32 [count, semantic_dim]) and its bank (a complete
 *               .hcebank image with its own checksum), at the offsets the header lists
 *   sha256      32 bytes over everything above
 *
 * Version 2 added the `scoring` section, because a threshold only holds under the scoring settings it
 * was computed with. The version was bumped, not just a field added, so that an older build refuses a
 * version 2 bundle instead of scoring it without its re-weighting. Version 1 bundles stay loadable
 * (a factory line must not stop on an upgrade): they are read with the settings every daemon scored
 * them with, re-weighting 0 and sigma 4, and marked `scoring.legacy`.
 */
import type { SplitStep } from '../route/finch.ts';
import type { ScalePair } from '../route/scale-merge.ts';
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { constants as bufferConstants } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import type { DefectTypes } from '../explain/discover.ts';
import { writeFileAtomic } from '../util/files.ts';
import { checkFramedPayload, decodeFramedHeader, encodeFramed, type FramedFormat } from '../util/framed-file.ts';
import { BankFileError, decodeBank, encodeBank, type Bank } from '../score/bank-file.ts';
import { FIT_MODES, type FitMode } from '../features/image.ts';
import type { ScoreSummary } from '../calibrate/threshold.ts';
import type { SearchSettings } from '../score/ann.ts';
import { COARSE_TYPES, SEARCH_MODES } from '../config.ts';
import { KEY_MODES, type KeyMode, type LimitRule } from '../route/router.ts';

export const BUNDLE_MAGIC = 'HCEBNDL\0';
export const BUNDLE_FORMAT_VERSION = 2;
const READABLE_VERSIONS = [1, BUNDLE_FORMAT_VERSION];

/** What every build before format 2 scored with, whatever calibrate had used. */
export const LEGACY_SCORING = { reweight_neighbours: 0, heatmap_sigma: 4 } as const;

/** Same default as the daemon's bundle_max_mb: a bound for callers that have no configuration. */
export const DEFAULT_BUNDLE_MAX_BYTES = 2048 * 2 ** 20;

/** Everything a score depends on besides the banks: thresholds hold only under these. */
export interface BundleScoring {
  input_size: string;
  fit: FitMode;
  pre_dim: number;
  dim: number;
  /** PatchCore Eq. 7 re-weighting neighbours (0 = off) */
  reweight_neighbours: number;
  heatmap_sigma: number;
  /** nearest-neighbour search the thresholds were computed with; absent = exact (every bundle before it) */
  search?: SearchSettings;
  /** a format 1 bundle: the settings were not recorded, these are the ones it was always scored with */
  legacy?: true;
}

/** Configured scoring settings: null = take the bundle's; a number must equal it. */
export interface ScoringOverrides {
  reweight_neighbours: number | null;
  heatmap_sigma: number | null;
}

export const NO_SCORING_OVERRIDES: ScoringOverrides = { reweight_neighbours: null, heatmap_sigma: null };

/** One split test of unlabelled calibration, as the clustering recorded it. */
export type ClusterSplit = SplitStep;

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
  scoring: BundleScoring;
  settings: {
    frr_target: number;
    folds: number;
    key_mode: KeyMode;
    routing_limit: LimitRule;
  };
  calibration: {
    mode: 'cluster' | 'known_class';
    images: number;
    clustering?: {
      hierarchy: { count: number; silhouette: number | null }[];
      chosen: number;
      reason: string;
      merged: unknown[];
      /** the recursive "one product or several?" tests, parents first (absent in older bundles) */
      splits?: ClusterSplit[];
      /** the scale test's pairs: clusters of other frame sizes compared at one pixel scale (absent in older bundles) */
      scale_tests?: ScalePair[];
      /** the quarter-turn test's pairs: a cluster's turned copies against another's images (absent in older bundles) */
      turn_tests?: ScalePair[];
    };
    duration_s: number;
  };
  /** defect types per cluster, from `hiercore-edge defects discover` (optional) */
  defect_types?: DefectTypes;
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

/** A configured scoring setting that disagrees with the one the bundle's thresholds were computed with. */
export class ScoringMismatchError extends BundleFileError {}

export function newBundleId(): string {
  return randomUUID();
}

export function encodeBundle(b: Bundle): Uint8Array {
  const sections: Uint8Array[] = [];
  let offset = 0;
  const clusters = b.clusters.map((c) => {
    if (c.keys.length !== c.info.keys.count * b.header.semantic_dim)
      throw new BundleFileError(`cluster ${c.info.id}: ${c.keys.length} key values, expected ${c.info.keys.count}x${b.header.semantic_dim}`);
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
  versionAdvice: 'recalibrate with this version (it reads format 1 and 2 bundles)',
  error: BundleFileError,
};

/** The framing for the version the file says, when this build reads it; else the current one (which then refuses it). */
function formatOf(buf: Uint8Array): FramedFormat {
  if (buf.length < 12) return FORMAT;
  const version = new DataView(buf.buffer, buf.byteOffset + 8, 4).getUint32(0, true);
  return READABLE_VERSIONS.includes(version) ? { ...FORMAT, version } : FORMAT;
}

/** Header only: enough for `bundle info` and for comparing bundles, without decoding the banks. */
export function decodeBundleHeader(buf: Uint8Array, label = 'bundle'): { header: BundleHeader; payloadStart: number } {
  const format = formatOf(buf);
  const r = decodeFramedHeader<unknown>(buf, format, label);
  return { header: checkHeader(r.header, format.version, label), payloadStart: r.payloadStart };
}

export function decodeBundle(buf: Uint8Array, label = 'bundle'): Bundle {
  const { header, payloadStart } = decodeBundleHeader(buf, label);
  const end = header.clusters.reduce((m, c) => Math.max(m, c.keys.offset + c.keys.length, c.bank.offset + c.bank.length), 0);
  // From here every section lies inside the buffer: the file is exactly header + `end` + checksum.
  checkFramedPayload(buf, payloadStart, end, formatOf(buf), label);
  const section = (s: { offset: number; length: number }) => buf.subarray(payloadStart + s.offset, payloadStart + s.offset + s.length);
  const clusters = header.clusters.map((info) => {
    const k = section(info.keys);
    const keys = new Float32Array(k.length / 4);
    new Uint8Array(keys.buffer).set(k);
    return { info, keys, bank: decodeClusterBank(section(info.bank), info, header.scoring, label) };
  });
  return { header, clusters };
}

function decodeClusterBank(bytes: Uint8Array, info: ClusterInfo, scoring: BundleScoring, label: string): Bank {
  let bank: Bank;
  try {
    bank = decodeBank(bytes, `${label} cluster ${info.id} bank`);
  } catch (e) {
    // One error type for everything wrong with a bundle file, nested bank included.
    if (e instanceof BankFileError) throw new BundleFileError(e.message);
    throw e;
  }
  if (bank.header.count !== info.bank.count || bank.header.dim !== scoring.dim) {
    throw new BundleFileError(`${label}: corrupted (cluster ${info.id} bank holds ${bank.header.count}x${bank.header.dim}, the header says ${info.bank.count}x${scoring.dim})`);
  }
  return bank;
}

export function writeBundleFile(path: string, b: Bundle): void {
  writeFileAtomic(path, encodeBundle(b));
}

/**
 * Reads and decodes a bundle, refusing before any allocation what is not a regular file of at most
 * `maxBytes` (a device such as /dev/zero, a FIFO, a directory). O_NONBLOCK: opening a FIFO with no
 * writer would otherwise block the thread for good; on a regular file it changes nothing.
 */
export function readBundleFileBounded(path: string, maxBytes: number): Bundle {
  const { fd, size } = openRegular(path, maxBytes);
  try {
    return decodeBundle(readAt(fd, 0, size), path);
  } finally {
    closeSync(fd);
  }
}

export function readBundleFile(path: string): Bundle {
  return readBundleFileBounded(path, bufferConstants.MAX_LENGTH);
}

/**
 * The header of a bundle file, reading only the header (at most `maxHeaderBytes` of JSON), not the
 * banks; checksum not verified.
 */
export function readBundleHeader(path: string, maxHeaderBytes = 64 * 2 ** 20): BundleHeader {
  const { fd, size } = openRegular(path, Infinity);
  try {
    const pre = readAt(fd, 0, Math.min(16, size));
    const hlen = pre.length === 16 ? pre.readUInt32LE(12) : 0;
    if (hlen > maxHeaderBytes && pre.toString('latin1', 0, 8) === BUNDLE_MAGIC) throw new BundleFileError(`${path}: header of ${hlen} bytes is larger than the ${maxHeaderBytes} read for a header`);
    // decodeBundleHeader checks the framing, the header and that the file is long enough for both,
    // never the checksum: zeros stand in for it (and for the banks).
    const buf = Buffer.alloc(Math.min(size, 16 + Math.min(hlen, maxHeaderBytes) + 32));
    readAt(fd, 0, Math.min(buf.length, 16 + hlen)).copy(buf);
    return decodeBundleHeader(buf, path).header;
  } finally {
    closeSync(fd);
  }
}

function openRegular(path: string, maxBytes: number): { fd: number; size: number } {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (e) {
    throw new BundleFileError(`cannot read bundle ${path}: ${(e as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new BundleFileError(`cannot read bundle ${path}: not a regular file`);
    if (st.size > maxBytes) throw new BundleFileError(`cannot read bundle ${path}: ${st.size} bytes is more than the limit of ${maxBytes}`);
    return { fd, size: st.size };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** Up to `length` bytes from `position`; fewer when the file is shorter (it may shrink while read). */
function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buf, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got < length ? buf.subarray(0, got) : buf;
}

/**
 * Throws when a configured (non-null) scoring setting differs from the bundle's: its thresholds were
 * computed under the bundle's, and mean something else under any other.
 */
export function checkScoringOverrides(overrides: ScoringOverrides, header: BundleHeader): void {
  for (const key of ['reweight_neighbours', 'heatmap_sigma'] as const) {
    const configured = overrides[key];
    const own = header.scoring[key];
    if (configured === null || configured === undefined || configured === own) continue;
    const why = header.scoring.legacy
      ? `predates recorded scoring settings and is scored with ${key} ${own}, as it always was`
      : `was calibrated with ${key} ${own}, and its thresholds hold only for that`;
    throw new ScoringMismatchError(
      `scoring.${key} is configured as ${configured}, but bundle ${header.bundle_id} ${why}: set scoring.${key} to null (= from the bundle), or recalibrate with ${configured}`,
    );
  }
}

// ---- header validation: a header is data from a file; nothing downstream should meet a surprise ----

type Fields = Record<string, unknown>;

class HeaderShape {
  constructor(private readonly label: string) {}

  fail(at: string, want: string): never {
    throw new BundleFileError(`${this.label}: corrupted (header field ${at} is not ${want})`);
  }
  object(v: unknown, at: string): Fields {
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Fields) : this.fail(at, 'an object');
  }
  array(v: unknown, at: string, min = 0): unknown[] {
    return Array.isArray(v) && v.length >= min ? v : this.fail(at, min ? `a list of at least ${min}` : 'a list');
  }
  int(v: unknown, at: string, min = 0): number {
    return Number.isSafeInteger(v) && (v as number) >= min ? (v as number) : this.fail(at, `an integer >= ${min}`);
  }
  num(v: unknown, at: string, min = -Infinity): number {
    return typeof v === 'number' && Number.isFinite(v) && v >= min ? v : this.fail(at, min === -Infinity ? 'a number' : `a number >= ${min}`);
  }
  str(v: unknown, at: string): string {
    return typeof v === 'string' ? v : this.fail(at, 'a string');
  }
  oneOf<T extends string>(v: unknown, at: string, values: readonly T[]): T {
    return values.includes(v as T) ? (v as T) : this.fail(at, `one of ${values.join(', ')}`);
  }
}

function checkHeader(raw: unknown, version: number, label: string): BundleHeader {
  const s = new HeaderShape(label);
  const h = s.object(raw, 'header');
  s.str(h.bundle_id, 'bundle_id');
  s.str(h.created_at, 'created_at');
  const backbone = s.object(h.backbone, 'backbone');
  s.str(backbone.id, 'backbone.id');
  s.str(backbone.onnx_sha256, 'backbone.onnx_sha256');
  const semanticDim = s.int(h.semantic_dim, 'semantic_dim', 1);
  const { input_size, fit, pre_dim, dim, ...settings } = s.object(h.settings, 'settings');
  const scoring = version === 1 ? { input_size, fit, pre_dim, dim, ...LEGACY_SCORING, legacy: true } : h.scoring;
  checkScoring(s, scoring, version === 1 ? 'settings' : 'scoring');
  s.num(settings.frr_target, 'settings.frr_target');
  s.int(settings.folds, 'settings.folds');
  s.oneOf(settings.key_mode, 'settings.key_mode', KEY_MODES);
  s.object(settings.routing_limit, 'settings.routing_limit');
  const calibration = s.object(h.calibration, 'calibration');
  s.oneOf(calibration.mode, 'calibration.mode', ['cluster', 'known_class']);
  s.int(calibration.images, 'calibration.images');
  s.array(h.clusters, 'clusters', 1).forEach((c, i) => checkCluster(s, c, i, semanticDim));
  if (calibration.clustering !== undefined) {
    const k = s.object(calibration.clustering, 'calibration.clustering');
    checkSplits(s, k.splits, (h.clusters as unknown[]).length);
    checkScaleTests(s, k.scale_tests, 'scale_tests', (h.clusters as unknown[]).length);
    checkScaleTests(s, k.turn_tests, 'turn_tests', (h.clusters as unknown[]).length);
  }
  if (h.defect_types !== undefined) s.array(s.object(h.defect_types, 'defect_types').clusters, 'defect_types.clusters');
  return { ...h, format_version: version, scoring, settings } as unknown as BundleHeader;
}

function checkScoring(s: HeaderShape, v: unknown, at: string): void {
  const o = s.object(v, at);
  s.str(o.input_size, `${at}.input_size`);
  s.oneOf(o.fit, `${at}.fit`, FIT_MODES);
  s.int(o.pre_dim, `${at}.pre_dim`, 1);
  s.int(o.dim, `${at}.dim`, 1);
  s.int(o.reweight_neighbours, 'scoring.reweight_neighbours');
  if (!(s.num(o.heatmap_sigma, 'scoring.heatmap_sigma') > 0)) s.fail('scoring.heatmap_sigma', 'a number > 0');
  if (o.legacy !== undefined && o.legacy !== true) s.fail('scoring.legacy', 'true or absent');
  if (o.search !== undefined) checkSearch(s, o.search);
}

function checkSearch(s: HeaderShape, v: unknown): void {
  const q = s.object(v, 'scoring.search');
  s.oneOf(q.mode, 'scoring.search.mode', SEARCH_MODES);
  if (q.mode === 'ann') {
    s.int(q.projection_dim, 'scoring.search.projection_dim', 1);
    s.int(q.candidates, 'scoring.search.candidates', 1);
    if (q.coarse !== undefined) s.oneOf(q.coarse, 'scoring.search.coarse', COARSE_TYPES);
  }
}

function checkCluster(s: HeaderShape, v: unknown, i: number, semanticDim: number): void {
  const at = `clusters[${i}]`;
  const c = s.object(v, at);
  if (c.id !== i) s.fail(`${at}.id`, `${i} (its place in the list)`);
  s.str(c.name, `${at}.name`);
  s.array(c.members, `${at}.members`).forEach((m, j) => s.str(m, `${at}.members[${j}]`));
  const f = s.object(c.features, `${at}.features`);
  s.int(f.width, `${at}.features.width`, 1);
  s.int(f.height, `${at}.features.height`, 1);
  s.oneOf(f.fit, `${at}.features.fit`, FIT_MODES);
  const keys = checkSection(s, c.keys, `${at}.keys`);
  if (keys.length !== keys.count * semanticDim * 4) s.fail(`${at}.keys.length`, `${keys.count} keys x ${semanticDim} x 4 bytes`);
  checkSection(s, c.bank, `${at}.bank`);
  s.num(c.threshold, `${at}.threshold`);
  s.oneOf(c.threshold_source, `${at}.threshold_source`, ['frr', 'f1']);
  s.num(s.object(c.thresholds, `${at}.thresholds`).frr, `${at}.thresholds.frr`);
  s.num(c.routing_limit, `${at}.routing_limit`, 0);
  const st = s.object(c.statistics, `${at}.statistics`);
  s.num(s.object(st.nominal, `${at}.statistics.nominal`).p50, `${at}.statistics.nominal.p50`);
  s.object(st.key_distance, `${at}.statistics.key_distance`);
  s.num(st.pose_scale, `${at}.statistics.pose_scale`);
}

function checkSplits(s: HeaderShape, v: unknown, clusters: number): void {
  if (v === undefined) return;
  s.array(v, 'calibration.clustering.splits', 1).forEach((x, i) => {
    const at = `calibration.clustering.splits[${i}]`;
    const o = s.object(x, at);
    if (!/^0(\.\d+)*$/.test(s.str(o.node, `${at}.node`))) s.fail(`${at}.node`, 'a node path like 0.1.0');
    s.int(o.size, `${at}.size`, 1);
    if (o.level !== null) s.int(o.level, `${at}.level`, 2);
    if (o.silhouette !== null) s.num(o.silhouette, `${at}.silhouette`, -1);
    s.int(o.groups, `${at}.groups`, 1);
    if (typeof o.split !== 'boolean') s.fail(`${at}.split`, 'true or false');
    if (o.cluster !== undefined && s.int(o.cluster, `${at}.cluster`) >= clusters) s.fail(`${at}.cluster`, `a cluster id < ${clusters}`);
  });
}

function checkScaleTests(s: HeaderShape, v: unknown, field: string, clusters: number): void {
  if (v === undefined) return;
  s.array(v, `calibration.clustering.${field}`).forEach((x, i) => {
    const at = `calibration.clustering.${field}[${i}]`;
    const o = s.object(x, at);
    for (const side of ['a', 'b']) if (s.int(o[side], `${at}.${side}`) >= clusters) s.fail(`${at}.${side}`, `a cluster id < ${clusters}`);
    if (!/^\d+x\d+$/.test(s.str(o.window, `${at}.window`))) s.fail(`${at}.window`, 'a frame size like 256x256');
    s.num(o.mixing, `${at}.mixing`, 0);
    s.num(o.distance, `${at}.distance`, -1);
  });
}

function checkSection(s: HeaderShape, v: unknown, at: string): { count: number; offset: number; length: number } {
  const o = s.object(v, at);
  return { count: s.int(o.count, `${at}.count`, 1), offset: s.int(o.offset, `${at}.offset`), length: s.int(o.length, `${at}.length`) };
}
