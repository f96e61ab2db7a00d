/**
 * Fused attention-head preparation: per-head RMSNorm (Qwen3 `q_norm`/`k_norm`), the DMS
 * borrowed query neuron (SPEC §1a), the move from the projection layout `[B, T, H, D]` to the
 * attention layout `[B, H, T, D]`, and RoPE, in one dispatch. It computes exactly the unfused
 * chain
 *
 * ```
 * rmsNorm(x, w, eps) → takeQueryNeuron → swapAxes12 → rope → zeroQueryNeuron   (queries)
 * rmsNorm(x, w, eps) → swapAxes12 → rope                                       (keys)
 * ```
 *
 * whose five (three) kernels cost one dispatch each; decode is dispatch-bound (issue #10).
 *
 * Per row `(b, t, h)`:
 * 1. `v = w · x · rsqrt(mean(x²) + eps)` in f32, as {@linkcode rmsNorm} (or `v = x` without
 *    a norm), rounded once to the storage dtype, as the unfused chain stores it (and as HF's
 *    `q_norm` returns the model dtype);
 * 2. neuron (SPEC §1a), in the first query head of each group (`h % G == 0`, `G = H / Hkv`)
 *    only: `raw[b, t, h / G] = v[D−1]`, then `v[D−1] = 0` *before* RoPE, so that its
 *    rotate-half partner, channel `D/2−1`, does not receive it;
 * 3. RoPE, Hugging Face rotate-half with the f32 angle `pos · invFreq[j]`, as {@linkcode rope};
 * 4. neuron heads: channel `D−1` is zeroed again (it held `v[D/2−1] · sin`).
 *
 * Kernels (`shaders/heads_rope.wgsl`):
 * - `heads_rope[_norm][_neuron]`: naive, one workgroup per row (rows in x's memory order),
 *   the row staged in workgroup memory, 32..128 threads covering the `D/2` rotation pairs; the
 *   four entry points differ only in the optional steps. Memory-bound; its point is the
 *   dispatch count (1 instead of 5 for queries, 3 for keys).
 * - `heads_rope_qk[_norm][_neuron[_decide]]`: queries and keys of a layer in one dispatch,
 *   with the inference decisions optionally; launched by `headsNormRopeQK` (`heads_rope_qk.ts`).
 *
 * Precision: f32 math. f32 storage: equals the unfused chain up to the norm's summation order
 * (a few f32 ulps). f16 storage: rounds where the chain rounds (after the norm, at the output),
 * so it differs from the chain by at most about one f16 ulp (when the norm's f32 sum differs).
 *
 * @example Qwen3 queries with the DMS neuron, decode step (T = 1)
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { headsNormRope } from "./heads_rope.ts";
 * import { ropeInvFreq } from "./rope.ts";
 * const gpu = await getGpu();
 * const [B, T, H, Hkv, D] = [1, 1, 4, 2, 8];
 * using q = Tensor.fromArray(gpu, new Float32Array(B * T * H * D).fill(1), [B, T, H, D]);
 * using pos = Tensor.fromArray(gpu, [5], [B, T], "i32");
 * using inv = Tensor.fromArray(gpu, ropeInvFreq(D, 1e6), [D / 2]);
 * using w = Tensor.fromArray(gpu, new Float32Array(D).fill(0.5), [D]);
 * const { out, raw } = headsNormRope(q, pos, inv, {
 *   norm: { weight: w, eps: 1e-6 },
 *   neuron: { kvHeads: Hkv },
 * });
 * console.log(out.shape, await raw!.toArray()); // [1, 4, 1, 8], raw [B, T, Hkv] ≈ [0.5, 0.5]
 * out.dispose();
 * raw!.dispose();
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import { type FloatDType, roundToF16 } from "../tensor/dtype.ts";
import { assertFloat, output } from "./launch.ts";
import { rmsNormReference } from "./rmsnorm.ts";
import { ropeReference } from "./rope.ts";
import { swapAxes12Reference } from "./layout.ts";

/** Largest head dimension {@linkcode headsNormRope} supports (the row is staged on chip). */
export const HEADS_ROPE_MAX_D = 256;

/** Options for {@linkcode headsNormRope}. */
export interface HeadsRopeOptions {
  /** Per-head RMSNorm before RoPE (Qwen3 `q_norm`/`k_norm`): gain `[D]` (f32 or f16), eps. Absent for Llama. */
  norm?: { weight: Tensor; eps: number };
  /**
   * DMS borrowed neuron (SPEC §1a): channel D−1 of query heads `g·G` (`G = H / kvHeads`) is
   * returned as raw logits and zeroed before and after RoPE (takeQueryNeuron + zeroQueryNeuron).
   */
  neuron?: { kvHeads: number };
}

/** Result of {@linkcode headsNormRope}. */
export interface HeadsRopeResult {
  /** `[B, H, T, D]` (attention layout), x's dtype: normed, rotated, neuron channel zeroed. */
  out: Tensor<FloatDType>;
  /** `[B, T, Hkv]` f32 raw decision logits (the normed neuron), only with `neuron`. */
  raw?: Tensor<"f32">;
}

