/**
 * Typed view of a TFLite model (schema.fbs), limited to what the ONNX importer needs.
 * Field numbers follow the order of fields in tensorflow/lite/schema/schema.fbs; unions take two
 * slots (type, value).
 */
import { type FbTable, fbRoot } from './flatbuffer.ts';

export const TensorType = {
  FLOAT32: 0,
  FLOAT16: 1,
  INT32: 2,
  UINT8: 3,
  INT64: 4,
  INT16: 7,
  INT8: 9,
} as const;

/** Builtin operator codes the importer knows by name (for error messages and dispatch). */
export const BuiltinOp: Record<number, string> = {
  0: 'ADD',
  1: 'AVERAGE_POOL_2D',
  2: 'CONCATENATION',
  3: 'CONV_2D',
  4: 'DEPTHWISE_CONV_2D',
  6: 'DEQUANTIZE',
  9: 'FULLY_CONNECTED',
  14: 'LOGISTIC',
  17: 'MAX_POOL_2D',
  18: 'MUL',
  19: 'RELU',
  21: 'RELU6',
  22: 'RESHAPE',
  23: 'RESIZE_BILINEAR',
  25: 'SOFTMAX',
  32: 'CUSTOM',
  34: 'PAD',
  39: 'TRANSPOSE',
  40: 'MEAN',
  41: 'SUB',
  43: 'SQUEEZE',
  49: 'SPLIT',
  60: 'PADV2',
  114: 'QUANTIZE',
  117: 'HARD_SWISH',
};

export interface Quantization {
  scale: number[];
  zeroPoint: number[];
  quantizedDimension: number;
}

export interface TfliteTensor {
  index: number;
  name: string;
  shape: number[];
  type: number;
  buffer: number;
  quantization?: Quantization;
}

export interface TfliteOperator {
  opcode: number;
  opName: string;
  inputs: number[];
  outputs: number[];
  options?: FbTable;
}

export interface TfliteModel {
  version: number;
  description?: string;
  tensors: TfliteTensor[];
  inputs: number[];
  outputs: number[];
  operators: TfliteOperator[];
  buffers: (Uint8Array | undefined)[];
}

export function parseTflite(file: Uint8Array): TfliteModel {
  // Bytes 4..8 hold the file identifier "TFL3".
  const ident = new TextDecoder().decode(file.subarray(4, 8));
  if (ident !== 'TFL3') throw new Error(`not a TFLite model: file identifier is "${ident}", expected "TFL3"`);
  const model = fbRoot(file);
  const opcodes = model.tables(1).map((oc) => {
    // builtin_code (field 3) superseded the deprecated int8 field 0 once codes passed 127.
    const deprecated = oc.int8(0);
    const builtin = oc.int32(3);
    return Math.max(deprecated, builtin);
  });
  const subgraphs = model.tables(2);
  if (subgraphs.length !== 1) throw new Error(`expected one subgraph, found ${subgraphs.length}`);
  const sg = subgraphs[0];
  const tensors: TfliteTensor[] = sg.tables(0).map((t, index) => {
    const q = t.table(4);
    let quantization: Quantization | undefined;
    if (q) {
      const scale = q.float32s(2);
      if (scale.length > 0) quantization = { scale, zeroPoint: q.int64s(3), quantizedDimension: q.int32(6) };
    }
    return { index, name: t.string(3) ?? `t${index}`, shape: t.int32s(0), type: t.int8(1), buffer: t.uint32(2), quantization };
  });
  const operators: TfliteOperator[] = sg.tables(3).map((op) => {
    const opcode = opcodes[op.uint32(0)];
    if (opcode === undefined) throw new Error('operator refers to a missing operator code');
    return {
      opcode,
      opName: BuiltinOp[opcode] ?? `builtin #${opcode}`,
      inputs: op.int32s(1),
      outputs: op.int32s(2),
      options: op.table(4),
    };
  });
  const buffers = model.tables(4).map((b) => {
    const data = b.bytes(0);
    return data && data.length > 0 ? data : undefined;
  });
  return { version: model.uint32(0), description: model.string(3), tensors, inputs: sg.int32s(1), outputs: sg.int32s(2), operators, buffers };
}
