/**
 * The MQTT side of the daemon: status with last will, verdicts at QoS 1 through the on-disk
 * VerdictQueue (a verdict published while the broker is down, or not yet acknowledged when the daemon
 * dies, is sent after the reconnect or the next start), heatmaps and images at QoS 0 (dropped while
 * offline), triggers and request/response commands. MQTT 5 properties where the broker speaks 5,
 * plain 3.1.1 otherwise.
 *
 * Verdict flow: publishVerdict() appends to the queue (never blocks, never throws); while connected a
 * window of at most VERDICT_WINDOW verdicts is published from the queue's head; each leaves the queue
 * (and the disk) only on its PUBACK. mqtt.js keeps only that window, in memory, with message ids from
 * a UniqueMessageIdProvider: ids are reused all the time but never while a packet still holds one, so
 * the 16-bit id space cannot wrap onto an unacknowledged verdict. start() does not wait for the broker.
 */
import { type BrokerConnection, readTls } from './broker-connection.ts';
import { randomBytes } from 'node:crypto';
import mqtt, { UniqueMessageIdProvider, type IClientOptions, type IClientPublishOptions, type IConnackPacket, type IDisconnectPacket, type IPublishPacket, type MqttClient } from 'mqtt';
import { VerdictQueue } from './verdict-queue.ts';
import { RESPONSE_SCHEMA, parseTriggerMessage, topics, type CommandName, type Topics } from './topics.ts';
import { parseCommand, type CommandPolicy, type RequestId } from './commands.ts';
import { forLog } from './text.ts';

export interface MqttSettings extends BrokerConnection {
  prefix: string;
  station: string;
  store_dir: string;
  commands: CommandPolicy;
  /** bounds of the verdict queue (disk, or memory when the store fails); beyond them the oldest go */
  queue_max: number;
  queue_max_bytes: number;
  /** fsync every queued verdict (survives power loss) */
  queue_fsync?: boolean;
  /** MQTT 5 CONNECT maximumPacketSize: the broker drops larger packets instead of sending them (0 = no limit) */
  max_packet_bytes: number;
}

export interface QueueState {
  depth: number;
  bytes: number;
  inflight: number;
  dropped: number;
  storeError: string | null;
}

/** Unacknowledged verdicts at once: far below the 65,535 message ids, and what a broker buffers easily. */
export const VERDICT_WINDOW = 256;
const TAKEOVER = 0x8e;
const AUTH_CODES = new Set([4, 5, 134, 135]);
/** Socket errors the reconnect loop heals by itself: waitConnected keeps waiting through them. */
const TRANSIENT = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);
const REPEAT_LOG_MS = 60_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export type CommandHandler = (name: CommandName, body: Record<string, unknown>) => Promise<unknown>;

export interface PublisherEvents {
  log: (level: 'info' | 'warn' | 'error', msg: string) => void;
  trigger: (partId: string | null) => void;
  command: CommandHandler;
  connection: (up: boolean) => void;
}

export class MqttPublisher {
  readonly topics: Topics;
  private client!: MqttClient;
  private q: VerdictQueue | null = null;
  /** verdicts handed to publishVerdict before start() opened the queue */
  private early: [string, string][] = [];
  /** sequence numbers published and waiting for their PUBACK */
  private readonly inflight = new Set<number>();
  private window = VERDICT_WINDOW;
  private holdUntil = 0;
  private connected = false;
  private everConnected = false;
  private connectedAt = 0;
  private closing = false;
  private closedBeforeConnack = 0;
  private shortSessions: number[] = [];
  private lastDisconnectReason: number | null = null;
  private lastError: Error | null = null;
  private readonly waiters = new Set<(e?: Error) => void>();
  private readonly repeats = new Map<string, { last: number; count: number }>();
  readonly clientId: string;

  constructor(
    private readonly s: MqttSettings,
    private readonly ev: PublisherEvents,
  ) {
    this.topics = topics(s.prefix, s.station);
    // A fixed default would make two daemons of one station take each other's session over forever.
    this.clientId = s.client_id || `hiercore-edge-${s.station}-${randomBytes(4).toString('hex')}`;
  }

