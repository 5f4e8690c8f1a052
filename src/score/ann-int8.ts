/**
 * The int8 form of the ANN's stage 1. The projected patch coordinates are quantised in the graph
 * (QuantizeLinear, one scale shared with the bank) and ranked against the bank with one
 * MatMulInteger (u8 x s8 -> int32, the VNNI / ARM dot-product kernels); the block top-k then runs
 * on int32. Stage 2 still measures every candidate exactly in float32, so quantisation can only
 * change which rows become candidates, never a score.
 *
 * Ranking value of bank row j for patch a (both centred on the bank's projected mean), in units of
 * s^2:  N_j - a_q . y_q,j  with N_j = |y_j|^2 / (2 s^2). N_j rides in the same integer GEMM: `t` columns where the patch side is
 * 127 and the bank side holds up to 127 each (coarse part), and one column where the patch side is
 * 1 (the remainder, so N_j keeps unit resolution).
 */
import { onnx, type GraphBuilder } from '../features/onnx/graph.ts';

const INT8 = onnx.TensorProto.DataType.INT8;
const UINT8 = onnx.TensorProto.DataType.UINT8;
const INT32 = onnx.TensorProto.DataType.INT32;

/**
 * Share of bank rows allowed to clip. The step is set per row (its largest |coordinate|), not per
 * coordinate: after the rotation one outlier row spreads over every coordinate, and a handful of them
 * (0.1% of rows x 32 coordinates) set a per-coordinate quantile, leaving the other rows a few levels
 * (review: 5 rows x30 in 5000 took recall@1 from 1.00 to 0.65).
 */
const ROW_CLIP_QUANTILE = 0.995;
/**
 * Patches may lie further out than any bank row (defects do): their coordinates clip beyond
 * HEADROOM x the bank quantile. 1.5 measured best on screw (recall@1 0.989 vs 0.981 at 1 and 0.97 at 2):
 * less headroom clips far patches, more spends resolution no bank row uses.
 */
const HEADROOM = 1.5;
/**
 * int32 added to masked rows' stage-1 values. Real values are bounded by r x 127 x 128 (the dot
 * product) plus r x 127^2 / 2 (the norm), far below 2^30 for any projection up to ~40k dimensions,
 * so FAR + value cannot overflow and is above every real value.
 */
export const INT8_FAR = 1 << 30;

export interface Int8Operand {
  /** [K, columns] int8, row-major */
  operand: Int8Array;
  K: number;
  /** patch-side values of columns r..K-1 (uint8, zero point 128) */
  suffix: Uint8Array;
  /** quantisation step of the projected coordinates */
  scale: number;
  /** coarse norm columns */
  normColumns: number;
  /** [r] mean of the projected bank, subtracted from both sides before quantising */
  mean: Float32Array;
}

/** The quantisation step: the ROW_CLIP_QUANTILE of the rows' largest |coordinate| maps to 127 / HEADROOM. */
export function coordinateScale(projected: Float32Array, m: number, r: number): number {
  const rowMax = new Float32Array(m);
  for (let j = 0; j < m; j++) {
    let v = 0;
    for (let i = 0; i < r; i++) v = Math.max(v, Math.abs(projected[j * r + i]));
    rowMax[j] = v;
  }
  rowMax.sort();
  const q = rowMax[Math.min(m - 1, Math.floor(ROW_CLIP_QUANTILE * m))];
  return q > 0 && Number.isFinite(q) ? (HEADROOM * q) / 127 : 1;
}

const clampInt8 = (v: number) => Math.max(-127, Math.min(127, Math.round(v)));

/**
 * The bank's int8 operand for `columns` stage-1 columns. Columns m.. (padding to whole blocks) are
 * copies of rows 0.., so every column is a real row ranked by its real value: the graph maps
 * column j to row j mod m. Padding with far dummies instead needs an int32 add over the whole value
 * matrix, and dummies that are merely large can outrank real rows for a patch far from the bank.
 */
