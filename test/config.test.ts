import { test } from 'node:test';
import assert from 'node:assert/strict';
import { autoInputSize, loadEngineConfig, resolveInputSize } from '../src/config.ts';

test('default config is valid and picks the measured defaults', () => {
  const c = loadEngineConfig();
  assert.equal(c.features.input_size, 'auto');
  assert.equal(c.features.fit, 'letterbox');
  assert.equal(c.runtime.provider, 'cpu');
  assert.deepEqual(c.scoring.search, { mode: 'ann', projection_dim: 32, candidates: 12, coarse: 'int8' });
});

test('auto input size keeps the frame aspect at the 224x224 pixel budget', () => {
  assert.deepEqual(autoInputSize(512, 512), { width: 224, height: 224 });
  assert.deepEqual(autoInputSize(202, 512), { width: 128, height: 352 }); // KolektorSDD's tall frames
  assert.deepEqual(autoInputSize(1920, 1080), { width: 288, height: 160 });
  // "auto:S": the same aspect at S x S pixels
  assert.deepEqual(resolveInputSize('auto:288', { width: 900, height: 900 }), { width: 288, height: 288 });
  assert.deepEqual(resolveInputSize('auto:224', { width: 202, height: 512 }), resolveInputSize('auto', { width: 202, height: 512 }));
  assert.equal(loadEngineConfig(undefined, { features: { input_size: 'auto:256' } }).features.input_size, 'auto:256');
  for (const bad of ['auto:32', 'auto:2048', 'auto:', 'auto:2x2']) assert.throws(() => loadEngineConfig(undefined, { features: { input_size: bad } }), /features.input_size/, bad);
});

test('a bad value is reported with its key, the value and what is allowed', () => {
  assert.throws(() => loadEngineConfig(undefined, { coreset: { ratio: 2 } }), /config "coreset.ratio" = 2 is invalid: a number in \(0, 1\]/);
  assert.throws(() => loadEngineConfig(undefined, { features: { fit: 'squash' } }), /"features.fit" = "squash" is invalid: one of letterbox, stretch, crop/);
  assert.throws(() => loadEngineConfig(undefined, { features: { input_size: '10x10' } }), /"features.input_size" = "10x10"/);
  assert.throws(() => loadEngineConfig(undefined, { scoring: { search: { coarse: 'int4' } } }), /"scoring.search.coarse" = "int4" is invalid: one of int8, float32/);
  assert.throws(() => loadEngineConfig(undefined, { runtime: { provider: 'opencl' } }), /"runtime.provider" = "opencl" is invalid: one of cpu, cuda, tensorrt/);
  assert.throws(() => loadEngineConfig('/nonexistent/site.json'), /cannot read config \/nonexistent\/site.json/);
});
