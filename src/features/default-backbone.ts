/**
 * Which backbone to run: a configured one always wins; otherwise the built-in fallback (nsfwjs's
 * MobileNetV2 up to block_10, see import-nsfwjs.ts), imported once into the state directory.
 * `model fetch` downloads the Coral reference model where the machine has internet.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { writeFileSync } from 'node:fs';
import { FALLBACK_ID, importFallbackBackbone } from './import-nsfwjs.ts';
import { importTflite, type ImportResult } from './import-tflite.ts';
import { loadSidecar } from './sidecar.ts';
import { sha256 } from '../util/files.ts';
import { PROJECT_ROOT } from '../config.ts';

/** Where imported backbones, demo data and queues live when not configured: $HCE_STATE_DIR or <project>/var. */
export function stateDir(): string {
  return resolve(process.env.HCE_STATE_DIR || join(PROJECT_ROOT, 'var'));
}

export function resolveBackbone(configured: string, log: (msg: string) => void = () => {}): string {
  if (configured) return resolve(configured);
  const dir = join(stateDir(), 'backbones', FALLBACK_ID);
  if (existsSync(join(dir, 'backbone.json'))) {
    try {
      loadSidecar(dir);
      return dir;
    } catch {
      /* damaged: import again */
    }
  }
  log(`no backbone configured: importing the built-in fallback (${FALLBACK_ID}) into ${dir}`);
  importFallbackBackbone(dir);
  return dir;
}

/** Pinned public reference models (google-coral/test_data, Apache-2.0). */
export const CORAL_MODELS = {
  'mobilenet-v2-ptq': {
    url: 'https://github.com/google-coral/test_data/raw/104342d2d3480b3e66203073dac24f4e2dbb4c41/tf2_mobilenet_v2_1.0_224_ptq.tflite',
    sha256: '5d3137241276e79c86d14a74fe43581398ae0e815191d3dba45495b810840e8c',
    file: 'tf2_mobilenet_v2_1.0_224_ptq.tflite',
  },
  'mobilenet-v2-qat': {
    url: 'https://github.com/google-coral/test_data/raw/104342d2d3480b3e66203073dac24f4e2dbb4c41/mobilenet_v2_1.0_224_quant.tflite',
    sha256: '7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776',
    file: 'mobilenet_v2_1.0_224_quant.tflite',
  },
} as const;
export type CoralModel = keyof typeof CORAL_MODELS;

/** Download a pinned model, check its sha256, import it. Errors say what to do on an offline box. */
export async function fetchBackbone(name: CoralModel, outDir: string, fetchFn: typeof fetch = fetch): Promise<ImportResult> {
  const m = CORAL_MODELS[name];
  if (!m) throw new Error(`unknown model "${name}": one of ${Object.keys(CORAL_MODELS).join(', ')}`);
  let bytes: Uint8Array;
  try {
    const res = await fetchFn(m.url, { signal: AbortSignal.timeout(60_000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    bytes = new Uint8Array(await res.arrayBuffer());
  } catch (e) {
    throw new Error(
      `cannot download ${m.url} (${(e as Error).message}). Without internet: copy ${m.file} (sha256 ${m.sha256}) onto the box and run "hiercore-edge model import <file> --out ${outDir}"`,
    );
  }
  const got = sha256(bytes);
  if (got !== m.sha256) throw new Error(`downloaded ${m.file} has sha256 ${got}, expected ${m.sha256}: not imported`);
  const tmp = mkdtempSync(join(tmpdir(), 'hce-fetch-'));
  try {
    const file = join(tmp, m.file);
    writeFileSync(file, bytes);
    return importTflite(file, outDir, name);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
