/**
 * The station as a Sparkplug B Edge Node with one Device (the camera), on an MQTT connection of its
 * own: the Will is the NDEATH, and a Will is fixed when CONNECT is sent, so each connection attempt
 * gets a fresh mqtt.js client whose Will carries that attempt's bdSeq. mqtt.js's own reconnect
 * would resend the first CONNECT's Will forever.
 *
 * Sparkplug DATA is QoS 0 and not queued: the per-part verdict stream with its no-loss guarantee
 * stays on the JSON topics; this node reports state (counters, last part, camera, latency).
 */
import { type BrokerConnection, readTls } from '../broker-connection.ts';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { BUNDLE_NAME } from '../commands.ts';
import { forLog } from '../text.ts';
import { BdSeqStore, BDSEQ_FILE } from './bdseq.ts';
import { decodePayload, encodePayload, type InMetric, type InPayload, type OutPayload } from './codec.ts';
import { CONTROLS, METRIC, MetricSet, type SparkplugCommand, type StationMetrics } from './metrics.ts';
import { PrimaryHost, stateTopic } from './primary-host.ts';
import { idProblem, sparkplugTopics, type SparkplugTopics } from './topics.ts';

/**
 * Broker, credentials and TLS: the same as the JSON connection's (mqtt.*), on a connection of its
 * own; client_id "" = hiercore-edge-<node_id>-spb (it must differ from the JSON connection's).
 */
export interface SparkplugOptions extends BrokerConnection {
  group_id: string;
  /** the daemon passes the station name when sparkplug.node_id is "" */
  node_id: string;
  device_id: string;
  /** Primary Host Application id ("" = none: birth as soon as connected) */
  host_id: string;
  /** 0 = DATA on every change; otherwise changes are collected and published every period_s */
  period_s: number;
  /** where the bdSeq survives restarts */
  state_dir: string;
  /** largest NCMD / DCMD / STATE payload accepted */
  max_command_bytes?: number;
  /** reconnect back-off bounds */
  reconnect_min_ms?: number;
  reconnect_max_ms?: number;
}

export interface CommandMeta {
  via: 'sparkplug';
  topic: string;
  /** the writable metric that carried the command, e.g. "Device Control/Reload" */
  metric: string;
  /** MQTT 5 user properties of the DCMD (e.g. a token); {} on MQTT 3.1.1 */
  user_properties: Record<string, string | string[]>;
  /** the DCMD payload's timestamp (the host's clock), null when absent */
  host_timestamp: number | null;
}

export interface SparkplugHandlers {
  /** Runs a station command; the daemon decides whether it is allowed (commands.control). */
  command(name: SparkplugCommand, args: Record<string, unknown>, meta: CommandMeta): Promise<unknown>;
  /** Connection and birth state, e.g. for /healthz and a Prometheus gauge. */
  connection?(state: { connected: boolean; born: boolean }): void;
}

export type SparkplugLog = (level: 'error' | 'warn' | 'info' | 'debug', msg: string) => void;

interface Session {
  client: MqttClient;
  bdSeq: number;
  /** seq of the last message sent in this session */
  seq: number;
  connected: boolean;
  subscribed: boolean;
  hostOnline: boolean;
  born: boolean;
  ending: boolean;
  closed: boolean;
}

const DEFAULT_MAX_COMMAND_BYTES = 65536;

export class SparkplugNode {
  private readonly metrics = new MetricSet();
  private readonly topics: SparkplugTopics;
  private readonly bdSeqStore: BdSeqStore;
  private readonly host: PrimaryHost | null;
  private session: Session | null = null;
  private bdSeq: number | null = null;
  /** the current bdSeq went out in a CONNECT: the next attempt needs a new one */
  private bdSeqSpent = true;
  private tls: Pick<IClientOptions, 'ca' | 'cert' | 'key'> = {};
  private started = false;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private periodTimer: NodeJS.Timeout | null = null;
  private backoffMs: number;
  private failuresInARow = 0;

  constructor(
    private readonly o: SparkplugOptions,
    private readonly h: SparkplugHandlers,
    private readonly log: SparkplugLog,
  ) {
    this.topics = sparkplugTopics(o.group_id, o.node_id, o.device_id);
    this.bdSeqStore = new BdSeqStore(join(o.state_dir, BDSEQ_FILE));
    this.host = o.host_id ? new PrimaryHost(o.host_id) : null;
    this.backoffMs = this.minBackoff;
  }

