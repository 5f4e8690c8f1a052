/** The page's stylesheet and its little script: served as files so the CSP can forbid inline code. */
export const STYLE = `
body{font-family:system-ui,sans-serif;margin:0;background:#f5f5f2;color:#222}
header{display:flex;flex-wrap:wrap;gap:1em;align-items:baseline;padding:.6em 1em;background:#23313f;color:#fff}
header h1{font-size:1.2em;margin:0}#status span{margin-right:1em}.auth{margin-left:auto}.auth form{display:inline}
header a{color:#cde}main{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:1em;padding:1em}
section{background:#fff;border-radius:6px;padding:.6em 1em;box-shadow:0 1px 2px #0002}section.wide{grid-column:1/-1}
h2{font-size:1.05em;margin:.2em 0 .6em}table{border-collapse:collapse;margin:0 1em .6em 0;display:inline-table}
td,th{border-bottom:1px solid #ddd;padding:.2em .6em;text-align:left}td.n{text-align:right}caption{text-align:left;font-weight:bold}
.verdict{font-size:2.4em;font-weight:bold;padding:.1em .5em;display:inline-block;border-radius:6px;color:#fff;background:#777}
.verdict.ok{background:#2a7d2e}.verdict.ng{background:#b3261e}.verdict.unknown{background:#a66b00}
td.ok{color:#2a7d2e}td.ng,.ng{color:#b3261e}td.unknown{color:#a66b00}dl{display:grid;grid-template-columns:auto 1fr;gap:.1em 1em}dd{margin:0}
.images{display:flex;gap:1em}figure{margin:0}figure img{max-width:240px;max-height:240px;background:#ddd}figcaption{font-size:.8em;color:#666}
img[hidden]{display:none}.muted{color:#777}.notice{margin:1em;padding:.5em 1em;background:#fff3cd;border:1px solid #e0c36a}
#message{margin:.5em 1em}#message.bad{color:#b3261e;font-weight:bold}#message.good{color:#2a7d2e}#connection{margin:0 1em}
tr.active{background:#e6f2e6}progress{width:16em}.login{max-width:30em;margin:3em auto;background:#fff;padding:1em 2em}
`;

export const SCRIPT = `'use strict';
(() => {
  const csrf = document.querySelector('meta[name=csrf]').content;
  const $ = (id) => document.getElementById(id);
  const seq = { heatmap: 0, frame: 0 };
  for (const k of Object.keys(seq)) {
    const img = $(k);
    seq[k] = Number(img.dataset.seq) || 0;
    img.addEventListener('load', () => { img.hidden = false; });
    img.addEventListener('error', () => { img.hidden = true; });
  }
  const message = (text, bad) => { const m = $('message'); m.textContent = text; m.className = bad ? 'bad' : 'good'; };
  function apply(u) {
    for (const [id, markup] of Object.entries(u.sections || {})) { const el = $(id); if (el) el.innerHTML = markup; }
    for (const k of Object.keys(seq)) if (u[k] && u[k] !== seq[k]) { seq[k] = u[k]; $(k).src = '/' + k + '.jpg?n=' + u[k]; }
  }
  const es = new EventSource('/events');
  es.addEventListener('update', (e) => apply(JSON.parse(e.data)));
  es.addEventListener('open', () => { $('connection').textContent = 'live'; });
  es.addEventListener('error', () => {
    $('connection').textContent = es.readyState === EventSource.CLOSED ? 'live view refused (too many pages open on this station?): reload later' : 'connection lost, retrying…';
  });
  document.addEventListener('click', async (ev) => {
    const b = ev.target.closest('button[data-action]');
    if (!b) return;
    const action = b.dataset.action;
    const images = $('cal-images').value;
    const body = action === 'activate' ? { version: b.dataset.version } : action === 'start-calibration' && images ? { images: Number(images) } : {};
    b.disabled = true;
    try {
      const r = await fetch('/api/' + action, { method: 'POST', headers: { 'content-type': 'application/json', 'x-csrf-token': csrf }, body: JSON.stringify(body) });
      const j = await r.json().catch(() => ({ error: 'HTTP ' + r.status }));
      message(j.message || j.error, !r.ok);
    } catch (e) {
      message('request failed: ' + e.message, true);
    } finally {
      b.disabled = false;
    }
  });
})();
`;
