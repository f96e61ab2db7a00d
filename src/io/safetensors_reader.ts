/**
 * safetensors reader: one open `.safetensors` file, its tensors read row range by row range.
 *
 * Reading never holds the whole file: {@link openSafetensors} reads only the header (validated
 * by {@link parseHeader}), and `read()` pulls the requested rows through a file handle in chunks
 * of `chunkBytes` (16 MiB by default), converting each chunk into the output array. A 16 GB
 * checkpoint costs the size of the tensor asked for plus one chunk.
 *
 * Conversions on `read()`: F32/F16/BF16 → `Float32Array` (exact), I32 → `Int32Array`,
 * I64 → `Int32Array` (RangeError naming the tensor and element if a value does not fit),
 * U8/BOOL → `Uint8Array`. `readRaw()` returns the stored bytes (e.g. f16 bits for a GPU upload).
 *
 * @example Write, open, read rows
 * ```ts
 * import { openSafetensors } from "./safetensors_reader.ts";
 * import { writeSafetensors } from "./safetensors_writer.ts";
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

import {
  allocFor,
  convertInto,
  dtypeBytes,
  headerLength,
  type ParsedHeader,
  parseHeader,
  type RawTensor,
  type TensorData,
  type TensorInfo,
} from "./safetensors_codec.ts";

/** Default read chunk (bytes): the most `read()` holds besides its output. */
export const DEFAULT_CHUNK_BYTES: number = 16 << 20;

/** Rows `[rowStart, rowEnd)` along dimension 0 (default: all rows). A scalar has one row. */
export interface RowRange {
  /** First row read (default 0). */
  rowStart?: number;
  /** One past the last row read (default: all rows). */
  rowEnd?: number;
}

/** Options for opening files. */
export interface OpenOptions {
  /** Bytes read per chunk in `read()`/`readRaw()` (default {@link DEFAULT_CHUNK_BYTES}). */
  chunkBytes?: number;
}

/** What {@link SafetensorsFile} and `Checkpoint` share: named tensors read on demand. */
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

/** Byte and element extents of a row range of one tensor. */
interface Extent {
  shape: number[];
  byteStart: number;
  byteLength: number;
  firstElement: number;
}

/** Resolves a row range against a tensor; returns element/byte extents. */
function rowExtent(info: TensorInfo, range: RowRange | undefined, where: string): Extent {
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
    firstElement: (start * rowBytes) / dtypeBytes(info.dtype),
  };
}

/** Reads exactly `dest.length` bytes at absolute `position`. */
async function readAt(
  file: Deno.FsFile,
  position: number,
  dest: Uint8Array,
  path: string,
): Promise<void> {
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
    const size = dtypeBytes(info.dtype);
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
 *   TypeError for an unsupported dtype, RangeError for a header over `MAX_HEADER_BYTES`;
 *   each names the file and the tensor.
 */
export function openSafetensors(path: string, options?: OpenOptions): Promise<SafetensorsFile> {
  return SafetensorsFile.open(path, options);
}
