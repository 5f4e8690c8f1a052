/**
 * The local web page for the line engineer (README "Local web page"): station view, verdict feed,
 * calibration and bundle versions. Off unless web.port is set, on loopback unless web.host says
 * otherwise; changing the station needs what a state-changing MQTT command needs (src/web/auth.ts).
 * Plain HTTP on node:http; every request is untrusted and bounded.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../service/log.ts';
import type { StationControl } from './station-control.ts';
import { checkPost, isLoopback, LoginLimiter, mayChange, sameSecret, type Session, Sessions, type WebAuth } from './auth.ts';
import { LiveFeed } from './live-feed.ts';
import { errorPage, FEED_ROWS, loginPage, type StationSnapshot, stationPage } from './pages.ts';
import { SCRIPT, STYLE } from './assets.ts';

export interface WebOptions {
  host: string;
  /** 0: any free port (tests); the bound one is in the result */
  port: number;
  log: Logger;
  /** commands.control and commands.token; absent: no state-changing action is allowed */
  auth?: WebAuth;
  maxLiveClients?: number;
}

export interface WebServer {
  port: number;
  url: string;
  close(): Promise<void>;
}

export const MAX_BODY_BYTES = 16 * 1024;
const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/** The calibration report is self-contained HTML with an inline stylesheet, shown sandboxed: no script runs in it. */
const REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; sandbox";

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

type Action = (body: Record<string, unknown>) => Promise<string>;

