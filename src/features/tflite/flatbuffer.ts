/**
 * Minimal read-only FlatBuffers table access. The TFLite schema is large but the importer needs a
 * dozen tables, so a hand-written accessor is smaller and easier to audit than generated code.
 */
export class FbTable {
  constructor(
    private readonly view: DataView,
    readonly pos: number,
  ) {}

  private fieldOffset(field: number): number {
    const vtable = this.pos - this.view.getInt32(this.pos, true);
    const vtableSize = this.view.getUint16(vtable, true);
    const slot = 4 + 2 * field;
    if (slot >= vtableSize) return 0;
    return this.view.getUint16(vtable + slot, true);
  }

  has(field: number): boolean {
    return this.fieldOffset(field) !== 0;
  }

  int8(field: number, dflt = 0): number {
    const o = this.fieldOffset(field);
    return o ? this.view.getInt8(this.pos + o) : dflt;
  }
  uint8(field: number, dflt = 0): number {
    const o = this.fieldOffset(field);
    return o ? this.view.getUint8(this.pos + o) : dflt;
  }
  int32(field: number, dflt = 0): number {
    const o = this.fieldOffset(field);
    return o ? this.view.getInt32(this.pos + o, true) : dflt;
  }
  uint32(field: number, dflt = 0): number {
    const o = this.fieldOffset(field);
    return o ? this.view.getUint32(this.pos + o, true) : dflt;
  }
  float32(field: number, dflt = 0): number {
    const o = this.fieldOffset(field);
    return o ? this.view.getFloat32(this.pos + o, true) : dflt;
  }
  bool(field: number, dflt = false): boolean {
    const o = this.fieldOffset(field);
    return o ? this.view.getUint8(this.pos + o) !== 0 : dflt;
  }

  private indirect(field: number): number {
    const o = this.fieldOffset(field);
    if (!o) return 0;
    const at = this.pos + o;
    return at + this.view.getUint32(at, true);
  }

  table(field: number): FbTable | undefined {
    const p = this.indirect(field);
    return p ? new FbTable(this.view, p) : undefined;
  }

  string(field: number): string | undefined {
    const p = this.indirect(field);
    if (!p) return undefined;
    const len = this.view.getUint32(p, true);
    return new TextDecoder().decode(new Uint8Array(this.view.buffer, this.view.byteOffset + p + 4, len));
  }

  /** Start (byte position) and length of a vector field, or undefined when absent. */
  vector(field: number): { start: number; length: number } | undefined {
    const p = this.indirect(field);
    if (!p) return undefined;
    return { start: p + 4, length: this.view.getUint32(p, true) };
  }

  tables(field: number): FbTable[] {
    const v = this.vector(field);
    if (!v) return [];
    const out: FbTable[] = [];
    for (let i = 0; i < v.length; i++) {
      const at = v.start + 4 * i;
      out.push(new FbTable(this.view, at + this.view.getUint32(at, true)));
    }
    return out;
  }

  int32s(field: number): number[] {
    const v = this.vector(field);
    if (!v) return [];
    const out: number[] = new Array(v.length);
    for (let i = 0; i < v.length; i++) out[i] = this.view.getInt32(v.start + 4 * i, true);
    return out;
  }
  float32s(field: number): number[] {
    const v = this.vector(field);
    if (!v) return [];
    const out: number[] = new Array(v.length);
    for (let i = 0; i < v.length; i++) out[i] = this.view.getFloat32(v.start + 4 * i, true);
    return out;
  }
  int64s(field: number): number[] {
    const v = this.vector(field);
    if (!v) return [];
    const out: number[] = new Array(v.length);
    for (let i = 0; i < v.length; i++) out[i] = Number(this.view.getBigInt64(v.start + 8 * i, true));
    return out;
  }
  bytes(field: number): Uint8Array | undefined {
    const v = this.vector(field);
    if (!v) return undefined;
    return new Uint8Array(this.view.buffer, this.view.byteOffset + v.start, v.length);
  }
}

export function fbRoot(buf: Uint8Array): FbTable {
  if (buf.byteLength < 8) throw new Error('file too short to be a FlatBuffer');
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const root = view.getUint32(0, true);
  if (root >= buf.byteLength) throw new Error('FlatBuffer root offset points outside the file');
  return new FbTable(view, root);
}
