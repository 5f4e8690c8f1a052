/**
 * `hiercore-edge run`: capture -> inference worker -> MQTT, under systemd.
 *
 * Frame policy: free-run keeps only the newest frame while inference is busy (older ones are counted
 * as dropped); trigger mode inspects the first frame that arrives after each PLC trigger and carries
 * its part id, and never drops a triggered frame.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Server } from 'node:http';
import type { DaemonConfig } from './config.ts';
import type { Logger } from './log.ts';
import { DaemonMetrics } from './metrics.ts';
import { SystemdNotifier } from './notify.ts';
import { NgArchive } from './archive.ts';
import { startEmbeddedBroker, type EmbeddedBroker } from './embedded-broker.ts';
import { FolderSource } from '../capture/folder-source.ts';
import { GstSource } from '../capture/gst-source.ts';
import type { SourceConfig } from '../capture/pipelines.ts';
import type { Frame, FrameSource, SourceState } from '../capture/types.ts';
import { InferenceWorker } from '../inspect/worker-client.ts';
import type { BundleSummary } from '../inspect/protocol.ts';
import { MqttPublisher } from '../publish/mqtt-publisher.ts';
import { CAMERA_SCHEMA, STATS_SCHEMA, VERDICT_SCHEMA, type CommandName, type VerdictPayload } from '../publish/topics.ts';
import { percentile } from '../eval/evaluate.ts';

/** frames waiting in "all" mode before a live camera's frames are dropped (replay sources wait) */
const ALL_MODE_QUEUE = 8;

interface Job {
  frame: Frame;
  partId: string | null;
  snapshot?: (v: VerdictPayload) => void;
}

export class Daemon {
  readonly runId = randomUUID();
  readonly metrics = new DaemonMetrics();
  private readonly notifier: SystemdNotifier;
  private source!: FrameSource;
  private worker!: InferenceWorker;
  private mqtt!: MqttPublisher;
  private broker: EmbeddedBroker | null = null;
  private httpServer: Server | null = null;
  private archive: NgArchive | null = null;
  private frameCounter = 0;
  private newest: Job | null = null;
  private readonly triggered: Job[] = [];
  private pendingTriggers: (string | null)[] = [];
  private snapshots: ((v: VerdictPayload) => void)[] = [];
  private busy: Promise<void> | null = null;
  private paused = false;
  private stopping = false;
  private ready = false;
  private camera: { state: SourceState; detail: string; since: string } = { state: 'starting', detail: '', since: new Date().toISOString() };
  private lastInspected = 0;
  private lastStart = 0;
  private readonly startedAt = Date.now();
  private readonly recentLatency: number[] = [];
  private readonly counts = { in: 0, inspected: 0, dropped: 0, OK: 0, NG: 0, UNKNOWN: 0, errors: 0 };
  private timers: NodeJS.Timeout[] = [];

  constructor(private readonly cfg: DaemonConfig, private readonly log: Logger, private readonly describeConfig: () => string = () => '') {
    this.notifier = new SystemdNotifier((m) => log('warn', m));
  }

  private status(text: string): void {
    this.notifier.status(text);
    this.log('debug', `status: ${text}`);
  }

