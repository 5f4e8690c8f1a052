/**
 * Commands arrive from any client the broker lets publish on `<base>/cmd/<name>`, so everything in a
 * command message is untrusted: payload, response topic, correlation data, user properties, the
 * retain flag. This module turns one message into a decision and does no I/O; the publisher acts on it.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { COMMANDS, DEFAULT_MAX_BYTES, type CommandName } from './topics.ts';
import { codePoints, decodeUtf8, forLog, hasUnsafeChars, utf8Length } from './text.ts';

export interface CommandPolicy {
  /** state-changing commands allowed at all (`commands.control`) */
  control: boolean;
  /** "" = no token; otherwise state-changing commands need MQTT 5 user property token=<this> */
  token: string;
  /** largest payload accepted (`commands.max_bytes`) */
  maxBytes: number;
}

export const DEFAULT_POLICY: CommandPolicy = Object.freeze({ control: false, token: '', maxBytes: DEFAULT_MAX_BYTES });

/**
 * Commands that change what the station does. Names not yet in COMMANDS are listed already, so a
 * command added later is guarded from its first day instead of open until someone remembers.
 */
export const STATE_CHANGING: ReadonlySet<string> = new Set(['reload', 'pause', 'resume', 'calibrate', 'rollback', 'activate']);

export const REQUEST_ID_MAX = 128;
export const RESPONSE_TOPIC_MAX_BYTES = 512;
export const CORRELATION_MAX_BYTES = 256;
export const SENDER_MAX = 64;
export const BUNDLE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** A command name we answer (even if unknown); anything else is not worth a response topic built from it. */
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** What mqtt.js hands over, typed as what a hostile client can make it: anything. */
export interface CommandMessage {
  topic: string;
  payload: Uint8Array;
  retain?: boolean;
  properties?: { responseTopic?: unknown; correlationData?: unknown; userProperties?: unknown } | null;
}

export interface CommandContext {
  /** `<prefix>/<station>` */
  base: string;
  policy: CommandPolicy;
  protocolVersion: 4 | 5;
}

export type RequestId = string | number | null;

interface Reply {
  /** where the response goes: the requested topic when allowed, else `<base>/cmd/<name>/response` */
  responseTopic: string;
  requestId: RequestId;
  correlationData: Buffer | undefined;
  /** self-declared sender (user property client_id or sender), cleaned for logs */
  sender: string;
}

export type CommandDecision = ({ kind: 'run'; name: CommandName; body: Record<string, unknown> } & Reply) | ({ kind: 'reject'; name: string; error: string } & Reply) | { kind: 'ignore'; why: string };

export type Authorization = { ok: true } | { ok: false; error: string };

export function defaultResponseTopic(base: string, name: string): string {
  return `${base}/cmd/${name}/response`;
}

/**
 * A response topic is accepted only inside this station's own command space: exactly
 * `<base>/cmd/<name>/response`, or beneath `<base>/response/`. Anything else would let a client make
 * the daemon publish where consumers trust it (e.g. `<base>/verdict`), or — with a wildcard — make the
 * broker drop the daemon's connection over its own QoS 1 response, again at every reconnect.
 */
export function validResponseTopic(base: string, name: string, candidate: unknown): boolean {
  return responseTopicProblem(base, name, candidate) === null;
}

function responseTopicProblem(base: string, name: string, t: unknown): string | null {
  if (typeof t !== 'string') return 'is not a string';
  if (t === '') return 'is empty';
  if (utf8Length(t) > RESPONSE_TOPIC_MAX_BYTES) return `is longer than ${RESPONSE_TOPIC_MAX_BYTES} bytes`;
  if (t.includes('+') || t.includes('#')) return 'contains a wildcard (+ or #)';
  if (hasUnsafeChars(t)) return 'contains control characters';
  if (t === defaultResponseTopic(base, name)) return null;
  const under = `${base}/response/`;
  if (t.startsWith(under) && t.length > under.length) return null;
  return `is outside this station's response space (${defaultResponseTopic(base, name)} or ${under}…)`;
}