  get connected(): boolean {
    return this.session?.connected === true;
  }
  get born(): boolean {
    return this.session?.born === true;
  }
  /** bdSeq of the current (or last attempted) connection's Will */
  get currentBdSeq(): number | null {
    return this.bdSeq;
  }
  get topicNames(): Readonly<SparkplugTopics> {
    return this.topics;
  }

  private get minBackoff(): number {
    return this.o.reconnect_min_ms ?? 1000;
  }
  private get maxCommandBytes(): number {
    return this.o.max_command_bytes ?? DEFAULT_MAX_COMMAND_BYTES;
  }

  /**
   * Checks the options and the bdSeq state file, then connects in the background (and keeps
   * reconnecting); rejects only on a configuration error, never because the broker is down.
   */
  async start(): Promise<void> {
    if (this.started) throw new Error('SparkplugNode.start() called twice');
    this.checkOptions();
    this.bdSeqStore.last();
    this.started = true;
    if (this.o.period_s > 0) this.periodTimer = setInterval(() => this.flush(), this.o.period_s * 1000);
    this.connect();
  }

  /** New facts from the daemon; with period_s 0 the changes go out at once. */
  update(m: Partial<StationMetrics>): void {
    this.metrics.apply(m);
    if (!(this.o.period_s > 0)) this.flush();
  }

  /** Intentional disconnect: NDEATH first (tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.periodTimer) clearInterval(this.periodTimer);
    this.retryTimer = this.periodTimer = null;
    const s = this.session;
    if (s) await this.endSession(s);
  }

  private checkOptions(): void {
    const o = this.o;
    for (const [what, id] of [
      ['sparkplug.group_id', o.group_id],
      ['sparkplug.node_id', o.node_id],
      ['sparkplug.device_id', o.device_id],
    ] as const) {
      const p = idProblem(what, id);
      if (p) throw new Error(p);
    }
    if (o.host_id) {
      const p = idProblem('sparkplug.host_id', o.host_id);
      if (p) throw new Error(p);
    }
    this.tls = readTls(o);
  }

  private takeBdSeq(): number {
    if (this.bdSeq !== null && !this.bdSeqSpent) return this.bdSeq;
    try {
      this.bdSeq = this.bdSeqStore.advance();
    } catch (e) {
      // Still connect: a SCADA without the station is worse than a bdSeq that may repeat after a restart.
      this.bdSeq = ((this.bdSeq ?? -1) + 1) & 0xff;
      this.log('error', `sparkplug: bdSeq not saved in ${this.bdSeqStore.path}: ${(e as Error).message}; using ${this.bdSeq}, which may repeat after a restart`);
    }
    this.bdSeqSpent = false;
    return this.bdSeq;
  }

  private clientOptions(bdSeq: number): IClientOptions {
    const o = this.o;
    return {
      protocolVersion: o.protocol_version,
      clientId: o.client_id || `hiercore-edge-${o.node_id}-spb`,
      // tck-id-message-flow-phid-sparkplug-clean-session-311 / -50 (§5.2 applies them to every client)
      clean: true,
      properties: o.protocol_version === 5 ? { sessionExpiryInterval: 0, maximumPacketSize: this.maxCommandBytes + 4096 } : undefined,
      keepalive: o.keepalive_s,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      queueQoSZero: false,
      username: o.username || undefined,
      password: o.password || undefined,
      rejectUnauthorized: o.reject_unauthorized,
      ...this.tls,
      will: { topic: this.topics.ndeath, payload: Buffer.from(this.deathPayload(bdSeq)), qos: 1, retain: false },
    };
  }

  /** NDEATH: only the bdSeq metric, no seq (tck-id-topics-ndeath-payload, tck-id-topics-ndeath-seq). */
  private deathPayload(bdSeq: number): Uint8Array {
    const now = Date.now();
    return encodePayload({ timestamp: now, metrics: [{ name: METRIC.bdSeq, timestamp: now, type: 'Int64', withDatatype: true, value: bdSeq }] });
  }