  /** Everything up, or a clear error before any frame is published. */
  async start(): Promise<void> {
    const c = this.cfg;
    if (!c.backbone) throw new Error('no backbone configured: set "backbone" (or HCE_BACKBONE) to a directory made by "hiercore-edge model import"');
    if (!c.bundle) throw new Error('no bundle configured: set "bundle" (or HCE_BUNDLE) to a file made by "hiercore-edge calibrate"');
    if (!existsSync(c.bundle)) throw new Error(`bundle ${c.bundle} does not exist: run "hiercore-edge calibrate --images <good images> --out ${c.bundle}"`);
    this.status('loading model and bundle');
    this.source = c.source.kind === 'folder' || c.source.kind === 'file' ? new FolderSource({ path: c.source.path, fps: c.source.fps, loop: c.source.loop }) : new GstSource(c.source as SourceConfig);
    if (c.archive.dir) this.archive = new NgArchive(resolve(c.archive.dir), c.archive.quota_mb * 1024 * 1024);
    if (c.metrics.port) this.httpServer = await this.metrics.serve(c.metrics.host, c.metrics.port, () => this.health());

    this.worker = await InferenceWorker.start({ bundle: resolve(c.bundle), backbone: resolve(c.backbone), provider: c.runtime.provider as 'cpu', threads: c.runtime.threads, reweightNeighbours: c.scoring.reweight_neighbours ?? 0, sigma: c.scoring.heatmap_sigma ?? 4 });
    this.log('info', `bundle ${this.worker.bundle.bundle_id}: ${this.worker.bundle.clusters.map((k) => `${k.name} (${k.size} images, threshold ${k.threshold.toFixed(3)})`).join(', ')}`);

    this.status('connecting to MQTT');
    let url = c.mqtt.url;
    let protocol = c.mqtt.protocol_version as 4 | 5;
    if (!url) {
      this.broker = await startEmbeddedBroker(c.mqtt.embedded_port);
      url = this.broker.url;
      protocol = 4; // aedes speaks MQTT 3.1.1
      this.log('info', `no mqtt.url configured: embedded broker on ${url} (watch with: mosquitto_sub -h 127.0.0.1 -p ${url.split(':').pop()} -v -t '${c.mqtt.prefix}/#')`);
    }
    this.mqtt = new MqttPublisher(
      { url, prefix: c.mqtt.prefix, station: c.station, protocol_version: protocol, client_id: c.mqtt.client_id, username: c.mqtt.username, password: c.mqtt.password, ca: c.mqtt.ca, cert: c.mqtt.cert, key: c.mqtt.key, reject_unauthorized: c.mqtt.reject_unauthorized, store_dir: resolve(c.mqtt.store_dir), keepalive_s: c.mqtt.keepalive_s },
      {
        log: this.log,
        trigger: (partId) => this.onTrigger(partId),
        command: (name, body) => this.onCommand(name, body),
        connection: (up) => this.metrics.mqttUp.set(up ? 1 : 0),
      },
    );
    await this.mqtt.start();

    this.status('waiting for the camera');
    this.log('info', `source ${this.source.description}; trigger mode ${c.trigger.mode}`);
    let reconnectsSeen = 0;
    this.source.start({
      frame: (f) => this.onFrame(f),
      canAccept: () => this.cfg.trigger.mode !== 'all' || this.triggered.length < ALL_MODE_QUEUE,
      state: (s, detail) => {
        this.camera = { state: s, detail, since: new Date().toISOString() };
        this.metrics.cameraUp.set(s === 'streaming' ? 1 : 0);
        if (this.source.reconnects > reconnectsSeen) {
          this.metrics.reconnects.inc(this.source.reconnects - reconnectsSeen);
          reconnectsSeen = this.source.reconnects;
        }
        this.log(s === 'lost' ? 'warn' : 'info', `camera ${s}: ${detail}`);
        this.mqtt.publishJson(this.mqtt.topics.camera, { schema: CAMERA_SCHEMA, ...this.camera, reconnects: this.source.reconnects }, true);
        if (s === 'lost') this.status(`camera lost: ${detail}`);
      },
    });

    const wd = this.notifier.watchdogMs();
    if (wd) this.timers.push(setInterval(() => this.maybeWatchdog(), Math.max(500, wd / 3)));
    if (c.mqtt.stats_interval_s) this.timers.push(setInterval(() => this.mqtt.publishJson(this.mqtt.topics.stats, this.stats()), c.mqtt.stats_interval_s * 1000));
    this.timers.push(setInterval(() => this.metrics.mqttQueue.set(this.mqtt.queueDepth), 1000));
    for (const t of this.timers) t.unref();
  }

  topicsBase(): string {
    return this.mqtt.topics.base;
  }
  brokerUrl(): string {
    return this.broker?.url ?? this.cfg.mqtt.url;
  }

  private markReady(): void {
    if (this.ready) return;
    this.ready = true;
    this.notifier.ready();
    this.status(`inspecting (${this.cfg.trigger.mode === 'mqtt' ? 'on PLC trigger' : 'free-run'})`);
    this.log('info', `ready: camera, model, bundle and broker are up (topics under ${this.mqtt.topics.base}/)`);
  }

  private health() {
    const idleS = (Date.now() - (this.lastInspected || this.startedAt)) / 1000;
    const ok = this.ready && !this.stopping && this.camera.state !== 'lost' && this.mqtt?.isConnected === true;
    return { ok, detail: { ready: this.ready, camera: this.camera.state, mqtt: this.mqtt?.isConnected ?? false, seconds_since_inspection: Number(idleS.toFixed(1)), paused: this.paused } };
  }

  /** WATCHDOG=1 only while the line is really being inspected (or idle by design: trigger, pause, end of replay). */
  private maybeWatchdog(): void {
    if (!this.ready || this.stopping) return;
    const idleByDesign = this.cfg.trigger.mode === 'mqtt' || this.paused || this.camera.state === 'ended';
    const fresh = Date.now() - this.lastInspected < this.cfg.watchdog.stall_s * 1000;
    if ((fresh || idleByDesign) && this.camera.state !== 'lost') this.notifier.watchdog();
  }

