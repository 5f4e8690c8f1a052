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

/** Share of projected bank coordinates allowed to clip: a few outliers must not cost every row its resolution. */
const CLIP_QUANTILE = 0.9999;
/** Most norm columns: beyond 8 x 127 x 127 a row's norm clips (it is then ranked too close, never hidden). */
const MAX_NORM_COLUMNS = 8;
/**
 * Patches may lie further out than any bank row (defects do): their coordinates clip beyond
 * HEADROOM x the bank quantile. 1.5 measured best on screw (recall@1 0.989 vs 0.981 at 1 and 0.97 at 2):
 * less headroom clips far patches, more spends resolution no bank row uses.
 */
const HEADROOM = 1.5;
/** int32 added to masked rows' stage-1 values: above any real value (|sum| < 2^21), far from overflow. */
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

/** The quantisation step: the CLIP_QUANTILE of |coordinate| over the projected bank maps to 127. */
export function coordinateScale(projected: Float32Array): number {
  const abs = Float32Array.from(projected, Math.abs);
  // A sample keeps this O(n) for large banks; the quantile of 1M values is as good as of all of them.
  const step = Math.max(1, Math.floor(abs.length / 1_000_000));
  const sample = step === 1 ? abs : abs.filter((_, i) => i % step === 0);
  sample.sort();
  const q = sample[Math.min(sample.length - 1, Math.floor(CLIP_QUANTILE * sample.length))];
  return q > 0 ? (HEADROOM * q) / 127 : 1;
}

const clampInt8 = (v: number) => Math.max(-127, Math.min(127, Math.round(v)));

/** The bank's int8 operand for `columns` stage-1 columns (rows m.. are dummies ranked last). */
export function int8CoarseOperand(bankProjected: Float32Array, m: number, r: number, columns: number): Int8Operand {
  // Centred, the coordinates spend the 8 bits on their spread rather than on a common offset
  // (the differences, and so the ranking, do not change).
  const mean = new Float32Array(r);
  for (let j = 0; j < m; j++) for (let i = 0; i < r; i++) mean[i] += bankProjected[j * r + i] / m;
  const projected = Float32Array.from(bankProjected.subarray(0, m * r), (v, k) => v - mean[k % r]);
  const scale = coordinateScale(projected);
  const norms = new Float64Array(m);
  for (let j = 0; j < m; j++) {
    let s = 0;
    for (let i = 0; i < r; i++) s += projected[j * r + i] * projected[j * r + i];
    norms[j] = Math.round(s / (2 * scale * scale));
  }
  let maxNorm = 0;
  for (const v of norms) maxNorm = Math.max(maxNorm, v);
  const t = Math.max(1, Math.min(MAX_NORM_COLUMNS, Math.ceil(maxNorm / (127 * 127))));
  const K = Math.ceil((r + t + 1) / 4) * 4; // GEMM kernels (and CUDA's int8 path) want K in fours
  const w = new Int8Array(K * columns);
  for (let j = 0; j < columns; j++) {
    if (j >= m) {
      for (let c = 0; c <= t; c++) w[(r + c) * columns + j] = 127;
      continue;
    }
    for (let i = 0; i < r; i++) w[i * columns + j] = -clampInt8(projected[j * r + i] / scale);
    const n = Math.min(norms[j], t * 127 * 127 + 127);
    let hi = Math.min(t * 127, Math.floor(n / 127));
    const fine = Math.min(127, n - 127 * hi);
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
    if (columns > m)
      mask = g.op('Pad', [mask, g.constInt64('mask_pads', [0, columns - m]), g.rawTensor(g.fresh('far'), [], INT32, new Uint8Array(Int32Array.of(INT8_FAR).buffer))], { mode: 'constant' });
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
