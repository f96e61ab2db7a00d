/**
 * Skinny matmul for a decode batch: `y = x·wᵀ` for a few to ~100 rows of `x` (Hugging Face
 * `nn.Linear` layout; parallel chains decode 16–128 sequences a step), f32 accumulation on f32
 * or f16 storage, and its CPU reference. {@linkcode dispatchSkinny} is the launcher `linear`
 * (variant `skinny`: bias, residual, output columns), `linearQkv` and `linearSwiglu` share;
 * {@linkcode skinny} is the plain `x·wᵀ` over it.
 *
 * Kernels (`shaders/skinny.wgsl`): a workgroup of {@linkcode skinnyTuning}`.wg` threads takes a
 * block of up to {@linkcode SKINNY_BLOCK_M} rows (the grid's y dimension) and `wg / lanes` slots
 * of 4 output columns, `lanes` threads a slot splitting its 16-byte words; each chunk of x
 * (`lanes` words of every row) is converted to f32 once into workgroup memory, every weight word
 * is unpacked once for the block's rows, and every staged x value feeds the slot's 4 columns.
 * `gemv16` (./gemv.ts) instead converts x's f16 words for every weight word it reads, 16
 * conversions a weight element at M = 16, and that sets its time there. Entries: `skinny` (bias, residual), `skinny_swiglu`
 * (`silu(x·gateᵀ + bg) ⊙ (x·upᵀ + bu)`), `skinny_qkv` / `skinny_qkv_bias` (the rows of
 * `[wq; wk; wv]` as if concatenated, three outputs). K must be a whole number of words:
 * {@linkcode skinnyApplies}.
 *
 * @example y = x·wᵀ for 20 rows
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { randomTensor } from "../tensor/random.ts";
 * import { skinny } from "./skinny.ts";
 * const gpu = await getGpu();
 * using x = randomTensor(gpu, [20, 64], { seed: 1 }); // x:[M=20, K=64]
 * using w = randomTensor(gpu, [48, 64], { seed: 2 }); // w:[N=48, K=64]
 * using y = skinny(x, w); // y:[20, 48]
 * console.log(y.shape); // [20, 48]
 * ```
 *
 * @module
 */

import type { Binding, Gpu } from "../gpu/device.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import { assertFloat, output, sameDtype } from "./launch.ts";
import type { Gemv16Dispatch } from "./gemv.ts";

/** Rows of x a workgroup of `skinny` takes (its named accumulators); more rows run in blocks. */
export const SKINNY_BLOCK_M = 16;

/**
 * Fewest rows for which `linear`, `linearQkv` and `linearSwiglu` take the skinny kernels on a
 * GPU (below, `gemv16`). H200, f16 (`bench/skinny.ts`, 2026-12-04, one lease): q/k/v 1024×4096
 * `gemv16` 10.1 / 12.7 / 16.1 / 22.1 µs at M = 1 / 2 / 4 / 8 against 12.8 / 13.4 / 14.3 / 14.4;
 * gate 17.3 / 22.1 / 29.7 / 49.8 against 24.3 / 27.9 / 30.7 / 33.9; down 3072×1024 (N / 4 = 256
 * slots: too few threads at small M) 13.7 / 16.5 / 19.5 / 31.4 against 25.6 / 27.1 / 39.0 / 38.9,
 * a tie at M = 16 (41.4 / 41.7). So `linear` takes it from M = 8 where N ≥
 * {@linkcode SKINNY_NARROW_N}, from M = 16 below.
 */
export const SKINNY_MIN_M = 8;

/** Narrowest N (output columns) for which `linear` takes `skinny` at M < 16 (see {@linkcode SKINNY_MIN_M}). */
export const SKINNY_NARROW_N = 2048;

/**
 * Most rows for which `linear`, `linearQkv` and `linearSwiglu` take the skinny kernels on a GPU:
 * at M = 256 (H200, f16) q/k/v took 108 µs against 239 for `tiled` and down 83 against 650;
 * larger M is unmeasured (`tiled128` takes products of ≥ 128 tiles of 128×128).
 */
export const SKINNY_MAX_M = 256;

/**
 * Most rows for which `linear` takes `skinny` for N > `GEMV16_AUTO_MAX_N` (the LM head, whose
 * weights each block of 16 rows reads again from memory): 151936×1024 f16 on the H200 took 159 /
 * 246 / 477 / 933 µs at M = 8 / 16 / 32 / 64 against 197 / 370 / 743 / 1482 for `gemv16wide`
 * and ~1230–1295 for `tiled`.
 */
export const SKINNY_WIDE_MAX_M = 64;

/** Storage buffers the `skinny_qkv_bias` entry binds (x, 3 weights, 3 biases, 3 outputs). */
export const SKINNY_QKV_BIAS_BINDINGS = 10;

/** Whether {@linkcode skinny} takes `x:[M, K]` in `dtype` (M ≥ 1, K a whole number of 16-byte words). */
export function skinnyApplies(M: number, K: number, dtype: FloatDType): boolean {
  return M >= 1 && K > 0 && K % (dtype === "f16" ? 8 : 4) === 0;
}

