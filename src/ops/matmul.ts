/**
 * Matrix multiply: `matmul` (batched `a·b`, optionally `a·bᵀ`) and `linear`
 * (Hugging Face `nn.Linear`: `y = x·Wᵀ + bias`, optionally written into a
 * column range of a preallocated output), with their CPU references. The launcher they share
 * (kernel choice, row blocks under the binding limit) is `matmul_launch.ts`.
 *
 * Kernels (`shaders/matmul.wgsl`; `tiled128*`: `shaders/matmul_big.wgsl`), all f32 accumulation
 * on f32 or f16 storage.
 * Speeds: `bench/kernels.ts`, x·wᵀ, median GPU time by timestamp queries, on an
 * NVIDIA H100 through Deno's WebGPU (Vulkan), PyTorch/cuBLAS alongside:
 *
 * | variant | what it is | what it changed | H100, f32 / f16 |
 * | ------- | ---------- | --------------- | --------------- |
 * | `naive` | one thread per output, a plain loop over K | the definition; kept for agreement tests | 512×4096×4096: 0.34 / 0.28 TFLOP/s |
 * | `tiled` v1 (gone) | 64×64 tile per workgroup, 4×4 outputs per thread in an `array<f32, 16>` | each loaded element reused 64× | 0.45 TFLOP/s: the indexed arrays stayed in memory |
 * | `tiled` | same tiles, accumulators in four `vec4` registers, tiles staged as `vec4` rows (16 FMAs per two 16-byte reads) | 30× over v1 | 13.5 / 13.7 TFLOP/s (cuBLAS: 44 f32, 316-368 f16 on tensor cores) |
 * | `tiled128` | 128×128 tile per workgroup of 256 threads, 8×8 outputs per thread in 16 `vec4` registers, A and B staged k-major (XOR-swizzled, no padding: 16 KiB), the next K step loaded into registers during the FMAs | 64 FMAs per four 16-byte reads (`tiled`: 16 per two) | lavapipe 256×256×512: 9.2 / 9.4 GFLOP/s (`tiled` 5.7 / 5.7); H200 x·wᵀ, K = N = 4096, M = 512 / 2048 / 4096: 24.7 / 29.3 / 29.5 TFLOP/s f32, 18.2 / 26.5 / 26.9 f16 (`tiled` 13.7 / 13.3 / 15.4 and 13.5 / 15.3 / 16.2; cuBLAS 45-49 f32, 342-686 f16 on tensor cores) |
 * | `tiled128x64` | same, 128×64 tiles (8×4 per thread; the pipeline constant `WIDE` = 0): twice the workgroups of `tiled128` for mid sizes (512×4096×4096: 256 against 128 on 132 SMs) | lavapipe 256×256×512: 7.0 / 7.0 GFLOP/s; H200 (same shapes): 22.2 / 24.2 / 24.6 f32, 19.6 / 22.6 / 22.9 f16 |
 * | `tiled128split` | `tiled128`'s tiles with K split over 2–8 workgroups a tile (`splitKTuning`), f32 partials added in split order by a second dispatch (`splitk_sum`, which runs the epilogue) | fills the GPU where the tiles alone do not (512×4096×4096: 128 tiles on 132 SMs) | H200 M = 512 (4 splits): 28.9 f32, **25.9** f16 against 28.3 / 19.4 for `tiled128` (2 splits: 29.0 / 26.1; 8: 28.4 / 25.6) |
 * | `gemv`  | M ≤ 8 (`ROWS` rows per workgroup, a pipeline constant): 8 columns × 32 K-lanes per workgroup, coalesced rows of `w`, workgroup-memory tree reduction | memory-bound decode streams the weight once, 512 workgroups for N = 4096 | 1×4096×4096: 1.9 / 1.6 TB/s (the streaming add: 2.7-3.0 TB/s; cuBLAS 1.3 / 0.8-1.0) |
 * | `gemv16` | linear only (`shaders/gemv.wgsl`, ./gemv.ts): 4 columns × 64 lanes per workgroup, 16-byte loads, M ≤ 16 rows in named vec4 accumulators | 8 f16 per load | H200 M = 1: 1×3072×1024 f16 10 µs (`gemv` 16), 1×12288×4096 48 (77); 1×1024×32768 54 (47) |
 * | `gemv16wide` | linear only: the same kernel file, 4–64 lanes per weight row (`gemvTuning.wideLanes`), 256 / lanes rows per workgroup | far fewer, longer workgroups for a large N | H200 LM head 1×1024×151936 f16: 81 µs (`gemv` 179, `gemv16` 125); M = 16: 370 (`tiled` 1230) |
 *
 * Every kernel ends in the same epilogue: `+ bias[n]` and, for {@linkcode linear} with
 * `residual`, `+ residual[m, n]`, rounded once to the storage dtype: the residual add of a
 * transformer block rides along in the projection's dispatch instead of a separate `add`.
 *
 * GEMV time grows with M (x is re-read per row); the skinny kernel (./skinny.ts) takes decode
 * batches of 8–256 rows (bench/skinny.ts). On lavapipe the kernels run at 1-3 GFLOP/s, `tiled`
 * ~1.5-3× `naive`.
 *
 * `variant: "auto"` (the default) picks by shape and device: the rules are in
 * {@linkcode MatmulVariant}'s documentation (./matmul_launch.ts, with `matmulAuto` and
 * `splitKTuning`). One of them:
 * on a CPU rasteriser (lavapipe, llvmpipe, SwiftShader) it picks `naive` for M ≤ 8 instead:
 * there `gemv_t` took ~5 ms per dispatch and kept ~0.9 MB of host memory per dispatch that was
 * never returned (a model's decode on lavapipe grew by ~13 MB per token until the OOM killer
 * stopped it), while `naive` took 0.47 ms and kept none (M = 4, K = 64, N = 192, measured).
 * Every variant handles every size (edges are bounds-checked) and more than
 * 65535 workgroups (a 2-D grid, linearised in the kernel).
 *
 * Buffers larger than the device's `maxStorageBufferBindingSize` (128 MiB on
 * lavapipe): when `a` or the output is too large to bind, the launcher splits
 * the rows of `a` into blocks and binds a window per block. The weight `b`/`w`
 * must fit in one binding; split a larger weight into row chunks and run one
 * {@linkcode linear} per chunk into one output with `out` + `outColumnOffset`.
 *
 * @example Batched product and a linear layer
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { linear, matmul } from "./matmul.ts";
 * const gpu = await getGpu();
 * using a = Tensor.fromArray(gpu, [1, 2, 3, 4, 5, 6], [2, 3]); // a:[M=2, K=3]
 * using b = Tensor.fromArray(gpu, [1, 0, 0, 1, 1, 1], [3, 2]); // b:[K=3, N=2]
 * using c = matmul(a, b); // c:[2, 2]
 * console.log(await c.toArray()); // [4, 5, 10, 11]
 * using w = Tensor.fromArray(gpu, [1, 0, 0, 1, 1, 1], [2, 3]); // w:[N=2, K=3]
 * using y = linear(a, w); // y = a·wᵀ:[2, 2]
 * console.log(await y.toArray()); // [1, 6, 4, 15]
 * ```
 *
 * @module
 */

