/**
 * Decode-time GEMV with 16-byte loads: `y = x·wᵀ` for M ≤ 16 rows of `x` (Hugging Face
 * `nn.Linear` layout), f32 accumulation on f32 or f16 storage, and its CPU reference.
 * {@linkcode dispatchGemv16} is the launcher `linear` (bias, residual, output columns) and
 * `linearSwiglu` share; {@linkcode gemv} is the plain `x·wᵀ` over it.
 *
 * Kernels (`shaders/gemv.wgsl`):
 * - `gemv16`: 4 output columns per workgroup of 256 threads, 64 lanes per weight row, each
 *   load a `vec4<u32>` word (8 f16 or 4 f32), two words in flight per lane and step, x read as
 *   words too (shared by every column, so it stays in cache), tree reduction over the lanes.
 *   Needs K to be a whole number of words (K % 8 = 0 in f16, K % 4 = 0 in f32):
 *   {@linkcode gemvApplies}. No split-K: N / 4 workgroups (≥ 256 for the model's N ≥ 1024)
 *   already cover the GPU. The readable baseline is `linear(..., { variant: "naive" })` in
 *   ./matmul.ts; matmul's `gemv_t` (4-element loads) is the other decode kernel;
 *   `bench/kernels.ts` times all three at the model's shapes. H200 (µs, M = 1, f16 unless
 *   noted; `gemv_t` vs `gemv16`): 1×1024×2048 10 vs 9; 1×3072×1024 16 vs 10 (f32 13 vs 9);
 *   1×12288×4096 77 vs 48; but 1×1024×32768 (an LM-head chunk) 47 vs 54, and M = 4 / 8
 *   151 / 267 vs 160 / 298. So `linear`'s `auto` routes
 *   M = 1 with N ≤ {@linkcode GEMV16_AUTO_MAX_N} here on GPUs (see ./matmul_launch.ts).
 *   Epilogue: `+ bias[n]`, `+ res[m, n]`, output rows `ldy` apart at an offset (a column
 *   range of a wider output).
 * - `gemv16_swiglu`: the same loop over gate and up rows in one workgroup (2 columns of each),
 *   `y = silu(x·gateᵀ + bg) ⊙ (x·upᵀ + bu)`; launcher and reference in ./linear_swiglu.ts.
 * - `gemv16_qkv` / `gemv16_qkv_bias`: the same loop over the rows of `[wq; wk; wv]` as if
 *   concatenated, three outputs; launcher and reference in ./linear_qkv.ts.
 * - `gemv16_wide`: 4–64 lanes a weight row ({@linkcode gemvTuning}), 256 / lanes rows a
 *   workgroup: a large N over a short K (the LM head: 81 µs on the H200 against 179 for `gemv`).
 * - `gemv16_rn` (`shaders/gemv_rn.wgsl`, which includes gemv.wgsl): `gemv16`, then the RMSNorm
 *   of its output rows by the workgroup that finishes last (an arrival count; the rows exchanged
 *   through atomics); launcher and reference in ./linear_norm_out.ts.
 *
 * Every entry takes an RMSNorm prologue ({@linkcode RmsNormPrologue}, the `NORM` pipeline
 * constant): `x` is replaced by `rmsNorm(x, weight, eps)` inside the dispatch (each workgroup
 * sums the squares of its rows of x, then scales the words of x, once into workgroup memory where
 * they fit ({@linkcode gemvNormStagedWords}) or as it reads them, rounding each normed value to
 * the storage dtype as the `rmsNorm` op's output is), one dispatch fewer per
 * norm. {@linkcode normFusable} says when the weight can be read that way. With
 * `deferred` (M ≤ {@linkcode GEMV_NORM_DEFERRED_MAX_M}) there is no prologue: the squares of x are
 * summed beside the product and the row scale multiplies the sums (`NORM = 2`). H200, f16, M = 1
 * (`bench/dispatch_floor.ts`): q/k/v 6.69 µs deferred against 10.99 with the prologue and 5.53
 * from a normed x; SwiGLU 8.21 / 12.74 / 6.61; so a decode step at B ≤ 4 defers every norm
 * (src/model/transformer.ts) instead of having the producing projection write it
 * (./linear_norm_out.ts: +3.6 µs a projection).
 *
 * @example y = x·wᵀ for one row
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { gemv } from "./gemv.ts";
 * const gpu = await getGpu();
 * using x = Tensor.fromArray(gpu, [1, 2, 3, 4], [1, 4]); // x:[M=1, K=4]
 * using w = Tensor.fromArray(gpu, [1, 0, 0, 0, 1, 1, 1, 1], [2, 4]); // w:[N=2, K=4]
 * using y = gemv(x, w); // y:[1, 2]
 * console.log(await y.toArray()); // [1, 10]
 * ```
 *
 * @module
 */

