/**
 * Backward of RMSNorm (`rmsNorm` in `./rmsnorm.ts`, HF Llama/Qwen3 semantics):
 * `rmsNormBackward` and its f64 CPU twin `rmsNormBackwardReference`.
 *
 * ```
 * forward:  y = g · x · r,    r = (mean(x²) + eps)^(-1/2)        x:[rows, D]  g:[D]
 * dx[i]    = r · g[i] · dy[i] − x[i] · r³/D · Σ_j g[j] · dy[j] · x[j]
 * dgain[i] = Σ_rows dy[i] · x[i] · r
 * ```
 *
 * Per-head norms (Qwen3 `q_norm`/`k_norm`) work as in the forward: view
 * `[..., heads, headDim]` so every head is a row; dgain sums over all of them.
 *
 * Kernels (`shaders/rmsnorm_backward.wgsl`), f32:
 * - `rmsnorm_dx`: one workgroup per row (32..256 threads as the forward), one
 *   tree reduction for both row sums (x² and g·dy·x), then dx; stores the
 *   row's `r` for the gain gradient (no recomputation).
 * - `dgain_partial` + `dgain_sum`: the gain gradient in two deterministic
 *   passes, per 64-row block then over the blocks, so a `D = 128` per-head norm
 *   over thousands of rows keeps `rows/64 · D` threads busy instead of `D`.
 *
 * No atomics; every sum has a fixed order, so results are bit-reproducible.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { rmsNormBackward } from "./rmsnorm_backward.ts";
 * const gpu = await getGpu();
 * using x = Tensor.fromArray(gpu, [1, 1, 1, 1], [1, 4]);
 * using g = Tensor.fromArray(gpu, [1, 1, 1, 1], [4]);
 * using dy = Tensor.fromArray(gpu, [1, 0, 0, 0], [1, 4]);
 * const { dx, dgain } = rmsNormBackward(x, g, dy, 0);
 * console.log(await dx.toArray(), await dgain.toArray()); // [0.75, -0.25, -0.25, -0.25] [1, 0, 0, 0]
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import { grid1d, output } from "./launch.ts";

/** Rows per partial sum of the gain gradient (the shader's `BLOCK`). */
const BLOCK = 64;
const WG = 256;

/** Gradients returned by {@linkcode rmsNormBackward}. */
export interface RmsNormGrads {
  /** `dx`, x's shape. */
  dx: Tensor<"f32">;
  /** `dgain:[D]`. */
  dgain: Tensor<"f32">;
}

/** Workgroup size for rows of length `d`: the smallest power of two in 32..256 that covers it. */
function workgroupSize(d: number): number {
  let wg = 32;
  while (wg < d && wg < 256) wg *= 2;
  return wg;
}

/**
 * Gradients of `rmsNorm(x, gain, eps)` with respect to x and the gain.
 *
 * @param x The forward input `[..., D]`, f32.
 * @param gain `[D]`, f32.
 * @param dy Upstream gradient, x's shape, f32.
 * @param eps As given to the forward (finite, >= 0).
 * @returns New tensors `{ dx:[..., D], dgain:[D] }`.
 * @throws {TypeError} When a tensor is not f32 (naming it).
 * @throws {RangeError} When shapes disagree (naming the argument and both shapes) or eps is invalid.
 */
export function rmsNormBackward(x: Tensor, gain: Tensor, dy: Tensor, eps: number): RmsNormGrads {
  const op = "rmsNormBackward()";
  for (const [t, name] of [[x, "x"], [gain, "gain"], [dy, "dy"]] as const) {
    if (t.dtype !== "f32") {
      throw new TypeError(
        `${op} ${name}: expected an f32 tensor, got ${t.dtype}${fmtShape(t.shape)}`,
      );
    }
  }
  if (x.rank < 1) {
    throw new RangeError(`${op} x: expected shape [..., D], got ${fmtShape(x.shape)}`);
  }
  const d = x.shape[x.rank - 1];
  if (gain.rank !== 1 || gain.shape[0] !== d) {
    throw new RangeError(
      `${op} gain: expected shape [${d}] to match x ${fmtShape(x.shape)}, got ${
        fmtShape(gain.shape)
      }`,
    );
  }
  if (dy.rank !== x.rank || dy.shape.some((v, i) => v !== x.shape[i])) {
    throw new RangeError(
      `${op} dy: expected the shape of x ${fmtShape(x.shape)}, got ${fmtShape(dy.shape)}`,
    );
  }
  if (!(Number.isFinite(eps) && eps >= 0)) {
    throw new RangeError(`${op} eps: expected a finite number >= 0, got ${eps}`);
  }
  const gpu = x.gpu;
  const dx = output(gpu, x.shape, "f32");
  if (d === 0) return { dx, dgain: output(gpu, [0], "f32") };
  const rows = x.size / d;
  const blocks = Math.ceil(rows / BLOCK);
  const params = { rows, d, eps, blocks };
  if (rows === 0) {
    const dgain = output(gpu, [d], "f32");
    gpu.encoder().clearBuffer(dgain.buffer);
    return { dx, dgain };
  }
  using rstd = output(gpu, [rows], "f32");
  using partial = output(gpu, [blocks, d], "f32");
  const dgain = output(gpu, [d], "f32");
  const kernel = (entry: string, wg: number) =>
    gpu.kernel({ shader: "rmsnorm_backward", entry, constants: { WG: wg, BLOCK } });
  gpu.dispatch(
    kernel("rmsnorm_dx", workgroupSize(d)),
    [x.buffer, gain.buffer, dy.buffer, dx.buffer, rstd.buffer],
    Gpu.grid(rows),
    params,
  );
  gpu.dispatch(
    kernel("dgain_partial", WG),
    [x.buffer, dy.buffer, rstd.buffer, partial.buffer],
    grid1d(blocks * d, WG),
    params,
  );
  gpu.dispatch(kernel("dgain_sum", WG), [partial.buffer, dgain.buffer], grid1d(d, WG), params);
  return { dx, dgain };
}

/**
 * CPU twin of {@linkcode rmsNormBackward}: plain f64 loops, the derivative of
 * `rmsNormReference`.
 *
 * @param x Row-major `[rows, D]` data.
 * @param gain `[D]`.
 * @param dy `[rows, D]`.
 * @param eps Added to the mean square.
 * @returns `{ dx:[rows, D], dgain:[D] }` in f64.
 */
export function rmsNormBackwardReference(
  x: ArrayLike<number>,
  gain: ArrayLike<number>,
  dy: ArrayLike<number>,
  eps: number,
): { dx: Float64Array; dgain: Float64Array } {
  const d = gain.length;
  if ((d === 0 ? x.length !== 0 : x.length % d !== 0) || dy.length !== x.length) {
    throw new RangeError(
      `rmsNormBackwardReference(): x ${x.length} and dy ${dy.length} values are not rows of ${d}`,
    );
  }
  const dx = new Float64Array(x.length), dgain = new Float64Array(d);
  for (let base = 0; base < x.length; base += d) {
    let ss = 0, dot = 0;
    for (let i = 0; i < d; i++) {
      ss += x[base + i] * x[base + i];
      dot += gain[i] * dy[base + i] * x[base + i];
    }
    const r = 1 / Math.sqrt(ss / d + eps);
    const c = (dot * r * r * r) / d;
    for (let i = 0; i < d; i++) {
      dx[base + i] = r * gain[i] * dy[base + i] - x[base + i] * c;
      dgain[i] += dy[base + i] * x[base + i] * r;
    }
  }
  return { dx, dgain };
}
