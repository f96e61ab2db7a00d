/**
 * Elementwise ops: `add`, `mul`, `axpy` (alpha·a + b) and `scale`, with
 * suffix broadcasting of `b` (e.g. a bias `[N]` over `[M, N]`).
 *
 * Kernels (`shaders/elementwise.wgsl`): one thread per element, 256 per
 * workgroup, f32 math on f32 or f16 storage.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { add } from "./elementwise.ts";
 * const gpu = await getGpu();
 * using x = Tensor.fromArray(gpu, [1, 2, 3, 4], [2, 2]);
 * using b = Tensor.fromArray(gpu, [10, 20], [2]);
 * using y = add(x, b);
 * console.log(await y.toArray()); // [11, 22, 13, 24]
 * ```
 *
 * @module
 */

import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { assertFloat, grid1d, output, sameDtype } from "./launch.ts";

const WG = 256;

function checkBroadcast(op: string, a: Tensor, b: Tensor): void {
  const k = b.rank;
  const ok = b.size === 1 || k <= a.rank && b.shape.every((d, i) => d === a.shape[a.rank - k + i]);
  if (!ok) {
    throw new RangeError(
      `${op}: cannot broadcast ${fmtShape(b.shape)} onto ${
        fmtShape(a.shape)
      } (b must match a's trailing dimensions or hold one element)`,
    );
  }
}

function binary(
  entry: "add" | "mul" | "axpy" | "scale",
  a: Tensor,
  b: Tensor,
  alpha: number,
): Tensor<FloatDType> {
  assertFloat(a, entry);
  const dtype = sameDtype(entry, a, b) as FloatDType;
  checkBroadcast(entry, a, b);
  const gpu = a.gpu;
  const out = output(gpu, a.shape, dtype);
  const k = gpu.kernel({ shader: "elementwise", entry, defines: { T: dtype }, constants: { WG } });
  gpu.dispatch(
    k,
    entry === "scale" ? [a.buffer, out.buffer] : [a.buffer, b.buffer, out.buffer],
    grid1d(a.size, WG),
    { n: a.size, m: Math.max(1, b.size), alpha },
  );
  return out;
}

/** `a + b`, `b` broadcast over a's leading dims. Shapes: a:[..., *s] b:[*s] → [..., *s]. */
export function add(a: Tensor, b: Tensor): Tensor<FloatDType> {
  return binary("add", a, b, 1);
}

/** `a * b` elementwise, `b` broadcast over a's leading dims. */
export function mul(a: Tensor, b: Tensor): Tensor<FloatDType> {
  return binary("mul", a, b, 1);
}

/** `alpha * a + b`, `b` broadcast over a's leading dims. */
export function axpy(alpha: number, a: Tensor, b: Tensor): Tensor<FloatDType> {
  return binary("axpy", a, b, alpha);
}

/** `alpha * a`. */
export function scale(a: Tensor, alpha: number): Tensor<FloatDType> {
  return binary("scale", a, a, alpha);
}

/** CPU reference for {@linkcode add}/{@linkcode mul}/{@linkcode axpy}/{@linkcode scale}. */
export function elementwiseReference(
  op: "add" | "mul" | "axpy" | "scale",
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  alpha = 1,
): Float32Array {
  const out = new Float32Array(a.length);
  const m = Math.max(1, b.length);
  for (let i = 0; i < a.length; i++) {
    const x = a[i], y = b[i % m];
    out[i] = op === "add"
      ? x + y
      : op === "mul"
      ? x * y
      : op === "axpy"
      ? alpha * x + y
      : alpha * x;
  }
  return out;
}
