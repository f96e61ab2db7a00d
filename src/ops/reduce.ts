/**
 * Reductions over the last dimension: {@linkcode sum}, {@linkcode mean},
 * {@linkcode max} and {@linkcode argmax}, `x:[..., N] → [...]`.
 *
 * Kernels (`shaders/reduce.wgsl`):
 * - `reduce_sum` / `reduce_max` / `reduce_argmax`: one workgroup per row; each
 *   thread folds a strided (coalesced) slice of the row in f32, loading 8
 *   elements before using them, then a tree reduction in workgroup memory
 *   combines the partials. Any N (threads past the end contribute nothing);
 *   the workgroup size is the smallest power of two >= 32 covering N / 8, up to
 *   1024. Rows past 65535 use a 2-D grid. An LM-head row (N = 151936) is one
 *   workgroup of 1024 threads with ~148 elements each.
 *   H100 (Vulkan), one or eight 151936 rows: argmax 74 µs, sum 63 µs; the
 *   earlier version (one load per step, <= 256 threads) took 110 µs. Still
 *   latency bound: one workgroup per row reads at ~8 GB/s.
 *   No split-row variant yet: a few very long rows use only a few compute
 *   units (fine for a decode step's `[B, V]`, slow for a single huge row).
 *
 * Semantics: f32 accumulation, result stored in x's dtype (an f16 sum can
 * overflow f16 where the f32 accumulator did not, as in PyTorch). `argmax`
 * returns i32, the first index of the maximum on ties (like `torch.argmax`).
 * NaN inputs are not handled (the result is unspecified).
 *
 * @example Row sums and the greedy token of logits:[B, V]
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { argmax, sum } from "./reduce.ts";
 * const gpu = await getGpu();
 * using x = Tensor.fromArray(gpu, [1, 5, 5, 2, 0, 1], [2, 3]);
 * using s = sum(x); // s:[2]
 * using a = argmax(x); // a:[2] i32
 * console.log(await s.toArray(), await a.toArray()); // [11, 3] [1, 0]
 * ```
 *
 * @module
 */

import { Gpu, type Kernel, type KernelSpec } from "../gpu/device.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { assertFloat, output, rowWorkgroupSize } from "./launch.ts";

/** A reduction over the last dimension. */
export type ReduceOp = "sum" | "mean" | "max" | "argmax";

function reduce(op: ReduceOp, x: Tensor): Tensor {
  const name = `${op}()`;
  assertFloat(x, `${name} x`);
  if (x.rank < 1) {
    throw new RangeError(`${name} x: expected shape [..., N], got ${fmtShape(x.shape)}`);
  }
  const n = x.shape[x.rank - 1];
  if (n === 0 && op !== "sum") {
    throw new RangeError(`${name} x: the last dimension is empty in ${fmtShape(x.shape)}`);
  }
  const gpu = x.gpu;
  const shape = x.shape.slice(0, -1); // out:[...]
  const out = output(gpu, shape, op === "argmax" ? "i32" : x.dtype);
  const rows = shape.reduce((a, b) => a * b, 1);
  if (rows === 0) return out;
  const WG = rowWorkgroupSize(gpu, n);
  const entry = op === "argmax" ? "reduce_argmax" : op === "max" ? "reduce_max" : "reduce_sum";
  const k = kernelOf(gpu, { shader: "reduce", entry, defines: { T: x.dtype }, constants: { WG } });
  const scale = op === "mean" ? 1 / n : 1;
  gpu.dispatch(k, [x.buffer, out.buffer], Gpu.grid(rows), { rows, n, scale });
  return out;
}

/**
 * Sum over the last dimension (f32 accumulation).
 *
 * @param x `[..., N]`, f32 or f16 (N may be 0: the sums are 0).
 * @returns `[...]` in x's dtype.
 * @throws {TypeError} When x is not a float tensor.
 * @throws {RangeError} When x is a scalar.
 */
export function sum(x: Tensor): Tensor<FloatDType> {
  return reduce("sum", x) as Tensor<FloatDType>;
}

/**
 * Mean over the last dimension (f32 accumulation).
 *
 * @param x `[..., N]`, f32 or f16, N >= 1.
 * @returns `[...]` in x's dtype.
 * @throws {TypeError} When x is not a float tensor.
 * @throws {RangeError} When x is a scalar or N is 0.
 */
export function mean(x: Tensor): Tensor<FloatDType> {
  return reduce("mean", x) as Tensor<FloatDType>;
}

/**
 * Maximum over the last dimension.
 *
 * @param x `[..., N]`, f32 or f16, N >= 1.
 * @returns `[...]` in x's dtype.
 * @throws {TypeError} When x is not a float tensor.
 * @throws {RangeError} When x is a scalar or N is 0.
 */
export function max(x: Tensor): Tensor<FloatDType> {
  return reduce("max", x) as Tensor<FloatDType>;
}

/**
 * Index of the maximum over the last dimension; the first one on ties, like `torch.argmax`.
 *
 * @param x `[..., N]`, f32 or f16, N >= 1.
 * @returns `[...]` i32 indices in `0..N-1`.
 * @throws {TypeError} When x is not a float tensor.
 * @throws {RangeError} When x is a scalar or N is 0.
 *
 * @example Greedy tokens of logits:[B, V]
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { argmax } from "./reduce.ts";
 * const gpu = await getGpu();
 * using logits = Tensor.fromArray(gpu, [0, 2, 2, 1], [1, 4]);
 * using ids = argmax(logits); // ids:[1]
 * console.log(await ids.toArray()); // Int32Array [1]
 * ```
 */
export function argmax(x: Tensor): Tensor<"i32"> {
  return reduce("argmax", x) as Tensor<"i32">;
}

/**
 * CPU reference for {@linkcode sum}, {@linkcode mean} and {@linkcode max}: plain loops in f64.
 *
 * @param op The reduction.
 * @param x Row-major values of `[rows, n]`.
 * @param n Row length (the last dimension).
 * @returns `[rows]` results.
 */
export function reduceReference(
  op: "sum" | "mean" | "max",
  x: ArrayLike<number>,
  n: number,
): Float64Array {
  const rows = n === 0 ? 0 : x.length / n;
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = op === "max" ? -Infinity : 0;
    for (let j = 0; j < n; j++) {
      const v = x[r * n + j];
      acc = op === "max" ? Math.max(acc, v) : acc + v;
    }
    out[r] = op === "mean" ? acc / n : acc;
  }
  return out;
}

/**
 * CPU reference for {@linkcode argmax}: the first index of each row's maximum.
 *
 * @param x Row-major values of `[rows, n]`, n >= 1.
 * @param n Row length.
 * @returns `[rows]` indices.
 */
export function argmaxReference(x: ArrayLike<number>, n: number): Int32Array {
  const rows = x.length / n;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let j = 1; j < n; j++) if (x[r * n + j] > x[r * n + best]) best = j;
    out[r] = best;
  }
  return out;
}

function kernelOf(gpu: Gpu, spec: KernelSpec): Kernel {
  return gpu.kernel(spec);
}
