/**
 * The q, k and v projections of an attention layer in one op: `linearQkv(x, wq, wk, wv)` =
 * `{ q: x·wqᵀ + bq, k: x·wkᵀ + bk, v: x·wvᵀ + bv }`, optionally on `rmsNorm(x, weight, eps)`
 * (the layer's input norm), and its CPU reference {@linkcode linearQkvReference}.
 *
 * Variants:
 * - `unfused` (the readable chain): `rmsNorm` once (with `norm`), then `linear` three times:
 *   the dispatches of today's layer, so prefill (M > 256) costs what it did.
 * - `fused`: one dispatch over the rows of `[wq; wk; wv]` as if concatenated, each sum stored
 *   into its own output, for K a whole number of 16-byte words (K % 8 = 0 in f16, 4 in f32):
 *   - M < `SKINNY_MIN_M` (8): the `gemv16_qkv` kernel of `shaders/gemv.wgsl` (launcher in
 *     ./gemv.ts; 4 weight rows a workgroup, 64 lanes a row, f32 accumulation); with `norm`,
 *     each workgroup first computes its rows' RMS and scales x as it reads it: one dispatch
 *     instead of four (rmsNorm and three linears), decode being dispatch-bound (issue #10);
 *   - 8 ≤ M ≤ `SKINNY_MAX_M` (256; a batch of chains): `skinny_qkv` (./skinny.ts: x staged in
 *     f32 once a workgroup, blocks of 16 rows; H200 at 1024×4096: 22.8 µs at M = 32 against 93
 *     for `gemv16_qkv` in blocks); `norm` runs as the `rmsNorm` op first.
 *   Biases use the `_bias` entries, which bind 11 (`gemv16_qkv_bias`) or 10 (`skinny_qkv_bias`)
 *   storage buffers: where the device allows fewer per shader stage
 *   (`maxStorageBuffersPerShaderStage`; WebGPU's default is 8), `auto` takes `unfused` and a
 *   forced `fused` throws.
 *
 * `auto` picks `fused` when it applies on a GPU, `unfused` otherwise (CPU rasterisers such as
 * lavapipe included, as `linear` and `linearSwiglu` do).
 *
 * @example Qwen3-0.6B's decode projections (K 1024, q 2048, k and v 1024), input norm fused
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { linearQkv } from "./linear_qkv.ts";
 * const gpu = await getGpu();
 * using x = Tensor.zeros(gpu, [1, 1024]); // x:[M, K] (the residual stream)
 * using g = Tensor.zeros(gpu, [1024]); // input_layernorm.weight:[K]
 * using wq = Tensor.zeros(gpu, [2048, 1024]); // wq:[Nq, K]
 * using wk = Tensor.zeros(gpu, [1024, 1024]); // wk:[Nk, K]
 * using wv = Tensor.zeros(gpu, [1024, 1024]); // wv:[Nv, K]
 * const { q, k, v } = linearQkv(x, wq, wk, wv, { norm: { weight: g, eps: 1e-6 } });
 * console.log(q.shape, k.shape, v.shape); // [1, 2048] [1, 1024] [1, 1024]
 * q.dispose(), k.dispose(), v.dispose();
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
import {
  dispatchSkinny,
  SKINNY_MAX_M,
  SKINNY_MIN_M,
  SKINNY_QKV_BIAS_BINDINGS,
  skinnyApplies,
} from "./skinny.ts";

/**
 * Most rows of `x` the fused kernels take (decode: one row per sequence of a batch):
 * `gemv16_qkv` below `SKINNY_MIN_M`, `skinny_qkv` from there.
 */
export const LINEAR_QKV_FUSED_MAX_M = SKINNY_MAX_M;

/** Storage buffers the `gemv16_qkv_bias` entry binds (x, gain, 3 weights, 3 biases, 3 outputs). */
export const LINEAR_QKV_BIAS_BINDINGS = 11;

/** `fused`: one `gemv16_qkv` dispatch; `unfused`: three linears. */
export type LinearQkvVariant = "auto" | "fused" | "unfused";

/** Options of {@linkcode linearQkv}. */
export interface LinearQkvOptions {
  /** RMSNorm prologue: x is replaced by `rmsNorm(x, norm.weight, norm.eps)`. */
  norm?: RmsNormPrologue;
  /** `qBias:[Nq]`, same dtype as `x`. */
  qBias?: Tensor;
  /** `kBias:[Nk]`. */
  kBias?: Tensor;
  /** `vBias:[Nv]`. */
  vBias?: Tensor;
  /** Force a variant (tests, benchmarks). Default `auto`. */
  variant?: LinearQkvVariant;
}

