/**
 * What /healthz and the systemd watchdog conclude from the daemon's state. Pure functions of a
 * snapshot, so every rule is tested without a daemon.
 */
import type { SourceState } from '../capture/types.ts';
import type { TriggerMode } from './scheduler.ts';

export interface HealthFacts {
  now: number;
  ready: boolean;
  stopping: boolean;
  camera: SourceState;
  mqttConnected: boolean;
  /** the inference worker answered its heartbeat (or is within a request's limit) */
  workerAlive: boolean;
  storeError: string | null;
  paused: boolean;
  mode: TriggerMode;
  /** ms since epoch of the last inspected frame, 0 = none yet */
  lastInspected: number;
  startedAt: number;
  stallMs: number;
}

export interface Health {
  ok: boolean;
  reasons: string[];
}

export function assessHealth(f: HealthFacts): Health {
  const reasons: string[] = [];
  if (!f.ready) reasons.push('starting');
  if (f.stopping) reasons.push('stopping');
  if (f.camera === 'lost' || f.camera === 'starting') reasons.push(`camera ${f.camera}`);
  if (!f.mqttConnected) reasons.push('MQTT broker not connected (verdicts are queued on disk)');
  if (!f.workerAlive) reasons.push('inference worker not answering');
  if (f.storeError) reasons.push(`verdict store: ${f.storeError}`);
  if (f.ready && !inspectingOrIdle(f)) reasons.push(`no frame inspected for ${Math.round((f.now - (f.lastInspected || f.startedAt)) / 1000)} s`);
  return { ok: reasons.length === 0, reasons };
}

/** Frames were inspected within stall_s, or the line is idle by design (trigger mode, paused, replay ended). */
function inspectingOrIdle(f: HealthFacts): boolean {
  const idleByDesign = f.mode === 'mqtt' || f.paused || f.camera === 'ended';
  return idleByDesign || f.now - (f.lastInspected || f.startedAt) < f.stallMs;
}

/**
 * WATCHDOG=1 proves work is being done: the worker answers, and frames are inspected — unless the
 * line is idle by design (trigger mode, paused, replay ended). A broker outage does not stop it:
 * verdicts queue, and a restart would not bring the broker back.
 */
export function watchdogOk(f: HealthFacts): boolean {
  if (!f.ready || f.stopping || !f.workerAlive || f.camera === 'lost') return false;
  return inspectingOrIdle(f);
}
