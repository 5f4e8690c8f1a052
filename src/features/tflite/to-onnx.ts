/**
 * TFLite (NHWC, possibly int8/uint8 quantized) -> float32 ONNX (NCHW).
 *
 * Quantized weights are dequantized; activation quantization is dropped (the float graph is what the
 * quantized one approximates). Convolutions use auto_pad SAME_UPPER, which is TensorFlow's "SAME" rule
 * (the odd pixel of padding goes after), so the graph stays valid for any input size and the product
 * can feed non-square frames without re-importing.
 */
import { GraphBuilder } from '../onnx/graph.ts';
import { TensorType, type TfliteModel, type TfliteOperator, type TfliteTensor } from './model.ts';
import type { BackboneOutput, PixelScaling } from '../sidecar.ts';

export interface ConvertedBackbone {
  onnx: Uint8Array;
  inputName: string;
  inputHeight: number;
  inputWidth: number;
  pixel: PixelScaling;
  outputs: BackboneOutput[];
  opCounts: Record<string, number>;
}

export class UnsupportedOpError extends Error {}

const NHWC_TO_NCHW_AXIS = [0, 2, 3, 1];
const ACT = { NONE: 0, RELU: 1, RELU_N1_TO_1: 2, RELU6: 3 } as const;

/** Dequantize a constant tensor to float32, honouring per-channel scales along quantizedDimension. */
export function dequantize(t: TfliteTensor, raw: Uint8Array): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = new Float32Array(n);
  if (t.type === TensorType.FLOAT32) {
    for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }
  const q = t.quantization;
  if (!q) throw new Error(`tensor "${t.name}" is integer but has no quantization parameters`);
  const dim = q.quantizedDimension;
  const perChannel = q.scale.length > 1;
  // Stride of the quantized dimension in row-major order, to find each element's channel.
  const inner = t.shape.slice(dim + 1).reduce((a, b) => a * b, 1);
  const channels = t.shape[dim] ?? 1;
  for (let i = 0; i < n; i++) {
    const c = perChannel ? Math.floor(i / inner) % channels : 0;
    let v: number;
    switch (t.type) {
      case TensorType.INT8:
        v = view.getInt8(i);
        break;
      case TensorType.UINT8:
        v = view.getUint8(i);
        break;
      case TensorType.INT32:
        v = view.getInt32(4 * i, true);
        break;
      case TensorType.INT16:
        v = view.getInt16(2 * i, true);
        break;
      default:
        throw new Error(`tensor "${t.name}": cannot dequantize tensor type ${t.type}`);
    }
    out[i] = (v - (q.zeroPoint[c] ?? 0)) * q.scale[c];
  }
  return out;
}

function intData(t: TfliteTensor, raw: Uint8Array): number[] {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const n = t.shape.reduce((a, b) => a * b, 1);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(t.type === TensorType.INT64 ? Number(view.getBigInt64(8 * i, true)) : view.getInt32(4 * i, true));
  return out;
}

/** Reorder a row-major array with the given shape by a permutation (out dim k = in dim perm[k]). */
function permute(data: Float32Array, shape: number[], perm: number[]): Float32Array {
  const outShape = perm.map((p) => shape[p]);
  const inStrides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const out = new Float32Array(data.length);
  const idx = new Array(shape.length).fill(0);
  for (let o = 0; o < data.length; o++) {
    let src = 0;
    for (let k = 0; k < perm.length; k++) src += idx[k] * inStrides[perm[k]];
    out[o] = data[src];
    for (let k = outShape.length - 1; k >= 0; k--) {
      if (++idx[k] < outShape[k]) break;
      idx[k] = 0;
    }
  }
  return out;
}

