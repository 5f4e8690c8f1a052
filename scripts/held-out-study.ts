// Held-out threshold + coreset study at paper fidelity (dim 1024, 10%). One category per run.
//   node --import tsx scripts/held-out-study.ts <category> [--seed1]   (needs ../shared/datasets, models/mnv2-ptq)
import { appendFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { loadEngineConfig } from '../src/config.ts';
import { ExtractorPool } from '../src/features/extractor-pool.ts';
import { patchesOf } from './study-patches.ts';
import { loadCategory } from '../src/eval/dataset.ts';
import { auroc } from '../src/eval/metrics.ts';
import { coresetBank, scorerOptionsFor, type CoresetSettings } from '../src/score/patchcore.ts';
import { PatchScorer } from '../src/score/scorer.ts';
import { MaskedScorer, rowSources } from '../src/score/held-out.ts';
import { frrThreshold, kFolds } from '../src/calibrate/threshold.ts';
import type { SearchSettings } from '../src/score/ann.ts';
import type { FeatureExtractor } from '../src/features/extractor.ts';
import type { Bank } from '../src/score/bank-file.ts';

const cat = process.argv[2];
const seed1 = process.argv.includes('--seed1');
const out = 'held-out-study.jsonl';
const c = loadEngineConfig(undefined, { backbone: 'models/mnv2-ptq', features: { dim: 1024 }, coreset: { ratio: 0.1 } });
const data = loadCategory('../shared/datasets', cat);
const pool = new ExtractorPool('models/mnv2-ptq', { provider: 'cpu' });
const ANN: SearchSettings = { mode: 'ann', projection_dim: 32, candidates: 8 };
const rec = (o: object) => {
  const line = JSON.stringify({ cat, load: loadavg()[0].toFixed(2), ...o });
  console.log(line);
  appendFileSync(out, `${line}\n`);
};

const t = () => performance.now();
const cs = (over: Partial<CoresetSettings> = {}): CoresetSettings => ({ ratio: 0.1, projectionDim: 32, seed: 0, dtype: 'float32', ...over });
const sub = (all: Float32Array, per: number, rows: number[]) => {
  const s = new Float32Array(rows.length * per);
  rows.forEach((r, j) => s.set(all.subarray(r * per, (r + 1) * per), j * per));
  return s;
};

async function scoreAll(ex: FeatureExtractor, bank: { vectors: Float32Array; header: { count: number; dim: number } }, all: Float32Array, per: number, rows: number[], search: SearchSettings) {
  const scorer = await PatchScorer.create(bank.vectors, bank.header.count, bank.header.dim, { ...scorerOptionsFor(ex, { sigma: 4, reweightNeighbours: 0, provider: 'cpu' }), search });
  const s: number[] = [];
  for (const r of rows) s.push((await scorer.score(all.subarray(r * per, (r + 1) * per))).score);
  await scorer.release();
  return s;
}

async function kfold(ex: FeatureExtractor, all: Float32Array, n: number, per: number, over: Partial<CoresetSettings>, search: SearchSettings, foldSeed: number) {
  const fold = kFolds(n, 5, foldSeed);
  const held = new Array<number>(n);
  for (let f = 0; f < 5; f++) {
    const train = [...Array(n).keys()].filter((k) => fold[k] !== f);
    const test = [...Array(n).keys()].filter((k) => fold[k] === f);
    const { bank } = await coresetBank(ex, sub(all, per, train), train.length, cs({ ...over, seed: foldSeed }));
    const s = await scoreAll(ex, bank, all, per, test, search);
    test.forEach((k, j) => (held[k] = s[j]));
  }
  return held;
}

async function masked(
  ex: FeatureExtractor,
  bank: { vectors: Float32Array; header: { count: number; dim: number } },
  selected: Int32Array,
  all: Float32Array,
  n: number,
  per: number,
  groups: number[][],
  search: SearchSettings,
) {
  const sc = await MaskedScorer.create(bank.vectors, bank.header.count, bank.header.dim, rowSources(selected, ex.patchCount), { patchCount: ex.patchCount, provider: 'cpu', search });
  const held = new Array<number>(n);
  for (const g of groups) for (const i of g) held[i] = await sc.scoreWithout(all.subarray(i * per, (i + 1) * per), g);
  await sc.release();
  return held;
}

let t0 = t();
const { ex, all } = await patchesOf(pool, c, data.train);
const n = data.train.length;
const per = ex.patchCount * ex.settings.dim;
rec({ step: 'extract-train', n, s: ((t() - t0) / 1000).toFixed(1) });
t0 = t();
const test = await patchesOf(
  pool,
  c,
  data.test.map((x) => x.path),
);
const labels = data.test.map((x) => (x.anomalous ? 1 : 0));
rec({ step: 'extract-test', n: labels.length, s: ((t() - t0) / 1000).toFixed(1) });
const testRows = [...labels.keys()];

const banks: Record<string, { bank: Bank; selected: Int32Array }> = {};
for (const [name, over] of [
  ['global128', {}],
  ['global64', { projectionDim: 64 }],
  ['global32', { projectionDim: 32 }],
] as const) {
  t0 = t();
  const b = await coresetBank(ex, all, n, cs(over));
  const s = ((t() - t0) / 1000).toFixed(1);
  banks[name] = b;
  const sc = await scoreAll(ex, b.bank, test.all, per, testRows, ANN);
  rec({ step: 'coreset', name, rows: b.bank.header.count, s, auroc_ann: auroc(sc, labels)?.toFixed(4) });
}
const thr = (h: number[]) => frrThreshold(h, 0.005);
for (const bname of ['global128', 'global32']) {
  const b = banks[bname];
  t0 = t();
  const lso = await masked(
    ex,
    b.bank,
    b.selected,
    all,
    n,
    per,
    [...Array(n).keys()].map((i) => [i]),
    ANN,
  );
  rec({ step: 'lso', bank: bname, thr: thr(lso), s: ((t() - t0) / 1000).toFixed(1) });
  for (const k of [5, 10]) {
    const fold = kFolds(n, k, 0);
    const groups = [...Array(k).keys()].map((f) => [...Array(n).keys()].filter((i) => fold[i] === f));
    t0 = t();
    const h = await masked(ex, b.bank, b.selected, all, n, per, groups, ANN);
    rec({ step: `mfold${k}`, bank: bname, thr: thr(h), s: ((t() - t0) / 1000).toFixed(1) });
  }
}
t0 = t();
rec({ step: 'kfold-ref', thr: thr(await kfold(ex, all, n, per, {}, { mode: 'exact' }, 0)), s: ((t() - t0) / 1000).toFixed(1) });
if (seed1) {
  t0 = t();
  rec({ step: 'kfold-ref-seed1', thr: thr(await kfold(ex, all, n, per, {}, { mode: 'exact' }, 1)), s: ((t() - t0) / 1000).toFixed(1) });
}
await pool.release();
