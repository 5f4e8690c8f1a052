/** The readable side of `evaluate --multiclass`: two text tables from a SubsetReport, '!' where a target is missed. */
import type { ModeResult, SubsetReport, UnknownProductResult } from './multiclass-subsets.ts';
import { MODES } from './multiclass-subsets.ts';

const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : `${(100 * v).toFixed(1)}%`);
const f3 = (v: number | null | undefined) => (v === null || v === undefined ? '-' : v.toFixed(3));

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (c ?? '').padEnd(w[i]))
      .join('  ')
      .trimEnd();
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

/** The worst product of the leave-one-out check by `pick` (lowest when `low`), with its name. */
function worst(u: Record<string, UnknownProductResult> | undefined, pick: (r: UnknownProductResult) => number | null, low: boolean): { name: string; v: number } | null {
  let best: { name: string; v: number } | null = null;
  for (const [name, r] of Object.entries(u ?? {})) {
    const v = pick(r);
    if (v !== null && (!best || (low ? v < best.v : v > best.v))) best = { name, v };
  }
  return best;
}

function summaryRow(mix: string, mode: string, m: ModeResult, t: SubsetReport['targets']): string[] {
  if (m.error) return [mix, mode, `calibration refused: ${m.error}`];
  const caught = worst(m.unknown_product, (r) => r.routed_unknown, true);
  const falseU = worst(m.unknown_product, (r) => r.false_unknown_known_good, false);
  const flag = (bad: boolean) => (bad ? ' !' : '');
  return [
    mix,
    mode,
    `${m.clusters}/${m.products}${flag(m.clusters !== m.products)}`,
    f3(m.nmi),
    f3(m.purity),
    pct(m.routing_accuracy),
    `${pct(m.unknown_share)} / ${pct(m.false_unknown_good)}${flag((m.false_unknown_good ?? 0) > t.false_unknown_max)}`,
    caught ? `${pct(caught.v)} (${caught.name})${flag(caught.v < t.routed_unknown_min)}` : '-',
    falseU ? `${pct(falseU.v)} (${falseU.name} out)${flag(falseU.v > t.false_unknown_max)}` : '-',
  ];
}

export function formatSubsetReport(r: SubsetReport): string {
  const t = r.targets;
  const cats = Object.keys(r.single_product);
  const summary = table(
    ['mix', 'calibration', 'clusters/products', 'NMI', 'purity', 'routing', 'UNKNOWN: all / good', 'left-out product UNKNOWN (worst)', 'good UNKNOWN without it (worst)'],
    r.subsets.flatMap((s) => MODES.map((mode) => summaryRow(s.name, mode, s[mode], t))),
  );
  const aurocRows = [
    ['single-product bank', 'product given', ...cats.map((c) => f3(r.single_product[c].image_auroc))],
    ...r.subsets.flatMap((s) =>
      MODES.filter((mode) => !s[mode].error).map((mode) => [
        s.name,
        mode,
        ...cats.map((c) => {
          const a = s[mode].image_auroc?.[c];
          if (a === undefined) return '';
          const d = s[mode].auroc_delta?.[c];
          if (d === null || d === undefined) return f3(a);
          return `${f3(a)} (${d >= 0 ? '+' : ''}${(100 * d).toFixed(1)})${-d > t.auroc_drop_max ? ' !' : ''}`;
        }),
      ]),
    ),
  ];
  const aurocTable = table(['mix', 'calibration', ...cats.map((c) => `${c} AUROC (vs single, points)`)], aurocRows);
  const w = r.work;
  return [
    `Mixes of products: routing and unknown products (targets: left-out product >= ${pct(t.routed_unknown_min)} UNKNOWN, good parts <= ${pct(t.false_unknown_max)} UNKNOWN; '!' = missed)`,
    summary,
    '',
    `Routed image AUROC per product (UNKNOWN counts as rejected) vs the product's own bank (target: within ${(100 * t.auroc_drop_max).toFixed(1)} point)`,
    aurocTable,
    '',
    `${r.subsets.length} mixes, ${w.calibrations} calibrations, ${w.distinct_banks} distinct banks; ${w.train_images} train and ${w.test_images} test images; held-out scores ${r.settings.held_out}; ${w.total_s} s (embed ${w.embed_s}, calibrate ${w.calibrate_s}, test ${w.test_s})`,
  ].join('\n');
}