import { type Binding, Gpu } from "../gpu/device.ts";
import { deviceCounters } from "../gpu/buffers.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import { assertFloat, output, sameDtype } from "./launch.ts";

/** Most rows of `x` {@linkcode gemv} takes. */
export const GEMV16_MAX_M = 16;

/**
 * Widest N (rows of `w`) for which `linear`'s `auto` picks `gemv16` at M = 1 on a GPU: at
 * 1×1024×32768 f16 `gemv_t` was faster on the H200 (47 vs 54 µs), at N ≤ 4096 `gemv16` was.
 */
export const GEMV16_AUTO_MAX_N = 16384;

/** Whether {@linkcode gemv} takes `x:[M, K]` in `dtype` (M ≤ 16, K a whole number of 16-byte words). */
export function gemvApplies(M: number, K: number, dtype: FloatDType): boolean {
  return M >= 1 && M <= GEMV16_MAX_M && K > 0 && K % (dtype === "f16" ? 8 : 4) === 0;
}

/**
 * An RMSNorm applied to `x:[..., K]` before a projection: the product uses
 * `rmsNorm(x, weight, eps)` (./rmsnorm.ts) instead of `x`.
 */
export interface RmsNormPrologue {
  /** Gain `[K]` (`input_layernorm.weight`...), f32 or f16. */
  weight: Tensor;
  /** Added to the mean square (`rms_norm_eps`); finite, >= 0. */
  eps: number;
  /**
   * Allow the `gemv16` kernels to apply the norm after the product (for M ≤
   * {@linkcode GEMV_NORM_DEFERRED_MAX_M} rows; exact everywhere else):
   * `y = r·((x ⊙ weight)·wᵀ)`, r = 1/sqrt(mean(x²) + eps) per row, the squares summed beside
   * the product. No prologue, no normed copy of x; but the normed x is not rounded to the
   * storage dtype as `rmsNorm`'s output is, so f16 results differ from the exact prologue by
   * that rounding (about 2⁻¹² relative per element of the normed x). Default false.
   */
  deferred?: boolean;
}

/**
 * Most rows of x for which the `gemv16` kernels defer the norm ({@linkcode RmsNormPrologue}):
 * the squares of 4 rows fit one vec4 register beside the products.
 */
export const GEMV_NORM_DEFERRED_MAX_M = 4;

/**
 * Checks `norm` against x's inner size K.
 *
 * @throws {RangeError} When `weight` is not `[K]` or `eps` is not finite and >= 0 (naming `op`).
 */
export function checkNorm(op: string, norm: RmsNormPrologue | undefined, K: number): void {
  if (!norm) return;
  if (norm.weight.rank !== 1 || norm.weight.shape[0] !== K) {
    throw new RangeError(
      `${op}: norm.weight must be [${K}] (x's last dimension), got ${fmtShape(norm.weight.shape)}`,
    );
  }
  if (!(Number.isFinite(norm.eps) && norm.eps >= 0)) {
    throw new RangeError(`${op}: norm.eps must be a finite number >= 0, got ${norm.eps}`);
  }
}

/** Whether the GEMV kernels can fuse `norm` for x in `dtype`: the gain must share x's dtype. */
export function normFusable(norm: RmsNormPrologue, dtype: FloatDType): boolean {
  return norm.weight.dtype === dtype;
}

/**
 * Most rows of x whose normed copy the `gemv16` prologue stages in workgroup memory: measured at
 * M = 1 only; larger staged arrays cost occupancy (and the zero-fill WebGPU does), unmeasured.
 */
export const GEMV_NORM_STAGED_MAX_M = 4;

