/**
 * `Tensor`: a shape, a dtype and a GPU buffer. `toArray()` is the only way
 * back to the CPU. Tensors are disposed explicitly (`dispose()` or `using`);
 * their buffers return to the device's pool.
 *
 * @example Upload, reshape, read back
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "./tensor.ts";
 * const gpu = await getGpu();
 * using t = Tensor.fromArray(gpu, [1, 2, 3, 4, 5, 6], [2, 3]);
 * using v = t.reshape([3, 2]);
 * console.log(v.shape, await v.toArray()); // [3, 2] Float32Array(6) [1, 2, 3, 4, 5, 6]
 * ```
 *
 * @module
 */

import { align, type Gpu } from "../gpu/device.ts";
import { type ArrayFor, bytesPer, type DType, fromF16Bits, toF16Bits } from "./dtype.ts";

/** Reference-counted GPU buffer shared by a tensor and its views. */
class Storage {
  refs = 1;
  constructor(readonly gpu: Gpu, readonly buffer: GPUBuffer, readonly owned: boolean) {}
  release(): void {
    if (--this.refs === 0 && this.owned) this.gpu.release(this.buffer);
  }
}

/** Formats a shape as `[2, 3]`. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** Number of elements of a shape (validating it). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new RangeError(`Invalid shape ${fmtShape(shape)}: dimensions must be integers >= 0`);
    }
    n *= d;
  }
  return n;
}

/** An n-dimensional array in GPU memory. */
export class Tensor<D extends DType = DType> {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: D;
  /** The device that owns the buffer. */
  readonly gpu: Gpu;
  #storage: Storage | undefined;

  private constructor(gpu: Gpu, shape: readonly number[], dtype: D, storage: Storage) {
    this.gpu = gpu;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.#storage = storage;
  }

  /** Allocates an uninitialised tensor. */
  static empty<D extends DType = "f32">(gpu: Gpu, shape: readonly number[], dtype?: D): Tensor<D> {
    const dt = (dtype ?? "f32") as D;
    checkDtype(gpu, dt);
    const bytes = numel(shape) * bytesPer(dt);
    return new Tensor(gpu, shape, dt, new Storage(gpu, gpu.alloc(bytes), true));
  }

  /** Allocates a tensor filled with zeros (cleared on the GPU). */
  static zeros<D extends DType = "f32">(gpu: Gpu, shape: readonly number[], dtype?: D): Tensor<D> {
    const t = Tensor.empty(gpu, shape, dtype);
    gpu.encoder().clearBuffer(t.buffer);
    return t;
  }

  /**
   * Uploads CPU data. Floats are converted to `dtype` (f16 rounds to nearest
   * even); the length must equal the shape's element count.
   */
  static fromArray<D extends DType = "f32">(
    gpu: Gpu,
    data: ArrayLike<number>,
    shape: readonly number[],
    dtype?: D,
  ): Tensor<D> {
    const dt = (dtype ?? "f32") as D;
    const n = numel(shape);
    if (data.length !== n) {
      throw new RangeError(
        `Data has ${data.length} elements but shape ${fmtShape(shape)} needs ${n}`,
      );
    }
    const t = Tensor.empty(gpu, shape, dt);
    t.write(data);
    return t;
  }

  /** Wraps an existing buffer (not returned to the pool on dispose). */
  static wrap<D extends DType>(
    gpu: Gpu,
    buffer: GPUBuffer,
    shape: readonly number[],
    dtype: D,
  ): Tensor<D> {
    const bytes = numel(shape) * bytesPer(dtype);
    if (bytes > buffer.size) {
      throw new RangeError(
        `Buffer of ${buffer.size} bytes is too small for ${dtype}${fmtShape(shape)}`,
      );
    }
    return new Tensor(gpu, shape, dtype, new Storage(gpu, buffer, false));
  }

  /** Overwrites the contents from CPU data (same element count). */
  write(data: ArrayLike<number>): void {
    const n = this.size;
    if (data.length !== n) {
      throw new RangeError(
        `Data has ${data.length} elements but tensor ${fmtShape(this.shape)} holds ${n}`,
      );
    }
    this.gpu.write(this.buffer, toTyped(data, this.dtype));
  }

