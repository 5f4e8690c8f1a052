/** The frame scheduler on a fake clock: every mode, pause, snapshot, trigger binding and its bounds. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FrameScheduler, type NoFrameReason, type SchedulerOptions, type Trigger } from '../src/service/scheduler.ts';
import type { Frame } from '../src/capture/types.ts';
import { assessHealth, watchdogOk, type HealthFacts } from '../src/service/health.ts';

function rig(o: Partial<SchedulerOptions> = {}) {
  const clock = {
    t: 1_000_000,
    now() {
      return this.t;
    },
  };
  const noFrame: { t: Trigger; why: NoFrameReason }[] = [];
  const dropped: string[] = [];
  const s = new FrameScheduler(
    { mode: 'mqtt', maxFps: 0, windowMs: 2000, triggerQueueMax: 4, readyMax: 3, ...o },
    { noFrame: (t, why) => noFrame.push({ t, why }), dropped: (w, d) => dropped.push(`${w}: ${d}`) },
    clock,
  );
  let id = 0;
  const frame = (capturedAt = clock.t): Frame => ({ id: ++id, width: 1, height: 1, data: new Uint8Array(3), capturedAt });
  return { s, clock, noFrame, dropped, frame };
}

test('scheduler free mode: only the newest frame waits, replaced ones are counted; max_fps holds frames back', () => {
  const { s, clock, dropped, frame } = rig({ mode: 'free', maxFps: 10 });
  s.offerFrame(frame());
  s.offerFrame(frame());
  assert.equal(dropped.length, 1);
  assert.equal(s.next()!.frame.id, 2);
  assert.equal(s.next(), null);
  s.offerFrame(frame());
  assert.equal(s.next(), null, '100 ms have not passed since the last start');
  assert.equal(s.retryAfterMs(), 100);
  clock.t += 100;
  assert.equal(s.next()!.frame.id, 3);
});

test('scheduler all mode: every frame in order up to the bound; canAccept tells replay sources to wait', () => {
  const { s, dropped, frame } = rig({ mode: 'all' });
  for (let i = 0; i < 3; i++) s.offerFrame(frame());
  assert.equal(s.canAccept(), false);
  s.offerFrame(frame());
  assert.equal(dropped.length, 1, 'a live camera beyond the bound is dropped and counted');
  assert.deepEqual([s.next()!.frame.id, s.next()!.frame.id, s.next()!.frame.id], [1, 2, 3]);
  assert.equal(s.canAccept(), true);
});

test('scheduler mqtt mode: a trigger takes the first frame captured at or after it, never an older one', () => {
  const { s, clock, frame, noFrame } = rig();
  const old = frame(clock.t - 1);
  clock.t += 0;
  s.trigger('P-1');
  s.offerFrame(old);
  assert.equal(s.next(), null, 'a frame captured before the trigger is not bound to it');
  clock.t += 40;
  s.offerFrame(frame());
  const j = s.next()!;
  assert.equal(j.trigger!.partId, 'P-1');
  assert.ok(j.frame.capturedAt >= j.trigger!.at);
  assert.equal(noFrame.length, 0);
  s.offerFrame(frame());
  assert.equal(s.next(), null, 'no trigger, no inspection');
});

test('scheduler mqtt mode: no frame within the window gives NO_FRAME, in trigger order', () => {
  const { s, clock, noFrame, frame } = rig({ windowMs: 500 });
  s.trigger('A');
  clock.t += 100;
  s.trigger('B');
  clock.t += 450;
  s.tick();
  assert.deepEqual(
    noFrame.map((n) => [n.t.partId, n.why]),
    [['A', 'no frame within the trigger window']],
  );
  clock.t += 100;
  s.offerFrame(frame());
  assert.deepEqual(
    noFrame.map((n) => n.t.partId),
    ['A', 'B'],
    'B expired before the frame was offered',
  );
  assert.equal(s.next(), null);
});

test('scheduler: triggers while paused or with the camera lost are answered at once; pause answers pending ones', () => {
  const { s, noFrame, frame } = rig();
  s.trigger('P-1');
  s.trigger('P-2');
  s.pause();
  assert.deepEqual(
    noFrame.map((n) => [n.t.partId, n.why]),
    [
      ['P-1', 'paused'],
      ['P-2', 'paused'],
    ],
  );
  s.trigger('P-3');
  assert.equal(noFrame.at(-1)!.why, 'paused');
  s.offerFrame(frame());
  assert.equal(s.next(), null, 'paused: nothing inspected');
  s.resume();
  s.trigger('P-4');
  s.camera(false);
  s.trigger('P-5');
  assert.deepEqual(
    noFrame.slice(3).map((n) => [n.t.partId, n.why]),
    [
      ['P-4', 'camera lost'],
      ['P-5', 'camera lost'],
    ],
  );
  s.camera(true);
  s.trigger('P-6');
  s.offerFrame(frame());
  assert.equal(s.next()!.trigger!.partId, 'P-6');
});

test('scheduler: the trigger queue is bounded; a flood is refused and counted, not stored', () => {
  const { s, dropped } = rig({ triggerQueueMax: 4 });
  for (let i = 0; i < 10_000; i++) s.trigger(`P-${i}`);
  assert.equal(s.pendingTriggers, 4);
  assert.equal(dropped.filter((d) => d.startsWith('trigger')).length, 9996);
});

test('scheduler: bound frames are bounded too; a trigger that finds the ready queue full keeps waiting in its window', () => {
  const { s, frame, clock } = rig({ readyMax: 2, triggerQueueMax: 10 });
  for (let i = 0; i < 3; i++) s.trigger(`P-${i}`);
  clock.t += 1;
  for (let i = 0; i < 3; i++) s.offerFrame(frame());
  assert.equal(s.waiting, 2);
  assert.equal(s.pendingTriggers, 1);
  s.next();
  s.offerFrame(frame());
  assert.equal(s.pendingTriggers, 0);
});

test('scheduler: a snapshot takes the next frame first, also while paused; stop answers waiting triggers and hands back bound frames', () => {
  const { s, frame, noFrame } = rig();
  s.pause();
  const got: unknown[] = [];
  s.requestSnapshot((v) => got.push(v));
  s.offerFrame(frame());
  const j = s.next()!;
  assert.ok(j.snapshot, 'the snapshot job goes first');
  s.resume();
  s.trigger('late');
  s.trigger('bound');
  s.offerFrame(frame());
  const left = s.stop();
  assert.equal(left.length, 1);
  assert.equal(left[0].trigger!.partId, 'late');
  assert.deepEqual(
    noFrame.map((n) => [n.t.partId, n.why]),
    [['bound', 'stopping']],
  );
});

test('scheduler property: every trigger is answered exactly once (inspected, NO_FRAME or refused), never bound to an older frame; every snapshot is answered once', () => {
  let runs = 0;
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.record({ k: fc.constant('trigger' as const) }),
          fc.record({ k: fc.constant('frame' as const), lag: fc.integer({ min: -50, max: 50 }) }),
          fc.record({ k: fc.constant('next' as const) }),
          fc.record({ k: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 3000 }) }),
          fc.record({ k: fc.constant('pause' as const) }),
          fc.record({ k: fc.constant('resume' as const) }),
          fc.record({ k: fc.constant('camera' as const), up: fc.boolean() }),
          fc.record({ k: fc.constant('snapshot' as const) }),
          fc.record({ k: fc.constant('stop' as const) }),
        ),
        { maxLength: 200 },
      ),
      (ops) => {
        runs++;
        const { s, clock, noFrame, dropped, frame } = rig({ triggerQueueMax: 5, readyMax: 3 });
        const answers = new Map<string, number>();
        const answer = (id: string) => answers.set(id, (answers.get(id) ?? 0) + 1);
        const snapshots: number[] = [];
        let sent = 0;
        const take = (j: ReturnType<typeof s.next>) => {
          if (j?.trigger) {
            answer(j.trigger.partId!);
            assert.ok(j.frame.capturedAt >= j.trigger.at, 'bound to a frame captured after the trigger');
            assert.ok(j.frame.capturedAt - j.trigger.at <= 2000 + 50);
          }
          j?.snapshot?.(null);
        };
        for (const op of ops) {
          if (op.k === 'trigger') s.trigger(`P-${sent++}`);
          else if (op.k === 'frame') s.offerFrame(frame(clock.t + op.lag));
          else if (op.k === 'next') take(s.next());
          else if (op.k === 'wait') {
            clock.t += op.ms;
            s.tick();
          } else if (op.k === 'pause') s.pause();
          else if (op.k === 'resume') s.resume();
          else if (op.k === 'snapshot') {
            const i = snapshots.push(0) - 1;
            // Refused (queue full): the caller answers it at once, as the daemon does.
            if (!s.requestSnapshot(() => snapshots[i]++)) snapshots[i]++;
          } else if (op.k === 'stop') for (const j of s.stop()) take(j);
          else s.camera(op.up);
        }
        for (const j of s.stop()) take(j);
        for (const n of noFrame) answer(n.t.partId!);
        for (const d of dropped) if (d.startsWith('trigger')) answer(/trigger (P-\d+)/.exec(d)![1]);
        for (let i = 0; i < sent; i++) assert.equal(answers.get(`P-${i}`), 1, `P-${i} answered once`);
        assert.equal(answers.size, sent);
        assert.ok(
          snapshots.every((n) => n === 1),
          `every snapshot answered once: ${snapshots.join(',')}`,
        );
      },
    ),
    { numRuns: 2000 },
  );
  assert.equal(runs, 2000, 'fast-check ran 2000 generated sequences');
});

const facts = (o: Partial<HealthFacts> = {}): HealthFacts => ({
  now: 100_000,
  ready: true,
  stopping: false,
  camera: 'streaming',
  mqttConnected: true,
  workerAlive: true,
  storeError: null,
  paused: false,
  mode: 'free',
  lastInspected: 99_000,
  startedAt: 0,
  stallMs: 60_000,
  ...o,
});

test('health and watchdog: a dead worker, a failing store, a lost camera each show; the watchdog needs a live worker in every mode', () => {
  assert.deepEqual(assessHealth(facts()), { ok: true, reasons: [] });
  assert.match(assessHealth(facts({ workerAlive: false })).reasons.join(), /inference worker not answering/);
  assert.match(assessHealth(facts({ storeError: 'ENOSPC' })).reasons.join(), /verdict store: ENOSPC/);
  assert.match(assessHealth(facts({ mqttConnected: false })).reasons.join(), /MQTT broker not connected/);
  assert.equal(watchdogOk(facts()), true);
  assert.equal(watchdogOk(facts({ mqttConnected: false })), true, 'a broker outage is no reason for systemd to restart us');
  for (const mode of ['free', 'all', 'mqtt'] as const) {
    assert.equal(watchdogOk(facts({ mode, workerAlive: false })), false, `${mode}: a dead worker stops the watchdog`);
    assert.equal(watchdogOk(facts({ mode, paused: true, lastInspected: 0 })), true, `${mode}: paused with a live worker keeps it`);
  }
  assert.equal(watchdogOk(facts({ lastInspected: 1, now: 70_000 })), false, 'free-run without inspections for stall_s');
  assert.equal(watchdogOk(facts({ mode: 'mqtt', lastInspected: 1, now: 70_000 })), true, 'trigger mode idles by design');
  assert.equal(watchdogOk(facts({ camera: 'lost' })), false);
  // Health and watchdog agree about a stalled free-run (a replay stuck on a file, a frozen camera).
  assert.match(assessHealth(facts({ lastInspected: 1, now: 70_000 })).reasons.join(), /no frame inspected for 70 s/);
  assert.equal(assessHealth(facts({ mode: 'mqtt', lastInspected: 1, now: 70_000 })).ok, true);
});

test('scheduler: a trigger flood while paused is answered up to the bound per second, the rest refused; snapshots are bounded and answered in order', () => {
  const { s, clock, noFrame, dropped, frame } = rig({ triggerQueueMax: 4 });
  s.pause();
  for (let i = 0; i < 1000; i++) s.trigger(`P-${i}`);
  assert.equal(noFrame.length, 4);
  assert.equal(dropped.filter((d) => /refused: more than 4 triggers a second while paused/.test(d)).length, 996);
  clock.t += 1000;
  s.trigger('later');
  assert.equal(noFrame.at(-1)!.t.partId, 'later', 'a new second, a new allowance');
  const order: number[] = [];
  for (let i = 0; i < 4; i++)
    assert.equal(
      s.requestSnapshot(() => order.push(i)),
      true,
    );
  assert.equal(
    s.requestSnapshot(() => order.push(99)),
    false,
    'the fifth waiting snapshot is refused',
  );
  for (let i = 0; i < 4; i++) s.offerFrame(frame());
  for (let j = s.next(); j; j = s.next()) j.snapshot?.(null);
  assert.deepEqual(order, [0, 1, 2, 3], 'snapshots answered in the order they were asked');
});
