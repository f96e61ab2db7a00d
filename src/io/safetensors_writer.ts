/**
 * safetensors writer: tensors (numbers or stored bytes) → a `.safetensors` file, on disk
 * ({@link writeSafetensors}) or in memory ({@link encodeSafetensors}). The layout is the one
 * `./safetensors_codec.ts` documents; tensors are stored in the order given, the JSON header
 * padded with spaces to a multiple of 8 bytes.
 *
 * Every input is validated before anything is written: dtype, name, shape against data length,
 * integer range. Errors name the file (or `encodeSafetensors`) and the tensor.
 *
 * Writes are atomic: {@link writeSafetensors} writes a temporary file in the destination's
 * folder (`<path>.tmp-<random>`), flushes it to disk, and renames it over `path`. An interrupted
 * or failed write leaves either the old file or none under the final name, never a truncated one;
 * the temporary file is removed on failure.
 *
 * @example
 * ```ts
 * import { writeSafetensors } from "./safetensors_writer.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensors(path, {
 *   w: { dtype: "BF16", shape: [3, 2], data: [1, 2, 3, 4, 5, 6] },
 *   ids: { dtype: "I32", shape: [2], bytes: new Uint8Array(new Int32Array([7, 8]).buffer) },
 * }, { format: "pt" });
 * ```
 *
 * @module
 */

import { f32ToF16Bits } from "../tensor/dtype.ts";
import {
  dtypeBytes,
  f32ToBf16Bits,
  isSafetensorsDtype,
  metadataSchema,
  numel,
  type SafetensorsDtype,
  zodMessage,
} from "./safetensors_codec.ts";

/**
 * A tensor to write: either `data` (numbers, converted to `dtype`: F16/BF16 rounded to nearest
 * even, integers range-checked) or `bytes` (already in `dtype`'s little-endian layout, written
 * as-is). `TensorData` and `RawTensor` values are accepted directly.
 */
export type TensorInput =
  | { dtype: SafetensorsDtype; shape: readonly number[]; data: ArrayLike<number> }
  | { dtype: SafetensorsDtype; shape: readonly number[]; bytes: Uint8Array };

function checkInt(v: number, lo: number, hi: number, where: string, i: number, dt: string): void {
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw new RangeError(`${where}: element ${i} = ${v} is not a valid ${dt} value`);
  }
}

/** Checks dtype, shape and data length of a tensor to write; returns its byte length. */
function checkInput(name: string, t: TensorInput, where: string): number {
  const w = `${where}: tensor "${name}"`;
  if (name === "__metadata__" || name === "") {
    throw new TypeError(`${where}: "${name}" is not a valid tensor name`);
  }
  if (!isSafetensorsDtype(t.dtype)) {
    throw new TypeError(`${w} has unsupported dtype "${t.dtype}"`);
  }
  for (const d of t.shape) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`${w} has invalid shape [${t.shape}]`);
  }
  const n = numel(t.shape, w);
  const need = n * dtypeBytes(t.dtype);
  if ("bytes" in t && t.bytes.byteLength !== need) {
    throw new RangeError(
      `${w}: shape [${t.shape}] of ${t.dtype} needs ${need} bytes, got ${t.bytes.byteLength}`,
    );
  }
  if ("data" in t && t.data.length !== n) {
    throw new RangeError(`${w}: shape [${t.shape}] has ${n} elements, data has ${t.data.length}`);
  }
  return need;
}

