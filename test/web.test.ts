/**
 * The local web page (README "Local web page"): the server against a fake station (authorisation,
 * CSRF, escaping, hostile requests), then Debian's Chromium (playwright-core, no browser download)
 * against a real daemon with a folder camera: verdicts and heatmap live, a calibration started and
 * watched from the page, rollback and activate. HCE_WEB_SCREENSHOTS=<dir> saves screenshots there.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { startWebServer, MAX_BODY_BYTES, type WebServer } from '../src/web/server.ts';
import type { WebAuth } from '../src/web/auth.ts';
import type { BundleVersion, CalibrationProgress, StationControl, StationView } from '../src/web/station-control.ts';
import type { VerdictPayload } from '../src/publish/payloads.ts';
import { loadDaemonConfig } from '../src/service/config.ts';
import { Daemon } from '../src/service/daemon.ts';
import { tempDir, writePartStream, writeSyntheticBundle, writeSyntheticEngineConfig } from './helpers/synthetic.ts';
import { freePort } from './helpers/services.ts';

const CHROMIUM = '/usr/bin/chromium';
const HOSTILE = '<img src=x onerror="alert(1)">&\'`';

type Event = Parameters<Parameters<StationControl['onEvent']>[0]>[0];

class FakeStation implements StationControl {
  readonly calls: string[] = [];
  private readonly listeners = new Set<(e: Event) => void>();
  verdicts: VerdictPayload[] = [];
  heatmap: Uint8Array | null = null;
  versions: BundleVersion[] = [
    { version: 'v0001-20261201', bundle_id: 'a', created_at: '2026-12-01T00:00:00Z', clusters: 2, active: true, validated: true, report: '/x/runs/20261201T000000Z-abcd/report.html' },
    { version: 'v0002-20261202', bundle_id: 'b', created_at: '2026-12-02T00:00:00Z', clusters: 2, active: false, validated: true, report: null },
  ];
  view(): StationView {
    const active = this.versions.find((v) => v.active)!;
    return {
      station: 'line-1',
      mode: 'inspecting',
      camera: { state: 'streaming', detail: '' },
      bundle: { id: active.bundle_id!, version: active.version, created_at: active.created_at!, clusters: [HOSTILE, 'cluster-1'] },
      counts: { verdicts: { OK: 3, NG: 1 }, clusters: { [HOSTILE]: 4 } },
    };
  }
  recentVerdicts(limit: number): VerdictPayload[] {
    return this.verdicts.slice(0, limit);
  }
  latestHeatmap(): Uint8Array | null {
    return this.heatmap;
  }
  latestFrame(): Uint8Array | null {
    return null;
  }
  onEvent(fn: (e: Event) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  emitVerdict(v: VerdictPayload): void {
    this.verdicts.unshift(v);
    for (const fn of this.listeners) fn({ kind: 'verdict', verdict: v });
  }
  calibration(): CalibrationProgress | null {
    return null;
  }
  async startCalibration(): Promise<CalibrationProgress> {
    this.calls.push('start');
    return { run_id: '20261203T000000Z-0001', stage: 'capture', detail: '', done: 0, total: 10, eta_s: null, started_at: '' };
  }
  async stopCalibration(): Promise<void> {
    this.calls.push('stop');
  }
  async report(runId: string): Promise<string | null> {
    this.calls.push(`report ${runId}`);
    return runId === '20261201T000000Z-abcd' ? '<html><body>PASSED</body></html>' : null;
  }
  bundles(): BundleVersion[] {
    return this.versions;
  }
  async activate(version: string): Promise<BundleVersion> {
    this.calls.push(`activate ${version}`);
    const v = this.versions.find((x) => x.version === version);
    if (!v) throw new Error(`no bundle version ${version}`);
    for (const x of this.versions) x.active = x === v;
    return v;
  }
  async rollback(): Promise<BundleVersion> {
    this.calls.push('rollback');
    return this.versions[0];
  }
}

function verdict(cluster: string, part: string): VerdictPayload {
  return {
    schema: 'hiercore-edge/verdict/1',
    frame_id: 'r/1',
    frame: 1,
    run_id: 'r',
    part_id: part,
    station: 'line-1',
    timestamp: new Date().toISOString(),
    captured_at: null,
    verdict: 'NG',
    cluster,
    score: 2,
    normalised_score: 1.5,
    threshold: 1,
    route: null,
    latency_ms: {},
    bundle: { id: 'a', created_at: '', version: 'v0001-20261201' },
    heatmap: false,
    image: false,
  };
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** node:http rather than fetch: the tests set Origin and Host as a hostile client would. */
function http(base: string, path: string, o: { method?: string; headers?: Record<string, string>; body?: string | Buffer; chunked?: boolean } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), { method: o.method ?? 'GET', headers: o.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    if (o.chunked && o.body) {
      const b = Buffer.from(o.body);
      for (let i = 0; i < b.length; i += 4096) req.write(b.subarray(i, i + 4096));
      req.end();
    } else req.end(o.body);
  });
}