export function convertTflite(model: TfliteModel): ConvertedBackbone {
  const g = new GraphBuilder();
  const { tensors, buffers } = model;
  const producer = new Map<number, TfliteOperator>();
  for (const op of model.operators) for (const o of op.outputs) producer.set(o, op);
  const isConst = (i: number) => !producer.has(i) && !model.inputs.includes(i) && buffers[tensors[i].buffer] !== undefined;
  const constData = (i: number): Float32Array => {
    const raw = buffers[tensors[i].buffer];
    if (!raw) throw new Error(`tensor "${tensors[i].name}" has no data`);
    return dequantize(tensors[i], raw);
  };
  const constInts = (i: number): number[] => {
    const raw = buffers[tensors[i].buffer];
    if (!raw) throw new Error(`tensor "${tensors[i].name}" has no data`);
    return intData(tensors[i], raw);
  };

  if (model.inputs.length !== 1) throw new Error(`expected one model input, found ${model.inputs.length}`);
  const inTensor = tensors[model.inputs[0]];
  if (inTensor.shape.length !== 4 || inTensor.shape[3] !== 3) {
    throw new Error(`expected an NHWC RGB image input, found shape [${inTensor.shape}]`);
  }
  const [, inH, inW] = inTensor.shape;

  // Pixel scaling: an integer input takes raw pixels, so its quantization is exactly the scaling the
  // float graph expects; a float input gets MobileNet's usual x/127.5 - 1.
  let pixel: PixelScaling;
  if (inTensor.type === TensorType.UINT8 && inTensor.quantization) {
    const s = inTensor.quantization.scale[0];
    const z = inTensor.quantization.zeroPoint[0] ?? 0;
    pixel = { scale: [s, s, s], offset: [-z * s, -z * s, -z * s] };
  } else if (inTensor.type === TensorType.INT8 && inTensor.quantization) {
    const s = inTensor.quantization.scale[0];
    const z = inTensor.quantization.zeroPoint[0] ?? 0;
    // int8 input q = pixel - 128
    pixel = { scale: [s, s, s], offset: [-(z + 128) * s, -(z + 128) * s, -(z + 128) * s] };
  } else {
    pixel = { scale: [1 / 127.5, 1 / 127.5, 1 / 127.5], offset: [-1, -1, -1] };
  }

  const name = new Map<number, string>(); // tflite tensor index -> ONNX tensor name
  const rank = new Map<number, number>();
  const INPUT = 'image';
  g.inputs.push({ name: INPUT, dims: [1, 3, 'height', 'width'] });
  name.set(model.inputs[0], INPUT);
  rank.set(model.inputs[0], 4);

  const ref = (i: number): string => {
    const n = name.get(i);
    if (n !== undefined) return n;
    if (isConst(i)) {
      const t = tensors[i];
      const nm = g.floatTensor(g.fresh('const'), t.shape, constData(i));
      name.set(i, nm);
      rank.set(i, t.shape.length);
      return nm;
    }
    throw new Error(`tensor "${tensors[i].name}" is used before it is produced`);
  };

  const activation = (x: string, act: number, where: string): string => {
    switch (act) {
      case ACT.NONE:
        return x;
      case ACT.RELU:
        return g.op('Relu', [x]);
      case ACT.RELU6:
        return g.op('Clip', [x, g.constFloat('zero', [], [0]), g.constFloat('six', [], [6])]);
      case ACT.RELU_N1_TO_1:
        return g.op('Clip', [x, g.constFloat('m1', [], [-1]), g.constFloat('p1', [], [1])]);
      default:
        throw new UnsupportedOpError(`${where}: unsupported fused activation ${act}`);
    }
  };
  const autoPad = (padding: number) => (padding === 0 ? 'SAME_UPPER' : 'VALID');

  const opCounts: Record<string, number> = {};
  model.operators.forEach((op, k) => {
    opCounts[op.opName] = (opCounts[op.opName] ?? 0) + 1;
    const where = `operator #${k} (${op.opName}, output "${tensors[op.outputs[0]]?.name}")`;
    const out = op.outputs[0];
    const o = op.options;
    const set = (nm: string, r: number) => {
      name.set(out, nm);
      rank.set(out, r);
    };
    switch (op.opName) {
      case 'QUANTIZE':
      case 'DEQUANTIZE':
        // Float graph: (de)quantization is the identity.
        set(ref(op.inputs[0]), rank.get(op.inputs[0]) ?? tensors[out].shape.length);
        return;
      case 'CONV_2D':
      case 'DEPTHWISE_CONV_2D': {
        if (!o) throw new Error(`${where}: missing options`);
        const depthwise = op.opName === 'DEPTHWISE_CONV_2D';
        const w = tensors[op.inputs[1]];
        const wData = constData(op.inputs[1]);
        const [a, kh, kw, b] = w.shape;
        let wOnnx: Float32Array;
        let wDims: number[];
        let group = 1;
        if (depthwise) {
          // [1, kh, kw, C*m] -> [C*m, 1, kh, kw]
          wOnnx = permute(wData, w.shape, [3, 0, 1, 2]);
          wDims = [b, 1, kh, kw];
          const inC = tensors[op.inputs[0]].shape[3];
          group = inC;
        } else {
          // [O, kh, kw, I] -> [O, I, kh, kw]
          wOnnx = permute(wData, w.shape, [0, 3, 1, 2]);
          wDims = [a, b, kh, kw];
        }
        // Option field order differs: depthwise has depth_multiplier before the activation.
        const padding = o.int8(0);
        const strideW = o.int32(1, 1);
        const strideH = o.int32(2, 1);
        const act = depthwise ? o.int8(4) : o.int8(3);
        const dilW = depthwise ? o.int32(5, 1) : o.int32(4, 1);
        const dilH = depthwise ? o.int32(6, 1) : o.int32(5, 1);
        const inputs = [ref(op.inputs[0]), g.floatTensor(g.fresh('w'), wDims, wOnnx)];
        if (op.inputs.length > 2 && op.inputs[2] >= 0) inputs.push(g.floatTensor(g.fresh('b'), [wDims[0]], constData(op.inputs[2])));
        const conv = g.op('Conv', inputs, {
          auto_pad: autoPad(padding),
          strides: [strideH, strideW],
          dilations: [dilH, dilW],
          kernel_shape: [kh, kw],
          group,
        });
        set(activation(conv, act, where), 4);
        return;
      }
      case 'ADD':
      case 'MUL':
      case 'SUB': {
        const x = g.op(op.opName === 'ADD' ? 'Add' : op.opName === 'MUL' ? 'Mul' : 'Sub', [ref(op.inputs[0]), ref(op.inputs[1])]);
        set(activation(x, o ? o.int8(0) : 0, where), Math.max(rank.get(op.inputs[0]) ?? 0, rank.get(op.inputs[1]) ?? 0));
        return;
      }
      case 'RELU':
        set(g.op('Relu', [ref(op.inputs[0])]), rank.get(op.inputs[0]) ?? 4);
        return;
      case 'RELU6':
        set(activation(ref(op.inputs[0]), ACT.RELU6, where), rank.get(op.inputs[0]) ?? 4);
        return;
      case 'AVERAGE_POOL_2D':
      case 'MAX_POOL_2D': {
        if (!o) throw new Error(`${where}: missing options`);
        const padding = o.int8(0);
        const attrs: Record<string, number | string | number[]> = {
          auto_pad: autoPad(padding),
          strides: [o.int32(2, 1), o.int32(1, 1)],
          kernel_shape: [o.int32(4, 1), o.int32(3, 1)],
        };
        const inShape = tensors[op.inputs[0]].shape;
        const globalPool = attrs.auto_pad === 'VALID' && inShape[1] === o.int32(4) && inShape[2] === o.int32(3);
        // A pool whose window is the whole 224-input feature map is a global pool: keep it global so
        // the graph still works at other input sizes.
        let x: string;
        if (globalPool) x = g.op(op.opName === 'AVERAGE_POOL_2D' ? 'GlobalAveragePool' : 'GlobalMaxPool', [ref(op.inputs[0])]);
        else x = g.op(op.opName === 'AVERAGE_POOL_2D' ? 'AveragePool' : 'MaxPool', [ref(op.inputs[0])], op.opName === 'AVERAGE_POOL_2D' ? { ...attrs, count_include_pad: 0 } : attrs);
        set(activation(x, o.int8(5), where), 4);
        return;
      }
      case 'MEAN': {
        const axes = constInts(op.inputs[1]).map((ax) => {
          const r = rank.get(op.inputs[0]) ?? 4;
          const a = ax < 0 ? ax + r : ax;
          return r === 4 ? NHWC_TO_NCHW_AXIS[a] : a;
        });
        const keep = o ? o.bool(0) : false;
        const x = g.op('ReduceMean', [ref(op.inputs[0])], { axes, keepdims: keep ? 1 : 0 });
        set(x, keep ? 4 : (rank.get(op.inputs[0]) ?? 4) - axes.length);
        return;
      }
      case 'PAD':
      case 'PADV2': {
        const p = constInts(op.inputs[1]); // [[n0,n1],[h0,h1],[w0,w1],[c0,c1]] in NHWC
        if (p.length !== 8) throw new UnsupportedOpError(`${where}: only 4-D PAD is supported`);
        const pads = [p[0], p[6], p[2], p[4], p[1], p[7], p[3], p[5]];
        const inputs = [ref(op.inputs[0]), g.constInt64('pads', pads)];
        if (op.opName === 'PADV2' && op.inputs[2] !== undefined) inputs.push(g.constFloat('padv', [], [constData(op.inputs[2])[0]]));
        set(g.op('Pad', inputs, { mode: 'constant' }), 4);
        return;
      }
      case 'RESHAPE': {
        let x = ref(op.inputs[0]);
        // Reshape works on NHWC element order; an NCHW tensor must be put back first.
        if ((rank.get(op.inputs[0]) ?? 0) === 4) x = g.op('Transpose', [x], { perm: [0, 2, 3, 1] });
        const shape = tensors[out].shape;
        set(g.op('Reshape', [x, g.constInt64('shape', shape)]), shape.length);
        return;
      }
      case 'SQUEEZE': {
        let x = ref(op.inputs[0]);
        if ((rank.get(op.inputs[0]) ?? 0) === 4) x = g.op('Transpose', [x], { perm: [0, 2, 3, 1] });
        const shape = tensors[out].shape;
        set(g.op('Reshape', [x, g.constInt64('shape', shape)]), shape.length);
        return;
      }
      case 'FULLY_CONNECTED': {
        let x = ref(op.inputs[0]);
        if ((rank.get(op.inputs[0]) ?? 2) !== 2) {
          if ((rank.get(op.inputs[0]) ?? 0) === 4) x = g.op('Transpose', [x], { perm: [0, 2, 3, 1] });
          x = g.op('Flatten', [x], { axis: 1 });
        }
        const w = tensors[op.inputs[1]];
        const inputs = [x, g.floatTensor(g.fresh('fc_w'), w.shape, constData(op.inputs[1]))];
        if (op.inputs.length > 2 && op.inputs[2] >= 0) inputs.push(g.floatTensor(g.fresh('fc_b'), [w.shape[0]], constData(op.inputs[2])));
        const y = g.op('Gemm', inputs, { transB: 1 });
        set(activation(y, o ? o.int8(0) : 0, where), 2);
        return;
      }
      case 'SOFTMAX': {
        let x = ref(op.inputs[0]);
        const beta = o ? o.float32(0, 1) : 1;
        if (beta !== 1) x = g.op('Mul', [x, g.constFloat('beta', [], [beta])]);
        set(g.op('Softmax', [x], { axis: -1 }), rank.get(op.inputs[0]) ?? 2);
        return;
      }
      case 'LOGISTIC':
        set(g.op('Sigmoid', [ref(op.inputs[0])]), rank.get(op.inputs[0]) ?? 4);
        return;
      case 'CONCATENATION': {
        const r = rank.get(op.inputs[0]) ?? 4;
        let axis = o ? o.int32(0) : 0;
        if (axis < 0) axis += r;
        if (r === 4) axis = NHWC_TO_NCHW_AXIS[axis];
        const x = g.op('Concat', op.inputs.map(ref), { axis });
        set(activation(x, o ? o.int8(1) : 0, where), r);
        return;
      }
      default:
        throw new UnsupportedOpError(
          `${where}: TFLite operator ${op.opName} is not supported by the importer. ` +
            'Supported: CONV_2D, DEPTHWISE_CONV_2D, ADD, SUB, MUL, RELU, RELU6, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN, PAD, PADV2, ' +
            'RESHAPE, SQUEEZE, FULLY_CONNECTED, SOFTMAX, LOGISTIC, CONCATENATION, QUANTIZE, DEQUANTIZE.',
        );
    }
  });

  const outputs = chooseTaps(model, inH);
  const result: BackboneOutput[] = [];
  for (const tap of outputs) {
    let src = name.get(tap.tensor);
    if (!src) throw new Error(`tap tensor "${tensors[tap.tensor].name}" was never produced`);
    if (tap.role === 'semantic') {
      // Global average pool the deepest map to [1, C].
      src = g.op('ReduceMean', [src], { axes: [2, 3], keepdims: 0 });
    }
    g.op('Identity', [src], {}, tap.name);
    const shape = tensors[tap.tensor].shape;
    const channels = shape[shape.length - 1];
    if (tap.role === 'classifier') g.outputs.push({ name: tap.name, dims: [1, channels] });
    else if (tap.role === 'semantic') g.outputs.push({ name: tap.name, dims: [1, channels] });
    else g.outputs.push({ name: tap.name, dims: [1, channels, `h${tap.stride}`, `w${tap.stride}`] });
    result.push({ name: tap.name, role: tap.role, stride: tap.stride, channels, source: tensors[tap.tensor].name });
  }
  return {
    onnx: g.toModel('backbone', 'imported from TFLite by hiercore-edge'),
    inputName: INPUT,
    inputHeight: inH,
    inputWidth: inW,
    pixel,
    outputs: result,
    opCounts,
  };
}

