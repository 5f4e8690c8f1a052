/**
 * Image decoding and preprocessing. Frames from cameras arrive as raw RGB; files (replay, calibration,
 * evaluation) are decoded here. sharp/libvips handles PNG and JPEG; BMP, which libvips lacks but
 * machine-vision tools still write, has a small reader of its own.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import sharp from 'sharp';

export interface RgbImage {
  width: number;
  height: number;
  /** interleaved RGB, 8 bits per channel, row-major */
  data: Uint8Array;
}

export class ImageDecodeError extends Error {}

/** Largest image decoded when the caller sets no limit: 40 megapixels (120 MB of RGB). */
export const DEFAULT_MAX_PIXELS = 40_000_000;

export interface DecodeLimits {
  /** width * height above this is refused before any pixel is decoded */
  maxPixels?: number;
}

const BMP_HEADER_SIZES = new Set([40, 52, 56, 108, 124]); // BITMAPINFOHEADER and its successors
const BGRX_MASKS = [0x00ff0000, 0x0000ff00, 0x000000ff];

interface BmpLayout {
  width: number;
  height: number;
  bottomUp: boolean;
  bpp: 8 | 24 | 32;
  rowBytes: number;
  dataOffset: number;
  /** 256 RGB triples; indices past the file's palette read black */
  palette: Uint8Array | null;
}

/**
 * Every header field is checked before anything is allocated or looped over: the file comes from
 * outside, and one bad count (a palette of 2^32 colours) would otherwise hold the main thread.
 */
function bmpLayout(buf: Uint8Array, maxPixels: number): BmpLayout {
  const bad = (why: string) => new ImageDecodeError(`BMP ${why}`);
  if (buf.length < 2 || buf[0] !== 0x42 || buf[1] !== 0x4d) throw new ImageDecodeError('not a BMP file (no "BM" signature)');
  if (buf.length < 54) throw bad(`file is truncated (${buf.length} bytes, the headers alone take 54)`);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headerSize = v.getUint32(14, true);
  if (!BMP_HEADER_SIZES.has(headerSize)) throw bad(`header size ${headerSize} is not supported (40, 52, 56, 108 or 124)`);
  if (14 + headerSize > buf.length) throw bad('file is truncated inside its header');
  const width = v.getInt32(18, true);
  const rawHeight = v.getInt32(22, true);
  const height = Math.abs(rawHeight);
  if (width <= 0 || height === 0) throw bad(`size ${width}x${rawHeight} is invalid`);
  if (width * height > maxPixels) throw bad(`of ${width}x${height} exceeds the limit of ${maxPixels} pixels`);
  const bpp = v.getUint16(28, true);
  if (bpp !== 8 && bpp !== 24 && bpp !== 32) throw bad(`with ${bpp} bits per pixel is not supported (8, 24 or 32)`);
  const compression = v.getUint32(30, true);
  const bitfields = compression === 3 && bpp === 32;
  if (compression !== 0 && !bitfields) throw bad(`compression ${compression} is not supported`);
  let tableStart = 14 + headerSize;
  if (bitfields) {
    if (54 + 12 > buf.length) throw bad('file is truncated inside its colour masks');
    const masks = BGRX_MASKS.map((_, i) => v.getUint32(54 + 4 * i, true));
    if (masks.some((m, i) => m !== BGRX_MASKS[i])) throw bad(`colour masks ${masks.map((m) => `0x${m.toString(16)}`).join('/')} are not supported (BGRX only)`);
    if (headerSize === 40) tableStart += 12;
  }
  const colors = v.getUint32(46, true);
  if (colors > 256) throw bad(`palette of ${colors} colours is invalid (at most 256)`);
  const dataOffset = v.getUint32(10, true);
  let palette: Uint8Array | null = null;
  if (bpp === 8) {
    const n = colors || 256;
    if (tableStart + 4 * n > Math.min(dataOffset, buf.length)) throw bad(`palette of ${n} colours does not fit before the pixel data`);
    palette = new Uint8Array(256 * 3);
    for (let i = 0; i < n; i++) {
      const p = tableStart + 4 * i;
      palette[3 * i] = buf[p + 2];
      palette[3 * i + 1] = buf[p + 1];
      palette[3 * i + 2] = buf[p];
    }
  }
  if (dataOffset < tableStart) throw bad(`pixel data offset ${dataOffset} lies inside the headers`);
  const rowBytes = Math.ceil((width * bpp) / 32) * 4;
  if (dataOffset + rowBytes * height > buf.length) throw bad(`file is truncated (${width}x${height} needs ${dataOffset + rowBytes * height} bytes, it has ${buf.length})`);
  return { width, height, bottomUp: rawHeight > 0, bpp, rowBytes, dataOffset, palette };
}

