/** Squared Euclidean distance between a[ao .. ao+d) and b[bo .. bo+d). */
export function sqDist(a: Float32Array, ao: number, b: Float32Array, bo: number, d: number): number {
  let s = 0;
  for (let k = 0; k < d; k++) {
    const t = a[ao + k] - b[bo + k];
    s += t * t;
  }
  return s;
}

/** Rows `rows` of x ([n, dim]) copied into one [rows.length, dim] array, in that order. */
export function gatherRows(x: Float32Array, dim: number, rows: ArrayLike<number>): Float32Array {
  const out = new Float32Array(rows.length * dim);
  for (let j = 0; j < rows.length; j++) out.set(x.subarray(rows[j] * dim, rows[j] * dim + dim), j * dim);
  return out;
}