interface Tap {
  name: string;
  role: BackboneOutput['role'];
  stride: number;
  tensor: number;
}

/**
 * Patch layers: the widest activation at strides 8 and 16, i.e. the input of the stride-2 depthwise
 * convolution that leaves that resolution (MobileNetV2's expand outputs of blocks 7 and 14 in TF2
 * naming). Semantic layer: the input of the final global pool. Found from the structure, not from
 * names, because the two reference models name their blocks differently.
 */
function chooseTaps(model: TfliteModel, inH: number): Tap[] {
  const { tensors } = model;
  const taps: Tap[] = [];
  for (const stride of [8, 16]) {
    const op = model.operators.find((p) => {
      if (p.opName !== 'DEPTHWISE_CONV_2D' || !p.options || p.options.int32(2, 1) !== 2) return false;
      return tensors[p.inputs[0]].shape[1] === Math.ceil(inH / stride);
    });
    if (op) taps.push({ name: `patch_s${stride}`, role: 'patch', stride, tensor: op.inputs[0] });
  }
  const pool = [...model.operators].reverse().find((p) => p.opName === 'MEAN' || p.opName === 'AVERAGE_POOL_2D');
  if (pool) taps.push({ name: 'semantic', role: 'semantic', stride: 32, tensor: pool.inputs[0] });
  if (taps.filter((t) => t.role === 'patch').length < 2 || !pool) {
    throw new Error('could not find the patch layers (stride 8 and 16) and the final global pool in this model');
  }
  const outT = tensors[model.outputs[0]];
  if (outT && outT.shape.length === 2) taps.push({ name: 'classifier', role: 'classifier', stride: 0, tensor: model.outputs[0] });
  return taps;
}
