/** Everything the page shows passes through here: cluster names, part ids and messages are untrusted text. */
export function esc(v: unknown): string {
  return String(v ?? '').replace(/[&<>"'`]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Tagged template: interpolations are escaped unless they are Html (already rendered). */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

export function html(parts: TemplateStringsArray, ...values: unknown[]): Html {
  let out = parts[0];
  values.forEach((v, i) => {
    out += render(v) + parts[i + 1];
  });
  return new Html(out);
}

function render(v: unknown): string {
  if (v instanceof Html) return v.text;
  if (Array.isArray(v)) return v.map(render).join('');
  return esc(v);
}

export function seconds(s: number | null): string {
  if (s === null || !Number.isFinite(s)) return 'estimating…';
  const t = Math.max(0, Math.round(s));
  return t >= 60 ? `about ${Math.floor(t / 60)} min ${t % 60} s left` : `about ${t} s left`;
}