  get queueDepth(): number {
    return (this.q?.depth ?? 0) + this.early.length;
  }
  get isConnected(): boolean {
    return this.connected;
  }
  get queue(): QueueState {
    const q = this.q;
    return { depth: this.queueDepth, bytes: q?.bytes ?? 0, inflight: this.inflight.size, dropped: q?.dropped ?? 0, storeError: q?.storeError ?? null };
  }

  private options(): IClientOptions {
    const v5 = this.s.protocol_version === 5;
    return {
      protocolVersion: this.s.protocol_version,
      clientId: this.clientId,
      clean: true,
      keepalive: this.s.keepalive_s,
      reconnectPeriod: 1000,
      reconnectOnConnackError: true,
      connectTimeout: 10_000,
      queueQoSZero: false,
      messageIdProvider: new UniqueMessageIdProvider(),
      properties: v5 && this.s.max_packet_bytes > 0 ? { maximumPacketSize: this.s.max_packet_bytes } : undefined,
      username: this.s.username || undefined,
      password: this.s.password || undefined,
      ...readTls(this.s),
      rejectUnauthorized: this.s.reject_unauthorized,
      will: { topic: this.topics.status, payload: Buffer.from('offline'), qos: 1, retain: true },
    };
  }

  /**
   * Opens the verdict queue and starts connecting; does not wait for the broker (see waitConnected).
   * Rejects only for local configuration errors (an unreadable CA, certificate or key file). A store
   * that cannot be used (locked by another daemon, read-only, ...) does not stop the daemon: the queue
   * runs memory-only and says why in `queue.storeError`.
   */
  async start(): Promise<void> {
    const opts = this.options();
    this.q = await VerdictQueue.open({ dir: this.s.store_dir, maxCount: this.s.queue_max, maxBytes: this.s.queue_max_bytes, fsync: this.s.queue_fsync, log: this.ev.log });
    for (const [json, frameId] of this.early.splice(0)) this.q.push(frameId, json);
    this.client = mqtt.connect(this.s.url, opts);
    const c = this.client;
    c.on('connect', (p) => this.onConnect(p));
    c.on('close', () => this.onClose());
    c.on('disconnect', (p) => this.onDisconnect(p));
    c.on('error', (e) => this.onError(e));
    c.on('message', (topic, payload, packet) => this.onMessage(topic, payload, packet));
  }

  /** Resolves on the first CONNACK; rejects on a refused login, a TLS failure, or after `timeoutMs`. */
  waitConnected(timeoutMs = 30_000): Promise<void> {
    if (this.everConnected) return Promise.resolve();
    if (!this.client) return Promise.reject(new Error('MQTT publisher not started'));
    if (this.lastError && !this.isTransient(this.lastError)) return Promise.reject(new Error(this.describe(this.lastError)));
    return new Promise((resolve, reject) => {
      const done = (e?: Error) => {
        clearTimeout(timer);
        this.waiters.delete(done);
        if (e) reject(e);
        else resolve();
      };
      const timer = setTimeout(() => done(new Error(this.notReachable(timeoutMs))), timeoutMs);
      this.waiters.add(done);
    });
  }

  private notReachable(timeoutMs: number): string {
    const last = this.lastError ? `; last error: ${this.lastError.message}` : '';
    const why = this.closedBeforeConnack
      ? `: it closed the connection ${this.closedBeforeConnack} time(s) before accepting it (check mqtt.protocol_version, TLS and credentials, and the broker's log)`
      : ' (nothing answered: check mqtt.url, the network and the firewall)';
    return `MQTT broker ${this.s.url} not reachable within ${timeoutMs / 1000} s${why}${last}`;
  }

