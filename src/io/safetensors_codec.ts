/**
 * safetensors codec: the format's dtype table, header schema and validation, and the element
 * conversions shared by the reader ({@link ./safetensors_reader.ts}) and the writer
 * ({@link ./safetensors_writer.ts}). Pure functions over bytes; no file I/O.
 *
 * Layout of a file:
 *
 * ```
 * [8 bytes: N, u64 little-endian][N bytes: JSON header][data section]
 * header = { "<name>": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] },
 *            "__metadata__": { "<key>": "<string>" } }   // optional
 * ```
 *
 * `data_offsets` are byte offsets into the data section (after the header), row-major,
 * little-endian. {@link parseHeader} validates a header with zod: dtype among
 * {@link SAFETENSORS_DTYPES}, shape of non-negative integers, offsets inside the data section,
 * `end - begin = numel(shape) × bytes(dtype)`, no two tensors overlapping, header at most
 * {@link MAX_HEADER_BYTES}. Every error names the file and, where there is one, the tensor.
 *
 * Conversions ({@link convertInto}): F32/F16/BF16 → `Float32Array` (exact), I32 → `Int32Array`,
 * I64 → `Int32Array` (RangeError naming the tensor and element if a value does not fit),
 * U8/BOOL → `Uint8Array`. {@link f32ToBf16Bits} rounds the other way, for writing.
 *
 * {@link decodeSafetensors} decodes a whole file held in memory (small files; use
 * `openSafetensors` for checkpoints).
 *
 * The host is assumed little-endian (every platform Deno runs on); the module checks this once.
 *
 * @module
 */

import { z } from "zod";
import { f16BitsToF32 } from "../tensor/dtype.ts";

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("safetensors_codec.ts assumes a little-endian host");
}

/** Element types this module reads and writes (the safetensors spelling). */
export type SafetensorsDtype = "F32" | "F16" | "BF16" | "I32" | "I64" | "U8" | "BOOL";

/** All supported dtypes, in the order above. */
export const SAFETENSORS_DTYPES: readonly SafetensorsDtype[] = Object.freeze([
  "F32",
  "F16",
  "BF16",
  "I32",
  "I64",
  "U8",
  "BOOL",
]);

const BYTES: Record<SafetensorsDtype, number> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  I32: 4,
  I64: 8,
  U8: 1,
  BOOL: 1,
};

/** Largest header accepted (bytes). Real headers are well under 1 MB. */
export const MAX_HEADER_BYTES = 100_000_000;

/**
 * Bytes per element of a dtype.
 *
 * @param dtype stored element type
 * @returns 1, 2, 4 or 8
 */
export function dtypeBytes(dtype: SafetensorsDtype): number {
  return BYTES[dtype];
}

/** True if `dtype` is one of {@link SAFETENSORS_DTYPES} (for validating untrusted input). */
export function isSafetensorsDtype(dtype: string): dtype is SafetensorsDtype {
  return (SAFETENSORS_DTYPES as readonly string[]).includes(dtype);
}

/** Where a tensor lives. */
export interface TensorInfo {
  /** Stored element type. */
  readonly dtype: SafetensorsDtype;
  /** Dimensions, outermost first (`[]` for a scalar). */
  readonly shape: readonly number[];
  /** Absolute byte offset of the first element in the file. */
  readonly byteOffset: number;
  /** Bytes of data: `numel(shape) * dtypeBytes(dtype)`. */
  readonly byteLength: number;
  /** Path of the file holding it. */
  readonly file: string;
}

/** A tensor read into CPU memory, converted (see the module doc). `shape[0]` is the row count read. */
export type TensorData =
  | { dtype: "F32" | "F16" | "BF16"; shape: number[]; data: Float32Array }
  | { dtype: "I32" | "I64"; shape: number[]; data: Int32Array }
  | { dtype: "U8" | "BOOL"; shape: number[]; data: Uint8Array };

/** A tensor's stored bytes (little-endian), unconverted. */
export interface RawTensor {
  /** Stored element type. */
  dtype: SafetensorsDtype;
  /** Dimensions of the rows read. */
  shape: number[];
  /** The stored little-endian bytes. */
  bytes: Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// Header schema and validation

const entrySchema = z.object({
  dtype: z.string({ error: "expected a dtype string" }),
  shape: z.array(z.number().int().nonnegative(), {
    error: "expected an array of non-negative integers",
  }),
  data_offsets: z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()], {
    error: "expected [begin, end] of non-negative integers",
  }),
});

/** zod schema of `__metadata__`: an object of string values. */
export const metadataSchema: z.ZodType<Record<string, string>> = z.record(z.string(), z.string(), {
  error: "expected an object of string values",
});

/**
 * Joins zod issues into one message, each prefixed by the field it is about.
 *
 * @param err a failed `safeParse` error
 * @returns e.g. `field "shape.0": Too small: expected number to be >=0`
 */
