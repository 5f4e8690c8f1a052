/**
 * Primary Host Application STATE (Sparkplug 3.0 §5.4.3 / §6.4.14): the SCADA publishes a retained
 * `{"online": bool, "timestamp": ms}` on spBv1.0/STATE/<host_id>. A message older than the last one
 * accepted is a stale copy (e.g. from a second broker or a delayed retained message) and must not
 * change what the node does.
 */
export type StateVerdict = { kind: 'online'; timestamp: number } | { kind: 'offline'; timestamp: number } | { kind: 'ignore'; why: string };

export function stateTopic(hostId: string): string {
  return `spBv1.0/STATE/${hostId}`;
}

export class PrimaryHost {
  /** timestamp of the last STATE accepted; kept across MQTT sessions, as the spec compares with "the previous" one */
  private lastTs: number | null = null;

  constructor(readonly hostId: string) {}

  judge(payload: Uint8Array): StateVerdict {
    let j: unknown;
    try {
      j = JSON.parse(Buffer.from(payload).toString('utf8'));
    } catch {
      return { kind: 'ignore', why: 'STATE payload is not JSON' };
    }
    const { online, timestamp } = (j ?? {}) as { online?: unknown; timestamp?: unknown };
    if (typeof online !== 'boolean') return { kind: 'ignore', why: 'STATE payload has no boolean "online"' };
    if (typeof timestamp !== 'number' || !Number.isFinite(timestamp)) return { kind: 'ignore', why: 'STATE payload has no numeric "timestamp"' };
    // tck-id-message-flow-edge-node-birth-publish-phid-wait-timestamp, ...-termination-host-offline-timestamp
    if (this.lastTs !== null && timestamp < this.lastTs) return { kind: 'ignore', why: `STATE timestamp ${timestamp} is older than the last one accepted (${this.lastTs})` };
    this.lastTs = timestamp;
    return { kind: online ? 'online' : 'offline', timestamp };
  }
}
