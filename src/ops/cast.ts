/**
 * Float dtype conversion: `cast(x, "f16")` and `cast(x, "f32")`.
 *
 * f32 → f16 rounds to nearest even, overflows to ±inf (|x| ≥ 65520), keeps
 * -0 and f16 subnormals, and maps NaN to a quiet NaN: bit-for-bit what
 * PyTorch's `.half()` and {@linkcode roundToF16} give for every finite
 * input. f16 → f32 is exact. Same-dtype casts are copies.
 *
 * Kernels (`shaders/cast.wgsl`):
 * - `f32_to_f16`, `f16_to_f32`: one thread per pair of elements, converting
 *   bit patterns with integer ops (WGSL leaves the rounding mode and overflow
 *   of `f16(x)` to the implementation, so the builtin is not used). f16 data
 *   moves as packed u32 pairs. Memory-bound; no faster variant needed.
 * - same dtype: `copyBufferToBuffer` on the shared encoder, no kernel.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { cast } from "./cast.ts";
 * const gpu = await getGpu();
 * if (gpu.hasF16) {
 *   using x = Tensor.fromArray(gpu, [1 / 3, 70000, -0], [3]);
 *   using h = cast(x, "f16");
 *   console.log(h.dtype, await h.toArray()); // f16 [0.333251953125, Infinity, -0]
 * }
 * ```
 *
 * @module
 */

import { align } from "../gpu/device.ts";
import { grid1d, output } from "./launch.ts";
import { type FloatDType, roundToF16 } from "../tensor/dtype.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";

const WG = 256;

/**
 * Converts a float tensor to `dtype` (a new tensor, also when the dtype is unchanged).
 *
 * @param x Any shape `[...]`, f32 or f16.
 * @param dtype Target float dtype. f16 needs the device's `shader-f16`.
 * @returns A new tensor `[...]` of `dtype`.
 * @throws {TypeError} When x or dtype is not f32/f16, or f16 is unavailable.
 */
export function cast<D extends FloatDType>(x: Tensor, dtype: D): Tensor<D> {
  if (x.dtype !== "f32" && x.dtype !== "f16") {
    throw new TypeError(
      `cast() x: expected an f32 or f16 tensor, got ${x.dtype}${fmtShape(x.shape)}`,
    );
  }
  if (dtype !== "f32" && dtype !== "f16") {
    throw new TypeError(`cast() dtype: expected "f32" or "f16", got "${dtype}"`);
  }
  const gpu = x.gpu;
  const out = output(gpu, x.shape, dtype);
  const n = x.size;
  if (n === 0) return out;
  if (x.dtype === dtype) {
    const bytes = Math.min(align(x.byteSize, 4), x.buffer.size, out.buffer.size);
    gpu.encoder().copyBufferToBuffer(x.buffer, 0, out.buffer, 0, bytes);
    return out;
  }
  const entry = dtype === "f16" ? "f32_to_f16" : "f16_to_f32";
  const k = gpu.kernel({ shader: "cast", entry, constants: { WG } });
  gpu.dispatch(k, [x.buffer, out.buffer], grid1d(Math.ceil(n / 2), WG), { n });
  return out;
}

/**
 * CPU reference for {@linkcode cast}: the values a `dtype` tensor holds
 * (f16: round to nearest even via {@linkcode roundToF16}; f32: `Math.fround`).
 */
export function castReference(x: ArrayLike<number>, dtype: FloatDType): Float32Array {
  return dtype === "f16" ? roundToF16(x) : Float32Array.from(x);
}
