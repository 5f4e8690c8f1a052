/** `hiercore-edge model import`: TFLite file -> backbone.onnx + backbone.json in an output directory. */
import { mkdirSync, readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { parseTflite } from './tflite/model.ts';
import { convertTflite } from './tflite/to-onnx.ts';
import { SIDECAR_FORMAT, type Sidecar } from './sidecar.ts';
import { sha256, writeFileAtomic } from '../util/files.ts';

export interface ImportResult {
  sidecar: Sidecar;
  sidecarPath: string;
  onnxPath: string;
  opCounts: Record<string, number>;
}

export function importTflite(file: string, outDir: string, id?: string): ImportResult {
  const bytes = readFileSync(file);
  const model = parseTflite(bytes);
  const conv = convertTflite(model);
  mkdirSync(outDir, { recursive: true });
  const onnxPath = resolve(outDir, 'backbone.onnx');
  writeFileAtomic(onnxPath, conv.onnx);
  const sidecar: Sidecar = {
    format: SIDECAR_FORMAT,
    id: id ?? basename(file).replace(/\.tflite$/, ''),
    onnx: 'backbone.onnx',
    onnx_sha256: sha256(conv.onnx),
    source: { file: basename(file), sha256: sha256(bytes), kind: 'tflite' },
    input: {
      name: conv.inputName,
      layout: 'NCHW',
      color: 'RGB',
      height: conv.inputHeight,
      width: conv.inputWidth,
      dynamic_size: true,
      pixel: conv.pixel,
    },
    outputs: conv.outputs,
  };
  const sidecarPath = resolve(outDir, 'backbone.json');
  writeFileAtomic(sidecarPath, new TextEncoder().encode(`${JSON.stringify(sidecar, null, 2)}\n`));
  return { sidecar, sidecarPath, onnxPath, opCounts: conv.opCounts };
}
