/**
 * Credentials out of everything the daemon shows: logs, MQTT status messages, get_config and
 * --print-config. Camera and broker URLs routinely carry `user:password@`, and GStreamer launch
 * strings carry them too (inside `location="…"` or as rtspsrc's user-id/user-pw properties).
 *
 * Redaction errs on the side of hiding too much: a URL's user part is taken to end at the token's
 * last "@", so a password that itself holds "@" or "/" (common when typed unencoded) is still hidden.
 * A token ends at whitespace or an unescaped double quote; credentials with raw whitespace are not
 * valid URLs and are not recognised.
 */

export const MASK = '***';
export const REDACTED = '[redacted]';

// scheme:// then the rest of the token; `\\.` keeps backslash-escaped quotes (GStreamer, JSON) inside it.
// The scheme starts a word and is bounded, so a long run of letters is scanned once, not once per letter.
const URL_TOKEN = /(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]{0,31}:\/\/)((?:\\.|[^\s"\\])*)/g;

const SECRET_NAMES = [
  'user-id',
  'user-pw',
  'proxy-id',
  'proxy-pw',
  'password',
  'passwd',
  'pass',
  'pwd',
  'secret',
  'token',
  'access[-_]?token',
  'api[-_]?key',
  'apikey',
  'auth',
  'authorization',
  'credentials',
  'user',
  'username',
  'login',
];
// name, an optional closing quote (JSON keys), = or :, then a quoted or bare value.
const SECRET_ASSIGN = new RegExp(`(?<![A-Za-z0-9_-])((?:${SECRET_NAMES.join('|')})["']?\\s*[=:]\\s*)("(?:[^"\\\\]|\\\\.)*"|'(?:[^'\\\\]|\\\\.)*'|[^\\s"'&;,!]+)`, 'gi');

/** A URL with its user information (user, user:password) replaced by `***`. */
export function redactUrl(url: string): string {
  return url.replace(URL_TOKEN, (_m, scheme: string, rest: string) => {
    const at = rest.lastIndexOf('@');
    return at < 0 ? scheme + rest : `${scheme}${MASK}${rest.slice(at)}`;
  });
}

/** Credentials out of free text: every URL's user information and every `password=…`-style value. */
export function redactSecrets(text: string): string {
  return redactUrl(text).replace(SECRET_ASSIGN, (_m, name: string, value: string) => {
    const q = value[0] === '"' || value[0] === "'" ? value[0] : '';
    return `${name}${q}${MASK}${q}`;
  });
}

/**
 * A deep copy of a configuration object for display: values under a sensitive key (matched by its
 * dotted path, e.g. "mqtt.password", or by its bare name, e.g. "password") become "[redacted]"
 * (empty ones stay empty, so "not set" remains visible), and every other string is redactSecrets'd.
 */
export function redactConfig<T>(obj: T, sensitiveKeys: Iterable<string> = DEFAULT_SENSITIVE_KEYS): T {
  const keys = new Set([...sensitiveKeys].map((k) => k.toLowerCase()));
  return walk(obj, '', keys) as T;
}

/** Bare key names that are secret wherever they appear. */
export const DEFAULT_SENSITIVE_KEYS = ['password', 'passwd', 'token', 'secret', 'key', 'passphrase', 'credentials', 'api_key', 'apikey'];

function walk(v: unknown, path: string, keys: Set<string>): unknown {
  if (typeof v === 'string') return redactSecrets(v);
  if (Array.isArray(v)) return v.map((x, i) => walk(x, `${path}[${i}]`, keys));
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    const p = path ? `${path}.${k}` : k;
    out[k] = keys.has(p.toLowerCase()) || keys.has(k.toLowerCase()) ? mask(x) : walk(x, p, keys);
  }
  return out;
}

function mask(v: unknown): unknown {
  return v === '' || v === null || v === undefined ? v : REDACTED;
}
