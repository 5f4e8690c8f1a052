/**
 * A Keras functional model saved for TF.js (layers topology + weights manifest, uint8-quantised
 * weights with min/scale) converted to an ONNX graph in NCHW, truncated at the layers asked for.
 * Supports what MobileNet- and Inception-style networks use: Conv2D, DepthwiseConv2D (padding valid or
 * same, with or without bias), BatchNormalization (incl. scale/center false), ReLU (incl. max_value),
 * Activation relu/relu6/linear, ZeroPadding2D, Add, MaxPooling2D, AveragePooling2D (valid or same;
 * same-padded average pools divide by the valid cells, as TF does), Concatenate (channel axis),
 * GlobalAveragePooling2D.
 */
import { GraphBuilder } from '../onnx/graph.ts';

export interface KerasLayer {
  name: string;
  class_name: string;
  config: Record<string, unknown>;
  inbound_nodes: unknown[];
}

export interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { min?: number; scale?: number; dtype: 'uint8' | 'uint16' | 'float16' };
}

export interface TfjsModel {
  modelTopology: { model_config?: { config: { layers: KerasLayer[] } }; config?: { layers: KerasLayer[] } };
  weightsManifest: { paths: string[]; weights: WeightSpec[] }[];
}

export class UnsupportedLayerError extends Error {}

/** Dequantised weights by name, from the manifest and the concatenated shard bytes. */
export function decodeWeights(manifest: TfjsModel['weightsManifest'], shards: Uint8Array): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  let off = 0;
  const dv = new DataView(shards.buffer, shards.byteOffset, shards.byteLength);
  for (const group of manifest) {
    for (const w of group.weights) {
      const n = w.shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(n);
      const q = w.quantization;
      if (!q) {
        if (w.dtype !== 'float32') throw new UnsupportedLayerError(`weight ${w.name}: dtype ${w.dtype} is not supported`);
        for (let i = 0; i < n; i++) data[i] = dv.getFloat32(off + 4 * i, true);
        off += 4 * n;
      } else if (q.dtype === 'uint8' || q.dtype === 'uint16') {
        const bytes = q.dtype === 'uint8' ? 1 : 2;
        for (let i = 0; i < n; i++) {
          const v = bytes === 1 ? shards[off + i] : dv.getUint16(off + 2 * i, true);
          data[i] = q.min! + q.scale! * v;
        }
        off += bytes * n;
      } else {
        throw new UnsupportedLayerError(`weight ${w.name}: quantization ${q.dtype} is not supported`);
      }
      if (off > shards.length) throw new UnsupportedLayerError(`weights run past the end of the shard data at ${w.name}`);
      out.set(w.name, { shape: w.shape, data });
    }
  }
  if (off !== shards.length) throw new UnsupportedLayerError(`weight data is ${shards.length} bytes, the manifest describes ${off}`);
  return out;
}

function inboundNames(l: KerasLayer): string[] {
  const nodes = l.inbound_nodes as unknown[][];
  if (!nodes.length) return [];
  return (nodes[0] as unknown[][]).map((e) => String(e[0]));
}

export interface KerasConversion {
  onnx: Uint8Array;
  inputName: string;
  inputSize: { height: number; width: number };
  /** channels of each requested output */
  channels: Record<string, number>;
  layerCounts: Record<string, number>;
}

/**
 * Convert the layers needed for `outputs` (layer names; a "pool:" prefix adds a global average pool
 * to that layer's output). Layers after them are never read, so later, unsupported or re-trained
 * layers do no harm.
 */
