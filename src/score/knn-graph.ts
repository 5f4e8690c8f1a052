/**
 * The scoring graph: exact nearest-neighbour distance of every patch to a memory bank, then the
 * anomaly map. The bank is baked in as an initializer laid out so that one MatMul gives
 * -2ab + |b|^2 for all pairs ([a, 1] x [-2B^T ; |b|^2]); the min over the bank plus |a|^2 is the
 * squared distance. Heatmap: bilinear upsampling to the input size and a separable Gaussian (sigma 4,
 * truncated at 4 sigma, reflect padding - scipy's gaussian_filter as used by the PatchCore authors).
 */
import { GraphBuilder } from '../features/onnx/graph.ts';

export interface KnnGraphSpec {
  bank: Float32Array; // [m, dim]
  m: number;
  dim: number;
  gridHeight: number;
  gridWidth: number;
  height: number;
  width: number;
  sigma: number;
}

export function gaussianKernel(sigma: number): Float32Array {
  const radius = Math.max(1, Math.round(4 * sigma));
  const k = new Float32Array(2 * radius + 1);
  let s = 0;
  for (let i = -radius; i <= radius; i++) s += k[i + radius] = Math.exp(-(i * i) / (2 * sigma * sigma));
  for (let i = 0; i < k.length; i++) k[i] /= s;
  return k;
}

export function bankOperand(bank: Float32Array, m: number, dim: number): Float32Array {
  // [dim+1, m]: rows 0..dim-1 are -2 B^T, the last row is |b|^2.
  const w = new Float32Array((dim + 1) * m);
  for (let j = 0; j < m; j++) {
    let n2 = 0;
    for (let k = 0; k < dim; k++) {
      const v = bank[j * dim + k];
      w[k * m + j] = -2 * v;
      n2 += v * v;
    }
    w[dim * m + j] = n2;
  }
  return w;
}

export function buildKnnGraph(spec: KnnGraphSpec): Uint8Array {
  const g = new GraphBuilder('knn_');
  const P = spec.gridHeight * spec.gridWidth;
  g.inputs.push({ name: 'patches', dims: [P, spec.dim] });
  const ones = g.op('Pad', ['patches', g.constInt64('pads', [0, 0, 0, 1]), g.constFloat('one', [], [1])], { mode: 'constant' });
  const w = g.floatTensor('bank_operand', [spec.dim + 1, spec.m], bankOperand(spec.bank, spec.m, spec.dim));
  const cross = g.op('MatMul', [ones, w]);
  const minCross = g.op('ReduceMin', [cross], { axes: [1], keepdims: 0 });
  const a2 = g.op('ReduceSumSquare', ['patches'], { axes: [1], keepdims: 0 });
  const d2 = g.op('Relu', [g.op('Add', [minCross, a2])]);
  g.op('Sqrt', [d2], {}, 'patch_scores');
  g.outputs.push({ name: 'patch_scores', dims: [P] });
  return g.toModel('knn', 'hiercore-edge nearest-neighbour scorer');
}

/** Patch scores [gh*gw] -> anomaly map [height, width]. */
export function buildHeatmapGraph(spec: Omit<KnnGraphSpec, 'bank' | 'm' | 'dim'>): Uint8Array {
  const g = new GraphBuilder('heat_');
  g.inputs.push({ name: 'patch_scores', dims: [spec.gridHeight * spec.gridWidth] });
  const grid = g.op('Reshape', ['patch_scores', g.constInt64('grid', [1, 1, spec.gridHeight, spec.gridWidth])]);
  const up = g.op('Resize', [grid, '', '', g.constInt64('size', [1, 1, spec.height, spec.width])], {
    mode: 'linear',
    coordinate_transformation_mode: 'pytorch_half_pixel',
  });
  const k = gaussianKernel(spec.sigma);
  const r = (k.length - 1) / 2;
  // Reflect padding needs the map to be larger than the radius; tiny test inputs use edge padding.
  const mode = spec.height > r && spec.width > r ? 'reflect' : 'edge';
  const padded = g.op('Pad', [up, g.constInt64('pads', [0, 0, r, r, 0, 0, r, r])], { mode });
  const v = g.op('Conv', [padded, g.constFloat('kv', [1, 1, k.length, 1], k)]);
  const h = g.op('Conv', [v, g.constFloat('kh', [1, 1, 1, k.length], k)]);
  g.op('Reshape', [h, g.constInt64('hw', [spec.height, spec.width])], {}, 'heatmap');
  g.outputs.push({ name: 'heatmap', dims: [spec.height, spec.width] });
  return g.toModel('heatmap', 'hiercore-edge anomaly map');
}

/** The plain MatMul of the same shape as the scorer's, as a speed reference for the benchmark. */
export function buildMatMulReference(p: number, dim: number, m: number): Uint8Array {
  const g = new GraphBuilder('ref_');
  g.inputs.push({ name: 'a', dims: [p, dim + 1] });
  g.floatTensor(
    'b',
    [dim + 1, m],
    new Float32Array((dim + 1) * m).map((_, i) => ((i * 7919) % 13) / 13),
  );
  g.op('MatMul', ['a', 'b'], {}, 'c');
  g.outputs.push({ name: 'c', dims: [p, m] });
  return g.toModel('matmul_reference');
}
