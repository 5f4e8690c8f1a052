/**
 * The calibration child process of the daemon (`cmd/calibrate`): builds a bundle from the captured
 * frames, scores the held-out frames with it, and reports progress over IPC (build-run.ts does the
 * work, as the CLI's calibrate does). A process of its own (niced, few onnxruntime threads) so that a
 * calibration can neither block nor crash inspection, MQTT or the watchdog in the daemon; the daemon
 * kills it to cancel.
 */
import { buildAndValidate, requestConfig, type BuildOutcome, type BuildRequest } from './build-run.ts';

export type { HeldOutVerdict } from './build-run.ts';

export interface ChildRequest extends BuildRequest {
  type: 'start';
}

export type ChildOutcome = BuildOutcome;

export type ChildMessage =
  | { type: 'progress'; stage: string; done: number; total: number }
  | { type: 'log'; msg: string }
  | { type: 'done'; outcome: ChildOutcome }
  | { type: 'failed'; error: string };

const send = (m: ChildMessage) => process.send?.(m);

async function run(req: ChildRequest): Promise<ChildOutcome> {
  const { outcome } = await buildAndValidate(
    req,
    requestConfig(req),
    (stage, done, total) => send({ type: 'progress', stage, done, total }),
    (msg) => send({ type: 'log', msg }),
  );
  return outcome;
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
