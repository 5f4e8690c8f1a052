/**
 * Who may change the station from the page: the rule of state-changing MQTT commands
 * (commands.control, commands.token), carried by a session cookie after a login with the token. Every
 * POST also needs the session's CSRF token and an Origin of this page, so another site open in the
 * engineer's browser cannot press the buttons for them.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

export interface WebAuth {
  /** `commands.control`: state-changing actions allowed at all */
  control: boolean;
  /** `commands.token`: "" = none */
  token: string;
}

export interface Session {
  id: string;
  csrf: string;
  loggedIn: boolean;
  lastSeen: number;
}

export type Permission = { ok: true } | { ok: false; status: number; error: string };

const COOKIE = 'hce_session';
const SESSION_IDLE_MS = 12 * 3600_000;
const LOGIN_WINDOW_MS = 60_000;
const LOGIN_FAILURES_MAX = 5;

export function sameSecret(a: string, b: string): boolean {
  const h = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  return timingSafeEqual(h(a), h(b));
}

const token = () => randomBytes(24).toString('base64url');

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Bounded: a client that opens sessions in a loop evicts anonymous ones first, never grows memory. */
export class Sessions {
  private readonly map = new Map<string, Session>();
  constructor(private readonly max = 64) {}

  fromRequest(req: IncomingMessage): Session | null {
    const id = cookieValue(req.headers.cookie, COOKIE);
    const s = id ? this.map.get(id) : undefined;
    if (!s) return null;
    if (Date.now() - s.lastSeen > SESSION_IDLE_MS) {
      this.map.delete(s.id);
      return null;
    }
    s.lastSeen = Date.now();
    return s;
  }

  create(): Session {
    if (this.map.size >= this.max) this.evict();
    const s = { id: token(), csrf: token(), loggedIn: false, lastSeen: Date.now() };
    this.map.set(s.id, s);
    return s;
  }

  /** A new id at login, so a session id planted before the login is worth nothing after it. */
  renew(old: Session): Session {
    this.map.delete(old.id);
    return this.create();
  }

  drop(s: Session): void {
    this.map.delete(s.id);
  }

  private evict(): void {
    const all = [...this.map.values()].sort((a, b) => Number(a.loggedIn) - Number(b.loggedIn) || a.lastSeen - b.lastSeen);
    this.map.delete(all[0].id);
  }

  static cookie(s: Session): string {
    return `${COOKIE}=${s.id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_IDLE_MS / 1000}`;
  }
}

function cookieValue(header: string | undefined, name: string): string | null {
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return null;
}

/** The same rule as authorize() in src/publish/commands.ts, with the login standing in for the MQTT token. */
export function mayChange(auth: WebAuth, session: Session | null, exposed: boolean): Permission {
  if (!auth.control) return { ok: false, status: 403, error: 'changing the station from this page is disabled here (commands.control is false)' };
  if (auth.token) return session?.loggedIn ? { ok: true } : { ok: false, status: 401, error: 'log in first (with the station\u2019s commands.token)' };
  if (exposed) return { ok: false, status: 403, error: 'the page listens beyond this machine (web.host) and commands.token is not set: set it to use the controls' };
  return { ok: true };
}

/**
 * A POST must come from this page: Origin equal to the Host it was sent to, and that Host one this
 * server answers as (a loopback name when bound to loopback: no DNS rebinding), and the CSRF token.
 */
export function checkPost(req: IncomingMessage, session: Session | null, boundHost: string, csrf: string | undefined): Permission {
  const host = req.headers.host ?? '';
  const hostName = host.replace(/:\d+$/, '');
  if (isLoopback(boundHost) && !isLoopback(hostName)) return { ok: false, status: 403, error: `unexpected Host "${host}"` };
  if (req.headers.origin !== `http://${host}`) return { ok: false, status: 403, error: 'cross-site request refused (Origin is not this page)' };
  if (!session) return { ok: false, status: 403, error: 'no session: reload the page' };
  if (typeof csrf !== 'string' || !sameSecret(csrf, session.csrf)) return { ok: false, status: 403, error: 'CSRF token missing or wrong: reload the page' };
  return { ok: true };
}

/** At most LOGIN_FAILURES_MAX wrong tokens a minute, whoever sends them: guessing the token takes forever. */
export class LoginLimiter {
  private failures: number[] = [];
  blocked(now = Date.now()): boolean {
    this.failures = this.failures.filter((t) => now - t < LOGIN_WINDOW_MS);
    return this.failures.length >= LOGIN_FAILURES_MAX;
  }
  fail(now = Date.now()): void {
    this.failures.push(now);
  }
}