export function convertKeras(
  model: TfjsModel,
  weights: Map<string, { shape: number[]; data: Float32Array }>,
  outputs: { layer: string; name: string; pool?: boolean }[],
  opts: { inputPad?: InputPad } = {},
): KerasConversion {
  const layers = (model.modelTopology.model_config ?? model.modelTopology).config!.layers;
  const byName = new Map(layers.map((l) => [l.name, l]));
  // Only the ancestors of the requested outputs.
  const needed = new Set<string>();
  const visit = (n: string) => {
    if (needed.has(n)) return;
    const l = byName.get(n);
    if (!l) throw new UnsupportedLayerError(`layer "${n}" is not in the model`);
    needed.add(n);
    inboundNames(l).forEach(visit);
  };
  outputs.forEach((o) => visit(o.layer));

  const g = new GraphBuilder();
  const tensor = new Map<string, string>();
  const channels = new Map<string, number>();
  const counts: Record<string, number> = {};
  const w = (layer: string, part: string) => {
    const t = weights.get(`${layer}/${part}`);
    if (!t) throw new UnsupportedLayerError(`weight ${layer}/${part} is missing`);
    return t;
  };
  let inputName = '';
  let inputSize = { height: 224, width: 224 };
  for (const l of layers) {
    if (!needed.has(l.name)) continue;
    counts[l.class_name] = (counts[l.class_name] ?? 0) + 1;
    const ins = inboundNames(l).map((n) => tensor.get(n)!);
    const cin = inboundNames(l).map((n) => channels.get(n)!)[0];
    const c = l.config;
    let out: string;
    let cout = cin;
    switch (l.class_name) {
      case 'InputLayer': {
        const shape = c.batch_input_shape as (number | null)[];
        inputName = 'image';
        inputSize = { height: shape[1] ?? 224, width: shape[2] ?? 224 };
        g.inputs.push({ name: inputName, dims: [1, shape[3]!, 'height', 'width'] });
        out = opts.inputPad ? padInput(g, inputName, opts.inputPad) : inputName;
        cout = shape[3]!;
        break;
      }
      case 'ZeroPadding2D': {
        const p = c.padding as [[number, number], [number, number]];
        out = g.op('Pad', [ins[0], g.constInt64('pads', [0, 0, p[0][0], p[1][0], 0, 0, p[0][1], p[1][1]])], { mode: 'constant' });
        break;
      }
      case 'Conv2D':
      case 'DepthwiseConv2D': {
        const depthwise = l.class_name === 'DepthwiseConv2D';
        const k = w(l.name, depthwise ? 'depthwise_kernel' : 'kernel');
        const [kh, kw, a, b] = k.shape; // Conv2D: [kh, kw, cin, cout]; depthwise: [kh, kw, cin, mult]
        cout = depthwise ? a * b : b;
        const kernel = new Float32Array(k.data.length);
        // -> ONNX [cout, cin/group, kh, kw]
        for (let y = 0; y < kh; y++)
          for (let x = 0; x < kw; x++)
            for (let i = 0; i < a; i++)
              for (let o = 0; o < b; o++) {
                const src = ((y * kw + x) * a + i) * b + o;
                const dst = depthwise ? ((i * b + o) * kh + y) * kw + x : ((o * a + i) * kh + y) * kw + x;
                kernel[dst] = k.data[src];
              }
        const inputs = [ins[0], g.constFloat('w', depthwise ? [cout, 1, kh, kw] : [cout, a, kh, kw], kernel)];
        if (c.use_bias) inputs.push(g.constFloat('b', [cout], w(l.name, 'bias').data));
        const strides = (c.strides as number[]) ?? [1, 1];
        const dil = (c.dilation_rate as number[]) ?? [1, 1];
        const attrs: Record<string, number | string | number[]> = { kernel_shape: [kh, kw], strides, dilations: dil, group: depthwise ? a : 1 };
        if (c.padding === 'same') attrs.auto_pad = 'SAME_UPPER';
        else if (c.padding !== 'valid') throw new UnsupportedLayerError(`${l.name}: padding "${c.padding}"`);
        out = g.op('Conv', inputs, attrs);
        out = activation(g, out, c.activation as string | undefined, l.name);
        break;
      }
      case 'BatchNormalization': {
        const gamma = c.scale === false ? new Float32Array(cin).fill(1) : w(l.name, 'gamma').data;
        const beta = c.center === false ? new Float32Array(cin) : w(l.name, 'beta').data;
        out = g.op(
          'BatchNormalization',
          [
            ins[0],
            g.constFloat('gamma', [cin], gamma),
            g.constFloat('beta', [cin], beta),
            g.constFloat('mean', [cin], w(l.name, 'moving_mean').data),
            g.constFloat('var', [cin], w(l.name, 'moving_variance').data),
          ],
          { epsilon: { float: Number(c.epsilon ?? 1e-3) } },
        );
        break;
      }
      case 'ReLU': {
        const max = c.max_value as number | null | undefined;
        if ((c.negative_slope as number | undefined) || (c.threshold as number | undefined)) throw new UnsupportedLayerError(`${l.name}: ReLU with negative_slope/threshold`);
        out = max !== null && max !== undefined ? g.op('Clip', [ins[0], g.constFloat('lo', [], [0]), g.constFloat('hi', [], [max])]) : g.op('Relu', [ins[0]]);
        break;
      }
      case 'Activation':
        out = activation(g, ins[0], c.activation as string, l.name);
        break;
      case 'Add':
        out = ins.slice(1).reduce((acc, t) => g.op('Add', [acc, t]), ins[0]);
        break;
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const attrs: Record<string, number | string | number[]> = { kernel_shape: c.pool_size as number[], strides: (c.strides as number[] | null) ?? (c.pool_size as number[]) };
        if (c.data_format && c.data_format !== 'channels_last') throw new UnsupportedLayerError(`${l.name}: data_format "${c.data_format}"`);
        if (c.padding === 'same') attrs.auto_pad = 'SAME_UPPER';
        else if (c.padding !== 'valid') throw new UnsupportedLayerError(`${l.name}: padding "${c.padding}"`);
        // count_include_pad 0 (the default): TF's same-padded average pool divides by the valid cells only.
        if (l.class_name === 'AveragePooling2D') attrs.count_include_pad = 0;
        out = g.op(l.class_name === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool', [ins[0]], attrs);
        break;
      }
      case 'Concatenate': {
        const axis = (c.axis as number | undefined) ?? -1;
        if (axis !== -1 && axis !== 3) throw new UnsupportedLayerError(`${l.name}: Concatenate on axis ${axis} (only the channel axis is supported)`);
        out = g.op('Concat', ins, { axis: 1 });
        cout = inboundNames(l).reduce((acc, n) => acc + channels.get(n)!, 0);
        break;
      }
      case 'GlobalAveragePooling2D':
        out = g.op('ReduceMean', [ins[0]], { axes: [2, 3], keepdims: 0 });
        break;
      default:
        throw new UnsupportedLayerError(`layer ${l.name}: ${l.class_name} is not supported by the importer`);
    }
    tensor.set(l.name, out);
    channels.set(l.name, cout);
  }
  const chans: Record<string, number> = {};
  for (const o of outputs) {
    const t = tensor.get(o.layer)!;
    const ch = channels.get(o.layer)!;
    if (o.pool) {
      g.op('ReduceMean', [t], { axes: [2, 3], keepdims: 0 }, o.name);
      g.outputs.push({ name: o.name, dims: [1, ch] });
    } else {
      // Rename the layer's tensor itself: an Identity to a graph output whose input also feeds other
      // nodes is mis-rewritten by onnxruntime 1.30's optimizer (dangling input at session creation).
      for (const n of g.nodes) {
        n.input = n.input!.map((i) => (i === t ? o.name : i));
        n.output = n.output!.map((x) => (x === t ? o.name : x));
      }
      tensor.set(o.layer, o.name);
      g.outputs.push({ name: o.name, dims: [1, ch, 'h', 'w'] });
    }
    chans[o.name] = ch;
  }
  return { onnx: g.toModel('keras-import'), inputName, inputSize, channels: chans, layerCounts: counts };
}

