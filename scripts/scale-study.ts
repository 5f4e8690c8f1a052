/**
 * Scale-test study (issue 9): the mixing the scale test (src/route/scale-merge.ts) sees between groups
 * of images that are one product at other frame sizes (each surface of the cluster study split by
 * frame size) and between pairs of different products. The default calibration.scale_merge must lie
 * between the two.
 *
 *   node --import tsx scripts/scale-study.ts [--work scratch/study] [--backbone models/mnv2-ptq] [--samples 16]
 *
 * Needs the images of `scripts/cluster-study.ts` (its --work folder, made on its first run).
 */
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { featureSettings, loadEngineConfig } from '../src/config.ts';
import { ExtractorPool } from '../src/features/extractor-pool.ts';
import { cropImage, readImage, type RgbImage } from '../src/features/image.ts';
import { normaliseRows } from '../src/route/finch.ts';
import { mixing, SCALE_SAMPLES } from '../src/route/scale-merge.ts';
import { seededRandom } from '../src/score/coreset.ts';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}

const SURFACES = ['mesh', 'grain', 'dots', 'brushed'];
/** Folders of the cluster study that are other products (screw-wide is screw on a wider frame: the same). */
const PRODUCTS = ['bottle', 'screw', 'kolektor', 'screw-crop', 'bottle-zoom', 'kolektor-texture', 'screw-inv', ...SURFACES, 'screw-wide'];
const SAME = new Set(['screw|screw-wide']);

async function main(): Promise<void> {
  const work = resolve(arg('work', 'scratch/study'));
  const backbone = arg('backbone', 'models/mnv2-ptq');
  const samples = Number(arg('samples', String(SCALE_SAMPLES)));
  const cfg = loadEngineConfig(undefined, { backbone });
  const pool = new ExtractorPool(resolve(backbone), { provider: 'cpu' });
  const rnd = seededRandom(7);
  const loaded = new Map<string, RgbImage[]>();
  const load = async (folder: string) => {
    if (!loaded.has(folder)) {
      const dir = join(work, 'images', folder);
      const files = readdirSync(dir)
        .filter((f) => f.endsWith('.png'))
        .sort();
      const m = Math.min(files.length, 64);
      loaded.set(folder, await Promise.all(Array.from({ length: m }, (_, i) => readImage(join(dir, files[Math.floor((i * files.length) / m)])))));
    }
    return loaded.get(folder)!;
  };
  const crop = async (img: RgbImage, w: number, h: number) => {
    const c = cropImage(img, { left: Math.floor(rnd() * (img.width - w + 1)), top: Math.floor(rnd() * (img.height - h + 1)), width: w, height: h });
    return normaliseRows(await (await pool.get(featureSettings(cfg, c))).semanticOf(c), 1, 1280);
  };
  const pair = async (kind: 'same' | 'other', name: string, A: RgbImage[], B: RgbImage[]) => {
    const a = A.slice(0, samples);
    const b = B.slice(0, samples);
    const w = Math.min(...[...a, ...b].map((i) => i.width));
    const h = Math.min(...[...a, ...b].map((i) => i.height));
    const rows = new Float32Array((a.length + b.length) * 1280);
    let r = 0;
    for (const i of [...a, ...b]) rows.set(await crop(i, w, h), 1280 * r++);
    const m = mixing(rows, a.length, b.length, 1280);
    console.log(`${kind}\t${m.toFixed(3)}\t${name}\t${w}x${h}`);
    return m;
  };
  const same: number[] = [];
  const other: number[] = [];
  for (const t of SURFACES) {
    const bySize = new Map<string, RgbImage[]>();
    for (const x of await load(t)) bySize.set(`${x.width}x${x.height}`, [...(bySize.get(`${x.width}x${x.height}`) ?? []), x]);
    const g = [...bySize].sort();
    for (let i = 0; i < g.length; i++) for (let j = i + 1; j < g.length; j++) same.push(await pair('same', `${t} ${g[i][0]} vs ${g[j][0]}`, g[i][1], g[j][1]));
  }
  for (let i = 0; i < PRODUCTS.length; i++) {
    for (let j = i + 1; j < PRODUCTS.length; j++) {
      const isSame = SAME.has(`${PRODUCTS[i]}|${PRODUCTS[j]}`);
      const m = await pair(isSame ? 'same' : 'other', `${PRODUCTS[i]} vs ${PRODUCTS[j]}`, await load(PRODUCTS[i]), await load(PRODUCTS[j]));
      (isSame ? same : other).push(m);
    }
  }
  const q = (v: number[]) => [...v].sort((x, y) => x - y);
  console.log(`\none product, other frame sizes: ${same.length} pairs, lowest ${q(same)[0].toFixed(3)}, median ${q(same)[same.length >> 1].toFixed(3)}`);
  console.log(`other products: ${other.length} pairs, highest ${q(other).at(-1)!.toFixed(3)}, second ${q(other).at(-2)!.toFixed(3)}, ${other.filter((m) => m > 0).length} above 0`);
  await pool.release();
}

await main();
