/**
 * Sparkplug B payloads on the wire: the schema is the .proto next to this file (loaded once, at
 * import), so what is encoded here and what a host decodes come from the same definition.
 */
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

/** Sparkplug 3.0 §6.4.16 data type numbers, the subset the station publishes or accepts. */
export const DataType = {
  Int8: 1,
  Int16: 2,
  Int32: 3,
  Int64: 4,
  UInt8: 5,
  UInt16: 6,
  UInt32: 7,
  UInt64: 8,
  Float: 9,
  Double: 10,
  Boolean: 11,
  String: 12,
  DateTime: 13,
  Text: 14,
} as const;
export type DataTypeName = keyof typeof DataType;

export type MetricValue = number | string | boolean | null;

export interface OutMetric {
  name?: string;
  alias?: number;
  /** ms since the epoch (UTC) when the value was captured */
  timestamp: number;
  type: DataTypeName;
  /** births carry the datatype; DATA messages leave it out (tck-id-payloads-metric-datatype-not-req) */
  withDatatype: boolean;
  value: MetricValue;
}

export interface OutPayload {
  timestamp: number;
  /** absent for NDEATH (tck-id-payloads-ndeath-seq) */
  seq?: number;
  metrics: OutMetric[];
}

export interface InMetric {
  name?: string;
  alias?: number;
  timestamp?: number;
  datatype?: number;
  isNull: boolean;
  /** which oneof field carried the value ("boolean_value", …), undefined when none did */
  field?: string;
  value?: number | string | boolean | Uint8Array | object;
}

export interface InPayload {
  timestamp?: number;
  seq?: number;
  metrics: InMetric[];
}

// keepCase: field names as the specification spells them (is_null, long_value), not camelCased
const root = new protobuf.Root().loadSync(fileURLToPath(new URL('./sparkplug_b.proto', import.meta.url)), { keepCase: true });
const Payload = root.lookupType('org.eclipse.tahu.protobuf.Payload');

function valueField(type: DataTypeName, v: number | string | boolean): Record<string, unknown> {
  switch (type) {
    case 'Int8':
    case 'Int16':
    case 'Int32':
      // negative values travel as their 32-bit two's complement in the unsigned field (§6.4.16)
      return { int_value: Number(v) >>> 0 };
    case 'UInt8':
    case 'UInt16':
    case 'UInt32':
      return { int_value: Number(v) >>> 0 };
    case 'Int64':
    case 'UInt64':
    case 'DateTime':
      // a negative Int64 travels as its 64-bit two's complement (§6.4.16); protobufjs would write 0
      return { long_value: BigInt.asUintN(64, BigInt(Math.trunc(Number(v)))).toString() };
    case 'Float':
      return { float_value: Number(v) };
    case 'Double':
      return { double_value: Number(v) };
    case 'Boolean':
      return { boolean_value: Boolean(v) };
    case 'String':
    case 'Text':
      return { string_value: String(v) };
  }
}

function metricObject(m: OutMetric): Record<string, unknown> {
  const o: Record<string, unknown> = { timestamp: m.timestamp };
  if (m.name !== undefined) o.name = m.name;
  if (m.alias !== undefined) o.alias = m.alias;
  if (m.withDatatype) o.datatype = DataType[m.type];
  // a null value is said explicitly, never as 0 or "" (tck-id-operational-behavior-data-publish-nbirth-values)
  if (m.value === null || (typeof m.value === 'number' && !Number.isFinite(m.value))) o.is_null = true;
  else Object.assign(o, valueField(m.type, m.value));
  return o;
}

export function encodePayload(p: OutPayload): Uint8Array {
  const o: Record<string, unknown> = { timestamp: p.timestamp, metrics: p.metrics.map(metricObject) };
  if (p.seq !== undefined) o.seq = p.seq;
  return Payload.encode(Payload.fromObject(o)).finish();
}

/** Throws on bytes that are not a Sparkplug B payload. */
export function decodePayload(bytes: Uint8Array): InPayload {
  const o = Payload.toObject(Payload.decode(bytes), { longs: Number, oneofs: true }) as {
    timestamp?: number;
    seq?: number;
    metrics?: Array<Record<string, unknown>>;
  };
  return { timestamp: o.timestamp, seq: o.seq, metrics: (o.metrics ?? []).map(inMetric) };
}

function inMetric(m: Record<string, unknown>): InMetric {
  const field = typeof m.value === 'string' ? m.value : undefined;
  let value = field ? (m[field] as InMetric['value']) : undefined;
  const dt = m.datatype as number | undefined;
  // undo the two's complement of signed 32-bit types so a host-side reader sees the number it sent
  if (field === 'int_value' && typeof value === 'number' && (dt === DataType.Int8 || dt === DataType.Int16 || dt === DataType.Int32)) value = value | 0;
  return {
    name: m.name as string | undefined,
    alias: m.alias as number | undefined,
    timestamp: m.timestamp as number | undefined,
    datatype: dt,
    isNull: m.is_null === true,
    field,
    value,
  };
}