  private onConnect(p: IConnackPacket): void {
    this.connected = this.everConnected = true;
    this.connectedAt = Date.now();
    this.lastError = null;
    // MQTT 5 flow control: never more unacknowledged QoS 1 packets than the broker says it takes.
    this.window = Math.max(1, Math.min(VERDICT_WINDOW, p.properties?.receiveMaximum ?? VERDICT_WINDOW));
    this.ev.connection(true);
    this.ev.log('info', `MQTT connected to ${this.s.url} as ${this.clientId} (MQTT ${this.s.protocol_version === 5 ? '5' : '3.1.1'}; ${this.queueDepth} verdict(s) queued)`);
    this.client.publish(this.topics.status, 'online', { qos: 1, retain: true });
    this.client.subscribe([this.topics.trigger, this.topics.cmdWildcard], { qos: 1 }, (err) => err && this.ev.log('error', `MQTT subscribe failed: ${err.message}`));
    for (const w of [...this.waiters]) w();
    this.pump();
  }

  private onClose(): void {
    if (!this.connected) this.closedBeforeConnack++;
    else if (!this.closing) {
      this.ev.log('warn', `MQTT connection to ${this.s.url} lost; ${this.queueDepth} verdict(s) queued (${this.q?.storeError ? 'some in memory only: the store fails' : 'on disk'}), reconnecting`);
      this.noteShortSession();
    }
    this.connected = false;
    this.ev.connection(false);
  }

  /** Without MQTT 5's reason code a takeover only shows as sessions the broker keeps ending at once. */
  private noteShortSession(): void {
    const now = Date.now();
    const takeover = this.lastDisconnectReason === TAKEOVER;
    this.lastDisconnectReason = null;
    if (takeover || now - this.connectedAt > 5000) return;
    this.shortSessions = [...this.shortSessions.filter((t) => now - t < 60_000), now];
    if (this.shortSessions.length < 3) return;
    const who = this.s.client_id
      ? `another client with the same client id "${this.clientId}" is probably connecting (two daemons for one station? give each its own mqtt.client_id, or leave it empty)`
      : "check the broker's log";
    this.logRepeated('warn', 'short-sessions', `MQTT broker ${this.s.url} closed the connection ${this.shortSessions.length} times in a minute right after accepting it: ${who}`);
  }

  private onDisconnect(p: IDisconnectPacket): void {
    this.lastDisconnectReason = p.reasonCode ?? null;
    if (p.reasonCode === TAKEOVER) {
      this.logRepeated(
        'error',
        'takeover',
        `MQTT session taken over: another client connected to ${this.s.url} with the same client id "${this.clientId}" (two daemons for one station? give each its own mqtt.client_id, or leave it empty for a unique one)`,
      );
    } else {
      this.ev.log('warn', `MQTT broker ${this.s.url} disconnected us: reason 0x${(p.reasonCode ?? 0).toString(16)}${p.properties?.reasonString ? ` (${p.properties.reasonString})` : ''}`);
    }
  }

  private onError(e: Error): void {
    this.lastError = e;
    const msg = this.describe(e);
    this.logRepeated('error', msg, msg);
    if (this.connected || this.isTransient(e)) return;
    for (const w of [...this.waiters]) w(new Error(msg));
  }

  private isTransient(e: Error): boolean {
    return TRANSIENT.has(String((e as { code?: unknown }).code));
  }

  private describe(e: Error): string {
    const code = (e as { code?: unknown }).code;
    return typeof code === 'number' && AUTH_CODES.has(code) ? `MQTT broker ${this.s.url} refused the login (${e.message}): check mqtt.username / mqtt.password` : `MQTT error: ${e.message}`;
  }

  /** The reconnect loop repeats the same failure every second: log it at once, then once a minute with a count. */
  private logRepeated(level: 'warn' | 'error', key: string, msg: string): void {
    const now = Date.now();
    const r = this.repeats.get(key);
    if (r && now - r.last < REPEAT_LOG_MS) {
      r.count++;
      return;
    }
    if (this.repeats.size > 64) this.repeats.clear();
    this.repeats.set(key, { last: now, count: 0 });
    this.ev.log(level, r?.count ? `${msg} (${r.count} more time(s) in the last minute)` : msg);
  }

  /** Topics whose retained message was reported already: the broker replays it at every (re)connect. */
  private readonly retainedSeen = new Set<string>();

