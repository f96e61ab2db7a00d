/**
 * RMSNorm over the last dimension with Hugging Face Llama/Qwen3 semantics:
 * `out = w * x * rsqrt(mean(x²) + eps)`, computed in f32.
 *
 * The same op serves Qwen3's per-head `q_norm`/`k_norm`: view the projection
 * `[..., heads * headDim]` as `[..., heads, headDim]` (a free `reshape`) and
 * pass the `[headDim]` gain; every head is then its own row.
 *
 * Kernels (`shaders/rmsnorm.wgsl`):
 * - `rmsnorm`: one workgroup per row; each thread accumulates squares over a
 *   strided slice, a workgroup tree reduction forms the sum, then the row is
 *   scaled. Any `D` (threads past the end add 0). The workgroup size is the
 *   smallest power of two in 32..256 that covers `D`, so a `headDim` 128 norm
 *   does not idle half a 256-thread workgroup. Reads x twice (the second read
 *   usually hits cache); no faster variant yet.
 *
 * Precision: f32 accumulation (the CPU reference accumulates in f64). With f16
 * storage the f32 result is rounded once to f16, whereas HF rounds
 * `x * rsqrt(...)` to the input dtype before multiplying by the weight: the
 * two differ by at most about one f16 ulp of the output.
 *
 * @example Qwen3 q_norm on q:[B, T, H*D]
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { rmsNorm } from "./rmsnorm.ts";
 * const gpu = await getGpu();
 * const [B, T, H, D] = [1, 3, 2, 4];
 * using q = Tensor.fromArray(gpu, new Float32Array(B * T * H * D).fill(2), [B, T, H * D]);
 * using w = Tensor.fromArray(gpu, [1, 1, 0.5, 2], [D]);
 * using heads = q.reshape([B, T, H, D]);
 * using qn = rmsNorm(heads, w, 1e-6); // qn:[B, T, H, D]
 * console.log((await qn.toArray()).slice(0, 4)); // ≈ [1, 1, 0.5, 2]
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { assertFloat, output } from "./launch.ts";

/** Workgroup size for rows of length `d`: the smallest power of two in 32..256 that covers it. */
function workgroupSize(d: number): number {
  let wg = 32;
  while (wg < d && wg < 256) wg *= 2;
  return wg;
}

/**
 * RMSNorm over the last dimension: `gain * x * rsqrt(mean(x²) + eps)`.
 *
 * @param x `[..., D]`, f32 or f16. View `[..., heads, headDim]` for per-head norms.
 * @param gain `[D]`, f32 or f16 (may differ from x's dtype).
 * @param eps Added to the mean square (`rms_norm_eps`, e.g. 1e-6); finite, >= 0.
 * @returns A new tensor `[..., D]` of x's dtype.
 * @throws {TypeError} When x or gain is not a float tensor.
 * @throws {RangeError} When x is a scalar, gain is not `[D]`, or eps is invalid.
 */
export function rmsNorm(x: Tensor, gain: Tensor, eps: number): Tensor<FloatDType> {
  assertFloat(x, "rmsNorm() x");
  assertFloat(gain, "rmsNorm() gain");
  if (x.rank < 1) {
    throw new RangeError(`rmsNorm() x: expected shape [..., D], got ${fmtShape(x.shape)}`);
  }
  const d = x.shape[x.rank - 1];
  if (gain.rank !== 1 || gain.shape[0] !== d) {
    throw new RangeError(
      `rmsNorm() gain: expected shape [${d}] to match x ${fmtShape(x.shape)}, got ${
        fmtShape(gain.shape)
      }`,
    );
  }
  if (!(Number.isFinite(eps) && eps >= 0)) {
    throw new RangeError(`rmsNorm() eps: expected a finite number >= 0, got ${eps}`);
  }
  const gpu = x.gpu;
  const out = output(gpu, x.shape, x.dtype);
  if (x.size === 0) return out;
  const rows = x.size / d;
  const wg = workgroupSize(d);
  const k = gpu.kernel({
    shader: "rmsnorm",
    entry: "rmsnorm",
    defines: { T: x.dtype, G: gain.dtype },
    constants: { WG: wg },
  });
  gpu.dispatch(
    k,
    [x.buffer, gain.buffer, out.buffer],
    Gpu.grid(rows),
    { rows, d, eps },
  );
  return out;
}

/**
 * CPU reference for {@linkcode rmsNorm}: plain loops with f64 accumulation.
 *
 * @param x Row-major `[rows, D]` data (`rows = x.length / D`).
 * @param gain `[D]`.
 * @param eps Added to the mean square.
 * @returns `[rows, D]` as f32.
 */
export function rmsNormReference(
  x: ArrayLike<number>,
  gain: ArrayLike<number>,
  eps: number,
): Float32Array {
  const d = gain.length;
  if (d === 0 ? x.length !== 0 : x.length % d !== 0) {
    throw new RangeError(`rmsNormReference(): ${x.length} values are not rows of ${d}`);
  }
  const out = new Float32Array(x.length);
  for (let base = 0; base < x.length; base += d) {
    let ss = 0;
    for (let i = 0; i < d; i++) ss += x[base + i] * x[base + i];
    const r = 1 / Math.sqrt(ss / d + eps);
    for (let i = 0; i < d; i++) out[base + i] = gain[i] * (x[base + i] * r);
  }
  return out;
}
