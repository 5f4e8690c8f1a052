/**
 * What both MQTT connections of a station (the JSON topics and the Sparkplug edge node) share: one
 * broker, one login, one TLS set-up. Each connection adds its own client id, Will and session.
 */
import { readFileSync } from 'node:fs';

export interface BrokerConnection {
  url: string;
  protocol_version: 4 | 5;
  /** "" = a default of the connection's own */
  client_id: string;
  username: string;
  password: string;
  /** PEM file paths, "" = none */
  ca: string;
  cert: string;
  key: string;
  reject_unauthorized: boolean;
  keepalive_s: number;
}

export interface TlsMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** Reads the CA, certificate and key files; an unreadable one is an error naming its mqtt.* key. */
export function readTls(c: Pick<BrokerConnection, 'ca' | 'cert' | 'key'>): TlsMaterial {
  const read = (key: string, path: string) => {
    if (!path) return undefined;
    try {
      return readFileSync(path);
    } catch (e) {
      throw new Error(`mqtt.${key} ${path}: ${(e as Error).message}`);
    }
  };
  return { ca: read('ca', c.ca), cert: read('cert', c.cert), key: read('key', c.key) };
}
