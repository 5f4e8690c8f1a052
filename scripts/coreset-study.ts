// Coreset variants on one category: time and image AUROC (ANN 32/8 scoring). Needs ../shared/datasets, models/mnv2-ptq.
//   node --import tsx scripts/coreset-study.ts <category> '[projectionDim, ...]'   e.g. '[32,64,128]'
import { appendFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { loadEngineConfig } from '../src/config.ts';
import { ExtractorPool } from '../src/features/extractor-pool.ts';
import { patchesOf } from './study-patches.ts';
import { loadCategory } from '../src/eval/dataset.ts';
import { auroc } from '../src/eval/metrics.ts';
import { greedyCoreset } from '../src/score/coreset.ts';
import { gatherRows } from '../src/util/vec.ts';
import { scorerOptionsFor } from '../src/score/patchcore.ts';
import { PatchScorer } from '../src/score/scorer.ts';
const cat = process.argv[2];
const variants = JSON.parse(process.argv[3]) as number[]; // coreset projection dims
const c = loadEngineConfig(undefined, { backbone: 'models/mnv2-ptq', features: { dim: 1024 } });
const data = loadCategory('../shared/datasets', cat);
const pool = new ExtractorPool('models/mnv2-ptq', { provider: 'cpu' });
const { ex, all } = await patchesOf(pool, c, data.train);
const test = await patchesOf(
  pool,
  c,
  data.test.map((x) => x.path),
);
const labels = data.test.map((x) => (x.anomalous ? 1 : 0));
const P = ex.patchCount,
  D = 1024,
  per = P * D,
  n = data.train.length * P;
for (const pd of variants) {
  const t0 = performance.now();
  const idx = await greedyCoreset(all, n, D, { ratio: 0.1, projectionDim: pd, seed: 0 });
  const s = (performance.now() - t0) / 1000;
  const bank = gatherRows(all, D, idx);
  const sc = await PatchScorer.create(bank, idx.length, D, { ...scorerOptionsFor(ex, { provider: 'cpu' }), search: { mode: 'ann', projection_dim: 32, candidates: 8 } });
  const scores: number[] = [];
  for (let i = 0; i < labels.length; i++) scores.push((await sc.score(test.all.subarray(i * per, (i + 1) * per))).score);
  await sc.release();
  const line = JSON.stringify({ cat, proj: pd, s: s.toFixed(1), auroc: auroc(scores, labels)?.toFixed(4), load: loadavg()[0].toFixed(2) });
  console.log(line);
  appendFileSync('coreset-study.jsonl', `${line}\n`);
}
await pool.release();
