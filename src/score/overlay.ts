/** Heatmap overlays a person can look at: anomaly map in a jet colour scale blended over the frame. */
import sharp from 'sharp';

function jet(t: number): [number, number, number] {
  const c = (x: number) => Math.max(0, Math.min(1, x));
  return [c(1.5 - Math.abs(4 * t - 3)), c(1.5 - Math.abs(4 * t - 2)), c(1.5 - Math.abs(4 * t - 1))].map((v) => Math.round(255 * v)) as [number, number, number];
}

// 256 steps are finer than a JPEG shows; a table keeps the per-pixel work to arithmetic (the
// overlay runs for every frame the daemon publishes).
const JET = Uint8Array.from({ length: 256 * 3 }, (_, i) => jet(Math.floor(i / 3) / 255)[i % 3]);

/**
 * Blend heatmap [h, w] over rgb [h, w, 3]. Values at or below `low` show the frame only; `high` and
 * above are full red.
 */
export function overlayRgb(rgb: Uint8Array, heatmap: Float32Array, width: number, height: number, low: number, high: number): Uint8Array {
  const out = new Uint8Array(width * height * 3);
  const span = high > low ? high - low : 1;
  for (let i = 0; i < width * height; i++) {
    const t = Math.max(0, Math.min(1, (heatmap[i] - low) / span));
    const k = 3 * Math.round(t * 255);
    const a = 0.15 + 0.5 * t;
    out[3 * i] = (1 - a) * rgb[3 * i] + a * JET[k] + 0.5;
    out[3 * i + 1] = (1 - a) * rgb[3 * i + 1] + a * JET[k + 1] + 0.5;
    out[3 * i + 2] = (1 - a) * rgb[3 * i + 2] + a * JET[k + 2] + 0.5;
  }
  return out;
}

export async function encodeRgb(rgb: Uint8Array, width: number, height: number, format: 'png' | 'jpeg' = 'png'): Promise<Buffer> {
  const img = sharp(rgb, { raw: { width, height, channels: 3 } });
  return format === 'png' ? img.png().toBuffer() : img.jpeg({ quality: 85 }).toBuffer();
}