/** Encodes one tensor (already checked by {@link checkInput}) into its stored bytes. */
function tensorBytes(name: string, t: TensorInput, where: string): Uint8Array {
  if ("bytes" in t) return t.bytes;
  const w = `${where}: tensor "${name}"`;
  const src = t.data, n = src.length;
  switch (t.dtype) {
    case "F32":
      return new Uint8Array(Float32Array.from(src).buffer);
    case "F16": {
      const o = new Uint16Array(n);
      for (let i = 0; i < n; i++) o[i] = f32ToF16Bits(src[i]);
      return new Uint8Array(o.buffer);
    }
    case "BF16": {
      const o = new Uint16Array(n);
      for (let i = 0; i < n; i++) o[i] = f32ToBf16Bits(src[i]);
      return new Uint8Array(o.buffer);
    }
    case "I32": {
      for (let i = 0; i < n; i++) checkInt(src[i], -(2 ** 31), 2 ** 31 - 1, w, i, "I32");
      return new Uint8Array(Int32Array.from(src).buffer);
    }
    case "I64": {
      const o = new BigInt64Array(n);
      for (let i = 0; i < n; i++) {
        checkInt(src[i], Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, w, i, "I64");
        o[i] = BigInt(src[i]);
      }
      return new Uint8Array(o.buffer);
    }
    case "U8":
    case "BOOL": {
      const hi = t.dtype === "U8" ? 255 : 1;
      for (let i = 0; i < n; i++) checkInt(src[i], 0, hi, w, i, t.dtype);
      return Uint8Array.from(src);
    }
  }
}

type Entry = [name: string, dtype: SafetensorsDtype, shape: readonly number[], bytes: number];

/** Builds the padded header (8-byte length prefix + JSON padded with spaces to 8 bytes). */
function headerFor(
  entries: Entry[],
  metadata: Record<string, string> | undefined,
  where: string,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    const m = metadataSchema.safeParse(metadata);
    if (!m.success) throw new TypeError(`${where}: metadata: ${zodMessage(m.error)}`);
    header.__metadata__ = m.data;
  }
  let offset = 0;
  for (const [name, dtype, shape, len] of entries) {
    header[name] = { dtype, shape: [...shape], data_offsets: [offset, offset + len] };
    offset += len;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

/** Checks every tensor (see {@link checkInput}); returns the header entries in order. */
function checkAll(tensors: Record<string, TensorInput>, where: string): Entry[] {
  return Object.entries(tensors).map(([name, t]) => [
    name,
    t.dtype,
    t.shape,
    checkInput(name, t, where),
  ]);
}

/**
 * Encodes tensors as a safetensors file in memory (in the order given).
 *
 * @param tensors name → {dtype, shape, data | bytes}
 * @param metadata optional `__metadata__` (string values)
 * @returns the file's bytes
 * @throws TypeError (dtype, name) or RangeError (shape vs data length, integer range) naming
 *   the tensor
 */
export function encodeSafetensors(
  tensors: Record<string, TensorInput>,
  metadata?: Record<string, string>,
): Uint8Array<ArrayBuffer> {
  const where = "encodeSafetensors";
  const entries = checkAll(tensors, where);
  const header = headerFor(entries, metadata, where);
  const out = new Uint8Array(entries.reduce((s, e) => s + e[3], header.length));
  out.set(header, 0);
  let at = header.length;
  for (const [name, t] of Object.entries(tensors)) {
    const b = tensorBytes(name, t, where);
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/**
 * Writes tensors to a safetensors file, one tensor at a time (never the whole file in memory).
 * Atomic: the bytes go to a temporary file in the same folder, which is flushed to disk and
 * then renamed to `path`; on any failure the temporary file is removed and `path` is untouched
 * (the previous file, if any, stays whole).
 *
 * @param path destination
 * @param tensors name → {dtype, shape, data | bytes}, written in this order
 * @param metadata optional `__metadata__` (string values), e.g. `{ format: "pt" }`
 * @throws TypeError (dtype, name) or RangeError (shape vs data length, integer range) naming
 *   the tensor; the file system's error if the folder cannot be written
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorInput>,
  metadata?: Record<string, string>,
): Promise<void> {
  const entries = checkAll(tensors, path); // validate everything before touching the disk
  const header = headerFor(entries, metadata, path);
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  const file = await Deno.open(tmp, { write: true, createNew: true });
  try {
    await writeAll(file, header);
    for (const [name, t] of Object.entries(tensors)) {
      await writeAll(file, tensorBytes(name, t, path));
    }
    await file.sync(); // the data is on disk before the name points at it
    file.close();
    await Deno.rename(tmp, path);
  } catch (e) {
    try {
      file.close();
    } catch { /* already closed */ }
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
}
