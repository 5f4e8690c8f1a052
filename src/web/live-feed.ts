/**
 * Server-Sent Events to the open pages. Verdicts can come at camera rate, so events are coalesced:
 * at most one update per FLUSH_MS carrying re-rendered sections, rendered once for all pages. The
 * number of pages and what each may have queued are bounded, so a stuck or greedy client costs the
 * station nothing but its own connection.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { StationControl } from './station-control.ts';
import { FEED_ROWS, type Sections, sections } from './pages.ts';

const FLUSH_MS = 300;
/** a page gets the station status (mode, camera) at least this often, and the stream stays warm */
const KEEPALIVE_MS = 5000;
/** a client this far behind is cut off (it reconnects and starts fresh) */
const MAX_QUEUED_BYTES = 1 << 20;

export class LiveFeed {
  private readonly clients = new Set<ServerResponse>();
  private readonly unsubscribe: () => void;
  private readonly timer: NodeJS.Timeout;
  private dirty = new Set<keyof Sections>();
  private lastSent = 0;
  private lastVersion: string | null | undefined;
  readonly seq = { heatmap: 0, frame: 0 };
  private lastImages: { heatmap: Uint8Array | null; frame: Uint8Array | null } = { heatmap: null, frame: null };

  constructor(
    private readonly control: StationControl,
    private readonly maxClients = 16,
  ) {
    this.unsubscribe = control.onEvent((e) => {
      if (e.kind === 'verdict') for (const k of ['status', 'live', 'counts', 'feed'] as const) this.dirty.add(k);
      else {
        this.dirty.add('calibration');
        // a run that ends has written (and maybe activated) a bundle version
        if (['done', 'failed', 'stopped', 'activate'].includes(e.progress.stage)) this.dirty.add('bundles');
      }
    });
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
    this.noteImages();
  }

  get size(): number {
    return this.clients.size;
  }

  /** false: too many pages are open; the caller answers 503 */
  add(req: IncomingMessage, res: ServerResponse): boolean {
    if (this.clients.size >= this.maxClients) return false;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
    res.write('retry: 2000\n\n');
    this.clients.add(res);
    const drop = () => this.clients.delete(res);
    req.on('close', drop);
    res.on('error', drop);
    return true;
  }

  /** After an action of the page: everything it may have changed goes out now. */
  refresh(): void {
    for (const k of ['status', 'calibration', 'bundles'] as const) this.dirty.add(k);
    this.flush();
  }

  private noteImages(): boolean {
    const h = this.control.latestHeatmap();
    const f = this.control.latestFrame();
    const newHeatmap = h !== null && h !== this.lastImages.heatmap;
    const newFrame = f !== null && f !== this.lastImages.frame;
    if (newHeatmap) this.seq.heatmap++;
    if (newFrame) this.seq.frame++;
    this.lastImages = { heatmap: h, frame: f };
    return newHeatmap || newFrame;
  }

  private flush(): void {
    const now = Date.now();
    const images = this.noteImages();
    if (!this.clients.size) return void this.dirty.clear();
    // activated by MQTT, or by a calibration: the page shows it without being told
    const version = this.control.view().bundle?.version ?? null;
    if (version !== this.lastVersion) {
      this.lastVersion = version;
      this.dirty.add('status').add('bundles');
    }
    if (!this.dirty.size && !images && now - this.lastSent < KEEPALIVE_MS) return;
    if (!this.dirty.size && !images) this.dirty.add('status');
    const all = sections({
      view: this.control.view(),
      verdicts: this.dirty.has('live') || this.dirty.has('feed') ? this.control.recentVerdicts(FEED_ROWS) : [],
      calibration: this.control.calibration(),
      bundles: this.dirty.has('bundles') ? this.control.bundles() : [],
    });
    const out: Partial<Record<keyof Sections, string>> = {};
    for (const k of this.dirty) out[k] = all[k].text;
    this.dirty = new Set();
    this.lastSent = now;
    const frame = `event: update\ndata: ${JSON.stringify({ sections: out, ...this.seq })}\n\n`;
    for (const res of this.clients) {
      if (res.writableLength > MAX_QUEUED_BYTES) {
        this.clients.delete(res);
        res.destroy();
      } else res.write(frame);
    }
  }

  close(): void {
    this.unsubscribe();
    clearInterval(this.timer);
    for (const res of this.clients) res.end();
    this.clients.clear();
  }
}
