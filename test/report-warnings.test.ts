import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { reportData } from '../src/calibrate/build-run.ts';
import type { Bundle } from '../src/bundle/bundle-file.ts';
import { tempDir, writeNominalSet } from './helpers/synthetic.ts';

/** One FRR-thresholded cluster of n images whose held-out scores are 1..n; threshold between. */
async function report(n: number, above: number, frr: number, source: 'frr' | 'f1' = 'frr') {
  const members = await writeNominalSet(join(tempDir('rw'), 'good'), n, 32, 1);
  const scores = members.map((_, i) => i + 1);
  const bundle = {
    header: { settings: { frr_target: frr }, calibration: { mode: 'clustered' } },
    clusters: [{ info: { name: 'c0', members, bank: { count: 10 }, threshold: n - above + 0.5, threshold_source: source, routing_limit: 1, statistics: {} } }],
  } as unknown as Bundle;
  // Identical embeddings: no "looks like two products" warning to get in the way.
  const emb = { semantic: new Float32Array(n * 4).fill(0.5), dim: 4 };
  return reportData(bundle, [scores], [[]], emb, members, { rejected: [], missed: [], defectsUnknown: 0 });
}

const overWarning = (r: Awaited<ReturnType<typeof report>>) => r.warnings.filter((w) => /score above the threshold/.test(w.text));

test('held-out good images above an FRR threshold: shown with the cluster while within the target, a warning beyond it', async () => {
  // 40 images at 5%: two above the threshold is what the target allows.
  const within = await report(40, 2, 0.05);
  assert.equal(overWarning(within).length, 0);
  assert.equal(within.clusters[0].tail?.length, 2);
  const beyond = await report(40, 3, 0.05);
  assert.equal(overWarning(beyond).length, 1);
  assert.match(overWarning(beyond)[0].text, /3 good image\(s\).*more than the 2/);
  assert.equal(beyond.clusters[0].tail, undefined);
  const none = await report(40, 0, 0.05);
  assert.equal(overWarning(none).length, 0);
  assert.equal(none.clusters[0].tail, undefined);
});

test('with an F1 threshold (chosen from defects) any good image above it is a warning', async () => {
  const r = await report(40, 1, 0.05, 'f1');
  assert.equal(overWarning(r).length, 1);
});
