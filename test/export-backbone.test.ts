/**
 * deploy/export_backbone.py with Debian's python3-torch (random weights, no download), loaded by the
 * extractor. Skipped, with the reason, where no Python with torch + torchvision is installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { FeatureExtractor } from '../src/features/extractor.ts';
import { PROJECT_ROOT } from '../src/config.ts';
import { tempDir } from './helpers/synthetic.ts';

const python = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import torch, torchvision'], { stdio: 'ignore' }).status === 0);
const skip = python ? false : 'no python3 with torch and torchvision (deploy/setup.sh installs python3-torch python3-torchvision)';

test('a torchvision resnet18 exported by deploy/export_backbone.py loads and yields patch features', { skip, timeout: 300_000 }, async () => {
  const out = join(tempDir('export'), 'r18');
  const r = spawnSync(python!, [join(PROJECT_ROOT, 'deploy', 'export_backbone.py'), '--arch', 'resnet18', '--weights', 'none', '--out', out], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const fx = await FeatureExtractor.load(out, { width: 224, height: 224, fit: 'letterbox', preDim: 256, dim: 128 });
  assert.equal(fx.gridWidth, 28);
  assert.equal(fx.semanticDim, 512);
  const f = await fx.extract({ width: 300, height: 200, data: new Uint8Array(300 * 200 * 3).fill(90) });
  assert.equal(f.patches.length, 784 * 128);
  assert.ok(f.patches.every(Number.isFinite));
  await fx.release();
});
