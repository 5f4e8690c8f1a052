/**
 * Image decoding and preprocessing. Frames from cameras arrive as raw RGB; files (replay, calibration,
 * evaluation) are decoded here. sharp/libvips handles PNG and JPEG; BMP, which libvips lacks but
 * machine-vision tools still write, has a small reader of its own.
 */
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';

export interface RgbImage {
  width: number;
  height: number;
  /** interleaved RGB, 8 bits per channel, row-major */
  data: Uint8Array;
}

export class ImageDecodeError extends Error {}

export function decodeBmp(buf: Uint8Array): RgbImage {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 54 || v.getUint16(0, true) !== 0x4d42) throw new ImageDecodeError('not a BMP file (no "BM" signature)');
  const dataOffset = v.getUint32(10, true);
  const width = v.getInt32(18, true);
  const rawHeight = v.getInt32(22, true);
  const bpp = v.getUint16(28, true);
  const compression = v.getUint32(30, true);
  if (compression !== 0 && !(compression === 3 && bpp === 32)) throw new ImageDecodeError(`BMP compression ${compression} is not supported`);
  if (![8, 24, 32].includes(bpp)) throw new ImageDecodeError(`BMP with ${bpp} bits per pixel is not supported (8, 24 or 32)`);
  const height = Math.abs(rawHeight);
  const bottomUp = rawHeight > 0;
  const rowBytes = Math.ceil((width * bpp) / 32) * 4;
  if (dataOffset + rowBytes * height > buf.length) throw new ImageDecodeError('BMP file is truncated');
  const palette: number[][] = [];
  if (bpp === 8) {
    const headerSize = v.getUint32(14, true);
    const colors = v.getUint32(46, true) || 256;
    for (let i = 0; i < colors; i++) {
      const p = 14 + headerSize + 4 * i;
      palette.push([buf[p + 2], buf[p + 1], buf[p]]);
    }
  }
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const src = dataOffset + (bottomUp ? height - 1 - y : y) * rowBytes;
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      if (bpp === 8) {
        const c = palette[buf[src + x]] ?? [0, 0, 0];
        out[o] = c[0]; out[o + 1] = c[1]; out[o + 2] = c[2];
      } else {
        const p = src + x * (bpp / 8);
        out[o] = buf[p + 2]; out[o + 1] = buf[p + 1]; out[o + 2] = buf[p];
      }
    }
  }
  return { width, height, data: out };
}

/** Decode PNG/JPEG/BMP (8-bit gray or colour) to RGB. */
export async function decodeImage(bytes: Uint8Array, label = 'image'): Promise<RgbImage> {
  if (bytes.length >= 2 && bytes[0] === 0x42 && bytes[1] === 0x4d) return decodeBmp(bytes);
  try {
    const { data, info } = await sharp(bytes).toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (e) {
    throw new ImageDecodeError(`${label}: cannot decode (${(e as Error).message}); supported: PNG, JPEG, BMP`);
  }
}

export async function readImage(path: string): Promise<RgbImage> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new ImageDecodeError(`cannot read image ${path}: ${(e as Error).message}`);
  }
  return decodeImage(bytes, path);
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
export async function fitImage(img: RgbImage, dstW: number, dstH: number, fit: FitMode, channels: 1 | 3 = 3, kernel: 'linear' | 'nearest' = 'linear'): Promise<{ data: Uint8Array; geometry: Geometry }> {
  const geometry = fitGeometry(img.width, img.height, dstW, dstH, fit);
  let pipeline = sharp(img.data, { raw: { width: img.width, height: img.height, channels } }).resize(geometry.scaledWidth, geometry.scaledHeight, {
    fit: 'fill',
    kernel: kernel === 'nearest' ? 'nearest' : 'linear',
  });
  // libvips turns a 1-band raw input into sRGB on output unless told to keep one band.
  if (channels === 1) pipeline = pipeline.extractChannel(0);
  const resized = await pipeline.raw().toBuffer();
  if (resized.length !== geometry.scaledWidth * geometry.scaledHeight * channels) throw new Error(`resize produced ${resized.length} bytes, expected ${geometry.scaledWidth * geometry.scaledHeight * channels}`);
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
  const s0 = scale[0], s1 = scale[1], s2 = scale[2];
  const o0 = offset[0], o1 = offset[1], o2 = offset[2];
  for (let i = 0, p = 0; i < plane; i++, p += 3) {
    x[i] = rgb[p] * s0 + o0;
    x[plane + i] = rgb[p + 1] * s1 + o1;
    x[2 * plane + i] = rgb[p + 2] * s2 + o2;
  }
  return x;
}