import { fmtShape, numel, type Tensor } from "../tensor/tensor.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { assertFloat, output, sameDtype } from "./launch.ts";
import { launch, type MatmulVariant } from "./matmul_launch.ts";
import { checkNorm, type RmsNormPrologue } from "./gemv.ts";

export {
  GEMV_MAX_M,
  LARGE_TILES_MIN,
  matmulAuto,
  type MatmulVariant,
  splitKTuning,
} from "./matmul_launch.ts";

/** Options of {@linkcode matmul}. */
export interface MatmulOptions {
  /** `b` is given transposed, as `[B?, N, K]`. Default false. */
  transB?: boolean;
  /** Force a kernel (tests, benchmarks). Default `auto`. */
  variant?: MatmulVariant;
  /**
   * Largest byte range bound per buffer; default and maximum: the device's
   * `maxStorageBufferBindingSize`. Lower it to exercise the row-block split.
   */
  maxBindingBytes?: number;
}

/** Options of {@linkcode linear}. */
export interface LinearOptions {
  /** `bias:[N]`, same dtype as `x`. */
  bias?: Tensor;
  /**
   * Preallocated output `[..., Ntotal]` (leading dims as `x`'s, same dtype);
   * this linear writes columns `outColumnOffset .. outColumnOffset + N - 1`
   * and leaves the others untouched.
   */
  out?: Tensor;
  /** First output column written in `out`. Default 0. Needs `out`. */
  outColumnOffset?: number;
  /**
   * `residual:[..., N]` holding M rows (same dtype): the result is `residual + x·wᵀ (+ bias)`,
   * added in the same dispatch, and has `residual`'s shape (so `linear(a:[B·T, K], w,
   * { residual: x:[B, T, N] })` is `[B, T, N]`). Not with `out`.
   */
  residual?: Tensor;
  /**
   * RMSNorm prologue: the result is `linear(rmsNorm(x, norm.weight, norm.eps), w, ...)`, the
   * norm computed inside the `gemv16` dispatch where that kernel runs (./gemv.ts), else by a
   * separate `rmsNorm` dispatch first (same values).
   */
  norm?: RmsNormPrologue;
  /** Force a kernel (tests, benchmarks). Default `auto`. */
  variant?: MatmulVariant;
  /** See {@linkcode MatmulOptions.maxBindingBytes}. */
  maxBindingBytes?: number;
}