/** A page visit: the session cookie and CSRF token a browser would hold. */
async function visit(base: string): Promise<{ cookie: string; csrf: string; page: string }> {
  const r = await http(base, '/');
  const set = String(r.headers['set-cookie']);
  const csrf = /<meta name="csrf" content="([^"]+)"/.exec(r.body)![1];
  return { cookie: set.split(';')[0], csrf, page: r.body };
}

function post(base: string, path: string, s: { cookie?: string; csrf?: string; origin?: string; host?: string }, body = '{}'): Promise<Reply> {
  const u = new URL(base);
  const headers: Record<string, string> = { 'content-type': 'application/json', host: s.host ?? u.host };
  if (s.cookie) headers.cookie = s.cookie;
  if (s.csrf) headers['x-csrf-token'] = s.csrf;
  if (s.origin !== '') headers.origin = s.origin ?? `http://${u.host}`;
  return http(base, path, { method: 'POST', headers, body });
}

async function withServer(auth: WebAuth | undefined, fn: (base: string, station: FakeStation, log: string[]) => Promise<void>, o: { host?: string; maxLiveClients?: number } = {}): Promise<void> {
  const station = new FakeStation();
  const log: string[] = [];
  const web: WebServer = await startWebServer(station, { host: o.host ?? '127.0.0.1', port: 0, log: (l, m) => log.push(`${l} ${m}`), auth, maxLiveClients: o.maxLiveClients });
  try {
    await fn(`http://127.0.0.1:${web.port}`, station, log);
  } finally {
    await web.close();
  }
}

test('web: pages escape what the station reports, unknown paths and methods are refused', async () => {
  await withServer({ control: true, token: 't0ken' }, async (base, station) => {
    station.emitVerdict(verdict(HOSTILE, '<script>alert(2)</script>'));
    const r = await http(base, '/');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['set-cookie']), /^hce_session=[\w-]+; HttpOnly; SameSite=Strict; Path=\//);
    assert.match(String(r.headers['content-security-policy']), /script-src 'self'/);
    assert.ok(!r.body.includes('<img src=x') && !r.body.includes('<script>alert'), 'no hostile markup rendered');
    assert.ok(r.body.includes('&#60;img src=x onerror=&#34;alert(1)&#34;&#62;&#38;&#39;&#96;'), 'the cluster name shown as text');
    assert.ok(r.body.includes('&#60;script&#62;alert(2)&#60;/script&#62;'), 'the part id shown as text');
    assert.match(r.body, /href="\/report\/20261201T000000Z-abcd"/, 'report link of a bundle version');

    for (const p of ['/nope', '/report/..%2F..%2Fetc%2Fpasswd', '/report/../../etc/passwd', '/report/20261203T000000Z-ffff', '/api/rollback', '/heatmap.jpg', '/%00'])
      assert.equal((await http(base, p)).status, 404, p);
    assert.ok(!station.calls.some((c) => c.includes('..')), 'a traversal never reaches the station');
    const rep = await http(base, '/report/20261201T000000Z-abcd');
    assert.equal(rep.status, 200);
    assert.match(rep.body, /PASSED/);
    assert.match(String(rep.headers['content-security-policy']), /sandbox/);
    assert.equal((await http(base, '/', { method: 'PUT' })).status, 405);
    const s = await visit(base);
    assert.equal((await post(base, '/api/no-such-action', s)).status, 404);
    assert.equal((await post(base, '/api/constructor', s)).status, 404);

    station.heatmap = new Uint8Array([0xff, 0xd8, 0xff, 0xd9]);
    const img = await http(base, '/heatmap.jpg?n=3');
    assert.equal(img.status, 200);
    assert.equal(img.headers['content-type'], 'image/jpeg');
  });
});

