import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cacheBudgetBytes, PatchCache } from '../src/calibrate/patch-cache.ts';

test('patch cache keeps images within its budget and hands them back bit for bit at the same size only', () => {
  const cache = new PatchCache(3 * 400 * 4); // room for three images of 400 values
  const img = (v: number) => Float32Array.from({ length: 400 }, (_, k) => v + k / 7);
  for (let i = 0; i < 5; i++) cache.put(i, '224x224', img(i));
  assert.equal(cache.size, 3);
  assert.equal(cache.refused, 2);
  assert.ok(cache.usedBytes <= cache.budgetBytes);
  assert.equal(cache.take(1, '256x256'), undefined, 'another input size is extracted again');
  assert.equal(cache.take(4, '224x224'), undefined, 'refused image is not held');
  assert.equal(cache.size, 3, 'a miss frees nothing');
  assert.deepEqual(cache.take(1, '224x224'), img(1));
  assert.equal(cache.size, 2);
  assert.equal(cache.usedBytes, 2 * 400 * 4, 'taking frees its budget');
  assert.equal(cache.take(1, '224x224'), undefined, 'taken once');
  cache.drop(0);
  assert.equal(cache.size, 1);
  assert.ok(cache.put(5, '224x224', img(5)), 'dropping frees budget');
});

test('patch cache copies what it is lent, and keeps what it is handed over (owned) without a copy', () => {
  const cache = new PatchCache(1 << 20);
  const lent = new Float32Array([1, 2, 3]);
  cache.put(0, 'a', lent);
  lent[0] = 99;
  assert.deepEqual(Array.from(cache.take(0, 'a')!), [1, 2, 3]);
  const owned = new Float32Array([4, 5, 6]);
  cache.put(1, 'a', owned, true);
  assert.equal(cache.take(1, 'a'), owned);
});

test('the cache budget is the configured size, capped at a quarter of the memory', () => {
  assert.equal(cacheBudgetBytes(4096, 64 * 2 ** 30), 4096 * 2 ** 20);
  assert.equal(cacheBudgetBytes(4096, 8 * 2 ** 30), 2 * 2 ** 30);
  assert.equal(cacheBudgetBytes(0, 8 * 2 ** 30), 0);
});
