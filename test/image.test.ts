import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeBmp, decodeImage, fitGeometry, fitImage } from '../src/features/image.ts';

function bmp24(width: number, height: number, pixel: (x: number, y: number) => [number, number, number]): Uint8Array {
  const row = Math.ceil((width * 3) / 4) * 4;
  const buf = new Uint8Array(54 + row * height);
  const v = new DataView(buf.buffer);
  v.setUint16(0, 0x4d42, true);
  v.setUint32(2, buf.length, true);
  v.setUint32(10, 54, true);
  v.setUint32(14, 40, true);
  v.setInt32(18, width, true);
  v.setInt32(22, height, true); // bottom-up
  v.setUint16(26, 1, true);
  v.setUint16(28, 24, true);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [r, g, b] = pixel(x, y);
      const o = 54 + (height - 1 - y) * row + 3 * x;
      buf[o] = b;
      buf[o + 1] = g;
      buf[o + 2] = r;
    }
  }
  return buf;
}

test('BMP decoder reads bottom-up 24-bit rows with padding', async () => {
  const b = bmp24(3, 2, (x, y) => [x * 50, y * 100, 7]);
  const img = decodeBmp(b);
  assert.equal(img.width, 3);
  assert.equal(img.height, 2);
  assert.deepEqual(Array.from(img.data.subarray(0, 3)), [0, 0, 7]);
  assert.deepEqual(Array.from(img.data.subarray(3 * 5, 3 * 6)), [100, 100, 7]); // x=2, y=1
  const viaAuto = await decodeImage(b);
  assert.deepEqual(viaAuto.data, img.data);
  assert.throws(() => decodeBmp(b.subarray(0, 60)), /truncated/);
});

test('undecodable files give an error that names the file', async () => {
  await assert.rejects(decodeImage(new TextEncoder().encode('not an image'), 'frame.png'), /frame\.png: cannot decode/);
});

test('letterbox keeps the whole of a tall 1:2.5 frame and records where it is', () => {
  const g = fitGeometry(200, 500, 224, 224, 'letterbox');
  assert.equal(g.scaledHeight, 224);
  assert.equal(g.scaledWidth, 90);
  assert.deepEqual(g.content, { x: 67, y: 0, width: 90, height: 224 });
  const crop = fitGeometry(200, 500, 224, 224, 'crop');
  assert.ok(crop.scaledHeight > 224, 'crop mode cuts the top and bottom off');
  const non = fitGeometry(200, 500, 128, 320, 'letterbox');
  assert.deepEqual(non.content, { x: 0, y: 0, width: 128, height: 320 });
});

test('fitImage pads with black outside the content and keeps single-band masks single-band', async () => {
  const img = { width: 10, height: 20, data: new Uint8Array(10 * 20 * 3).fill(200) };
  const { data, geometry } = await fitImage(img, 40, 40, 'letterbox');
  assert.equal(data.length, 40 * 40 * 3);
  assert.equal(data[0], 0);
  const c = geometry.content;
  assert.equal(data[3 * ((c.y + 5) * 40 + c.x + 5)], 200);
  const mask = { width: 10, height: 20, data: new Uint8Array(200).fill(255) };
  const m = await fitImage(mask, 40, 40, 'letterbox', 1, 'nearest');
  assert.equal(m.data.length, 1600);
  const on = m.data.reduce((a, v) => a + (v > 127 ? 1 : 0), 0);
  assert.equal(on, c.width * c.height);
});

test('heatmap overlay: frame shows through at the low end, red at the high end', async () => {
  const { overlayRgb } = await import('../src/score/overlay.ts');
  const rgb = new Uint8Array(2 * 3).fill(200);
  const out = overlayRgb(rgb, Float32Array.from([0, 10]), 2, 1, 1, 5);
  // low end: 85% frame + 15% of jet(0) = dark blue (0, 0, 128)
  assert.deepEqual(Array.from(out.subarray(0, 3)), [170, 170, 189]);
  // high end: 35% frame + 65% of jet(1) = dark red (128, 0, 0)
  assert.deepEqual(Array.from(out.subarray(3, 6)), [153, 70, 70]);
});
