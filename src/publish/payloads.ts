/**
 * The JSON payloads the station publishes (README "PLC / SCADA integration"), typed and built here so
 * the daemon hands over facts and never assembles wire formats itself. Fields are only ever added
 * within a schema version.
 */
import type { SourceState } from '../capture/types.ts';
import type { Verdictable } from '../inspect/protocol.ts';
import type { NoFrameReason } from '../service/scheduler.ts';
import type { Region } from '../explain/regions.ts';

export const VERDICT_SCHEMA = 'hiercore-edge/verdict/1';
export const STATS_SCHEMA = 'hiercore-edge/stats/1';
export const CAMERA_SCHEMA = 'hiercore-edge/camera/1';

/** UNCALIBRATED: a trigger answered while the station has no bundle yet (nothing was scored) */
export type Verdict = 'OK' | 'NG' | 'UNKNOWN' | 'NO_FRAME' | 'UNCALIBRATED';

export interface VerdictPayload {
  schema: typeof VERDICT_SCHEMA;
  /** unique across restarts: <run_id>/<frame>, or <run_id>/trigger-<n> for NO_FRAME */
  frame_id: string;
  /** null for NO_FRAME: no frame was inspected */
  frame: number | null;
  run_id: string;
  part_id: string | null;
  station: string;
  timestamp: string;
  captured_at: string | null;
  /** when the PLC trigger arrived (trigger mode only) */
  triggered_at?: string;
  verdict: Verdict;
  /** why a trigger got no frame (NO_FRAME), or "no bundle yet" (UNCALIBRATED) */
  /** ... or why an NG part has no score ("non-finite score": the backbone gave NaN/infinite features) */
  reason?: NoFrameReason | 'no bundle yet' | 'non-finite score';
  cluster: string | null;
  score: number | null;
  normalised_score: number | null;
  threshold: number | null;
  /** distance null when the frame's embedding was not finite (such a frame is UNKNOWN) */
  route: { nearest: string; distance: number | null; limit: number | null } | null;
  latency_ms: Record<string, number>;
  /** `version` when the bundle is a version of the bundle folder (e.g. v0007-20261203) */
  bundle: { id: string; created_at: string; version?: string } | null;
  heatmap: boolean;
  image: boolean;
  /** NG only: defect regions in frame pixels, largest first; `type` when the bundle has defect types */
  regions?: Region[];
  source_file?: string;
}

export interface CameraPayload {
  schema: typeof CAMERA_SCHEMA;
  state: SourceState;
  detail: string;
  since: string;
  reconnects: number;
}

export interface StatsPayload {
  schema: typeof STATS_SCHEMA;
  station: string;
  run_id: string;
  timestamp: string;
  uptime_s: number;
  frames_in: number;
  inspected: number;
  dropped: number;
  verdicts: Record<Verdict, number>;
  triggers: { received: number; refused: number; no_frame: number; pending: number };
  /** defect regions on NG parts per defect type since start ("untyped" without types in the bundle) */
  defect_regions: Record<string, number>;
  inference_errors: number;
  worker_restarts: number;
  latency_ms: { p50: number; p95: number; p99: number } | null;
  camera: Omit<CameraPayload, 'schema'>;
  mqtt_queue: { depth: number; dropped: number; store_error: string | null };
  paused: boolean;
  bundle: string | null;
  /** uncalibrated (no bundle yet), inspecting, paused; calibrating while a calibration run is under way */
  state?: string;
  archive: { entries: number; mb: number; errors: number } | null;
}

/** What the daemon knows about one station, run and bundle, shared by every verdict. */
export interface VerdictContext {
  runId: string;
  station: string;
  bundle: { id: string; created_at: string; version?: string };
}

export interface InspectedFrame {
  frame: { id: number; capturedAt: number; path?: string };
  partId: string | null;
  triggeredAt?: number;
  startedAt: number;
  finishedAt: number;
  result: Verdictable;
  inferenceMs: number;
  heatmap: boolean;
  image: boolean;
}

