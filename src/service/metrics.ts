/** Prometheus metrics (own registry, no globals) and the /metrics + /healthz HTTP endpoint. */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class DaemonMetrics {
  readonly registry = new Registry();
  readonly framesIn = new Counter({ name: 'hce_frames_in_total', help: 'frames delivered by the source', registers: [this.registry] });
  readonly framesInspected = new Counter({ name: 'hce_frames_inspected_total', help: 'frames inspected', registers: [this.registry] });
  readonly framesDropped = new Counter({ name: 'hce_frames_dropped_total', help: 'frames replaced by a newer one before inference took them', registers: [this.registry] });
  readonly verdicts = new Counter({ name: 'hce_verdicts_total', help: 'verdicts by cluster and verdict', labelNames: ['cluster', 'verdict'], registers: [this.registry] });
  readonly stage = new Histogram({
    name: 'hce_stage_seconds',
    help: 'per-stage latency',
    labelNames: ['stage'],
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2],
    registers: [this.registry],
  });
  readonly reconnects = new Counter({ name: 'hce_camera_reconnects_total', help: 'camera reconnect attempts', registers: [this.registry] });
  readonly cameraUp = new Gauge({ name: 'hce_camera_up', help: '1 while frames arrive', registers: [this.registry] });
  readonly mqttUp = new Gauge({ name: 'hce_mqtt_connected', help: '1 while connected to the broker', registers: [this.registry] });
  readonly mqttQueue = new Gauge({ name: 'hce_mqtt_queue_depth', help: 'verdicts published but not yet acknowledged by the broker', registers: [this.registry] });
  readonly errors = new Counter({ name: 'hce_inference_errors_total', help: 'frames whose inference failed', registers: [this.registry] });
  readonly triggers = new Counter({ name: 'hce_triggers_total', help: 'PLC triggers by outcome (inspected, no_frame, refused)', labelNames: ['outcome'], registers: [this.registry] });
  readonly workerRestarts = new Counter({ name: 'hce_worker_restarts_total', help: 'inference worker restarts (stuck, crashed or a bundle load that timed out)', registers: [this.registry] });
  readonly workerAlive = new Gauge({ name: 'hce_worker_alive', help: '1 while the inference worker answers its heartbeat', registers: [this.registry] });
  readonly mqttQueueDropped = new Gauge({ name: 'hce_mqtt_queue_dropped', help: 'verdicts dropped (oldest first) because the queue bound was reached, since start', registers: [this.registry] });
  readonly mqttStoreOk = new Gauge({ name: 'hce_mqtt_store_ok', help: '0 while the on-disk verdict queue cannot be written (verdicts are then held in memory only)', registers: [this.registry] });
  readonly defectRegions = new Counter({
    name: 'hce_defect_regions_total',
    help: 'defect regions on NG parts by cluster and defect type ("untyped" without defect types in the bundle, "new" for none of them)',
    labelNames: ['cluster', 'type'],
    registers: [this.registry],
  });
  readonly archiveErrors = new Counter({ name: 'hce_archive_errors_total', help: 'NG archive entries that could not be written', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'hce_process_' });
  }

  /** Serves /metrics and /healthz (200 when `healthy()` says so, 503 with the reason otherwise). */
  serve(host: string, port: number, healthy: () => { ok: boolean; detail: Record<string, unknown> }): Promise<Server> {
    const server = createServer(async (req, res) => {
      if (req.url === '/metrics') {
        res.setHeader('Content-Type', this.registry.contentType);
        res.end(await this.registry.metrics());
      } else if (req.url === '/healthz') {
        const h = healthy();
        res.statusCode = h.ok ? 200 : 503;
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ ok: h.ok, ...h.detail }));
      } else {
        res.statusCode = 404;
        res.end('see /metrics and /healthz\n');
      }
    });
    return new Promise((resolve, reject) => {
      server.once('error', (e) => reject(new Error(`metrics server cannot listen on ${host}:${port}: ${e.message} (set metrics.port, 0 = off)`)));
      server.listen(port, host, () => resolve(server));
    });
  }
}
