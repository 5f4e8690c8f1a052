/**
 * Cost of regions per NG frame: MEBin + measurement + mapping to frame pixels on synthetic anomaly
 * maps at the default input size (224x224 heatmap), as the worker would run it.
 *   node --import tsx scripts/bench-regions.ts [--size 224x224] [--maps 200]
 */
import { fitGeometry } from '../src/features/image.ts';
import { findRegions } from '../src/explain/regions.ts';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
}

/** A smooth background near the good parts' median with 1-3 Gaussian defects above threshold. */
function syntheticMap(w: number, h: number, seed: number): Float32Array {
  let s = seed;
  const rnd = () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const m = new Float32Array(w * h);
  const blobs = Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => ({ x: rnd() * w, y: rnd() * h, r: 4 + rnd() * 20, a: 1.2 + rnd() * 2 }));
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let v = 1.8 + 0.15 * Math.sin(x / 9 + seed) * Math.cos(y / 11);
      for (const b of blobs) v += b.a * Math.exp(-((x - b.x) ** 2 + (y - b.y) ** 2) / (2 * b.r * b.r));
      m[y * w + x] = v;
    }
  }
  return m;
}

const [w, h] = arg('size', '224x224').split('x').map(Number);
const n = Number(arg('maps', '200'));
const maps = Array.from({ length: n }, (_, i) => syntheticMap(w, h, i + 1));
const stats = { threshold: 2.74, p50: 1.82 }; // bottle's calibration (Coral PTQ, default settings)
const geometry = fitGeometry(900, 900, w, h, 'letterbox');
for (let i = 0; i < 20; i++) findRegions(maps[i % n], { width: w, height: h }, geometry, { width: 900, height: 900 }, stats);
const times: number[] = [];
let regions = 0;
for (const m of maps) {
  const t0 = performance.now();
  regions += findRegions(m, { width: w, height: h }, geometry, { width: 900, height: 900 }, stats).regions.length;
  times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))].toFixed(2);
console.log(
  `regions on ${n} maps of ${w}x${h}: mean ${(times.reduce((a, b) => a + b, 0) / n).toFixed(2)} ms, p50 ${q(0.5)} ms, p95 ${q(0.95)} ms per map; ${(regions / n).toFixed(2)} regions per map`,
);
