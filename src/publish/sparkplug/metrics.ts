/**
 * What the station reports over Sparkplug: the facts the daemon hands over (StationMetrics), the
 * metric names and types they become, and the bookkeeping a Sparkplug session needs (aliases that
 * never collide, which values changed since the last message, whether the metric set itself changed
 * so that only a new birth can announce it).
 */
import type { DataTypeName, MetricValue, OutMetric } from './codec.ts';

export type Verdict = 'OK' | 'NG' | 'UNKNOWN' | 'NO_FRAME';
export const VERDICTS: readonly Verdict[] = ['OK', 'NG', 'UNKNOWN', 'NO_FRAME'];

export interface LastPart {
  verdict: Verdict;
  score: number | null;
  normalised_score: number | null;
  cluster: string | null;
  /** the JSON verdict's frame_id: how a SCADA tag finds the full verdict on the JSON stream */
  frame_id: string;
  part_id: string | null;
  /** ms since the epoch when the verdict was made; the metrics' timestamp (default: now) */
  at?: number;
}

/** Everything the daemon reports; update() takes any subset, each field replacing the previous one. */
export interface StationMetrics {
  /** totals since start, per verdict */
  verdicts: Partial<Record<Verdict, number>>;
  /** totals since start per cluster of the active bundle; a cluster left out disappears (rebirth) */
  clusters: Record<string, { OK: number; NG: number }>;
  last: LastPart | null;
  camera_state: string;
  /** verdicts in the JSON topics' on-disk queue not yet acknowledged by the broker */
  queue_depth: number;
  latency_ms: { p50: number; p95: number; p99: number } | null;
  bundle: { id: string; version: string } | null;
  paused: boolean;
}

export type Scope = 'node' | 'device';

export const METRIC = {
  bdSeq: 'bdSeq',
  rebirth: 'Node Control/Rebirth',
  queueDepth: 'Verdict Queue Depth',
  verdicts: (v: Verdict) => `Verdicts/${v}`,
  cluster: (c: string, v: 'OK' | 'NG') => `Clusters/${c}/${v}`,
  lastVerdict: 'Last Part/Verdict',
  lastScore: 'Last Part/Score',
  lastNormalised: 'Last Part/Normalised Score',
  lastCluster: 'Last Part/Cluster',
  lastFrameId: 'Last Part/Frame Id',
  lastPartId: 'Last Part/Part Id',
  cameraState: 'Camera/State',
  latency: (p: 'p50' | 'p95' | 'p99') => `Latency/${p} ms`,
  bundleId: 'Bundle/Id',
  bundleVersion: 'Bundle/Version',
  paused: 'Paused',
  ctlPause: 'Device Control/Pause',
  ctlResume: 'Device Control/Resume',
  ctlSnapshot: 'Device Control/Snapshot',
  ctlReload: 'Device Control/Reload',
  lastResult: 'Device Control/Last Result',
} as const;

/** Writable device metrics and the daemon command each one runs. */
export const CONTROLS = {
  [METRIC.ctlPause]: { command: 'pause', type: 'Boolean' },
  [METRIC.ctlResume]: { command: 'resume', type: 'Boolean' },
  [METRIC.ctlSnapshot]: { command: 'snapshot', type: 'Boolean' },
  [METRIC.ctlReload]: { command: 'reload', type: 'String' },
} as const satisfies Record<string, { command: string; type: DataTypeName }>;
export type SparkplugCommand = (typeof CONTROLS)[keyof typeof CONTROLS]['command'];

interface Entry {
  scope: Scope;
  name: string;
  type: DataTypeName;
  /** undefined only for Node Control/Rebirth (tck-id-operational-behavior-data-commands-rebirth-name-aliases) */
  alias: number | undefined;
  value: MetricValue;
  timestamp: number;
  dirty: boolean;
}

const key = (scope: Scope, name: string) => `${scope}\u0000${name}`;

/**
 * A cluster name becomes one level of the tag path: "/" would add levels and names that differ only
 * in case collide in hosts that fold case (tck-id-case-sensitivity-metric-names), so both are made
 * unambiguous here.
 */
export function clusterLevels(names: string[]): Map<string, string> {
  const out = new Map<string, string>();
  const taken = new Set<string>();
  for (const n of names) {
    const base = n.replace(/[/\u0000-\u001f\u007f]/g, '_').trim() || '_';
    let level = base;
    for (let i = 2; taken.has(level.toLowerCase()); i++) level = `${base}~${i}`;
    taken.add(level.toLowerCase());
    out.set(n, level);
  }
  return out;
}

export class MetricSet {
  private readonly entries = new Map<string, Entry>();
  /** aliases are never reused within a process, so a late DATA can never be read as another metric */
  private readonly aliases = new Map<string, number>();
  private nextAlias = 1;
  /** a metric was added or removed since the last birth: DATA cannot announce that, a birth must */
  structureChanged = false;

  constructor(private readonly now: () => number = Date.now) {
    this.define('node', METRIC.bdSeq, 'Int64', 0);
    this.define('node', METRIC.rebirth, 'Boolean', false);
    this.define('node', METRIC.queueDepth, 'UInt32', 0);
    for (const v of VERDICTS) this.define('device', METRIC.verdicts(v), 'Int64', 0);
    for (const n of [METRIC.lastVerdict, METRIC.lastCluster, METRIC.lastFrameId, METRIC.lastPartId]) this.define('device', n, 'String', null);
    for (const n of [METRIC.lastScore, METRIC.lastNormalised]) this.define('device', n, 'Double', null);
    this.define('device', METRIC.cameraState, 'String', null);
    for (const p of ['p50', 'p95', 'p99'] as const) this.define('device', METRIC.latency(p), 'Double', null);
    this.define('device', METRIC.bundleId, 'String', null);
    this.define('device', METRIC.bundleVersion, 'String', null);
    this.define('device', METRIC.paused, 'Boolean', false);
    for (const [name, c] of Object.entries(CONTROLS)) this.define('device', name, c.type, c.type === 'Boolean' ? false : '');
    this.define('device', METRIC.lastResult, 'String', '');
    this.structureChanged = false;
  }

