/**
 * Inputs from outside the process: image files, replay folders, credentials in URLs, text that ends
 * up in the journal, a full archive disk, frames of many shapes, and the systemd sandbox.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import sharp from 'sharp';
import { DEFAULT_MAX_PIXELS, ImageDecodeError, decodeBmp, decodeImage, readImage } from '../src/features/image.ts';
import { maxPixelsFor } from '../src/capture/limits.ts';
import { FolderSource } from '../src/capture/folder-source.ts';
import { describeLaunch, type SourceConfig } from '../src/capture/pipelines.ts';
import type { SourceState } from '../src/capture/types.ts';
import { redactConfig, redactSecrets, redactUrl } from '../src/util/redact.ts';
import { MAX_MESSAGE_CHARS, createLogger } from '../src/service/log.ts';
import { ArchiveError, NgArchive, type ArchiveFs } from '../src/service/archive.ts';
import * as nodeFs from 'node:fs';
import { ExtractorPool } from '../src/features/extractor-pool.ts';
import { FeatureExtractor, type FeatureSettings } from '../src/features/extractor.ts';
import { writeFileAtomic } from '../src/util/files.ts';
import { tempDir, writePng, writeSyntheticBackbone, syntheticPart } from './helpers/synthetic.ts';

// ---------------------------------------------------------------- images

function bmp(width: number, height: number, bpp: 8 | 24 | 32, seed = 1): Uint8Array {
  const palette = bpp === 8 ? 256 * 4 : 0;
  const masks = bpp === 32 ? 12 : 0;
  const offset = 54 + masks + palette;
  const row = Math.ceil((width * bpp) / 32) * 4;
  const buf = new Uint8Array(offset + row * height);
  const v = new DataView(buf.buffer);
  v.setUint16(0, 0x4d42, true);
  v.setUint32(2, buf.length, true);
  v.setUint32(10, offset, true);
  v.setUint32(14, 40, true);
  v.setInt32(18, width, true);
  v.setInt32(22, height, true);
  v.setUint16(26, 1, true);
  v.setUint16(28, bpp, true);
  if (bpp === 32) {
    v.setUint32(30, 3, true);
    [0x00ff0000, 0x0000ff00, 0x000000ff].forEach((m, i) => v.setUint32(54 + 4 * i, m, true));
  }
  if (bpp === 8) for (let i = 0; i < 256; i++) buf.set([i, 255 - i, (i * 7) & 255, 0], 54 + 4 * i);
  for (let i = offset; i < buf.length; i++) buf[i] = (i * 31 + seed * 17) & 255;
  return buf;
}

function pngChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, data.length);
  out.set(Buffer.from(type, 'latin1'), 4);
  out.set(data, 8);
  v.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/** A PNG header claiming width x height RGB (the IDAT is a stub: the limit must refuse it first). */
function hugePng(width: number, height: number): Uint8Array {
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', new Uint8Array([0x78, 0x9c, 0x03, 0x00])),
    pngChunk('IEND', new Uint8Array(0)),
  ]);
}

