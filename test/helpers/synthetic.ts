/**
 * Test fixtures made on the fly: a small random-weight conv backbone with a valid sidecar, and
 * synthetic "parts" (a disc on a textured background) with planted defects.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { GraphBuilder } from '../../src/features/onnx/graph.ts';
import { SIDECAR_FORMAT, type Sidecar } from '../../src/features/sidecar.ts';
import { seededRandom } from '../../src/score/coreset.ts';
import { syntheticPart } from '../../src/demo/parts.ts';
export { syntheticPart, syntheticProduct, type Defect, type ProductKind } from '../../src/demo/parts.ts';
import { sha256 } from '../../src/util/files.ts';
import { calibrate, type CalibrationOptions } from '../../src/calibrate/calibrate.ts';
import type { CropEmbedder, CropWindow } from '../../src/route/scale-merge.ts';
import { writeBundleFile } from '../../src/bundle/bundle-file.ts';

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `hce-${prefix}-`));
}

/** A 5-conv backbone: stride 8 and 16 patch taps, stride 32 pooled semantic output. */
/**
 * `poison` makes one output NaN on any frame with a dark pixel (yet finite on the blank frame the
 * extractor validates with), as a broken model or an fp16 overflow would on some frames only;
 * `always` makes the patches NaN on every frame, the blank one included.
 */
export function writeSyntheticBackbone(dir: string, opts: { seed?: number; sidecarPatch?: (s: Sidecar) => void; poison?: 'patches' | 'semantic' | 'always' } = {}): string {
  const rand = seededRandom(opts.seed ?? 1);
  const g = new GraphBuilder();
  g.inputs.push({ name: 'image', dims: [1, 3, 'height', 'width'] });
  let x = 'image';
  let cin = 3;
  const widths = [8, 16, 24, 32, 32];
  const outs: string[] = [];
  widths.forEach((cout) => {
    // He-uniform init keeps activations from fading through the ReLU stack.
    const w = new Float32Array(cout * cin * 9).map(() => (rand() * 2 - 1) * Math.sqrt(6 / (cin * 9)));
    const b = new Float32Array(cout).map(() => (rand() - 0.5) * 0.1);
    x = g.op('Conv', [x, g.constFloat('w', [cout, cin, 3, 3], w), g.constFloat('b', [cout], b)], { auto_pad: 'SAME_UPPER', strides: [2, 2], kernel_shape: [3, 3] });
    x = g.op('Relu', [x]);
    outs.push(x);
    cin = cout;
  });
  // 0 * sqrt(min pixel): 0 on the blank frame, NaN once a pixel is below mid-grey.
  const nanIfDark = () => g.op('Mul', [g.op('Sqrt', [g.op('ReduceMin', ['image'], { keepdims: 1 })]), g.constFloat('zero', [1], new Float32Array(1))]);
  const nanAlways = () => g.op('Mul', [g.op('Log', [g.op('ReduceMin', [g.op('Abs', ['image'])], { keepdims: 1 })]), g.constFloat('zero', [1], new Float32Array(1))]);
  const p8 = opts.poison === 'patches' ? g.op('Add', [outs[2], nanIfDark()]) : opts.poison === 'always' ? g.op('Add', [outs[2], nanAlways()]) : outs[2];
  const sem = g.op('ReduceMean', [outs[4]], { axes: [2, 3], keepdims: 0 });
  g.op('Identity', [p8], {}, 'p8');
  g.op('Identity', [outs[3]], {}, 'p16');
  g.op('Identity', [opts.poison === 'semantic' ? g.op('Add', [sem, g.op('Reshape', [nanIfDark(), g.constInt64('flat', [1, 1])])]) : sem], {}, 'sem');
  g.outputs.push({ name: 'p8', dims: [1, 24, 'a', 'b'] }, { name: 'p16', dims: [1, 32, 'c', 'd'] }, { name: 'sem', dims: [1, 32] });
  const onnx = g.toModel('synthetic');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'backbone.onnx'), onnx);
  const sidecar: Sidecar = {
    format: SIDECAR_FORMAT,
    id: 'synthetic-cnn',
    onnx: 'backbone.onnx',
    onnx_sha256: sha256(onnx),
    input: { name: 'image', layout: 'NCHW', color: 'RGB', height: 96, width: 96, dynamic_size: true, pixel: { scale: [1 / 255, 1 / 255, 1 / 255], offset: [-0.5, -0.5, -0.5] } },
    outputs: [
      { name: 'p8', role: 'patch', stride: 8, channels: 24 },
      { name: 'p16', role: 'patch', stride: 16, channels: 32 },
      { name: 'sem', role: 'semantic', stride: 32, channels: 32 },
    ],
  };
  opts.sidecarPatch?.(sidecar);
  writeFileSync(join(dir, 'backbone.json'), JSON.stringify(sidecar, null, 2));
  return dir;
}

