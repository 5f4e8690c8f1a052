import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { evaluate } from '../src/eval/evaluate.ts';
import type { SearchSettings } from '../src/score/ann.ts';
import { Progress } from '../src/util/progress.ts';
import { syntheticPart, tempDir, writeNominalSet, writePng, writeSyntheticBackbone } from './helpers/synthetic.ts';

const SIZE = 96;

test('evaluate scores with the configured search: ANN with every row a candidate equals exact, a one-candidate ANN over-estimates', async () => {
  const dir = tempDir('eval');
  const backbone = writeSyntheticBackbone(join(dir, 'bb'));
  const root = join(dir, 'data');
  await writeNominalSet(join(root, 'part', 'train', 'good'), 16, SIZE, 100);
  await writeNominalSet(join(root, 'part', 'test', 'good'), 4, SIZE, 300);
  mkdirSync(join(root, 'part', 'test', 'scratch'), { recursive: true });
  for (let i = 0; i < 4; i++) await writePng(join(root, 'part', 'test', 'scratch', `${i}.png`), syntheticPart(SIZE, 400 + i, { x: 20 + 9 * i, y: 30, w: 10, h: 4 }), SIZE, SIZE);
  const run = async (search: SearchSettings) =>
    (
      await evaluate(
        {
          dataset: root,
          categories: ['part'],
          backbone,
          features: () => ({ width: SIZE, height: SIZE, fit: 'letterbox', preDim: 64, dim: 32 }),
          coreset: { ratio: 0.25, projectionDim: 16, seed: 0, dtype: 'float32' },
          reweightNeighbours: 0,
          heatmapSigma: 4,
          search,
          provider: 'cpu',
        },
        new Progress(false),
      )
    ).categories.part;
  const exact = await run({ mode: 'exact' });
  const full = await run({ mode: 'ann', projection_dim: 8, candidates: 1_000_000 });
  const poor = await run({ mode: 'ann', projection_dim: 1, candidates: 1 });
  assert.ok(exact.f1_threshold !== null && full.f1_threshold !== null && poor.f1_threshold !== null);
  assert.ok(Math.abs(full.f1_threshold - exact.f1_threshold) < 1e-3 * exact.f1_threshold, `${full.f1_threshold} vs ${exact.f1_threshold}`);
  assert.ok(poor.f1_threshold > exact.f1_threshold * 1.001, `a one-candidate search should over-estimate: ${poor.f1_threshold} vs ${exact.f1_threshold}`);
  assert.equal(full.image_auroc, exact.image_auroc);
});