/** The three projections of {@linkcode linearQkv}; the caller disposes each. */
export interface QkvProjections {
  /** `[..., Nq]`. */
  q: Tensor<FloatDType>;
  /** `[..., Nk]`. */
  k: Tensor<FloatDType>;
  /** `[..., Nv]`. */
  v: Tensor<FloatDType>;
}

/**
 * `q = x̂·wqᵀ + qBias`, `k = x̂·wkᵀ + kBias`, `v = x̂·wvᵀ + vBias` with `x̂ = x`, or
 * `rmsNorm(x, norm.weight, norm.eps)` with `norm`; f32 accumulation on f32 or f16 storage.
 *
 * Shapes: `x:[..., K]`, `wq:[Nq, K]`, `wk:[Nk, K]`, `wv:[Nv, K]`, biases `[N*]`, norm weight
 * `[K]` → `q:[..., Nq]`, `k:[..., Nk]`, `v:[..., Nv]`.
 *
 * @param x Input `[..., K]` (the residual stream with `norm`, else the normed hidden state).
 * @param wq `q_proj` weight `[Nq, K]` (PyTorch layout).
 * @param wk `k_proj` weight `[Nk, K]`.
 * @param wv `v_proj` weight `[Nv, K]`.
 * @param opts Norm, biases and variant.
 * @returns Three new tensors.
 * @throws {TypeError} When the dtypes are not one float dtype (the norm weight may differ).
 * @throws {RangeError} When shapes disagree (naming them), or `fused` is forced where it does
 * not apply (M > 256, K not whole 16-byte words, biases over the device's storage-buffer limit).
 */
export function linearQkv(
  x: Tensor,
  wq: Tensor,
  wk: Tensor,
  wv: Tensor,
  opts: LinearQkvOptions = {},
): QkvProjections {
  for (const [name, t] of [["x", x], ["wq", wq], ["wk", wk], ["wv", wv]] as const) {
    assertFloat(t, `linearQkv: ${name}`);
  }
  const { norm, qBias, kBias, vBias } = opts;
  const dtype = sameDtype(
    "linearQkv",
    ...[x, wq, wk, wv, qBias, kBias, vBias].filter((t) => t !== undefined),
  ) as FloatDType;
  const shapes = () =>
    `x ${fmtShape(x.shape)}, wq ${fmtShape(wq.shape)}, wk ${fmtShape(wk.shape)}, wv ${
      fmtShape(wv.shape)
    }`;
  const K = x.shape[x.rank - 1];
  if (
    x.rank < 1 || [wq, wk, wv].some((w) => w.rank !== 2 || w.shape[1] !== K)
  ) {
    throw new RangeError(
      `linearQkv: expected x:[..., K], wq:[Nq, K], wk:[Nk, K], wv:[Nv, K], got ${shapes()}`,
    );
  }
  const Nq = wq.shape[0], Nk = wk.shape[0], Nv = wv.shape[0];
  const biases = [["qBias", qBias, Nq], ["kBias", kBias, Nk], ["vBias", vBias, Nv]] as const;
  for (const [name, b, n] of biases) {
    if (b && (b.rank !== 1 || b.shape[0] !== n)) {
      throw new RangeError(`linearQkv: ${name} must be [${n}], got ${fmtShape(b.shape)}`);
    }
  }
  checkNorm("linearQkv", norm, K);
  const lead = x.shape.slice(0, -1);
  const M = numel(lead);
  const hasBias = !!(qBias || kBias || vBias);
  const bindings = x.gpu.limits.maxStorageBuffersPerShaderStage;
  const skinny = M >= SKINNY_MIN_M;
  const needs = skinny ? SKINNY_QKV_BIAS_BINDINGS : LINEAR_QKV_BIAS_BINDINGS;
  const fits = M <= LINEAR_QKV_FUSED_MAX_M &&
    (skinny ? skinnyApplies(M, K, dtype) : gemvApplies(Math.max(M, 1), K, dtype)) &&
    (!hasBias || bindings >= needs);
  const variant = opts.variant ?? "auto";
  if (variant === "fused" && !fits) {
    throw new RangeError(
      `linearQkv: variant fused needs M <= ${LINEAR_QKV_FUSED_MAX_M} rows, K a multiple of ` +
        `${dtype === "f16" ? 8 : 4}` +
        (hasBias ? ` and ${needs} storage buffers per stage` : "") +
        `, got ${shapes()} (${dtype}, ${bindings} storage buffers per stage)`,
    );
  }
  const fused = variant === "fused" || (variant === "auto" && fits && !x.gpu.cpuRoutes);
  if (!fused) {
    using h = norm ? rmsNorm(x, norm.weight, norm.eps) : undefined;
    return {
      q: linear(h ?? x, wq, { bias: qBias }),
      k: linear(h ?? x, wk, { bias: kBias }),
      v: linear(h ?? x, wv, { bias: vBias }),
    };
  }
  if (norm && (skinny || !normFusable(norm, dtype))) {
    // The norm as its own dispatch (skinny_qkv has no prologue; or the weight's dtype differs
    // from x's), then the kernel.
    using h = rmsNorm(x, norm.weight, norm.eps);
    return linearQkv(h, wq, wk, wv, { qBias, kBias, vBias, variant: "fused" });
  }
  const q = output(x.gpu, [...lead, Nq], dtype);
  const k = output(x.gpu, [...lead, Nk], dtype);
  const v = output(x.gpu, [...lead, Nv], dtype);
  if (M === 0 || Nq + Nk + Nv === 0) return { q, k, v };
  const common = {
    dtype,
    M,
    N: Nq,
    N2: Nk,
    N3: Nv,
    K,
    x: x.buffer,
    offX: 0,
    w: wq.buffer,
    w2: wk.buffer,
    w3: wv.buffer,
    bias: qBias?.buffer,
    bias2: kBias?.buffer,
    bias3: vBias?.buffer,
    offR: 0,
    y: q.buffer,
    y2: k.buffer,
    y3: v.buffer,
    offY: 0,
    ldy: Nq,
  };
  if (skinny) {
    dispatchSkinny(x.gpu, { ...common, entry: hasBias ? "skinny_qkv_bias" : "skinny_qkv" });
  } else {
    dispatchGemv16(x.gpu, {
      ...common,
      entry: hasBias ? "gemv16_qkv_bias" : "gemv16_qkv",
      norm: norm ? { gain: norm.weight.buffer, eps: norm.eps, deferred: norm.deferred } : undefined,
    });
  }
  return { q, k, v };
}

