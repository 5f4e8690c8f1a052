/** Squared Euclidean distance between a[ao .. ao+d) and b[bo .. bo+d). */
export function sqDist(a: Float32Array, ao: number, b: Float32Array, bo: number, d: number): number {
  let s = 0;
  for (let k = 0; k < d; k++) {
    const t = a[ao + k] - b[bo + k];
    s += t * t;
  }
  return s;
}

/**
 * An [n, dim] matrix held either as one array or as equal blocks of rows (one per image, in order):
 * calibration keeps each image's patch features as the backbone returned them, because copying 1,500
 * images into one array cost seconds of first-touch page faults.
 */
export type Rows = Float32Array | readonly Float32Array[];

/** Row r of x as a view. */
export function rowOf(x: Rows, dim: number, r: number): Float32Array {
  if (!Array.isArray(x)) return (x as Float32Array).subarray(r * dim, (r + 1) * dim);
  const blocks = x as readonly Float32Array[];
  const per = blocks[0].length / dim;
  const b = blocks[Math.floor(r / per)];
  if (!b || b.length !== per * dim) throw new Error(`row ${r}: blocks of unequal size or out of range`);
  const o = (r % per) * dim;
  return b.subarray(o, o + dim);
}

/** Values held by x. */
export function valueCount(x: Rows): number {
  return Array.isArray(x) ? (x as readonly Float32Array[]).reduce((s, b) => s + b.length, 0) : (x as Float32Array).length;
}

/** x as one array (a copy only when it is held in blocks). */
export function contiguous(x: Rows): Float32Array {
  if (!Array.isArray(x)) return x as Float32Array;
  const out = new Float32Array(valueCount(x));
  let o = 0;
  for (const b of x as readonly Float32Array[]) {
    out.set(b, o);
    o += b.length;
  }
  return out;
}

/** Rows `rows` of x ([n, dim]) copied into one [rows.length, dim] array, in that order. */
export function gatherRows(x: Rows, dim: number, rows: ArrayLike<number>): Float32Array {
  const out = new Float32Array(rows.length * dim);
  for (let j = 0; j < rows.length; j++) out.set(rowOf(x, dim, rows[j]), j * dim);
  return out;
}
