/**
 * Text that arrives from MQTT clients (part ids, request ids, sender names, topics) is untrusted: a
 * newline in it would forge a journal line (`\n<2>CRITICAL …`), a bidi override would disguise one,
 * a lone surrogate breaks consumers that re-encode. These helpers make such text inert.
 */

/** C0/C1 controls, format characters (bidi overrides, zero-width), line/paragraph separators, lone surrogates. */
const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu;
const UNSAFE_ONE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u;

export function hasUnsafeChars(s: string): boolean {
  return UNSAFE_ONE.test(s);
}

/** Drops unsafe characters (no replacement, so "P-1\n" and "P-1" are the same part). */
export function stripUnsafe(s: string): string {
  return s.replace(UNSAFE, '');
}

/** Length in code points: what a person counts, and what a limit of "64 characters" means. */
export function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

function firstCodePoints(s: string, max: number): string {
  let out = '';
  let n = 0;
  for (const ch of s) {
    if (n++ === max) break;
    out += ch;
  }
  return out;
}

/** String(v) throws for objects whose toString is not a function; a log line must not. */
function printable(v: unknown): string {
  try {
    return String(v);
  } catch {
    return `(${typeof v})`;
  }
}

/**
 * For log lines: unsafe characters become visible escapes (`\x0a`, `\u{202e}`) rather than vanishing,
 * so an operator sees that something odd was sent; bounded so a 64 KB payload is not one log line.
 */
export function forLog(value: unknown, max = 120): string {
  const s = typeof value === 'string' ? value : printable(value);
  const escaped = s.replace(UNSAFE, (c) => {
    const cp = c.codePointAt(0)!;
    return cp < 0x100 ? `\\x${cp.toString(16).padStart(2, '0')}` : `\\u{${cp.toString(16)}}`;
  });
  return codePoints(escaped) > max ? `${firstCodePoints(escaped, max)}… (${s.length} chars)` : escaped;
}

/** UTF-8 or nothing: U+FFFD replacements would let two different byte strings name the same thing. */
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

export function decodeUtf8(bytes: Uint8Array): string | null {
  try {
    return STRICT_UTF8.decode(bytes);
  } catch {
    return null;
  }
}

export function utf8Length(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}
