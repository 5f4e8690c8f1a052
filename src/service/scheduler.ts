/**
 * Which frame is inspected next. Pure: no timers, no I/O; the daemon calls `tick()` periodically and
 * `next()` whenever inference is free, and the clock is injected so every policy is unit-tested.
 *
 * - free: only the newest frame waits; an older one it replaces is counted as dropped.
 * - all: every frame in order, at most `readyMax` waiting (replay sources slow down instead).
 * - mqtt: each PLC trigger is bound to the first frame captured at or after it, within `windowMs`;
 *   a trigger that gets no frame (window passed, paused, camera lost, stopping) is answered with a
 *   NO_FRAME outcome instead of silently vanishing or taking a frame from seconds later.
 * A snapshot request takes the next frame whatever the mode, also while paused.
 */
import type { Frame } from '../capture/types.ts';
import type { VerdictPayload } from '../publish/payloads.ts';

export type TriggerMode = 'free' | 'mqtt' | 'all';

export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export type NoFrameReason = 'no frame within the trigger window' | 'paused' | 'camera lost' | 'stopping' | 'inference failed';

export interface Trigger {
  partId: string | null;
  /** ms since epoch when the trigger arrived */
  at: number;
  seq: number;
}

/** gets the snapshot's verdict, or null when its inference failed */
export type SnapshotWaiter = (verdict: VerdictPayload | null) => void;

export interface Job {
  frame: Frame;
  trigger?: Trigger;
  snapshot?: SnapshotWaiter;
}

export interface SchedulerOptions {
  mode: TriggerMode;
  /** free-run: at most this many inspections per second (0 = unlimited) */
  maxFps: number;
  windowMs: number;
  /** triggers waiting for a frame; more are refused and counted */
  triggerQueueMax: number;
  /** frames waiting for inference (all mode, bound triggers): each holds a whole frame in memory */
  readyMax: number;
}

export interface SchedulerEvents {
  noFrame(t: Trigger, reason: NoFrameReason): void;
  dropped(what: 'frame' | 'trigger', detail: string): void;
}

export class FrameScheduler {
  private newest: Job | null = null;
  private readonly ready: Job[] = [];
  private pending: Trigger[] = [];
  private readonly snapshots: SnapshotWaiter[] = [];
  private paused = false;
  private cameraUp = true;
  private lastStart = 0;
  private triggerSeq = 0;
  private stopped = false;
  private answerWindow = { start: 0, count: 0 };

  constructor(
    private readonly o: SchedulerOptions,
    private readonly ev: SchedulerEvents,
    private readonly clock: Clock = systemClock,
  ) {}

  get isPaused(): boolean {
    return this.paused;
  }
  get pendingTriggers(): number {
    return this.pending.length;
  }
  get waiting(): number {
    return this.ready.length + (this.newest ? 1 : 0);
  }

  /** Replay sources wait while this says no (all mode), instead of handing over frames to drop. */
  canAccept(): boolean {
    return this.o.mode !== 'all' || this.ready.length < this.o.readyMax;
  }

  offerFrame(frame: Frame): void {
    if (this.stopped) return;
    this.expire();
    const snap = this.snapshots.shift();
    if (snap) {
      // ahead of ordinary frames, behind earlier snapshots: requests are answered in order
      const at = this.ready.findIndex((j) => !j.snapshot);
      this.ready.splice(at < 0 ? this.ready.length : at, 0, { frame, snapshot: snap });
      return;
    }
    if (this.paused) return;
    if (this.o.mode === 'free') return this.offerFree(frame);
    if (this.o.mode === 'all') return this.offerInOrder(frame);
    this.bindTrigger(frame);
  }

  private offerFree(frame: Frame): void {
    if (this.newest) this.ev.dropped('frame', 'replaced by a newer frame before inference took it');
    this.newest = { frame };
  }

  private offerInOrder(frame: Frame): void {
    if (this.ready.length >= this.o.readyMax) {
      this.ev.dropped('frame', `more than ${this.o.readyMax} frames waiting for inference`);
      return;
    }
    this.ready.push({ frame });
  }