/**
 * CPU reference for {@linkcode linearQkv}: the RMSNorm (when given), the three products and
 * biases in f64, each rounded to f32 once.
 *
 * @param x Data of `x:[M, K]`.
 * @param M Rows of x.
 * @param K Inner size.
 * @param w `wq:[Nq, K]`, `wk:[Nk, K]`, `wv:[Nv, K]` data.
 * @param opts The norm's `weight:[K]` data and eps; `qBias`, `kBias`, `vBias` data.
 * @returns `q:[M, Nq]`, `k:[M, Nk]`, `v:[M, Nv]`.
 */
export function linearQkvReference(
  x: ArrayLike<number>,
  M: number,
  K: number,
  w: { wq: ArrayLike<number>; wk: ArrayLike<number>; wv: ArrayLike<number> },
  opts: {
    norm?: { weight: ArrayLike<number>; eps: number };
    qBias?: ArrayLike<number>;
    kBias?: ArrayLike<number>;
    vBias?: ArrayLike<number>;
  } = {},
): { q: Float32Array; k: Float32Array; v: Float32Array } {
  if (x.length !== M * K || [w.wq, w.wk, w.wv].some((m) => m.length % K !== 0)) {
    throw new RangeError(
      `linearQkvReference: expected x [${M}, ${K}] and weights [N, ${K}], got ${x.length}, ` +
        `${w.wq.length}, ${w.wk.length} and ${w.wv.length} elements`,
    );
  }
  const xn = opts.norm ? rmsNormRowsReference(x, opts.norm.weight, opts.norm.eps) : x;
  const one = (wt: ArrayLike<number>, b?: ArrayLike<number>) => {
    const N = wt.length / K;
    const y = new Float32Array(M * N);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = b ? b[n] : 0;
        for (let kk = 0; kk < K; kk++) s += xn[m * K + kk] * wt[n * K + kk];
        y[m * N + n] = s;
      }
    }
    return y;
  };
  return { q: one(w.wq, opts.qBias), k: one(w.wk, opts.kBias), v: one(w.wv, opts.vBias) };
}