/** Threads per workgroup for `D/2` rotation pairs: a power of two in 32..128 (the shader's WG). */
export function headsRopeWorkgroupSize(half: number): number {
  let wg = 32;
  while (wg < half && wg < 128) wg *= 2;
  return wg;
}

/**
 * Per-head RMSNorm (optional), DMS neuron (optional), `[B, T, H, D] → [B, H, T, D]` and RoPE
 * in one dispatch; equal to `rmsNorm → takeQueryNeuron → swapAxes12 → rope → zeroQueryNeuron`.
 *
 * @param x `[B, T, H, D]` (a projection `[B, T, H·D]` viewed per head), f32 or f16, D even,
 *   2 ≤ D ≤ {@linkcode HEADS_ROPE_MAX_D}.
 * @param positions i32 `[B, T]` (one row per sequence) or `[T]` (shared by the batch).
 * @param invFreq f32 `[D/2]`, e.g. uploaded from `ropeInvFreq`.
 * @param opts The optional norm and neuron.
 * @returns `out:[B, H, T, D]` of x's dtype, and `raw:[B, T, Hkv]` f32 with `neuron`.
 * @throws {TypeError} When x or the norm weight is not float, positions not i32 or invFreq
 *   not f32.
 * @throws {RangeError} When a shape does not match (named with both shapes), D is odd or too
 *   large, eps is invalid, or kvHeads does not divide H.
 */
export function headsNormRope(
  x: Tensor,
  positions: Tensor,
  invFreq: Tensor,
  opts: HeadsRopeOptions = {},
): HeadsRopeResult {
  const op = "headsNormRope()";
  const { norm, neuron } = opts;
  const { shape: [B, T, H, D], batched } = checkHeadsRopeArgs(
    op,
    { name: "x", x },
    positions,
    invFreq,
    norm && { name: "norm", ...norm },
  );
  const hkv = neuron?.kvHeads ?? 1;
  if (neuron && !(Number.isInteger(hkv) && hkv > 0 && H % hkv === 0)) {
    throw new RangeError(
      `${op} neuron.kvHeads: expected a positive divisor of H = ${H} (x ${
        fmtShape(x.shape)
      }), got ${hkv}`,
    );
  }

  const gpu = x.gpu;
  const out = output(gpu, [B, H, T, D], x.dtype as FloatDType);
  const raw = neuron ? output(gpu, [B, T, hkv], "f32") : undefined;
  const rows = B * T * H;
  if (rows === 0) return { out, raw };
  const k = gpu.kernel({
    shader: "heads_rope",
    entry: `heads_rope${norm ? "_norm" : ""}${neuron ? "_neuron" : ""}`,
    defines: { T: x.dtype, G: norm?.weight.dtype ?? "f32", GK: "f32" },
    constants: { WG: headsRopeWorkgroupSize(D / 2) },
  });
  const buffers = [x.buffer];
  if (norm) buffers.push(norm.weight.buffer);
  buffers.push(positions.buffer, invFreq.buffer, out.buffer);
  if (raw) buffers.push(raw.buffer);
  gpu.dispatch(k, buffers, Gpu.grid(rows), {
    rows,
    q_rows: rows,
    d: D,
    heads: H,
    seq: T,
    group: H / hkv,
    kv_heads: hkv,
    pos_batched: batched ? 1 : 0,
    eps: norm?.eps ?? 0,
    eps_k: 0,
    scale: 0,
    offset: 0,
    zero: 0,
    lbase: 0, // the `_append` entries' fields (src/dms/heads_rope_append.ts), unused here
    bs: 0,
    mb: 0,
    t0: 0,
    wc: 0,
  });
  return { out, raw };
}

/**
 * Validates the arguments shared by {@linkcode headsNormRope} and `headsNormRopeQK` and names
 * the offending argument (`op`, then `x.name`) and the shapes in the error.
 *
 * @param op The op, e.g. `"headsNormRope()"`.
 * @param x The input `[B, T, H, D]` and its argument name.
 * @param positions i32 `[B, T]` or `[T]`.
 * @param invFreq f32 `[D/2]`.
 * @param norm The gain `[D]` and eps, with the option's name, if any.
 * @returns x's shape and whether positions are per sequence (`[B, T]`).
 * @throws {TypeError} When x or the gain is not float, positions not i32 or invFreq not f32.
 * @throws {RangeError} When a shape does not match, D is odd or too large, or eps is invalid.
 */