  private connect(): void {
    this.retryTimer = null;
    if (this.stopped) return;
    const bdSeq = this.takeBdSeq();
    const client = mqtt.connect(this.o.url, this.clientOptions(bdSeq));
    const s: Session = { client, bdSeq, seq: 0, connected: false, subscribed: false, hostOnline: false, born: false, ending: false, closed: false };
    this.session = s;
    // Once the socket is up the CONNECT (and its Will) reaches the broker: that bdSeq is used up.
    client.stream?.once('connect', () => (this.bdSeqSpent = true));
    client.on('connect', () => this.onConnect(s));
    client.on('message', (topic, payload, packet) => this.onMessage(s, topic, payload, packet));
    client.on('error', (e) => this.onError(s, e));
    client.on('close', () => this.onClose(s));
    this.log('debug', `sparkplug: connecting to ${this.o.url} with bdSeq ${bdSeq}`);
  }

  private onConnect(s: Session): void {
    this.bdSeqSpent = true;
    s.connected = true;
    this.failuresInARow = 0;
    this.backoffMs = this.minBackoff;
    this.log('info', `sparkplug: connected to ${this.o.url} as ${this.o.group_id}/${this.o.node_id} (bdSeq ${s.bdSeq})${this.host ? `; waiting for primary host ${this.host.hostId}` : ''}`);
    this.notify();
    const subs = [this.topics.ncmd, this.topics.dcmd, ...(this.host ? [stateTopic(this.host.hostId)] : [])];
    // QoS 1: tck-id-message-flow-edge-node-ncmd-subscribe, tck-id-message-flow-device-dcmd-subscribe
    s.client.subscribe(subs, { qos: 1 }, (err, granted) => {
      const refused = granted?.filter((g) => g.qos !== 1).map((g) => g.topic) ?? [];
      if (err || refused.length) {
        this.log('error', `sparkplug: subscribing ${err ? `failed: ${err.message}` : `refused for ${refused.join(', ')}`}; reconnecting`);
        s.client.end(true);
        return;
      }
      s.subscribed = true;
      this.maybeBirth(s);
    });
  }

  private onError(s: Session, e: Error): void {
    const code = (e as { code?: number | string }).code;
    const auth = code === 4 || code === 5 || code === 134 || code === 135;
    const msg = auth ? `broker ${this.o.url} refused the login (${e.message}): check mqtt.username / mqtt.password` : `${e.message}`;
    this.log(auth || this.failuresInARow === 0 ? (auth ? 'error' : 'warn') : 'debug', `sparkplug: ${msg}`);
    if (!s.connected) s.client.end(true);
  }

  private onClose(s: Session): void {
    if (s.closed) return;
    s.closed = true;
    const wasUp = s.connected;
    s.connected = s.born = false;
    s.client.end(true);
    if (this.session === s) this.notify();
    if (this.stopped || this.session !== s) return;
    if (wasUp && !s.ending) this.log('warn', `sparkplug: connection to ${this.o.url} lost; reconnecting`);
    this.failuresInARow = wasUp ? 0 : this.failuresInARow + 1;
    const wait = s.ending ? this.minBackoff : this.backoffMs;
    if (!s.ending && !wasUp) this.backoffMs = Math.min(this.backoffMs * 2, this.o.reconnect_max_ms ?? 30_000);
    this.retryTimer = setTimeout(() => this.connect(), wait);
  }

  private notify(): void {
    this.h.connection?.({ connected: this.connected, born: this.born });
  }

  /** NBIRTH needs the command subscriptions, and with a primary host its online STATE. */
  private maybeBirth(s: Session): void {
    if (s.born || s.ending || !s.connected || !s.subscribed) return;
    if (this.host && !s.hostOnline) return;
    this.birth(s);
  }

  /** NBIRTH (seq 0, this connection's bdSeq) then DBIRTH; also the answer to a Rebirth request. */
  private birth(s: Session): void {
    const now = Date.now();
    s.born = false;
    this.metrics.set('node', METRIC.bdSeq, 'Int64', s.bdSeq, now);
    this.metrics.structureChanged = false;
    s.seq = 0;
    this.send(s, this.topics.nbirth, { timestamp: now, seq: 0, metrics: this.metrics.birth('node') });
    this.send(s, this.topics.dbirth, { timestamp: now, seq: this.nextSeq(s), metrics: this.metrics.birth('device') });
    s.born = true;
    this.log('info', `sparkplug: birth published (bdSeq ${s.bdSeq})`);
    this.notify();
  }