/** Problem geometry after validation (element units). */
interface Geometry {
  /** Batch dims of the output (empty when neither side has any). */
  batchShape: number[];
  batch: number;
  M: number;
  N: number;
  K: number;
  strideA: number;
  strideB: number;
}

/**
 * Validates `a:[..., M, K]` against `b:[..., K, N]` (or `[..., N, K]` with
 * `transB`) and returns the output shape `[..., M, N]`. Batch dims must be
 * equal, or present on one side only (that side's batch is broadcast).
 *
 * @throws {RangeError} Naming both shapes when K differs, a rank is below 2
 * or the batch dims disagree.
 */
export function matmulOutputShape(
  aShape: readonly number[],
  bShape: readonly number[],
  transB = false,
): number[] {
  const g = geometry("matmul", aShape, bShape, transB);
  return [...g.batchShape, g.M, g.N];
}

function geometry(
  op: string,
  aShape: readonly number[],
  bShape: readonly number[],
  transB: boolean,
): Geometry {
  const both = () => `a ${fmtShape(aShape)} and b ${fmtShape(bShape)}${transB ? " (transB)" : ""}`;
  if (aShape.length < 2 || bShape.length < 2) {
    throw new RangeError(`${op}: a and b need rank >= 2, got ${both()}`);
  }
  numel(aShape);
  numel(bShape);
  const [M, K] = aShape.slice(-2);
  const [kb, N] = transB ? [bShape.at(-1)!, bShape.at(-2)!] : bShape.slice(-2);
  if (K !== kb) {
    throw new RangeError(`${op}: inner dimensions differ (K=${K} vs ${kb}) for ${both()}`);
  }
  const ba = aShape.slice(0, -2), bb = bShape.slice(0, -2);
  if (ba.length && bb.length && (ba.length !== bb.length || ba.some((d, i) => d !== bb[i]))) {
    throw new RangeError(
      `${op}: batch dimensions differ for ${both()} (they must be equal, or present on one side only)`,
    );
  }
  const batchShape = ba.length ? ba : bb;
  return {
    batchShape,
    batch: numel(batchShape),
    M,
    N,
    K,
    strideA: ba.length ? M * K : 0,
    strideB: bb.length ? K * N : 0,
  };
}