/** request_id is echoed into responses and logs: only short printable strings and finite numbers. */
export function sanitizeRequestId(v: unknown): { ok: true; id: RequestId } | { ok: false; error: string } {
  if (v === undefined || v === null) return { ok: true, id: null };
  if (typeof v === 'number') return Number.isFinite(v) ? { ok: true, id: v } : { ok: false, error: 'request_id must be a finite number or a string' };
  if (typeof v !== 'string') return { ok: false, error: `request_id is ${Array.isArray(v) ? 'an array' : typeof v} (a string of at most ${REQUEST_ID_MAX} printable characters, or a number)` };
  if (codePoints(v) > REQUEST_ID_MAX) return { ok: false, error: `request_id is longer than ${REQUEST_ID_MAX} characters` };
  if (hasUnsafeChars(v)) return { ok: false, error: 'request_id contains control characters' };
  return { ok: true, id: v };
}

function userProperty(props: unknown, key: string): { value?: string; repeated: boolean } {
  if (!props || typeof props !== 'object' || !Object.hasOwn(props, key)) return { repeated: false };
  const v = (props as Record<string, unknown>)[key];
  if (typeof v === 'string') return { value: v, repeated: false };
  if (Array.isArray(v)) return { value: typeof v[0] === 'string' ? v[0] : undefined, repeated: v.length > 1 };
  return { repeated: false };
}

/** Who the message says it is from: MQTT does not tell a subscriber the publisher's client id. */
export function senderOf(userProperties: unknown): string {
  const given = userProperty(userProperties, 'client_id').value ?? userProperty(userProperties, 'sender').value;
  return given === undefined || given === '' ? '(sender not given)' : forLog(given, SENDER_MAX);
}

/** Hash first so the comparison takes the same time whatever the lengths. */
function sameSecret(a: string, b: string): boolean {
  const h = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  return timingSafeEqual(h(a), h(b));
}

export function authorize(name: string, userProperties: unknown, policy: CommandPolicy, protocolVersion: 4 | 5 = 5): Authorization {
  if (!STATE_CHANGING.has(name)) return { ok: true };
  if (!policy.control) return { ok: false, error: `"${name}" changes the station's state and is disabled here (commands.control is false)` };
  if (!policy.token) return { ok: true };
  if (protocolVersion !== 5)
    return {
      ok: false,
      error: `"${name}" needs the MQTT 5 user property "token" (commands.token is set), which MQTT 3.1.1 cannot carry: impossible on this connection (set mqtt.protocol_version to 5)`,
    };
  const t = userProperty(userProperties, 'token');
  if (t.repeated) return { ok: false, error: `"${name}": user property "token" given more than once` };
  if (t.value === undefined) return { ok: false, error: `"${name}" needs the MQTT 5 user property "token" (commands.token is set)` };
  return sameSecret(t.value, policy.token) ? { ok: true } : { ok: false, error: `"${name}": user property "token" does not match commands.token` };
}

type Body = { ok: true; body: Record<string, unknown> } | { ok: false; error: string };

