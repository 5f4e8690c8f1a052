/**
 * The calibration child process of the daemon (`cmd/calibrate`): builds a bundle from the captured
 * frames with calibrate(), scores the held-out frames with it, and reports progress over IPC. A
 * process of its own (niced, few onnxruntime threads) so that a calibration can neither block nor
 * crash inspection, MQTT or the watchdog in the daemon; the daemon kills it to cancel.
 */
import { calibrate } from './calibrate.ts';
import { calibrationOptions } from './options.ts';
import { loadEngineConfig } from '../config.ts';
import { writeBundleFile } from '../bundle/bundle-file.ts';
import { Inspector } from '../inspect/inspector.ts';
import { readImage } from '../features/image.ts';
import { Router } from '../route/router.ts';

export interface ChildRequest {
  type: 'start';
  images: string[];
  holdout: string[];
  /** engine settings file ("" = defaults) */
  engineConfig: string;
  backbone: string;
  threads: number;
  bundleOut: string;
}

export interface HeldOutVerdict {
  path: string;
  verdict: 'OK' | 'NG' | 'UNKNOWN';
  cluster: string | null;
  nearest: string;
  score: number | null;
}

export interface ChildOutcome {
  bundle_id: string;
  clusters: { name: string; size: number; threshold: number; routing_limit: number }[];
  heldOut: HeldOutVerdict[];
  /** per cluster: how many of its routing keys route to it, of how many */
  keysHome: { name: string; home: number; keys: number }[];
  duration_s: number;
}

export type ChildMessage =
  | { type: 'progress'; stage: string; done: number; total: number }
  | { type: 'log'; msg: string }
  | { type: 'done'; outcome: ChildOutcome }
  | { type: 'failed'; error: string };

const send = (m: ChildMessage) => process.send?.(m);

async function run(req: ChildRequest): Promise<ChildOutcome> {
  const t0 = performance.now();
  const c = loadEngineConfig(req.engineConfig || undefined, { backbone: req.backbone, runtime: { provider: 'cpu', threads: req.threads } });
  const opts = calibrationOptions(c);
  const { bundle } = await calibrate({ ...opts, images: req.images, log: (msg) => send({ type: 'log', msg }) }, (stage, done, total) => send({ type: 'progress', stage, done, total }));
  writeBundleFile(req.bundleOut, bundle);
  send({ type: 'progress', stage: 'validate', done: 0, total: req.holdout.length });
  const insp = await Inspector.load(bundle, req.backbone, { provider: 'cpu', threads: req.threads });
  const heldOut: HeldOutVerdict[] = [];
  try {
    for (const [i, path] of req.holdout.entries()) {
      const r = await insp.inspect(await readImage(path));
      heldOut.push({ path, verdict: r.verdict, cluster: r.cluster, nearest: r.route.nearest, score: r.score });
      send({ type: 'progress', stage: 'validate', done: i + 1, total: req.holdout.length });
    }
  } finally {
    await insp.release();
  }
  const dim = bundle.header.semantic_dim;
  const router = new Router(
    bundle.clusters.map((k) => ({ keys: k.keys, count: k.info.keys.count, limit: k.info.routing_limit })),
    dim,
  );
  const keysHome = bundle.clusters.map((k, ci) => {
    let home = 0;
    for (let j = 0; j < k.info.keys.count; j++) if (router.route(k.keys.slice(j * dim, (j + 1) * dim)).cluster === ci) home++;
    return { name: k.info.name, home, keys: k.info.keys.count };
  });
  return {
    bundle_id: bundle.header.bundle_id,
    clusters: bundle.header.clusters.map((k) => ({ name: k.name, size: k.members.length, threshold: k.threshold, routing_limit: k.routing_limit })),
    heldOut,
    keysHome,
    duration_s: Number(((performance.now() - t0) / 1000).toFixed(1)),
  };
}

/** The last message, then exit once it is on its way (onnxruntime threads would keep the process up). */
const finish = (m: ChildMessage) => process.send?.(m, undefined, {}, () => process.exit(0)) ?? process.exit(0);

process.once('message', (m: ChildRequest) => {
  run(m).then(
    (outcome) => finish({ type: 'done', outcome }),
    (e: Error) => finish({ type: 'failed', error: e.message }),
  );
});
// The daemon went away: nothing is waiting for this bundle any more.
process.on('disconnect', () => process.exit(0));