/**
 * Batched matrix product with f32 accumulation.
 *
 * Shapes: `a:[..., M, K]`, `b:[..., K, N]` (or `b:[..., N, K]` with `transB`)
 * → `[..., M, N]`. Batch dims must be equal, or present on one side only
 * (e.g. `a:[B, M, K]·b:[K, N]`). f32 or f16 storage, the same for both.
 *
 * @param a Left operand `[..., M, K]`.
 * @param b Right operand `[..., K, N]`, or `[..., N, K]` with `opts.transB`.
 * @param opts Transposition and kernel choice.
 * @returns A new tensor `[..., M, N]` of the inputs' dtype.
 * @throws {RangeError} When the shapes do not multiply (naming both).
 * @throws {TypeError} When a dtype is not f32/f16 or the dtypes differ.
 *
 * @example Attention scores q·kᵀ
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { matmul } from "./matmul.ts";
 * const gpu = await getGpu();
 * using q = Tensor.zeros(gpu, [8, 5, 64]); // q:[H, T, D]
 * using k = Tensor.zeros(gpu, [8, 7, 64]); // k:[H, S, D]
 * using s = matmul(q, k, { transB: true }); // s:[H, T, S] = [8, 5, 7]
 * ```
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor<FloatDType> {
  assertFloat(a, "matmul: a");
  assertFloat(b, "matmul: b");
  const dtype = sameDtype("matmul", a, b) as FloatDType;
  const transB = opts.transB ?? false;
  const g = geometry("matmul", a.shape, b.shape, transB);
  const out = output(a.gpu, [...g.batchShape, g.M, g.N], dtype);
  // b shared by every batch: fold the batch into M (one contiguous [B*M, K] · [K, N]).
  const fold = g.strideB === 0 && g.batch > 1;
  launch({
    op: "matmul",
    a,
    b,
    out,
    dtype,
    batch: fold ? 1 : g.batch,
    M: fold ? g.batch * g.M : g.M,
    N: g.N,
    K: g.K,
    strideA: fold ? 0 : g.strideA,
    strideB: g.strideB,
    strideC: g.M * g.N,
    ldc: g.N,
    colOffset: 0,
    transB,
    variant: opts.variant ?? "auto",
    maxBindingBytes: opts.maxBindingBytes,
  });
  return out;
}

/**
 * Hugging Face `nn.Linear`: `y = x·wᵀ (+ bias)`, f32 accumulation; with `opts.residual`,
 * `y = residual + x·wᵀ (+ bias)` in the same dispatch (a transformer block's residual add).
 *
 * Shapes: `x:[..., K]`, `w:[N, K]`, `bias:[N]` → `y:[..., N]`; with
 * `residual:[..., N]` (M rows) → `y` of `residual`'s shape. With
 * `opts.out:[..., Ntotal]` the result goes into columns
 * `outColumnOffset .. outColumnOffset + N - 1` of `out`, so a weight too large
 * for one binding (an LM head `[151936, 4096]`) can run as row chunks
 * `w[r0:r1]` into one output.
 *
 * @param x Input `[..., K]`.
 * @param w Weight `[N, K]` (PyTorch layout).
 * @param opts Bias, residual, preallocated output and column offset, RMSNorm prologue, kernel
 * choice.
 * @returns A new tensor `[..., N]` (`residual`'s shape with a residual), or `opts.out` itself
 * when given (not a new reference: do not dispose it per chunk).
 * @throws {RangeError} When shapes disagree (naming both), the columns do not fit in `out`,
 * `residual` does not hold `[M, N]`, or `residual` comes with `out`.
 * @throws {TypeError} When the dtypes are not one float dtype.
 *
 * @example LM head in two row chunks into one logits tensor
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { linear } from "./matmul.ts";
 * const gpu = await getGpu();
 * using h = Tensor.zeros(gpu, [1, 64]); // h:[T, K]
 * using w0 = Tensor.zeros(gpu, [600, 64]); // rows 0..599 of w:[1000, 64]
 * using w1 = Tensor.zeros(gpu, [400, 64]); // rows 600..999
 * using logits = Tensor.empty(gpu, [1, 1000]); // logits:[T, V]
 * linear(h, w0, { out: logits, outColumnOffset: 0 });
 * linear(h, w1, { out: logits, outColumnOffset: 600 });
 * ```
 *
 * @example Output projection with the residual add in one dispatch
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { linear } from "./matmul.ts";
 * const gpu = await getGpu();
 * using x = Tensor.fromArray(gpu, [1, 1], [1, 1, 2]); // residual stream x:[B=1, T=1, H=2]
 * using a = Tensor.fromArray(gpu, [1, 2, 3], [1, 3]); // attention output a:[B·T, K=3]
 * using wo = Tensor.fromArray(gpu, [1, 0, 0, 0, 1, 1], [2, 3]); // wo:[H, K]
 * using x1 = linear(a, wo, { residual: x }); // x1 = x + a·woᵀ:[1, 1, 2]
 * console.log(await x1.toArray()); // [2, 6]
 * ```
 */