test('web: state-changing actions need the login, the CSRF token and this page as Origin', async () => {
  await withServer({ control: true, token: 't0ken' }, async (base, station, log) => {
    const s = await visit(base);
    assert.equal((await post(base, '/api/rollback', {})).status, 403, 'no session');
    assert.equal((await post(base, '/api/rollback', { cookie: s.cookie })).status, 403, 'no CSRF token');
    assert.equal((await post(base, '/api/rollback', { cookie: s.cookie, csrf: 'x'.repeat(32) })).status, 403, 'wrong CSRF token');
    assert.equal((await post(base, '/api/rollback', { ...s, origin: 'http://evil.example' })).status, 403, 'foreign Origin');
    assert.equal((await post(base, '/api/rollback', { ...s, origin: '' })).status, 403, 'no Origin');
    const rebind = await post(base, '/api/rollback', { ...s, host: 'evil.example:80', origin: 'http://evil.example:80' });
    assert.equal(rebind.status, 403, 'DNS rebinding: a foreign Host on a loopback server');
    const anon = await post(base, '/api/rollback', s);
    assert.equal(anon.status, 401);
    assert.match(JSON.parse(anon.body).error, /log in first/);
    assert.deepEqual(station.calls, [], 'nothing reached the station');

    const login = (token: string, csrf = s.csrf, origin = `http://${new URL(base).host}`) =>
      http(base, '/login', { method: 'POST', headers: { cookie: s.cookie, origin, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf, token }).toString() });
    assert.equal((await login('t0ken', 'wrong')).status, 403, 'login CSRF');
    assert.equal((await login('t0ken', s.csrf, 'http://evil.example')).status, 403, 'login from another site');
    const bad = await login('guess');
    assert.equal(bad.status, 401);
    assert.match(bad.body, /wrong token/);
    const ok = await login('t0ken');
    assert.equal(ok.status, 303);
    const cookie = String(ok.headers['set-cookie']).split(';')[0];
    assert.notEqual(cookie, s.cookie, 'a new session id at login');
    const fresh = await visit(base).then(async () => (await http(base, '/', { headers: { cookie } })).body);
    const csrf = /<meta name="csrf" content="([^"]+)"/.exec(fresh)![1];
    assert.equal((await post(base, '/api/rollback', s)).status, 403, 'the session id from before the login is void');
    // a client opening sessions in a loop evicts anonymous ones, not the engineer's login
    for (let i = 0; i < 70; i++) await http(base, '/');
    assert.equal((await post(base, '/api/rollback', { cookie, csrf })).status, 200);
    const act = await post(base, '/api/activate', { cookie, csrf }, JSON.stringify({ version: 'v0002-20261202' }));
    assert.equal(act.status, 200, act.body);
    assert.match(JSON.parse(act.body).message, /v0002-20261202 is active/);
    const missing = await post(base, '/api/activate', { cookie, csrf }, JSON.stringify({ version: 'v0009-20261209' }));
    assert.equal(missing.status, 409);
    assert.match(JSON.parse(missing.body).error, /no bundle version/);
    assert.equal((await post(base, '/api/activate', { cookie, csrf }, JSON.stringify({ version: '../../etc/passwd' }))).status, 400);
    assert.equal((await post(base, '/api/start-calibration', { cookie, csrf }, JSON.stringify({ images: 'many' }))).status, 400);
    assert.equal((await post(base, '/api/start-calibration', { cookie, csrf }, '[1]')).status, 400);
    assert.equal((await post(base, '/api/start-calibration', { cookie, csrf }, '{"images":30}')).status, 200);
    assert.deepEqual(station.calls, ['rollback', 'activate v0002-20261202', 'activate v0009-20261209', 'start']);
    assert.ok(log.some((l) => l.includes('login with a wrong token')));

    // logging out ends the session
    const out = await http(base, '/logout', { method: 'POST', headers: { cookie, origin: `http://${new URL(base).host}`, 'content-type': 'application/x-www-form-urlencoded' }, body: `csrf=${csrf}` });
    assert.equal(out.status, 303);
    assert.equal((await post(base, '/api/rollback', { cookie, csrf })).status, 403);

    // guessing the token: a handful of tries a minute, then refused whatever is sent
    const again = await visit(base);
    const guess = (token: string) =>
      http(base, '/login', {
        method: 'POST',
        headers: { cookie: again.cookie, origin: `http://${new URL(base).host}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ csrf: again.csrf, token }).toString(),
      });
    for (let i = 0; i < 4; i++) assert.equal((await guess(`guess-${i}`)).status, 401);
    assert.equal((await guess('t0ken')).status, 429);
  });
});

test('web: commands.control false refuses every action with the reason; no token on loopback needs no login', async () => {
  await withServer({ control: false, token: '' }, async (base, station) => {
    const s = await visit(base);
    assert.match(s.page, /id="controls-refused">changing the station from this page is disabled here \(commands.control is false\)/);
    const r = await post(base, '/api/start-calibration', s);
    assert.equal(r.status, 403);
    assert.match(JSON.parse(r.body).error, /commands.control is false/);
    assert.deepEqual(station.calls, []);
  });
  await withServer(undefined, async (base) => {
    assert.equal((await post(base, '/api/rollback', await visit(base))).status, 403, 'no policy given: refused');
  });
  await withServer({ control: true, token: '' }, async (base, station) => {
    const s = await visit(base);
    assert.ok(!s.page.includes('controls-refused'));
    assert.equal((await post(base, '/api/stop-calibration', s)).status, 200);
    assert.deepEqual(station.calls, ['stop']);
  });
  await withServer(
    { control: true, token: '' },
    async (base, station) => {
      const s = await visit(base);
      assert.match(s.page, /set it to use the controls/);
      assert.equal((await post(base, '/api/stop-calibration', s)).status, 403, 'all interfaces without a token: controls refused');
      assert.deepEqual(station.calls, []);
    },
    { host: '0.0.0.0' },
  );
});

test('web: bodies are bounded and live pages are limited', async () => {
  await withServer(
    { control: true, token: '' },
    async (base, station) => {
      const s = await visit(base);
      const big = JSON.stringify({ version: 'x'.repeat(MAX_BODY_BYTES) });
      assert.equal((await post(base, '/api/activate', s, big)).status, 413, 'declared length');
      const u = new URL(base);
      const chunked = await http(base, '/api/activate', {
        method: 'POST',
        headers: { host: u.host, origin: `http://${u.host}`, cookie: s.cookie, 'x-csrf-token': s.csrf, 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
        body: big,
        chunked: true,
      }).catch((e: Error) => ({ status: 0, body: e.message }));
      assert.ok(chunked.status === 413 || chunked.status === 0, `chunked: ${chunked.status}`);
      assert.deepEqual(station.calls, []);

      const streams: { res: import('node:http').IncomingMessage; data: string[] }[] = [];
      const open = () =>
        new Promise<number>((resolve) => {
          request(new URL('/events', base), (res) => {
            const data: string[] = [];
            res.on('data', (c: Buffer) => data.push(c.toString()));
            streams.push({ res, data });
            resolve(res.statusCode!);
          }).end();
        });
      assert.equal(await open(), 200);
      assert.equal(await open(), 200);
      assert.equal(await open(), 503, 'the third live page is refused');
      station.emitVerdict(verdict(HOSTILE, 'p-7'));
      const got = async () => {
        for (let i = 0; i < 40 && !streams[0].data.join('').includes('p-7'); i++) await new Promise((r) => setTimeout(r, 50));
        return streams[0].data.join('');
      };
      const text = await got();
      assert.match(text, /event: update\ndata: \{/);
      const update = JSON.parse(
        text
          .split('\n')
          .find((l) => l.startsWith('data: {'))!
          .slice(6),
      );
      assert.ok(update.sections.feed.includes('p-7'));
      assert.ok(update.sections.counts.includes('&#60;img src=x'), 'escaped in live updates too');
      assert.ok(!JSON.stringify(update).includes('<img src=x'));
      for (const st of streams) st.res.destroy();
    },
    { maxLiveClients: 2 },
  );
});