export function int8CoarseOperand(bankProjected: Float32Array, m: number, r: number, columns: number): Int8Operand {
  if (columns < m || columns > 2 * m) throw new Error(`int8 stage 1: ${columns} columns for ${m} bank rows`);
  // Centred, the coordinates spend the 8 bits on their spread rather than on a common offset
  // (the differences, and so the ranking, do not change).
  const mean = new Float32Array(r);
  for (let j = 0; j < m; j++) for (let i = 0; i < r; i++) mean[i] += bankProjected[j * r + i] / m;
  const projected = Float32Array.from(bankProjected.subarray(0, m * r), (v, k) => v - mean[k % r]);
  const scale = coordinateScale(projected, m, r);
  const q = Int8Array.from(projected, (v) => clampInt8(v / scale));
  // N_j from the quantised coordinates themselves, so that stage 1 ranks by the exact distance
  // between quantised points (a clipped row is ranked at its clipped position, consistently).
  const norms = new Float64Array(m);
  for (let j = 0; j < m; j++) {
    let s = 0;
    for (let i = 0; i < r; i++) s += q[j * r + i] * q[j * r + i];
    norms[j] = Math.round(s / 2);
  }
  let maxNorm = 0;
  for (const v of norms) maxNorm = Math.max(maxNorm, v);
  // At most ceil(r / 2) columns (every coordinate at 127): no norm ever clips.
  const t = Math.max(1, Math.ceil(maxNorm / (127 * 127)));
  const K = Math.ceil((r + t + 1) / 4) * 4; // GEMM kernels (and CUDA's int8 path) want K in fours
  const w = new Int8Array(K * columns);
  for (let j = 0; j < columns; j++) {
    const row = j % m;
    for (let i = 0; i < r; i++) w[i * columns + j] = -q[row * r + i];
    let hi = Math.floor(norms[row] / 127);
    const fine = norms[row] - 127 * hi;
    for (let c = 0; c < t; c++) {
      const piece = Math.min(127, hi);
      w[(r + c) * columns + j] = piece;
      hi -= piece;
    }
    w[(r + t) * columns + j] = fine;
  }
  const suffix = new Uint8Array(K - r).fill(128);
  suffix.fill(255, 0, t); // 127 after the zero point
  suffix[t] = 129; // 1
  return { operand: w, K, suffix, scale, normColumns: t, mean };
}

export interface Int8Initializers {
  operand: string;
  mean: string;
  scale: string;
  zeroPoint: string;
  K: number;
  r: number;
  suffix: Uint8Array;
  /** masked graphs: the int32 mask padded to the stage-1 columns */
  mask?: string;
}

export function int8Initializers(g: GraphBuilder, op: Int8Operand, r: number, columns: number, m: number, masked: boolean): Int8Initializers {
  const operand = g.rawTensor('coarse_operand_i8', [op.K, columns], INT8, new Uint8Array(op.operand.buffer));
  const scale = g.constFloat('coord_scale', [], [op.scale]);
  const mean = g.constFloat('coord_mean', [r], op.mean);
  const zeroPoint = g.rawTensor(g.fresh('zp'), [], UINT8, Uint8Array.of(128));
  let mask: string | undefined;
  if (masked) {
    // 0 keeps a row, +Infinity drops it: clipped to INT8_FAR before the cast (casting Infinity is undefined).
    const clipped = g.op('Clip', ['mask', g.constFloat('mlo', [], [0]), g.constFloat('mhi', [], [INT8_FAR])]);
    mask = g.op('Cast', [clipped], { to: INT32 });
    // The padding columns are copies of rows 0..: they carry those rows' mask.
    if (columns > m) mask = g.op('Concat', [mask, g.op('Slice', [mask, g.constInt64('mask_from', [0]), g.constInt64('mask_to', [columns - m])])], { axis: 0 });
  }
  return { operand, mean, scale, zeroPoint, K: op.K, r, suffix: op.suffix, mask };
}

/** Stage-1 values [n, columns] int32 of a tile's projected patches `proj` [n, r] (float). */
export function int8Coarse(g: GraphBuilder, w: Int8Initializers, proj: string, n: number): string {
  const q = g.op('QuantizeLinear', [g.op('Sub', [proj, w.mean]), w.scale, w.zeroPoint]);
  const tail = new Uint8Array(n * (w.K - w.r));
  for (let i = 0; i < n; i++) tail.set(w.suffix, i * (w.K - w.r));
  const a = g.op('Concat', [q, g.rawTensor(g.fresh('suffix'), [n, w.K - w.r], UINT8, tail)], { axis: 1 });
  const coarse = g.op('MatMulInteger', [a, w.operand, w.zeroPoint]);
  return w.mask ? g.op('Add', [coarse, w.mask]) : coarse;
}
