/**
 * Clustering study (issue 9): does calibration find one cluster per product on a mixed line, for any
 * number and look of products? Builds product types from the real data sets plus derived ones that
 * emulate products we do not have, embeds them once with the reference backbone (cached), then runs
 * `clusterEmbeddings` on every subset of types (or a random sample) and reports clusters found vs
 * products, NMI and purity.
 *
 *   node --import tsx scripts/cluster-study.ts [--data ../shared/datasets] [--work scratch/B/study]
 *        [--backbone models/mnv2-ptq] [--sample N] [--seed S] [--posed] [--only a,b,c] [--json out.json]
 *
 * --posed: every image of every product is replaced, with probability 1/2, by a copy of it in a random
 * other pose (rotations by 90° on square frames, 180°, mirror images): one product in several poses
 * must still be one cluster.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import sharp, { type Metadata, type Sharp } from 'sharp';
import { embedImages } from '../src/calibrate/calibrate.ts';
import { featureSettings, loadEngineConfig } from '../src/config.ts';
import { ExtractorPool } from '../src/features/extractor-pool.ts';
import { clusterEmbeddings, type ClusteringOptions } from '../src/route/finch.ts';
import { seededRandom } from '../src/score/coreset.ts';

type Derive = (img: Sharp, meta: Metadata, rnd: () => number) => Promise<Sharp> | Sharp;

/** Centre crop of `frac` of each side. */
function centreCrop(meta: Metadata, frac: number) {
  const w = Math.round(meta.width! * frac);
  const h = Math.round(meta.height! * frac);
  return { left: Math.floor((meta.width! - w) / 2), top: Math.floor((meta.height! - h) / 2), width: w, height: h };
}

/** Shuffled 64x64 tiles of a frame laid out 6 x 4: a grayscale texture, nothing like an object. */
async function tiles(img: Sharp, meta: Metadata, rnd: () => number): Promise<Sharp> {
  const g = await img.grayscale().raw().toBuffer();
  const T = 64;
  const W = 6 * T;
  const H = 4 * T;
  const out = Buffer.alloc(W * H);
  for (let t = 0; t < 24; t++) {
    const sx = Math.floor(rnd() * (meta.width! - T));
    const sy = Math.floor(rnd() * (meta.height! - T));
    const dx = (t % 6) * T;
    const dy = Math.floor(t / 6) * T;
    for (let y = 0; y < T; y++) for (let x = 0; x < T; x++) out[(dy + y) * W + dx + x] = g[(sy + y) * meta.width! + sx + x];
  }
  return sharp(out, { raw: { width: W, height: H, channels: 1 } });
}

/** Product types: source category and how its images are changed. Close ones and one far one. */
const TYPES: Record<string, { from: string; derive?: Derive }> = {
  bottle: { from: 'bottle' },
  screw: { from: 'screw' },
  kolektor: { from: 'kolektor' },
  'bottle-gray': { from: 'bottle', derive: (i) => i.grayscale() },
  'bottle-tint': { from: 'bottle', derive: (i) => i.modulate({ hue: 120, saturation: 1.5 }) },
  'bottle-zoom': { from: 'bottle', derive: (i, m) => i.extract(centreCrop(m, 0.6)).resize(384, 384) },
  'screw-crop': { from: 'screw', derive: (i, m) => i.extract(centreCrop(m, 0.55)).resize(320, 320) },
  'screw-wide': { from: 'screw', derive: (i) => i.extend({ left: 128, right: 128, background: { r: 0, g: 0, b: 0 }, extendWith: 'copy' }) },
  'kolektor-inv': { from: 'kolektor', derive: (i) => i.negate({ alpha: false }) },
  'kolektor-texture': { from: 'kolektor', derive: tiles },
};

/** Another pose of the part: on square frames any of the 7 other rotations/mirrors, else 180° or a mirror. */
function posed(img: Sharp, meta: Metadata, rnd: () => number): Sharp {
  const square = meta.width === meta.height;
  const ops = square ? ['r90', 'r180', 'r270', 'flip', 'flop', 'transpose', 'transverse'] : ['r180', 'flip', 'flop'];
  const op = ops[Math.floor(rnd() * ops.length)];
  if (op === 'r90') return img.rotate(90);
  if (op === 'r180') return img.rotate(180);
  if (op === 'r270') return img.rotate(270);
  if (op === 'flip') return img.flip();
  if (op === 'flop') return img.flop();
  if (op === 'transpose') return img.rotate(90).flop();
  return img.rotate(270).flop();
}

