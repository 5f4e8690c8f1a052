/** Loopback port helpers (demo, benchmarks, tests). */
import { createServer } from 'node:net';

/** A port the OS reports free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** `preferred` when it is free on 127.0.0.1, else 0 (let the listener pick one). */
export function portOr(preferred: number): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(0));
    s.listen(preferred, '127.0.0.1', () => s.close(() => resolve(preferred)));
  });
}
