/**
 * The inference worker thread: onnxruntime's run() blocks the thread it is called on for tens of ms,
 * so backbone, routing, scoring and JPEG encoding happen here while the main thread keeps capture,
 * MQTT and the watchdog moving.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DEFAULT_BUNDLE_MAX_BYTES, readBundleFileBounded } from '../bundle/bundle-file.ts';
import { Inspector } from './inspector.ts';
import { encodeRgb } from '../score/overlay.ts';
import type { BundleSummary, FromWorker, ToWorker, WorkerInit } from './protocol.ts';

const init = workerData as WorkerInit;
const port = parentPort!;
const send = (m: FromWorker, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);

function summary(path: string, insp: Inspector): BundleSummary {
  const h = insp.bundle.header;
  return {
    bundle_id: h.bundle_id,
    created_at: h.created_at,
    path,
    scoring: h.scoring,
    clusters: h.clusters.map((c) => ({ id: c.id, name: c.name, threshold: c.threshold, routing_limit: c.routing_limit, size: c.members.length })),
  };
}

async function load(path: string): Promise<Inspector> {
  const bundle = readBundleFileBounded(path, init.maxBundleBytes ?? DEFAULT_BUNDLE_MAX_BYTES);
  return Inspector.load(bundle, init.backbone, { provider: init.provider, threads: init.threads, overrides: init.overrides });
}

let inspector: Inspector;
try {
  inspector = await load(init.bundle);
  send({ type: 'ready', bundle: summary(init.bundle, inspector) });
} catch (e) {
  send({ type: 'fatal', error: (e as Error).message });
  process.exit(1);
}

// Messages are handled one at a time, in order: a reload never overlaps a frame.
let chain = Promise.resolve();
port.on('message', (m: ToWorker) => {
  chain = chain.then(() => handle(m)).catch((e) => console.error(`inference worker: ${(e as Error).message}`));
});

async function handle(m: ToWorker): Promise<void> {
  if (m.type === 'close') {
    await inspector.release();
    port.close();
    return;
  }
  if (m.type === 'ping') {
    send({ type: 'pong', id: m.id });
    return;
  }
  if (m.type === 'reload') {
    try {
      const next = await load(m.bundle);
      const old = inspector;
      inspector = next;
      await old.release();
      send({ type: 'reloaded', id: m.id, bundle: summary(m.bundle, next) });
    } catch (e) {
      send({ type: 'reloaded', id: m.id, error: (e as Error).message });
    }
    return;
  }
  const t0 = performance.now();
  try {
    const img = { width: m.width, height: m.height, data: new Uint8Array(m.data) };
    const r = await inspector.inspect(img);
    const { heatmap: _h, geometry: _g, fitted: _f, region_boxes: _b, ...result } = r;
    const heatmapJpeg = m.heatmap ? ((await inspector.heatmapImage(r, 'jpeg')) ?? undefined) : undefined;
    let frameJpeg: Uint8Array | undefined;
    if (m.image === 'always' || (m.image === 'not-ok' && r.verdict !== 'OK')) frameJpeg = new Uint8Array(await encodeRgb(img.data, img.width, img.height, 'jpeg'));
    const transfer = [heatmapJpeg, frameJpeg].filter((x): x is Uint8Array => !!x).map((x) => x.buffer as ArrayBuffer);
    send({ type: 'result', id: m.id, result, heatmapJpeg, frameJpeg, ms: performance.now() - t0 }, transfer);
  } catch (e) {
    send({ type: 'failed', id: m.id, error: (e as Error).message });
  }
}
