/**
 * A second built-in backbone: the Keras InceptionV3 bundled in the npm package nsfwjs 4.3.0 (MIT),
 * imported up to mixed5. Its layers up to mixed5 (and the first branch convs of mixed6) are saved
 * `trainable: false`, i.e. frozen at their ImageNet weights while the rest was fine-tuned for another
 * task and is never read here. Patch taps: mixed2 (stride 8, 288 ch) and mixed5 (stride 16, 768 ch);
 * semantic: mixed5 pooled. Input RGB in [0, 1], as nsfwjs feeds it and as the model was trained, not
 * Keras' [-1, 1] for ImageNet InceptionV3. The kernels are frozen, but the batch-norm statistics
 * apparently followed the [0, 1] training data: [0, 1] measured far better (image AUROC screw
 * 0.922 vs 0.760, kolektor 0.871 vs 0.800; `hiercore-edge evaluate` at the defaults).
 *
 * Grid: InceptionV3's stem uses valid-padded convolutions and pools, so an unpadded H x W image gives
 * a stride-8 grid of floor(...) cells, 2-3 fewer than ceil(H/8) (35 at 299, where ceil(299/8) = 38).
 * The graph therefore pads the image itself, by reflection, 9 pixels at the top/left and
 * 10 + ((-H) mod 8) at the bottom/right: the padded size is 8*ceil(H/8) + 19, the smallest that gives
 * exactly ceil(H/8) stride-8 cells, and stride-8 cell j is then centred on image pixel 8j + 4 (the
 * ideal is 8j + 3.5). The stride-16 tap (mixed5) then has floor((ceil(H/8) - 1) / 2) cells, one fewer
 * than ceil(H/16) when ceil(H/8) is even, centred on 16k + 12: the patch head resamples it onto the
 * stride-8 grid, so it is spatially blurred by about a third of a stride-16 cell. Padding lives in the
 * graph (not in the engine) so the sidecar's stride/grid contract holds for any input size.
 */
import type { InputPad } from './tfjs/keras-to-onnx.ts';
import type { Sidecar } from './sidecar.ts';
import { loadNsfwjsModel, NSFWJS_VERSION, writeNsfwjsBackbone, type NsfwjsTap } from './import-nsfwjs.ts';

export const INCEPTION_ID = `nsfwjs-${NSFWJS_VERSION}-inception_v3-mixed5`;
export const INCEPTION_TAPS: NsfwjsTap[] = [
  { layer: 'mixed2', name: 'patch_s8', role: 'patch' as const, stride: 8 },
  { layer: 'mixed5', name: 'patch_s16', role: 'patch' as const, stride: 16 },
  { layer: 'mixed5', name: 'semantic', role: 'semantic' as const, stride: 16, pool: true },
];
/** See the header: the in-graph padding that makes the stride-8 grid exactly ceil(H/8) x ceil(W/8). */
export const INCEPTION_INPUT_PAD: InputPad = { before: 9, after: 10, multiple: 8, mode: 'reflect' };
/** The deepest layer the taps read: every layer up to it must be frozen. */
const LAST_FROZEN_NEEDED = 'mixed5';

export function importInceptionBackbone(outDir: string): { sidecar: Sidecar; onnxPath: string; layerCounts: Record<string, number> } {
  const { model, shards, trainable } = loadNsfwjsModel('inception_v3');
  // Refuse to build on layers that were fine-tuned away from ImageNet (a changed package would).
  const names = Object.keys(trainable);
  const upto = names.indexOf(LAST_FROZEN_NEEDED);
  if (upto < 0) throw new Error(`nsfwjs inception_v3 has no layer ${LAST_FROZEN_NEEDED}`);
  const retrained = names.slice(1, upto + 1).filter((n) => trainable[n]);
  if (retrained.length) throw new Error(`nsfwjs inception_v3 has trainable layers up to ${LAST_FROZEN_NEEDED} (${retrained.slice(0, 3).join(', ')}…): its ImageNet features cannot be trusted`);
  return writeNsfwjsBackbone(outDir, { name: 'inception_v3', id: INCEPTION_ID, taps: INCEPTION_TAPS, model, shards, inputPad: INCEPTION_INPUT_PAD });
}
