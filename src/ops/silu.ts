/**
 * SiLU activation and the SwiGLU gate of Qwen3/Llama MLPs:
 * `silu(x) = x * sigmoid(x)` and `swiglu(gate, up) = silu(gate) * up`
 * (the MLP is `down(swiglu(gate x, up x))`).
 *
 * Kernels (`shaders/silu.wgsl`):
 * - `silu`, `swiglu`: naive, one thread per element, 256 per workgroup, f32
 *   math on f32 or f16 storage. The sigmoid uses `e = exp(-|x|)` so nothing
 *   overflows for any finite input. Memory-bound; no faster variant needed.
 *
 * f16 storage: the result is computed in f32 and rounded once to f16
 * (PyTorch's f16 `silu(g) * u` rounds twice: after silu and after the product).
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { swiglu } from "./silu.ts";
 * const gpu = await getGpu();
 * using gate = Tensor.fromArray(gpu, [0, 1, -1, 2], [2, 2]);
 * using up = Tensor.fromArray(gpu, [1, 1, 2, 0.5], [2, 2]);
 * using y = swiglu(gate, up); // y:[2, 2]
 * console.log(await y.toArray()); // ≈ [0, 0.7311, -0.5379, 0.8808]
 * ```
 *
 * @module
 */

import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { assertFloat, grid1d, output, sameDtype } from "./launch.ts";

const WG = 256;

/** `b` is swiglu's `up`; the `silu` entry point binds only `a` and `out`. */
function launch(entry: "silu" | "swiglu", a: Tensor, b?: Tensor): Tensor<FloatDType> {
  const gpu = a.gpu;
  const dtype = a.dtype as FloatDType;
  const out = output(gpu, a.shape, dtype);
  const k = gpu.kernel({ shader: "silu", entry, defines: { T: dtype }, constants: { WG } });
  gpu.dispatch(
    k,
    b ? [a.buffer, b.buffer, out.buffer] : [a.buffer, out.buffer],
    grid1d(a.size, WG),
    { n: a.size },
  );
  return out;
}

/**
 * `silu(x) = x * sigmoid(x) = x / (1 + exp(-x))`, elementwise.
 *
 * @param x Any shape `[...]`, f32 or f16.
 * @returns A new tensor `[...]` of x's dtype.
 * @throws {TypeError} When x is not a float tensor.
 */
export function silu(x: Tensor): Tensor<FloatDType> {
  assertFloat(x, "silu() x");
  return launch("silu", x);
}

/**
 * SwiGLU gate `silu(gate) * up`, elementwise (the Qwen3/Llama MLP activation).
 *
 * @param gate `[...]`, f32 or f16 (the gate_proj output).
 * @param up `[...]`, same shape and dtype (the up_proj output).
 * @returns A new tensor `[...]` of their dtype.
 * @throws {TypeError} When the tensors are not floats or their dtypes differ.
 * @throws {RangeError} When the shapes differ.
 */
export function swiglu(gate: Tensor, up: Tensor): Tensor<FloatDType> {
  assertFloat(gate, "swiglu() gate");
  assertFloat(up, "swiglu() up");
  sameDtype("swiglu()", gate, up);
  if (gate.rank !== up.rank || gate.shape.some((d, i) => d !== up.shape[i])) {
    throw new RangeError(
      `swiglu(): gate and up must have the same shape, got gate ${fmtShape(gate.shape)} and up ${
        fmtShape(up.shape)
      }`,
    );
  }
  return launch("swiglu", gate, up);
}

/**
 * CPU reference for {@linkcode silu} (and {@linkcode swiglu} when `up` is
 * given): plain f64 loop, `x / (1 + exp(-x))` (times `up`), rounded to f32.
 */
export function siluReference(x: ArrayLike<number>, up?: ArrayLike<number>): Float32Array {
  if (up && up.length !== x.length) {
    throw new RangeError(`siluReference(): x has ${x.length} elements but up has ${up.length}`);
  }
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    const s = v / (1 + Math.exp(-v));
    out[i] = up ? s * up[i] : s;
  }
  return out;
}
