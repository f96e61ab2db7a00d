/**
 * Rotary position embedding (RoPE), Hugging Face rotate-half convention, and
 * the `inv_freq` table including `rope_scaling` types "llama3" and "linear".
 *
 * ```
 * ang      = pos * inv_freq                      f32 product, [D/2]
 * cos, sin = cos(cat(ang, ang)), sin(cat(ang, ang))
 * x'       = x * cos + rotate_half(x) * sin,     rotate_half(x) = cat(-x[D/2:], x[:D/2])
 * ```
 *
 * Positions are read from an i32 GPU buffer, so a decode loop advances them
 * on the GPU and never rewrites uniforms per token.
 *
 * Kernels (`shaders/rope.wgsl`):
 * - `rope`: naive, one thread per rotation pair `(j, j + D/2)`, 256 per
 *   workgroup. The angle is the f32 product `f32(pos) * inv_freq[j]`, exactly
 *   as PyTorch forms it; cos/sin use an own range reduction and polynomials
 *   (`shaders/sincos.wgsl`, shared with the backward and the fused q/k kernels),
 *   because WGSL bounds the builtins only on [-π, π] and real drivers use
 *   that freedom: on an H100 (Vulkan) builtin cos/sin were off by up to
 *   4.6e-3 for angles in [1e3, 4e4) and 1.7e-2 up to 1.3e5, while this kernel
 *   stayed within 1.5e-7 of cos/sin of the f32 angle there (lavapipe: 1.5e-7
 *   below 1e5 rad, 2.5e-6 up to 1.3e5). Memory-bound; no faster variant needed.
 *
 * Precision and the f32 angle: PyTorch rounds `pos * inv_freq` to f32, whose
 * ulp is 2^-8 for angles in [32768, 65536). That rounding (up to 2^-9 ≈ 2e-3 rad
 * near position 40000) is part of the HF model, so this op and
 * {@linkcode ropeReference} reproduce it: against the reference (same f32
 * angle, f64 cos/sin) the f32 kernel is within 1e-5 absolute. Against an
 * exact-angle (f64) RoPE, outputs differ by up to `2 · |x|max · ulp(ang)/2`,
 * i.e. about `|x|max · pos · 2^-23` (≈ 5e-3·|x|max at position 40000). (Checked
 * against torch 2.11: its cos/sin tables equal cos/sin of the f32 angle to
 * 7e-8 on CPU and CUDA, and differ from the f64 angle by 2.8e-3 at these
 * positions.) With f16 storage, the f32 result is rounded once (HF rounds
 * cos/sin to f16 and multiplies in f16).
 *
 * @example Rotate q for positions 0..T-1
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { rope, ropeInvFreq } from "./rope.ts";
 * const gpu = await getGpu();
 * const [B, H, T, D] = [1, 2, 3, 8];
 * using q = Tensor.fromArray(gpu, new Float32Array(B * H * T * D).fill(1), [B, H, T, D]);
 * using pos = Tensor.fromArray(gpu, [0, 1, 2], [T], "i32");
 * using inv = Tensor.fromArray(gpu, ropeInvFreq(D, 10000), [D / 2]);
 * using qr = rope(q, pos, inv); // qr:[B, H, T, D]
 * console.log((await qr.toArray()).slice(0, D)); // position 0: unchanged, all 1
 * ```
 *
 * @module
 */

import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { assertFloat, grid1d, output } from "./launch.ts";

const WG = 256;

/**
 * A `rope_scaling` (transformers 4.x) or `rope_parameters` (5.x) entry of a
 * model's config.json. The type is read from `rope_type`, else the legacy
 * `type`; absent or "default" means no scaling.
 */
export interface RopeScaling {
  /** "default", "linear" or "llama3". */
  rope_type?: string;
  /** Legacy spelling of `rope_type`. */
  type?: string;
  /** linear, llama3: the context extension factor (8 for Llama 3.1). */
  factor?: number;
  /** llama3: wavelengths above `original_max_position_embeddings / low_freq_factor` are divided by `factor`. */
  low_freq_factor?: number;
  /** llama3: wavelengths below `original_max_position_embeddings / high_freq_factor` are kept. */
  high_freq_factor?: number;
  /** llama3: the pre-training context length (8192 for Llama 3.1). */
  original_max_position_embeddings?: number;
}

const f = Math.fround;

function scalingField(
  s: RopeScaling,
  type: string,
  key: Exclude<keyof RopeScaling, "rope_type" | "type">,
): number {
  const v = s[key];
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new RangeError(
      `ropeInvFreq(): rope_scaling type "${type}" needs a positive number "${key}", got ${v}`,
    );
  }
  return v;
}

