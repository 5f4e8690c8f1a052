/**
 * Synthetic parts with optional planted defects: the demo line that `npm start` replays, and the
 * test suite's data. Made on the fly, so neither needs image files in the repository.
 */
import { seededRandom } from '../score/coreset.ts';

export interface Defect {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** RGB bytes of a part: disc on a fine texture, small random shift; optional dark scratch. */
export function syntheticPart(size: number, seed: number, defect?: Defect): Uint8Array {
  const rand = seededRandom(seed);
  const img = new Uint8Array(size * size * 3);
  const cx = size / 2 + (rand() - 0.5) * 3;
  const cy = size / 2 + (rand() - 0.5) * 3;
  const r = size * 0.32;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const inDisc = (x - cx) ** 2 + (y - cy) ** 2 < r * r;
      const texture = ((x + y) % 6 < 3 ? 12 : 0) + rand() * 8;
      let v = inDisc ? 170 + texture : 60 + texture;
      if (defect && x >= defect.x && x < defect.x + defect.w && y >= defect.y && y < defect.y + defect.h) v = inDisc ? 40 : 250;
      const o = 3 * (y * size + x);
      img[o] = v;
      img[o + 1] = inDisc ? v * 0.9 : v;
      img[o + 2] = inDisc ? v * 0.8 : v;
    }
  }
  return img;
}

export type ProductKind = 'disc' | 'plate' | 'mesh';

/**
 * Three visibly different product types for routing tests: 'disc' (syntheticPart), 'plate' (a bright
 * bar on a blue striped background) and 'mesh' (a dark grid; used as the never-calibrated product).
 */
export function syntheticProduct(kind: ProductKind, size: number, seed: number, defect?: Defect): Uint8Array {
  if (kind === 'disc') return syntheticPart(size, seed, defect);
  const rand = seededRandom(seed);
  const img = new Uint8Array(size * size * 3);
  const shift = Math.round((rand() - 0.5) * 4);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const noise = rand() * 8;
      let rgb: [number, number, number];
      if (kind === 'plate') {
        const inBar = Math.abs(y - size / 2 - shift) < size * 0.15 && x > size * 0.1 && x < size * 0.9;
        rgb = inBar ? [230 + noise / 2, 220 + noise, 120 + noise] : [30 + noise, 60 + noise, (x % 8 < 4 ? 160 : 110) + noise];
      } else {
        const line = (x + shift) % 12 < 3 || (y + shift) % 12 < 3;
        rgb = line ? [20 + noise, 20 + noise, 20 + noise] : [200 + noise, 120 + noise, 60 + noise];
      }
      if (defect && x >= defect.x && x < defect.x + defect.w && y >= defect.y && y < defect.y + defect.h) rgb = [250, 250, 250];
      const o = 3 * (y * size + x);
      img[o] = rgb[0];
      img[o + 1] = rgb[1];
      img[o + 2] = rgb[2];
    }
  }
  return img;
}
