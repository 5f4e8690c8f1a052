/**
 * The self-contained HTML report of an on-site calibration run: a minimal one (helper F's
 * src/calibrate/run/report.ts did not exist when this was written). No scripts, no external files.
 */
import type { ChildOutcome } from '../calibrate/child-entry.ts';
import type { Validation } from './calibration-validate.ts';

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export interface ReportFacts {
  runId: string;
  station: string;
  startedAt: string;
  captured: number;
  skipped: { duplicate: number; blank: number };
  outcome: ChildOutcome | null;
  validation: Validation | null;
  error?: string;
  log: string;
}

export function calibrationReport(f: ReportFacts): string {
  const v = f.validation;
  const verdict = f.error ? `FAILED: ${esc(f.error)}` : v?.passed ? 'PASSED: the bundle may go live' : `NOT VALIDATED: ${esc(v?.problems.join('; ') ?? '')}`;
  const rows = (v?.clusters ?? [])
    .map((c) => {
      const k = f.outcome?.clusters.find((x) => x.name === c.name);
      return `<tr><td>${esc(c.name)}</td><td>${k?.size ?? ''}</td><td>${k?.threshold.toFixed(4) ?? ''}</td><td>${c.held_out}</td><td>${c.rejected}</td><td>${c.frr === null ? '-' : `${(100 * c.frr).toFixed(1)} %`}</td><td>${c.keys_home}/${c.keys}</td></tr>`;
    })
    .join('\n');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Calibration ${esc(f.runId)}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.3em .6em}pre{background:#f4f4f4;padding:1em;white-space:pre-wrap}</style>
</head><body>
<h1>Calibration run ${esc(f.runId)}</h1>
<p>Station ${esc(f.station)}, started ${esc(f.startedAt)}. ${f.captured} frames captured (${f.skipped.duplicate} near-duplicates and ${f.skipped.blank} blank views skipped).</p>
<h2>${verdict}</h2>
${f.outcome ? `<p>Bundle ${esc(f.outcome.bundle_id)}, built in ${f.outcome.duration_s} s. Validation: at most ${(100 * (v?.max_frr ?? 0)).toFixed(1)} % of held-out good frames rejected per cluster; every routing key routes home.</p>` : ''}
<table><tr><th>cluster</th><th>images</th><th>threshold</th><th>held-out</th><th>rejected</th><th>FRR</th><th>keys home</th></tr>
${rows}
</table>
<h2>Log</h2><pre>${esc(f.log)}</pre>
</body></html>
`;
}