/**
 * The RoPE inverse frequencies `inv_freq[i] = theta^(-2i/D)`, `i < D/2`, with
 * optional `rope_scaling`, replicating transformers' f32 arithmetic step by
 * step (`_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
 * `_compute_llama3_parameters`, as torch evaluates them on the CPU). Checked
 * against transformers 5.17 / torch 2.11 on the CPU: bit-identical for
 * llama3, linear and θ = 1e4; for θ = 1e6, one entry of 64 differs by 0.7 ulp
 * (torch's vectorised powf is not correctly rounded; this uses the correctly
 * rounded value). Tables computed by torch on CUDA differ by up to 1.3 ulp.
 * None of these types change the attention scaling (it stays 1).
 *
 * llama3: with `wavelen = 2π / inv_freq`, `lo = original_max_position_embeddings / low_freq_factor`
 * and `hi = original_max_position_embeddings / high_freq_factor`: wavelengths
 * below `hi` keep `inv_freq`, above `lo` use `inv_freq / factor`, and between
 * them `(1 - s) · inv_freq / factor + s · inv_freq` with
 * `s = (original_max_position_embeddings / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)`.
 *
 * linear: `inv_freq / factor`.
 *
 * @param headDim Rotary dimension `D` (even, > 0).
 * @param theta `rope_theta` (e.g. 10000, 1e6 for Qwen3, 500000 for Llama 3).
 * @param scaling The config's `rope_scaling`/`rope_parameters`, or nothing.
 * @returns `Float32Array[D/2]`.
 * @throws {RangeError} On an odd or non-positive D, a bad theta, an unknown
 *   scaling type (named in the message) or a missing scaling field.
 *
 * @example Llama 3.1
 * ```ts
 * import { ropeInvFreq } from "./rope.ts";
 * const inv = ropeInvFreq(128, 500000, {
 *   rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4,
 *   original_max_position_embeddings: 8192,
 * });
 * console.log(inv.length, inv[0], inv[63]); // 64 1 3.07e-7 (= 500000^(-126/128) / 8)
 * ```
 */
export function ropeInvFreq(
  headDim: number,
  theta: number,
  scaling?: RopeScaling | null,
): Float32Array {
  if (!(Number.isInteger(headDim) && headDim > 0 && headDim % 2 === 0)) {
    throw new RangeError(`ropeInvFreq(): headDim must be a positive even integer, got ${headDim}`);
  }
  if (!(Number.isFinite(theta) && theta > 0)) {
    throw new RangeError(`ropeInvFreq(): theta must be a positive number, got ${theta}`);
  }
  const half = headDim / 2;
  // inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), all in f32.
  const inv = new Float32Array(half);
  const base = f(theta);
  for (let i = 0; i < half; i++) inv[i] = f(1 / f(base ** f(2 * i / headDim)));

  const type = scaling?.rope_type ?? scaling?.type ?? "default";
  if (!scaling || type === "default") return inv;
  if (type === "linear") {
    const factor = f(scalingField(scaling, type, "factor"));
    return inv.map((v) => f(v / factor));
  }
  if (type === "llama3") {
    const factor = f(scalingField(scaling, type, "factor"));
    const low = scalingField(scaling, type, "low_freq_factor");
    const high = scalingField(scaling, type, "high_freq_factor");
    const old = scalingField(scaling, type, "original_max_position_embeddings");
    if (!(high > low)) {
      throw new RangeError(
        `ropeInvFreq(): rope_scaling type "llama3" needs high_freq_factor > low_freq_factor, got ${high} <= ${low}`,
      );
    }
    // Python floats (f64), compared against f32 tensors after rounding to f32.
    const lowWavelen = f(old / low);
    const highWavelen = f(old / high);
    const lowF = f(low);
    const span = f(high - low);
    const oldF = f(old);
    const twoPi = f(2 * Math.PI);
    const out = new Float32Array(half);
    for (let i = 0; i < half; i++) {
      // torch's scalar / tensor is reciprocal(tensor) * scalar.
      const wavelen = f(f(1 / inv[i]) * twoPi);
      const llama = wavelen > lowWavelen ? f(inv[i] / factor) : inv[i];
      const smooth = f(f(f(f(1 / wavelen) * oldF) - lowF) / span);
      const smoothed = f(f(f(f(1 - smooth) * llama) / factor) + f(smooth * llama));
      const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
      out[i] = medium ? smoothed : llama;
    }
    return out;
  }
  throw new RangeError(
    `ropeInvFreq(): unsupported rope_scaling type "${type}" (supported: default, linear, llama3)`,
  );
}

/** Memory layout of RoPE's `x`: heads before tokens (`"BHTD"`) or tokens before heads (`"BTHD"`). */
export type RopeLayout = "BHTD" | "BTHD";

/** Options for {@linkcode rope}. */
export interface RopeOptions {
  /**
   * `"BHTD"` (default): x is `[B, H, T, D]`. `"BTHD"`: x is `[B, T, H, D]`, the
   * layout a projection `[B, T, H*D]` has when viewed per head, which saves a
   * transpose. Both cost the same.
   */
  layout?: RopeLayout;
}

/**
 * Applies rotary position embedding (HF rotate-half) to queries or keys.
 *
 * @param x `[B, H, T, D]` (or `[B, T, H, D]` with `layout: "BTHD"`), f32 or f16, D even.
 * @param positions i32 `[B, T]` (one row per sequence) or `[T]` (shared by the batch).
 * @param invFreq f32 `[D/2]`, e.g. uploaded from {@linkcode ropeInvFreq}.
 * @param opts Layout of x.
 * @returns A new tensor shaped and laid out like x, of x's dtype.
 * @throws {TypeError} When x is not float, positions not i32 or invFreq not f32.
 * @throws {RangeError} When a shape does not match (named with both shapes) or D is odd.
 */