  private define(scope: Scope, name: string, type: DataTypeName, value: MetricValue, at = this.now()): void {
    const k = key(scope, name);
    let alias = this.aliases.get(k);
    if (alias === undefined && name !== METRIC.rebirth) {
      alias = this.nextAlias++;
      this.aliases.set(k, alias);
    }
    this.entries.set(k, { scope, name, type, alias, value, timestamp: at, dirty: false });
    this.structureChanged = true;
  }

  /** Sets a value; a name not yet defined is defined (and needs a birth). */
  set(scope: Scope, name: string, type: DataTypeName, value: MetricValue, at = this.now()): void {
    const e = this.entries.get(key(scope, name));
    if (!e) return this.define(scope, name, type, value, at);
    if (Object.is(e.value, value)) return;
    e.value = value;
    e.timestamp = at;
    e.dirty = true;
  }

  get(scope: Scope, name: string): MetricValue | undefined {
    return this.entries.get(key(scope, name))?.value;
  }

  /** Removes the metrics of `scope` whose name starts with `prefix` and is not in `keep`. */
  prune(scope: Scope, prefix: string, keep: Set<string>): void {
    for (const [k, e] of this.entries) {
      if (e.scope !== scope || !e.name.startsWith(prefix) || keep.has(e.name)) continue;
      this.entries.delete(k);
      this.structureChanged = true;
    }
  }

  byName(scope: Scope, name: string): { name: string; type: DataTypeName } | undefined {
    const e = this.entries.get(key(scope, name));
    return e && { name: e.name, type: e.type };
  }

  byAlias(scope: Scope, alias: number): { name: string; type: DataTypeName } | undefined {
    for (const e of this.entries.values()) if (e.scope === scope && e.alias === alias) return { name: e.name, type: e.type };
    return undefined;
  }

  /** Every metric of the scope with name, alias, datatype, value and timestamp; clears dirty flags. */
  birth(scope: Scope): OutMetric[] {
    const out: OutMetric[] = [];
    for (const e of this.entries.values()) {
      if (e.scope !== scope) continue;
      e.dirty = false;
      out.push({ name: e.name, alias: e.alias, timestamp: e.timestamp, type: e.type, withDatatype: true, value: e.value });
    }
    return out;
  }

  /** The changed metrics of the scope, by alias only (tck-id-payloads-alias-data-cmd-requirement). */
  takeChanged(scope: Scope): OutMetric[] {
    const out: OutMetric[] = [];
    for (const e of this.entries.values()) {
      if (e.scope !== scope || !e.dirty) continue;
      e.dirty = false;
      out.push({ alias: e.alias, timestamp: e.timestamp, type: e.type, withDatatype: false, value: e.value });
    }
    return out;
  }

  /** Applies a partial StationMetrics. */
  apply(m: Partial<StationMetrics>): void {
    const now = this.now();
    if (m.verdicts) for (const v of VERDICTS) if (m.verdicts[v] !== undefined) this.set('device', METRIC.verdicts(v), 'Int64', m.verdicts[v]!, now);
    if (m.clusters) this.applyClusters(m.clusters, now);
    if (m.last !== undefined) this.applyLast(m.last, now);
    if (m.camera_state !== undefined) this.set('device', METRIC.cameraState, 'String', m.camera_state, now);
    if (m.queue_depth !== undefined) this.set('node', METRIC.queueDepth, 'UInt32', m.queue_depth, now);
    if (m.latency_ms !== undefined) for (const p of ['p50', 'p95', 'p99'] as const) this.set('device', METRIC.latency(p), 'Double', m.latency_ms?.[p] ?? null, now);
    if (m.bundle !== undefined) {
      this.set('device', METRIC.bundleId, 'String', m.bundle?.id ?? null, now);
      this.set('device', METRIC.bundleVersion, 'String', m.bundle?.version ?? null, now);
    }
    if (m.paused !== undefined) this.set('device', METRIC.paused, 'Boolean', m.paused, now);
  }

  private applyClusters(clusters: StationMetrics['clusters'], now: number): void {
    const keep = new Set<string>();
    for (const [name, level] of clusterLevels(Object.keys(clusters))) {
      for (const v of ['OK', 'NG'] as const) {
        const n = METRIC.cluster(level, v);
        keep.add(n);
        this.set('device', n, 'Int64', clusters[name][v] ?? 0, now);
      }
    }
    this.prune('device', 'Clusters/', keep);
  }

  private applyLast(last: LastPart | null, now: number): void {
    const at = last?.at ?? now;
    this.set('device', METRIC.lastVerdict, 'String', last?.verdict ?? null, at);
    this.set('device', METRIC.lastScore, 'Double', last?.score ?? null, at);
    this.set('device', METRIC.lastNormalised, 'Double', last?.normalised_score ?? null, at);
    this.set('device', METRIC.lastCluster, 'String', last?.cluster ?? null, at);
    this.set('device', METRIC.lastFrameId, 'String', last?.frame_id ?? null, at);
    this.set('device', METRIC.lastPartId, 'String', last?.part_id ?? null, at);
  }
}