const onlyDecodeErrors = (e: unknown) => {
  if (!(e instanceof ImageDecodeError)) throw new Error(`threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
};

test('BMP: a 62-byte file with a palette of 0xFFFFFFFF colours is refused at once', () => {
  const b = bmp(1, 1, 8).slice(0, 62);
  new DataView(b.buffer).setUint32(46, 0xffffffff, true);
  new DataView(b.buffer).setUint32(10, 58, true);
  const t0 = performance.now();
  assert.throws(
    () => decodeBmp(b),
    (e: unknown) => e instanceof ImageDecodeError && /palette of 4294967295 colours is invalid/.test((e as Error).message),
  );
  assert.ok(performance.now() - t0 < 50);
});

test('BMP: every header field is checked, with a message that says which', () => {
  const field = (off: number, bytes: 2 | 4, value: number, base = bmp(4, 3, 24)) => {
    const b = base.slice();
    if (bytes === 2) new DataView(b.buffer).setUint16(off, value, true);
    else new DataView(b.buffer).setUint32(off, value >>> 0, true);
    return b;
  };
  const refuses = (b: Uint8Array, re: RegExp, maxPixels?: number) =>
    assert.throws(
      () => decodeBmp(b, { maxPixels }),
      (e: unknown) => e instanceof ImageDecodeError && re.test((e as Error).message),
    );
  refuses(field(0, 2, 0x4141), /no "BM" signature/);
  refuses(field(14, 4, 12), /header size 12 is not supported/);
  refuses(field(18, 4, 0), /size 0x3 is invalid/);
  refuses(field(18, 4, -4), /size -4x3 is invalid/);
  refuses(field(22, 4, 0), /size 4x0 is invalid/);
  refuses(field(18, 4, 0x7fffffff), /exceeds the limit of 40000000 pixels/);
  refuses(field(22, 4, 0x80000000), /exceeds the limit/);
  refuses(bmp(100, 100, 24), /exceeds the limit of 9999 pixels/, 9999);
  refuses(field(28, 2, 16), /16 bits per pixel is not supported/);
  refuses(field(30, 4, 1), /compression 1 is not supported/);
  refuses(field(54, 4, 0xff, bmp(2, 2, 32)), /colour masks .* are not supported/);
  refuses(field(46, 4, 257, bmp(2, 2, 8)), /palette of 257 colours is invalid/);
  refuses(field(10, 4, 60, bmp(2, 2, 8)), /palette of 256 colours does not fit/);
  refuses(field(10, 4, 20), /offset 20 lies inside the headers/);
  refuses(field(10, 4, 0xfffffff0), /truncated/);
  refuses(bmp(4, 3, 24).subarray(0, 40), /truncated \(40 bytes/);
  // top-down, 8-bit with a short palette, 32-bit bit fields still decode
  const small = field(46, 4, 2, bmp(3, 2, 8));
  assert.equal(decodeBmp(small).data.length, 18);
  const topDown = field(22, 4, -2, bmp(3, 2, 24));
  assert.deepEqual(decodeBmp(topDown).data.subarray(0, 3), decodeBmp(bmp(3, 2, 24)).data.subarray(9, 12));
  assert.equal(decodeBmp(bmp(5, 4, 32)).width, 5);
});

test('PNG/JPEG: a 16000x16000 header is refused before decoding; limits and formats', async () => {
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  await assert.rejects(
    decodeImage(hugePng(16000, 16000), 'huge.png'),
    (e: unknown) => e instanceof ImageDecodeError && /huge\.png: image is larger than the limit of 40000000 pixels/.test((e as Error).message),
  );
  assert.ok(performance.now() - t0 < 1000, `${performance.now() - t0} ms`);
  assert.ok(process.memoryUsage().rss - rss0 < 100 * 2 ** 20, 'nothing near 768 MB was allocated');

  const png = await sharp(syntheticPart(64, 1), { raw: { width: 64, height: 64, channels: 3 } })
    .png()
    .toBuffer();
  assert.equal((await decodeImage(png, 'p', { maxPixels: 4096 })).width, 64);
  await assert.rejects(decodeImage(png, 'p', { maxPixels: 4095 }), /limit of 4095 pixels/);
  const jpg = await sharp(syntheticPart(64, 1), { raw: { width: 64, height: 64, channels: 3 } })
    .jpeg()
    .toBuffer();
  // SOF0 carries height and width: claim 60000x60000
  const sof = jpg.indexOf(Buffer.from([0xff, 0xc0]));
  const big = Buffer.from(jpg);
  big.writeUInt16BE(60000, sof + 5);
  big.writeUInt16BE(60000, sof + 7);
  await assert.rejects(decodeImage(big, 'big.jpg'), /big\.jpg: image is larger than the limit/);
  await assert.rejects(decodeImage(Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'), 'x.svg'), /not a PNG, JPEG or BMP/);

  const dir = tempDir('inputs-img');
  writeFileSync(join(dir, 'big.bmp'), 'BM');
  nodeFs.truncateSync(join(dir, 'big.bmp'), 17 * 2 ** 20); // sparse: nothing is written
  await assert.rejects(readImage(join(dir, 'big.bmp'), { maxPixels: 1000 }), /more than an image of 1000 pixels needs/);
  assert.equal(DEFAULT_MAX_PIXELS, 40_000_000);
});

test('maxPixelsFor: the configured value, else 4x the output size, else 40 MP', () => {
  assert.equal(maxPixelsFor({ max_pixels: 1234, width: 640, height: 480 }), 1234);
  assert.equal(maxPixelsFor({ max_pixels: 0, width: 640, height: 480 }), 4 * 640 * 480);
  assert.equal(maxPixelsFor({ max_pixels: 0, width: 0, height: 0 }), 40_000_000);
});

const INTERESTING = [0, 1, 2, 8, 12, 24, 32, 40, 54, 124, 255, 256, 257, 0x7fff, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 0xfffffffe];
const HEADER_FIELDS: [number, 2 | 4][] = [
  [2, 4],
  [10, 4],
  [14, 4],
  [18, 4],
  [22, 4],
  [26, 2],
  [28, 2],
  [30, 4],
  [34, 4],
  [46, 4],
  [50, 4],
  [54, 4],
  [58, 4],
];

/** undefined 4 times out of 5 */
const rarely = <T>(a: fc.Arbitrary<T>) => fc.oneof({ arbitrary: fc.constant(undefined), weight: 4 }, { arbitrary: a, weight: 1 });

/** Mutations of a valid file: header fields set to edge values, random bytes, truncation. */
const mutation = fc.record({
  fields: fc.array(fc.tuple(fc.constantFrom(...HEADER_FIELDS), fc.oneof(fc.constantFrom(...INTERESTING), fc.integer({ min: 0, max: 0xffffffff }))), { maxLength: 4 }),
  bytes: fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { maxLength: 6 }),
  cut: rarely(fc.nat()),
});

function mutate(base: Uint8Array, m: { fields: [[number, 2 | 4], number][]; bytes: [number, number][]; cut?: number }, headerOnly = true): Uint8Array {
  const b = base.slice();
  const v = new DataView(b.buffer);
  for (const [[off, size], value] of m.fields) {
    if (off + size > b.length) continue;
    if (size === 2) v.setUint16(off, value & 0xffff, true);
    else v.setUint32(off, value >>> 0, true);
  }
  const span = headerOnly ? Math.min(b.length, 1200) : b.length;
  for (const [at, value] of m.bytes) b[at % span] = value;
  return m.cut === undefined ? b : b.subarray(0, m.cut % (b.length + 1));
}

function checkDecoded(img: { width: number; height: number; data: Uint8Array }, maxPixels: number): void {
  assert.ok(img.width * img.height <= maxPixels, `${img.width}x${img.height}`);
  assert.equal(img.data.length, img.width * img.height * 3);
}

const PROPERTY_RUNS = { bmpRandom: 2000, bmpMutated: 3000, encodedMutated: 1000 };

test(`property: decodeBmp on arbitrary bytes throws only ImageDecodeError (${PROPERTY_RUNS.bmpRandom} cases)`, () => {
  const maxPixels = 64 * 64;
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, signed) => {
      const b = signed && bytes.length >= 2 ? Uint8Array.from([0x42, 0x4d, ...bytes.subarray(2)]) : bytes;
      const t0 = performance.now();
      try {
        checkDecoded(decodeBmp(b, { maxPixels }), maxPixels);
      } catch (e) {
        onlyDecodeErrors(e);
      }
      assert.ok(performance.now() - t0 < 100);
    }),
    { numRuns: PROPERTY_RUNS.bmpRandom, seed: 7 },
  );
});

test(`property: decodeBmp on mutated valid 8/24/32-bit files: only ImageDecodeError, bounded output, fast (${PROPERTY_RUNS.bmpMutated} cases)`, (t) => {
  const maxPixels = 48 * 48;
  const bases = [bmp(17, 9, 8), bmp(13, 11, 24), bmp(7, 5, 32), bmp(48, 48, 24)];
  let decoded = 0;
  fc.assert(
    fc.property(fc.nat({ max: bases.length - 1 }), mutation, (i, m) => {
      const b = mutate(bases[i], m);
      const t0 = performance.now();
      try {
        checkDecoded(decodeBmp(b, { maxPixels }), maxPixels);
        decoded++;
      } catch (e) {
        onlyDecodeErrors(e);
      }
      assert.ok(performance.now() - t0 < 100, `${performance.now() - t0} ms`);
    }),
    { numRuns: PROPERTY_RUNS.bmpMutated, seed: 11 },
  );
  t.diagnostic(`decoded ${decoded} of ${PROPERTY_RUNS.bmpMutated}`);
  assert.ok(decoded > 0, 'some mutations still decode (the generator is not all garbage)');
});

test(`property: decodeImage on mutated PNG, JPEG and BMP files: only ImageDecodeError, bounded output (${PROPERTY_RUNS.encodedMutated} cases)`, async (t) => {
  const maxPixels = 64 * 64;
  const raw = { raw: { width: 64, height: 48, channels: 3 as const } };
  const bases = [
    await sharp(syntheticPart(64, 3).subarray(0, 64 * 48 * 3), raw)
      .png()
      .toBuffer(),
    await sharp(syntheticPart(64, 4).subarray(0, 64 * 48 * 3), raw)
      .jpeg()
      .toBuffer(),
    bmp(30, 20, 24),
  ];
  const pngFields = fc.record({
    // IHDR width/height (big-endian, at 16 and 20) set to edge values; CRCs left stale or not
    w: rarely(fc.constantFrom(0, 1, 64, 16000, 0x7fffffff, 0xffffffff)),
    h: rarely(fc.constantFrom(0, 1, 48, 16000, 0x7fffffff, 0xffffffff)),
  });
  const outcomes = { decoded: 0, refused: 0 };
  await fc.assert(
    fc.asyncProperty(fc.nat({ max: bases.length - 1 }), mutation, pngFields, async (i, m, f) => {
      // BMP header offsets mean nothing in PNG/JPEG: those get byte flips, truncation and IHDR sizes.
      let b = mutate(bases[i], i === 2 ? m : { ...m, fields: [] }, false);
      if (i === 0 && b.length >= 24) {
        b = b.slice();
        const v = new DataView(b.buffer, b.byteOffset);
        if (f.w !== undefined) v.setUint32(16, f.w);
        if (f.h !== undefined) v.setUint32(20, f.h);
        if (f.w !== undefined || f.h !== undefined) v.setUint32(29, crc32(b.subarray(12, 29)));
      }
      const t0 = performance.now();
      try {
        checkDecoded(await decodeImage(b, 'm', { maxPixels }), maxPixels);
        outcomes.decoded++;
      } catch (e) {
        onlyDecodeErrors(e);
        outcomes.refused++;
      }
      assert.ok(performance.now() - t0 < 500);
    }),
    { numRuns: PROPERTY_RUNS.encodedMutated, seed: 13 },
  );
  t.diagnostic(`decoded ${outcomes.decoded}, refused ${outcomes.refused}`);
  assert.equal(outcomes.decoded + outcomes.refused, PROPERTY_RUNS.encodedMutated);
  assert.ok(outcomes.decoded > 0);
});

// ---------------------------------------------------------------- folder replay

test('folder replay: an undecodable file reports lost, the next good frame streaming again', async () => {
  const dir = tempDir('inputs-folder');
  await writePng(join(dir, 'a_good.png'), syntheticPart(32, 1), 32, 32);
  writeFileSync(join(dir, 'b_bad.png'), 'not a png at all');
  await writePng(join(dir, 'c_good.png'), syntheticPart(32, 2), 32, 32);
  await writePng(join(dir, 'd_large.png'), syntheticPart(64, 3), 64, 64);
  await writePng(join(dir, 'e_good.png'), syntheticPart(32, 4), 32, 32);
  const src = new FolderSource({ path: dir, fps: 200, loop: false, maxPixels: 32 * 32 });
  const states: [SourceState, string][] = [];
  const frames: string[] = [];
  await new Promise<void>((resolve) =>
    src.start({
      frame: (f) => frames.push(f.path!),
      state: (s, d) => {
        states.push([s, d]);
        if (s === 'ended') resolve();
      },
    }),
  );
  await src.stop();
  assert.deepEqual(
    states.map((s) => s[0]),
    ['streaming', 'lost', 'streaming', 'lost', 'streaming', 'ended'],
  );
  assert.match(states[1][1], /b_bad\.png: cannot decode/);
  assert.match(states[3][1], /d_large\.png: image is larger than the limit of 1024 pixels/);
  assert.deepEqual(
    frames.map((p) => p.slice(dir.length + 1)),
    ['a_good.png', 'c_good.png', 'e_good.png'],
  );
});

// ---------------------------------------------------------------- secrets

test('redaction: URLs of any scheme, launch strings, rtspsrc properties and password= tokens', () => {
  assert.equal(redactUrl('rtsp://admin:pw@cam.local:554/stream1'), 'rtsp://***@cam.local:554/stream1');
  assert.equal(redactUrl('mqtts://user@broker:8883'), 'mqtts://***@broker:8883');
  assert.equal(redactUrl('http://cam/path'), 'http://cam/path');
  assert.equal(redactSecrets('MQTT connected to mqtt://u:p%40ss@broker:1883 (MQTT 5)'), 'MQTT connected to mqtt://***@broker:1883 (MQTT 5)');
  assert.equal(redactSecrets('rtspsrc location="rtsp://a:b\\"c@cam/s" user-id=admin user-pw="x y" latency=100'), 'rtspsrc location="rtsp://***@cam/s" user-id=*** user-pw="***" latency=100');
  assert.equal(redactSecrets('souphttpsrc location=http://cam/snap?user=admin&password=hunter2 ! jpegdec'), 'souphttpsrc location=http://cam/snap?user=***&password=*** ! jpegdec');
  assert.equal(redactSecrets('{"password":"s3cret","token": "t"}'), '{"password":"***","token": "***"}');
  assert.equal(redactSecrets('two: rtsp://u:p@a/x and rtsp://b/y'), 'two: rtsp://***@a/x and rtsp://b/y');
  const rtsp: SourceConfig = { kind: 'rtsp', path: '', device: '', url: 'rtsp://admin:pw@10.0.0.5/h264', camera: '', pipeline: '', width: 0, height: 0, fps: 5, loop: false, frame_timeout_ms: 5000 };
  assert.doesNotMatch(describeLaunch(rtsp), /admin|pw@/);
  assert.match(describeLaunch(rtsp), /rtspsrc location="rtsp:\/\/\*\*\*@10\.0\.0\.5\/h264"/);
  const custom = { ...rtsp, kind: 'gstreamer' as const, pipeline: 'rtspsrc location=rtsp://10.0.0.5/a user-id=admin user-pw=pw ! decodebin' };
  assert.doesNotMatch(describeLaunch(custom), /admin|=pw/);
});

test('redactConfig: sensitive keys masked, URLs in every other string redacted, input untouched', () => {
  const conf = {
    source: { kind: 'rtsp', url: 'rtsp://admin:pw@cam/s', pipeline: 'x user-pw=pw ! y' },
    mqtt: { url: 'mqtt://u:mqttpw@broker', password: 'mqttpw', username: 'u', key: '' },
    commands: { token: 'tok' },
    list: ['http://a:b@c'],
    n: 3,
    b: true,
    z: null,
  };
  const out = redactConfig(conf, ['mqtt.password', 'commands.token', 'key']);
  assert.equal(out.mqtt.password, '[redacted]');
  assert.equal(out.commands.token, '[redacted]');
  assert.equal(out.mqtt.key, '', 'unset stays visibly unset');
  assert.equal(out.mqtt.url, 'mqtt://***@broker');
  assert.equal(out.source.url, 'rtsp://***@cam/s');
  assert.equal(out.source.pipeline, 'x user-pw=*** ! y');
  assert.deepEqual(out.list, ['http://***@c']);
  assert.equal(out.n, 3);
  assert.equal(out.z, null);
  assert.equal(conf.mqtt.password, 'mqttpw');
  assert.doesNotMatch(JSON.stringify(redactConfig(conf)), /mqttpw|admin|tok"/, 'default keys cover password/token');
});

const credential = fc.string({ minLength: 1, maxLength: 24, unit: 'binary' });
const rawCredential = fc.string({ minLength: 1, maxLength: 24, unit: fc.constantFrom(..."abcXYZ019!#$%&()*+,-./:;<=>?@[]^_`{|}~'\\".split('')) });

test('property: for any user and password in a URL, the redacted text does not depend on them (3000 cases)', () => {
  const rtsp = (url: string): SourceConfig => ({ kind: 'rtsp', path: '', device: '', url, camera: '', pipeline: '', width: 0, height: 0, fps: 5, loop: false, frame_timeout_ms: 5000 });
  const forms: ((u: string, p: string) => string)[] = [
    (u, p) => `camera rtsp://${encodeURIComponent(u)}:${encodeURIComponent(p)}@cam.local:554/s1 lost`,
    (u, p) => `mqtt://${encodeURIComponent(u)}:${encodeURIComponent(p)}@broker:1883`,
    (u) => `https://${encodeURIComponent(u)}@host/x`,
    (u, p) => describeLaunch(rtsp(`rtsp://${u}:${p}@10.0.0.5/h264`)), // raw, quoted by the launch string
    (u, p) => JSON.stringify({ url: `rtsp://${u}:${p}@cam/s` }),
  ];
  fc.assert(
    fc.property(fc.nat({ max: forms.length - 1 }), credential, credential, (f, u, p) => {
      const make = forms[f];
      const text = f === 3 ? make(u.replace(/\s/g, ''), p.replace(/\s/g, '')) : make(u, p);
      assert.equal(redactSecrets(text), redactSecrets(make('someone', 'something')));
    }),
    { numRuns: 2000, seed: 3 },
  );
  // Unencoded passwords with URL delimiters (@ / : ? #) typed into a URL
  fc.assert(
    fc.property(rawCredential, rawCredential, (u, p) => {
      const out = redactSecrets(`rtsp://${u}:${p}@cam.local/stream`);
      assert.equal(out, 'rtsp://***@cam.local/stream');
    }),
    { numRuns: 1000, seed: 5 },
  );
});

// ---------------------------------------------------------------- log injection

test('log: control characters cannot forge journal lines; messages are bounded and redacted', () => {
  const out = new PassThrough();
  let text = '';
  out.on('data', (c) => (text += c));
  const log = createLogger('debug', out, true);
  log('info', 'trigger for part P-1\n<2>CRITICAL: line stopped\r\u0085\u001b[31m\u2028x');
  log('warn', `camera lost: rtsp://admin:pw@cam/s ${'y'.repeat(3 * MAX_MESSAGE_CHARS)}`);
  const lines = text.split('\n').filter(Boolean);
  assert.equal(lines.length, 2, JSON.stringify(text));
  assert.equal(lines[0], '<6>trigger for part P-1\\n<2>CRITICAL: line stopped\\r\\x85\\x1b[31m\\u2028x');
  assert.ok(lines[1].startsWith('<4>camera lost: rtsp://***@cam/s '));
  assert.ok(lines[1].length < MAX_MESSAGE_CHARS + 100, `${lines[1].length}`);
  assert.match(lines[1], /characters, truncated\)$/);
  assert.doesNotMatch(text, /admin|pw@/);
  for (const worst of ['y'.repeat(4 * MAX_MESSAGE_CHARS), 'pass '.repeat(MAX_MESSAGE_CHARS), '\\"'.repeat(2 * MAX_MESSAGE_CHARS)]) {
    const t0 = performance.now();
    log('debug', worst);
    assert.ok(performance.now() - t0 < 20, `${performance.now() - t0} ms: the redaction patterns must stay linear`);
  }
});

// ---------------------------------------------------------------- archive

const ENTRY = { 'frame.jpg': new Uint8Array(20_000), 'heatmap.jpg': new Uint8Array(20_000), 'verdict.json': '{"verdict":"NG"}' };
const hidden = (dir: string) => readdirSync(dir).filter((n) => n.startsWith('.'));

test('archive: a failed add removes its temp folder and throws ArchiveError; the archive keeps working', () => {
  const dir = tempDir('inputs-archive');
  let failNext = false;
  const fs: ArchiveFs = {
    ...nodeFs,
    writeFileSync: ((p: string, d: Uint8Array | string, o?: object) => {
      if (failNext && p.endsWith('heatmap.jpg')) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      return nodeFs.writeFileSync(p, d, o);
    }) as ArchiveFs['writeFileSync'],
  };
  const a = new NgArchive(dir, 10 * 2 ** 20, { fs });
  a.add('1', ENTRY);
  failNext = true;
  assert.throws(
    () => a.add('2', ENTRY),
    (e: unknown) => e instanceof ArchiveError && e.code === 'ENOSPC' && /entry .*_2 not archived in .*: the disk is full/.test(e.message),
  );
  assert.deepEqual(hidden(dir), [], 'no partly written entry is left');
  assert.equal(a.count, 1);
  assert.equal(a.failures, 1);
  failNext = false;
  a.add('3', ENTRY);
  assert.equal(a.count, 2);
});

test('archive: leftovers of a crash are removed at start and logged; entries found count in the quota', () => {
  const dir = tempDir('inputs-archive');
  for (const n of ['2024-01-01T00-00-00-000Z_1', '2024-01-01T00-00-01-000Z_2', '2024-01-01T00-00-02-000Z_3']) {
    mkdirSync(join(dir, n));
    writeFileSync(join(dir, n, 'frame.jpg'), new Uint8Array(1000));
  }
  mkdirSync(join(dir, '.2024-01-01T00-00-03-000Z_4'));
  writeFileSync(join(dir, '.2024-01-01T00-00-03-000Z_4', 'frame.jpg'), new Uint8Array(5000));
  const logs: string[] = [];
  const a = new NgArchive(dir, 2500, { log: (_l, m) => logs.push(m) });
  assert.deepEqual(a.found, { entries: 3, bytes: 3000, removedTemp: 1 });
  assert.equal(a.count, 2, 'the oldest entry went to make room under the quota');
  assert.equal(a.bytes, 2000);
  assert.deepEqual(hidden(dir), []);
  assert.match(logs.join('\n'), /3 entries, .*removed 1 partly written entry left by an earlier run/);
  a.add('5', { 'frame.jpg': new Uint8Array(1000) });
  assert.equal(a.count, 2);
  assert.equal(statSync(join(dir, readdirSync(dir).sort().at(-1)!, 'frame.jpg')).mode & 0o777, 0o640);
});

test('archive: ENOSPC on a real full tmpfs', (t) => {
  const dir = join(tempDir('inputs-tmpfs'), 'mnt');
  mkdirSync(dir);
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=128k', 'tmpfs', dir], { encoding: 'utf8' });
  if (m.status !== 0) {
    rmdirSync(dir);
    t.skip(`cannot mount a tmpfs here (${(m.stderr || m.error?.message || '').trim()}); the injected-fs test covers the logic`);
    return;
  }
  try {
    const a = new NgArchive(dir, 100 * 2 ** 20);
    let error: unknown;
    for (let i = 0; i < 20 && !error; i++) {
      try {
        a.add(`${i}`, ENTRY);
      } catch (e) {
        error = e;
      }
    }
    assert.ok(error instanceof ArchiveError, `expected ArchiveError, got ${error}`);
    assert.equal(error.code, 'ENOSPC');
    assert.match(error.message, /the disk is full/);
    assert.deepEqual(hidden(dir), [], 'the partial entry was removed');
    assert.ok(a.count >= 1);
    const again = new NgArchive(dir, 100 * 2 ** 20);
    assert.equal(again.count, a.count);
  } finally {
    spawnSync('umount', [dir]);
  }
});

// ---------------------------------------------------------------- session pool

test('extractor pool: at most maxSessions sessions over many shapes; in-flight extractions stay correct', async () => {
  const backbone = writeSyntheticBackbone(join(tempDir('inputs-pool'), 'bb'));
  const shapes: [number, number][] = [
    [64, 64],
    [96, 64],
    [64, 96],
    [128, 64],
    [64, 128],
    [96, 96],
    [160, 64],
    [64, 160],
    [128, 96],
    [96, 128],
  ];
  const settings = (w: number, h: number): FeatureSettings => ({ width: w, height: h, fit: 'letterbox', preDim: 32, dim: 16 });
  const img = { width: 80, height: 60, data: syntheticPart(80, 9).subarray(0, 80 * 60 * 3) };
  const reference = new Map<string, Float32Array>();
  for (const [w, h] of shapes) {
    const ex = await FeatureExtractor.load(backbone, settings(w, h));
    reference.set(`${w}x${h}`, (await ex.extract(img)).patches);
    await ex.release();
  }
  const pool = new ExtractorPool(backbone, {}, { maxSessions: 3 });
  const handles = [];
  for (const [w, h] of shapes) {
    const ex = await pool.get(settings(w, h));
    handles.push(ex);
    assert.deepEqual((await ex.extract(img)).patches, reference.get(`${w}x${h}`));
    assert.ok(pool.sessions.live <= 3, `${pool.sessions.live} sessions after ${w}x${h}`);
  }
  assert.equal(pool.sessions.created, shapes.length);
  // Everything at once, twice over, through handles whose sessions were evicted long ago.
  const all = await Promise.all([...handles, ...handles].map((ex) => ex.extract(img).then((r) => [ex.settings, r.patches] as const)));
  for (const [s, patches] of all) assert.deepEqual(patches, reference.get(`${s.width}x${s.height}`));
  await new Promise((r) => setImmediate(r));
  assert.ok(pool.sessions.live <= 3, `${pool.sessions.live} sessions once the burst is over`);
  await handles[0].release(); // a handle's release leaves the pool's sessions alone
  assert.deepEqual((await handles[0].extract(img)).patches, reference.get('64x64'));
  await pool.release();
  await new Promise((r) => setImmediate(r));
  assert.equal(pool.sessions.live, 0);
});

// ---------------------------------------------------------------- systemd unit, file modes

const UNIT = join(import.meta.dirname, '..', 'deploy', 'hiercore-edge.service');

test('systemd unit: exposure score of systemd-analyze security is at most 4.0', (t) => {
  const r = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', UNIT], { encoding: 'utf8' });
  if (r.error) {
    t.skip(`systemd-analyze is not installed (${r.error.message})`);
    return;
  }
  const m = /Overall exposure level for \S+: (\d+(?:\.\d+)?)/.exec(r.stdout + r.stderr);
  assert.ok(m, `no score in: ${r.stdout}${r.stderr}`);
  t.diagnostic(`exposure ${m[1]}`);
  assert.ok(Number(m[1]) <= 4.0, `exposure ${m[1]}`);
  const unit = nodeFs.readFileSync(UNIT, 'utf8');
  assert.doesNotMatch(unit, /^MemoryDenyWriteExecute=/m, 'V8 needs W+X pages');
  for (const k of [
    'UMask=0027',
    'MemoryMax=',
    'MemoryHigh=',
    'ProtectClock=yes',
    'ProtectKernelLogs=yes',
    'ProtectProc=invisible',
    'ProcSubset=pid',
    'RestrictNamespaces=yes',
    'SystemCallFilter=@system-service',
    'SystemCallArchitectures=native',
    'CapabilityBoundingSet=\n',
    'AmbientCapabilities=\n',
    'DeviceAllow=char-video4linux rw',
  ]) {
    assert.ok(unit.includes(k), k);
  }
});

test('writeFileAtomic creates files 0640', () => {
  const dir = tempDir('inputs-mode');
  const old = process.umask(0);
  try {
    writeFileAtomic(join(dir, 'f'), new Uint8Array(3));
  } finally {
    process.umask(old);
  }
  assert.equal(statSync(join(dir, 'f')).mode & 0o777, 0o640);
});

test('folder replay: a FIFO and a link to /dev/zero named like images are skipped at once, memory flat, and stop() returns', { timeout: 20_000 }, async () => {
  const dir = tempDir('inputs-special');
  await writePng(join(dir, 'a_good.png'), syntheticPart(32, 1), 32, 32);
  execFileSync('mkfifo', [join(dir, 'b_fifo.png')]);
  symlinkSync('/dev/zero', join(dir, 'c_zero.png'));
  await writePng(join(dir, 'd_good.png'), syntheticPart(32, 2), 32, 32);
  const rss0 = process.memoryUsage().rss;
  const src = new FolderSource({ path: dir, fps: 200, loop: false });
  const states: [SourceState, string][] = [];
  const frames: string[] = [];
  await new Promise<void>((resolve) =>
    src.start({
      frame: (f) => frames.push(f.path!),
      state: (s, d) => {
        states.push([s, d]);
        if (s === 'ended') resolve();
      },
    }),
  );
  await src.stop();
  assert.deepEqual(
    frames.map((p) => p.slice(dir.length + 1)),
    ['a_good.png', 'd_good.png'],
  );
  assert.ok(states.filter(([, d]) => /not a regular file/.test(d)).length === 2, JSON.stringify(states));
  assert.ok(process.memoryUsage().rss - rss0 < 100 * 2 ** 20, 'nothing read without bound');
});