export function checkHeadsRopeArgs(
  op: string,
  x: { name: string; x: Tensor },
  positions: Tensor,
  invFreq: Tensor,
  norm?: { name: string; weight: Tensor; eps: number },
): { shape: [number, number, number, number]; batched: boolean } {
  const xn = `${op} ${x.name}`;
  const t = x.x;
  assertFloat(t, xn);
  if (t.rank !== 4) {
    throw new RangeError(`${xn}: expected shape [B, T, H, D], got ${fmtShape(t.shape)}`);
  }
  const [B, T, H, D] = t.shape;
  const of = `${x.name} ${fmtShape(t.shape)}`;
  if (!(D % 2 === 0 && D >= 2 && D <= HEADS_ROPE_MAX_D)) {
    throw new RangeError(
      `${xn}: head dimension D must be even and in 2..${HEADS_ROPE_MAX_D}, got ${of} ([B, T, H, D])`,
    );
  }
  if (positions.dtype !== "i32") {
    throw new TypeError(
      `${op} positions: expected an i32 tensor, got ${positions.dtype}${fmtShape(positions.shape)}`,
    );
  }
  const batched = positions.rank === 2;
  const posOk = batched
    ? positions.shape[0] === B && positions.shape[1] === T
    : positions.rank === 1 && positions.shape[0] === T;
  if (!posOk) {
    throw new RangeError(
      `${op} positions: expected shape [${B}, ${T}] or [${T}] for ${of} ([B, T, H, D]), got ${
        fmtShape(positions.shape)
      }`,
    );
  }
  if (invFreq.dtype !== "f32") {
    throw new TypeError(
      `${op} invFreq: expected an f32 tensor, got ${invFreq.dtype}${fmtShape(invFreq.shape)}`,
    );
  }
  if (invFreq.rank !== 1 || invFreq.shape[0] !== D / 2) {
    throw new RangeError(
      `${op} invFreq: expected shape [${D / 2}] for ${of}, got ${fmtShape(invFreq.shape)}`,
    );
  }
  if (norm) {
    assertFloat(norm.weight, `${op} ${norm.name}.weight`);
    if (norm.weight.rank !== 1 || norm.weight.shape[0] !== D) {
      throw new RangeError(
        `${op} ${norm.name}.weight: expected shape [${D}] to match ${of}, got ${
          fmtShape(norm.weight.shape)
        }`,
      );
    }
    if (!(Number.isFinite(norm.eps) && norm.eps >= 0)) {
      throw new RangeError(
        `${op} ${norm.name}.eps: expected a finite number >= 0, got ${norm.eps}`,
      );
    }
  }
  return { shape: [B, T, H, D], batched };
}

/** Options for {@linkcode headsNormRopeReference}: plain arrays instead of tensors. */
export interface HeadsRopeReferenceOptions {
  /** Gain `[D]` and eps of the per-head RMSNorm. */
  norm?: { weight: ArrayLike<number>; eps: number };
  /** The DMS borrowed neuron, as in {@linkcode HeadsRopeOptions}. */
  neuron?: { kvHeads: number };
  /** Storage dtype to model: "f16" rounds the normed row to f16 as the kernel does (default "f32"). */
  dtype?: FloatDType;
}

/**
 * CPU reference for {@linkcode headsNormRope}, composed from the unfused ops' references:
 * `rmsNormReference` → round to the storage dtype → the neuron rule (SPEC §1a) →
 * `swapAxes12Reference` → `ropeReference` → neuron channel zeroed again. The output is not
 * rounded to f16 (compare with the f16 tolerance).
 *
 * @param x Row-major `[B, T, H, D]` data.
 * @param shape `[B, T, H, D]`.
 * @param positions `[B, T]` or `[T]` values.
 * @param invFreq `[D/2]`.
 * @param opts Norm, neuron, storage dtype.
 * @returns `out:[B, H, T, D]` and, with a neuron, `raw:[B, T, Hkv]`.
 */
export function headsNormRopeReference(
  x: ArrayLike<number>,
  shape: readonly number[],
  positions: ArrayLike<number>,
  invFreq: ArrayLike<number>,
  opts: HeadsRopeReferenceOptions = {},
): { out: Float32Array; raw?: Float32Array } {
  const [B, T, H, D] = shape;
  if (shape.length !== 4 || x.length !== B * T * H * D) {
    throw new RangeError(
      `headsNormRopeReference(): ${x.length} values do not fill shape ${fmtShape(shape)}`,
    );
  }
  let v = opts.norm ? rmsNormReference(x, opts.norm.weight, opts.norm.eps) : Float32Array.from(x);
  if (opts.dtype === "f16") v = roundToF16(v);
  let raw: Float32Array | undefined;
  const hkv = opts.neuron?.kvHeads ?? 0;
  const G = H / hkv;
  if (opts.neuron) {
    raw = new Float32Array(B * T * hkv);
    for (let bt = 0; bt < B * T; bt++) {
      for (let g = 0; g < hkv; g++) {
        const i = (bt * H + g * G) * D + D - 1;
        raw[bt * hkv + g] = v[i];
        v[i] = 0;
      }
    }
  }
  const bhtd = [B, H, T, D];
  const out = ropeReference(swapAxes12Reference(v, shape), bhtd, positions, invFreq);
  if (opts.neuron) {
    for (let b = 0; b < B; b++) {
      for (let g = 0; g < hkv; g++) {
        for (let t = 0; t < T; t++) out[((b * H + g * G) * T + t) * D + D - 1] = 0;
      }
    }
  }
  return { out, raw };
}