export function zodMessage(err: z.ZodError): string {
  return err.issues.map((i) => {
    const path = i.path.length ? `field "${i.path.join(".")}": ` : "";
    return path + i.message;
  }).join("; ");
}

/**
 * Number of elements of a shape.
 *
 * @param shape dimensions (`[]` for a scalar: 1 element)
 * @param where prefix of the error message (file and tensor)
 * @returns the product of the dimensions
 * @throws RangeError if the product is not a safe integer
 */
export function numel(shape: readonly number[], where: string): number {
  let n = 1;
  for (const d of shape) n *= d;
  if (!Number.isSafeInteger(n)) throw new RangeError(`${where}: shape [${shape}] is too large`);
  return n;
}

/** A validated header: tensors in header order and the `__metadata__` object. */
export interface ParsedHeader {
  /** Every tensor, by name, in header order, with absolute offsets. */
  tensors: Map<string, TensorInfo>;
  /** The `__metadata__` object (empty when absent). */
  metadata: Record<string, string>;
}

/**
 * Validates a header's JSON against a data section of `dataSize` bytes starting at absolute
 * offset `dataStart`.
 *
 * @param headerBytes the N header bytes (UTF-8 JSON)
 * @param file file name used in error messages
 * @param dataStart absolute offset of the data section (`8 + N`)
 * @param dataSize bytes in the data section
 * @returns tensors (absolute offsets) and metadata
 * @throws SyntaxError (JSON, fields, sizes, offsets past the end, overlap) or TypeError
 *   (unsupported dtype), naming the file and the tensor
 */
export function parseHeader(
  headerBytes: Uint8Array,
  file: string,
  dataStart: number,
  dataSize: number,
): ParsedHeader {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw new SyntaxError(
      `${file}: safetensors header is not valid UTF-8 JSON (${(e as Error).message})`,
    );
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new SyntaxError(`${file}: safetensors header must be a JSON object`);
  }
  const tensors = new Map<string, TensorInfo>();
  const spans: { name: string; begin: number; end: number }[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(json)) {
    if (name === "__metadata__") {
      const m = metadataSchema.safeParse(value);
      if (!m.success) throw new SyntaxError(`${file}: __metadata__: ${zodMessage(m.error)}`);
      metadata = m.data;
      continue;
    }
    const where = `${file}: tensor "${name}"`;
    const r = entrySchema.safeParse(value);
    if (!r.success) throw new SyntaxError(`${where}: ${zodMessage(r.error)}`);
    const { dtype, shape, data_offsets: [begin, end] } = r.data;
    if (!isSafetensorsDtype(dtype)) {
      throw new TypeError(
        `${where} has unsupported dtype "${dtype}" (supported: ${SAFETENSORS_DTYPES.join(", ")})`,
      );
    }
    if (end < begin) throw new SyntaxError(`${where}: data_offsets [${begin}, ${end}] end < begin`);
    const need = numel(shape, where) * BYTES[dtype];
    if (end - begin !== need) {
      throw new SyntaxError(
        `${where}: shape [${shape.join(", ")}] of ${dtype} needs ${need} bytes, ` +
          `but data_offsets [${begin}, ${end}] span ${end - begin}`,
      );
    }
    if (end > dataSize) {
      throw new SyntaxError(
        `${where}: data_offsets [${begin}, ${end}] run past the end of the data section ` +
          `(${dataSize} bytes; truncated file?)`,
      );
    }
    tensors.set(name, {
      dtype,
      shape: Object.freeze([...shape]),
      byteOffset: dataStart + begin,
      byteLength: need,
      file,
    });
    if (need > 0) spans.push({ name, begin, end });
  }
  spans.sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < spans.length; i++) {
    const a = spans[i - 1], b = spans[i];
    if (b.begin < a.end) {
      throw new SyntaxError(
        `${file}: tensors "${a.name}" [${a.begin}, ${a.end}] and "${b.name}" ` +
          `[${b.begin}, ${b.end}] overlap`,
      );
    }
  }
  return { tensors, metadata };
}

/**
 * Reads and checks the 8-byte header length N.
 *
 * @param prefix the file's first 8 bytes (or more); ignored when `fileSize < 8`
 * @param file file name used in error messages
 * @param fileSize total bytes in the file
 * @returns N, the header's byte length
 * @throws SyntaxError if the file is too short or N runs past its end, RangeError if N exceeds
 *   {@link MAX_HEADER_BYTES}
 */