  /** The oldest waiting trigger that arrived no later than the frame was captured gets it. */
  private bindTrigger(frame: Frame): void {
    if (this.ready.length >= this.o.readyMax) return; // triggers keep waiting; their window still runs
    const i = this.pending.findIndex((t) => t.at <= frame.capturedAt);
    if (i < 0) return;
    const [t] = this.pending.splice(i, 1);
    this.ready.push({ frame, trigger: t });
  }

  trigger(partId: string | null): void {
    const t: Trigger = { partId, at: this.clock.now(), seq: ++this.triggerSeq };
    if (this.stopped) return this.ev.noFrame(t, 'stopping');
    if (this.o.mode !== 'mqtt') {
      this.ev.dropped('trigger', `trigger ${partId ?? '(no part id)'} ignored: trigger.mode is "${this.o.mode}"`);
      return;
    }
    if (this.paused) return this.answerAtOnce(t, 'paused');
    if (!this.cameraUp) return this.answerAtOnce(t, 'camera lost');
    if (this.pending.length >= this.o.triggerQueueMax) {
      this.ev.dropped('trigger', `trigger ${partId ?? '(no part id)'} refused: ${this.o.triggerQueueMax} triggers already wait for frames (trigger.queue_max)`);
      return;
    }
    this.pending.push(t);
  }

  /**
   * Immediate NO_FRAME answers are bounded like waiting triggers (triggerQueueMax per second): a
   * flood while paused would otherwise become a flood of queued verdicts and log lines.
   */
  private answerAtOnce(t: Trigger, reason: NoFrameReason): void {
    const now = this.clock.now();
    if (now - this.answerWindow.start >= 1000) this.answerWindow = { start: now, count: 0 };
    if (++this.answerWindow.count > this.o.triggerQueueMax) {
      this.ev.dropped('trigger', `trigger ${t.partId ?? '(no part id)'} refused: more than ${this.o.triggerQueueMax} triggers a second while ${reason}`);
      return;
    }
    this.ev.noFrame(t, reason);
  }

  /** Answers triggers whose window has passed; call periodically. */
  tick(): void {
    this.expire();
  }

  private expire(): void {
    const now = this.clock.now();
    const live: Trigger[] = [];
    for (const t of this.pending) {
      if (now - t.at > this.o.windowMs) this.ev.noFrame(t, 'no frame within the trigger window');
      else live.push(t);
    }
    this.pending = live;
  }

  private answerPending(reason: NoFrameReason): void {
    const all = this.pending;
    this.pending = [];
    for (const t of all) this.ev.noFrame(t, reason);
  }

  /** false when `triggerQueueMax` snapshots already wait (the caller answers the request itself). */
  requestSnapshot(w: SnapshotWaiter): boolean {
    if (this.snapshots.length >= this.o.triggerQueueMax) return false;
    this.snapshots.push(w);
    return true;
  }
  cancelSnapshot(w: SnapshotWaiter): void {
    const i = this.snapshots.indexOf(w);
    if (i >= 0) this.snapshots.splice(i, 1);
  }

  pause(): void {
    this.paused = true;
    this.newest = null;
    this.answerPending('paused');
  }
  resume(): void {
    this.paused = false;
  }

  camera(up: boolean): void {
    this.cameraUp = up;
    if (!up) this.answerPending('camera lost');
  }

  /** The next job for inference, or null (nothing waiting, or free-run held back by max_fps). */
  next(): Job | null {
    const job = this.ready.shift() ?? this.takeNewest();
    if (job) this.lastStart = this.clock.now();
    return job;
  }

  /** ms until max_fps lets the newest frame go (0 = now or nothing waiting). */
  retryAfterMs(): number {
    if (!this.newest || this.o.maxFps <= 0) return 0;
    return Math.max(0, this.lastStart + 1000 / this.o.maxFps - this.clock.now());
  }

  private takeNewest(): Job | null {
    if (!this.newest || this.retryAfterMs() > 0) return null;
    const j = this.newest;
    this.newest = null;
    return j;
  }

  /**
   * Shutdown: frames already bound stay for the caller to finish (bounded by readyMax); triggers
   * still waiting for a frame are answered NO_FRAME.
   */
  stop(): Job[] {
    this.stopped = true;
    this.answerPending('stopping');
    for (const w of this.snapshots.splice(0)) w(null);
    this.newest = null;
    return this.ready.splice(0);
  }
}