/** null for a missing or non-finite value: JSON has no NaN, and a PLC must not parse one. */
const round5 = (v: number | null) => (v === null || !Number.isFinite(v) ? null : Number(v.toFixed(5)));
const iso = (ms: number) => new Date(ms).toISOString();

function latencies(x: InspectedFrame): Record<string, number> {
  const t = x.result.timings_ms;
  const l: Record<string, number> = {
    queue: x.startedAt - x.frame.capturedAt,
    inference: x.inferenceMs,
    preprocess: t.preprocess,
    backbone: t.backbone,
    route: t.route,
    knn: t.knn,
    heatmap: t.heatmap,
    regions: t.regions,
    capture_to_verdict: x.finishedAt - x.frame.capturedAt,
  };
  if (x.triggeredAt !== undefined) l.trigger_to_verdict = x.finishedAt - x.triggeredAt;
  return Object.fromEntries(Object.entries(l).map(([k, v]) => [k, Number(v.toFixed(2))]));
}

export function verdictPayload(ctx: VerdictContext, x: InspectedFrame): VerdictPayload {
  const r = x.result;
  return {
    schema: VERDICT_SCHEMA,
    frame_id: `${ctx.runId}/${x.frame.id}`,
    frame: x.frame.id,
    run_id: ctx.runId,
    part_id: x.partId,
    station: ctx.station,
    timestamp: iso(x.finishedAt),
    captured_at: iso(x.frame.capturedAt),
    ...(x.triggeredAt !== undefined ? { triggered_at: iso(x.triggeredAt) } : {}),
    verdict: r.verdict,
    ...(r.fault ? { reason: r.fault } : {}),
    cluster: r.cluster,
    score: round5(r.score),
    normalised_score: round5(r.normalised_score),
    threshold: round5(r.threshold),
    route: { nearest: r.route.nearest, distance: round5(r.route.distance), limit: round5(r.route.limit) },
    latency_ms: latencies(x),
    bundle: ctx.bundle,
    heatmap: x.heatmap,
    image: x.image,
    ...(r.regions ? { regions: r.regions } : {}),
    ...(x.frame.path ? { source_file: x.frame.path } : {}),
  };
}

/** The explicit answer to a trigger that got no frame: the PLC is never left waiting. */
export function noFramePayload(
  ctx: Omit<VerdictContext, 'bundle'> & { bundle: VerdictContext['bundle'] | null },
  t: { partId: string | null; at: number; seq: number },
  reason: NoFrameReason,
  now: number,
): VerdictPayload {
  return {
    schema: VERDICT_SCHEMA,
    frame_id: `${ctx.runId}/trigger-${t.seq}`,
    frame: null,
    run_id: ctx.runId,
    part_id: t.partId,
    station: ctx.station,
    timestamp: iso(now),
    captured_at: null,
    triggered_at: iso(t.at),
    verdict: 'NO_FRAME',
    reason,
    cluster: null,
    score: null,
    normalised_score: null,
    threshold: null,
    route: null,
    latency_ms: { trigger_to_verdict: now - t.at },
    bundle: ctx.bundle,
    heatmap: false,
    image: false,
  };
}

/** The answer to a trigger while the station has no bundle: the PLC still gets a verdict, never a score. */
export function uncalibratedPayload(ctx: Omit<VerdictContext, 'bundle'>, t: { partId: string | null; at: number }, frame: { id: number; capturedAt: number }, now: number): VerdictPayload {
  return {
    schema: VERDICT_SCHEMA,
    frame_id: `${ctx.runId}/${frame.id}`,
    frame: frame.id,
    run_id: ctx.runId,
    part_id: t.partId,
    station: ctx.station,
    timestamp: iso(now),
    captured_at: iso(frame.capturedAt),
    triggered_at: iso(t.at),
    verdict: 'UNCALIBRATED',
    reason: 'no bundle yet',
    cluster: null,
    score: null,
    normalised_score: null,
    threshold: null,
    route: null,
    latency_ms: { trigger_to_verdict: now - t.at },
    bundle: null,
    heatmap: false,
    image: false,
  };
}