/**
 * Shape of the `skinny` workgroups, a switch benchmarks sweep: `wg` threads (64 or 128), `lanes`
 * threads a slot of 4 weight rows (4, 8, 16 or 32, at most `wg / 4`: a thread stages at most 4
 * words of x a chunk); `wg / lanes · 4` columns a workgroup (the SwiGLU entry needs 2 slots).
 * Unset (the default), {@linkcode skinnyShapeFor} picks them from M and N.
 *
 * @example Eight lanes a slot in workgroups of 64
 * ```ts
 * import { skinnyTuning } from "./skinny.ts";
 * skinnyTuning.wg = 64;
 * skinnyTuning.lanes = 8;
 * ```
 */
export const skinnyTuning: { wg?: number; lanes?: number } = {};

/**
 * Threads a workgroup and lanes a slot for M rows and N columns unless {@linkcode skinnyTuning}
 * sets them: the fewest lanes (8 to 32) that make at least {@linkcode SKINNY_THREADS} threads
 * over the slots and row blocks, in workgroups of 64 (128 for 32 lanes). From the H200 sweep
 * (`bench/skinny.ts --skinny ...`, f16, 2026-12-04; µs, best shape): q/k/v 1024×4096 at M = 16 /
 * 32 / 64 / 128 16.3 / 22.8 / 37.2 / 58.8 (`gemv16` 46.7 / 93.1 / 186 / 371); gate 1024×3072
 * 16.0 / 19.5 / 28.4 / 46.9; down 3072×1024 21.2 / 21.3 / 27.9 / 46.3 (`gemv16` 20.8 / 41.2 / 82.1
 * / 164). This rule picks the best shape or one within 10% at all but gate M = 32 (22.5 vs 19.5).
 * Fewer lanes mean shorter chunks of K between two barriers; 4 lanes was the slowest shape at every
 * size (the chunk is 32 elements).
 *
 * @param M Rows of x.
 * @param N Output columns.
 * @returns `{ wg, lanes }`.
 */
export function skinnyShapeFor(M: number, N: number): { wg: number; lanes: number } {
  const slots = Math.ceil(N / 4) * Math.ceil(M / SKINNY_BLOCK_M);
  let lanes = 8;
  while (lanes < 32 && slots * lanes < SKINNY_THREADS) lanes *= 2;
  return {
    wg: skinnyTuning.wg ?? (lanes === 32 ? 128 : 64),
    lanes: skinnyTuning.lanes ?? lanes,
  };
}

/** Threads {@linkcode skinnyShapeFor} aims at over the whole product (about 93 an SM of an H200). */
export const SKINNY_THREADS = 12288;

/**
 * One dispatch of `shaders/skinny.wgsl` over bound windows (element offsets inside them): the
 * fields of `gemv16`'s dispatch ({@linkcode Gemv16Dispatch}: x, the weights, biases, residual and
 * outputs) but the norms, with M any number of rows (blocks of 16 on the grid's y dimension).
 */
export interface SkinnyDispatch extends Omit<Gemv16Dispatch, "entry" | "norm" | "normOut"> {
  /** Kernel: `skinny` (`res + x·wᵀ + bias`), `skinny_swiglu` or `skinny_qkv(_bias)`. */
  entry: "skinny" | "skinny_swiglu" | "skinny_qkv" | "skinny_qkv_bias";
}

/**
 * Encodes one dispatch of `shaders/skinny.wgsl`. Shapes are the caller's to validate; unused
 * optional bindings are filled with `w`.
 *
 * @throws {RangeError} For a {@linkcode skinnyTuning} the kernel does not take, or workgroup
 *   arrays over the device's `maxComputeWorkgroupStorageSize`.
 */
