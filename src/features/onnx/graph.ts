/**
 * A small ONNX graph builder over onnx-proto. Every ONNX graph of the product (imported backbones,
 * the patch-feature head, the kNN scorer) is written through it, so opset and encoding choices live
 * in one place.
 */
import onnxProto from 'onnx-proto';

export const { onnx } = onnxProto;
export const OPSET = 17;

export type AttrValue = number | string | number[] | { float: number } | { floats: number[] };
export type Dim = number | string;

export interface ValueInfo {
  name: string;
  dims: Dim[];
  elemType?: number;
}

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const INT64 = onnx.TensorProto.DataType.INT64;

function attribute(name: string, v: AttrValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (typeof v === 'number') return { name, type: T.INT, i: v };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if ('float' in v) return { name, type: T.FLOAT, f: v.float };
  return { name, type: T.FLOATS, floats: v.floats };
}

function valueInfo(v: ValueInfo): onnxProto.onnx.IValueInfoProto {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: v.elemType ?? FLOAT,
        shape: { dim: v.dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

export class GraphBuilder {
  readonly nodes: onnxProto.onnx.INodeProto[] = [];
  readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  readonly inputs: ValueInfo[] = [];
  readonly outputs: ValueInfo[] = [];
  private counter = 0;

  constructor(readonly prefix = '') {}

  /** A fresh tensor name, unique within this builder. */
  fresh(hint: string): string {
    return `${this.prefix}${hint}_${this.counter++}`;
  }

  node(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, outputs?: string[] | string): string[] {
    const outs = outputs === undefined ? [this.fresh(opType.toLowerCase())] : Array.isArray(outputs) ? outputs : [outputs];
    this.nodes.push({
      opType,
      input: inputs,
      output: outs,
      name: this.fresh(`n_${opType}`),
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outs;
  }

  /** Single-output node; returns the output name. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, output?: string): string {
    return this.node(opType, inputs, attrs, output)[0];
  }

  floatTensor(name: string, dims: number[], data: Float32Array | number[]): string {
    const arr = data instanceof Float32Array ? data : Float32Array.from(data);
    const count = dims.reduce((a, b) => a * b, 1);
    if (count !== arr.length) throw new Error(`initializer ${name}: ${arr.length} values for dims [${dims}]`);
    this.initializers.push({
      name,
      dims,
      dataType: FLOAT,
      rawData: new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength),
    });
    return name;
  }

  /** An initializer of any element type from its little-endian bytes (int8/uint8/int32 operands). */
  rawTensor(name: string, dims: number[], dataType: number, bytes: Uint8Array): string {
    this.initializers.push({ name, dims, dataType, rawData: bytes });
    return name;
  }

  int64Tensor(name: string, dims: number[], data: number[]): string {
    const arr = BigInt64Array.from(data.map((x) => BigInt(x)));
    this.initializers.push({ name, dims, dataType: INT64, rawData: new Uint8Array(arr.buffer) });
    return name;
  }

  constFloat(hint: string, dims: number[], data: Float32Array | number[]): string {
    return this.floatTensor(this.fresh(hint), dims, data);
  }
  constInt64(hint: string, data: number[]): string {
    return this.int64Tensor(this.fresh(hint), [data.length], data);
  }

  toModel(graphName: string, docString = ''): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'hiercore-edge',
      producerVersion: '0.1.0',
      docString,
      opsetImport: [{ domain: '', version: OPSET }],
      graph: {
        name: graphName,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs.map(valueInfo),
        output: this.outputs.map(valueInfo),
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

export function decodeModel(bytes: Uint8Array): onnxProto.onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}

export function encodeModel(model: onnxProto.onnx.IModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

export { valueInfo };