function sources(data: string, cat: string): string[] {
  return ['train', 'test'].flatMap((split) => {
    const dir = join(data, cat, split, 'good');
    return readdirSync(dir)
      .filter((f) => f.endsWith('.png'))
      .sort()
      .map((f) => join(dir, f));
  });
}

/** Write the derived images of every type (and a posed copy of each) under work/images/<type>[@posed]/. */
async function derive(data: string, work: string): Promise<void> {
  for (const [name, t] of Object.entries(TYPES)) {
    for (const variant of ['', '@posed']) {
      const dir = join(work, 'images', name + variant);
      if (existsSync(join(dir, '.done'))) continue;
      mkdirSync(dir, { recursive: true });
      const rnd = seededRandom(name.length * 7919 + (variant ? 1 : 0));
      for (const src of sources(data, t.from)) {
        const meta = await sharp(src).metadata();
        let img = sharp(src);
        if (t.derive) img = sharp(await (await t.derive(img, meta, rnd)).png().toBuffer());
        if (variant) {
          const m2 = await img.metadata();
          img = posed(img, m2, rnd);
        }
        const base = src.split('/').slice(-3).join('-');
        await img.png().toFile(join(dir, base));
      }
      writeFileSync(join(dir, '.done'), '');
    }
  }
}

interface TypeEmb {
  name: string;
  n: number;
  dim: number;
  semantic: Float32Array;
  pose: Float32Array;
}

