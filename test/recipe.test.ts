import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_RECIPE, engineOverrides, parseRecipe, readRecipeFile, stripJsonComments } from '../src/calibrate/recipe.ts';
import { runCliCalibration } from '../src/calibrate/cli-calibrate.ts';
import { recipeOf } from '../src/cli/calibrate-command.ts';
import { loadEngineConfig } from '../src/config.ts';
import { readBundleFile } from '../src/bundle/bundle-file.ts';
import { syntheticProduct, tempDir, writePng, writeSyntheticBackbone, type ProductKind } from './helpers/synthetic.ts';

/** Engine settings for the synthetic backbone's 96 px parts (small banks, one onnxruntime thread). */
function syntheticEngine(bb: string, folds: number) {
  return loadEngineConfig(undefined, {
    backbone: bb,
    features: { input_size: '96x96', pre_dim: 64, dim: 32 },
    coreset: { ratio: 0.25, projection_dim: 16 },
    calibration: { folds, min_cluster_size: 8 },
    runtime: { provider: 'cpu', threads: 1 },
  });
}

test('recipe: the example file parses; JSONC comments and trailing commas; errors name the field', () => {
  const ex = readRecipeFile(join(import.meta.dirname, '..', 'calibration', 'recipe.example.jsonc'));
  assert.deepEqual(ex.source, { kind: 'folder', path: '/data/line3/good' });
  assert.equal(ex.capture.images, 300);
  assert.equal(ex.threshold.held_out, null, 'null: the engine config decides');
  assert.deepEqual(ex.validation, { holdout: 0.2, max_frr: 0.05 });

  assert.deepEqual(JSON.parse(stripJsonComments('{"a": "http://x//y", /* c */ "b": [1, 2,], // d\n}')), { a: 'http://x//y', b: [1, 2] });

  const r = parseRecipe({ source: { folder: 'good' }, labels: 'folders', bank: { dim: 128 }, threshold: { frr_target: 0.01, use: 'f1' }, defects: 'bad' }, DEFAULT_RECIPE, '/site');
  assert.deepEqual(r.source, { kind: 'folder', path: '/site/good' }, 'relative to the recipe folder');
  assert.equal(r.defects, '/site/bad');
  assert.deepEqual(engineOverrides(r), { features: { dim: 128 }, coreset: {}, calibration: { frr_target: 0.01, threshold: 'f1' } });
  assert.deepEqual(engineOverrides(parseRecipe({ bank: { input_size: 'auto:256' } })).features, { input_size: 'auto:256' });
  // The daemon's first, flat fields still work.
  const flat = parseRecipe({ images: 30, policy: 'interval', interval_s: 2, holdout: 0.25 });
  assert.deepEqual([flat.capture.images, flat.capture.policy, flat.capture.interval_s, flat.validation.holdout], [30, 'interval', 2, 0.25]);
  assert.deepEqual(parseRecipe(undefined), DEFAULT_RECIPE);

  const bad: [unknown, RegExp][] = [
    [{ capture: { images: 3 } }, /recipe\.capture\.images must be an integer 4-5000/],
    [{ capture: { policy: 'sometimes' } }, /recipe\.capture\.policy must be count, interval, trigger/],
    [{ capture: { skip_blank: 'yes' } }, /recipe\.capture\.skip_blank must be true or false/],
    [{ threshold: { frr_target: 5 } }, /recipe\.threshold\.frr_target must be a number > 0 and < 1/],
    [{ threshold: { held_out: 'jackknife' } }, /recipe\.threshold\.held_out must be kfold, /],
    [{ bank: { coreset_ratio: 0 } }, /recipe\.bank\.coreset_ratio/],
    [{ bank: { input_size: 'auto:9999' } }, /recipe\.bank\.input_size/],
    [{ bank: { input_size: 224 } }, /recipe\.bank\.input_size/],
    [{ bank: { size: 1 } }, /unknown recipe field "bank\.size"/],
    [{ sorce: 'camera' }, /unknown recipe field "sorce"/],
    [{ source: { folder: '' } }, /recipe\.source\.folder must be a folder path/],
    [{ threshold: { use: 'f1' } }, /needs recipe\.defects/],
    [{ labels: 'folders' }, /needs a folder source/],
    [{ validation: { holdout: 0 } }, /holdout must be > 0 for the camera/],
    [[1], /recipe must be a JSON object/],
  ];
  for (const [over, re] of bad) assert.throws(() => parseRecipe(over), re, JSON.stringify(over));

  const dir = tempDir('recipe');
  // calibrate without a recipe file: every image, none skipped or held out, as before recipes
  const plain = recipeOf({ images: dir, out: 'x.hcebundle', knownClass: true });
  assert.deepEqual([plain.source, plain.labels, plain.validation.holdout, plain.capture.skip_duplicates], [{ kind: 'folder', path: dir }, 'folders', 0, false]);
  assert.throws(() => recipeOf({ out: 'x.hcebundle' }), /needs --images <dir> or --recipe <file>/);
  writeFileSync(join(dir, 'r.jsonc'), '{ "source": { "folder": "a" }, "capture": { "images": 50 } }');
  const both = recipeOf({ recipe: join(dir, 'r.jsonc'), images: '/elsewhere', out: 'x' });
  assert.deepEqual([both.source, both.capture.images, both.validation.holdout], [{ kind: 'folder', path: '/elsewhere' }, 50, 0.2], '--images wins over the recipe source');
  writeFileSync(join(dir, 'broken.jsonc'), '{ "capture": { "images": 10 ');
  assert.throws(() => readRecipeFile(join(dir, 'broken.jsonc')), /broken\.jsonc: not valid JSON/);
  writeFileSync(join(dir, 'typo.jsonc'), '// x\n{ "validation": { "max_frr": 2 } }');
  assert.throws(() => readRecipeFile(join(dir, 'typo.jsonc')), /typo\.jsonc: recipe\.validation\.max_frr/);
});

