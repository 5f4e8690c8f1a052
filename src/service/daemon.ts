/**
 * `hiercore-edge run`: capture -> scheduler -> inference worker -> MQTT, under systemd.
 *
 * The daemon wires the pieces and owns their lifecycle (created in start(), closed in reverse in
 * stop()); which frame goes next is the FrameScheduler's decision, wire formats are built in
 * publish/, liveness rules live in health.ts.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import type { Server } from 'node:http';
import { brokerConnection, commandPolicy, type DaemonConfig } from './config.ts';
import type { Logger } from './log.ts';
import { DaemonMetrics } from './metrics.ts';
import { SystemdNotifier } from './notify.ts';
import { NgArchive } from './archive.ts';
import { startEmbeddedBroker, type EmbeddedBroker } from './embedded-broker.ts';
import { FrameScheduler, type Job, type NoFrameReason, type Trigger, type TriggerMode } from './scheduler.ts';
import { assessHealth, watchdogOk, type HealthFacts } from './health.ts';
import { StationStats } from './station-stats.ts';
import { SparkplugBridge, type StationEvents } from './sparkplug-bridge.ts';
import { FolderSource } from '../capture/folder-source.ts';
import { GstSource } from '../capture/gst-source.ts';
import { maxPixelsFor } from '../capture/limits.ts';
import type { SourceConfig } from '../capture/pipelines.ts';
import type { Frame, FrameSource, SourceState } from '../capture/types.ts';
import { WorkerSupervisor } from '../inspect/worker-supervisor.ts';
import type { BundleSummary } from '../inspect/protocol.ts';
import { bundleStoreFor, NoSuchBundleError, type BundleStore, type VersionEntry } from '../bundle/bundle-store.ts';
import { CalibrationRun, incrementFrom, RecipeError, recipeFrom, type Recipe } from './calibration-run.ts';
import type { Increment } from '../calibrate/build-run.ts';
import { stationRecipe } from '../calibrate/recipe.ts';
import { DaemonStationControl } from './station-control-impl.ts';
import type { BundleVersion, CalibrationProgress, StartCalibration, StationMode, StationView } from '../web/station-control.ts';
import { MqttPublisher } from '../publish/mqtt-publisher.ts';
import type { CommandName } from '../publish/topics.ts';
import { CAMERA_SCHEMA, STATS_SCHEMA, noFramePayload, uncalibratedPayload, verdictPayload, type CameraPayload, type StatsPayload, type VerdictPayload } from '../publish/payloads.ts';

export const STATE_SCHEMA = 'hiercore-edge/state/1';
/** the latest frame for the web page is encoded at most this often */
const WEB_FRAME_MS = 1000;

/** frames held for inference at once (all mode, bound triggers): each is a whole frame in memory */
const READY_MAX = 8;
/** how long stop() spends finishing frames that were already bound to triggers */
const STOP_FINISH_MS = 5000;
/** the whole of stop(): under the CLI's 15 s backstop and the unit's TimeoutStopSec=20 */
const STOP_BUDGET_MS = 12_000;

/** Waits for `p` at most `ms` (never rejects: shutdown goes on whatever a step did). */
function within(p: Promise<unknown> | null | undefined, ms: number): Promise<void> {
  if (!p) return Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.then(
      () => {},
      () => {},
    ),
    new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, ms)))),
  ]).finally(() => clearTimeout(timer));
}

