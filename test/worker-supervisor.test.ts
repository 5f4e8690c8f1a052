/** The worker supervisor with a misbehaving stand-in worker: stuck, crashed, a load that never ends. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkerSupervisor } from '../src/inspect/worker-supervisor.ts';
import type { WorkerInit } from '../src/inspect/protocol.ts';
import { waitFor } from './helpers/services.ts';

const script = new URL('./helpers/fake-worker.mjs', import.meta.url);
const frame = { width: 1, height: 1, data: new Uint8Array(3) };
const opts = { heatmap: false, image: 'never' as const };

async function start(behaviour: string, o: { timeoutMs?: number; reloadTimeoutMs?: number } = {}) {
  const logs: string[] = [];
  const restarts: string[] = [];
  const init = { bundle: '/bundles/a.hcebundle', backbone: '', provider: 'cpu', threads: 1, behaviour } as unknown as WorkerInit;
  const s = await WorkerSupervisor.start(init, {
    heartbeatMs: 50,
    timeoutMs: o.timeoutMs ?? 400,
    reloadTimeoutMs: o.reloadTimeoutMs ?? 400,
    log: (_l, m) => logs.push(m),
    restarted: (w) => restarts.push(w),
    script,
  });
  return { s, logs, restarts };
}

test('supervisor: a worker stuck in a frame is detected by its heartbeat, restarted, counted, and inspection goes on', { timeout: 20_000 }, async () => {
  const { s, restarts, logs } = await start('hang-on-inspect');
  try {
    await s.inspect(frame, opts);
    assert.equal(s.alive, true);
    // The check is attached at once: the rejection may land before the wait below polls again.
    const stuck = assert.rejects(s.inspect(frame, opts), /exited/);
    await waitFor('not alive', () => !s.alive, 5000);
    await stuck;
    await waitFor('restart', () => restarts.length === 1 && s.alive, 5000);
    assert.match(restarts[0], /no answer for/);
    assert.ok(logs.some((l) => /restarting it with bundle id-of-\/bundles\/a.hcebundle/.test(l)));
    const r = await s.inspect(frame, opts);
    assert.equal(r.result.verdict, 'OK', 'the new worker inspects');
    assert.equal(s.restarts, 1);
  } finally {
    await s.close();
  }
});

test('supervisor: a worker that crashes is replaced on the bundle it had', { timeout: 20_000 }, async () => {
  const { s, restarts } = await start('crash-on-inspect');
  try {
    await s.inspect(frame, opts);
    await assert.rejects(s.inspect(frame, opts), /exited/);
    await waitFor('restart', () => restarts.length === 1 && s.alive, 5000);
    assert.match(restarts[0], /exited unexpectedly.*boom in the worker/);
    assert.equal(s.bundle.path, '/bundles/a.hcebundle');
  } finally {
    await s.close();
  }
});

test('supervisor: a bundle load past reload_timeout is abandoned, the previous bundle stays active', { timeout: 20_000 }, async () => {
  const { s, restarts } = await start('hang-on-reload', { timeoutMs: 5000, reloadTimeoutMs: 300 });
  try {
    await assert.rejects(s.reload('/bundles/b.hcebundle'), /took longer than 0.3 s .*previous bundle stays active/);
    await waitFor('restart', () => restarts.length === 1 && s.alive, 5000);
    assert.equal(s.bundle.path, '/bundles/a.hcebundle');
    assert.equal((await s.inspect(frame, opts)).result.verdict, 'OK');
  } finally {
    await s.close();
  }
});

test('supervisor: a healthy idle worker stays alive on heartbeats alone (trigger mode, paused)', { timeout: 20_000 }, async () => {
  const { s, restarts } = await start('normal', { timeoutMs: 300 });
  try {
    await new Promise((r) => setTimeout(r, 1200));
    assert.equal(s.alive, true);
    assert.equal(restarts.length, 0);
    const b = await s.reload('/bundles/c.hcebundle');
    assert.equal(b.path, '/bundles/c.hcebundle');
  } finally {
    await s.close();
  }
});

test('supervisor: the bundle stays readable while a replacement worker starts, and close() during a hanging reload starts nothing new', { timeout: 20_000 }, async () => {
  const { s, restarts } = await start('crash-on-inspect');
  await s.inspect(frame, opts);
  await assert.rejects(s.inspect(frame, opts), /exited/);
  // The daemon reads the bundle for NO_FRAME answers and stats right after a failed frame.
  assert.equal(s.bundle.path, '/bundles/a.hcebundle', 'no throw while restarting');
  await waitFor('restart', () => restarts.length === 1 && s.alive, 5000);
  await s.close();

  const hang = await start('hang-on-reload', { timeoutMs: 5000, reloadTimeoutMs: 300 });
  const pending = assert.rejects(hang.s.reload('/bundles/b.hcebundle'), /took longer/);
  await hang.s.close();
  await pending;
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(hang.restarts.length, 0, 'no worker is started after close()');
});