  /** Nothing a client sends may throw here: an exception in an mqtt.js handler ends the daemon. */
  private onMessage(topic: string, payload: Buffer, packet: IPublishPacket): void {
    try {
      if (topic === this.topics.trigger) return this.onTrigger(payload, packet.retain);
      const d = parseCommand({ topic, payload, retain: packet.retain, properties: packet.properties }, { base: this.topics.base, policy: this.s.commands, protocolVersion: this.s.protocol_version });
      if (d.kind === 'ignore') return this.ignored(topic, packet.retain, d.why);
      if (d.kind === 'reject') return this.respond(d, { ok: false, error: d.error }, 'refused');
      // The handler may throw synchronously or return a non-promise: both become an error response.
      Promise.resolve()
        .then(() => this.ev.command(d.name, d.body))
        .then(
          (result) => this.respond(d, { ok: true, result }, 'ok'),
          (e: unknown) => this.respond(d, { ok: false, error: e instanceof Error ? e.message : String(e) }, 'failed'),
        );
    } catch (e) {
      this.ev.log('error', `MQTT message on ${forLog(topic)} not handled: ${forLog((e as Error)?.message ?? e, 300)}`);
    }
  }

  private onTrigger(payload: Buffer, retain: boolean): void {
    const d = parseTriggerMessage(payload, { retain, maxBytes: this.s.commands.maxBytes });
    if (d.kind === 'ignore') return this.ignored(this.topics.trigger, retain, d.why);
    if (d.refused) this.ev.log('warn', `trigger: ${d.refused}; inspecting the part without a part id`);
    this.ev.trigger(d.partId);
  }

  private ignored(topic: string, retain: boolean, why: string): void {
    if (retain) {
      // Bounded: a client publishing retained messages on many topics must not grow this set forever.
      if (this.retainedSeen.has(topic) || this.retainedSeen.size >= 256) return;
      this.retainedSeen.add(topic);
    }
    this.ev.log(retain ? 'warn' : 'info', `MQTT message ignored: ${why}`);
  }

  private respond(
    d: { name: string; responseTopic: string; requestId: RequestId; correlationData: Buffer | undefined; sender: string },
    outcome: { ok: true; result: unknown } | { ok: false; error: string },
    verb: 'ok' | 'refused' | 'failed',
  ): void {
    const head = { schema: RESPONSE_SCHEMA, command: d.name, request_id: d.requestId };
    let json: string;
    try {
      json = JSON.stringify({ ...head, ...outcome });
    } catch (e) {
      json = JSON.stringify({ ...head, ok: false, error: `the result could not be serialised: ${(e as Error).message}` });
    }
    const rid = d.requestId === null ? '' : ` request ${forLog(d.requestId, 128)}`;
    this.ev.log('info', `command ${d.name}${rid} (sender ${d.sender}): ${verb}${outcome.ok ? '' : `: ${forLog(outcome.error, 300)}`}`);
    const properties = this.s.protocol_version === 5 ? { correlationData: d.correlationData, contentType: 'application/json' } : undefined;
    this.client.publish(
      d.responseTopic,
      json,
      { qos: 1, properties },
      (err) => err && this.ev.log('warn', `response to ${d.name} on ${forLog(d.responseTopic)} not delivered: ${forLog(err.message)}`),
    );
  }

  /**
   * Queues the verdict (durably when the store works) and publishes it at QoS 1 when the window has
   * room. Never throws and never waits: inspection must go on whatever the broker or the disk do.
   */
  publishVerdict(json: string, frameId: string): void {
    if (!this.q) {
      if (this.early.length >= this.s.queue_max) this.early.shift();
      this.early.push([json, frameId]);
      return;
    }
    this.q.push(frameId, json);
    this.pump();
  }

  private verdictOptions(frameId: string): IClientPublishOptions {
    const opts: IClientPublishOptions = { qos: 1 };
    if (this.s.protocol_version === 5) opts.properties = { contentType: 'application/json', correlationData: Buffer.from(frameId), userProperties: { frame_id: frameId } };
    return opts;
  }