  private onFrame(f: Omit<Frame, 'id'>): void {
    if (this.stopping) return;
    const frame: Frame = { ...f, id: ++this.frameCounter };
    this.counts.in++;
    this.metrics.framesIn.inc();
    if (!this.ready && this.mqtt.isConnected) this.markReady();
    if (this.snapshots.length) {
      const snap = this.snapshots.shift()!;
      this.triggered.push({ frame, partId: null, snapshot: snap });
    } else if (this.paused) {
      return;
    } else if (this.cfg.trigger.mode === 'all') {
      if (this.triggered.length >= ALL_MODE_QUEUE) {
        this.counts.dropped++;
        this.metrics.framesDropped.inc();
        return;
      }
      this.triggered.push({ frame, partId: null });
    } else if (this.cfg.trigger.mode === 'mqtt') {
      if (!this.pendingTriggers.length) return;
      this.triggered.push({ frame, partId: this.pendingTriggers.shift()! });
    } else {
      if (this.newest) {
        this.counts.dropped++;
        this.metrics.framesDropped.inc();
      }
      this.newest = { frame, partId: null };
    }
    this.pump();
  }

  private onTrigger(partId: string | null): void {
    if (this.cfg.trigger.mode !== 'mqtt') {
      this.log('warn', `trigger ${partId ?? '(no part id)'} ignored: trigger.mode is "free"`);
      return;
    }
    if (this.pendingTriggers.length >= 100) {
      this.log('warn', 'more than 100 triggers waiting for frames: is the camera running? dropping the oldest');
      this.pendingTriggers.shift();
    }
    this.pendingTriggers.push(partId);
  }

  private pump(): void {
    if (this.busy || this.stopping) return;
    const job = this.triggered.shift() ?? this.takeNewest();
    if (!job) return;
    this.busy = this.process(job).finally(() => {
      this.busy = null;
      this.pump();
    });
  }

  private takeNewest(): Job | null {
    if (!this.newest) return null;
    const max = this.cfg.trigger.max_fps;
    if (max > 0) {
      const wait = this.lastStart + 1000 / max - Date.now();
      if (wait > 0) {
        setTimeout(() => this.pump(), wait).unref();
        return null;
      }
    }
    const j = this.newest;
    this.newest = null;
    return j;
  }

  private async process(job: Job): Promise<void> {
    const { frame } = job;
    this.lastStart = Date.now();
    const c = this.cfg;
    let r;
    try {
      r = await this.worker.inspect(frame, { heatmap: c.mqtt.heatmap || !!this.archive || !!job.snapshot, image: job.snapshot ? 'always' : c.mqtt.ng_image || this.archive ? 'not-ok' : 'never' });
    } catch (e) {
      this.counts.errors++;
      this.metrics.errors.inc();
      this.log('error', `frame ${frame.id}: inference failed: ${(e as Error).message}`);
      return;
    }
    const res = r.result;
    const now = Date.now();
    const frameId = `${this.runId}/${frame.id}`;
    const t = res.timings_ms;
    const latency = { queue: this.lastStart - frame.capturedAt, inference: r.ms, preprocess: t.preprocess, backbone: t.backbone, route: t.route, knn: t.knn, heatmap: t.heatmap, capture_to_verdict: now - frame.capturedAt };
    const round = (v: number | null) => (v === null ? null : Number(v.toFixed(5)));
    const payload: VerdictPayload = {
      schema: VERDICT_SCHEMA,
      frame_id: frameId,
      frame: frame.id,
      run_id: this.runId,
      part_id: job.partId,
      station: c.station,
      timestamp: new Date(now).toISOString(),
      captured_at: new Date(frame.capturedAt).toISOString(),
      verdict: res.verdict,
      cluster: res.cluster,
      score: round(res.score),
      normalised_score: round(res.normalised_score),
      threshold: round(res.threshold),
      route: { nearest: res.route.nearest, distance: round(res.route.distance)!, limit: round(res.route.limit)! },
      latency_ms: Object.fromEntries(Object.entries(latency).map(([k, v]) => [k, Number(v.toFixed(2))])),
      bundle: { id: this.worker.bundle.bundle_id, created_at: this.worker.bundle.created_at },
      heatmap: Boolean(r.heatmapJpeg && (c.mqtt.heatmap || job.snapshot)),
      image: Boolean(r.frameJpeg && (c.mqtt.ng_image || job.snapshot)),
      ...(frame.path ? { source_file: frame.path } : {}),
    };
    const json = JSON.stringify(payload);
    void this.mqtt.publishVerdict(json, frameId);
    if (payload.heatmap) this.mqtt.publishImage(this.mqtt.topics.heatmap, r.heatmapJpeg!, frameId);
    if (payload.image) this.mqtt.publishImage(this.mqtt.topics.image, r.frameJpeg!, frameId);
    if (this.archive && res.verdict !== 'OK') {
      try {
        this.archive.add(`${frame.id}`, { 'verdict.json': json, ...(r.frameJpeg ? { 'frame.jpg': r.frameJpeg } : {}), ...(r.heatmapJpeg ? { 'heatmap.jpg': r.heatmapJpeg } : {}) });
      } catch (e) {
        this.log('warn', `archive: ${(e as Error).message}`);
      }
    }
    job.snapshot?.(payload);
    this.lastInspected = now;
    this.counts.inspected++;
    this.counts[res.verdict]++;
    this.metrics.framesInspected.inc();
    this.metrics.verdicts.inc({ cluster: res.cluster ?? 'unknown', verdict: res.verdict });
    for (const [k, v] of Object.entries(latency)) this.metrics.stage.observe({ stage: k }, v / 1000);
    this.recentLatency.push(latency.capture_to_verdict);
    if (this.recentLatency.length > 500) this.recentLatency.shift();
    if (res.verdict !== 'OK') this.log('info', `frame ${frame.id}${job.partId ? ` part ${job.partId}` : ''}: ${res.verdict} ${res.cluster ?? `(nearest ${res.route.nearest}, distance ${res.route.distance.toFixed(3)} > ${res.route.limit.toFixed(3)})`} score ${res.score?.toFixed(3) ?? '-'}`);
  }