/**
 * Words (16 bytes) of workgroup memory in which the `gemv16` kernels' RMSNorm prologue stages the
 * normed rows of `x:[M, K]`: `M·K / (8 in f16, 4 in f32)` for M ≤ {@linkcode GEMV_NORM_STAGED_MAX_M}
 * when they fit beside the kernel's other
 * workgroup arrays (`256·M` f32 partial sums and 16 row scales) within `maxWorkgroupBytes`, else
 * 1 (not staged: every lane renormalises the words it reads; the same values either way). Staged,
 * the H200 took 11.5 µs instead of 13.3 for Qwen3-0.6B's q/k/v at M = 1 (f16) and 14.2 instead
 * of 17.3 for its SwiGLU (`bench/dispatch_floor.ts`); staging the plain x as well was slower.
 *
 * @param M Rows of x (1..16).
 * @param K Inner size (a whole number of words).
 * @param dtype Storage dtype.
 * @param maxWorkgroupBytes The device's `maxComputeWorkgroupStorageSize`.
 * @returns Words to stage (the `XS` pipeline constant).
 */
export function gemvNormStagedWords(
  M: number,
  K: number,
  dtype: FloatDType,
  maxWorkgroupBytes: number,
): number {
  const words = (M * K) / (dtype === "f16" ? 8 : 4);
  if (M > GEMV_NORM_STAGED_MAX_M) return 1;
  return words * 16 + 256 * M * 4 + 16 * 4 <= maxWorkgroupBytes ? words : 1;
}

/**
 * Lanes per weight row of `gemv16_wide` (`wideLanes`: 4, 8, 16, 32 or 64; 256 / lanes rows a
 * workgroup), a switch benchmarks sweep; unset (the default), {@linkcode wideLanesFor} picks 8,
 * or 4 from M = 8 rows (M = 8 / 16: 196 / 370 µs at 4 lanes against 219 / 478 at 8). H200, f16, the LM head 151936 × 1024 from HBM
 * (`bench/skinny.ts --shapes lm --lanes 8,16,32,64`, 2026-12-05): M = 1 80.7 / 90.6 / 144 / 253
 * µs at 8 / 16 / 32 / 64 lanes, against 179 for `gemv` and 125 for `gemv16` (4 rows of 64 lanes
 * a workgroup: ~38K short workgroups); M = 4 / 8 / 16 126 / 219 / 539 µs at 8 lanes against 523 /
 * 935 (`gemv`) and 1462 (M = 16, `gemv16`).
 *
 * @example Sixteen lanes a row whatever M
 * ```ts
 * import { gemvTuning } from "./gemv.ts";
 * gemvTuning.wideLanes = 16;
 * ```
 */
export const gemvTuning: { wideLanes?: number } = {};

/** Lanes a row of `gemv16_wide` for M rows unless {@linkcode gemvTuning} sets them: 8, or 4 from M = 8. */
export function wideLanesFor(M: number): number {
  return gemvTuning.wideLanes ?? (M >= 8 ? 4 : 8);
}

/** One dispatch of `shaders/gemv.wgsl` over bound windows (element offsets inside them). */
export interface Gemv16Dispatch {
  /**
   * Kernel: `gemv16` (`res + x·wᵀ + bias`), `gemv16_wide` (the same with
   * {@linkcode gemvTuning}`.wideLanes` lanes per row), `gemv16_swiglu` or `gemv16_qkv(_bias)`.
   */
  entry:
    | "gemv16"
    | "gemv16_rn"
    | "gemv16_wide"
    | "gemv16_swiglu"
    | "gemv16_qkv"
    | "gemv16_qkv_bias";
  /** Storage dtype of every tensor. */
  dtype: FloatDType;
  /** Rows of x (≤ 16; `skinny`: any). */
  M: number;
  /** Output columns (rows of `w`). */
  N: number;
  /** Inner size: a multiple of 8 in f16, 4 in f32. */
  K: number;
  /** `x:[M, K]`. */
  x: Binding;
  /** Element offset of `x[0, 0]` in its window (a multiple of 8 in f16, 4 in f32). */
  offX: number;
  /**
   * RMSNorm prologue: `gain:[K]` words of x's dtype, and eps; `deferred` (M ≤
   * {@linkcode GEMV_NORM_DEFERRED_MAX_M}, ignored above): the row scale applied to the sums.
   */
  norm?: { gain: Binding; eps: number; deferred?: boolean };
  /** `gemv16_rn`: the RMSNorm of the output rows into `yn:[M, N]` (rows N apart), `gain:[N]`. */
  normOut?: { gain: Binding; eps: number; yn: Binding };
  /** `w:[N, K]` (gate for SwiGLU, wq for QKV). */
  w: Binding;
  /** `up:[N, K]` (SwiGLU), `wk:[N2, K]` (QKV). */
  w2?: Binding;
  /** `wv:[N3, K]` (QKV). */
  w3?: Binding;
  /** `bias:[N]` (gate bias for SwiGLU). */
  bias?: Binding;
  /** Up bias `[N]` (SwiGLU), k bias `[N2]` (`gemv16_qkv_bias`). */
  bias2?: Binding;
  /** v bias `[N3]` (`gemv16_qkv_bias`). */
  bias3?: Binding;
  /** `res:[M, N]`, rows N apart (`gemv16`, `gemv16_wide`, `gemv16_rn`, `skinny`). */
  res?: Binding;
  /** Element offset of `res[0, 0]` in its window. */
  offR: number;
  /** Output, rows `ldy` elements apart. */
  y: Binding;
  /** Element offset of `y[0, 0]` in its window (includes a column offset). */
  offY: number;
  /** Elements between output rows (≥ N). */
  ldy: number;
  /** QKV: rows of `w2`, and `y2:[M, N2]`. */
  N2?: number;
  /** QKV: rows of `w3`, and `y3:[M, N3]`. */
  N3?: number;
  /** QKV: `[M, N2]`, rows N2 apart. */
  y2?: Binding;
  /** QKV: `[M, N3]`, rows N3 apart. */
  y3?: Binding;
}

