// A NaN or infinite feature must never pass a part: the scorer, the verdict, the payload and the
// backbone check each fail safe on their own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import fc from 'fast-check';
import { PatchScorer } from '../src/score/scorer.ts';
import type { SearchSettings } from '../src/score/ann.ts';
import { seededRandom } from '../src/score/coreset.ts';
import { Inspector } from '../src/inspect/inspector.ts';
import { readBundleFileBounded } from '../src/bundle/bundle-file.ts';
import { FeatureExtractor } from '../src/features/extractor.ts';
import { verdictPayload } from '../src/publish/payloads.ts';
import { calibrate, CalibrationError } from '../src/calibrate/calibrate.ts';
import { syntheticCalibrationOptions, syntheticPart, tempDir, writeNominalSet, writeSyntheticBackbone, writeSyntheticBundle } from './helpers/synthetic.ts';

const GH = 4;
const GW = 5;
const DIM = 16;
const M = 64;

function matrix(rows: number, seed: number): Float32Array {
  const r = seededRandom(seed);
  return new Float32Array(rows * DIM).map(() => r() - 0.5);
}

const SEARCHES: SearchSettings[] = [{ mode: 'exact' }, { mode: 'ann', projection_dim: 4, candidates: 8 }, { mode: 'ann', projection_dim: 4, candidates: 8, coarse: 'int8' }];

for (const search of SEARCHES) {
  test(`scorer (${search.mode}${search.mode === 'ann' ? ` ${search.coarse ?? 'float32'}` : ''}): one non-finite patch value anywhere makes the image score NaN`, async () => {
    const bank = matrix(M, 1);
    const scorer = await PatchScorer.create(bank, M, DIM, { gridHeight: GH, gridWidth: GW, height: 32, width: 40, search });
    try {
      const clean = matrix(GH * GW, 2);
      assert.ok(Number.isFinite((await scorer.score(clean)).score), 'finite features give a finite score');
      await fc.assert(
        fc.asyncProperty(fc.nat(GH * GW * DIM - 1), fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY), async (at, bad) => {
          const p = clean.slice();
          p[at] = bad;
          const r = await scorer.score(p);
          assert.ok(Number.isNaN(r.score), `value ${bad} at ${at} gave score ${r.score}`);
          assert.equal(r.maxPatch, Math.floor(at / DIM), 'the broken patch is the one reported');
        }),
        { numRuns: 40 },
      );
    } finally {
      await scorer.release();
    }
  });
}

/** An inspector over a synthetic bundle whose backbone (same weights) gives NaN where `poison` says. */
async function poisonedInspector(tag: string, poison: 'patches' | 'semantic'): Promise<Inspector> {
  const dir = tempDir(tag);
  const { bundle } = await writeSyntheticBundle(dir, 10);
  const poisoned = writeSyntheticBackbone(join(dir, 'poisoned'), { poison });
  const b = readBundleFileBounded(bundle, 2 ** 30);
  // The bundle pins its backbone's hash; point it at the poisoned one.
  const fx = await FeatureExtractor.load(poisoned, { width: 96, height: 96, fit: 'letterbox', preDim: 64, dim: 32 });
  b.header.backbone.onnx_sha256 = fx.modelSha256;
  await fx.release();
  return Inspector.load(b, poisoned);
}

test('a frame whose patch features are NaN is NG with fault "non-finite score", published with score null and the reason', async () => {
  const insp = await poisonedInspector('nan', 'patches');
  try {
    const img = { width: 96, height: 96, data: syntheticPart(96, 9100) };
    const r = await insp.inspect(img);
    assert.equal(r.cluster_id, 0, 'the semantic embedding is intact, so the frame routes to its cluster');
    assert.equal(r.verdict, 'NG');
    assert.equal(r.fault, 'non-finite score');
    assert.equal(r.regions, null, 'no regions are invented from a map of NaNs');
    const json = JSON.parse(
      JSON.stringify(
        verdictPayload(
          { runId: 'r', station: 's', bundle: { id: 'b', created_at: 'now' } },
          { frame: { id: 1, capturedAt: 0 }, partId: null, startedAt: 0, finishedAt: 1, result: r, inferenceMs: 1, heatmap: false, image: false },
        ),
      ),
    );
    assert.equal(json.verdict, 'NG');
    assert.equal(json.score, null);
    assert.equal(json.normalised_score, null);
    assert.equal(json.reason, 'non-finite score');
    // Forcing the cluster (evaluation with the class known) is just as safe.
    assert.equal((await insp.inspect(img, 0)).verdict, 'NG');
  } finally {
    await insp.release();
  }
});

test('a frame whose semantic embedding is NaN is UNKNOWN, never scored, and its route distance is published as null', async () => {
  const insp = await poisonedInspector('nan-sem', 'semantic');
  try {
    const r = await insp.inspect({ width: 96, height: 96, data: syntheticPart(96, 9200) });
    assert.equal(r.verdict, 'UNKNOWN');
    assert.equal(r.score, null);
    const json = JSON.parse(
      JSON.stringify(
        verdictPayload(
          { runId: 'r', station: 's', bundle: { id: 'b', created_at: 'now' } },
          { frame: { id: 1, capturedAt: 0 }, partId: null, startedAt: 0, finishedAt: 1, result: r, inferenceMs: 1, heatmap: false, image: false },
        ),
      ),
    );
    assert.equal(json.route.distance, null);
  } finally {
    await insp.release();
  }
});

test('a backbone that gives NaN features on a blank frame is refused at load with a reason', async () => {
  const dir = tempDir('nan-load');
  const bb = writeSyntheticBackbone(join(dir, 'bb'), { poison: 'always' });
  await assert.rejects(FeatureExtractor.load(bb, { width: 96, height: 96, fit: 'letterbox', preDim: 64, dim: 32 }), /NaN or infinite features on a blank frame/);
});

for (const poison of ['patches', 'semantic'] as const) {
  test(`calibration stops, naming the image, when the backbone gives NaN ${poison} features (no NaN threshold or routing key is ever written)`, async () => {
    const dir = tempDir('nan-cal');
    const bb = writeSyntheticBackbone(join(dir, 'bb'), { poison });
    const images = await writeNominalSet(join(dir, 'calib'), 8, 96, 5000);
    await assert.rejects(calibrate(syntheticCalibrationOptions(bb, images)), (e: Error) => e instanceof CalibrationError && e.message.includes(images[0]));
  });
}
