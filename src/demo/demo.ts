/**
 * `npm start` / `hiercore-edge demo`: the whole loop on a fresh machine with nothing but the npm
 * registry. Two synthetic product types are generated, calibrated without labels on first start
 * (bundle cached in the state directory), and a replay line with planted defects and a never-
 * calibrated product runs through the daemon into the embedded broker (or HCE_MQTT_URL).
 */
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { syntheticProduct, type ProductKind } from './parts.ts';
import { resolveBackbone, stateDir } from '../features/default-backbone.ts';
import { loadSidecar } from '../features/sidecar.ts';
import { calibrate } from '../calibrate/calibrate.ts';
import { readBundleHeader, writeBundleFile } from '../bundle/bundle-file.ts';
import { loadEngineConfig } from '../config.ts';
import { calibrationOptions } from '../calibrate/options.ts';
import type { ProgressFn } from '../score/patchcore.ts';

const SIZE = 256;

async function writePart(path: string, kind: ProductKind, seed: number, bad: boolean): Promise<void> {
  const s = SIZE / 96; // the generators' defect coordinates are laid out for 96 px parts
  const defect = bad ? { x: Math.round((30 + (seed % 30)) * s), y: Math.round((kind === 'plate' ? 12 : 38) * s), w: Math.round(10 * s), h: Math.round(6 * s) } : undefined;
  await sharp(syntheticProduct(kind, SIZE, seed, defect), { raw: { width: SIZE, height: SIZE, channels: 3 } })
    .png()
    .toFile(path);
}

async function generate(dir: string, log: (m: string) => void): Promise<{ calibration: string; line: string }> {
  const calibration = join(dir, 'calibration');
  const line = join(dir, 'line');
  if (!existsSync(join(line, '0059_mesh_good.png'))) {
    log(`generating the demo parts in ${dir}`);
    mkdirSync(calibration, { recursive: true });
    mkdirSync(line, { recursive: true });
    for (let i = 0; i < 30; i++) {
      await writePart(join(calibration, `disc_${String(i).padStart(3, '0')}.png`), 'disc', 1000 + i, false);
      await writePart(join(calibration, `plate_${String(i).padStart(3, '0')}.png`), 'plate', 2000 + i, false);
    }
    // The line: discs and plates, every 5th part with a defect, every 12th part a product nobody calibrated.
    for (let i = 0; i < 60; i++) {
      const kind: ProductKind = i % 12 === 11 ? 'mesh' : i % 2 ? 'plate' : 'disc';
      const bad = kind !== 'mesh' && i % 5 === 3;
      await writePart(join(line, `${String(i).padStart(4, '0')}_${kind}_${bad ? 'bad' : 'good'}.png`), kind, 5000 + i, bad);
    }
  }
  return { calibration, line };
}

export interface DemoSetup {
  dir: string;
  backbone: string;
  bundle: string;
  line: string;
}

export async function prepareDemo(log: (m: string) => void, progress?: ProgressFn): Promise<DemoSetup> {
  const dir = join(stateDir(), 'demo');
  const backbone = resolveBackbone(process.env.HCE_BACKBONE ?? '', log);
  const { calibration, line } = await generate(dir, log);
  const bundle = join(dir, 'demo.hcebundle');
  const wanted = loadSidecar(backbone).sidecar.onnx_sha256;
  let fresh = existsSync(bundle);
  if (fresh) {
    try {
      fresh = readBundleHeader(bundle).backbone.onnx_sha256 === wanted;
    } catch {
      fresh = false;
    }
  }
  if (!fresh) {
    const c = loadEngineConfig(undefined, { backbone });
    const images = readdirSync(calibration)
      .sort()
      .map((f) => join(calibration, f));
    log(`first start: calibrating the demo bundle from ${images.length} good parts of two product types (no labels)`);
    const { bundle: b } = await calibrate({ ...calibrationOptions(c), images, log }, progress);
    writeBundleFile(bundle, b);
    log(
      `demo bundle: ${b.clusters.map((cl) => `${cl.info.name} = ${cl.info.members.length} images (${[...new Set(cl.info.members.map((m) => m.split('/').pop()!.split('_')[0]))].join('+')})`).join(', ')}`,
    );
  }
  return { dir, backbone, bundle, line };
}
