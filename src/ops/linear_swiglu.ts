/**
 * The input half of a Qwen3/Llama MLP in one op: `linearSwiglu(x, gate, up)` =
 * `silu(x·gateᵀ + bg) ⊙ (x·upᵀ + bu)`, i.e. `swiglu(linear(x, gate), linear(x, up))`, and its
 * CPU reference {@linkcode linearSwigluReference}.
 *
 * Variants:
 * - `unfused` (the readable chain): `linear(x, gate)`, `linear(x, up)`, then `swiglu`
 *   (./silu.ts): three dispatches and two `[M, F]` intermediates rounded to the storage dtype.
 * - `fused`: one dispatch that stores `silu(g) ⊙ u` rounded once, for K a whole number of
 *   16-byte words (K % 8 = 0 in f16, 4 in f32), instead of three. Decode is dispatch-bound
 *   (issue #10: each dispatch costs ≥ 5 µs of GPU time on the H200 however small), so this
 *   saves two dispatches per layer and token.
 *   - M < `SKINNY_MIN_M` (8): the `gemv16_swiglu` kernel of `shaders/gemv.wgsl` (launcher in
 *     ./gemv.ts): each workgroup streams 2 rows of `gate` and the same 2 rows of `up` against
 *     the same x words (16-byte loads, 64 lanes per row, f32 accumulation);
 *   - 8 ≤ M ≤ `SKINNY_MAX_M` (256; a batch of chains): `skinny_swiglu` (./skinny.ts: the first
 *     half of a workgroup's slots read gate rows, the second half the same rows of up).
 *
 * `auto` picks `fused` when it applies on a GPU, `unfused` otherwise, including on CPU
 * rasterisers (lavapipe...), where `linear` also avoids its GEMV kernels (see ./matmul.ts).
 *
 * `norm` (the post-attention RMSNorm): `linearSwiglu(rmsNorm(x, weight, eps), gate, up)`; the
 * `gemv16_swiglu` kernel computes the norm in its own dispatch (./gemv.ts) when the weight has
 * x's dtype, otherwise (and before `skinny_swiglu`) a separate `rmsNorm` dispatch runs first
 * (same values).
 *
 * @example One decode row through the MLP's input projections
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { linearSwiglu } from "./linear_swiglu.ts";
 * const gpu = await getGpu();
 * using h = Tensor.fromArray(gpu, [1, 2, 3, 4], [1, 4]); // h:[M=1, K=4]
 * using gate = Tensor.fromArray(gpu, [1, 0, 0, 0, 0, 0, 0, -1], [2, 4]); // gate:[F=2, K]
 * using up = Tensor.fromArray(gpu, [1, 1, 1, 1, 0, 0, 0, 1], [2, 4]); // up:[F, K]
 * using a = linearSwiglu(h, gate, up); // a = silu(h·gateᵀ) ⊙ (h·upᵀ):[1, 2]
 * console.log(await a.toArray()); // ≈ [7.311, -0.2877]
 * ```
 *
 * @module
 */

import type { FloatDType } from "../tensor/dtype.ts";
import { fmtShape, numel, type Tensor } from "../tensor/tensor.ts";
import {
  checkNorm,
  dispatchGemv16,
  gemvApplies,
  normFusable,
  type RmsNormPrologue,
  rmsNormRowsReference,
} from "./gemv.ts";
import { assertFloat, output, sameDtype } from "./launch.ts";
import { linear } from "./matmul.ts";
import { rmsNorm } from "./rmsnorm.ts";
import { swiglu } from "./silu.ts";
import { dispatchSkinny, SKINNY_MAX_M, SKINNY_MIN_M, skinnyApplies } from "./skinny.ts";

/**
 * Most rows of `x` the fused kernels take (decode: one row per sequence of a batch):
 * `gemv16_swiglu` below `SKINNY_MIN_M`, `skinny_swiglu` from there.
 */
export const LINEAR_SWIGLU_FUSED_MAX_M = SKINNY_MAX_M;

