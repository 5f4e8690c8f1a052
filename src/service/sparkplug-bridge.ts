/**
 * Feeds the daemon's events into the Sparkplug B Edge Node and runs its commands under the same
 * authorisation as the JSON command topics. Optional (sparkplug.enabled); the per-part verdict
 * stream with its no-loss guarantee stays on the JSON topics.
 */
import { SparkplugNode, type StationMetrics } from '../publish/sparkplug/index.ts';
import { authorize } from '../publish/commands.ts';
import type { VerdictPayload } from '../publish/payloads.ts';
import type { CommandName } from '../publish/topics.ts';
import type { BundleSummary } from '../inspect/protocol.ts';
import { brokerConnection, commandPolicy, type DaemonConfig } from './config.ts';
import type { Logger } from './log.ts';

export interface StationEvents {
  verdict(p: VerdictPayload, totals: StationMetrics['verdicts'], latency: StationMetrics['latency_ms']): void;
  camera(state: string): void;
  bundle(b: BundleSummary): void;
  paused(p: boolean): void;
  tick(queueDepth: number, latency: StationMetrics['latency_ms']): void;
  stop(): Promise<void>;
}

export class SparkplugBridge implements StationEvents {
  private readonly clusters: StationMetrics['clusters'] = {};

  private constructor(private readonly node: SparkplugNode) {}

  static async start(c: DaemonConfig, mqtt: { url: string; protocol: 4 | 5 }, run: (name: CommandName, body: Record<string, unknown>) => Promise<unknown>, log: Logger): Promise<SparkplugBridge> {
    const policy = commandPolicy(c);
    const sp = c.sparkplug;
    const node = new SparkplugNode(
      {
        ...brokerConnection(c, mqtt, sp.client_id),
        group_id: sp.group_id,
        node_id: sp.node_id || c.station,
        device_id: sp.device_id,
        host_id: sp.host_id,
        period_s: sp.period_s,
        state_dir: c.state_dir,
        max_command_bytes: c.commands.max_bytes,
      },
      {
        command: async (name, args, meta) => {
          const auth = authorize(name, meta.user_properties, policy, mqtt.protocol);
          if (!auth.ok) throw new Error(auth.error);
          log('info', `Sparkplug command ${name} (${meta.metric})`);
          return run(name as CommandName, args);
        },
      },
      (level, msg) => log(level, msg),
    );
    await node.start();
    return new SparkplugBridge(node);
  }

  verdict(p: VerdictPayload, totals: StationMetrics['verdicts'], latency: StationMetrics['latency_ms']): void {
    // Not a part verdict (no bundle yet): the Sparkplug metric set has no place for it.
    if (p.verdict === 'UNCALIBRATED') return;
    if (p.cluster && (p.verdict === 'OK' || p.verdict === 'NG')) {
      if (!this.clusters[p.cluster]) this.clusters[p.cluster] = { OK: 0, NG: 0 };
      this.clusters[p.cluster][p.verdict]++;
    }
    this.node.update({
      verdicts: totals,
      clusters: { ...this.clusters },
      latency_ms: latency,
      last: { verdict: p.verdict, score: p.score, normalised_score: p.normalised_score, cluster: p.cluster, frame_id: p.frame_id, part_id: p.part_id, at: Date.parse(p.timestamp) },
    });
  }

  camera(state: string): void {
    this.node.update({ camera_state: state });
  }

  /** A new bundle brings its own clusters: the metric set changes, which means a rebirth. */
  bundle(b: BundleSummary): void {
    for (const k of Object.keys(this.clusters)) delete this.clusters[k];
    for (const k of b.clusters) this.clusters[k.name] = { OK: 0, NG: 0 };
    this.node.update({ bundle: { id: b.bundle_id, version: b.created_at }, clusters: { ...this.clusters } });
  }

  paused(p: boolean): void {
    this.node.update({ paused: p });
  }

  tick(queueDepth: number, latency: StationMetrics['latency_ms']): void {
    this.node.update({ queue_depth: queueDepth, latency_ms: latency });
  }

  stop(): Promise<void> {
    return this.node.stop();
  }
}
