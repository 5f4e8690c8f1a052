/**
 * The calibration report as one self-contained HTML file: no scripts, no server, no internet; images
 * are data: URIs, charts inline SVG. Pure: facts in, text out (the daemon writes it synchronously).
 */
import type { MergeStep } from '../route/finch.ts';
import type { ClusterReport, ReportData, Thumb } from './report-data.ts';

export const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const pct = (x: number) => `${(100 * x).toFixed(1)} %`;

export const REPORT_CSS =
  'body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #999;padding:.3em .6em;text-align:right}th:first-child,td:first-child{text-align:left}' +
  'pre{background:#f4f4f4;padding:1em;white-space:pre-wrap}.thumbs{display:flex;flex-wrap:wrap;gap:.5em}.thumbs figure{margin:0;font-size:.75em;text-align:center}.thumbs img{display:block;border:1px solid #ccc}' +
  '.warn{background:#fff4d6;border-left:4px solid #e0a000;padding:.5em 1em;margin:.5em 0}.ok{color:#176b1b}.bad{color:#a01010}section.cluster{border-top:1px solid #ccc;margin-top:1em}';

export function thumbs(list: Thumb[]): string {
  return `<div class="thumbs">${list.map((t) => `<figure><img src="${t.uri}" alt="${esc(t.label)}"><figcaption>${esc(t.label)}</figcaption></figure>`).join('')}</div>`;
}

/** Histogram of held-out good scores (blue) and defect scores (red) with the threshold line. */
export function histogramSvg(good: number[], defects: number[], threshold: number, bins = 24): string {
  const W = 420;
  const H = 140;
  const pad = 24;
  const all = [...good, ...defects, threshold];
  let lo = Math.min(...all);
  // far-off defects would squash the good scores into a few bins: they go into the last one
  const top0 = Math.max(threshold, ...good);
  let hi = Math.min(Math.max(...all), top0 + 0.5 * (top0 - lo));
  const clipped = Math.max(...all) > hi;
  if (hi - lo < 1e-9) {
    lo -= 0.5;
    hi += 0.5;
  }
  const span = (hi - lo) * 1.04;
  lo -= (hi - lo) * 0.02;
  const count = (xs: number[]) => {
    const c = new Array<number>(bins).fill(0);
    for (const x of xs) c[Math.max(0, Math.min(bins - 1, Math.floor(((x - lo) / span) * bins)))]++;
    return c;
  };
  const g = count(good);
  const d = count(defects);
  const top = Math.max(1, ...g, ...d);
  const bw = (W - 2 * pad) / bins;
  const x = (v: number) => pad + ((v - lo) / span) * (W - 2 * pad);
  const bar = (c: number[], fill: string, off: number) =>
    c
      .map((n, i) =>
        n
          ? `<rect x="${(pad + i * bw + off).toFixed(1)}" y="${(H - pad - (n / top) * (H - 2 * pad)).toFixed(1)}" width="${(bw / 2).toFixed(1)}" height="${((n / top) * (H - 2 * pad)).toFixed(1)}" fill="${fill}"><title>${n}</title></rect>`
          : '',
      )
      .join('');
  const tx = x(threshold).toFixed(1);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="score histogram">
<line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="#333"/>${bar(g, '#3b6fb6', 0)}${bar(d, '#c23b3b', bw / 2)}
<line x1="${tx}" y1="${pad / 2}" x2="${tx}" y2="${H - pad}" stroke="#000" stroke-dasharray="4 3"/><text x="${tx}" y="${pad / 2 + 8}" font-size="10" ${x(threshold) > W / 2 ? 'dx="-3" text-anchor="end"' : 'dx="3"'}>threshold ${threshold.toFixed(3)}</text>
<text x="${pad}" y="${H - 6}" font-size="10">${lo.toFixed(2)}</text><text x="${W - pad}" y="${H - 6}" font-size="10" text-anchor="end">${clipped ? '&#8805; ' : ''}${(lo + span).toFixed(2)}</text>
<text x="${W / 2}" y="${H - 6}" font-size="10" text-anchor="middle"><tspan fill="#3b6fb6">good (held out) ${good.length}</tspan>${defects.length ? ` <tspan fill="#c23b3b">defects ${defects.length}</tspan>` : ''}</text></svg>`;
}

function partitionSection(r: ReportData): string {
  if (r.mode === 'known_class' || !r.clustering) return '<h2>Products</h2><p>One product per sub-folder (known labels): no clustering.</p>';
  const k = r.clustering;
  const rows = k.hierarchy
    .map(
      (h, i) =>
        `<tr${i === k.chosen ? ' style="font-weight:bold"' : ''}><td>level ${i + 1}${i === k.chosen ? ' (chosen)' : ''}</td><td>${h.count}</td><td>${h.silhouette === null ? '-' : h.silhouette.toFixed(3)}</td></tr>`,
    )
    .join('');
  const merged = (k.merged as Partial<MergeStep>[])
    .map((m) =>
      m.reason === 'pose'
        ? `<li>a group of ${m.size} images merged into cluster-${m.into}: the same product in another pose (distance ${m.distance?.toFixed(3)} below ${m.limit?.toFixed(3)})</li>`
        : m.reason === 'small'
          ? `<li>a group of ${m.size} images, too few for a bank, merged into its nearest cluster-${m.into} (distance ${m.distance?.toFixed(3)})</li>`
          : m.reason === 'scale'
            ? `<li>a group of ${m.size} images merged into cluster-${m.into}: the same product at another frame size (cropped to ${esc(String(m.window))}, the crops' nearest-neighbour links cross ${Number(m.mixing).toFixed(2)} of the rate random labels would give)</li>`
            : m.reason === 'turn'
              ? `<li>a group of ${m.size} images merged into cluster-${m.into}: the same product turned a quarter (turned, each one's copies mix with the other's ${esc(String(m.window))} images at ${Number(m.mixing).toFixed(2)} of the rate random labels would give)</li>`
              : m.reason === 'stray'
                ? `<li>${m.size} images in ${esc(String(m.window))} frames moved from cluster-${m.from} to cluster-${m.into}: they are cluster-${m.into}'s product turned a quarter (mixing ${Number(m.mixing).toFixed(2)} both ways), a small share of cluster-${m.from}</li>`
                : `<li>${esc(JSON.stringify(m))}</li>`,
    )
    .join('');
  return `<h2>Products: the partition choice</h2><p>${esc(k.reason)}</p>
<table><tr><th>FINCH level</th><th>clusters</th><th>silhouette</th></tr>${rows}</table>
${merged ? `<p>Merges after the choice:</p><ul>${merged}</ul>` : '<p>No merges after the choice.</p>'}`;
}