export function decodeBmp(buf: Uint8Array, limits: DecodeLimits = {}): RgbImage {
  const { width, height, bottomUp, bpp, rowBytes, dataOffset, palette } = bmpLayout(buf, limits.maxPixels ?? DEFAULT_MAX_PIXELS);
  const out = new Uint8Array(width * height * 3);
  const step = bpp / 8;
  for (let y = 0; y < height; y++) {
    const src = dataOffset + (bottomUp ? height - 1 - y : y) * rowBytes;
    let o = y * width * 3;
    if (palette) {
      for (let x = 0; x < width; x++, o += 3) {
        const c = 3 * buf[src + x];
        out[o] = palette[c];
        out[o + 1] = palette[c + 1];
        out[o + 2] = palette[c + 2];
      }
    } else {
      for (let x = 0, p = src; x < width; x++, o += 3, p += step) {
        out[o] = buf[p + 2];
        out[o + 1] = buf[p + 1];
        out[o + 2] = buf[p];
      }
    }
  }
  return { width, height, data: out };
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const startsWith = (b: Uint8Array, sig: number[]) => b.length >= sig.length && sig.every((x, i) => b[i] === x);

/**
 * Decode PNG/JPEG/BMP (8-bit gray or colour) to RGB. Only those formats reach libvips: it would
 * also parse SVG, TIFF, HEIF and more, which no camera or replay folder needs. libvips checks the
 * pixel limit on the header, before decoding.
 */
export async function decodeImage(bytes: Uint8Array, label = 'image', limits: DecodeLimits = {}): Promise<RgbImage> {
  const maxPixels = limits.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (bytes.length >= 2 && bytes[0] === 0x42 && bytes[1] === 0x4d) {
    try {
      return decodeBmp(bytes, { maxPixels });
    } catch (e) {
      throw new ImageDecodeError(`${label}: ${(e as Error).message}`);
    }
  }
  if (!startsWith(bytes, PNG_SIGNATURE) && !startsWith(bytes, [0xff, 0xd8, 0xff])) throw new ImageDecodeError(`${label}: cannot decode (not a PNG, JPEG or BMP file); supported: PNG, JPEG, BMP`);
  try {
    const { data, info } = await sharp(bytes, { limitInputPixels: maxPixels, sequentialRead: true }).toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (e) {
    const msg = (e as Error).message;
    if (/pixel limit/i.test(msg)) throw new ImageDecodeError(`${label}: image is larger than the limit of ${maxPixels} pixels (${msg})`);
    throw new ImageDecodeError(`${label}: cannot decode (${msg}); supported: PNG, JPEG, BMP`);
  }
}

/** A file larger than any PNG/JPEG/BMP within the pixel limit can be is refused before reading it. */
export function maxFileBytes(maxPixels: number): number {
  return maxPixels * 4 + 16 * 2 ** 20;
}

export async function readImage(path: string, limits: DecodeLimits = {}): Promise<RgbImage> {
  const maxPixels = limits.maxPixels ?? DEFAULT_MAX_PIXELS;
  let bytes: Uint8Array;
  try {
    bytes = await readRegularFile(path, maxFileBytes(maxPixels), `an image of ${maxPixels} pixels`);
  } catch (e) {
    throw new ImageDecodeError(`cannot read image ${path}: ${(e as Error).message}`);
  }
  return decodeImage(bytes, path, { maxPixels });
}

/**
 * A regular file of at most `maxBytes`: opened without blocking (a FIFO cannot stall the open) and
 * checked on the opened handle, so a device (/dev/zero), a pipe or a file that grows is never read
 * without bound.
 */
async function readRegularFile(path: string, maxBytes: number, what: string): Promise<Uint8Array> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new Error('not a regular file');
    if (st.size > maxBytes) throw new Error(`${st.size} bytes is more than ${what} needs`);
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < st.size) {
      const { bytesRead } = await fh.read(buf, off, st.size - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return buf.subarray(0, off);
  } finally {
    await fh.close();
  }
}

/**
 * How a frame is fitted to the network input.
 * - letterbox: keep the aspect ratio, pad the rest (nothing is cut off; the default)
 * - stretch: resize each axis independently (nothing cut off, shapes distorted)
 * - crop: resize the short side then centre-crop (classic ImageNet; can cut defects off the edges)
 */
export type FitMode = 'letterbox' | 'stretch' | 'crop';
export const FIT_MODES: FitMode[] = ['letterbox', 'stretch', 'crop'];

/** Where the frame's content lies in the network input, in input pixels. */
export interface ContentRect {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface Geometry {
  /** size of the resized frame before padding/cropping */
  scaledWidth: number;
  scaledHeight: number;
  /** offset of the resized frame inside the input (negative when cropping) */
  offsetX: number;
  offsetY: number;
  content: ContentRect;
}

export function fitGeometry(srcW: number, srcH: number, dstW: number, dstH: number, fit: FitMode): Geometry {
  let sw = dstW;
  let sh = dstH;
  if (fit === 'letterbox') {
    const s = Math.min(dstW / srcW, dstH / srcH);
    sw = Math.max(1, Math.round(srcW * s));
    sh = Math.max(1, Math.round(srcH * s));
  } else if (fit === 'crop') {
    const s = Math.max(dstW / srcW, dstH / srcH);
    sw = Math.max(dstW, Math.round(srcW * s));
    sh = Math.max(dstH, Math.round(srcH * s));
  }
  const offsetX = Math.floor((dstW - sw) / 2);
  const offsetY = Math.floor((dstH - sh) / 2);
  const x0 = Math.max(0, offsetX);
  const y0 = Math.max(0, offsetY);
  const x1 = Math.min(dstW, offsetX + sw);
  const y1 = Math.min(dstH, offsetY + sh);
  return { scaledWidth: sw, scaledHeight: sh, offsetX, offsetY, content: { x: x0, y: y0, width: x1 - x0, height: y1 - y0 } };
}

/** Resize an RGB (or 1-channel) raw image with libvips into the network input geometry. */
export async function fitImage(
  img: RgbImage,
  dstW: number,
  dstH: number,
  fit: FitMode,
  channels: 1 | 3 = 3,
  kernel: 'linear' | 'nearest' = 'linear',
): Promise<{ data: Uint8Array; geometry: Geometry }> {
  const geometry = fitGeometry(img.width, img.height, dstW, dstH, fit);
  let pipeline = sharp(img.data, { raw: { width: img.width, height: img.height, channels } }).resize(geometry.scaledWidth, geometry.scaledHeight, {
    fit: 'fill',
    kernel: kernel === 'nearest' ? 'nearest' : 'linear',
  });
  // libvips turns a 1-band raw input into sRGB on output unless told to keep one band.
  if (channels === 1) pipeline = pipeline.extractChannel(0);
  const resized = await pipeline.raw().toBuffer();
  if (resized.length !== geometry.scaledWidth * geometry.scaledHeight * channels)
    throw new Error(`resize produced ${resized.length} bytes, expected ${geometry.scaledWidth * geometry.scaledHeight * channels}`);
  const out = new Uint8Array(dstW * dstH * channels);
  const { offsetX, offsetY, scaledWidth: sw, scaledHeight: sh } = geometry;
  for (let y = 0; y < dstH; y++) {
    const sy = y - offsetY;
    if (sy < 0 || sy >= sh) continue;
    const x0 = Math.max(0, offsetX);
    const x1 = Math.min(dstW, offsetX + sw);
    const srcStart = (sy * sw + (x0 - offsetX)) * channels;
    out.set(resized.subarray(srcStart, srcStart + (x1 - x0) * channels), (y * dstW + x0) * channels);
  }
  return { data: out, geometry };
}

/** Interleaved RGB bytes -> planar float input with the backbone's per-channel scaling. */
export function toTensorData(rgb: Uint8Array, width: number, height: number, scale: number[], offset: number[], out?: Float32Array): Float32Array {
  const plane = width * height;
  const x = out ?? new Float32Array(3 * plane);
  const s0 = scale[0],
    s1 = scale[1],
    s2 = scale[2];
  const o0 = offset[0],
    o1 = offset[1],
    o2 = offset[2];
  for (let i = 0, p = 0; i < plane; i++, p += 3) {
    x[i] = rgb[p] * s0 + o0;
    x[plane + i] = rgb[p + 1] * s1 + o1;
    x[2 * plane + i] = rgb[p + 2] * s2 + o2;
  }
  return x;
}

/** The rectangle `r` of an image (clamped to the frame), as a new image. */
export function cropImage(img: RgbImage, r: { left: number; top: number; width: number; height: number }): RgbImage {
  const left = Math.max(0, Math.min(img.width - 1, Math.floor(r.left)));
  const top = Math.max(0, Math.min(img.height - 1, Math.floor(r.top)));
  const width = Math.max(1, Math.min(img.width - left, Math.floor(r.width)));
  const height = Math.max(1, Math.min(img.height - top, Math.floor(r.height)));
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) data.set(img.data.subarray(3 * ((top + y) * img.width + left), 3 * ((top + y) * img.width + left + width)), 3 * y * width);
  return { width, height, data };
}

/** Luminance mean and standard deviation that `levelled` maps every image to. */
export const LEVEL_MEAN = 128;
export const LEVEL_SPREAD = 48;
/** The largest gain `levelled` applies either way: a near-flat frame is not blown up into noise. */
export const LEVEL_MAX_GAIN = 3;

/**
 * The image at one light level: one gain and one offset for all three channels, so that its luminance
 * has mean LEVEL_MEAN and standard deviation LEVEL_SPREAD (the gain bounded to 1/3..3). The same part
 * under a brighter lamp or a longer exposure then looks alike; hue and the ratios between channels
 * are kept, so colour still tells products apart.
 */
export function levelled(img: RgbImage): RgbImage {
  const { data } = img;
  const n = data.length / 3;
  let sum = 0;
  let sq = 0;
  for (let i = 0; i < data.length; i += 3) {
    const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
    sum += y;
    sq += y * y;
  }
  const mean = n ? sum / n : 0;
  const sd = n ? Math.sqrt(Math.max(0, sq / n - mean * mean)) : 0;
  const gain = Math.min(LEVEL_MAX_GAIN, Math.max(1 / LEVEL_MAX_GAIN, LEVEL_SPREAD / Math.max(sd, 1e-6)));
  const out = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = Math.max(0, Math.min(255, Math.round((data[i] - mean) * gain + LEVEL_MEAN)));
  return { width: img.width, height: img.height, data: out };
}

/** The image turned a quarter clockwise (width and height swap). */
export function turnedQuarter(img: RgbImage): RgbImage {
  const { width: w, height: h, data } = img;
  const out = new Uint8Array(data.length);
  // source (x, y) lands at (h - 1 - y, x) in the w-high, h-wide result
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const src = 3 * (y * w + x);
      const dst = 3 * (x * h + (h - 1 - y));
      out[dst] = data[src];
      out[dst + 1] = data[src + 1];
      out[dst + 2] = data[src + 2];
    }
  }
  return { width: h, height: w, data: out };
}