/** Unit semantic embeddings and pose distances of every image folder, cached in work/emb/<folder>.f32. */
async function embed(work: string, backbone: string): Promise<Map<string, TypeEmb>> {
  const c = loadEngineConfig(undefined, { backbone });
  const pool = new ExtractorPool(resolve(backbone), { provider: 'cpu' });
  const out = new Map<string, TypeEmb>();
  mkdirSync(join(work, 'emb'), { recursive: true });
  for (const folder of readdirSync(join(work, 'images')).sort()) {
    const file = join(work, 'emb', `${folder}.f32`);
    const meta = `${file}.json`;
    if (!existsSync(meta)) {
      const dir = join(work, 'images', folder);
      const paths = readdirSync(dir)
        .filter((f) => f.endsWith('.png'))
        .sort()
        .map((f) => join(dir, f));
      const t0 = Date.now();
      const e = await embedImages(paths, pool, (f) => featureSettings(c, f), undefined, 'embed', true);
      const buf = new Float32Array(e.semantic.length + e.pose!.samples.length);
      buf.set(e.semantic);
      buf.set(e.pose!.samples, e.semantic.length);
      writeFileSync(file, Buffer.from(buf.buffer));
      writeFileSync(meta, JSON.stringify({ n: paths.length, dim: e.dim, sizes: [...new Set(e.sizes)] }));
      console.error(`embedded ${folder}: ${paths.length} images in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }
    const { n, dim } = JSON.parse(readFileSync(meta, 'utf8')) as { n: number; dim: number };
    const raw = readFileSync(file);
    const all = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    out.set(folder, { name: folder, n, dim, semantic: all.slice(0, n * dim), pose: all.slice(n * dim) });
  }
  await pool.release();
  return out;
}

/** Normalised mutual information (arithmetic-mean normalisation, as scikit-learn's default). */
export function nmi(a: Int32Array, b: Int32Array): number {
  const n = a.length;
  const joint = new Map<string, number>();
  const ca = new Map<number, number>();
  const cb = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    joint.set(`${a[i]},${b[i]}`, (joint.get(`${a[i]},${b[i]}`) ?? 0) + 1);
    ca.set(a[i], (ca.get(a[i]) ?? 0) + 1);
    cb.set(b[i], (cb.get(b[i]) ?? 0) + 1);
  }
  const h = (m: Map<number, number>) => -[...m.values()].reduce((s, v) => s + (v / n) * Math.log(v / n), 0);
  let mi = 0;
  for (const [k, v] of joint) {
    const [x, y] = k.split(',').map(Number);
    mi += (v / n) * Math.log((v * n) / (ca.get(x)! * cb.get(y)!));
  }
  const ha = h(ca);
  const hb = h(cb);
  return ha + hb === 0 ? 1 : (2 * mi) / (ha + hb);
}

/** Fraction of images in their cluster's majority product. */
export function purity(found: Int32Array, truth: Int32Array): number {
  const counts = new Map<number, Map<number, number>>();
  for (let i = 0; i < found.length; i++) {
    const m = counts.get(found[i]) ?? new Map<number, number>();
    m.set(truth[i], (m.get(truth[i]) ?? 0) + 1);
    counts.set(found[i], m);
  }
  let s = 0;
  for (const m of counts.values()) s += Math.max(...m.values());
  return s / found.length;
}

function arg(name: string, def?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}

async function main(): Promise<void> {
  const data = resolve(arg('data', '../shared/datasets')!);
  const work = resolve(arg('work', 'scratch/B/study')!);
  const backbone = arg('backbone', 'models/mnv2-ptq')!;
  const sample = Number(arg('sample', '0'));
  const isPosed = process.argv.includes('--posed');
  const rnd = seededRandom(Number(arg('seed', '1')));
  await derive(data, work);
  const emb = await embed(work, backbone);
  const names = (arg('only') ?? Object.keys(TYPES).join(',')).split(',');
  const cfg = loadEngineConfig(undefined, { backbone });
  const opts: ClusteringOptions = {
    minSilhouette: cfg.calibration.min_silhouette,
    poseMerge: cfg.calibration.pose_merge,
    minClusterSize: cfg.calibration.min_cluster_size,
  };
  let subsets: number[] = [];
  for (let m = 1; m < 1 << names.length; m++) subsets.push(m);
  if (sample > 0 && sample < subsets.length) {
    // all singletons and pairs, plus a random sample of the larger subsets, and the full set
    const small = subsets.filter((m) => popcount(m) <= 2 || m === (1 << names.length) - 1);
    const rest = subsets.filter((m) => !small.includes(m));
    for (let i = rest.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [rest[i], rest[j]] = [rest[j], rest[i]];
    }
    subsets = [...small, ...rest.slice(0, Math.max(0, sample - small.length))].sort((a, b) => popcount(a) - popcount(b) || a - b);
  }
  const rows: { types: string[]; n: number; found: number; nmi: number; purity: number; ms: number; reason: string }[] = [];
  for (const m of subsets) {
    const picked = names.filter((_, i) => m & (1 << i));
    const parts = picked.map((t) => ({ t, e: emb.get(t)!, p: emb.get(`${t}@posed`)! }));
    const n = parts.reduce((s, p) => s + p.e.n, 0);
    const dim = parts[0].e.dim;
    const x = new Float32Array(n * dim);
    const pose = new Float32Array(n * 3);
    const truth = new Int32Array(n);
    let r = 0;
    parts.forEach(({ e, p }, k) => {
      for (let i = 0; i < e.n; i++, r++) {
        const src = isPosed && rnd() < 0.5 ? p : e;
        x.set(src.semantic.subarray(i * dim, (i + 1) * dim), r * dim);
        pose.set(src.pose.subarray(i * 3, i * 3 + 3), r * 3);
        truth[r] = k;
      }
    });
    const t0 = performance.now();
    const res = clusterEmbeddings(x, n, dim, opts, { samples: pose, perRow: 3 });
    const ms = performance.now() - t0;
    const row = { types: picked, n, found: res.count, nmi: nmi(res.labels, truth), purity: purity(res.labels, truth), ms, reason: res.reason };
    rows.push(row);
    const ok = row.found === picked.length && row.nmi >= 0.98 && row.purity >= 0.98;
    console.log(
      `${ok ? 'ok  ' : 'FAIL'} ${picked.length} ${row.found} nmi=${row.nmi.toFixed(3)} pur=${row.purity.toFixed(3)} n=${n} ${ms.toFixed(0)}ms ${picked.join('+')}${ok ? '' : ` | ${res.reason}`}`,
    );
  }
  const fails = rows.filter((q) => q.found !== q.types.length || q.nmi < 0.98 || q.purity < 0.98);
  const byK = new Map<number, typeof rows>();
  for (const q of rows) byK.set(q.types.length, [...(byK.get(q.types.length) ?? []), q]);
  console.log(`\nproducts | subsets | count right | min NMI | min purity | worst ms`);
  for (const [k, qs] of [...byK].sort((a, b) => a[0] - b[0])) {
    const right = qs.filter((q) => q.found === k).length;
    console.log(
      `${k} | ${qs.length} | ${right} | ${Math.min(...qs.map((q) => q.nmi)).toFixed(3)} | ${Math.min(...qs.map((q) => q.purity)).toFixed(3)} | ${Math.max(...qs.map((q) => q.ms)).toFixed(0)}`,
    );
  }
  console.log(`${rows.length - fails.length}/${rows.length} subsets pass (clusters = products, NMI >= 0.98, purity >= 0.98)${isPosed ? ', products in mixed poses' : ''}`);
  const json = arg('json');
  if (json) writeFileSync(json, JSON.stringify(rows, null, 1));
}

function popcount(m: number): number {
  let c = 0;
  for (; m; m &= m - 1) c++;
  return c;
}

await main();