/** `fused`: one `gemv16_swiglu` or `skinny_swiglu` dispatch; `unfused`: two linears and `swiglu`. */
export type LinearSwigluVariant = "auto" | "fused" | "unfused";

/** Options of {@linkcode linearSwiglu}. */
export interface LinearSwigluOptions {
  /** `gateBias:[F]`, same dtype as `x`. */
  gateBias?: Tensor;
  /** `upBias:[F]`, same dtype as `x`. */
  upBias?: Tensor;
  /** RMSNorm prologue: x is replaced by `rmsNorm(x, norm.weight, norm.eps)`. */
  norm?: RmsNormPrologue;
  /** Force a variant (tests, benchmarks). Default `auto`. */
  variant?: LinearSwigluVariant;
}

/**
 * `silu(x·gateᵀ + gateBias) ⊙ (x·upᵀ + upBias)`, f32 accumulation on f32 or f16 storage.
 *
 * Shapes: `x:[..., K]`, `gate:[F, K]`, `up:[F, K]`, biases `[F]` → `[..., F]`.
 *
 * @param x Input `[..., K]` (the post-attention RMSNorm output).
 * @param gate `gate_proj` weight `[F, K]` (PyTorch layout).
 * @param up `up_proj` weight `[F, K]`.
 * @param opts Biases, RMSNorm prologue and variant.
 * @returns A new tensor `[..., F]` of x's dtype.
 * @throws {TypeError} When the dtypes are not one float dtype.
 * @throws {RangeError} When shapes disagree (naming them), or `fused` is forced where it does
 * not apply (M > 256, K not whole 16-byte words).
 *
 * @example With biases
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { linearSwiglu } from "./linear_swiglu.ts";
 * const gpu = await getGpu();
 * using h = Tensor.zeros(gpu, [1, 8]); // h:[M, K]
 * using gate = Tensor.zeros(gpu, [3, 8]); // gate:[F, K]
 * using up = Tensor.zeros(gpu, [3, 8]); // up:[F, K]
 * using gateBias = Tensor.fromArray(gpu, [0, 1, 2], [3]);
 * using upBias = Tensor.fromArray(gpu, [1, 1, 1], [3]);
 * using a = linearSwiglu(h, gate, up, { gateBias, upBias }); // silu(bg) ⊙ bu:[1, 3]
 * console.log(await a.toArray()); // ≈ [0, 0.7311, 1.7616]
 * ```
 */