  private flush(): void {
    const s = this.session;
    if (!s?.born) return;
    if (this.metrics.structureChanged) return this.birth(s);
    const node = this.metrics.takeChanged('node');
    if (node.length) this.send(s, this.topics.ndata, { timestamp: Date.now(), seq: this.nextSeq(s), metrics: node });
    const device = this.metrics.takeChanged('device');
    if (device.length) this.send(s, this.topics.ddata, { timestamp: Date.now(), seq: this.nextSeq(s), metrics: device });
  }

  private nextSeq(s: Session): number {
    s.seq = (s.seq + 1) & 0xff;
    return s.seq;
  }

  /** Every Edge Node message but NDEATH: QoS 0, not retained (tck-id-payloads-*-qos / -retain). */
  private send(s: Session, topic: string, p: OutPayload): void {
    s.client.publish(topic, Buffer.from(encodePayload(p)), { qos: 0, retain: false });
  }

  /**
   * MQTT 5: DISCONNECT with reason 0x04 makes the broker publish the Will (tck-id-payloads-ndeath-will-
   * message-publisher-disconnect-mqtt50); MQTT 3.1.1 drops the Will on DISCONNECT, so NDEATH is
   * published first (…-disconnect-mqtt311).
   */
  private async endSession(s: Session): Promise<void> {
    if (s.ending || s.closed) return;
    s.ending = true;
    s.born = false;
    const end = (force: boolean, opts: { reasonCode?: number } = {}) => new Promise<void>((r) => s.client.end(force, opts, () => r()));
    if (!s.connected) return end(true);
    if (this.o.protocol_version === 5) return end(false, { reasonCode: 4 });
    await new Promise<void>((r) => {
      const t = setTimeout(r, 2000);
      s.client.publish(this.topics.ndeath, Buffer.from(this.deathPayload(s.bdSeq)), { qos: 1, retain: false }, () => {
        clearTimeout(t);
        r();
      });
    });
    await end(false);
  }

  /** Nothing a client sends may throw out of an mqtt.js handler. */
  private onMessage(s: Session, topic: string, payload: Buffer, packet: IPublishPacket): void {
    try {
      if (s !== this.session || s.ending) return;
      if (payload.length > this.maxCommandBytes) return this.log('warn', `sparkplug: ${forLog(topic)}: payload of ${payload.length} bytes ignored (at most ${this.maxCommandBytes})`);
      if (this.host && topic === stateTopic(this.host.hostId)) return this.onState(s, payload);
      // Commands are never retained (tck-id-payloads-ncmd-retain): a retained one is a replay.
      if (packet.retain) return this.log('warn', `sparkplug: retained ${forLog(topic)} ignored`);
      if (topic === this.topics.ncmd) return this.onNodeCommand(s, payload);
      if (topic === this.topics.dcmd) return this.onDeviceCommand(topic, payload, packet);
    } catch (e) {
      this.log('error', `sparkplug: message on ${forLog(topic)} not handled: ${forLog((e as Error)?.message ?? e, 300)}`);
    }
  }

  private onState(s: Session, payload: Buffer): void {
    const v = this.host!.judge(payload);
    if (v.kind === 'ignore') return this.log('info', `sparkplug: ${v.why}; ignored`);
    if (v.kind === 'online') {
      s.hostOnline = true;
      return this.maybeBirth(s);
    }
    s.hostOnline = false;
    if (!s.born) return this.log('info', `sparkplug: primary host ${this.host!.hostId} offline; waiting for it before the birth`);
    // tck-id-message-flow-edge-node-birth-publish-phid-offline: NDEATH, disconnect, start over
    this.log('warn', `sparkplug: primary host ${this.host!.hostId} went offline; NDEATH, reconnecting and waiting for it`);
    void this.endSession(s);
  }