export function headerLength(prefix: Uint8Array, file: string, fileSize: number): number {
  if (fileSize < 8) {
    throw new SyntaxError(`${file}: ${fileSize} bytes is too short for a safetensors file`);
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new RangeError(`${file}: header length ${n} exceeds the limit of ${MAX_HEADER_BYTES}`);
  }
  if (8n + n > BigInt(fileSize)) {
    throw new SyntaxError(
      `${file}: header length ${n} runs past the end of the file (${fileSize} bytes)`,
    );
  }
  return Number(n);
}

// ---------------------------------------------------------------------------------------------
// Element conversions

/**
 * The output array for `n` elements of `dtype` after conversion.
 *
 * @returns `Float32Array` (F32/F16/BF16), `Int32Array` (I32/I64) or `Uint8Array` (U8/BOOL)
 */
export function allocFor(
  dtype: SafetensorsDtype,
  n: number,
): Float32Array | Int32Array | Uint8Array {
  if (dtype === "F32" || dtype === "F16" || dtype === "BF16") return new Float32Array(n);
  if (dtype === "I32" || dtype === "I64") return new Int32Array(n);
  return new Uint8Array(n);
}

/**
 * Converts `src` (whole elements of `dtype`, `src.byteOffset` aligned to the element size)
 * into `out` (from {@link allocFor}) starting at element `at`.
 *
 * @param dtype stored element type of `src`
 * @param src stored little-endian bytes, `k * dtypeBytes(dtype)` long
 * @param out destination; elements `[at, at + k)` are written
 * @param at first destination element
 * @param where prefix of error messages (file and tensor)
 * @param firstIndex tensor-element index of `src`'s first element (for error messages)
 * @throws RangeError naming the tensor and element when an I64 value does not fit in int32
 */
export function convertInto(
  dtype: SafetensorsDtype,
  src: Uint8Array,
  out: Float32Array | Int32Array | Uint8Array,
  at: number,
  where: string,
  firstIndex: number,
): void {
  const n = src.byteLength / BYTES[dtype];
  switch (dtype) {
    case "F32":
      out.set(new Float32Array(src.buffer, src.byteOffset, n), at);
      return;
    case "I32":
      out.set(new Int32Array(src.buffer, src.byteOffset, n), at);
      return;
    case "U8":
    case "BOOL":
      out.set(src, at);
      return;
    case "BF16": {
      const h = new Uint16Array(src.buffer, src.byteOffset, n);
      const o = new Uint32Array(out.buffer, out.byteOffset + at * 4, n);
      for (let i = 0; i < n; i++) o[i] = h[i] << 16;
      return;
    }
    case "F16": {
      const h = new Uint16Array(src.buffer, src.byteOffset, n);
      for (let i = 0; i < n; i++) out[at + i] = f16BitsToF32(h[i]);
      return;
    }
    case "I64": {
      const w = new Int32Array(src.buffer, src.byteOffset, 2 * n);
      for (let i = 0; i < n; i++) {
        const lo = w[2 * i], hi = w[2 * i + 1];
        if (hi !== lo >> 31) {
          const v = (BigInt(hi) << 32n) | BigInt(lo >>> 0);
          throw new RangeError(
            `${where} (I64): element ${firstIndex + i} = ${v} does not fit in int32`,
          );
        }
        out[at + i] = lo;
      }
      return;
    }
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/**
 * Rounds an f32 value to bfloat16 bits (nearest even; NaN stays NaN).
 *
 * @example
 * ```ts
 * import { f32ToBf16Bits } from "./safetensors_codec.ts";
 * f32ToBf16Bits(1); // 0x3f80
 * ```
 *
 * @param v a number (first rounded to f32)
 * @returns the 16 bfloat16 bits
 */
export function f32ToBf16Bits(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0];
  if ((x & 0x7fffffff) > 0x7f800000) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

// ---------------------------------------------------------------------------------------------
// A whole file in memory

/**
 * Decodes an in-memory safetensors file completely (for small files; use `openSafetensors`
 * for checkpoints).
 *
 * @param bytes the whole file
 * @param fileName name used in error messages
 * @returns every tensor, converted as by `read()`, and the metadata
 * @throws as {@link parseHeader}, {@link headerLength} and {@link convertInto}
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  fileName = "<memory>",
): { tensors: Record<string, TensorData>; metadata: Record<string, string> } {
  const n = headerLength(bytes, fileName, bytes.length);
  const header = parseHeader(bytes.subarray(8, 8 + n), fileName, 8 + n, bytes.length - 8 - n);
  const tensors: Record<string, TensorData> = {};
  for (const [name, info] of header.tensors) {
    const data = allocFor(info.dtype, info.byteLength / BYTES[info.dtype]);
    const src = bytes.slice(info.byteOffset, info.byteOffset + info.byteLength);
    convertInto(info.dtype, src, data, 0, `${fileName}: tensor "${name}"`, 0);
    tensors[name] = { dtype: info.dtype, shape: [...info.shape], data } as TensorData;
  }
  return { tensors, metadata: header.metadata };
}
