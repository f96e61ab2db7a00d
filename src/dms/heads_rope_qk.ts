/**
 * Queries and keys of one attention layer prepared in one dispatch (issue #10: decode is
 * dispatch-bound): {@linkcode headsNormRope} on q (q_norm, the DMS borrowed neuron) and on k
 * (k_norm), and optionally the inference decisions of {@linkcode inferDecisions} (SPEC §1,
 * per-head alpha), which together cost three dispatches:
 *
 * ```
 * headsNormRope(q, { norm: qNorm, neuron }) ; headsNormRope(k, { norm: kNorm }) ; inferDecisions(raw)
 * ```
 *
 * Kernel: `heads_rope_qk[_norm][_neuron[_decide]]` in `shaders/heads_rope.wgsl`, one workgroup
 * per row over the rows of q `[B, T, Hq]` then the rows of k `[B, T, Hkv]`; each row runs the
 * same WGSL functions as `heads_rope*`, so q, k and raw equal the two `headsNormRope` calls bit
 * for bit, and alpha and decisions are `inferDecisions`' f32 expression `raw·scale − offset`,
 * `1[alpha > 0]` on the same raw value, so the hard threshold cannot flip between the paths.
 *
 * Fallback to the three dispatches above (same results): when only one of q_norm and k_norm is
 * given (no model has that; the kernel variants take both or neither), or when the device
 * allows fewer storage buffers per stage than the variant binds ({@linkcode headsRopeQKBuffers},
 * up to 11; WebGPU's default limit is 8, the device requests the adapter's own).
 * Per-layer alpha (`alpha_per: "layer"`) is not handled here: pass `decide` only for
 * `alpha_per: "head"` and call `inferDecisions` with `perLayer` otherwise.
 *
 * @example Qwen3 decode step with DMS decisions
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { headsNormRopeQK } from "./heads_rope_qk.ts";
 * import { ropeInvFreq } from "../ops/rope.ts";
 * const gpu = await getGpu();
 * const [B, T, Hq, Hkv, D] = [1, 1, 4, 2, 8];
 * using q = Tensor.fromArray(gpu, new Float32Array(B * T * Hq * D).fill(1), [B, T, Hq, D]);
 * using k = Tensor.fromArray(gpu, new Float32Array(B * T * Hkv * D).fill(1), [B, T, Hkv, D]);
 * using pos = Tensor.fromArray(gpu, [5], [B, T], "i32");
 * using inv = Tensor.fromArray(gpu, ropeInvFreq(D, 1e6), [D / 2]);
 * using w = Tensor.fromArray(gpu, new Float32Array(D).fill(0.5), [D]);
 * const r = headsNormRopeQK(q, k, pos, inv, {
 *   qNorm: { weight: w, eps: 1e-6 },
 *   kNorm: { weight: w, eps: 1e-6 },
 *   neuron: true,
 *   decide: { alphaScale: 100, alphaOffset: 5 },
 * });
 * console.log(r.q.shape, r.k.shape, await r.decisions!.toArray()); // [1,4,1,8] [1,2,1,8] [1, 1]
 * for (const t of [r.q, r.k, r.raw!, r.alpha!, r.decisions!]) t.dispose();
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { output } from "../ops/launch.ts";
import {
  checkHeadsRopeArgs,
  headsNormRope,
  headsNormRopeReference,
  headsRopeWorkgroupSize,
} from "../ops/heads_rope.ts";
import { inferDecisions } from "./decisions.ts";
import type { DecodeAppendTarget } from "../cache/kv_cache.ts";

/** A per-head RMSNorm: gain `[D]` (f32 or f16) and eps. */
export interface HeadNorm {
  /** Gain `[D]`. */
  weight: Tensor;
  /** RMSNorm epsilon (≥ 0). */
  eps: number;
}

/** Options for {@linkcode headsNormRopeQK}. */
export interface HeadsRopeQKOptions {
  /** Qwen3 `q_norm` (absent for Llama). */
  qNorm?: HeadNorm;
  /** Qwen3 `k_norm` (absent for Llama). */
  kNorm?: HeadNorm;
  /** DMS borrowed neuron (SPEC §1a) of the first query head of each group: returns `raw`. */
  neuron?: boolean;
  /**
   * Per-head inference decisions from the neuron (SPEC §1, `alpha_per: "head"`), as
   * `inferDecisions(raw, { alphaScale, alphaOffset })`. Needs `neuron`.
   */
  decide?: { alphaScale: number; alphaOffset: number };
}

