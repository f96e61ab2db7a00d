/**
 * Decode-time GEMV with 16-byte loads: `y = x·wᵀ` for M ≤ 8 rows of `x` (Hugging Face
 * `nn.Linear` layout, no bias), f32 accumulation on f32 or f16 storage, and its CPU reference.
 *
 * Kernels (`shaders/gemv.wgsl`):
 * - `gemv16`: 4 output columns per workgroup of 256 threads, 64 lanes per weight row, each
 *   load a `vec4<u32>` word (8 f16 or 4 f32), two words in flight per lane and step, x read as
 *   words too (shared by every column, so it stays in cache), tree reduction over the lanes.
 *   Needs K to be a whole number of words (K % 8 = 0 in f16, K % 4 = 0 in f32):
 *   {@linkcode gemvApplies}. No split-K: N / 4 workgroups (≥ 256 for the model's N ≥ 1024)
 *   already cover the GPU. The readable baseline is `linear(..., { variant: "naive" })` in
 *   ./matmul.ts; the current decode path is matmul's `gemv` (4-element loads);
 *   `bench/kernels.ts` times all three at the model's shapes. On lavapipe (`--quick`, one
 *   run) `gemv16` vs matmul's `gemv`: M = 4 256×768 1.9× faster (f32 and f16), M = 1 768→256
 *   1.2–1.3× faster, M = 1 256→512 1.1–1.3× slower; mixed, so `linear` does not route to it
 *   yet: that waits for the H200 numbers (bench/h200.sh, section kernels).
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

import { Gpu } from "../gpu/device.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import { assertFloat, output, sameDtype } from "./launch.ts";

/** Most rows of `x` {@linkcode gemv} takes. */
export const GEMV16_MAX_M = 8;

/** Whether {@linkcode gemv} takes `x:[M, K]` in `dtype` (M ≤ 8, K a whole number of 16-byte words). */
export function gemvApplies(M: number, K: number, dtype: FloatDType): boolean {
  return M >= 1 && M <= GEMV16_MAX_M && K > 0 && K % (dtype === "f16" ? 8 : 4) === 0;
}

/**
 * `y = x·wᵀ` through the `gemv16` kernel.
 *
 * @param x `[M, K]`, M ≤ 8.
 * @param w `[N, K]`, same dtype.
 * @returns `[M, N]` in the dtype of `x`.
 * @throws {TypeError} For non-float or mixed dtypes.
 * @throws {RangeError} For ranks or shapes that do not match, or K not a multiple of 8 (f16) / 4 (f32).
 */
export function gemv<D extends FloatDType>(x: Tensor<D>, w: Tensor<D>): Tensor<D> {
  assertFloat(x, "gemv x");
  assertFloat(w, "gemv w");
  const dtype = sameDtype("gemv", x, w) as D;
  if (x.rank !== 2 || w.rank !== 2 || x.shape[1] !== w.shape[1]) {
    throw new RangeError(
      `gemv: expected x:[M, K] and w:[N, K], got x${fmtShape(x.shape)} and w${fmtShape(w.shape)}`,
    );
  }
  const [M, K] = x.shape, N = w.shape[0];
  if (!gemvApplies(M, K, dtype)) {
    throw new RangeError(
      `gemv: x${fmtShape(x.shape)} ${dtype}: needs 1 <= M <= ${GEMV16_MAX_M} and K a multiple ` +
        `of ${dtype === "f16" ? 8 : 4}`,
    );
  }
  const gpu = x.gpu, EPV = dtype === "f16" ? 8 : 4;
  const y = output(gpu, [M, N], dtype);
  const k = gpu.kernel({
    shader: "gemv",
    entry: "gemv16",
    defines: { T: dtype },
    constants: { EPV, MR: M },
  });
  gpu.dispatch(k, [x.buffer, w.buffer, y.buffer], Gpu.grid(Math.ceil(N / 4)), {
    m: M,
    n: N,
    kw: K / EPV,
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
