/** The embedded broker (aedes) used when no broker is configured: loopback only, MQTT 3.1.1. */
import { createServer, type Server } from 'node:net';
import { Aedes } from 'aedes';

export interface EmbeddedBroker {
  url: string;
  close(): Promise<void>;
}

export async function startEmbeddedBroker(port: number): Promise<EmbeddedBroker> {
  const broker = await Aedes.createBroker();
  const server: Server = createServer(broker.handle as never);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`embedded MQTT broker cannot listen on 127.0.0.1:${port}: ${e.message} (set mqtt.url to use your broker, or mqtt.embedded_port)`)));
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const actual = (server.address() as { port: number }).port;
  return {
    url: `mqtt://127.0.0.1:${actual}`,
    close: () =>
      new Promise<void>((resolve) => {
        broker.close(() => server.close(() => resolve()));
      }),
  };
}
