/**
 * MQTT topic layout and payload schemas (documented in README "PLC / SCADA integration").
 * Everything lives under <prefix>/<station>/. Payload schemas are versioned in their "schema" field;
 * a breaking change bumps the number, additions do not.
 */
export const VERDICT_SCHEMA = 'hiercore-edge/verdict/1';
export const STATS_SCHEMA = 'hiercore-edge/stats/1';
export const RESPONSE_SCHEMA = 'hiercore-edge/response/1';
export const CAMERA_SCHEMA = 'hiercore-edge/camera/1';

export const COMMANDS = ['reload', 'snapshot', 'pause', 'resume', 'get_config', 'get_stats'] as const;
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
    /** PLC trigger: inspect the next frame, payload = part id (plain text or {"part_id": ...}) */
    trigger: `${base}/trigger`,
    /** commands: <base>/cmd/<name>, responses on <base>/cmd/<name>/response */
    cmdWildcard: `${base}/cmd/+`,
    cmd: (name: string) => `${base}/cmd/${name}`,
    response: (name: string) => `${base}/cmd/${name}/response`,
  };
}

export type Topics = ReturnType<typeof topics>;

export interface VerdictPayload {
  schema: typeof VERDICT_SCHEMA;
  /** unique across restarts: <run_id>/<frame> */
  frame_id: string;
  frame: number;
  run_id: string;
  part_id: string | null;
  station: string;
  timestamp: string;
  captured_at: string;
  verdict: 'OK' | 'NG' | 'UNKNOWN';
  cluster: string | null;
  score: number | null;
  normalised_score: number | null;
  threshold: number | null;
  route: { nearest: string; distance: number; limit: number };
  latency_ms: Record<string, number>;
  bundle: { id: string; created_at: string };
  heatmap: boolean;
  image: boolean;
  source_file?: string;
}

/** Part id from a trigger payload: plain text, or JSON {"part_id": "..."}; empty = none. */
export function parseTrigger(payload: Buffer | string): string | null {
  const text = payload.toString().trim();
  if (!text) return null;
  if (text.startsWith('{')) {
    try {
      const j = JSON.parse(text) as { part_id?: unknown };
      return j.part_id === undefined || j.part_id === null ? null : String(j.part_id);
    } catch {
      return text;
    }
  }
  return text;
}