  /** The GPU buffer (throws after dispose). */
  get buffer(): GPUBuffer {
    if (!this.#storage) throw new Error(`Tensor ${fmtShape(this.shape)} used after dispose()`);
    return this.#storage.buffer;
  }

  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }

  /** Bytes of data (excluding padding). */
  get byteSize(): number {
    return this.size * bytesPer(this.dtype);
  }

  /** Number of dimensions. */
  get rank(): number {
    return this.shape.length;
  }

  /** Whether `dispose()` was called. */
  get disposed(): boolean {
    return this.#storage === undefined;
  }

  /** A view with another shape over the same buffer (one `-1` is inferred). */
  reshape(shape: readonly number[]): Tensor<D> {
    const n = this.size;
    const s = [...shape];
    const neg = s.indexOf(-1);
    if (neg >= 0) {
      const rest = numel(s.filter((_, i) => i !== neg));
      if (rest === 0 || n % rest) {
        throw new RangeError(`Cannot reshape ${fmtShape(this.shape)} to ${fmtShape(shape)}`);
      }
      s[neg] = n / rest;
    }
    if (numel(s) !== n) {
      throw new RangeError(
        `Cannot reshape ${fmtShape(this.shape)} to ${fmtShape(shape)}: ${n} elements vs ${
          numel(s)
        }`,
      );
    }
    const st = this.#storage;
    if (!st) throw new Error(`Tensor ${fmtShape(this.shape)} used after dispose()`);
    st.refs++;
    return new Tensor(this.gpu, s, this.dtype, st);
  }

  /** Copies the data back to the CPU (f16 is widened to f32). */
  async toArray(): Promise<ArrayFor<D>> {
    const bytes = await this.gpu.read(this.buffer, align(this.byteSize, 4));
    return fromBytes(bytes, this.dtype, this.size) as ArrayFor<D>;
  }

  /** Releases the buffer (views keep it alive until they are disposed too). Idempotent. */
  dispose(): void {
    this.#storage?.release();
    this.#storage = undefined;
  }

  /** `using t = ...` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** A short description, e.g. `Tensor(f32[2, 3])`. */
  toString(): string {
    return `Tensor(${this.dtype}${fmtShape(this.shape)})`;
  }
}

/** Reads back several tensors with one submit and one map. */
export async function readTensors(
  tensors: readonly Tensor[],
): Promise<(Float32Array | Int32Array | Uint32Array)[]> {
  if (!tensors.length) return [];
  const gpu = tensors[0].gpu;
  const bufs = await gpu.readMany(
    tensors.map((t) => ({ buffer: t.buffer, size: align(t.byteSize, 4) })),
  );
  return bufs.map((b, i) => fromBytes(b, tensors[i].dtype, tensors[i].size));
}

/** Throws a `RangeError` unless the shapes are equal. */
export function assertShape(t: Tensor, shape: readonly number[], what = "tensor"): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new RangeError(`${what}: expected shape ${fmtShape(shape)}, got ${fmtShape(t.shape)}`);
  }
}

function checkDtype(gpu: Gpu, dtype: DType): void {
  if (!["f32", "f16", "i32", "u32"].includes(dtype)) {
    throw new TypeError(`Unknown dtype "${dtype}" (expected f32, f16, i32 or u32)`);
  }
  if (dtype === "f16" && !gpu.hasF16) {
    throw new TypeError("dtype f16 needs the shader-f16 feature, which this device lacks");
  }
}

function toTyped(data: ArrayLike<number>, dtype: DType): ArrayBufferView {
  switch (dtype) {
    case "f32":
      return data instanceof Float32Array ? data : Float32Array.from(data);
    case "f16":
      return toF16Bits(data);
    case "i32":
      return data instanceof Int32Array ? data : Int32Array.from(data);
    case "u32":
      return data instanceof Uint32Array ? data : Uint32Array.from(data);
  }
}

function fromBytes(
  bytes: ArrayBuffer,
  dtype: DType,
  n: number,
): Float32Array | Int32Array | Uint32Array {
  switch (dtype) {
    case "f32":
      return new Float32Array(bytes, 0, n);
    case "f16":
      return fromF16Bits(new Uint16Array(bytes, 0, n));
    case "i32":
      return new Int32Array(bytes, 0, n);
    case "u32":
      return new Uint32Array(bytes, 0, n);
  }
}