export async function writePng(path: string, rgb: Uint8Array, width: number, height: number): Promise<void> {
  await sharp(rgb, { raw: { width, height, channels: 3 } })
    .png()
    .toFile(path);
}

/** Write n nominal parts into dir; returns their paths. */
export async function writeNominalSet(dir: string, n: number, size: number, seed0: number): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const paths: string[] = [];
  for (let i = 0; i < n; i++) {
    const p = join(dir, `good_${String(i).padStart(3, '0')}.png`);
    await writePng(p, syntheticPart(size, seed0 + i), size, size);
    paths.push(p);
  }
  return paths;
}

/** n synthetic parts as 0000.png, 0001.png, ... in dir: a folder camera's stream. */
export async function writePartStream(dir: string, n: number, seed0: number): Promise<void> {
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < n; i++) await writePng(join(dir, `${String(i).padStart(4, '0')}.png`), syntheticPart(96, seed0 + i), 96, 96);
}

/** An engine config file for the synthetic backbone (the settings syntheticCalibrationOptions uses), for the daemon's calibration.engine_config. */
export function writeSyntheticEngineConfig(dir: string): string {
  const file = join(dir, 'engine.json');
  writeFileSync(
    file,
    JSON.stringify({
      features: { input_size: '96x96', fit: 'letterbox', pre_dim: 64, dim: 32 },
      coreset: { ratio: 0.25, projection_dim: 16, seed: 0 },
      calibration: { folds: 4, min_cluster_size: 8, routing_limit: { quantile: 1, scale: 3, pose_floor: 1 } },
    }),
  );
  return file;
}

export const SHARED = process.env.HCE_SHARED ?? join(import.meta.dirname, '..', '..', '..', 'shared');

/** Calibration settings for the synthetic backbone and 96 px parts (small banks, 4 folds). */
export function syntheticCalibrationOptions(backbone: string, images: string[], over: Partial<CalibrationOptions> = {}): CalibrationOptions {
  return {
    images,
    backbone,
    inputSize: '96x96',
    features: () => ({ width: 96, height: 96, fit: 'letterbox', preDim: 64, dim: 32 }),
    coreset: { ratio: 0.25, projectionDim: 16, seed: 0, dtype: 'float32' },
    scoring: { reweightNeighbours: 0, sigma: 4 },
    clustering: { minSilhouette: 0.2, poseMerge: 2.5, minClusterSize: 8 },
    frrTarget: 0.005,
    folds: 4,
    keyMode: 'all',
    keyCount: 32,
    limit: { quantile: 1, scale: 3, pose_floor: 1 },
    thresholdSource: 'frr',
    runtime: { provider: 'cpu' },
    ...over,
  };
}

/**
 * A bundle for the synthetic backbone calibrated on `n` good discs, written to `dir`/line.hcebundle.
 * Returns the backbone dir and the bundle path.
 */
export async function writeSyntheticBundle(dir: string, n = 20): Promise<{ backbone: string; bundle: string }> {
  const backbone = writeSyntheticBackbone(join(dir, 'bb'));
  const images = await writeNominalSet(join(dir, 'calib'), n, 96, 5000);
  const { bundle } = await calibrate(syntheticCalibrationOptions(backbone, images));
  const path = join(dir, 'line.hcebundle');
  writeBundleFile(path, bundle);
  return { backbone, bundle: path };
}

/** A CropEmbedder from one that embeds a single view: called levelled, then as filmed where asked (the calls a test records). */
export function perView(embed: (image: number, window: CropWindow, level: boolean) => Promise<Float32Array>): CropEmbedder {
  return async (image, window, asFilmed) => {
    const levelled = await embed(image, window, true);
    return asFilmed ? { levelled, filmed: await embed(image, window, false) } : { levelled };
  };
}
