/**
 * Progress on stderr: a single rewritten line on a terminal, one line per 10% step otherwise (so logs
 * from systemd or CI stay readable).
 */
export class Progress {
  private lastPct = new Map<string, number>();
  private readonly tty: boolean;
  constructor(
    private readonly enabled = true,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = Boolean(stream.isTTY);
  }

  update = (stage: string, done: number, total: number): void => {
    if (!this.enabled || total <= 0) return;
    const pct = Math.floor((100 * done) / total);
    if (this.tty) {
      this.stream.write(`\r${stage}: ${done}/${total} (${pct}%)\x1b[K`);
      if (done >= total) this.stream.write('\n');
      return;
    }
    const step = Math.floor(pct / 10);
    if (this.lastPct.get(stage) === step && done < total) return;
    this.lastPct.set(stage, step);
    this.stream.write(`${stage}: ${done}/${total} (${pct}%)\n`);
    if (done >= total) this.lastPct.delete(stage);
  };

  log(msg: string): void {
    if (this.enabled) this.stream.write(`${msg}\n`);
  }
}