/** A JSON object of bounded size; empty (or whitespace) = {}. */
export function parseBody(payload: Uint8Array, maxBytes: number): Body {
  if (payload.length > maxBytes) return { ok: false, error: `payload of ${payload.length} bytes is too big (at most ${maxBytes}, commands.max_bytes)` };
  const text = decodeUtf8(payload);
  if (text === null) return { ok: false, error: 'payload is not valid UTF-8 (send a JSON object, e.g. {})' };
  if (!text.trim()) return { ok: true, body: {} };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { ok: false, error: 'payload is not JSON (send a JSON object, e.g. {}, or an empty payload)' };
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    return { ok: false, error: `payload is ${v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`}, not a JSON object (send {} or an empty payload)` };
  return { ok: true, body: v as Record<string, unknown> };
}

/** Per-command argument shapes; the daemon gives them meaning (e.g. resolves the bundle name in its folder). */
function argumentProblem(name: CommandName, body: Record<string, unknown>): string | null {
  if (name === 'activate') {
    const v = body.version;
    return typeof v === 'string' && /^v\d{4,}-\d{8}$/.test(v) ? null : 'activate: "version" must be a bundle version of the folder, e.g. {"version": "v0007-20261203"} (see get_bundles)';
  }
  if (name !== 'reload') return null;
  const b = body.bundle;
  if (b === undefined || b === null) return null;
  if (typeof b !== 'string' || !BUNDLE_NAME.test(b))
    return `reload: "bundle" must be a bundle file name in the bundle folder (letters, digits, . _ -, at most 128, no path), e.g. "line3-2026-12-01.hcebundle"`;
  return null;
}

function isCommand(name: string): name is CommandName {
  return (COMMANDS as readonly string[]).includes(name);
}

function correlationOf(v: unknown): { ok: true; data: Buffer | undefined } | { ok: false; error: string } {
  if (v === undefined || v === null) return { ok: true, data: undefined };
  if (!(v instanceof Uint8Array)) return { ok: false, error: 'correlation data is not binary' };
  if (v.length > CORRELATION_MAX_BYTES) return { ok: false, error: `correlation data longer than ${CORRELATION_MAX_BYTES} bytes` };
  return { ok: true, data: Buffer.from(v) };
}

/** The command name when `topic` is exactly `<base>/cmd/<name>`. */
function commandName(base: string, topic: string): string | null {
  const head = `${base}/cmd/`;
  if (typeof topic !== 'string' || !topic.startsWith(head)) return null;
  const name = topic.slice(head.length);
  return name.includes('/') ? null : name;
}

export function parseCommand(msg: CommandMessage, ctx: CommandContext): CommandDecision {
  const name = commandName(ctx.base, msg.topic);
  if (name === null) return { kind: 'ignore', why: `not a command topic: ${forLog(msg.topic)}` };
  if (msg.retain) return { kind: 'ignore', why: `retained command on ${forLog(msg.topic)} (a replay, not a request now: clear it with mosquitto_pub -r -n -t '${forLog(msg.topic)}')` };
  if (!NAME.test(name)) return { kind: 'ignore', why: `command name ${forLog(name, 64)} is not a name (letters, digits, _ . -, at most 64)` };
  const props = msg.properties && typeof msg.properties === 'object' ? msg.properties : {};
  const sender = senderOf(props.userProperties);
  const fallback = defaultResponseTopic(ctx.base, name);
  const reject = (error: string, partial: Partial<Reply> = {}): CommandDecision => ({
    kind: 'reject',
    name,
    error,
    responseTopic: fallback,
    requestId: null,
    correlationData: undefined,
    sender,
    ...partial,
  });

  const corr = correlationOf(props.correlationData);
  if (!corr.ok) return reject(corr.error);
  const correlationData = corr.data;
  const requested = props.responseTopic;
  const topicProblem = requested === undefined ? null : responseTopicProblem(ctx.base, name, requested);
  const payload = msg.payload instanceof Uint8Array ? msg.payload : new Uint8Array(0);
  const body = parseBody(payload, ctx.policy.maxBytes);
  const rid = body.ok ? sanitizeRequestId(body.body.request_id) : { ok: true as const, id: null };
  const requestId = rid.ok ? rid.id : null;
  if (topicProblem) return reject(`response topic ${forLog(requested, 80)} ${topicProblem}; answered here instead`, { correlationData, requestId });
  const reply: Reply = { responseTopic: typeof requested === 'string' ? requested : fallback, requestId, correlationData, sender };
  if (!body.ok) return { kind: 'reject', name, error: body.error, ...reply };
  if (!rid.ok) return { kind: 'reject', name, error: rid.error, ...reply };
  if (!isCommand(name)) return { kind: 'reject', name, error: `unknown command "${name}"; commands: ${COMMANDS.join(', ')}`, ...reply };
  const auth = authorize(name, props.userProperties, ctx.policy, ctx.protocolVersion);
  if (!auth.ok) return { kind: 'reject', name, error: auth.error, ...reply };
  const arg = argumentProblem(name, body.body);
  if (arg) return { kind: 'reject', name, error: arg, ...reply };
  return { kind: 'run', name, body: body.body, ...reply };
}
