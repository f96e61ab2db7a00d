/**
 * Backward of SiLU and the SwiGLU gate (`./silu.ts`): `siluBackward`,
 * `swigluBackward` and their f64 CPU twin `siluBackwardReference`.
 *
 * ```
 * s = sigmoid(x)    silu(x) = x·s    silu'(x) = s·(1 + x·(1 − s))
 * siluBackward:   dx    = dy · silu'(x)
 * swigluBackward: dgate = dy · up · silu'(gate),   dup = dy · silu(gate)
 * ```
 *
 * Kernels (`shaders/silu_backward.wgsl`):
 * - `silu_backward`, `swiglu_backward`: naive, one thread per element, 256 per
 *   workgroup, f32; the sigmoid through `exp(-|x|)` as in the forward, so
 *   nothing overflows for finite inputs. Memory-bound; no faster variant needed.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { swigluBackward } from "./silu_backward.ts";
 * const gpu = await getGpu();
 * using gate = Tensor.fromArray(gpu, [0, 1], [2]);
 * using up = Tensor.fromArray(gpu, [2, 3], [2]);
 * using dy = Tensor.fromArray(gpu, [1, 1], [2]);
 * const { dgate, dup } = swigluBackward(gate, up, dy);
 * console.log(await dgate.toArray(), await dup.toArray()); // ≈ [1, 2.7821] [0, 0.7311]
 * ```
 *
 * @module
 */

import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import { grid1d, output } from "./launch.ts";

const WG = 256;

function assertF32(op: string, t: Tensor, what: string): void {
  if (t.dtype !== "f32") {
    throw new TypeError(
      `${op} ${what}: expected an f32 tensor, got ${t.dtype}${fmtShape(t.shape)}`,
    );
  }
}

function assertSameShape(op: string, ref: Tensor, refName: string, t: Tensor, what: string): void {
  if (t.rank !== ref.rank || t.shape.some((d, i) => d !== ref.shape[i])) {
    throw new RangeError(
      `${op} ${what}: expected the shape of ${refName} ${fmtShape(ref.shape)}, got ${
        fmtShape(t.shape)
      }`,
    );
  }
}

/**
 * Gradient of `silu(x)`: `dx = dy · silu'(x)`, elementwise.
 *
 * @param x The forward input `[...]`, f32.
 * @param dy Upstream gradient, x's shape, f32.
 * @returns A new tensor `dx` shaped like x.
 * @throws {TypeError} When a tensor is not f32.
 * @throws {RangeError} When dy's shape differs from x's (naming both).
 */
export function siluBackward(x: Tensor, dy: Tensor): Tensor<"f32"> {
  const op = "siluBackward()";
  assertF32(op, x, "x");
  assertF32(op, dy, "dy");
  assertSameShape(op, x, "x", dy, "dy");
  const gpu = x.gpu;
  const dx = output(gpu, x.shape, "f32");
  if (x.size === 0) return dx;
  const k = gpu.kernel({ shader: "silu_backward", entry: "silu_backward", constants: { WG } });
  gpu.dispatch(k, [x.buffer, dy.buffer, dx.buffer], grid1d(x.size, WG), { n: x.size });
  return dx;
}

/** Gradients returned by {@linkcode swigluBackward}. */
export interface SwigluGrads {
  /** `d gate`, gate's shape. */
  dgate: Tensor<"f32">;
  /** `d up`, up's shape. */
  dup: Tensor<"f32">;
}

/**
 * Gradients of `swiglu(gate, up) = silu(gate) · up`, elementwise.
 *
 * @param gate The forward gate `[...]` (gate_proj output), f32.
 * @param up The forward up `[...]` (up_proj output), same shape, f32.
 * @param dy Upstream gradient, same shape, f32.
 * @returns New tensors `{ dgate, dup }`.
 * @throws {TypeError} When a tensor is not f32.
 * @throws {RangeError} When the shapes differ (naming both).
 */
export function swigluBackward(gate: Tensor, up: Tensor, dy: Tensor): SwigluGrads {
  const op = "swigluBackward()";
  assertF32(op, gate, "gate");
  assertF32(op, up, "up");
  assertF32(op, dy, "dy");
  assertSameShape(op, gate, "gate", up, "up");
  assertSameShape(op, gate, "gate", dy, "dy");
  const gpu = gate.gpu;
  const dgate = output(gpu, gate.shape, "f32"), dup = output(gpu, gate.shape, "f32");
  if (gate.size === 0) return { dgate, dup };
  const k = gpu.kernel({ shader: "silu_backward", entry: "swiglu_backward", constants: { WG } });
  gpu.dispatch(
    k,
    [gate.buffer, up.buffer, dy.buffer, dgate.buffer, dup.buffer],
    grid1d(gate.size, WG),
    { n: gate.size },
  );
  return { dgate, dup };
}

/**
 * CPU twin of {@linkcode siluBackward} (and of {@linkcode swigluBackward} when
 * `up` is given): plain f64 loops.
 *
 * @param x `x` (or `gate`) values.
 * @param dy Upstream gradient, same length.
 * @param up `up` values for SwiGLU.
 * @returns `{ dx }` (SiLU: `dx`; SwiGLU: `dx` is `dgate`) and, with `up`, `dup`.
 */
export function siluBackwardReference(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  up?: ArrayLike<number>,
): { dx: Float64Array; dup?: Float64Array } {
  if (dy.length !== x.length || (up && up.length !== x.length)) {
    throw new RangeError(
      `siluBackwardReference(): x has ${x.length} elements, dy ${dy.length}` +
        (up ? `, up ${up.length}` : ""),
    );
  }
  const dx = new Float64Array(x.length);
  const dup = up ? new Float64Array(x.length) : undefined;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    const s = 1 / (1 + Math.exp(-v));
    const d = s * (1 + v * (1 - s));
    dx[i] = dy[i] * d * (up ? up[i] : 1);
    if (dup) dup[i] = dy[i] * v * s;
  }
  return dup ? { dx, dup } : { dx };
}
