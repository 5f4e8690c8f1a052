/**
 * MQTT topic layout and payload schemas (documented in README "PLC / SCADA integration").
 * Everything lives under <prefix>/<station>/. Payload schemas are versioned in their "schema" field;
 * a breaking change bumps the number, additions do not.
 */
import { codePoints, forLog, stripUnsafe } from './text.ts';

export { CAMERA_SCHEMA, STATS_SCHEMA, VERDICT_SCHEMA, type VerdictPayload } from './payloads.ts';
export const RESPONSE_SCHEMA = 'hiercore-edge/response/1';

export const COMMANDS = ['reload', 'snapshot', 'pause', 'resume', 'get_config', 'get_stats', 'activate', 'rollback', 'calibrate', 'get_bundles'] as const;
export type CommandName = (typeof COMMANDS)[number];

export function topics(prefix: string, station: string) {
  const base = `${prefix}/${station}`;
  return {
    base,
    /** retained "online" / "offline" (the last will) */
    status: `${base}/status`,
    /** retained camera state JSON */
    camera: `${base}/camera`,
    /** verdict JSON, QoS 1, one per inspected frame */
    verdict: `${base}/verdict`,
    /** JPEG anomaly overlay, correlated to its verdict */
    heatmap: `${base}/heatmap`,
    /** full JPEG frame of NG / UNKNOWN parts (optional) */
    image: `${base}/image`,
    /** periodic statistics JSON */
    stats: `${base}/stats`,
    /** retained station state JSON: uncalibrated / inspecting / paused, and the active bundle */
    state: `${base}/state`,
    /** retained progress of the current (or last) on-site calibration run */
    calibration: `${base}/calibration`,
    /** PLC trigger: inspect the next frame, payload = part id (plain text or {"part_id": ...}) */
    trigger: `${base}/trigger`,
    /** commands: <base>/cmd/<name>, responses on <base>/cmd/<name>/response */
    cmdWildcard: `${base}/cmd/+`,
    cmd: (name: string) => `${base}/cmd/${name}`,
    response: (name: string) => `${base}/cmd/${name}/response`,
  };
}

export type Topics = ReturnType<typeof topics>;

/** Longest part id kept; a longer one is refused, not cut: a cut id could name a different part. */
export const PART_ID_MAX = 64;
/** Default bound on trigger and command payloads (`commands.max_bytes`). */
export const DEFAULT_MAX_BYTES = 65536;

export type TriggerDecision = { kind: 'trigger'; partId: string | null; refused?: string } | { kind: 'ignore'; why: string };

/**
 * A trigger message: retained ones are replays (a PLC trigger from last week would inspect a part now)
 * and are ignored, as are oversized ones; otherwise a part is inspected, with the part id when it is
 * usable. An unusable id (too long, an object, empty after cleaning) still inspects the part, with no
 * id, so the PLC gets the verdict it is waiting for; `refused` says why the id was dropped.
 */
export function parseTriggerMessage(payload: Uint8Array | string, opts: { retain?: boolean; maxBytes?: number } = {}): TriggerDecision {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  if (opts.retain) return { kind: 'ignore', why: 'retained trigger (a replay, not a part at the camera now)' };
  const bytes = typeof payload === 'string' ? Buffer.from(payload) : payload;
  if (bytes.length > maxBytes) return { kind: 'ignore', why: `trigger payload of ${bytes.length} bytes (at most ${maxBytes}, commands.max_bytes)` };
  const raw = triggerPartId(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString().trim());
  if (typeof raw !== 'string') return { kind: 'trigger', partId: null, ...(raw ? { refused: raw.refused } : {}) };
  const id = stripUnsafe(raw).trim();
  if (!id) return { kind: 'trigger', partId: null };
  if (codePoints(id) > PART_ID_MAX) return { kind: 'trigger', partId: null, refused: `part id of ${codePoints(id)} characters (at most ${PART_ID_MAX}): "${forLog(id, PART_ID_MAX)}"` };
  return { kind: 'trigger', partId: id };
}

function triggerPartId(text: string): string | null | { refused: string } {
  if (!text.startsWith('{')) return text;
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    return text; // not JSON after all: a part id that happens to start with "{"
  }
  const v = (j as { part_id?: unknown }).part_id;
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return { refused: `part_id is ${Array.isArray(v) ? 'an array' : typeof v} (a string or a number)` };
}

/** Part id from a trigger payload: plain text, or JSON {"part_id": ...}; empty or unusable = none. */
export function parseTrigger(payload: Uint8Array | string, maxBytes = DEFAULT_MAX_BYTES): string | null {
  const d = parseTriggerMessage(payload, { maxBytes });
  return d.kind === 'trigger' ? d.partId : null;
}
