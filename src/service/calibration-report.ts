/**
 * The self-contained HTML report of an on-site calibration run: the run's verdict and validation
 * table, then the build's sections (thumbnails, partition choice, score histograms, warnings, times;
 * src/calibrate/report-html.ts), then the log. No scripts, no external files.
 */
import type { ChildOutcome } from '../calibrate/child-entry.ts';
import { esc, reportPage } from '../calibrate/report-html.ts';
import type { Validation } from './calibration-validate.ts';

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

/** The verdict line and the per-cluster validation table (shared with the CLI's report). */
export function validationHtml(outcome: ChildOutcome | null, v: Validation | null, error?: string): string {
  const verdict = error ? `FAILED: ${esc(error)}` : v?.passed ? 'PASSED: the bundle may go live' : `NOT VALIDATED: ${esc(v?.problems.join('; ') ?? '')}`;
  const rows = (v?.clusters ?? [])
    .map((c) => {
      const k = outcome?.clusters.find((x) => x.name === c.name);
      return `<tr><td>${esc(c.name)}</td><td>${k?.size ?? ''}</td><td>${k?.threshold.toFixed(4) ?? ''}</td><td>${c.held_out}</td><td>${c.rejected}</td><td>${c.frr === null ? '-' : `${(100 * c.frr).toFixed(1)} %`}</td><td>${c.keys_home}/${c.keys}</td></tr>`;
    })
    .join('\n');
  return `<h2 class="${error || !v?.passed ? 'bad' : 'ok'}">${verdict}</h2>
${outcome ? `<p>Bundle ${esc(outcome.bundle_id)}, built in ${outcome.duration_s} s. Validation: at most ${(100 * (v?.max_frr ?? 0)).toFixed(1)} % of held-out good frames rejected per cluster; every routing key routes home.</p>` : ''}
<table><tr><th>cluster</th><th>images</th><th>threshold</th><th>held-out frames</th><th>rejected</th><th>FRR</th><th>keys home</th></tr>
${rows}
</table>`;
}

export function calibrationReport(f: ReportFacts): string {
  const lead = `<p>Station ${esc(f.station)}, started ${esc(f.startedAt)}. ${f.captured} frames captured (${f.skipped.duplicate} near-duplicates and ${f.skipped.blank} blank views skipped).</p>
${validationHtml(f.outcome, f.validation, f.error)}`;
  return reportPage(`Calibration run ${f.runId}`, lead, f.outcome?.report, `<h2>Log</h2><pre>${esc(f.log)}</pre>`);
}
