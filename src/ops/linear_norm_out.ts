/**
 * A projection and the RMSNorm of its output in one op: `linearNormOut(x, w, { residual, norm })`
 * returns `y = residual + x·wᵀ + bias` and `normed = rmsNorm(y, norm.weight, norm.eps)`. In a
 * decoder layer `y` is the residual stream after the attention's `o_proj` (or the MLP's
 * `down_proj`), and `normed` is what the next projection reads (the post-attention norm, or the
 * next layer's input norm), so that projection needs no norm of its own.
 *
 * Variants:
 * - `unfused` (the readable chain): `linear(x, w, { bias, residual })`, then `rmsNorm(y)`
 *   (./rmsnorm.ts): two dispatches.
 * - `fused`: the `gemv16_rn` kernel of `shaders/gemv_rn.wgsl` (launcher in ./gemv.ts), for
 *   decode-sized M ≤ 16 with K a whole number of 16-byte words (and N even in f16): the `gemv16`
 *   product; every workgroup also puts its outputs into `normed`'s words with atomic stores;
 *   the workgroup that finishes last (an arrival count in a 16-byte buffer each dispatch leaves
 *   at 0) reads the rows back with atomic loads, sums their squares and overwrites them with
 *   the normed values as the rmsnorm kernel stores them (`T(gain·(y·r))`, r in f32). Nothing
 *   waits for another workgroup. (Plain loads of `y` in the last workgroup read stale values on
 *   the H200 under load: the atomics go through the device-coherent cache.)
 *   Measured on the H200 (2026-12-05): see `bench/dispatch_floor.ts`. The norm prologue the next
 *   projection would otherwise run in each of its ~1000 workgroups doubled that GEMV (+5 µs).
 *
 * The decoder uses it for decode batches of 5–16 rows; up to 4 rows the next projection takes the
 * norm deferred instead ({@linkcode RmsNormPrologue}`.deferred`, ./gemv.ts), which costs it less
 * than this tail costs here.
 *
 * `auto` picks `fused` when it applies on a GPU and the gain has the storage dtype, `unfused`
 * otherwise (CPU rasterisers included, where `linear` also avoids its GEMV kernels). Both give
 * `y` bit for bit as `linear` does; `normed` differs from `rmsNorm(y)` only in the order of
 * the sum of squares.
 *
 * @example The residual stream after o_proj, and its post-attention norm
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { linearNormOut } from "./linear_norm_out.ts";
 * const gpu = await getGpu();
 * using a = Tensor.fromArray(gpu, [1, 2, 3, 4], [1, 4]); // attention output [M=1, K=4]
 * using w = Tensor.fromArray(gpu, [1, 0, 0, 0, 0, 1, 0, 0], [2, 4]); // o_proj [N=2, K]
 * using x = Tensor.fromArray(gpu, [2, 0], [1, 2]); // the residual [M, N]
 * using g = Tensor.fromArray(gpu, [1, 1], [2]); // the norm's gain [N]
 * const { y, normed } = linearNormOut(a, w, { residual: x, norm: { weight: g, eps: 0 } });
 * console.log(await y.toArray(), await normed.toArray()); // [3, 2], ≈ [1.177, 0.7845]
 * y.dispose();
 * normed.dispose();
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
import { linear, linearReference } from "./matmul.ts";
import { rmsNorm } from "./rmsnorm.ts";

/** Most rows of `x` the fused kernel takes. */
export const LINEAR_NORM_OUT_FUSED_MAX_M = 16;

/** `fused`: one `gemv16_rn` dispatch; `unfused`: `linear` then `rmsNorm`. */
export type LinearNormOutVariant = "auto" | "fused" | "unfused";

/** Options of {@linkcode linearNormOut}. */
export interface LinearNormOutOptions {
  /** The RMSNorm of the output: gain `[N]` and eps. Required. */
  norm: RmsNormPrologue;
  /** `[N]`, added to the product. */
  bias?: Tensor;
  /** `[..., N]` with x's rows, added to the product (the residual stream). */
  residual?: Tensor;
  /** Force a variant (tests, benchmarks). Default `auto`. */
  variant?: LinearNormOutVariant;
}

/** The two outputs of {@linkcode linearNormOut}, both `[..., N]` in x's dtype; the caller owns them. */
export interface LinearNormOutResult {
  /** `residual + x·wᵀ + bias`. */
  y: Tensor<FloatDType>;
  /** `rmsNorm(y, norm.weight, norm.eps)`. */
  normed: Tensor<FloatDType>;
}