export function rope(
  x: Tensor,
  positions: Tensor,
  invFreq: Tensor,
  opts: RopeOptions = {},
): Tensor<FloatDType> {
  const layout = opts.layout ?? "BHTD";
  if (layout !== "BHTD" && layout !== "BTHD") {
    throw new RangeError(`rope(): layout must be "BHTD" or "BTHD", got "${layout}"`);
  }
  assertFloat(x, "rope() x");
  if (positions.dtype !== "i32") {
    throw new TypeError(
      `rope() positions: expected an i32 tensor, got ${positions.dtype}${
        fmtShape(positions.shape)
      }`,
    );
  }
  if (invFreq.dtype !== "f32") {
    throw new TypeError(
      `rope() invFreq: expected an f32 tensor, got ${invFreq.dtype}${fmtShape(invFreq.shape)}`,
    );
  }
  if (x.rank !== 4) {
    throw new RangeError(
      `rope() x: expected shape ${layout === "BHTD" ? "[B, H, T, D]" : "[B, T, H, D]"}, got ${
        fmtShape(x.shape)
      }`,
    );
  }
  const [B, d1, d2, D] = x.shape;
  const [H, T] = layout === "BHTD" ? [d1, d2] : [d2, d1];
  if (D % 2 !== 0) {
    throw new RangeError(`rope() x: head dimension must be even, got ${fmtShape(x.shape)}`);
  }
  if (invFreq.rank !== 1 || invFreq.shape[0] !== D / 2) {
    throw new RangeError(
      `rope() invFreq: expected shape [${D / 2}] for x ${fmtShape(x.shape)}, got ${
        fmtShape(invFreq.shape)
      }`,
    );
  }
  const batched = positions.rank === 2;
  const posOk = batched
    ? positions.shape[0] === B && positions.shape[1] === T
    : positions.rank === 1 && positions.shape[0] === T;
  if (!posOk) {
    throw new RangeError(
      `rope() positions: expected shape [${B}, ${T}] or [${T}] for x ${fmtShape(x.shape)} (${
        layout === "BHTD" ? "[B, H, T, D]" : "[B, T, H, D]"
      }), got ${fmtShape(positions.shape)}`,
    );
  }
  const gpu = x.gpu;
  const out = output(gpu, x.shape, x.dtype);
  const n = x.size / 2;
  if (n === 0) return out;
  const k = gpu.kernel({
    shader: "rope",
    entry: "rope",
    defines: { T: x.dtype },
    constants: { WG },
  });
  gpu.dispatch(
    k,
    [x.buffer, positions.buffer, invFreq.buffer, out.buffer],
    grid1d(n, WG),
    {
      n,
      half: D / 2,
      heads: H,
      seq: T,
      tokens_first: layout === "BHTD" ? 0 : 1,
      pos_batched: batched ? 1 : 0,
      zero: 0,
    },
  );
  return out;
}

/**
 * CPU reference for {@linkcode rope}: plain loops, the angle rounded to f32
 * (`Math.fround(pos * invFreq[j])`, as PyTorch), cos/sin and products in f64.
 *
 * @param x Row-major data of shape `shape`.
 * @param shape `[B, H, T, D]`, or `[B, T, H, D]` with layout "BTHD".
 * @param positions `[B, T]` or `[T]` values.
 * @param invFreq `[D/2]`.
 * @param layout As in {@linkcode RopeOptions}.
 * @param exactAngle Use the f64 product instead (to measure the f32 angle's effect).
 */
export function ropeReference(
  x: ArrayLike<number>,
  shape: readonly number[],
  positions: ArrayLike<number>,
  invFreq: ArrayLike<number>,
  layout: RopeLayout = "BHTD",
  exactAngle = false,
): Float32Array {
  const [B, d1, d2, D] = shape;
  const [H, T] = layout === "BHTD" ? [d1, d2] : [d2, d1];
  const half = D / 2;
  const batched = positions.length === B * T;
  if (invFreq.length !== half || x.length !== B * H * T * D || !batched && positions.length !== T) {
    throw new RangeError(`ropeReference(): inconsistent sizes for shape ${fmtShape(shape)}`);
  }
  const out = new Float32Array(x.length);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const pos = positions[batched ? b * T + t : t];
        const base = (layout === "BHTD" ? (b * H + h) * T + t : (b * T + t) * H + h) * D;
        for (let j = 0; j < half; j++) {
          const ang = exactAngle ? pos * invFreq[j] : Math.fround(pos * invFreq[j]);
          const c = Math.cos(ang), s = Math.sin(ang);
          const x1 = x[base + j], x2 = x[base + j + half];
          out[base + j] = x1 * c - x2 * s;
          out[base + j + half] = x2 * c + x1 * s;
        }
      }
    }
  }
  return out;
}