async function writeSet(dir: string, kind: ProductKind, n: number, seed0: number, defect = false): Promise<void> {
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < n; i++) {
    const rgb = syntheticProduct(kind, 96, seed0 + i, defect ? { x: 30 + i * 4, y: kind === 'plate' ? 12 : 40, w: 12, h: 8 } : undefined);
    await writePng(join(dir, `${kind}_${String(i).padStart(3, '0')}.png`), rgb, 96, 96);
  }
}

test('calibrate --recipe (folder): held-out validation, duplicates skipped, a self-contained report', async () => {
  const dir = tempDir('recipe-run');
  const bb = writeSyntheticBackbone(join(dir, 'bb'));
  await writeSet(join(dir, 'good', 'disc'), 'disc', 15, 100);
  await writeSet(join(dir, 'good', 'plate'), 'plate', 15, 200);
  // the same part twice: the second copy is skipped as a near-duplicate
  writeFileSync(join(dir, 'good', 'plate', 'plate_zzz.png'), readFileSync(join(dir, 'good', 'plate', 'plate_014.png')));
  await writeSet(join(dir, 'bad'), 'disc', 3, 700, true);
  writeFileSync(
    join(dir, 'recipe.jsonc'),
    `// test recipe
{ "source": { "folder": "good" }, "defects": "bad", "validation": { "holdout": 0.2, "max_frr": 0.5 }, }`,
  );
  const recipe = readRecipeFile(join(dir, 'recipe.jsonc'));
  const config = syntheticEngine(bb, 4);
  const out = join(dir, 'out', 'line.hcebundle');
  const report = join(dir, 'out', 'line.report.html');
  const r = await runCliCalibration({ recipe, config, out, report, log: () => {} });
  assert.ok(r.skipped.duplicate >= 1, 'the repeated image is skipped');
  assert.equal(r.images, 31 - r.skipped.duplicate);
  const b = readBundleFile(out);
  assert.equal(b.clusters.length, 2);
  const used = [...b.header.clusters.flatMap((c) => c.members), ...r.outcome.heldOut.map((h) => h.path)];
  assert.equal(used.length, r.images, 'every picked image calibrates or validates');
  assert.ok(!used.some((p) => p.endsWith('plate_zzz.png')), 'the copy is not used');
  assert.equal(r.outcome.heldOut.length, Math.floor(r.images / 5), 'every fifth image held out');
  assert.ok(r.validation, 'validated on the held-out images');
  const rep = r.outcome.report!;
  assert.equal(rep.clusters.length, 2);
  for (const c of rep.clusters) {
    assert.equal(c.held_out.length, c.images, 'one held-out score per member');
    assert.ok(c.thumbs.length > 0 && c.thumbs.every((t) => t.uri.startsWith('data:image/jpeg;base64,')));
  }
  assert.equal(rep.clusters.reduce((s, c) => s + c.defects.length, 0) + rep.defects_unknown, 3, 'every labelled defect scored or counted unknown');
  assert.ok(rep.stages.some((s) => s.stage === 'embed') && rep.stages.some((s) => s.stage === 'validate'));

  const html = readFileSync(report, 'utf8');
  assert.match(html, /<svg/);
  assert.match(html, /threshold \d/);
  assert.match(html, /silhouette/);
  assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, 'nothing fetched from elsewhere');
  assert.doesNotMatch(html, /<script/);
});

test('calibrate --recipe with source "camera" from the command line: frames from the site config\'s source', async () => {
  const dir = tempDir('recipe-cam');
  const bb = writeSyntheticBackbone(join(dir, 'bb'));
  await writeSet(join(dir, 'line'), 'disc', 14, 300);
  const site = join(dir, 'site.json');
  writeFileSync(site, JSON.stringify({ station: 't', source: { kind: 'folder', path: join(dir, 'line'), fps: 50 } }));
  const recipe = parseRecipe({ source: 'camera', capture: { images: 12 }, validation: { holdout: 0.25, max_frr: 0.5 } });
  const config = syntheticEngine(bb, 3);
  const out = join(dir, 'cam.hcebundle');
  const r = await runCliCalibration({ recipe, config, out, report: join(dir, 'cam.html'), siteConfig: site, log: () => {} });
  assert.equal(readdirSync(`${out}.frames`).length, 12, 'the captured frames are kept beside the bundle');
  assert.equal(readBundleFile(out).header.calibration.images, 9);
  assert.equal(r.outcome.heldOut.length, 3);
  await assert.rejects(
    runCliCalibration({ recipe: parseRecipe({ source: 'camera', capture: { policy: 'trigger' } }), config, out, report: join(dir, 'x.html'), siteConfig: site, log: () => {} }),
    /trigger.*daemon/,
  );
});
