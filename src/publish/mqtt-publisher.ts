/**
 * The MQTT side of the daemon: status with last will, verdicts at QoS 1 through a persistent outgoing
 * store (a verdict published while the broker is down, or not yet acknowledged when the daemon dies,
 * is sent after the next start), heatmaps and images at QoS 0 (dropped while offline), triggers and
 * request/response commands. MQTT 5 properties where the broker speaks 5, plain 3.1.1 otherwise.
 */
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import mqtt, { type IClientOptions, type IClientPublishOptions, type MqttClient } from 'mqtt';
import { COMMANDS, RESPONSE_SCHEMA, parseTrigger, topics, type CommandName, type Topics } from './topics.ts';

export interface MqttSettings {
  url: string;
  prefix: string;
  station: string;
  protocol_version: 4 | 5;
  client_id: string;
  username: string;
  password: string;
  ca: string;
  cert: string;
  key: string;
  reject_unauthorized: boolean;
  store_dir: string;
  keepalive_s: number;
}

export type CommandHandler = (name: CommandName, body: Record<string, unknown>) => Promise<unknown>;

export interface PublisherEvents {
  log: (level: 'info' | 'warn' | 'error', msg: string) => void;
  trigger: (partId: string | null) => void;
  command: CommandHandler;
  connection: (up: boolean) => void;
}

interface LevelStoreManager {
  incoming: unknown;
  outgoing: unknown;
  close?: (cb: () => void) => void;
}

export class MqttPublisher {
  readonly topics: Topics;
  private client!: MqttClient;
  private pendingVerdicts = 0;
  private connected = false;
  private store: LevelStoreManager | null = null;
  private closing = false;

  constructor(private readonly s: MqttSettings, private readonly ev: PublisherEvents) {
    this.topics = topics(s.prefix, s.station);
  }

  get queueDepth(): number {
    return this.pendingVerdicts;
  }
  get isConnected(): boolean {
    return this.connected;
  }

  private options(): IClientOptions {
    const read = (key: string, path: string) => {
      try {
        return readFileSync(path);
      } catch (e) {
        throw new Error(`mqtt.${key} ${path}: ${(e as Error).message}`);
      }
    };
    mkdirSync(this.s.store_dir, { recursive: true });
    // mqtt-level-store keeps QoS 1 packets on disk until the broker acknowledges them.
    const levelStore = createRequire(import.meta.url)('mqtt-level-store') as (dir: string) => LevelStoreManager;
    this.store = levelStore(this.s.store_dir);
    return {
      protocolVersion: this.s.protocol_version,
      clientId: this.s.client_id || `hiercore-edge-${this.s.station}`,
      clean: true,
      keepalive: this.s.keepalive_s,
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      queueQoSZero: false,
      username: this.s.username || undefined,
      password: this.s.password || undefined,
      ca: this.s.ca ? read('ca', this.s.ca) : undefined,
      cert: this.s.cert ? read('cert', this.s.cert) : undefined,
      key: this.s.key ? read('key', this.s.key) : undefined,
      rejectUnauthorized: this.s.reject_unauthorized,
      incomingStore: this.store.incoming as IClientOptions['incomingStore'],
      outgoingStore: this.store.outgoing as IClientOptions['outgoingStore'],
      will: { topic: this.topics.status, payload: Buffer.from('offline'), qos: 1, retain: true },
    };
  }