/** Result of {@linkcode headsNormRopeQK}. */
export interface HeadsRopeQKResult {
  /** `[B, Hq, T, D]`, q's dtype: normed, rotated, neuron channel zeroed. */
  q: Tensor<FloatDType>;
  /** `[B, Hkv, T, D]`, k's dtype: normed, rotated. */
  k: Tensor<FloatDType>;
  /** `[B, T, Hkv]` f32 raw decision logits, with `neuron`. */
  raw?: Tensor<"f32">;
  /** `[B, Hkv, T]` f32 `alpha = alphaScale·raw − alphaOffset`, with `decide`. */
  alpha?: Tensor<"f32">;
  /** `[B, Hkv, T]` i32 `1[alpha > 0]`, with `decide`; `decisions[.., t]` marks key t−1. */
  decisions?: Tensor<"i32">;
}

/**
 * Storage buffers the fused kernel binds for these options: q, k, positions, invFreq, the two
 * outputs, the two gains with norms, raw with the neuron, alpha and decisions with `decide`.
 *
 * @param opts Which of the norms (counted when both are given), neuron and decide are on.
 * @returns A count in 6..11, compared with the device's `maxStorageBuffersPerShaderStage`.
 */
export function headsRopeQKBuffers(
  opts: Pick<HeadsRopeQKOptions, "qNorm" | "kNorm" | "neuron" | "decide">,
): number {
  return 6 + (opts.qNorm && opts.kNorm ? 2 : 0) + (opts.neuron ? 1 : 0) + (opts.decide ? 2 : 0);
}

/**
 * Whether {@linkcode headsNormRopeQK} runs as one dispatch for these options on a device with
 * these limits (otherwise it runs the three-dispatch fallback).
 *
 * @param limits The device's limits (`gpu.limits`).
 * @param opts The options of the call.
 * @returns True when both or neither norms are given and the buffers fit the limit.
 */
export function headsRopeQKFused(
  limits: Pick<GPUSupportedLimits, "maxStorageBuffersPerShaderStage">,
  opts: HeadsRopeQKOptions,
): boolean {
  return !opts.qNorm === !opts.kNorm &&
    headsRopeQKBuffers(opts) <= limits.maxStorageBuffersPerShaderStage;
}

/**
 * {@linkcode headsNormRope} on queries and keys, and optionally their per-head inference
 * decisions, in one dispatch.
 *
 * @param q `[B, T, Hq, D]` queries (projection layout), f32 or f16, D even, 2 ≤ D ≤ 256.
 * @param k `[B, T, Hkv, D]` keys, q's dtype.
 * @param positions i32 `[B, T]` or `[T]`.
 * @param invFreq f32 `[D/2]`.
 * @param opts Norms, neuron, decide.
 * @returns `q:[B, Hq, T, D]`, `k:[B, Hkv, T, D]`, and `raw:[B, T, Hkv]` with the neuron,
 *   `alpha`, `decisions:[B, Hkv, T]` with decide.
 * @throws {TypeError} When a tensor has the wrong dtype (q and k must share one).
 * @throws {RangeError} When a shape does not match (named with both shapes), Hkv does not divide
 *   Hq with the neuron, decide comes without the neuron, or a number is not finite.
 */