/**
 * `y = residual + x·wᵀ + bias` and `rmsNorm(y)`; see the module doc.
 *
 * @param x `[..., K]`.
 * @param w `[N, K]` (`nn.Linear` layout), x's dtype.
 * @param opts The norm of the output (required), bias, residual, variant.
 * @returns `y` and `normed`, `[..., N]`.
 * @throws {TypeError} For non-float or mixed dtypes.
 * @throws {RangeError} For shapes that do not match (naming them), or a forced `fused` that
 * does not apply (M > 16, K not whole 16-byte words, a gain of another dtype).
 */
export function linearNormOut(
  x: Tensor,
  w: Tensor,
  opts: LinearNormOutOptions,
): LinearNormOutResult {
  assertFloat(x, "linearNormOut: x");
  assertFloat(w, "linearNormOut: w");
  const { bias, residual, norm } = opts;
  const dtype = sameDtype(
    "linearNormOut",
    ...[x, w, bias, residual].filter((t) => t !== undefined),
  ) as FloatDType;
  if (x.rank < 1 || w.rank !== 2 || w.shape[1] !== x.shape[x.rank - 1]) {
    throw new RangeError(
      `linearNormOut: expected x:[..., K] and w:[N, K], got x ${fmtShape(x.shape)} and w ${
        fmtShape(w.shape)
      }`,
    );
  }
  const K = x.shape[x.rank - 1], N = w.shape[0];
  const lead = x.shape.slice(0, -1), M = numel(lead);
  checkNorm("linearNormOut", norm, N);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== N)) {
    throw new RangeError(`linearNormOut: bias must be [${N}], got ${fmtShape(bias.shape)}`);
  }
  if (residual && (residual.shape.length !== x.rank || residual.size !== M * N)) {
    throw new RangeError(
      `linearNormOut: residual must be [${[...lead, N].join(", ")}], got ${
        fmtShape(residual.shape)
      }`,
    );
  }
  const fits = M >= 1 && M <= LINEAR_NORM_OUT_FUSED_MAX_M && gemvApplies(M, K, dtype) &&
    normFusable(norm, dtype) && (dtype === "f32" || N % 2 === 0);
  const variant = opts.variant ?? "auto";
  if (variant === "fused" && !fits) {
    throw new RangeError(
      `linearNormOut: variant fused needs 1 <= M <= ${LINEAR_NORM_OUT_FUSED_MAX_M} rows, K a ` +
        `multiple of ${dtype === "f16" ? 8 : 4}, ${dtype === "f16" ? "an even N, " : ""}and a ` +
        `${dtype} gain, got x ${fmtShape(x.shape)} and w ${
          fmtShape(w.shape)
        } (${dtype}), gain ${norm.weight.dtype}`,
    );
  }
  const fused = variant === "fused" || (variant === "auto" && fits && !x.gpu.cpuRoutes);
  if (!fused) {
    const y = linear(x, w, { bias, residual });
    return { y, normed: rmsNorm(y, norm.weight, norm.eps) };
  }
  const y = output(x.gpu, [...lead, N], dtype);
  const normed = output(x.gpu, [...lead, N], dtype);
  dispatchGemv16(x.gpu, {
    entry: "gemv16_rn",
    dtype,
    M,
    N,
    K,
    x: x.buffer,
    offX: 0,
    normOut: { gain: norm.weight.buffer, eps: norm.eps, yn: normed.buffer },
    w: w.buffer,
    bias: bias?.buffer,
    res: residual?.buffer,
    offR: 0,
    y: y.buffer,
    offY: 0,
    ldy: N,
  });
  return { y, normed };
}

/**
 * CPU reference of {@linkcode linearNormOut}: `y = residual + x·wᵀ + bias` as
 * `linearReference` computes it (f64 sums, stored as f32), then `rmsNorm(y)` in f64 (no rounding
 * to a storage dtype).
 *
 * @param x `[M, K]` flat.
 * @param w `[N, K]` flat.
 * @param M Rows.
 * @param K Inner size.
 * @param N Output columns.
 * @param opts The norm's gain `[N]` and eps, bias `[N]` and residual `[M, N]` data.
 * @returns `y` and `normed`, each `[M, N]`.
 */
export function linearNormOutReference(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  M: number,
  K: number,
  N: number,
  opts: {
    norm: { weight: ArrayLike<number>; eps: number };
    bias?: ArrayLike<number>;
    residual?: ArrayLike<number>;
  },
): { y: Float64Array; normed: Float64Array } {
  const y = Float64Array.from(linearReference(x, [M, K], w, [N, K], opts.bias, opts.residual));
  return { y, normed: rmsNormRowsReference(y, opts.norm.weight, opts.norm.eps) };
}
