/**
 * One onnxruntime session per backbone and input size that returns, for a frame, its PatchCore patch
 * features [P, dim] and its L2-normalised semantic embedding (used by the router).
 */
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { decodeModel, encodeModel } from './onnx/graph.ts';
import { HEAD_PATCHES, HEAD_SEMANTIC, appendPatchHead } from './patch-head.ts';
import { loadSidecar, type LoadedSidecar, type Sidecar } from './sidecar.ts';
import { sha256 } from '../util/files.ts';
import { fitImage, toTensorData, type FitMode, type Geometry, type RgbImage } from './image.ts';
import { createSession, type ExecutionProvider } from './session.ts';

export interface FeatureSettings {
  /** network input size; need not be square when the backbone allows dynamic sizes */
  width: number;
  height: number;
  fit: FitMode;
  /** adaptive-pool size of each layer before concatenation (PatchCore's pretrain_embed_dimension) */
  preDim: number;
  /** final patch feature size (PatchCore's target_embed_dimension) */
  dim: number;
  /** names of the sidecar's patch outputs to use; default: all of them */
  layers?: string[];
}

export interface FrameFeatures {
  patches: Float32Array; // [P, dim], row-major over the patch grid
  semantic: Float32Array; // [C]
  geometry: Geometry;
}

export class BackboneError extends Error {}

export class FeatureExtractor {
  private constructor(
    readonly backbone: LoadedSidecar,
    readonly modelSha256: string,
    readonly settings: FeatureSettings,
    private readonly session: ort.InferenceSession,
    readonly gridHeight: number,
    readonly gridWidth: number,
    readonly semanticDim: number,
  ) {}

  get sidecar(): Sidecar {
    return this.backbone.sidecar;
  }
  get patchCount(): number {
    return this.gridHeight * this.gridWidth;
  }

  static async load(backboneDir: string, settings: FeatureSettings, opts: { provider?: ExecutionProvider; threads?: number } = {}): Promise<FeatureExtractor> {
    const backbone = loadSidecar(backboneDir);
    const { sidecar, onnxPath } = backbone;
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(onnxPath);
    } catch (e) {
      throw new BackboneError(`cannot read backbone model ${onnxPath}: ${(e as Error).message}`);
    }
    const modelSha256 = sha256(bytes);
    if (sidecar.onnx_sha256 && sidecar.onnx_sha256 !== modelSha256) {
      throw new BackboneError(`${onnxPath} does not match its sidecar (sha256 ${modelSha256.slice(0, 12)}…, sidecar says ${sidecar.onnx_sha256.slice(0, 12)}…): re-import or re-export the backbone`);
    }
    if (!sidecar.input.dynamic_size && (settings.width !== sidecar.input.width || settings.height !== sidecar.input.height)) {
      throw new BackboneError(`backbone "${sidecar.id}" takes only ${sidecar.input.width}x${sidecar.input.height} input, but ${settings.width}x${settings.height} was configured`);
    }
    const model = decodeModel(bytes);
    const graphOutputs = new Set((model.graph?.output ?? []).map((o) => o.name));
    const graphInputs = (model.graph?.input ?? []).map((o) => o.name);
    if (!graphInputs.includes(sidecar.input.name)) {
      throw new BackboneError(`backbone sidecar names input "${sidecar.input.name}", but the ONNX model's inputs are: ${graphInputs.join(', ')}`);
    }
    for (const o of sidecar.outputs) {
      if (!graphOutputs.has(o.name)) throw new BackboneError(`backbone sidecar names output "${o.name}", but the ONNX model's outputs are: ${[...graphOutputs].join(', ')}`);
    }
    const patchOutputs = sidecar.outputs.filter((o) => o.role === 'patch' && (!settings.layers || settings.layers.includes(o.name)));
    if (settings.layers) {
      const missing = settings.layers.filter((l) => !patchOutputs.some((p) => p.name === l));
      if (missing.length)
        throw new BackboneError(
          `patch layer(s) ${missing.join(', ')} not among the backbone's patch outputs (${sidecar.outputs
            .filter((o) => o.role === 'patch')
            .map((o) => o.name)
            .join(', ')})`,
        );
    }
    patchOutputs.sort((a, b) => a.stride - b.stride);
    const semantic = sidecar.outputs.find((o) => o.role === 'semantic')!;
    appendPatchHead(model, { patchOutputs, semanticOutput: semantic.name, preDim: settings.preDim, dim: settings.dim }, [1, 3, settings.height, settings.width]);
    const misfit = (e: unknown) => new BackboneError(`backbone "${sidecar.id}" does not fit its sidecar at ${settings.width}x${settings.height} (a test forward pass failed): ${(e as Error).message}`);
    let session: ort.InferenceSession;
    try {
      session = await createSession(encodeModel(model), opts.provider ?? 'cpu', opts.threads);
    } catch (e) {
      throw misfit(e);
    }