function clusterSection(c: ClusterReport, frrTarget: number): string {
  if (c.unchanged)
    return `<section class="cluster"><h3>${esc(c.name)}</h3>
<p>Unchanged by this run (bank, keys, threshold and routing limit kept byte for byte): ${c.images} images, bank ${c.bank} patches, threshold ${c.threshold.toFixed(4)} (${c.threshold_source}), routing limit ${c.routing_limit.toFixed(4)}.</p></section>`;
  const defects = c.defects.length
    ? `; ${c.defects.length} labelled defects scored here, lowest ${Math.min(...c.defects).toFixed(3)}, ${c.defects.filter((s) => s <= c.threshold).length} pass as OK`
    : '';
  return `<section class="cluster"><h3>${esc(c.name)}</h3>
<p>${c.images} images, bank ${c.bank} patches, threshold ${c.threshold.toFixed(4)} (${c.threshold_source}), routing limit ${c.routing_limit.toFixed(4)}.
Expected false-reject rate ${pct(c.expected_frr)} of held-out good images (target ${pct(frrTarget)})${defects}.
${c.split_silhouette === null ? '' : `Best split of this cluster alone: silhouette ${c.split_silhouette.toFixed(2)}.`}</p>
${thumbs(c.thumbs)}
${histogramSvg(c.held_out, c.defects, c.threshold)}
${c.tail?.length ? `<p>Good images above the threshold when held out (${c.tail.length}, within what the ${pct(frrTarget)} false-reject target allows): check them for defects or unusual views.</p>${thumbs(c.tail)}` : ''}</section>`;
}

/** The report's body sections from the build (products, clusters, warnings, times). */
export function reportSections(r: ReportData): string {
  const warnings = r.warnings.length ? r.warnings.map((w) => `<div class="warn">${esc(w.text)}${w.images?.length ? thumbs(w.images) : ''}</div>`).join('\n') : '<p class="ok">None.</p>';
  const total = r.stages.reduce((s, x) => s + x.seconds, 0);
  const stages = r.stages.map((s) => `<tr><td>${esc(s.stage)}</td><td>${s.seconds.toFixed(1)} s</td></tr>`).join('');
  return `<h2>Warnings</h2>
${warnings}
${partitionSection(r)}
<h2>Clusters</h2>
${r.clusters.map((c) => clusterSection(c, r.frr_target)).join('\n')}
<h2>Time per stage</h2>
<table><tr><th>stage</th><th>time</th></tr>${stages}<tr><td><b>total</b></td><td><b>${total.toFixed(1)} s</b></td></tr></table>`;
}

/** A whole report page: a title, a lead paragraph (already HTML), the sections, an optional log. */
export function reportPage(title: string, lead: string, r: ReportData | undefined, tail = ''): string {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>${REPORT_CSS}</style>
</head><body>
<h1>${esc(title)}</h1>
${lead}
${r ? reportSections(r) : ''}
${tail}
</body></html>
`;
}