  stats() {
    const sorted = [...this.recentLatency].sort((a, b) => a - b);
    const up = (Date.now() - this.startedAt) / 1000;
    return {
      schema: STATS_SCHEMA,
      station: this.cfg.station,
      run_id: this.runId,
      timestamp: new Date().toISOString(),
      uptime_s: Math.round(up),
      frames_in: this.counts.in,
      inspected: this.counts.inspected,
      dropped: this.counts.dropped,
      verdicts: { OK: this.counts.OK, NG: this.counts.NG, UNKNOWN: this.counts.UNKNOWN },
      inference_errors: this.counts.errors,
      latency_ms: sorted.length ? { p50: Number(percentile(sorted, 0.5).toFixed(1)), p95: Number(percentile(sorted, 0.95).toFixed(1)), p99: Number(percentile(sorted, 0.99).toFixed(1)) } : null,
      camera: { ...this.camera, reconnects: this.source?.reconnects ?? 0 },
      mqtt_queue_depth: this.mqtt?.queueDepth ?? 0,
      paused: this.paused,
      bundle: this.worker?.bundle.bundle_id ?? null,
      archive: this.archive ? { entries: this.archive.count, mb: Number((this.archive.bytes / 2 ** 20).toFixed(1)) } : null,
    };
  }

  private async onCommand(name: CommandName, body: Record<string, unknown>): Promise<unknown> {
    switch (name) {
      case 'pause':
        this.paused = true;
        this.newest = null;
        this.log('info', 'paused by command');
        return { paused: true };
      case 'resume':
        this.paused = false;
        this.log('info', 'resumed by command');
        return { paused: false };
      case 'get_stats':
        return this.stats();
      case 'get_config':
        return JSON.parse(this.describeConfig() || '{}');
      case 'snapshot': {
        const timeout = Math.max(1000, this.cfg.source.frame_timeout_ms * 2);
        return new Promise((resolveSnap, reject) => {
          const timer = setTimeout(() => {
            this.snapshots = this.snapshots.filter((s) => s !== done);
            reject(new Error(`no frame within ${timeout} ms: camera ${this.camera.state}`));
          }, timeout);
          const done = (v: VerdictPayload) => {
            clearTimeout(timer);
            resolveSnap(v);
          };
          this.snapshots.push(done);
        });
      }
      case 'reload': {
        const path = resolve(typeof body.bundle === 'string' && body.bundle ? body.bundle : this.cfg.bundle);
        if (!existsSync(path)) throw new Error(`bundle ${path} does not exist`);
        // The worker finishes the frame in hand, swaps the bundle, then takes the next frame.
        const b: BundleSummary = await this.worker.reload(path);
        this.log('info', `bundle reloaded: ${b.bundle_id} from ${path} (${b.clusters.length} clusters)`);
        return b;
      }
    }
  }

  /** SIGTERM: stop capture, finish the frame in flight, flush verdicts to the broker, exit. */
  async stop(reason: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.notifier.stopping();
    this.log('info', `stopping (${reason})`);
    for (const t of this.timers) clearInterval(t);
    await this.source?.stop();
    await this.busy;
    const left = this.mqtt ? await this.mqtt.stop() : 0;
    if (left) this.log('warn', `${left} verdict(s) not yet acknowledged: kept on disk in ${this.cfg.mqtt.store_dir}, sent at the next start`);
    await this.worker?.close();
    await this.broker?.close();
    await new Promise<void>((r) => (this.httpServer ? this.httpServer.close(() => r()) : r()));
    this.log('info', 'stopped');
  }
}
