/** Log lines on stderr: syslog priority prefixes under systemd (journald reads them), timestamps otherwise. */
export type Level = 'error' | 'warn' | 'info' | 'debug';
const ORDER: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3 };
const SYSLOG: Record<Level, number> = { error: 3, warn: 4, info: 6, debug: 7 };

export type Logger = (level: Level, msg: string) => void;

export function createLogger(min: Level, stream: NodeJS.WritableStream = process.stderr): Logger {
  const journal = Boolean(process.env.JOURNAL_STREAM);
  return (level, msg) => {
    if (ORDER[level] > ORDER[min]) return;
    stream.write(journal ? `<${SYSLOG[level]}>${msg}\n` : `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${msg}\n`);
  };
}