export function linearSwiglu(
  x: Tensor,
  gate: Tensor,
  up: Tensor,
  opts: LinearSwigluOptions = {},
): Tensor<FloatDType> {
  assertFloat(x, "linearSwiglu: x");
  assertFloat(gate, "linearSwiglu: gate");
  assertFloat(up, "linearSwiglu: up");
  const { gateBias, upBias, norm } = opts;
  const dtype = sameDtype(
    "linearSwiglu",
    ...[x, gate, up, gateBias, upBias].filter((t) => t !== undefined),
  ) as FloatDType;
  const shapes = () =>
    `x ${fmtShape(x.shape)}, gate ${fmtShape(gate.shape)}, up ${fmtShape(up.shape)}`;
  if (x.rank < 1 || gate.rank !== 2 || up.rank !== 2) {
    throw new RangeError(
      `linearSwiglu: expected x:[..., K], gate:[F, K], up:[F, K], got ${shapes()}`,
    );
  }
  const K = x.shape[x.rank - 1];
  const [F, kg] = gate.shape;
  if (kg !== K || up.shape[0] !== F || up.shape[1] !== K) {
    throw new RangeError(
      `linearSwiglu: gate and up must both be [F, K=${K}] for x, got ${shapes()}`,
    );
  }
  for (const [name, b] of [["gateBias", gateBias], ["upBias", upBias]] as const) {
    if (b && (b.rank !== 1 || b.shape[0] !== F)) {
      throw new RangeError(`linearSwiglu: ${name} must be [${F}], got ${fmtShape(b.shape)}`);
    }
  }
  checkNorm("linearSwiglu", norm, K);
  const lead = x.shape.slice(0, -1);
  const M = numel(lead);
  const skinny = M >= SKINNY_MIN_M;
  const fits = M <= LINEAR_SWIGLU_FUSED_MAX_M &&
    (skinny ? skinnyApplies(M, K, dtype) : gemvApplies(Math.max(M, 1), K, dtype));
  const variant = opts.variant ?? "auto";
  if (variant === "fused" && !fits) {
    throw new RangeError(
      `linearSwiglu: variant fused needs M <= ${LINEAR_SWIGLU_FUSED_MAX_M} rows and K a ` +
        `multiple of ${dtype === "f16" ? 8 : 4}, got ${shapes()} (${dtype})`,
    );
  }
  const fused = variant === "fused" || (variant === "auto" && fits && !x.gpu.cpuRoutes);
  if (norm && !(fused && !skinny && normFusable(norm, dtype))) {
    // The norm as its own dispatch, then the same variant on its output.
    using h = rmsNorm(x, norm.weight, norm.eps);
    return linearSwiglu(h, gate, up, { gateBias, upBias, variant: fused ? "fused" : "unfused" });
  }
  if (!fused) {
    using g = linear(x, gate, { bias: gateBias });
    using u = linear(x, up, { bias: upBias });
    return swiglu(g, u);
  }
  const y = output(x.gpu, [...lead, F], dtype);
  if (M === 0 || F === 0) return y;
  const common = {
    dtype,
    M,
    N: F,
    K,
    x: x.buffer,
    offX: 0,
    w: gate.buffer,
    w2: up.buffer,
    bias: gateBias?.buffer,
    bias2: upBias?.buffer,
    offR: 0,
    y: y.buffer,
    offY: 0,
    ldy: F,
  };
  if (skinny) {
    dispatchSkinny(x.gpu, { ...common, entry: "skinny_swiglu" });
  } else {
    dispatchGemv16(x.gpu, {
      ...common,
      entry: "gemv16_swiglu",
      norm: norm ? { gain: norm.weight.buffer, eps: norm.eps, deferred: norm.deferred } : undefined,
    });
  }
  return y;
}

/**
 * CPU reference for {@linkcode linearSwiglu}: the RMSNorm (when given), both products, biases
 * and the SwiGLU in f64, rounded to f32 once.
 *
 * @param x Data of `x:[..., K]`.
 * @param xShape Shape of `x`.
 * @param gate Data of `gate:[F, K]`.
 * @param up Data of `up:[F, K]`.
 * @param F Rows of `gate` and `up`.
 * @param biases `gateBias:[F]` and `upBias:[F]` data, each optional, and the norm's
 * `weight:[K]` data and eps.
 * @returns `[..., F]` row-major.
 */
export function linearSwigluReference(
  x: ArrayLike<number>,
  xShape: readonly number[],
  gate: ArrayLike<number>,
  up: ArrayLike<number>,
  F: number,
  biases: {
    gateBias?: ArrayLike<number>;
    upBias?: ArrayLike<number>;
    norm?: { weight: ArrayLike<number>; eps: number };
  } = {},
): Float32Array {
  const K = xShape[xShape.length - 1];
  const M = numel(xShape.slice(0, -1));
  if (gate.length !== F * K || up.length !== F * K || x.length !== M * K) {
    throw new RangeError(
      `linearSwigluReference: expected x [${M}, ${K}], gate and up [${F}, ${K}], got ` +
        `${x.length}, ${gate.length} and ${up.length} elements`,
    );
  }
  if (biases.norm) x = rmsNormRowsReference(x, biases.norm.weight, biases.norm.eps);
  const y = new Float32Array(M * F);
  for (let m = 0; m < M; m++) {
    for (let f = 0; f < F; f++) {
      let g = biases.gateBias ? biases.gateBias[f] : 0;
      let u = biases.upBias ? biases.upBias[f] : 0;
      for (let k = 0; k < K; k++) {
        g += x[m * K + k] * gate[f * K + k];
        u += x[m * K + k] * up[f * K + k];
      }
      y[m * F + f] = (g / (1 + Math.exp(-g))) * u;
    }
  }
  return y;
}
