// A stand-in inference worker for supervisor tests: speaks the worker protocol, and misbehaves on
// request (workerData.behaviour) the way a real one can: hang in a frame, crash, hang in a load.
import { parentPort, workerData } from 'node:worker_threads';

const { bundle, behaviour } = workerData;
const summary = (path) => ({ bundle_id: `id-of-${path}`, created_at: '2026-01-01T00:00:00Z', path, clusters: [] });
let frames = 0;
parentPort.postMessage({ type: 'ready', bundle: summary(bundle) });
parentPort.on('message', (m) => {
  if (m.type === 'ping') parentPort.postMessage({ type: 'pong', id: m.id });
  else if (m.type === 'close') parentPort.close();
  else if (m.type === 'inspect') {
    frames++;
    if (behaviour === 'hang-on-inspect' && frames === 2) for (;;);
    if (behaviour === 'crash-on-inspect' && frames === 2) throw new Error('boom in the worker');
    parentPort.postMessage({ type: 'result', id: m.id, result: { verdict: 'OK' }, ms: 1 });
  } else if (m.type === 'reload') {
    if (behaviour === 'hang-on-reload') for (;;);
    parentPort.postMessage({ type: 'reloaded', id: m.id, bundle: summary(m.bundle) });
  }
});