export function linear(x: Tensor, w: Tensor, opts: LinearOptions = {}): Tensor<FloatDType> {
  assertFloat(x, "linear: x");
  assertFloat(w, "linear: w");
  const { bias, out: given, residual, norm } = opts;
  const dtype = sameDtype(
    "linear",
    ...[x, w, bias, given, residual].filter((t) => t !== undefined),
  ) as FloatDType;
  const both = () => `x ${fmtShape(x.shape)} and w ${fmtShape(w.shape)}`;
  if (x.rank < 1 || w.rank !== 2) {
    throw new RangeError(`linear: expected x:[..., K] and w:[N, K], got ${both()}`);
  }
  const K = x.shape[x.rank - 1];
  const [N, kw] = w.shape;
  if (K !== kw) {
    throw new RangeError(`linear: inner dimensions differ (K=${K} vs ${kw}) for ${both()}`);
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== N)) {
    throw new RangeError(
      `linear: bias must be [${N}] for w ${fmtShape(w.shape)}, got ${fmtShape(bias.shape)}`,
    );
  }
  checkNorm("linear", norm, K);
  const lead = x.shape.slice(0, -1);
  const M = numel(lead);
  const col = opts.outColumnOffset ?? 0;
  let out: Tensor;
  if (residual) {
    const rows = numel(residual.shape.slice(0, -1));
    if (residual.rank < 1 || residual.shape[residual.rank - 1] !== N || rows !== M) {
      throw new RangeError(
        `linear: residual must be [..., ${N}] with ${M} rows for x ${fmtShape(x.shape)} · w ${
          fmtShape(w.shape)
        }ᵀ, got ${fmtShape(residual.shape)}`,
      );
    }
    if (given) {
      throw new RangeError(
        `linear: opts.residual ${fmtShape(residual.shape)} cannot be combined with opts.out ${
          fmtShape(given.shape)
        }; add the residual into a fresh output (leave out unset)`,
      );
    }
    if (col !== 0) throw new RangeError(`linear: outColumnOffset ${col} needs opts.out`);
    out = output(x.gpu, residual.shape, dtype);
  } else if (given) {
    const ntotal = given.shape[given.rank - 1];
    const okLead = given.rank === x.rank && lead.every((d, i) => d === given.shape[i]);
    if (!okLead || !Number.isInteger(col) || col < 0 || col + N > ntotal) {
      throw new RangeError(
        `linear: out ${fmtShape(given.shape)} cannot take columns ${col}..${col + N - 1} of ` +
          `x ${fmtShape(x.shape)} · w ${fmtShape(w.shape)}ᵀ (expected [${
            [...lead, `>= ${col + N}`].join(", ")
          }])`,
      );
    }
    out = given;
  } else {
    if (col !== 0) throw new RangeError(`linear: outColumnOffset ${col} needs opts.out`);
    out = output(x.gpu, [...lead, N], dtype);
  }
  launch({
    op: "linear",
    a: x,
    b: w,
    bias,
    residual,
    norm,
    out,
    dtype,
    batch: 1,
    M,
    N,
    K,
    strideA: 0,
    strideB: 0,
    strideC: 0,
    ldc: out.shape[out.rank - 1],
    colOffset: col,
    transB: true,
    variant: opts.variant ?? "auto",
    maxBindingBytes: opts.maxBindingBytes,
  });
  return out as Tensor<FloatDType>;
}

/**
 * CPU reference for {@linkcode matmul}: plain loops, f64 accumulation.
 *
 * @param a Data of `a:[..., M, K]` (row-major).
 * @param aShape Shape of `a`.
 * @param b Data of `b:[..., K, N]` (or `[..., N, K]` with `transB`).
 * @param bShape Shape of `b`.
 * @param opts `transB` as for {@linkcode matmul}.
 * @returns `[..., M, N]` row-major, rounded to f32.
 */
export function matmulReference(
  a: ArrayLike<number>,
  aShape: readonly number[],
  b: ArrayLike<number>,
  bShape: readonly number[],
  opts: { transB?: boolean } = {},
): Float32Array {
  const transB = opts.transB ?? false;
  const g = geometry("matmulReference", aShape, bShape, transB);
  const { M, N, K } = g;
  const out = new Float32Array(g.batch * M * N);
  for (let bt = 0; bt < g.batch; bt++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0; k < K; k++) {
          const bi = bt * g.strideB + (transB ? n * K + k : k * N + n);
          acc += a[bt * g.strideA + m * K + k] * b[bi];
        }
        out[(bt * M + m) * N + n] = acc;
      }
    }
  }
  return out;
}

/**
 * CPU reference for {@linkcode linear}: `y = x·wᵀ (+ bias) (+ residual)`, f64 accumulation.
 *
 * @param x Data of `x:[..., K]`.
 * @param xShape Shape of `x`.
 * @param w Data of `w:[N, K]`.
 * @param wShape Shape of `w`.
 * @param bias Data of `bias:[N]`, optional.
 * @param residual Data of `residual:[M, N]`, optional.
 * @returns `y:[..., N]` row-major, rounded to f32.
 */
export function linearReference(
  x: ArrayLike<number>,
  xShape: readonly number[],
  w: ArrayLike<number>,
  wShape: readonly number[],
  bias?: ArrayLike<number>,
  residual?: ArrayLike<number>,
): Float32Array {
  const K = xShape[xShape.length - 1];
  const M = numel(xShape.slice(0, -1));
  const g = geometry("linearReference", [M, K], wShape, true);
  const N = g.N;
  if (residual && residual.length !== M * N) {
    throw new RangeError(
      `linearReference: residual has ${residual.length} elements, expected M·N = ${M * N}`,
    );
  }
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = (bias ? bias[n] : 0) + (residual ? residual[m * N + n] : 0);
      for (let k = 0; k < K; k++) acc += x[m * K + k] * w[n * K + k];
      y[m * N + n] = acc;
    }
  }
  return y;
}