    // Validate against the sidecar with one dummy forward pass: shapes and finiteness.
    const dummy = new ort.Tensor('float32', new Float32Array(3 * settings.width * settings.height), [1, 3, settings.height, settings.width]);
    let out: ort.InferenceSession.OnnxValueMapType;
    try {
      out = await session.run({ [sidecar.input.name]: dummy });
    } catch (e) {
      throw misfit(e);
    }
    const patches = out[HEAD_PATCHES];
    const sem = out[HEAD_SEMANTIC];
    const stride = patchOutputs[0].stride;
    const gh = Math.ceil(settings.height / stride);
    const gw = Math.ceil(settings.width / stride);
    if (patches.dims.length !== 2 || patches.dims[1] !== settings.dim) {
      throw new BackboneError(`patch head produced shape [${patches.dims}], expected [P, ${settings.dim}]`);
    }
    if (patches.dims[0] !== gh * gw) {
      throw new BackboneError(
        `backbone "${sidecar.id}": patch layer "${patchOutputs[0].name}" gave ${patches.dims[0]} cells, but stride ${stride} at ${settings.width}x${settings.height} means ${gw}x${gh}=${gw * gh}; fix "stride" in the sidecar`,
      );
    }
    if (sem.dims[1] !== semantic.channels) {
      throw new BackboneError(`backbone "${sidecar.id}": semantic output "${semantic.name}" has ${sem.dims[1]} channels, the sidecar says ${semantic.channels}`);
    }
    if (!allFinite(patches.data as Float32Array) || !allFinite(sem.data as Float32Array)) {
      throw new BackboneError(`backbone "${sidecar.id}" gives NaN or infinite features on a blank frame: its weights or graph are broken; re-import it`);
    }
    return new FeatureExtractor(backbone, modelSha256, settings, session, gh, gw, semantic.channels);
  }

  /** Fit a decoded frame to the input and run the backbone+head; `fitted` is the RGB the network saw. */
  async extract(img: RgbImage): Promise<FrameFeatures & { fitted: Uint8Array; timings: { preprocess: number; backbone: number } }> {
    const t0 = performance.now();
    const { data, geometry, x } = await this.prepare(img);
    const t1 = performance.now();
    const r = await this.runTensor(x);
    const t2 = performance.now();
    return { ...r, geometry, fitted: data, timings: { preprocess: t1 - t0, backbone: t2 - t1 } };
  }

  /**
   * The semantic embedding alone: onnxruntime runs only the nodes its output needs, so the patch head
   * is skipped (calibration's turned-over pose copies need nothing else). It saved about 30% on the
   * AMD reference box; on the Xeon box of 2026-12-03 the backbone dominates and it saves about 1%.
   */
  async semanticOf(img: RgbImage): Promise<Float32Array> {
    const out = await this.session.run(this.feeds((await this.prepare(img)).x), [HEAD_SEMANTIC]);
    return out[HEAD_SEMANTIC].data as Float32Array;
  }

  async runTensor(x: Float32Array): Promise<{ patches: Float32Array; semantic: Float32Array }> {
    const out = await this.session.run(this.feeds(x));
    return { patches: out[HEAD_PATCHES].data as Float32Array, semantic: out[HEAD_SEMANTIC].data as Float32Array };
  }

  /** The frame fitted to the input (letterbox, stretch or crop) and scaled as the network expects. */
  private async prepare(img: RgbImage) {
    const { data, geometry } = await fitImage(img, this.settings.width, this.settings.height, this.settings.fit);
    const px = this.sidecar.input.pixel;
    return { data, geometry, x: toTensorData(data, this.settings.width, this.settings.height, px.scale, px.offset) };
  }

  private feeds(x: Float32Array): Record<string, ort.Tensor> {
    return { [this.sidecar.input.name]: new ort.Tensor('float32', x, [1, 3, this.settings.height, this.settings.width]) };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Whether every value is finite (no NaN, no infinity); `x - x` is 0 only for finite x. */
export function allFinite(v: Float32Array): boolean {
  for (let i = 0; i < v.length; i++) if (v[i] - v[i] !== 0) return false;
  return true;
}
