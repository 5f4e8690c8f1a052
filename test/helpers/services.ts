/** Real processes for integration tests: mosquitto on a free loopback port, and the daemon itself. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { userInfo } from 'node:os';
import mqtt from 'mqtt';
import type { MqttSettings } from '../../src/publish/mqtt-publisher.ts';

export function which(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

export { freePort } from '../../src/util/net.ts';

/** MqttPublisher settings for tests and fault scripts: a broker URL and a store, defaults for the rest. */
export function publisherSettings(o: Partial<MqttSettings> & { url: string; store_dir: string }): MqttSettings {
  return {
    prefix: 'hce',
    station: 'test',
    protocol_version: 5,
    client_id: '',
    username: '',
    password: '',
    ca: '',
    cert: '',
    key: '',
    reject_unauthorized: true,
    keepalive_s: 30,
    commands: { control: false, token: '', maxBytes: 65536 },
    queue_max: 200_000,
    queue_max_bytes: 2 ** 28,
    max_packet_bytes: 65536 + 4096,
    ...o,
  };
}

export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 20_000, stepMs = 50): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export class Mosquitto {
  private proc: ChildProcess | null = null;
  log = '';
  /** `head` goes before everything else (e.g. per_listener_settings), `extra` after the default listener. */
  constructor(
    readonly dir: string,
    readonly port: number,
    extra = '',
    head = '',
  ) {
    mkdirSync(dir, { recursive: true });
    // Started as root, mosquitto would drop to its own user and lose access to the test's 0700 temp dir.
    writeFileSync(
      join(dir, 'mosquitto.conf'),
      `${[head, `user ${userInfo().username}`, `listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence true', `persistence_location ${dir}/`, 'log_dest stderr', extra].join('\n')}\n`,
    );
  }
  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }
  async start(): Promise<void> {
    this.proc = spawn('mosquitto', ['-c', join(this.dir, 'mosquitto.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr!.on('data', (d) => (this.log += d.toString()));
    await waitFor(`mosquitto on port ${this.port}`, () => portOpen(this.port), 10_000).catch((e: Error) => {
      throw new Error(`${e.message}; mosquitto said: ${this.log.trim().slice(-500)}`);
    });
  }
  /** SIGTERM: mosquitto saves its persistent sessions and exits. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const done = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await done;
    this.proc = null;
  }
}

export class DaemonProcess {
  proc: ChildProcess;
  out = '';
  readonly exited: Promise<number | null>;
  constructor(configFile: string, env: Record<string, string> = {}) {
    const bin = join(import.meta.dirname, '..', '..', 'bin', 'hiercore-edge.js');
    this.proc = spawn(process.execPath, [bin, 'run', '--config', configFile], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d) => (this.out += d.toString()));
    this.proc.stderr!.on('data', (d) => (this.out += d.toString()));
    this.exited = new Promise((r) => this.proc.once('exit', (code) => r(code)));
  }
  kill(sig: NodeJS.Signals): void {
    this.proc.kill(sig);
  }
}

/** An MQTT 3.1.1 client once a broker that is still starting (e.g. the daemon's embedded one) accepts it. */
export function connectWhenUp(port: number, timeoutMs = 60_000): Promise<mqtt.MqttClient> {
  return waitFor(
    `MQTT broker on port ${port}`,
    () =>
      new Promise<mqtt.MqttClient | null>((resolve) => {
        const cl = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 500, protocolVersion: 4 });
        cl.once('connect', () => resolve(cl));
        cl.once('error', () => {
          cl.end(true);
          resolve(null);
        });
      }),
    timeoutMs,
    300,
  );
}