/**
 * Padding added to the image inside the graph, before the first layer: `before` rows/columns at the
 * top/left, `after` plus whatever makes the size a multiple of `multiple` at the bottom/right (worked
 * out from the input's shape at run time, so the graph keeps a dynamic input size).
 */
export interface InputPad {
  before: number;
  after: number;
  multiple: number;
  mode: 'reflect' | 'constant' | 'edge';
}

function padInput(g: GraphBuilder, x: string, p: InputPad): string {
  const hw = g.op('Slice', [g.op('Shape', [x]), g.constInt64('s', [2]), g.constInt64('e', [4])]);
  // after + ((multiple - size mod multiple) mod multiple), per spatial dim
  const m = g.constInt64('m', [p.multiple, p.multiple]);
  const fill = g.op('Mod', [g.op('Sub', [m, g.op('Mod', [hw, m])]), m]);
  const tail = g.op('Add', [fill, g.constInt64('after', [p.after, p.after])]);
  const pads = g.op('Concat', [g.constInt64('lead', [0, 0, p.before, p.before, 0, 0]), tail], { axis: 0 });
  return g.op('Pad', [x, pads], { mode: p.mode });
}

function activation(g: GraphBuilder, x: string, act: string | undefined, layer: string): string {
  if (!act || act === 'linear') return x;
  if (act === 'relu') return g.op('Relu', [x]);
  if (act === 'relu6') return g.op('Clip', [x, g.constFloat('lo', [], [0]), g.constFloat('hi', [], [6])]);
  throw new UnsupportedLayerError(`${layer}: activation "${act}" is not supported`);
}