export async function startWebServer(control: StationControl, o: WebOptions): Promise<WebServer> {
  const auth: WebAuth = o.auth ?? { control: false, token: '' };
  const exposed = !isLoopback(o.host);
  const sessions = new Sessions();
  const limiter = new LoginLimiter();
  const feed = new LiveFeed(control, o.maxLiveClients ?? 16);

  const actions: Record<string, Action> = {
    'start-calibration': async (b) => {
      const images = b.images;
      if (images !== undefined && !(typeof images === 'number' && Number.isInteger(images))) throw new HttpError(400, 'images must be a whole number');
      const p = await control.startCalibration(images === undefined ? {} : { recipe: { images } });
      return `calibration ${p.run_id} started`;
    },
    'stop-calibration': async () => {
      await control.stopCalibration();
      return 'calibration stopped';
    },
    activate: async (b) => {
      if (typeof b.version !== 'string' || !VERSION.test(b.version)) throw new HttpError(400, 'version must be a bundle version name');
      const v = await control.activate(b.version);
      return `bundle ${v.version} is active`;
    },
    rollback: async () => {
      const v = await control.rollback();
      return `rolled back: bundle ${v.version} is active`;
    },
  };

  const snapshot = (): StationSnapshot => ({ view: control.view(), verdicts: control.recentVerdicts(FEED_ROWS), calibration: control.calibration(), bundles: control.bundles() });

  /** The session of the request, or a new one announced with Set-Cookie (pages only). */
  const sessionFor = (req: IncomingMessage, res: ServerResponse): Session => {
    const s = sessions.fromRequest(req);
    if (s) return s;
    const n = sessions.create();
    res.setHeader('set-cookie', Sessions.cookie(n));
    return n;
  };

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://station.invalid');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    if (method === 'GET' || method === 'HEAD') {
      if (path === '/') {
        const s = sessionFor(req, res);
        const refused = mayChange(auth, auth.token ? { ...s, loggedIn: true } : s, exposed);
        return send(
          res,
          200,
          'text/html',
          stationPage(snapshot(), { csrf: s.csrf, controlsRefused: refused.ok ? null : refused.error, loginNeeded: Boolean(auth.token), loggedIn: s.loggedIn, images: { ...feed.seq } }),
        );
      }
      if (path === '/login') return send(res, 200, 'text/html', loginPage({ csrf: sessionFor(req, res).csrf, tokenSet: Boolean(auth.token) }));
      if (path === '/style.css') return send(res, 200, 'text/css', STYLE);
      if (path === '/app.js') return send(res, 200, 'text/javascript', SCRIPT);
      if (path === '/heatmap.jpg' || path === '/frame.jpg') {
        const jpeg = path === '/heatmap.jpg' ? control.latestHeatmap() : control.latestFrame();
        if (!jpeg) throw new HttpError(404, `no ${path.slice(1, -4)} yet`);
        return send(res, 200, 'image/jpeg', jpeg);
      }
      if (path === '/events') {
        if (!feed.add(req, res)) throw new HttpError(503, 'too many live pages open on this station');
        return;
      }
      if (path.startsWith('/report/')) {
        const runId = path.slice('/report/'.length);
        const report = RUN_ID.test(runId) ? await control.report(runId) : null;
        if (report === null) throw new HttpError(404, 'no such calibration report');
        return send(res, 200, 'text/html', report, REPORT_CSP);
      }
      throw new HttpError(404, 'not found');
    }
    if (method !== 'POST') throw new HttpError(405, 'method not allowed');
    if (path === '/login' || path === '/logout') return form(req, res, path);
    const action = path.startsWith('/api/') ? actions[path.slice(5)] : undefined;
    if (!action || !Object.hasOwn(actions, path.slice(5))) throw new HttpError(404, 'not found');
    const session = sessions.fromRequest(req);
    const csrf = req.headers['x-csrf-token'];
    need(checkPost(req, session, o.host, typeof csrf === 'string' ? csrf : undefined));
    if (!String(req.headers['content-type'] ?? '').startsWith('application/json')) throw new HttpError(415, 'send application/json');
    need(mayChange(auth, session, exposed));
    const body = parseJson(await readBody(req));
    try {
      const message = await action(body);
      o.log('info', `web page: ${path.slice(5)} (${message})`);
      feed.refresh();
      return send(res, 200, 'application/json', JSON.stringify({ ok: true, message }));
    } catch (e) {
      if (e instanceof HttpError) throw e;
      feed.refresh();
      throw new HttpError(409, (e as Error).message);
    }
  }

  /** Login and logout: plain HTML forms, answered with a redirect (or the form again with the reason). */
  async function form(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const session = sessions.fromRequest(req);
    const f = new URLSearchParams(await readBody(req));
    need(checkPost(req, session, o.host, f.get('csrf') ?? undefined));
    const s = session!;
    if (path === '/logout') {
      sessions.drop(s);
      return redirect(res, '/');
    }
    if (!auth.token) return redirect(res, '/');
    if (limiter.blocked()) return send(res, 429, 'text/html', loginPage({ csrf: s.csrf, tokenSet: true, error: 'too many wrong tokens: wait a minute' }));
    if (!sameSecret(f.get('token') ?? '', auth.token)) {
      limiter.fail();
      o.log('warn', 'web page: login with a wrong token');
      return send(res, 401, 'text/html', loginPage({ csrf: s.csrf, tokenSet: true, error: 'wrong token' }));
    }
    const n = sessions.renew(s);
    n.loggedIn = true;
    res.setHeader('set-cookie', Sessions.cookie(n));
    o.log('info', 'web page: logged in');
    return redirect(res, '/');
  }

  const server = createServer((req, res) => {
    route(req, res).catch((e: Error) => {
      const status = e instanceof HttpError ? e.status : 500;
      if (status === 500) o.log('warn', `web page: ${req.method} ${String(req.url).slice(0, 200)}: ${e.message}`);
      if (res.headersSent) return void res.destroy();
      const wantsJson = req.method === 'POST' && req.url?.startsWith('/api/');
      send(res, status, wantsJson ? 'application/json' : 'text/html', wantsJson ? JSON.stringify({ ok: false, error: e.message }) : errorPage(status, e.message));
      // the rest of an oversized body is not read: close instead of keeping the connection alive
      if (status === 413) res.once('finish', () => req.destroy());
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.maxHeadersCount = 50;
  // the live pages (at most maxLiveClients) plus a few requests; more is someone hammering the station
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  if (exposed && !auth.token) o.log('warn', `web page listens on ${o.host} without commands.token: its controls are refused`);
  return {
    port,
    url: `http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${port}/`,
    close: async () => {
      feed.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function need(p: { ok: true } | { ok: false; status: number; error: string }): void {
  if (!p.ok) throw new HttpError(p.status, p.error);
}

function send(res: ServerResponse, status: number, type: string, body: string | Uint8Array, csp = PAGE_CSP): void {
  res.writeHead(status, {
    'content-type': type.startsWith('image/') ? type : `${type}; charset=utf-8`,
    'content-security-policy': csp,
    'x-content-type-options': 'nosniff',
    // not no-referrer: with it browsers send "Origin: null" on POSTs, and checkPost() needs the origin
    'referrer-policy': 'same-origin',
    'cache-control': 'no-store',
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function redirect(res: ServerResponse, to: string): void {
  res.writeHead(303, { location: to, 'cache-control': 'no-store' });
  res.end();
}

async function readBody(req: IncomingMessage): Promise<string> {
  const declared = Number(req.headers['content-length']);
  if (declared > MAX_BODY_BYTES) throw new HttpError(413, `request body over ${MAX_BODY_BYTES} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `request body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJson(text: string): Record<string, unknown> {
  if (!text.trim()) return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new HttpError(400, 'body is not JSON');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new HttpError(400, 'body must be a JSON object');
  return v as Record<string, unknown>;
}