  private decode(topic: string, payload: Buffer): InPayload | null {
    try {
      return decodePayload(payload);
    } catch (e) {
      this.log('warn', `sparkplug: ${forLog(topic)}: not a Sparkplug B payload (${forLog((e as Error).message)}); ignored`);
      return null;
    }
  }

  private onNodeCommand(s: Session, payload: Buffer): void {
    for (const m of this.decode(this.topics.ncmd, payload)?.metrics ?? []) {
      const name = m.name ?? (m.alias !== undefined ? this.metrics.byAlias('node', m.alias)?.name : undefined);
      if (name !== METRIC.rebirth) {
        this.log('warn', `sparkplug: NCMD metric ${forLog(name ?? `alias ${m.alias}`)} is not writable; ignored`);
        continue;
      }
      if (m.field !== 'boolean_value' || m.value !== true) continue;
      if (!s.born) return this.log('info', 'sparkplug: rebirth requested before the birth; the birth follows anyway');
      this.log('info', 'sparkplug: rebirth requested');
      return this.birth(s);
    }
  }

  private onDeviceCommand(topic: string, payload: Buffer, packet: IPublishPacket): void {
    const p = this.decode(topic, payload);
    if (!p) return;
    const hostTs = p.timestamp ?? null;
    for (const m of p.metrics) {
      const def = m.alias !== undefined ? this.metrics.byAlias('device', m.alias) : m.name !== undefined ? this.metrics.byName('device', m.name) : undefined;
      const control = def && (CONTROLS as Record<string, (typeof CONTROLS)[keyof typeof CONTROLS]>)[def.name];
      if (!def || !control) {
        this.log('warn', `sparkplug: DCMD metric ${forLog(def?.name ?? m.name ?? `alias ${m.alias}`)} is not writable; ignored`);
        continue;
      }
      const args = this.commandArgs(def.name, control.type, m);
      if (args === null) continue;
      if (typeof args === 'string') {
        this.commandResult(`${control.command}: refused: ${args}`);
        continue;
      }
      const meta: CommandMeta = { via: 'sparkplug', topic, metric: def.name, user_properties: userProperties(packet), host_timestamp: hostTs };
      this.runCommand(control.command, args, meta);
    }
  }

  /** The command's arguments; a string = why the value is refused; null = nothing to do (a write of false). */
  private commandArgs(metric: string, type: 'Boolean' | 'String', m: InMetric): Record<string, unknown> | string | null {
    // tck-id-operational-behavior-data-commands-dcmd-metric-value: the value must fit the datatype
    if (type === 'Boolean') {
      if (m.field !== 'boolean_value') return `${metric} takes a Boolean`;
      return m.value === true ? {} : null;
    }
    if (m.field !== 'string_value' || typeof m.value !== 'string') return `${metric} takes a String (a bundle file name, "" = the active bundle)`;
    if (m.value !== '' && !BUNDLE_NAME.test(m.value)) return `bundle must be a file name in the bundle folder (letters, digits, . _ -), not ${forLog(m.value, 64)}`;
    return { bundle: m.value };
  }

  private runCommand(name: SparkplugCommand, args: Record<string, unknown>, meta: CommandMeta): void {
    this.log('info', `sparkplug: DCMD ${meta.metric} -> ${name}`);
    Promise.resolve()
      .then(() => this.h.command(name, args, meta))
      .then(
        () => this.commandResult(`${name}: ok`),
        (e: unknown) => this.commandResult(`${name}: failed: ${forLog(e instanceof Error ? e.message : e, 200)}`),
      );
  }

  /** DCMD has no reply topic: the outcome is a metric, published at once. */
  private commandResult(text: string): void {
    if (!text.endsWith(': ok')) this.log('warn', `sparkplug: command ${text}`);
    // a repeated outcome must still be seen as new: the timestamp of an unchanged value would not move
    const same = this.metrics.get('device', METRIC.lastResult) === text;
    if (same) this.metrics.set('device', METRIC.lastResult, 'String', '');
    this.metrics.set('device', METRIC.lastResult, 'String', text);
    this.flush();
  }
}

function userProperties(packet: IPublishPacket): Record<string, string | string[]> {
  const up = packet.properties?.userProperties;
  return up && typeof up === 'object' ? { ...(up as Record<string, string | string[]>) } : {};
}