export function headsNormRopeQK(
  q: Tensor,
  k: Tensor,
  positions: Tensor,
  invFreq: Tensor,
  opts: HeadsRopeQKOptions = {},
): HeadsRopeQKResult {
  const op = "headsNormRopeQK()";
  const { qNorm, kNorm, neuron, decide } = opts;
  const qArg = { name: "q", x: q }, kArg = { name: "k", x: k };
  const { shape: [B, T, Hq, D], batched } = checkHeadsRopeArgs(
    op,
    qArg,
    positions,
    invFreq,
    qNorm && { name: "qNorm", ...qNorm },
  );
  checkHeadsRopeArgs(op, kArg, positions, invFreq, kNorm && { name: "kNorm", ...kNorm });
  const Hkv = k.shape[2];
  if (k.dtype !== q.dtype) {
    throw new TypeError(`${op} k: expected q's dtype ${q.dtype}, got ${k.dtype}`);
  }
  if (k.shape[0] !== B || k.shape[1] !== T || k.shape[3] !== D) {
    throw new RangeError(
      `${op} k: expected shape [${B}, ${T}, Hkv, ${D}] to match q ${fmtShape(q.shape)}, got ${
        fmtShape(k.shape)
      }`,
    );
  }
  if (neuron && !(Hkv > 0 && Hq % Hkv === 0)) {
    throw new RangeError(
      `${op} neuron: the KV heads of k ${fmtShape(k.shape)} must divide the heads of q ${
        fmtShape(q.shape)
      }`,
    );
  }
  if (decide && !neuron) {
    throw new RangeError(`${op} decide: needs neuron (the decisions come from its raw logits)`);
  }
  checkDecide(op, decide);

  const gpu = q.gpu;
  if (!headsRopeQKFused(gpu.limits, opts)) {
    const qf = headsNormRope(q, positions, invFreq, {
      norm: qNorm,
      neuron: neuron ? { kvHeads: Hkv } : undefined,
    });
    const kf = headsNormRope(k, positions, invFreq, { norm: kNorm });
    const d = decide ? inferDecisions(qf.raw!, decide) : undefined;
    return { q: qf.out, k: kf.out, raw: qf.raw, alpha: d?.alpha, decisions: d?.decisions };
  }

  const dtype = q.dtype as FloatDType;
  const outQ = output(gpu, [B, Hq, T, D], dtype);
  const outK = output(gpu, [B, Hkv, T, D], dtype);
  const raw = neuron ? output(gpu, [B, T, Hkv], "f32") : undefined;
  const alpha = decide ? output(gpu, [B, Hkv, T], "f32") : undefined;
  const decisions = decide ? output(gpu, [B, Hkv, T], "i32") : undefined;
  const result = { q: outQ, k: outK, raw, alpha, decisions };
  // in @binding order: x, xk, w, wk, pos, inv_freq, out, out_k, raw, alpha, decisions
  const buffers = [outQ.buffer, outK.buffer];
  if (raw) buffers.push(raw.buffer);
  if (alpha && decisions) buffers.push(alpha.buffer, decisions.buffer);
  dispatchHeadsRopeQK(q, k, positions, invFreq, opts, {
    shader: "heads_rope",
    suffix: decide ? "_decide" : "",
    T,
    batched,
    outputs: buffers,
  });
  return result;
}

/**
 * Throws when `decide`'s numbers are not finite (naming `op`).
 *
 * @throws {RangeError} A non-finite alphaScale or alphaOffset.
 */
export function checkDecide(op: string, decide: HeadsRopeQKOptions["decide"]): void {
  if (decide && !(Number.isFinite(decide.alphaScale) && Number.isFinite(decide.alphaOffset))) {
    throw new RangeError(
      `${op} decide: expected finite alphaScale and alphaOffset, got ${decide.alphaScale}, ` +
        `${decide.alphaOffset}`,
    );
  }
}

/**
 * The dispatch of a `heads_rope_qk*` entry, shared with ./heads_rope_append.ts: the kernel
 * `heads_rope_qk[_norm][_neuron]<suffix>` of `shader`, the inputs q, k (and the gains with both
 * norms), positions and invFreq bound first, then `outputs` in @binding order, and the uniforms
 * (the append's from `append`, zeros without one). q:[B, T, Hq, D], k:[B, T, Hkv, D], checked by
 * the caller.
 */
export function dispatchHeadsRopeQK(
  q: Tensor,
  k: Tensor,
  positions: Tensor,
  invFreq: Tensor,
  opts: HeadsRopeQKOptions,
  run: {
    shader: "heads_rope" | "heads_rope_append";
    suffix: string;
    T: number;
    batched: boolean;
    outputs: GPUBuffer[];
    append?: DecodeAppendTarget;
  },
): void {
  const { qNorm, kNorm, neuron, decide } = opts;
  const [B, , Hq, D] = q.shape, Hkv = k.shape[2], T = run.T;
  const qRows = B * T * Hq, rows = qRows + B * T * Hkv;
  if (rows === 0) return;
  const gpu = q.gpu, norm = qNorm && kNorm;
  const kernel = gpu.kernel({
    shader: run.shader,
    entry: `heads_rope_qk${norm ? "_norm" : ""}${neuron ? "_neuron" : ""}${run.suffix}`,
    defines: {
      T: q.dtype,
      G: norm ? qNorm!.weight.dtype : "f32",
      GK: norm ? kNorm!.weight.dtype : "f32",
    },
    constants: { WG: headsRopeWorkgroupSize(D / 2) },
  });
  const buffers = [q.buffer, k.buffer];
  if (norm) buffers.push(qNorm!.weight.buffer, kNorm!.weight.buffer);
  buffers.push(positions.buffer, invFreq.buffer, ...run.outputs);
  const a = run.append;
  gpu.dispatch(kernel, buffers, Gpu.grid(rows), {
    rows,
    q_rows: qRows,
    d: D,
    heads: Hq,
    seq: T,
    group: neuron ? Hq / Hkv : 1,
    kv_heads: Hkv,
    pos_batched: run.batched ? 1 : 0,
    eps: norm ? qNorm!.eps : 0,
    eps_k: norm ? kNorm!.eps : 0,
    scale: decide?.alphaScale ?? 0,
    offset: decide?.alphaOffset ?? 0,
    zero: 0,
    lbase: a?.lbase ?? 0,
    bs: a?.blockSize ?? 0,
    mb: a?.tableWidth ?? 0,
    t0: a?.t0 ?? 0,
    wc: a?.slots?.cacheWindow ?? 0,
  });
}

