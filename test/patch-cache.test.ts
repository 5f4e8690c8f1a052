import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cacheBudgetBytes, PatchCache } from '../src/calibrate/patch-cache.ts';

test('patch cache keeps images within its budget and returns them bit for bit at the same size only', () => {
  const cache = new PatchCache(3 * 400 * 4); // room for three images of 400 values
  const img = (v: number) => Float32Array.from({ length: 400 }, (_, k) => v + k / 7);
  for (let i = 0; i < 5; i++) cache.put(i, '224x224', img(i));
  assert.equal(cache.size, 3);
  assert.equal(cache.refused, 2);
  assert.ok(cache.usedBytes <= cache.budgetBytes);
  const out = new Float32Array(800);
  assert.ok(cache.copyTo(1, '224x224', out, 400));
  assert.deepEqual(out.subarray(400), img(1));
  assert.equal(cache.copyTo(1, '256x256', out, 0), false, 'another input size is extracted again');
  assert.equal(cache.copyTo(4, '224x224', out, 0), false, 'refused image is not held');
  assert.equal(cache.copyTo(0, '224x224', out, 600), false, 'would overflow the output');
  cache.drop(1);
  assert.equal(cache.size, 2);
  assert.ok(cache.put(5, '224x224', img(5)), 'dropping frees budget');
});

test('patch cache copies what it is given: later writes to the source do not change it', () => {
  const cache = new PatchCache(1 << 20);
  const src = new Float32Array([1, 2, 3]);
  cache.put(0, 'a', src);
  src[0] = 99;
  const out = new Float32Array(3);
  cache.copyTo(0, 'a', out, 0);
  assert.deepEqual(Array.from(out), [1, 2, 3]);
});

test('takeTo hands an image over and frees its budget; a miss frees nothing', () => {
  const cache = new PatchCache(2 * 16);
  cache.put(0, 'a', new Float32Array(4).fill(3));
  cache.put(1, 'a', new Float32Array(4).fill(5));
  const out = new Float32Array(4);
  assert.equal(cache.takeTo(1, 'b', out, 0), false);
  assert.equal(cache.size, 2);
  assert.ok(cache.takeTo(1, 'a', out, 0));
  assert.deepEqual(Array.from(out), [5, 5, 5, 5]);
  assert.equal(cache.size, 1);
  assert.equal(cache.usedBytes, 16);
  assert.equal(cache.takeTo(1, 'a', out, 0), false, 'taken once');
});

test('the cache budget is the configured size, capped at a quarter of the memory', () => {
  assert.equal(cacheBudgetBytes(4096, 64 * 2 ** 30), 4096 * 2 ** 20);
  assert.equal(cacheBudgetBytes(4096, 8 * 2 ** 30), 2 * 2 ** 30);
  assert.equal(cacheBudgetBytes(0, 8 * 2 ** 30), 0);
});
