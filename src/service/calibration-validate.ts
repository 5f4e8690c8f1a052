/**
 * Whether a bundle built on site may go live: a minimal validation (helper F's
 * src/calibrate/run/validate.ts did not exist when this was written). Pure.
 *
 * - every cluster rejects at most `maxFrr` of the held-out good frames that route to it (frames the
 *   bundle never saw: the false-reject rate the line will see, not the one calibration fitted);
 * - every routing key of a cluster routes to that cluster (else two clusters overlap and parts of one
 *   would be scored against the other's bank).
 */
import type { ChildOutcome } from '../calibrate/child-entry.ts';

export interface ClusterValidation {
  name: string;
  held_out: number;
  rejected: number;
  frr: number | null;
  keys_home: number;
  keys: number;
}

export interface Validation {
  passed: boolean;
  max_frr: number;
  clusters: ClusterValidation[];
  problems: string[];
}

export function validateOutcome(o: ChildOutcome, maxFrr: number): Validation {
  const problems: string[] = [];
  if (o.heldOut.length === 0) problems.push('no held-out frames to validate with (calibration.holdout is 0 or too few frames were captured)');
  const clusters = o.clusters.map((c): ClusterValidation => {
    const mine = o.heldOut.filter((h) => (h.cluster ?? h.nearest) === c.name);
    const rejected = mine.filter((h) => h.verdict !== 'OK').length;
    const frr = mine.length ? rejected / mine.length : null;
    const k = o.keysHome.find((x) => x.name === c.name) ?? { home: 0, keys: 0 };
    if (frr !== null && frr > maxFrr) problems.push(`${c.name}: ${rejected} of ${mine.length} held-out good frames rejected (${(100 * frr).toFixed(1)} % > ${(100 * maxFrr).toFixed(1)} %)`);
    if (k.home < k.keys) problems.push(`${c.name}: ${k.keys - k.home} of ${k.keys} routing keys route elsewhere (clusters overlap)`);
    return { name: c.name, held_out: mine.length, rejected, frr: frr === null ? null : Number(frr.toFixed(4)), keys_home: k.home, keys: k.keys };
  });
  return { passed: problems.length === 0, max_frr: maxFrr, clusters, problems };
}
