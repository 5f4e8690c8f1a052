/**
 * PatchCore's patch-feature head (Roth et al. 2022, Sec. 3.1), appended to the backbone graph:
 * 3x3 local average per patch layer, deeper layers bilinearly upsampled to the first layer's grid,
 * each layer's channels adaptive-average-pooled to `preDim`, concatenated, pooled again to `dim`.
 *
 * Both poolings are linear and act on channels only, so each layer's two poolings are folded into a
 * single [C_i, dim] matrix and the concatenate+pool becomes a sum of per-layer MatMuls.
 */
import type onnxProto from 'onnx-proto';
import { GraphBuilder, valueInfo } from './onnx/graph.ts';

/** Output ranges of torch.nn.functional.adaptive_avg_pool1d: output j averages [start, end). */
export function adaptiveRanges(inDim: number, outDim: number): [number, number][] {
  const r: [number, number][] = [];
  for (let j = 0; j < outDim; j++) r.push([Math.floor((j * inDim) / outDim), Math.ceil(((j + 1) * inDim) / outDim)]);
  return r;
}

/** Dense [inDim, outDim] matrix of adaptive_avg_pool1d (row-major). */
export function adaptivePoolMatrix(inDim: number, outDim: number): Float32Array {
  const m = new Float32Array(inDim * outDim);
  adaptiveRanges(inDim, outDim).forEach(([s, e], j) => {
    for (let i = s; i < e; i++) m[i * outDim + j] = 1 / (e - s);
  });
  return m;
}

/** Per-layer folded projection: pool C_i -> preDim, then rows of the (L*preDim -> dim) pool. */
export function foldedProjections(channels: number[], preDim: number, dim: number): Float32Array[] {
  const second = adaptiveRanges(channels.length * preDim, dim);
  // For each concatenated position k, which outputs d read it and with what weight.
  const readers: [number, number][][] = Array.from({ length: channels.length * preDim }, () => []);
  second.forEach(([s, e], d) => {
    for (let k = s; k < e; k++) readers[k].push([d, 1 / (e - s)]);
  });
  return channels.map((c, layer) => {
    const m = new Float32Array(c * dim);
    adaptiveRanges(c, preDim).forEach(([s, e], j) => {
      const w1 = 1 / (e - s);
      for (const [d, w2] of readers[layer * preDim + j]) {
        for (let ch = s; ch < e; ch++) m[ch * dim + d] += w1 * w2;
      }
    });
    return m;
  });
}

export interface HeadSpec {
  patchOutputs: { name: string; channels: number }[];
  semanticOutput: string;
  preDim: number;
  dim: number;
}

export const HEAD_PATCHES = 'hce_patches';
export const HEAD_SEMANTIC = 'hce_semantic';

/**
 * Append the head to a decoded backbone model in place; the graph's outputs become
 * hce_patches [P, dim] (row-major over the first patch layer's grid) and hce_semantic [1, C] (L2-normalised).
 */
export function appendPatchHead(model: onnxProto.onnx.IModelProto, spec: HeadSpec, inputDims: [number, number, number, number]): void {
  const graph = model.graph!;
  const g = new GraphBuilder('hce_');
  const mats = foldedProjections(
    spec.patchOutputs.map((p) => p.channels),
    spec.preDim,
    spec.dim,
  );
  const first = spec.patchOutputs[0].name;
  const shape0 = g.op('Shape', [first]);
  const grid = g.op('Slice', [shape0, g.constInt64('s', [2]), g.constInt64('e', [4])]);
  let sum: string | undefined;
  spec.patchOutputs.forEach((p, i) => {
    let x = g.op('AveragePool', [p.name], { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1], count_include_pad: 1 });
    if (i > 0) {
      const lead = g.op('Slice', [g.op('Shape', [x]), g.constInt64('s', [0]), g.constInt64('e', [2])]);
      const sizes = g.op('Concat', [lead, grid], { axis: 0 });
      x = g.op('Resize', [x, '', '', sizes], { mode: 'linear', coordinate_transformation_mode: 'pytorch_half_pixel' });
    }
    // [1, C, h, w] -> [h*w, C]
    const t = g.op('Transpose', [x], { perm: [0, 2, 3, 1] });
    const flat = g.op('Reshape', [t, g.constInt64('shape', [-1, p.channels])]);
    const proj = g.op('MatMul', [flat, g.constFloat('proj', [p.channels, spec.dim], mats[i])]);
    sum = sum === undefined ? proj : g.op('Add', [sum, proj]);
  });
  g.op('Identity', [sum!], {}, HEAD_PATCHES);
  g.op('LpNormalization', [spec.semanticOutput], { axis: 1, p: 2 }, HEAD_SEMANTIC);

  graph.node = [...(graph.node ?? []), ...g.nodes];
  graph.initializer = [...(graph.initializer ?? []), ...g.initializers];
  graph.output = [valueInfo({ name: HEAD_PATCHES, dims: ['patches', spec.dim] }), valueInfo({ name: HEAD_SEMANTIC, dims: [1, 'semantic_dim'] })];
  // Fixing the input size lets onnxruntime plan memory and fold shape arithmetic once.
  const input = graph.input?.find((v) => !(graph.initializer ?? []).some((t) => t.name === v.name));
  const dims = input?.type?.tensorType?.shape?.dim;
  if (dims && dims.length === 4) inputDims.forEach((d, k) => (dims[k] = { dimValue: d }));
}