/**
 * Encodes one dispatch of `shaders/gemv.wgsl`. Shapes are the caller's to validate; unused
 * optional bindings are filled with `w` (the gain with `x`).
 */
export function dispatchGemv16(gpu: Gpu, d: Gemv16Dispatch): void {
  const EPV = d.dtype === "f16" ? 8 : 4;
  const deferred = d.norm?.deferred === true && d.M <= GEMV_NORM_DEFERRED_MAX_M;
  const wgBytes = gpu.limits.maxComputeWorkgroupStorageSize;
  const XS = d.norm && !deferred ? gemvNormStagedWords(d.M, d.K, d.dtype, wgBytes) : 1;
  const LW = wideLanesFor(d.M);
  if (d.entry === "gemv16_wide" && ![4, 8, 16, 32, 64].includes(LW)) {
    throw new RangeError(
      `gemv16_wide: gemvTuning.wideLanes must be 4, 8, 16, 32 or 64, got ${LW}`,
    );
  }
  const k = gpu.kernel({
    shader: d.entry === "gemv16_rn" ? "gemv_rn" : "gemv",
    entry: d.entry,
    defines: { T: d.dtype },
    constants: {
      EPV,
      MR: d.M,
      NORM: deferred ? 2 : d.norm ? 1 : 0,
      RED: 256 * d.M * (deferred ? 2 : 1),
      XS,
      ...(d.entry === "gemv16_wide" ? { LW } : {}),
    },
  });
  if (d.entry === "gemv16_rn" && (!d.normOut || d.norm)) {
    throw new RangeError("gemv16_rn: needs normOut and takes no norm prologue");
  }
  const gain = d.norm?.gain ?? d.normOut?.gain ?? d.x;
  const N2 = d.N2 ?? 0, N3 = d.N3 ?? 0;
  let buffers: Binding[], groups: number;
  switch (d.entry) {
    case "gemv16":
    case "gemv16_wide":
      buffers = [d.x, gain, d.w, d.bias ?? d.w, d.res ?? d.w, d.y];
      groups = Math.ceil(d.N / (d.entry === "gemv16" ? 4 : 256 / LW));
      break;
    case "gemv16_rn":
      buffers = [
        d.x,
        gain,
        d.w,
        d.bias ?? d.w,
        d.res ?? d.w,
        d.y,
        deviceCounters(gpu.device, "gemv16_rn arrivals", 16),
        d.normOut!.yn,
      ];
      groups = Math.ceil(d.N / 4);
      break;
    case "gemv16_swiglu":
      buffers = [d.x, gain, d.w, d.w2 ?? d.w, d.bias ?? d.w, d.bias2 ?? d.w, d.y];
      groups = Math.ceil(d.N / 2);
      break;
    default: {
      const ws = [d.x, gain, d.w, d.w2 ?? d.w, d.w3 ?? d.w];
      const ys = [d.y, d.y2 ?? d.y, d.y3 ?? d.y];
      buffers = d.entry === "gemv16_qkv"
        ? [...ws, ...ys]
        : [...ws, d.bias ?? d.w, d.bias2 ?? d.w, d.bias3 ?? d.w, ...ys];
      groups = Math.ceil((d.N + N2 + N3) / 4);
    }
  }
  gpu.dispatch(k, buffers, Gpu.grid(groups), {
    m: d.M,
    n: d.N,
    kw: d.K / EPV,
    offX: d.offX / EPV,
    offY: d.offY,
    ldy: d.ldy,
    offR: d.offR,
    hasBias: d.bias ? 1 : 0,
    hasRes: d.res && ["gemv16", "gemv16_rn", "gemv16_wide"].includes(d.entry) ? 1 : 0,
    hasBias2: d.bias2 ? 1 : 0,
    hasBias3: d.bias3 ? 1 : 0,
    n2: N2,
    n3: N3,
    eps: d.norm?.eps ?? d.normOut?.eps ?? 0,
  });
}