  /** Fills the window from the queue's head, oldest first. */
  private pump(): void {
    const q = this.q;
    if (!q || !this.connected || Date.now() < this.holdUntil) return;
    for (const seq of q.seqs()) {
      if (this.inflight.size >= this.window) return;
      if (this.inflight.has(seq)) continue;
      this.inflight.add(seq);
      void this.send(q, seq);
    }
  }

  private async send(q: VerdictQueue, seq: number): Promise<void> {
    const rec = await q.read(seq);
    if (!rec || !this.connected) {
      this.inflight.delete(seq);
      if (rec) return;
      // Still queued after a failed read (I/O error): try again in a while, not in a loop.
      if (q.has(seq)) return this.holdOff();
      return this.pump();
    }
    this.client.publish(this.topics.verdict, rec.payload, this.verdictOptions(rec.frameId), (err) => this.onAck(q, seq, rec.frameId, err));
  }

  private onAck(q: VerdictQueue, seq: number, frameId: string, err?: Error): void {
    this.inflight.delete(seq);
    if (!err) {
      q.ack(seq);
      return this.pump();
    }
    // Still queued. A broker that refuses verdicts (quota, ACL) is asked again in a while, not in a loop.
    this.logRepeated('warn', `puback:${err.message}`, `verdict ${frameId} not accepted by the broker (${err.message}): kept queued, retried`);
    this.holdOff();
  }

  private holdOff(): void {
    if (!this.connected || this.closing) return;
    this.holdUntil = Date.now() + 2000;
    setTimeout(() => this.pump(), 2000).unref();
  }

  /** Binary JPEG, QoS 0: dropped while offline so images never hold up verdicts. */
  publishImage(topic: string, jpeg: Uint8Array, frameId: string): void {
    if (!this.connected || this.closing) return;
    const opts: IClientPublishOptions = { qos: 0 };
    if (this.s.protocol_version === 5) opts.properties = { contentType: 'image/jpeg', correlationData: Buffer.from(frameId), userProperties: { frame_id: frameId } };
    this.client.publish(topic, Buffer.from(jpeg), opts);
  }

  publishJson(topic: string, obj: unknown, retain = false): void {
    if (!this.client || this.closing || (!this.connected && !retain)) return;
    const opts: IClientPublishOptions = { qos: retain ? 1 : 0, retain };
    if (this.s.protocol_version === 5) opts.properties = { contentType: 'application/json' };
    this.client.publish(topic, JSON.stringify(obj), opts);
  }

  /**
   * Waits up to `timeoutMs` for the queue to drain while connected, publishes "offline", disconnects
   * (forced after a second) and closes the queue: returns within about timeoutMs + 1.5 s whatever the
   * broker and the disk do. Counts what is left: `onDisk` is sent at the next start, `memoryOnly` is lost.
   */
  async stop(timeoutMs = 10_000): Promise<{ onDisk: number; memoryOnly: number }> {
    const until = Date.now() + timeoutMs;
    while (this.client && this.connected && this.queueDepth > 0 && Date.now() < until) await sleep(50);
    this.closing = true;
    for (const w of [...this.waiters]) w(new Error('MQTT publisher stopped'));
    if (this.client) await this.endClient(until);
    const left = this.q ? await this.q.close(Math.max(200, Math.min(1000, until - Date.now()))) : { onDisk: 0, memoryOnly: 0 };
    return { onDisk: left.onDisk, memoryOnly: left.memoryOnly + this.early.length };
  }

  private async endClient(until: number): Promise<void> {
    const c = this.client;
    if (this.connected)
      await Promise.race([new Promise<void>((r) => c.publish(this.topics.status, 'offline', { qos: 1, retain: true }, () => r())), sleep(Math.max(100, Math.min(500, until - Date.now())))]);
    // end(false) waits for every unacknowledged packet, and a second end() is a no-op while the first
    // is pending: with a frozen broker only destroying the socket ends it (the verdicts are queued).
    const ended = new Promise<void>((r) => c.end(Object.keys(c.outgoing).length > 0, {}, () => r()));
    if ((await Promise.race([ended.then(() => true), sleep(1000).then(() => false)])) === false) c.stream?.destroy();
  }
}
