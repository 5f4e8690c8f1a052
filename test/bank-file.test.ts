import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertBankMatches, decodeBank, encodeBank, fromFloat16, readBankFile, toFloat16, writeBankFile, type Bank } from '../src/score/bank-file.ts';
import { tempDir } from './helpers/synthetic.ts';

function sampleBank(dtype: 'float32' | 'float16' = 'float32'): Bank {
  const count = 7,
    dim = 5;
  return {
    header: {
      format_version: 1,
      created_at: '2026-11-22T00:00:00.000Z',
      backbone: { id: 'bb', onnx_sha256: 'a'.repeat(64) },
      features: { width: 224, height: 224, fit: 'letterbox', pre_dim: 1024, dim, layers: ['p8', 'p16'], grid: [28, 28] },
      coreset: { ratio: 0.1, projection_dim: 128, seed: 0, source_patches: 70, source_images: 1 },
      count,
      dim,
      dtype,
    },
    vectors: Float32Array.from({ length: count * dim }, (_, i) => Math.sin(i) * 3),
  };
}

test('bank round-trips through a file (float32 exact)', () => {
  const dir = tempDir('bank');
  const b = sampleBank();
  const p = join(dir, 'x.hcebank');
  writeBankFile(p, b);
  const r = readBankFile(p);
  assert.deepEqual(r.header, b.header);
  assert.deepEqual(r.vectors, b.vectors);
});

test('float16 payload halves the size and keeps 3 significant digits', () => {
  const b32 = encodeBank(sampleBank('float32'));
  const b16 = encodeBank(sampleBank('float16'));
  assert.ok(b16.length < b32.length);
  const r = decodeBank(b16);
  const orig = sampleBank().vectors;
  for (let i = 0; i < orig.length; i++) assert.ok(Math.abs(r.vectors[i] - orig[i]) <= 2e-3 * Math.max(1, Math.abs(orig[i])));
  for (const v of [0, 1, -2.5, 65504, 1e-5, 0.333]) assert.ok(Math.abs(fromFloat16(toFloat16(v)) - v) <= Math.abs(v) * 1e-3 + 1e-7, `${v}`);
});

test('truncated, corrupted, wrong-version and foreign files are refused with a clear error', () => {
  const good = encodeBank(sampleBank());
  assert.throws(() => decodeBank(good.subarray(0, good.length - 10)), /truncated/);
  assert.throws(() => decodeBank(good.subarray(0, 20)), /truncated/);
  assert.throws(() => decodeBank(good.subarray(0, 10)), /truncated/);
  const flipped = good.slice();
  flipped[good.length - 40] ^= 0x01; // inside the payload
  assert.throws(() => decodeBank(flipped), /corrupted \(checksum/);
  const v2 = good.slice();
  new DataView(v2.buffer).setUint32(8, 2, true);
  assert.throws(() => decodeBank(v2), /format version 2 is not supported/);
  const foreign = good.slice();
  foreign[0] = 0x50;
  assert.throws(() => decodeBank(foreign), /bad magic/);
  const longer = new Uint8Array(good.length + 3);
  longer.set(good);
  assert.throws(() => decodeBank(longer), /trailing/);
});

test('a bank built with another backbone or other features is refused', () => {
  const h = sampleBank().header;
  const ok = { backboneId: 'bb', onnxSha256: 'a'.repeat(64), width: 224, height: 224, fit: 'letterbox' as const, preDim: 1024, dim: 5 };
  assertBankMatches(h, ok);
  assert.throws(() => assertBankMatches(h, { ...ok, onnxSha256: 'b'.repeat(64), backboneId: 'other' }), /built with backbone "bb".*loaded backbone is "other"/);
  assert.throws(() => assertBankMatches(h, { ...ok, width: 320 }), /input 224x224 vs 320x224/);
});

test('bank writes are atomic: no temp files left, old content replaced whole', () => {
  const dir = tempDir('atomic');
  const p = join(dir, 'b.hcebank');
  writeFileSync(p, 'old');
  writeBankFile(p, sampleBank());
  assert.equal(readFileSync(p).subarray(0, 7).toString(), 'HCEBANK');
  assert.deepEqual(readdirSync(dir), ['b.hcebank']);
});