/** Options for {@linkcode headsNormRopeQKReference}: plain arrays instead of tensors. */
export interface HeadsRopeQKReferenceOptions {
  /** Gain `[D]` and eps of q_norm. */
  qNorm?: { weight: ArrayLike<number>; eps: number };
  /** Gain `[D]` and eps of k_norm. */
  kNorm?: { weight: ArrayLike<number>; eps: number };
  /** The DMS borrowed neuron. */
  neuron?: boolean;
  /** Per-head decisions, as in {@linkcode HeadsRopeQKOptions}. */
  decide?: { alphaScale: number; alphaOffset: number };
  /** Storage dtype to model (the normed rows rounded to f16 for "f16"; default "f32"). */
  dtype?: FloatDType;
}

/**
 * CPU twin of {@linkcode headsNormRopeQK}: `headsNormRopeReference` on q and on k, then the
 * decisions in f32 arithmetic as the kernel and `inferDecisions` compute them:
 * `alpha = f32(f32(raw · f32(scale)) − f32(offset))`, `decision = 1[alpha > 0]`
 * (`inferDecisionsReference` computes alpha in f64, which may differ in the last f32 bit).
 *
 * @param q Row-major `[B, T, Hq, D]` data.
 * @param qShape `[B, T, Hq, D]`.
 * @param k Row-major `[B, T, Hkv, D]` data.
 * @param kShape `[B, T, Hkv, D]`.
 * @param positions `[B, T]` or `[T]` values.
 * @param invFreq `[D/2]`.
 * @param opts Norms, neuron, decide, storage dtype.
 * @returns `q:[B, Hq, T, D]`, `k:[B, Hkv, T, D]`, `raw:[B, T, Hkv]` with the neuron, `alpha`
 *   and `decisions:[B, Hkv, T]` with decide.
 */
export function headsNormRopeQKReference(
  q: ArrayLike<number>,
  qShape: readonly number[],
  k: ArrayLike<number>,
  kShape: readonly number[],
  positions: ArrayLike<number>,
  invFreq: ArrayLike<number>,
  opts: HeadsRopeQKReferenceOptions = {},
): {
  q: Float32Array;
  k: Float32Array;
  raw?: Float32Array;
  alpha?: Float32Array;
  decisions?: Int32Array;
} {
  const [B, T, ,] = qShape, Hkv = kShape[2];
  const qr = headsNormRopeReference(q, qShape, positions, invFreq, {
    norm: opts.qNorm,
    neuron: opts.neuron ? { kvHeads: Hkv } : undefined,
    dtype: opts.dtype,
  });
  const kr = headsNormRopeReference(k, kShape, positions, invFreq, {
    norm: opts.kNorm,
    dtype: opts.dtype,
  });
  if (!opts.decide || !qr.raw) return { q: qr.out, k: kr.out, raw: qr.raw };
  const f = Math.fround;
  const scale = f(opts.decide.alphaScale), offset = f(opts.decide.alphaOffset);
  const alpha = new Float32Array(B * Hkv * T), decisions = new Int32Array(B * Hkv * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hkv; h++) {
      for (let t = 0; t < T; t++) {
        const i = (b * Hkv + h) * T + t;
        alpha[i] = f(f(qr.raw[(b * T + t) * Hkv + h] * scale) - offset);
        decisions[i] = alpha[i] > 0 ? 1 : 0;
      }
    }
  }
  return { q: qr.out, k: kr.out, raw: qr.raw, alpha, decisions };
}
