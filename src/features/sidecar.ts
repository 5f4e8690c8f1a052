/**
 * The backbone sidecar: one JSON file next to an ONNX model that says how to feed it and what its
 * outputs mean. TFLite imports and bring-your-own ONNX exports (deploy/export_backbone.py) share it.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export const SIDECAR_FORMAT = 'hiercore-edge.backbone/1';

export interface PixelScaling {
  /** value fed to the network = pixel (0..255) * scale[c] + offset[c], per RGB channel */
  scale: [number, number, number] | number[];
  offset: [number, number, number] | number[];
}

export interface BackboneOutput {
  name: string;
  role: 'patch' | 'semantic' | 'classifier';
  /** input pixels per output cell (0 for vector outputs) */
  stride: number;
  channels: number;
  source?: string;
}

export interface Sidecar {
  format: string;
  id: string;
  onnx: string;
  onnx_sha256: string;
  source?: { file: string; sha256: string; kind: string };
  input: {
    name: string;
    layout: 'NCHW';
    color: 'RGB';
    /** size the network was trained at; the product may feed other sizes when dynamic_size is true */
    height: number;
    width: number;
    dynamic_size: boolean;
    pixel: PixelScaling;
  };
  outputs: BackboneOutput[];
  labels?: string;
}

export class SidecarError extends Error {}

function need(cond: unknown, file: string, msg: string): asserts cond {
  if (!cond) throw new SidecarError(`${file}: ${msg}`);
}

export function validateSidecar(raw: unknown, file: string): Sidecar {
  need(raw && typeof raw === 'object', file, 'sidecar is not a JSON object');
  const s = raw as Sidecar;
  need(s.format === SIDECAR_FORMAT, file, `"format" is ${JSON.stringify(s.format)}, expected "${SIDECAR_FORMAT}"`);
  need(typeof s.id === 'string' && s.id.length > 0, file, '"id" must be a non-empty string');
  need(typeof s.onnx === 'string', file, '"onnx" must name the ONNX file');
  need(s.input && typeof s.input === 'object', file, '"input" is missing');
  need(typeof s.input.name === 'string', file, '"input.name" must be a string');
  need(s.input.layout === 'NCHW', file, `"input.layout" is ${JSON.stringify(s.input.layout)}; only "NCHW" is supported`);
  need(Number.isInteger(s.input.height) && s.input.height > 0, file, '"input.height" must be a positive integer');
  need(Number.isInteger(s.input.width) && s.input.width > 0, file, '"input.width" must be a positive integer');
  const px = s.input.pixel;
  need(px && Array.isArray(px.scale) && px.scale.length === 3 && Array.isArray(px.offset) && px.offset.length === 3, file, '"input.pixel" needs "scale" and "offset" arrays of 3 numbers');
  need(Array.isArray(s.outputs), file, '"outputs" must be an array');
  const patches = s.outputs.filter((o) => o.role === 'patch');
  need(patches.length >= 1, file, 'at least one output must have role "patch"');
  need(s.outputs.filter((o) => o.role === 'semantic').length === 1, file, 'exactly one output must have role "semantic"');
  for (const o of s.outputs) {
    need(['patch', 'semantic', 'classifier'].includes(o.role), file, `output "${o.name}": role ${JSON.stringify(o.role)} is not patch|semantic|classifier`);
    need(Number.isInteger(o.channels) && o.channels > 0, file, `output "${o.name}": "channels" must be a positive integer`);
    if (o.role === 'patch') need(Number.isInteger(o.stride) && o.stride > 0, file, `output "${o.name}": a patch layer needs a positive "stride"`);
  }
  return s;
}

export interface LoadedSidecar {
  sidecar: Sidecar;
  dir: string;
  onnxPath: string;
}

/** Accepts the sidecar file itself or the directory holding backbone.json. */
export function loadSidecar(pathOrDir: string): LoadedSidecar {
  const file = pathOrDir.endsWith('.json') ? pathOrDir : resolve(pathOrDir, 'backbone.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new SidecarError(`cannot read backbone sidecar ${file}: ${(e as Error).message}. Point --backbone at a directory made by "hiercore-edge model import" or deploy/export_backbone.py.`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new SidecarError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  const sidecar = validateSidecar(raw, file);
  const dir = dirname(file);
  return { sidecar, dir, onnxPath: resolve(dir, sidecar.onnx) };
}
