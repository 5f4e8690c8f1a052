/**
 * Patch features kept from the embedding pass, so building the banks does not run the backbone over
 * every image a second time. Held under a byte budget (calibration.feature_cache_mb: the daemon's
 * inspection keeps running beside a calibration); images past the budget, or needed at another input
 * size than they were embedded at, are extracted again. Kept as float32: converting to float16 costs
 * about as much per image as extracting it again on a 2-core box.
 */
import { totalmem } from 'node:os';

interface Entry {
  sizeKey: string;
  patches: Float32Array;
}

/**
 * The cache budget: the configured megabytes, but never more than a quarter of the machine's memory,
 * so one default suits a 64 GB workstation and an 8 GB edge box.
 */
export function cacheBudgetBytes(configuredMb: number, totalBytes = totalmem()): number {
  return Math.min(configuredMb * 2 ** 20, Math.floor(totalBytes / 4));
}

export class PatchCache {
  private readonly entries = new Map<number, Entry>();
  private used = 0;
  /** images offered but not kept (budget full) */
  refused = 0;

  constructor(readonly budgetBytes: number) {}

  /**
   * Keep image i's patches (extracted at `sizeKey`) if they fit; returns whether they were kept.
   * `owned`: the caller hands the array over (a fresh onnxruntime output) and it is kept as it is;
   * copying cost 4.9 ms per 784x1024 image here, almost all of it first-touch page faults.
   */
  put(i: number, sizeKey: string, patches: Float32Array, owned = false): boolean {
    if (this.used + patches.byteLength > this.budgetBytes) {
      this.refused++;
      return false;
    }
    this.entries.set(i, { sizeKey, patches: owned ? patches : patches.slice() });
    this.used += patches.byteLength;
    return true;
  }

  /** Image i's patches at `sizeKey`, handed over and dropped from the cache; undefined when not held at that size. */
  take(i: number, sizeKey: string): Float32Array | undefined {
    const e = this.entries.get(i);
    if (!e || e.sizeKey !== sizeKey) return undefined;
    this.drop(i);
    return e.patches;
  }

  /** Free image i's entry (its cluster's bank is built). */
  drop(i: number): void {
    const e = this.entries.get(i);
    if (!e) return;
    this.used -= e.patches.byteLength;
    this.entries.delete(i);
  }

  get size(): number {
    return this.entries.size;
  }

  get usedBytes(): number {
    return this.used;
  }
}
