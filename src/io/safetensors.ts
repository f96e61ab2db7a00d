/**
 * safetensors: reader and writer for the Hugging Face tensor file format.
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
 * little-endian. The header is validated with zod when a file is opened: dtype among
 * {@link SAFETENSORS_DTYPES}, shape of non-negative integers, offsets inside the data section,
 * `end - begin = numel(shape) × bytes(dtype)`, no two tensors overlapping, header at most
 * {@link MAX_HEADER_BYTES}. Every error names the file and, where there is one, the tensor.
 *
 * Reading never holds the whole file: {@link openSafetensors} reads only the header, and
 * `read()` pulls the requested rows through a file handle in chunks of `chunkBytes`
 * (16 MiB by default), converting each chunk into the output array. A 16 GB checkpoint costs
 * the size of the tensor asked for plus one chunk.
 *
 * Conversions on `read()`: F32/F16/BF16 → `Float32Array` (exact), I32 → `Int32Array`,
 * I64 → `Int32Array` (RangeError naming the tensor and element if a value does not fit),
 * U8/BOOL → `Uint8Array`. `readRaw()` returns the stored bytes (e.g. f16 bits for a GPU upload).
 *
 * The host is assumed little-endian (every platform Deno runs on); the module checks this once.
 *
 * @example Write, open, read rows
 * ```ts
 * import { openSafetensors, writeSafetensors } from "./safetensors.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensors(path, {
 *   w: { dtype: "BF16", shape: [3, 2], data: [1, 2, 3, 4, 5, 6] },
 * });
 * using file = await openSafetensors(path);
 * console.log(file.tensors.get("w")); // { dtype: "BF16", shape: [3, 2], byteOffset: ..., byteLength: 12, file: path }
 * const rows = await file.read("w", { rowStart: 1, rowEnd: 3 });
 * console.log(rows.shape, rows.data); // [2, 2] Float32Array(4) [3, 4, 5, 6]
 * ```
 *
 * @module
 */

import { z } from "zod";
import { f16BitsToF32, f32ToF16Bits } from "../tensor/dtype.ts";

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("safetensors.ts assumes a little-endian host");
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

/** Default read chunk (bytes): the most `read()` holds besides its output. */
export const DEFAULT_CHUNK_BYTES: number = 16 << 20;

/** Bytes per element of a dtype. */
export function dtypeBytes(dtype: SafetensorsDtype): number {
  return BYTES[dtype];
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

/** Rows `[rowStart, rowEnd)` along dimension 0 (default: all rows). A scalar has one row. */
export interface RowRange {
  /** First row read (default 0). */
  rowStart?: number;
  /** One past the last row read (default: all rows). */
  rowEnd?: number;
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

/**
 * A tensor to write: either `data` (numbers, converted to `dtype`: F16/BF16 rounded to nearest
 * even, integers range-checked) or `bytes` (already in `dtype`'s little-endian layout, written
 * as-is). {@link TensorData} and {@link RawTensor} values are accepted directly.
 */
export type TensorInput =
  | { dtype: SafetensorsDtype; shape: readonly number[]; data: ArrayLike<number> }
  | { dtype: SafetensorsDtype; shape: readonly number[]; bytes: Uint8Array };

/** Options for opening files. */
export interface OpenOptions {
  /** Bytes read per chunk in `read()`/`readRaw()` (default {@link DEFAULT_CHUNK_BYTES}). */
  chunkBytes?: number;
}

/** What {@link SafetensorsFile} and {@link Checkpoint} share: named tensors read on demand. */
export interface TensorReader {
  /** Every tensor, by name. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Reads rows of a tensor, converted (see the module doc). */
  read(name: string, range?: RowRange): Promise<TensorData>;
  /** Reads rows of a tensor as stored bytes. */
  readRaw(name: string, range?: RowRange): Promise<RawTensor>;
  /** Closes the file handle(s). */
  close(): void;
}

// ---------------------------------------------------------------------------------------------
// Header validation

const entrySchema = z.object({
  dtype: z.string({ error: "expected a dtype string" }),
  shape: z.array(z.number().int().nonnegative(), {
    error: "expected an array of non-negative integers",
  }),
  data_offsets: z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()], {
    error: "expected [begin, end] of non-negative integers",
  }),
});
const metadataSchema = z.record(z.string(), z.string(), {
  error: "expected an object of string values",
});

