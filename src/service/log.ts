/** Log lines on stderr: syslog priority prefixes under systemd (journald reads them), timestamps otherwise. */
import { redactSecrets } from '../util/redact.ts';

export type Level = 'error' | 'warn' | 'info' | 'debug';
const ORDER: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3 };
const SYSLOG: Record<Level, number> = { error: 3, warn: 4, info: 6, debug: 7 };

export type Logger = (level: Level, msg: string) => void;

/** Longest message written, in characters; part ids, MQTT payloads and error texts come from outside. */
export const MAX_MESSAGE_CHARS = 4096;
// Scanning a huge message costs time on the main thread; only this much of it can be shown anyway.
const MAX_SCANNED_CHARS = 4 * MAX_MESSAGE_CHARS;

// C0, DEL, C1, and the Unicode line/paragraph separators some viewers break lines at.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * One line of text whatever the message holds: credentials redacted, control characters escaped
 * (a newline in a part id would otherwise start a forged journal line with its own `<N>` priority),
 * bounded in length.
 */
export function sanitizeLogMessage(msg: string): string {
  const text = String(msg);
  const scanned = text.length > MAX_SCANNED_CHARS ? text.slice(0, MAX_SCANNED_CHARS) : text;
  const clean = redactSecrets(scanned).replace(CONTROL, escapeControl);
  if (clean.length <= MAX_MESSAGE_CHARS && text.length === scanned.length) return clean;
  return `${clean.slice(0, MAX_MESSAGE_CHARS)}… (${text.length} characters, truncated)`;
}

function escapeControl(c: string): string {
  const code = c.charCodeAt(0);
  return NAMED[c] ?? (code > 0xff ? `\\u${code.toString(16).padStart(4, '0')}` : `\\x${code.toString(16).padStart(2, '0')}`);
}

export function createLogger(min: Level, stream: NodeJS.WritableStream = process.stderr, journal = Boolean(process.env.JOURNAL_STREAM)): Logger {
  return (level, msg) => {
    if (ORDER[level] > ORDER[min]) return;
    const line = sanitizeLogMessage(msg);
    stream.write(journal ? `<${SYSLOG[level]}>${line}\n` : `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${line}\n`);
  };
}