/**
 * `y = x·wᵀ` through the `gemv16` kernel; with `opts.norm`, `rmsNorm(x, weight, eps)·wᵀ` in the
 * same dispatch.
 *
 * @param x `[M, K]`, M ≤ 16.
 * @param w `[N, K]`, same dtype.
 * @param opts `norm`: the RMSNorm prologue (its weight `[K]` in x's dtype).
 * @returns `[M, N]` in the dtype of `x`.
 * @throws {TypeError} For non-float or mixed dtypes (the norm weight's included).
 * @throws {RangeError} For ranks or shapes that do not match, or K not a multiple of 8 (f16) / 4 (f32).
 */
export function gemv<D extends FloatDType>(
  x: Tensor<D>,
  w: Tensor<D>,
  opts: { norm?: RmsNormPrologue } = {},
): Tensor<D> {
  assertFloat(x, "gemv x");
  assertFloat(w, "gemv w");
  const { norm } = opts;
  const dtype = sameDtype("gemv", x, w, ...(norm ? [norm.weight] : [])) as D;
  if (x.rank !== 2 || w.rank !== 2 || x.shape[1] !== w.shape[1]) {
    throw new RangeError(
      `gemv: expected x:[M, K] and w:[N, K], got x${fmtShape(x.shape)} and w${fmtShape(w.shape)}`,
    );
  }
  const [M, K] = x.shape, N = w.shape[0];
  checkNorm("gemv", norm, K);
  if (!gemvApplies(M, K, dtype)) {
    throw new RangeError(
      `gemv: x${fmtShape(x.shape)} ${dtype}: needs 1 <= M <= ${GEMV16_MAX_M} and K a multiple ` +
        `of ${dtype === "f16" ? 8 : 4}`,
    );
  }
  const y = output(x.gpu, [M, N], dtype);
  dispatchGemv16(x.gpu, {
    entry: "gemv16",
    dtype,
    M,
    N,
    K,
    x: x.buffer,
    offX: 0,
    norm: norm ? { gain: norm.weight.buffer, eps: norm.eps, deferred: norm.deferred } : undefined,
    w: w.buffer,
    offR: 0,
    y: y.buffer,
    offY: 0,
    ldy: N,
  });
  return y;
}

/**
 * CPU reference of {@linkcode gemv}: `y[m, n] = Σ_k x[m, k]·w[n, k]` in f64.
 *
 * @param x `[M, K]` flat.
 * @param w `[N, K]` flat.
 * @returns `[M, N]`.
 */
export function gemvReference(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  M: number,
  K: number,
  N: number,
): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      y[m * N + n] = s;
    }
  }
  return y;
}

/**
 * CPU reference of the RMSNorm prologue: `weight[k]·x[m, k] / sqrt(mean_k(x[m, ·]²) + eps)` for
 * each of the rows of `x:[rows, K]`, in f64 (no rounding to a storage dtype).
 *
 * @param x `[rows, K]` flat.
 * @param weight `[K]`.
 * @param eps Added to the mean square.
 * @returns `[rows, K]`.
 */
export function rmsNormRowsReference(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  eps: number,
): Float64Array {
  const K = weight.length;
  if (K === 0 ? x.length !== 0 : x.length % K !== 0) {
    throw new RangeError(`rmsNormRowsReference: ${x.length} values are not rows of ${K}`);
  }
  const out = new Float64Array(x.length);
  for (let b = 0; b < x.length; b += K) {
    let ss = 0;
    for (let k = 0; k < K; k++) ss += x[b + k] * x[b + k];
    const r = 1 / Math.sqrt(ss / K + eps);
    for (let k = 0; k < K; k++) out[b + k] = weight[k] * x[b + k] * r;
  }
  return out;
}
