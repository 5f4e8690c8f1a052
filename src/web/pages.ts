/**
 * The page's HTML, rendered on the server in sections. The live feed sends the same sections again
 * (src/web/live-feed.ts), so every string the page shows is escaped here and nowhere else.
 */
import type { VerdictPayload } from '../publish/payloads.ts';
import type { BundleVersion, CalibrationProgress, StationView } from './station-control.ts';
import { type Html, html, seconds } from './html.ts';

export const FEED_ROWS = 20;
/** The run id of a report path (…/runs/<run id>/report.html); the server checks it again before use. */
const REPORT_RUN = /\/([A-Za-z0-9][A-Za-z0-9._-]{0,63})\/report\.html$/;

export interface Sections {
  status: Html;
  live: Html;
  counts: Html;
  feed: Html;
  calibration: Html;
  bundles: Html;
}

export interface StationSnapshot {
  view: StationView;
  verdicts: VerdictPayload[];
  calibration: CalibrationProgress | null;
  bundles: BundleVersion[];
}

export function sections(s: StationSnapshot): Sections {
  return {
    status: status(s.view),
    live: live(s.verdicts[0] ?? null),
    counts: counts(s.view.counts),
    feed: feed(s.verdicts.slice(0, FEED_ROWS)),
    calibration: calibration(s.calibration),
    bundles: bundles(s.bundles),
  };
}

function status(v: StationView): Html {
  const b = v.bundle;
  return html`<span>Station <b>${v.station}</b></span> <span>mode <b class="mode-${v.mode}" id="mode">${v.mode}</b></span>
<span>camera <b>${v.camera.state}</b> ${v.camera.detail}</span>
<span>bundle <b id="active-version">${b ? b.version : 'none'}</b>${b ? html` (${b.clusters.length} clusters, ${b.created_at})` : ''}</span>`;
}

const verdictClass = (v: string) => (v === 'OK' ? 'ok' : v === 'NG' ? 'ng' : v === 'UNKNOWN' ? 'unknown' : 'other');
const num = (x: number | null | undefined, d = 3) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '–');

function live(v: VerdictPayload | null): Html {
  if (!v) return html`<p class="muted">No verdict yet.</p>`;
  return html`<div class="verdict ${verdictClass(v.verdict)}" id="latest-verdict">${v.verdict}</div>
<dl><dt>part</dt><dd>${v.part_id ?? '–'}</dd><dt>frame</dt><dd>${v.frame ?? '–'}</dd><dt>cluster</dt><dd>${v.cluster ?? '–'}</dd>
<dt>score</dt><dd>${num(v.score)} (threshold ${num(v.threshold)})</dd><dt>at</dt><dd>${v.timestamp}</dd>${v.reason ? html`<dt>reason</dt><dd>${v.reason}</dd>` : ''}</dl>`;
}

function counts(c: StationView['counts']): Html {
  const rows = (r: Record<string, number>, blank: string) =>
    Object.entries(r)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => html`<tr><td>${k || blank}</td><td class="n">${n}</td></tr>`);
  return html`<table><caption>Verdicts since start</caption>${rows(c.verdicts, '–')}</table>
<table id="cluster-counts"><caption>Per cluster</caption>${rows(c.clusters, '(none)')}</table>`;
}

function feed(vs: VerdictPayload[]): Html {
  if (!vs.length) return html`<p class="muted">No verdicts yet.</p>`;
  return html`<table><tr><th>time</th><th>verdict</th><th>part</th><th>cluster</th><th>score</th><th>bundle</th></tr>${vs.map(
    (v) =>
      html`<tr><td>${v.timestamp.slice(11, 23)}</td><td class="${verdictClass(v.verdict)}">${v.verdict}</td><td>${v.part_id ?? '–'}</td><td>${v.cluster ?? '–'}</td><td class="n">${num(v.score)}</td><td>${v.bundle?.version ?? v.bundle?.id ?? '–'}</td></tr>`,
  )}</table>`;
}

const FINAL = new Set(['done', 'failed', 'stopped']);

function calibration(p: CalibrationProgress | null): Html {
  if (!p) return html`<p class="muted" id="cal-stage">No calibration run since the daemon started.</p>`;
  const running = !FINAL.has(p.stage);
  const r = p.result;
  return html`<p>Run <code>${p.run_id}</code> started ${p.started_at}: stage <b id="cal-stage">${p.stage}</b> ${p.detail}</p>
${running ? html`<p><progress id="cal-progress" value="${p.done}" max="${Math.max(1, p.total)}"></progress> <span id="cal-count">${p.done} / ${p.total}</span> · <span id="cal-eta">${seconds(p.eta_s)}</span></p>` : ''}
${
  r
    ? html`<p id="cal-result">${r.error ? html`<b class="ng">${r.error}</b> ` : ''}${r.version ? html`Bundle <b>${r.version}</b> written, ${r.activated ? 'activated' : html`<b>not activated</b>`}.` : 'No bundle written.'}</p>`
    : ''
}
${r?.report ? html`<p><a id="cal-report" href="/report/${p.run_id}" target="_blank" rel="noopener">Calibration report</a></p>` : ''}`;
}

