/**
 * systemd notifications (Type=notify): READY=1, STATUS=, WATCHDOG=1, STOPPING=1 through sd-notify
 * (libsystemd's sd_notify). Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
 */
import { createRequire } from 'node:module';

interface SdNotify {
  ready(): void;
  stopping(pid?: number): void;
  watchdog(): void;
  sendStatus(text: string): void;
  watchdogInterval(): number;
}

export class SystemdNotifier {
  private readonly sd: SdNotify | null;
  constructor(log: (msg: string) => void) {
    if (!process.env.NOTIFY_SOCKET) {
      this.sd = null;
      return;
    }
    try {
      this.sd = createRequire(import.meta.url)('sd-notify') as SdNotify;
    } catch (e) {
      this.sd = null;
      log(`NOTIFY_SOCKET is set but sd-notify is not available (${(e as Error).message.split('\n')[0]}): install libsystemd-dev and run npm ci; systemd will time out waiting for READY=1`);
    }
  }
  get active(): boolean {
    return this.sd !== null;
  }
  ready(): void {
    this.sd?.ready();
  }
  status(text: string): void {
    this.sd?.sendStatus(text);
  }
  watchdog(): void {
    this.sd?.watchdog();
  }
  stopping(): void {
    this.sd?.stopping(process.pid);
  }
  /** WatchdogSec in ms as systemd passed it (WATCHDOG_USEC), or 0. */
  watchdogMs(): number {
    const usec = Number(process.env.WATCHDOG_USEC ?? 0);
    return usec > 0 ? usec / 1000 : 0;
  }
}