function zodMessage(err: z.ZodError): string {
  return err.issues.map((i) => {
    const path = i.path.length ? `field "${i.path.join(".")}": ` : "";
    return path + i.message;
  }).join("; ");
}

/** Number of elements, or throws if the product is not a safe integer. */
function product(shape: readonly number[], where: string): number {
  let n = 1;
  for (const d of shape) n *= d;
  if (!Number.isSafeInteger(n)) throw new RangeError(`${where}: shape [${shape}] is too large`);
  return n;
}

interface ParsedHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

/**
 * Validates a decoded header against a data section of `dataSize` bytes starting at absolute
 * offset `dataStart`.
 */
function parseHeader(
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
    if (!(SAFETENSORS_DTYPES as readonly string[]).includes(dtype)) {
      throw new TypeError(
        `${where} has unsupported dtype "${dtype}" (supported: ${SAFETENSORS_DTYPES.join(", ")})`,
      );
    }
    const dt = dtype as SafetensorsDtype;
    if (end < begin) throw new SyntaxError(`${where}: data_offsets [${begin}, ${end}] end < begin`);
    const need = product(shape, where) * BYTES[dt];
    if (end - begin !== need) {
      throw new SyntaxError(
        `${where}: shape [${shape.join(", ")}] of ${dt} needs ${need} bytes, ` +
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
      dtype: dt,
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

/** Reads and checks the 8-byte header length. */
function headerLength(prefix: Uint8Array, file: string, fileSize: number): number {
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
// Conversion (chunk by chunk)

/** The output array for `n` elements of `dtype` after conversion. */
function allocFor(dtype: SafetensorsDtype, n: number): Float32Array | Int32Array | Uint8Array {
  if (dtype === "F32" || dtype === "F16" || dtype === "BF16") return new Float32Array(n);
  if (dtype === "I32" || dtype === "I64") return new Int32Array(n);
  return new Uint8Array(n);
}

/**
 * Converts `src` (whole elements of `dtype`, `src.byteOffset` aligned to the element size)
 * into `out` starting at element `at`. `firstIndex` is the tensor-element index of `src[0]`
 * (for error messages).
 */
function convertInto(
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

/** Resolves a row range against a tensor; returns element/byte extents. */
function rowExtent(info: TensorInfo, range: RowRange | undefined, where: string) {
  const rows = info.shape.length === 0 ? 1 : info.shape[0];
  const start = range?.rowStart ?? 0, end = range?.rowEnd ?? rows;
  if (
    !Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > rows
  ) {
    throw new RangeError(
      `${where}: row range [${start}, ${end}) is outside [0, ${rows}] (shape [${info.shape}])`,
    );
  }
  const rowBytes = rows === 0 ? 0 : info.byteLength / rows;
  const full = start === 0 && end === rows;
  // A scalar read whole keeps shape []; an empty range of it is [0].
  const shape = full ? [...info.shape] : [end - start, ...info.shape.slice(1)];
  return {
    shape,
    byteStart: info.byteOffset + start * rowBytes,
    byteLength: (end - start) * rowBytes,
    firstElement: (start * rowBytes) / BYTES[info.dtype],
  };
}

// ---------------------------------------------------------------------------------------------
// Reading files

/** Reads exactly `dest.length` bytes at absolute `position`. */
async function readAt(file: Deno.FsFile, position: number, dest: Uint8Array, path: string) {
  await file.seek(position, Deno.SeekMode.Start);
  let got = 0;
  while (got < dest.length) {
    const n = await file.read(dest.subarray(got));
    if (n === null) {
      throw new SyntaxError(
        `${path}: unexpected end of file at byte ${position + got} (file changed or truncated?)`,
      );
    }
    got += n;
  }
}

/**
 * An open safetensors file: the validated header plus a file handle. Reads are serialised
 * (one seek+read at a time), so concurrent `read()` calls are safe.
 */
export class SafetensorsFile implements TensorReader {
  /** Path the file was opened with. */
  readonly path: string;
  /** Every tensor in the file, in header order. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** The `__metadata__` object (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Total file size in bytes. */
  readonly size: number;
  #file: Deno.FsFile | undefined;
  #chunk: number;
  #queue: Promise<unknown> = Promise.resolve();
  #pending = 0;

  private constructor(
    path: string,
    file: Deno.FsFile,
    size: number,
    header: ParsedHeader,
    chunkBytes: number,
  ) {
    this.path = path;
    this.#file = file;
    this.size = size;
    this.tensors = header.tensors;
    this.metadata = Object.freeze(header.metadata);
    this.#chunk = chunkBytes;
  }

  /** Use {@link openSafetensors}. @internal */
  static async open(path: string, options: OpenOptions = {}): Promise<SafetensorsFile> {
    const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    if (!Number.isInteger(chunkBytes) || chunkBytes < 8) {
      throw new RangeError(`chunkBytes must be an integer >= 8, got ${chunkBytes}`);
    }
    const file = await Deno.open(path, { read: true });
    try {
      const size = (await file.stat()).size;
      const prefix = new Uint8Array(8);
      if (size >= 8) await readAt(file, 0, prefix, path);
      const n = headerLength(prefix, path, size);
      const headerBytes = new Uint8Array(n);
      await readAt(file, 8, headerBytes, path);
      const header = parseHeader(headerBytes, path, 8 + n, size - 8 - n);
      return new SafetensorsFile(path, file, size, header, chunkBytes);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Info of one tensor, or an Error naming the tensor and the file. */
  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new Error(`Tensor "${name}" not found in ${this.path}`);
    return info;
  }

  #exclusive<T>(fn: (file: Deno.FsFile) => Promise<T>): Promise<T> {
    this.#pending++;
    const run = this.#queue.then(() => {
      if (!this.#file) throw new Error(`${this.path} is closed`);
      return fn(this.#file);
    }).finally(() => this.#pending--);
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Reads rows `[rowStart, rowEnd)` of a tensor and converts them (F32/F16/BF16 → Float32Array,
   * I32/I64 → Int32Array, U8/BOOL → Uint8Array), chunk by chunk.
   *
   * @param name tensor name, e.g. `model.embed_tokens.weight`
   * @param range rows along dimension 0; `x:[R, ...rest]` → `out:[rowEnd-rowStart, ...rest]`
   * @returns dtype, shape and converted data
   */
  async read(name: string, range?: RowRange): Promise<TensorData> {
    const info = this.info(name);
    const where = `${this.path}: tensor "${name}"`;
    const ext = rowExtent(info, range, where);
    const size = BYTES[info.dtype];
    const n = ext.byteLength / size;
    const out = allocFor(info.dtype, n);
    const chunkBytes = Math.max(size, Math.floor(this.#chunk / size) * size);
    return await this.#exclusive(async (file) => {
      const chunk = new Uint8Array(Math.min(chunkBytes, ext.byteLength));
      for (let done = 0; done < ext.byteLength; done += chunk.length) {
        const part = chunk.subarray(0, Math.min(chunk.length, ext.byteLength - done));
        await readAt(file, ext.byteStart + done, part, this.path);
        convertInto(info.dtype, part, out, done / size, where, ext.firstElement + done / size);
      }
      return { dtype: info.dtype, shape: ext.shape, data: out } as TensorData;
    });
  }

  /**
   * Reads rows of a tensor as stored (little-endian bytes of `dtype`), e.g. to upload f16 or
   * bf16 bits to the GPU unchanged.
   *
   * @param name tensor name
   * @param range rows along dimension 0
   * @returns dtype, shape of the rows read, bytes
   */
  async readRaw(name: string, range?: RowRange): Promise<RawTensor> {
    const info = this.info(name);
    const ext = rowExtent(info, range, `${this.path}: tensor "${name}"`);
    return await this.#exclusive(async (file) => {
      const bytes = new Uint8Array(ext.byteLength);
      for (let done = 0; done < bytes.length; done += this.#chunk) {
        const part = bytes.subarray(done, Math.min(bytes.length, done + this.#chunk));
        await readAt(file, ext.byteStart + done, part, this.path);
      }
      return { dtype: info.dtype, shape: ext.shape, bytes };
    });
  }

  /** Closes the file handle (idempotent). Pending reads finish first. */
  close(): void {
    const f = this.#file;
    this.#file = undefined;
    if (f && this.#pending === 0) f.close();
    else if (f) this.#queue.finally(() => f.close());
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Opens a safetensors file, reading and validating only its header.
 *
 * @param path file path
 * @param options chunk size for reads
 * @returns the open file; close it (or `using`) when done
 * @throws SyntaxError for a malformed header (JSON, offsets, sizes, overlap, truncation),
 *   TypeError for an unsupported dtype, RangeError for a header over {@link MAX_HEADER_BYTES};
 *   each names the file and the tensor.
 */
export function openSafetensors(path: string, options?: OpenOptions): Promise<SafetensorsFile> {
  return SafetensorsFile.open(path, options);
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints

const indexSchema = z.object({
  metadata: z.record(z.string(), z.unknown()).nullish(),
  weight_map: z.record(z.string(), z.string(), {
    error: "expected an object mapping tensor names to shard file names",
  }),
});

/** Name of a single-file checkpoint inside a model folder. */
export const SINGLE_FILE = "model.safetensors";
/** Name of the shard index inside a model folder. */
export const INDEX_FILE = "model.safetensors.index.json";

function join(dir: string, file: string): string {
  return dir.endsWith("/") ? dir + file : `${dir}/${file}`;
}

/** A plain relative path inside the folder: no absolute path, no `..`, no backslash. */
export function isSafeRelativePath(p: string): boolean {
  return p.length > 0 && !p.startsWith("/") && !p.includes("\\") &&
    p.split("/").every((s) => s !== "" && s !== "." && s !== "..");
}

/**
 * The weights of a model folder: one `model.safetensors`, or the shards listed by
 * `model.safetensors.index.json` (`weight_map`: tensor name → shard file). Same per-tensor API
 * as {@link SafetensorsFile}; `tensors.get(name).file` says which shard holds a tensor.
 */
export class Checkpoint implements TensorReader {
  /** The folder (or file) the checkpoint was opened from. */
  readonly path: string;
  /** Open shard files (one for a single-file checkpoint). */
  readonly files: readonly SafetensorsFile[];
  /** Every tensor, by name (from the index for a sharded checkpoint). */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  #owner: Map<string, SafetensorsFile>;

  /** Use {@link openCheckpoint}. @internal */
  constructor(path: string, files: SafetensorsFile[], owner: Map<string, SafetensorsFile>) {
    this.path = path;
    this.files = files;
    this.#owner = owner;
    const tensors = new Map<string, TensorInfo>();
    for (const [name, f] of owner) tensors.set(name, f.info(name));
    this.tensors = tensors;
  }

  #file(name: string): SafetensorsFile {
    const f = this.#owner.get(name);
    if (!f) throw new Error(`Tensor "${name}" not found in checkpoint ${this.path}`);
    return f;
  }

  /** Reads rows of a tensor, converted; see {@link SafetensorsFile.read}. */
  async read(name: string, range?: RowRange): Promise<TensorData> {
    return await this.#file(name).read(name, range);
  }

  /** Reads rows of a tensor as stored bytes; see {@link SafetensorsFile.readRaw}. */
  async readRaw(name: string, range?: RowRange): Promise<RawTensor> {
    return await this.#file(name).readRaw(name, range);
  }

  /** Closes every shard. */
  close(): void {
    for (const f of this.files) f.close();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function openSharded(indexPath: string, options?: OpenOptions): Promise<Checkpoint> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (e) {
    if (e instanceof SyntaxError) throw new SyntaxError(`${indexPath}: ${e.message}`);
    throw e;
  }
  const r = indexSchema.safeParse(json);
  if (!r.success) throw new SyntaxError(`${indexPath}: ${zodMessage(r.error)}`);
  const dir = indexPath.includes("/") ? indexPath.slice(0, indexPath.lastIndexOf("/")) : ".";
  const byShard = new Map<string, string[]>();
  for (const [tensor, shard] of Object.entries(r.data.weight_map)) {
    if (!isSafeRelativePath(shard)) {
      throw new SyntaxError(`${indexPath}: tensor "${tensor}" maps to unsafe path "${shard}"`);
    }
    byShard.set(shard, [...(byShard.get(shard) ?? []), tensor]);
  }
  const files: SafetensorsFile[] = [];
  const owner = new Map<string, SafetensorsFile>();
  try {
    for (const [shard, names] of byShard) {
      const path = join(dir, shard);
      if (!(await isFile(path))) {
        throw new Error(
          `${indexPath}: shard ${path} (holding tensor "${names[0]}") not found`,
        );
      }
      const f = await openSafetensors(path, options);
      files.push(f);
      for (const name of names) {
        if (!f.tensors.has(name)) {
          throw new Error(
            `${indexPath}: tensor "${name}" is mapped to ${path}, which does not contain it`,
          );
        }
        owner.set(name, f);
      }
    }
  } catch (e) {
    for (const f of files) f.close();
    throw e;
  }
  return new Checkpoint(indexPath, files, owner);
}

/**
 * Opens the weights of a model: a folder holding `model.safetensors` or
 * `model.safetensors.index.json` plus its shards, or a path to either file.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "./safetensors.ts";
 * using ckpt = await openCheckpoint("../shared/conformance/B1_infer_qneuron_head/weights.safetensors");
 * const emb = await ckpt.read("model.embed_tokens.weight", { rowStart: 0, rowEnd: 2 }); // [2, 64]
 * ```
 *
 * @param path folder, `*.safetensors` file or `*.index.json` file
 * @param options chunk size for reads
 * @returns the checkpoint; close it when done
 * @throws Error naming the file (and tensor) if the folder holds no weights, a shard is missing,
 *   or the index maps a tensor to a shard that lacks it; header errors as in {@link openSafetensors}
 */
export async function openCheckpoint(path: string, options?: OpenOptions): Promise<Checkpoint> {
  const stat = await Deno.stat(path);
  if (stat.isFile) {
    if (path.endsWith(".json")) return openSharded(path, options);
    const f = await openSafetensors(path, options);
    return new Checkpoint(path, [f], new Map([...f.tensors.keys()].map((n) => [n, f] as const)));
  }
  const single = join(path, SINGLE_FILE), index = join(path, INDEX_FILE);
  if (await isFile(single)) return openCheckpoint(single, options);
  if (await isFile(index)) return openSharded(index, options);
  throw new Error(`No weights in ${path}: expected ${SINGLE_FILE} or ${INDEX_FILE}`);
}

// ---------------------------------------------------------------------------------------------
// Writing

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Rounds an f32 value to bfloat16 bits (nearest even; NaN stays NaN). */
export function f32ToBf16Bits(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0];
  if ((x & 0x7fffffff) > 0x7f800000) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

function checkInt(v: number, lo: number, hi: number, where: string, i: number, dt: string) {
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
  if (!(SAFETENSORS_DTYPES as readonly string[]).includes(t.dtype)) {
    throw new TypeError(`${w} has unsupported dtype "${t.dtype}"`);
  }
  for (const d of t.shape) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`${w} has invalid shape [${t.shape}]`);
  }
  const n = product(t.shape, w);
  const need = n * BYTES[t.dtype];
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

type Entry = [name: string, dtype: SafetensorsDtype, shape: readonly number[], bytes: number];

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
 * Decodes an in-memory safetensors file completely (for small files; use
 * {@link openSafetensors} for checkpoints).
 *
 * @param bytes the whole file
 * @param fileName name used in error messages
 * @returns every tensor, converted as by `read()`, and the metadata
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

/**
 * Writes tensors to a safetensors file, one tensor at a time (never the whole file in memory),
 * to a temporary name first and then renamed, so a crash never leaves a half-written file.
 *
 * @param path destination
 * @param tensors name → {dtype, shape, data | bytes}, written in this order
 * @param metadata optional `__metadata__` (string values), e.g. `{ format: "pt" }`
 * @throws TypeError (dtype, name) or RangeError (shape vs data length, integer range) naming
 *   the tensor
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorInput>,
  metadata?: Record<string, string>,
): Promise<void> {
  const entries = checkAll(tensors, path); // validate everything before touching the disk
  const header = headerFor(entries, metadata, path);
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    await writeAll(file, header);
    for (const [name, t] of Object.entries(tensors)) {
      await writeAll(file, tensorBytes(name, t, path));
    }
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