function bundles(list: BundleVersion[]): Html {
  if (!list.length) return html`<p class="muted">No bundle versions in the bundle folder yet.</p>`;
  return html`<table id="bundle-table"><tr><th>version</th><th>created</th><th>clusters</th><th>validated</th><th>report</th><th></th></tr>${[...list].reverse().map((b) => {
    const run = b.report?.match(REPORT_RUN)?.[1];
    return html`<tr class="${b.active ? 'active' : ''}"><td>${b.version}</td><td>${b.created_at ?? '–'}</td><td class="n">${b.clusters ?? '–'}</td><td>${b.validated === null ? '–' : b.validated ? 'yes' : html`<b class="ng">no</b>`}</td>
<td>${run ? html`<a href="/report/${run}" target="_blank" rel="noopener">report</a>` : '–'}</td>
<td>${b.active ? html`<b>active</b>` : html`<button data-action="activate" data-version="${b.version}">Activate</button>`}</td></tr>`;
  })}</table>`;
}

export interface PageOptions {
  csrf: string;
  /** null: the controls may be used; otherwise why not (shown next to them) */
  controlsRefused: string | null;
  loginNeeded: boolean;
  loggedIn: boolean;
  /** how many heatmaps / frames the live feed has seen (0: none yet): the images' cache-busting query */
  images: { heatmap: number; frame: number };
}

/** No src before the first image: the page shows no broken picture on a station that has none yet. */
function image(kind: 'heatmap' | 'frame', seq: number): Html {
  const src = seq ? html` src="/${kind}.jpg?n=${seq}"` : html` hidden`;
  return html`<figure><img id="${kind}" alt="latest ${kind}" data-seq="${seq}"${src}><figcaption>${kind}</figcaption></figure>`;
}

export function stationPage(s: StationSnapshot, o: PageOptions): string {
  const sec = sections(s);
  const auth = o.loginNeeded
    ? o.loggedIn
      ? html`<form method="post" action="/logout"><input type="hidden" name="csrf" value="${o.csrf}"><button>Log out</button></form>`
      : html`<a href="/login" id="login-link">Log in</a>`
    : '';
  return html`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf" content="${o.csrf}"><title>${s.view.station} · hiercore-edge</title><link rel="stylesheet" href="/style.css"></head>
<body><header><h1>hiercore-edge</h1><div id="status">${sec.status}</div><div class="auth">${auth}</div></header>
${o.controlsRefused ? html`<p class="notice" id="controls-refused">${o.controlsRefused}</p>` : ''}
<p id="message" role="alert"></p><p id="connection" class="muted">connecting…</p>
<main>
<section><h2>Live</h2><div class="images">${image('heatmap', o.images.heatmap)}${image('frame', o.images.frame)}</div><div id="live">${sec.live}</div></section>
<section><h2>Counts</h2><div id="counts">${sec.counts}</div></section>
<section><h2>Calibration</h2><div id="calibration">${sec.calibration}</div>
<p><label>Images <input id="cal-images" type="number" min="4" max="5000" placeholder="default"></label>
<button data-action="start-calibration" id="start-calibration">Start calibration</button> <button data-action="stop-calibration" id="stop-calibration">Stop</button></p></section>
<section><h2>Bundle versions</h2><div id="bundles">${sec.bundles}</div><p><button data-action="rollback" id="rollback">Roll back to the previous bundle</button></p></section>
<section class="wide"><h2>Verdicts</h2><div id="feed">${sec.feed}</div></section>
</main><script src="/app.js"></script></body></html>`.text;
}

export function loginPage(o: { csrf: string; error?: string; tokenSet: boolean }): string {
  return html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Log in · hiercore-edge</title><link rel="stylesheet" href="/style.css"></head>
<body><main class="login"><h1>Log in</h1>
${o.tokenSet ? html`<form method="post" action="/login"><input type="hidden" name="csrf" value="${o.csrf}"><label>Station token (commands.token) <input type="password" name="token" id="token" autofocus autocomplete="current-password"></label> <button id="login">Log in</button></form>` : html`<p>No commands.token is set on this station: no login is needed.</p>`}
${o.error ? html`<p class="ng" role="alert" id="login-error">${o.error}</p>` : ''}
<p><a href="/">Back to the station</a></p></main></body></html>`.text;
}

export function errorPage(status: number, text: string): string {
  return html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${status}</title></head><body><h1>${status}</h1><p>${text}</p><p><a href="/">Station page</a></p></body></html>`.text;
}