  /** Connects; resolves on the first CONNACK, rejects on a refused login or a bad TLS set-up. */
  start(timeoutMs = 30_000): Promise<void> {
    this.client = mqtt.connect(this.s.url, this.options());
    const c = this.client;
    c.on('connect', () => {
      this.connected = true;
      this.ev.connection(true);
      this.ev.log('info', `MQTT connected to ${this.s.url} (MQTT ${this.s.protocol_version === 5 ? '5' : '3.1.1'})`);
      c.publish(this.topics.status, 'online', { qos: 1, retain: true });
      c.subscribe([this.topics.trigger, this.topics.cmdWildcard], { qos: 1 }, (err) => err && this.ev.log('error', `MQTT subscribe failed: ${err.message}`));
    });
    let closedBeforeConnack = 0;
    c.on('close', () => {
      if (!this.connected) closedBeforeConnack++;
      if (this.connected && !this.closing) this.ev.log('warn', `MQTT connection to ${this.s.url} lost; verdicts are queued on disk (${this.pendingVerdicts} pending) and reconnecting`);
      this.connected = false;
      this.ev.connection(false);
    });
    c.on('message', (topic, payload, packet) => this.onMessage(topic, payload, packet.properties));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const why = closedBeforeConnack ? `: it closed the connection ${closedBeforeConnack} time(s) before accepting it (check mqtt.protocol_version, TLS and credentials, and the broker's log)` : ' (nothing answered: check mqtt.url, the network and the firewall)';
        reject(new Error(`MQTT broker ${this.s.url} not reachable within ${timeoutMs / 1000} s${why}`));
      }, timeoutMs);
      c.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      c.on('error', (e) => {
        const code = (e as { code?: number }).code;
        const auth = code === 4 || code === 5 || code === 134 || code === 135;
        const msg = auth ? `MQTT broker ${this.s.url} refused the login (${e.message}): check mqtt.username / mqtt.password` : `MQTT error: ${e.message}`;
        this.ev.log('error', msg);
        if (!this.connected) {
          clearTimeout(timer);
          reject(new Error(msg));
        }
      });
    });
  }

  private onMessage(topic: string, payload: Buffer, props?: { responseTopic?: string; correlationData?: Buffer }): void {
    if (topic === this.topics.trigger) {
      this.ev.trigger(parseTrigger(payload));
      return;
    }
    const m = /\/cmd\/([^/]+)$/.exec(topic);
    if (!m) return;
    const name = m[1];
    let body: Record<string, unknown> = {};
    const text = payload.toString().trim();
    const responseTopic = props?.responseTopic ?? this.topics.response(name);
    const respond = (r: Record<string, unknown>) =>
      this.client.publish(responseTopic, JSON.stringify({ schema: RESPONSE_SCHEMA, command: name, request_id: body.request_id ?? null, ...r }), {
        qos: 1,
        properties: this.s.protocol_version === 5 ? { correlationData: props?.correlationData, contentType: 'application/json' } : undefined,
      });
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        respond({ ok: false, error: 'request payload is not JSON (send {} or an empty payload)' });
        return;
      }
    }
    if (!(COMMANDS as readonly string[]).includes(name)) {
      respond({ ok: false, error: `unknown command "${name}"; commands: ${COMMANDS.join(', ')}` });
      return;
    }
    this.ev
      .command(name as CommandName, body)
      .then((result) => respond({ ok: true, result }))
      .catch((e: Error) => respond({ ok: false, error: e.message }));
  }

  /** QoS 1 through the persistent store; resolves when the broker has acknowledged it. */
  publishVerdict(json: string, frameId: string): Promise<void> {
    this.pendingVerdicts++;
    const opts: IClientPublishOptions = { qos: 1 };
    if (this.s.protocol_version === 5) opts.properties = { contentType: 'application/json', correlationData: Buffer.from(frameId), userProperties: { frame_id: frameId } };
    return new Promise((resolve) => {
      this.client.publish(this.topics.verdict, json, opts, (err) => {
        this.pendingVerdicts--;
        if (err) this.ev.log('warn', `verdict ${frameId} not acknowledged yet: ${err.message}`);
        resolve();
      });
    });
  }

  /** Binary JPEG, QoS 0: dropped while offline so images never hold up verdicts. */
  publishImage(topic: string, jpeg: Uint8Array, frameId: string): void {
    if (!this.connected) return;
    const opts: IClientPublishOptions = { qos: 0 };
    if (this.s.protocol_version === 5) opts.properties = { contentType: 'image/jpeg', correlationData: Buffer.from(frameId), userProperties: { frame_id: frameId } };
    this.client.publish(topic, Buffer.from(jpeg), opts);
  }

  publishJson(topic: string, obj: unknown, retain = false): void {
    if (!this.connected && !retain) return;
    const opts: IClientPublishOptions = { qos: retain ? 1 : 0, retain };
    if (this.s.protocol_version === 5) opts.properties = { contentType: 'application/json' };
    this.client.publish(topic, JSON.stringify(obj), opts);
  }

  /** Waits up to `timeoutMs` for unacknowledged verdicts, publishes "offline", disconnects. */
  async stop(timeoutMs = 10_000): Promise<number> {
    const until = Date.now() + timeoutMs;
    while (this.pendingVerdicts > 0 && this.connected && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    const left = this.pendingVerdicts;
    this.closing = true;
    if (this.connected) await new Promise<void>((r) => this.client.publish(this.topics.status, 'offline', { qos: 1, retain: true }, () => r()));
    await new Promise<void>((r) => this.client.end(false, {}, () => r()));
    await new Promise<void>((r) => (this.store?.close ? this.store.close(() => r()) : r()));
    return left;
  }
}