export class Daemon {
  readonly runId = randomUUID();
  readonly metrics = new DaemonMetrics();
  private readonly notifier: SystemdNotifier;
  private readonly stats = new StationStats();
  private readonly scheduler: FrameScheduler;
  private readonly bundles: BundleStore;
  private source: FrameSource | null = null;
  private worker: WorkerSupervisor | null = null;
  private mqtt: MqttPublisher | null = null;
  private broker: EmbeddedBroker | null = null;
  private httpServer: Server | null = null;
  private archive: NgArchive | null = null;
  private frameCounter = 0;
  private busy: Promise<void> | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  private ready = false;
  private camera: Omit<CameraPayload, 'schema' | 'reconnects'> = { state: 'starting', detail: '', since: new Date().toISOString() };
  private lastInspected = 0;
  private readonly startedAt = Date.now();
  private timers: NodeJS.Timeout[] = [];
  /** optional outputs beside the JSON topics (Sparkplug B), fed the station's events */
  private readonly extensions: StationEvents[] = [];
  /** what the local web page sees and does */
  readonly control: DaemonStationControl;
  private web: { close(): Promise<void> } | null = null;
  private webFrameAt = 0;
  private calRun: CalibrationRun | null = null;
  /** bundle activations one at a time (calibration, activate, rollback, reload) */
  private activation: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly cfg: DaemonConfig,
    private readonly log: Logger,
    private readonly describeConfig: () => string = () => '',
  ) {
    this.notifier = new SystemdNotifier((m) => log('warn', m));
    this.scheduler = new FrameScheduler(
      { mode: cfg.trigger.mode as TriggerMode, maxFps: cfg.trigger.max_fps, windowMs: cfg.trigger.window_ms, triggerQueueMax: cfg.trigger.queue_max, readyMax: READY_MAX },
      { noFrame: (t, why) => this.publishNoFrame(t, why), dropped: (what, detail) => this.onDropped(what, detail) },
    );
    // Without a bundle configured, calibrations file their versions under the state folder.
    this.bundles = bundleStoreFor(cfg);
    this.control = new DaemonStationControl({
      view: () => this.view(),
      calibration: () => this.calRun?.progress ?? null,
      startCalibration: (req) => this.startCalibration({ recipe: req.recipe }),
      stopCalibration: () => this.stopCalibration(),
      runsDir: () => this.runsDir(),
      bundles: () => this.bundleVersions(),
      activate: (v) => this.activateVersion(v),
      rollback: () => this.rollback(),
    });
  }

  private status(text: string): void {
    this.notifier.status(text);
    this.log('debug', `status: ${text}`);
  }

  /** Everything up, or a clear error before any frame is published. */
  async start(): Promise<void> {
    const bundle = this.checkPrerequisites();
    this.status('loading model and bundle');
    this.source = this.createSource();
    if (this.cfg.archive.dir) this.archive = new NgArchive(resolve(this.cfg.archive.dir), this.cfg.archive.quota_mb * 2 ** 20, { log: (level, m) => this.log(level, m) });
    if (this.cfg.metrics.port) this.httpServer = await this.metrics.serve(this.cfg.metrics.host, this.cfg.metrics.port, () => this.health());
    if (bundle) await this.startWorker(bundle);
    else
      this.log(
        'warn',
        `no bundle yet: starting uncalibrated (camera, MQTT and health up, nothing scored; triggers are answered UNCALIBRATED). Calibrate with cmd/calibrate or the web page; bundles go to ${this.bundles.folder}`,
      );
    this.abortIfStopping();
    this.status('connecting to MQTT');
    const broker = await this.startMqtt();
    this.publishState();
    this.abortIfStopping();
    await this.startWeb();
    this.abortIfStopping();
    if (this.cfg.sparkplug.enabled) await this.startSparkplug(broker);
    this.abortIfStopping();
    this.status('waiting for the camera');
    this.startSource();
    this.startTimers();
  }

  private abortIfStopping(): void {
    if (this.stopping) throw new Error('stopped during start-up');
  }

  /** The bundle to start with; null = none configured nor remembered: the station starts uncalibrated. */
  private checkPrerequisites(): string | null {
    const c = this.cfg;
    if (!c.backbone) throw new Error('no backbone configured: set "backbone" (or HCE_BACKBONE) to a directory made by "hiercore-edge model import"');
    if (!c.bundle) return this.bundles.active('') || null;
    if (!existsSync(c.bundle)) throw new Error(`bundle ${c.bundle} does not exist: run "hiercore-edge calibrate --images <good images> --out ${c.bundle}"`);
    const active = this.bundles.active(resolve(c.bundle));
    if (active !== resolve(c.bundle)) this.log('info', `bundle ${active}: the one last reloaded (remembered in ${c.state_dir}) instead of the configured ${c.bundle}`);
    return active;
  }

  private createSource(): FrameSource {
    const s = this.cfg.source;
    if (s.kind === 'folder' || s.kind === 'file') return new FolderSource({ path: s.path, fps: s.fps, loop: s.loop, maxPixels: maxPixelsFor(s) });
    return new GstSource(s as SourceConfig);
  }

  private async startWorker(bundle: string): Promise<void> {
    const c = this.cfg;
    this.worker = await WorkerSupervisor.start(
      {
        bundle,
        backbone: resolve(c.backbone),
        provider: c.runtime.provider as 'cpu',
        threads: c.runtime.threads,
        maxBundleBytes: c.bundle_max_mb * 2 ** 20,
        overrides: { reweight_neighbours: c.scoring.reweight_neighbours, heatmap_sigma: c.scoring.heatmap_sigma },
      },
      {
        heartbeatMs: c.watchdog.heartbeat_s * 1000,
        timeoutMs: c.watchdog.worker_timeout_s * 1000,
        reloadTimeoutMs: c.reload_timeout_s * 1000,
        log: this.log,
        restarted: () => {
          this.stats.workerRestarts++;
          this.metrics.workerRestarts.inc();
        },
      },
    );
    const b = this.worker.bundle;
    this.log('info', `bundle ${b.bundle_id}: ${b.clusters.map((k) => `${k.name} (${k.size} images, threshold ${k.threshold.toFixed(3)})`).join(', ')}`);
  }

  private async startSparkplug(broker: { url: string; protocol: 4 | 5 }): Promise<void> {
    const sp = await SparkplugBridge.start(this.cfg, broker, (name, body) => this.onCommand(name, body), this.log);
    this.extensions.push(sp);
    if (this.worker) this.emit((x) => x.bundle(this.worker!.bundle));
    this.log('info', `Sparkplug B edge node ${this.cfg.sparkplug.group_id}/${this.cfg.sparkplug.node_id || this.cfg.station} on ${broker.url}`);
  }

  /** An extension that throws must not take the station down. */
  private emit(fn: (x: StationEvents) => void): void {
    for (const x of this.extensions) {
      try {
        fn(x);
      } catch (e) {
        this.log('warn', `extension: ${(e as Error).message}`);
      }
    }
  }

  private async startMqtt(): Promise<{ url: string; protocol: 4 | 5 }> {
    const c = this.cfg;
    let url = c.mqtt.url;
    let protocol = c.mqtt.protocol_version as 4 | 5;
    if (!url) {
      this.broker = await startEmbeddedBroker(c.mqtt.embedded_port);
      url = this.broker.url;
      protocol = 4; // aedes speaks MQTT 3.1.1
      this.log('info', `no mqtt.url configured: embedded broker on ${url} (watch with: mosquitto_sub -h 127.0.0.1 -p ${url.split(':').pop()} -v -t '${c.mqtt.prefix}/#')`);
    }
    const m = c.mqtt;
    this.mqtt = new MqttPublisher(
      {
        ...brokerConnection(c, { url, protocol }, m.client_id),
        prefix: m.prefix,
        station: c.station,
        store_dir: resolve(m.store_dir),
        queue_max: m.queue_max,
        queue_max_bytes: m.queue_max_mb * 2 ** 20,
        queue_fsync: m.queue_fsync,
        max_packet_bytes: c.commands.max_bytes + 4096,
        commands: commandPolicy(c),
      },
      {
        log: this.log,
        trigger: (partId) => this.onTrigger(partId),
        command: (name, body) => this.onCommand(name, body),
        connection: (up) => this.metrics.mqttUp.set(up ? 1 : 0),
      },
    );
    // Does not wait for the broker: with it down at boot the line is inspected and verdicts queue.
    await this.mqtt.start();
    return { url, protocol };
  }

  private startSource(): void {
    const src = this.source!;
    this.log('info', `source ${src.description}; trigger mode ${this.cfg.trigger.mode}`);
    let reconnectsSeen = 0;
    src.start({
      frame: (f) => this.onFrame(f),
      canAccept: () => this.scheduler.canAccept(),
      state: (s, detail) => {
        if (src.reconnects > reconnectsSeen) {
          this.metrics.reconnects.inc(src.reconnects - reconnectsSeen);
          reconnectsSeen = src.reconnects;
        }
        this.onCameraState(s, detail);
      },
    });
  }

  private startTimers(): void {
    const c = this.cfg;
    const every = (ms: number, fn: () => void) => this.timers.push(setInterval(fn, ms));
    const wd = this.notifier.watchdogMs();
    if (wd) every(Math.max(500, wd / 3), () => this.maybeWatchdog());
    if (c.mqtt.stats_interval_s) every(c.mqtt.stats_interval_s * 1000, () => this.mqtt!.publishJson(this.mqtt!.topics.stats, this.statsPayload()));
    every(1000, () => this.updateGauges());
    every(100, () => this.scheduler.tick());
    for (const t of this.timers) t.unref();
  }

  private updateGauges(): void {
    const q = this.mqtt!.queue;
    this.metrics.mqttQueue.set(q.depth);
    this.metrics.mqttQueueDropped.set(q.dropped);
    this.metrics.mqttStoreOk.set(q.storeError ? 0 : 1);
    this.metrics.workerAlive.set(this.worker?.alive ? 1 : 0);
    this.emit((x) => x.tick(q.depth, this.stats.latencyPercentiles()));
  }

  topicsBase(): string {
    return this.mqtt!.topics.base;
  }
  brokerUrl(): string {
    return this.broker?.url ?? this.cfg.mqtt.url;
  }

  private markReady(): void {
    if (this.ready) return;
    this.ready = true;
    this.notifier.ready();
    this.status(this.worker ? `inspecting (${this.cfg.trigger.mode === 'mqtt' ? 'on PLC trigger' : 'free-run'})` : 'uncalibrated: waiting for a calibration');
    const broker = this.mqtt!.isConnected ? 'broker connected' : 'broker not connected yet (verdicts queue on disk until it is)';
    this.log('info', `ready: ${this.worker ? 'camera, model and bundle are up' : 'camera and model are up (no bundle: uncalibrated)'}, ${broker}; topics under ${this.mqtt!.topics.base}/`);
    this.publishState();
  }

  private facts(): HealthFacts {
    return {
      now: Date.now(),
      ready: this.ready,
      stopping: this.stopping,
      camera: this.camera.state,
      mqttConnected: this.mqtt?.isConnected === true,
      // Uncalibrated there is no worker to answer: nothing to restart the service for.
      workerAlive: this.worker ? this.worker.alive : !this.activating,
      storeError: this.mqtt?.queue.storeError ?? null,
      paused: this.scheduler.isPaused,
      mode: this.cfg.trigger.mode as TriggerMode,
      lastInspected: this.lastInspected,
      startedAt: this.startedAt,
      stallMs: this.cfg.watchdog.stall_s * 1000,
    };
  }

  private health() {
    const f = this.facts();
    const h = assessHealth(f);
    const detail = {
      reasons: h.reasons,
      ready: f.ready,
      camera: f.camera,
      mqtt: f.mqttConnected,
      worker: f.workerAlive,
      store_error: f.storeError,
      seconds_since_inspection: Number(((f.now - (f.lastInspected || f.startedAt)) / 1000).toFixed(1)),
      paused: f.paused,
    };
    return { ok: h.ok, detail };
  }

  private maybeWatchdog(): void {
    if (watchdogOk(this.facts())) this.notifier.watchdog();
  }

  private onCameraState(s: SourceState, detail: string): void {
    const changed = s !== this.camera.state;
    this.camera = { state: s, detail, since: changed ? new Date().toISOString() : this.camera.since };
    this.metrics.cameraUp.set(s === 'streaming' ? 1 : 0);
    this.scheduler.camera(s !== 'lost');
    this.log(s === 'lost' ? 'warn' : 'info', `camera ${s}: ${detail}`);
    this.mqtt?.publishJson(this.mqtt.topics.camera, this.cameraPayload(), true);
    this.emit((x) => x.camera(s));
    if (s === 'lost') this.status(`camera lost: ${detail}`);
  }

  private cameraPayload(): CameraPayload {
    return { schema: CAMERA_SCHEMA, ...this.camera, reconnects: this.source?.reconnects ?? 0 };
  }

  private onFrame(f: Omit<Frame, 'id'>): void {
    if (this.stopping) return;
    this.stats.framesIn++;
    this.metrics.framesIn.inc();
    // A frame proves the camera works again, even if the last file or buffer was bad.
    if (this.camera.state !== 'streaming') this.onCameraState('streaming', 'frames arriving');
    this.markReady();
    if (!this.worker) this.lastInspected = Date.now(); // uncalibrated: frames arriving is all the work there is
    if (this.calRun?.capturing) this.calRun.offer(f, false);
    if (this.cfg.web.port) this.encodeWebFrame(f);
    this.scheduler.offerFrame({ ...f, id: ++this.frameCounter });
    this.pump();
  }

  private encodeWebFrame(f: Omit<Frame, 'id'>): void {
    const now = Date.now();
    if (now - this.webFrameAt < WEB_FRAME_MS) return;
    this.webFrameAt = now;
    sharp(Buffer.from(f.data), { raw: { width: f.width, height: f.height, channels: 3 } })
      .jpeg({ quality: 75 })
      .toBuffer()
      .then(
        (b) => this.control.noteFrame(b),
        () => {},
      );
  }

  private onDropped(what: 'frame' | 'trigger', detail: string): void {
    if (what === 'frame') {
      this.stats.dropped++;
      this.metrics.framesDropped.inc();
      return;
    }
    this.stats.triggers.refused++;
    this.metrics.triggers.inc({ outcome: 'refused' });
    // A flood must not flood the journal too: first ten, then every thousandth.
    const n = this.stats.triggers.refused;
    if (n <= 10 || n % 1000 === 0) this.log('warn', `${detail} (${n} refused so far)`);
  }

  private onTrigger(partId: string | null): void {
    this.stats.triggers.received++;
    this.scheduler.trigger(partId);
    this.pump();
  }

  private pump(): void {
    if (this.busy || this.stopping) return;
    const job = this.scheduler.next();
    if (!job) {
      const wait = this.scheduler.retryAfterMs();
      if (wait > 0 && !this.retryTimer) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          this.pump();
        }, wait);
        this.retryTimer.unref();
      }
      return;
    }
    this.busy = this.process(job)
      .catch((e: Error) => this.log('error', `frame ${job.frame.id}: ${e.message}`))
      .finally(() => {
        this.busy = null;
        this.pump();
      });
  }

  private async process(job: Job): Promise<void> {
    const startedAt = Date.now();
    const c = this.cfg;
    if (job.trigger && this.calRun?.capturing) this.calRun.offer(job.frame, true);
    if (!this.worker) return this.uncalibrated(job);
    const snapshot = Boolean(job.snapshot);
    let r: Awaited<ReturnType<WorkerSupervisor['inspect']>>;
    try {
      r = await this.worker!.inspect(job.frame, { heatmap: c.mqtt.heatmap || !!this.archive || snapshot, image: snapshot ? 'always' : c.mqtt.ng_image || this.archive ? 'not-ok' : 'never' });
    } catch (e) {
      this.stats.errors++;
      this.metrics.errors.inc();
      this.log('error', `frame ${job.frame.id}: inference failed: ${(e as Error).message}`);
      if (job.trigger) this.publishNoFrame(job.trigger, 'inference failed');
      job.snapshot?.(null);
      return;
    }
    const payload = verdictPayload(this.verdictContext(), {
      frame: job.frame,
      partId: job.trigger?.partId ?? null,
      triggeredAt: job.trigger?.at,
      startedAt,
      finishedAt: Date.now(),
      result: r.result,
      inferenceMs: r.ms,
      heatmap: Boolean(r.heatmapJpeg && (c.mqtt.heatmap || snapshot)),
      image: Boolean(r.frameJpeg && (c.mqtt.ng_image || snapshot)),
    });
    const json = JSON.stringify(payload);
    const mq = this.mqtt!;
    mq.publishVerdict(json, payload.frame_id);
    if (payload.heatmap) mq.publishImage(mq.topics.heatmap, r.heatmapJpeg!, payload.frame_id);
    if (payload.image) mq.publishImage(mq.topics.image, r.frameJpeg!, payload.frame_id);
    if (r.result.verdict !== 'OK') this.archiveReject(job.frame.id, json, r);
    job.snapshot?.(payload);
    this.count(payload, Boolean(job.trigger));
    this.control.noteVerdict(payload, payload.heatmap ? r.heatmapJpeg : undefined, r.frameJpeg);
    if (r.result.verdict !== 'OK') this.logReject(payload);
  }

  /** No bundle yet: a trigger still gets its answer (UNCALIBRATED); free-run frames get none. */
  private uncalibrated(job: Job): void {
    job.snapshot?.(null);
    if (!job.trigger) return;
    const p = uncalibratedPayload({ runId: this.runId, station: this.cfg.station }, job.trigger, job.frame, Date.now());
    this.mqtt!.publishVerdict(JSON.stringify(p), p.frame_id);
    this.stats.verdict('UNCALIBRATED');
    this.metrics.triggers.inc({ outcome: 'uncalibrated' });
    this.metrics.verdicts.inc({ cluster: 'none', verdict: 'UNCALIBRATED' });
    this.control.noteVerdict(p);
    this.emit((x) => x.verdict(p, { ...this.stats.verdicts }, this.stats.latencyPercentiles()));
  }

  private bundleRef(): { id: string; created_at: string; version?: string } | null {
    const b = this.worker?.bundle;
    if (!b) return null;
    const version = this.bundles.versionOf(b.path);
    return { id: b.bundle_id, created_at: b.created_at, ...(version ? { version } : {}) };
  }

  private verdictContext() {
    return { runId: this.runId, station: this.cfg.station, bundle: this.bundleRef()! };
  }

  private archiveReject(frameId: number, json: string, r: { frameJpeg?: Uint8Array; heatmapJpeg?: Uint8Array }): void {
    if (!this.archive) return;
    try {
      this.archive.add(`${frameId}`, { 'verdict.json': json, ...(r.frameJpeg ? { 'frame.jpg': r.frameJpeg } : {}), ...(r.heatmapJpeg ? { 'heatmap.jpg': r.heatmapJpeg } : {}) });
    } catch (e) {
      this.stats.archiveErrors++;
      this.metrics.archiveErrors.inc();
      if (this.stats.archiveErrors <= 10 || this.stats.archiveErrors % 1000 === 0) this.log('warn', `archive: ${(e as Error).message} (${this.stats.archiveErrors} entries not archived so far)`);
    }
  }

  private count(p: VerdictPayload, triggered: boolean): void {
    this.lastInspected = Date.now();
    this.stats.verdict(p.verdict, p.latency_ms.capture_to_verdict);
    this.metrics.framesInspected.inc();
    this.metrics.verdicts.inc({ cluster: p.cluster ?? 'unknown', verdict: p.verdict });
    for (const r of p.regions ?? []) {
      const type = r.type ?? 'untyped';
      this.metrics.defectRegions.inc({ cluster: p.cluster ?? 'unknown', type });
      this.stats.defectRegions[type] = (this.stats.defectRegions[type] ?? 0) + 1;
    }
    if (triggered) this.metrics.triggers.inc({ outcome: 'inspected' });
    for (const [k, v] of Object.entries(p.latency_ms)) this.metrics.stage.observe({ stage: k }, v / 1000);
    this.emit((x) => x.verdict(p, { ...this.stats.verdicts }, this.stats.latencyPercentiles()));
  }

  private logReject(p: VerdictPayload): void {
    const fix = (v: number | null | undefined) => v?.toFixed(3) ?? 'non-finite';
    const where = p.cluster ?? `(nearest ${p.route?.nearest}, distance ${fix(p.route?.distance)} > ${fix(p.route?.limit)})`;
    this.log('info', `frame ${p.frame}${p.part_id ? ` part ${p.part_id}` : ''}: ${p.verdict} ${where} score ${p.score?.toFixed(3) ?? '-'}${p.reason ? ` (${p.reason})` : ''}`);
  }

  private publishNoFrame(t: Trigger, reason: NoFrameReason): void {
    const p = noFramePayload({ runId: this.runId, station: this.cfg.station, bundle: this.bundleRef() }, t, reason, Date.now());
    this.mqtt?.publishVerdict(JSON.stringify(p), p.frame_id);
    this.control.noteVerdict(p);
    this.stats.verdict('NO_FRAME');
    this.metrics.triggers.inc({ outcome: 'no_frame' });
    this.metrics.verdicts.inc({ cluster: 'none', verdict: 'NO_FRAME' });
    this.emit((x) => x.verdict(p, { ...this.stats.verdicts }, this.stats.latencyPercentiles()));
    const n = this.stats.triggers.no_frame;
    if (n <= 10 || n % 1000 === 0) this.log('warn', `trigger ${t.partId ?? '(no part id)'}: NO_FRAME (${reason})${n > 10 ? ` (${n} so far)` : ''}`);
  }

  statsPayload(): StatsPayload {
    const s = this.stats;
    const q = this.mqtt?.queue;
    return {
      schema: STATS_SCHEMA,
      station: this.cfg.station,
      run_id: this.runId,
      timestamp: new Date().toISOString(),
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      frames_in: s.framesIn,
      inspected: s.inspected,
      dropped: s.dropped,
      verdicts: { ...s.verdicts },
      triggers: { ...s.triggers, pending: this.scheduler.pendingTriggers },
      defect_regions: { ...s.defectRegions },
      inference_errors: s.errors,
      worker_restarts: s.workerRestarts,
      latency_ms: s.latencyPercentiles(),
      camera: { ...this.camera, reconnects: this.source?.reconnects ?? 0 },
      mqtt_queue: { depth: q?.depth ?? 0, dropped: q?.dropped ?? 0, store_error: q?.storeError ?? null },
      paused: this.scheduler.isPaused,
      bundle: this.worker?.bundle.bundle_id ?? null,
      state: this.calRun?.finished === false ? 'calibrating' : this.mode(),
      archive: this.archive ? { entries: this.archive.count, mb: Number((this.archive.bytes / 2 ** 20).toFixed(1)), errors: s.archiveErrors } : null,
    };
  }

  private async onCommand(name: CommandName, body: Record<string, unknown>): Promise<unknown> {
    switch (name) {
      case 'pause':
        this.scheduler.pause();
        this.emit((x) => x.paused(true));
        this.log('info', 'paused by command');
        this.publishState();
        return { paused: true };
      case 'resume':
        this.scheduler.resume();
        this.emit((x) => x.paused(false));
        this.log('info', 'resumed by command');
        this.publishState();
        return { paused: false };
      case 'get_stats':
        return this.statsPayload();
      case 'get_config':
        return JSON.parse(this.describeConfig() || '{}');
      case 'snapshot':
        return this.snapshot();
      case 'reload':
        return this.reload(typeof body.bundle === 'string' ? body.bundle : '');
      case 'activate':
        return this.activateVersion(String(body.version));
      case 'rollback':
        return this.rollback();
      case 'get_bundles':
        return this.bundleVersions();
      case 'calibrate':
        if (body.stop === true) {
          await this.stopCalibration();
          return this.calRun?.progress ?? null;
        }
        return this.startCalibration({ recipe: body.recipe as Record<string, unknown> | undefined, increment: incrementFrom(body) });
    }
  }

  private snapshot(): Promise<VerdictPayload> {
    if (!this.worker) return Promise.reject(new Error('the station has no bundle yet (uncalibrated): calibrate first (cmd/calibrate)'));
    const timeout = Math.max(1000, this.cfg.source.frame_timeout_ms * 2);
    return new Promise((resolveSnap, reject) => {
      const done = (v: VerdictPayload | null) => {
        clearTimeout(timer);
        if (v) resolveSnap(v);
        else reject(new Error(this.stopping ? 'the station is stopping' : 'inference of the snapshot frame failed (see the log)'));
      };
      const timer = setTimeout(() => {
        this.scheduler.cancelSnapshot(done);
        reject(new Error(`no snapshot within ${timeout} ms (camera ${this.camera.state}, ${this.scheduler.waiting} frame(s) waiting for inference)`));
      }, timeout);
      timer.unref();
      if (!this.scheduler.requestSnapshot(done)) {
        clearTimeout(timer);
        reject(new Error(`too many snapshots waiting (${this.cfg.trigger.queue_max}, trigger.queue_max): try again`));
        return;
      }
      this.pump();
    });
  }

  /** By name from the bundle folder (never an arbitrary path); "" reloads the active bundle file. */
  private async reload(name: string): Promise<BundleSummary> {
    if (!name && !this.worker) throw new Error('the station has no bundle yet (uncalibrated): name one of the bundle folder, or calibrate');
    const path = name ? this.bundles.resolve(name) : this.worker!.bundle.path;
    return this.activatePath(path, 'reloaded');
  }

  private get activating(): boolean {
    return this.activationsPending > 0;
  }
  private activationsPending = 0;

  /**
   * Makes `path` the live bundle, one activation at a time: the worker finishes the frame in hand,
   * swaps the bundle, then takes the next frame (the first bundle of an uncalibrated station starts
   * the worker). Remembered for the next start; old versions beyond calibration.keep_versions go.
   */
  private activatePath(path: string, verb = 'activated'): Promise<BundleSummary> {
    this.activationsPending++;
    const next = this.activation.then(async () => {
      let b: BundleSummary;
      const replaced = this.worker?.bundle.path ?? '';
      if (this.worker) b = await this.worker.reload(path);
      else {
        await this.startWorker(path);
        b = this.worker!.bundle;
        this.status(`inspecting (${this.cfg.trigger.mode === 'mqtt' ? 'on PLC trigger' : 'free-run'})`);
      }
      try {
        this.bundles.remember(path, this.cfg.bundle, replaced);
      } catch (e) {
        this.log('warn', `bundle ${path} is active, but could not be remembered for the next start: ${(e as Error).message}`);
      }
      const gone = this.bundles.prune(this.cfg.calibration.keep_versions, path);
      if (gone.length) this.log('info', `bundle versions removed (calibration.keep_versions ${this.cfg.calibration.keep_versions}): ${gone.join(', ')}`);
      this.emit((x) => x.bundle(b));
      this.log('info', `bundle ${verb}: ${b.bundle_id} from ${path} (${b.clusters.length} clusters)`);
      this.publishState();
      return b;
    });
    this.activation = next.catch(() => {}).finally(() => this.activationsPending--);
    return next;
  }

  private versionView(v: VersionEntry): BundleVersion {
    return { version: v.version, bundle_id: v.bundle_id, created_at: v.created_at, clusters: v.clusters, active: v.active, validated: v.validated, report: v.report };
  }

  private bundleVersions(): BundleVersion[] {
    return this.bundles.versions(this.worker?.bundle.path ?? null).map((v) => this.versionView(v));
  }

  private async activateVersion(version: string): Promise<BundleVersion> {
    await this.activatePath(this.bundles.versionPath(version));
    return this.bundleVersions().find((v) => v.version === version)!;
  }

  /** Back to the bundle that was active before this one. */
  private async rollback(): Promise<BundleVersion> {
    const prev = this.bundles.previous();
    if (!prev) throw new NoSuchBundleError('rollback: no previous bundle to go back to (none was active before this one, or it has been deleted)');
    await this.activatePath(prev, 'rolled back');
    const v = this.bundles.versionOf(prev);
    const b = this.worker!.bundle;
    return (
      this.bundleVersions().find((x) => x.version === v) ?? {
        version: v ?? prev,
        bundle_id: b.bundle_id,
        created_at: b.created_at,
        clusters: b.clusters.length,
        active: true,
        validated: null,
        report: null,
      }
    );
  }

  private runsDir(): string {
    return join(resolve(this.cfg.state_dir), 'calibration', 'runs');
  }

  private defaultRecipe(): Recipe {
    const k = this.cfg.calibration;
    return stationRecipe({ images: k.images, policy: k.policy as Recipe['capture']['policy'], interval_s: k.interval_s, holdout: k.holdout, max_frr: k.max_frr });
  }

  /** cmd/calibrate and the web page: one run at a time, inspection goes on with the active bundle. */
  private async startCalibration(req: StartCalibration): Promise<CalibrationProgress> {
    if (this.stopping) throw new Error('the station is stopping');
    const cur = this.calRun;
    if (cur && !cur.finished) throw new Error(`calibration run ${cur.runId} is under way (${cur.progress.stage}): one at a time; cancel it with cmd/calibrate {"stop": true}`);
    const recipe = recipeFrom(this.defaultRecipe(), req.recipe);
    if (recipe.capture.policy === 'trigger' && this.cfg.trigger.mode !== 'mqtt') throw new RecipeError('calibrate: policy "trigger" needs trigger.mode "mqtt" (no PLC triggers arrive otherwise)');
    const k = this.cfg.calibration;
    if (req.increment) this.incrementBase(req.increment); // refused now, not after the capture
    const run = new CalibrationRun(
      this.runsDir(),
      {
        recipe,
        threads: k.threads,
        nice: k.nice,
        captureTimeoutMs: k.capture_timeout_s * 1000,
        engineConfig: k.engine_config ? resolve(k.engine_config) : '',
        backbone: resolve(this.cfg.backbone),
        station: this.cfg.station,
        ...(req.increment ? { increment: req.increment } : {}),
      },
      {
        progress: (p) => this.onCalibrationProgress(p),
        log: (level, m) => this.log(level, m),
        finish: (file, validated, r) => this.fileCalibratedBundle(file, validated, r),
        incrementBase: (inc) => this.incrementBase(inc),
      },
    );
    this.calRun = run;
    void run.done.finally(() => this.publishState());
    this.publishState();
    return { ...run.progress };
  }

  /** The active bundle an increment changes, checked before any frame is captured. */
  private incrementBase(inc: Increment): string {
    const b = this.worker?.bundle;
    if (!b) throw new RecipeError('calibrate: the station has no bundle yet; the first calibration covers every product (no add_product / add_images)');
    const names = b.clusters.map((c) => c.name);
    if (inc.kind === 'product' && names.includes(inc.name)) throw new RecipeError(`calibrate: the active bundle already has a cluster "${inc.name}": use add_images to extend it`);
    if (inc.kind === 'images' && !names.includes(inc.cluster)) throw new RecipeError(`calibrate: no cluster "${inc.cluster}" in the active bundle (${names.join(', ')})`);
    return b.path;
  }

  private async stopCalibration(): Promise<void> {
    const run = this.calRun;
    if (!run || run.finished) throw new Error('no calibration run is under way');
    await run.stop();
  }

  private async fileCalibratedBundle(file: string, validated: boolean, r: { runId: string; report: string; problem?: string }): Promise<{ version: string; activated: boolean }> {
    const version = this.bundles.addVersion(file, { validated, report: r.report, run_id: r.runId, ...(r.problem ? { problem: r.problem } : {}) });
    if (!validated) return { version, activated: false };
    await this.activatePath(this.bundles.versionPath(version), 'activated after calibration');
    return { version, activated: true };
  }

  private onCalibrationProgress(p: CalibrationProgress): void {
    this.mqtt?.publishJson(this.mqtt.topics.calibration, p, true);
    this.control.noteProgress(p);
  }

  private mode(): StationMode {
    if (this.stopping) return 'stopping';
    if (!this.ready) return 'starting';
    if (!this.worker) return 'uncalibrated';
    return this.scheduler.isPaused ? 'paused' : 'inspecting';
  }

  private view(): Omit<StationView, 'counts'> {
    const b = this.worker?.bundle;
    return {
      station: this.cfg.station,
      mode: this.mode(),
      camera: { state: this.camera.state, detail: this.camera.detail },
      bundle: b ? { id: b.bundle_id, version: this.bundles.versionOf(b.path) ?? b.path.split('/').pop()!, created_at: b.created_at, clusters: b.clusters.map((c) => c.name) } : null,
    };
  }

  /** Retained: a SCADA client that subscribes later still learns whether the station can judge parts. */
  private publishState(): void {
    const run = this.calRun;
    this.mqtt?.publishJson(
      this.mqtt.topics.state,
      {
        schema: STATE_SCHEMA,
        station: this.cfg.station,
        state: this.mode(),
        bundle: this.bundleRef(),
        calibration: run && !run.finished ? { run_id: run.runId, stage: run.progress.stage } : null,
        timestamp: new Date().toISOString(),
      },
      true,
    );
  }

  /** The local web page (src/web/server.ts) when web.port is set: created here, closed in stop(). */
  private async startWeb(): Promise<void> {
    const w = this.cfg.web;
    if (!w.port) return;
    type WebModule = {
      startWebServer?: (control: DaemonStationControl, o: { host: string; port: number; log: Logger; auth: { control: boolean; token: string } }) => Promise<{ close(): Promise<void> }>;
    };
    const mod = (await import(new URL('../web/server.ts', import.meta.url).href).catch((e: Error) => {
      this.log('warn', `web page not started: ${e.message}`);
      return null;
    })) as WebModule | null;
    if (!mod?.startWebServer) return void (mod && this.log('warn', 'web page not started: src/web/server.ts has no startWebServer()'));
    // the page's buttons follow the rule of state-changing MQTT commands
    this.web = await mod.startWebServer(this.control, { host: w.host, port: w.port, log: this.log, auth: { control: this.cfg.commands.control, token: this.cfg.commands.token } });
    this.log('info', `web page on http://${w.host}:${w.port}/`);
  }

  /** SIGTERM: stop capture, finish frames bound to triggers, answer the rest, flush verdicts, exit. */
  /**
   * SIGTERM: one deadline for the whole shutdown (STOP_BUDGET_MS, under the CLI's 15 s backstop and
   * the unit's TimeoutStopSec), so no step — a stuck frame, a silent broker — can eat the others' time.
   */
  async stop(reason: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const deadline = Date.now() + STOP_BUDGET_MS;
    const left = (reserve = 0) => Math.max(0, deadline - reserve - Date.now());
    this.notifier.stopping();
    this.log('info', `stopping (${reason})`);
    for (const t of this.timers) clearInterval(t);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    // A calibration cannot finish without the camera: cancel it (its run folder and log are kept).
    if (this.calRun && !this.calRun.finished) await within(this.calRun.stop(), 1000);
    await within(this.web?.close(), 1000);
    await within(this.source?.stop(), 2000);
    await within(this.busy, 3000);
    await this.finishBound(this.scheduler.stop(), Math.min(STOP_FINISH_MS, left(6000)));
    for (const x of this.extensions)
      await within(
        x.stop().catch((e: Error) => this.log('warn', `extension stop: ${e.message}`)),
        2000,
      );
    await this.closeMqtt(Math.max(1000, left(2500)));
    await within(this.worker?.close(), 2000);
    await within(this.broker?.close(), 500);
    await within(new Promise<void>((r) => (this.httpServer ? this.httpServer.close(() => r()) : r())), 500);
    this.log('info', 'stopped');
  }

  private async finishBound(jobs: Job[], budgetMs: number): Promise<void> {
    const until = Date.now() + budgetMs;
    for (const job of jobs) {
      if (Date.now() < until && this.worker?.alive) await within(this.process(job), until - Date.now());
      else {
        if (job.trigger) this.publishNoFrame(job.trigger, 'stopping');
        job.snapshot?.(null);
      }
    }
  }

  private async closeMqtt(timeoutMs: number): Promise<void> {
    if (!this.mqtt) return;
    const left = await this.mqtt.stop(timeoutMs);
    if (left.onDisk) this.log('warn', `${left.onDisk} verdict(s) not yet acknowledged by the broker: kept on disk in ${this.cfg.mqtt.store_dir}, sent at the next start`);
    if (left.memoryOnly) this.log('error', `${left.memoryOnly} verdict(s) could not be written to ${this.cfg.mqtt.store_dir} (${this.mqtt.queue.storeError}) and were not acknowledged: they are lost`);
  }
}