const noBrowser = existsSync(CHROMIUM) ? false : `${CHROMIUM} not installed (deploy/setup.sh installs Debian's chromium)`;
if (noBrowser) console.log(`# skipping the browser test: ${noBrowser}`);

test('web: in Chromium against a real daemon: live verdicts and heatmap, a calibration from the page, rollback and activate', { skip: noBrowser, timeout: 120_000 }, async () => {
  const { chromium } = await import('playwright-core');
  const dir = tempDir('web');
  const { backbone, bundle } = await writeSyntheticBundle(dir);
  await writePartStream(join(dir, 'stream'), 30, 9000);
  const webPort = await freePort();
  const { config } = loadDaemonConfig({
    env: {},
    overrides: {
      station: 'web-line',
      backbone,
      bundle,
      state_dir: join(dir, 'state'),
      source: { kind: 'folder', path: join(dir, 'stream'), fps: 8, loop: true },
      trigger: { mode: 'all' },
      mqtt: { url: '', embedded_port: await freePort(), store_dir: join(dir, 'store'), stats_interval_s: 0, queue_fsync: false },
      commands: { control: true, token: 'line-token' },
      runtime: { threads: 1 },
      archive: { dir: '' },
      metrics: { port: 0 },
      web: { port: webPort, host: '127.0.0.1' },
      calibration: { engine_config: writeSyntheticEngineConfig(dir), images: 20, holdout: 0.2, max_frr: 0.2, threads: 1 },
    },
  });
  const lines: string[] = [];
  const daemon = new Daemon(config, (level, msg) => lines.push(`${level} ${msg}`));
  await daemon.start();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  const shots = process.env.HCE_WEB_SCREENSHOTS;
  if (shots) mkdirSync(shots, { recursive: true });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const base = `http://127.0.0.1:${webPort}`;
    await page.goto(base);
    await page.waitForFunction(() => document.getElementById('connection')?.textContent === 'live');
    // live: a verdict and the heatmap arrive without a reload
    await page.waitForFunction(() => ['OK', 'NG', 'UNKNOWN'].includes(document.getElementById('latest-verdict')?.textContent ?? ''), null, { timeout: 30_000 });
    await page.waitForFunction(() => (document.getElementById('heatmap') as HTMLImageElement).naturalWidth > 0, null, { timeout: 30_000 });
    assert.ok((await page.locator('#cluster-counts td').count()) >= 2, 'counts per cluster shown');
    const oldVersion = await page.textContent('#active-version');

    // not logged in: the station refuses and the page says why
    await page.click('#start-calibration');
    await page.waitForFunction(() => /log in first/.test(document.getElementById('message')?.textContent ?? ''));
    assert.equal(daemon.control.calibration(), null);
    await page.click('#login-link');
    await page.fill('#token', 'line-token');
    await Promise.all([page.waitForURL(`${base}/`), page.click('#login')]);

    // a run can be stopped from the page
    await page.fill('#cal-images', '2000');
    await page.click('#start-calibration');
    await page.waitForFunction(() => document.getElementById('cal-stage')?.textContent === 'capture');
    await page.click('#stop-calibration');
    await page.waitForFunction(() => document.getElementById('cal-stage')?.textContent === 'stopped');
    assert.equal(daemon.control.calibration()?.stage, 'stopped');

    await page.fill('#cal-images', '20');
    await page.click('#start-calibration');
    await page.waitForFunction(() => /calibration .* started/.test(document.getElementById('message')?.textContent ?? ''));
    // progress: the stage and done/total change while it runs
    const seen = new Set<string>();
    const until = Date.now() + 90_000;
    let stage = '';
    while (Date.now() < until) {
      stage = (await page.textContent('#cal-stage')) ?? '';
      if (['done', 'failed', 'stopped'].includes(stage)) break;
      const count = await page
        .locator('#cal-count')
        .textContent({ timeout: 100 })
        .catch(() => null);
      const eta = await page
        .locator('#cal-eta')
        .textContent({ timeout: 100 })
        .catch(() => null);
      if (shots && stage === 'capture' && count && !seen.size) await page.screenshot({ path: join(shots, 'page-progress.png'), fullPage: true });
      seen.add(`${stage} ${count ?? ''} ${eta ?? ''}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(stage, 'done', lines.slice(-10).join('\n'));
    assert.ok(seen.size >= 3, `progress updates seen on the page: ${[...seen].join(', ')}`);
    assert.ok(
      [...seen].some((x) => /^capture \d+ \/ 20 (about \d+ (min \d+ )?s left|estimating…)/.test(x)),
      `capture progress with its ETA shown (${[...seen]})`,
    );
    const p = daemon.control.calibration()!;
    const newVersion = p.result!.version!;
    assert.match((await page.textContent('#cal-result')) ?? '', new RegExp(`${newVersion} written, activated`));
    await page.waitForFunction((v) => document.getElementById('active-version')?.textContent === v, newVersion);
    assert.notEqual(newVersion, oldVersion);
    if (shots) await page.screenshot({ path: join(shots, 'page.png'), fullPage: true });

    // the run's report, from the link on the page
    const [report] = await Promise.all([page.context().waitForEvent('page'), page.click('#cal-report')]);
    await report.waitForLoadState();
    assert.match(await report.content(), /PASSED/);
    if (shots) await report.screenshot({ path: join(shots, 'report.png'), fullPage: true });
    await report.close();

    // roll back to the bundle the calibration replaced, then activate the new version again
    await page.click('#rollback');
    await page.waitForFunction((v) => document.getElementById('active-version')?.textContent === v, oldVersion);
    await page.click(`button[data-action="activate"][data-version="${newVersion}"]`);
    await page.waitForFunction((v) => document.getElementById('active-version')?.textContent === v, newVersion);
    assert.equal(daemon.control.view().bundle?.version, newVersion);
    assert.deepEqual(errors, [], 'no script errors on the page');
  } finally {
    await browser.close();
    await daemon.stop('test end');
  }
});