export function dispatchSkinny(gpu: Gpu, d: SkinnyDispatch): void {
  const EPV = d.dtype === "f16" ? 8 : 4;
  const { wg: WG, lanes: KL } = skinnyShapeFor(
    d.M,
    d.entry === "skinny_qkv" || d.entry === "skinny_qkv_bias"
      ? d.N + (d.N2 ?? 0) + (d.N3 ?? 0)
      : d.entry === "skinny_swiglu"
      ? 2 * d.N
      : d.N,
  );
  if (![64, 128].includes(WG) || ![4, 8, 16, 32].includes(KL) || KL > WG / 4) {
    throw new RangeError(
      `skinny: skinnyTuning needs wg 64 or 128 and lanes 4, 8, 16 or 32 (at most wg / 4), got ` +
        `wg ${WG} and lanes ${KL}`,
    );
  }
  const blocks = Math.ceil(d.M / SKINNY_BLOCK_M);
  const MT = Math.ceil(d.M / blocks);
  const SPT = Math.ceil((MT * KL) / WG);
  const XF = Math.max(MT * (EPV === 8 ? 2 : 1) * KL, MT * WG);
  const limit = gpu.limits.maxComputeWorkgroupStorageSize;
  if (XF * 16 > limit) {
    throw new RangeError(
      `skinny: ${XF * 16} bytes of workgroup memory for ${MT} rows a block, ${KL} lanes and ` +
        `${WG} threads exceed this device's maxComputeWorkgroupStorageSize (${limit})`,
    );
  }
  const k = gpu.kernel({
    shader: "skinny",
    entry: d.entry,
    defines: { T: d.dtype },
    constants: { EPV, MT, WG, KL, SPT, XF },
  });
  const N2 = d.N2 ?? 0, N3 = d.N3 ?? 0;
  const cols = (WG / KL) * 4;
  const ws = [d.x, d.w, d.w2 ?? d.w, d.w3 ?? d.w];
  let buffers: Binding[], groups: number;
  switch (d.entry) {
    case "skinny":
      buffers = [...ws, d.bias ?? d.w, d.res ?? d.w, d.y];
      groups = Math.ceil(d.N / cols);
      break;
    case "skinny_swiglu":
      buffers = [...ws, d.bias ?? d.w, d.bias2 ?? d.w, d.y];
      groups = Math.ceil(d.N / (cols / 2));
      break;
    case "skinny_qkv":
      buffers = [...ws, d.y, d.y2 ?? d.y, d.y3 ?? d.y];
      groups = Math.ceil((d.N + N2 + N3) / cols);
      break;
    case "skinny_qkv_bias":
      buffers = [
        ...ws,
        d.bias ?? d.w,
        d.bias2 ?? d.w,
        d.bias3 ?? d.w,
        d.y,
        d.y2 ?? d.y,
        d.y3 ?? d.y,
      ];
      groups = Math.ceil((d.N + N2 + N3) / cols);
  }
  if (groups > gpu.limits.maxComputeWorkgroupsPerDimension) {
    throw new RangeError(
      `skinny: ${groups} workgroups of ${cols} columns exceed this device's ` +
        `maxComputeWorkgroupsPerDimension (${gpu.limits.maxComputeWorkgroupsPerDimension})`,
    );
  }
  gpu.dispatch(k, buffers, [groups, blocks, 1], {
    m: d.M,
    n: d.N,
    kw: d.K / EPV,
    offX: d.offX / EPV,
    offY: d.offY,
    ldy: d.ldy,
    offR: d.offR,
    hasBias: d.bias ? 1 : 0,
    hasRes: d.res && d.entry === "skinny" ? 1 : 0,
    hasBias2: d.bias2 ? 1 : 0,
    hasBias3: d.bias3 ? 1 : 0,
    n2: N2,
    n3: N3,
  });
}

/**
 * `y = x·wᵀ` through the `skinny` kernel.
 *
 * @param x `[M, K]`, M ≥ 1.
 * @param w `[N, K]`, same dtype.
 * @returns `[M, N]` in the dtype of `x`.
 * @throws {TypeError} For non-float or mixed dtypes.
 * @throws {RangeError} For ranks or shapes that do not match, M = 0, or K not a multiple of 8
 *   (f16) / 4 (f32).
 */
export function skinny<D extends FloatDType>(x: Tensor<D>, w: Tensor<D>): Tensor<D> {
  assertFloat(x, "skinny x");
  assertFloat(w, "skinny w");
  const dtype = sameDtype("skinny", x, w) as D;
  if (x.rank !== 2 || w.rank !== 2 || x.shape[1] !== w.shape[1]) {
    throw new RangeError(
      `skinny: expected x:[M, K] and w:[N, K], got x${fmtShape(x.shape)} and w${fmtShape(w.shape)}`,
    );
  }
  const [M, K] = x.shape, N = w.shape[0];
  if (!skinnyApplies(M, K, dtype)) {
    throw new RangeError(
      `skinny: x${fmtShape(x.shape)} ${dtype}: needs M >= 1 and K a multiple of ` +
        `${dtype === "f16" ? 8 : 4}`,
    );
  }
  const y = output(x.gpu, [M, N], dtype);
  dispatchSkinny(x.gpu, {
    entry: "skinny",
    dtype,
    M,
    N,
    K,
    x: x.buffer,
    offX: 0,
    w: w.buffer,
    offR: 0,
    y: y.buffer,
    offY: 0,
    ldy: N,
  });
  return y;
}

/**
 * CPU reference of {@linkcode skinny}, the readable twin of `shaders/skinny.wgsl`'s loop:
 * `y[m, n] = Σ_k x[m, k]·w[n, k]`, summed in f64 chunk by chunk as the kernel walks K (the
 * order does not change an f64 sum of these sizes beyond rounding).
 *
 * @param x `[M, K]` flat.
 * @param w `[N, K]` flat.
 * @returns `[M, N]`.
 */
export function skinnyReference(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  M: number,
  K: number,
  N: number,
): Float64Array {
  const y = new Float64Array(M * N);
  for (let n = 0; n < N; n++) {
    for (let m = 0; m < M; m++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      y[m * N + n] = s;
    }
  }
  return y;
}
