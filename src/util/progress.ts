/**
 * Progress on stderr: a single rewritten line on a terminal, one line per 10% step otherwise (so logs
 * from systemd or CI stay readable). Each line carries the time left in its stage, estimated from the
 * rate since the stage's first report, and the stage's duration once it is done.
 */
export class Progress {
  private lastPct = new Map<string, number>();
  private started = new Map<string, { at: number; done: number }>();
  private readonly tty: boolean;
  constructor(
    private readonly enabled = true,
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tty = Boolean(stream.isTTY);
  }

  update = (stage: string, done: number, total: number): void => {
    if (!this.enabled || total <= 0) return;
    const pct = Math.floor((100 * done) / total);
    const timing = this.timing(stage, done, total);
    const line = `${stage}: ${done}/${total} (${pct}%)${timing}`;
    if (this.tty) {
      this.stream.write(`\r${line}\x1b[K`);
      if (done >= total) this.stream.write('\n');
      return;
    }
    const step = Math.floor(pct / 10);
    if (this.lastPct.get(stage) === step && done < total) return;
    this.lastPct.set(stage, step);
    this.stream.write(`${line}\n`);
    if (done >= total) this.lastPct.delete(stage);
  };

  log(msg: string): void {
    if (this.enabled) this.stream.write(`${msg}\n`);
  }

  /** ", ETA 1m05s" while running, ", took 12.3 s" when done; nothing before a rate can be measured. */
  private timing(stage: string, done: number, total: number): string {
    const t = this.now();
    const start = this.started.get(stage);
    if (!start) this.started.set(stage, { at: t, done });
    if (done >= total) {
      this.started.delete(stage);
      return start ? `, took ${((t - start.at) / 1000).toFixed(1)} s` : '';
    }
    if (!start || done <= start.done) return '';
    return `, ETA ${formatDuration(((total - done) * (t - start.at)) / (done - start.done))}`;
  }
}

export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}
