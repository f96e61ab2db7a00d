/**
 * The launcher of `matmul.ts`: {@linkcode launch} dispatches one matmul or linear whose shapes
 * the caller has validated. It picks the kernel variant for `auto` ({@linkcode GEMV_MAX_M},
 * `gemv16` for one row, and the CPU-rasteriser rule) and splits the rows of `a` and the output into blocks whose bound
 * windows fit the device's `maxStorageBufferBindingSize`. The variants, what each changed and
 * their speeds are in the header of `matmul.ts`, beside the CPU references; the kernels are in
 * `shaders/matmul.wgsl` and (`tiled128`, `tiled128x64`) `shaders/matmul_big.wgsl`.
 *
 * @module
 */

import { type Binding, Gpu } from "../gpu/device.ts";
import { bytesPer, type FloatDType } from "../tensor/dtype.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import {
  dispatchGemv16,
  GEMV16_AUTO_MAX_N,
  GEMV16_MAX_M,
  gemvApplies,
  normFusable,
  type RmsNormPrologue,
} from "./gemv.ts";
import { rmsNorm } from "./rmsnorm.ts";
import {
  dispatchSkinny,
  SKINNY_MAX_M,
  SKINNY_MIN_M,
  SKINNY_NARROW_N,
  SKINNY_WIDE_MAX_M,
} from "./skinny.ts";

/**
 * Kernel choice. `auto` picks, on a GPU, for a linear (`x·wᵀ`, no batch dims) whose K is a whole
 * number of 16-byte words: `skinny` (./skinny.ts, blocks of 16 rows) for
 * {@linkcode SKINNY_MIN_M} ≤ M ≤ {@linkcode SKINNY_MAX_M} (from M = 16 when N <
 * {@linkcode SKINNY_NARROW_N}; up to {@linkcode SKINNY_WIDE_MAX_M} when N > `GEMV16_AUTO_MAX_N`,
 * the LM head); below that `gemv16` for N ≤ `GEMV16_AUTO_MAX_N` and `gemv16wide` (256 /
 * `gemvTuning.wideLanes` weight rows a workgroup) above, unless {@linkcode matmulAuto}`.wideGemv`
 * is off (then `gemv`). Other products with M ≤ {@linkcode GEMV_MAX_M} take `gemv` (`naive` on a
 * CPU adapter); larger ones `naive` on an OpenGL CPU adapter up to {@linkcode GL_NAIVE_MAX_MACS}
 * multiply-adds, else `tiled` — or, on a GPU, when the product has at least
 * {@linkcode LARGE_TILES_MIN} tiles of 128×128 (M, N ≥ 128), the kernel {@linkcode matmulAuto}
 * names: `tiled128` by default (`tiled128split` where too few tiles fill the GPU: see
 * {@linkcode matmulAuto}`.splitK`). `tiled128` / `tiled128x64` (`shaders/matmul_big.wgsl`):
 * 128×128 / 128×64 tiles; `tiled128split`: 128×128 tiles with K split over several workgroups
 * (f32 partials, then a second dispatch adds them in split order). `gemv16`
 * (`shaders/gemv.wgsl`, linear only: K a multiple of 8 in f16, 4 in f32)
 * runs in blocks of ≤ 16 rows and is the only kernel that fuses an RMSNorm prologue (`norm`):
 * the others run the `rmsNorm` op first.
 */
export type MatmulVariant =
  | "auto"
  | "naive"
  | "tiled"
  | "tiled128"
  | "tiled128x64"
  | "tiled128split"
  | "gemv"
  | "gemv16"
  | "gemv16wide"
  | "skinny";

/**
 * Switches of the `auto` route; tests and benchmarks may set them. `wideGemv`: on a GPU, a
 * linear with M ≤ {@linkcode GEMV_MAX_M} and N > `GEMV16_AUTO_MAX_N` (the LM head) takes
 * `gemv16wide` (default; false: `gemv`, the route before it). `largeTiles`: the kernel
 * `auto` takes instead of `tiled` on a GPU (not a CPU adapter) for a product of at least
 * {@linkcode LARGE_TILES_MIN} tiles of 128×128. `splitK` (default on): with `tiled128`, a
 * product of at most half {@linkcode splitKTuning}`.workgroups` such tiles and K of at least
 * two splits takes `tiled128split` (H200, 512×4096×4096, 2026-12-04: 25.9 against 19.4 TFLOP/s
 * f16 and 28.9 against 28.3 f32; 2 / 4 / 8 splits: 26.1 / 25.9 / 25.6 f16).
 * Default `tiled128`: on the H200 (bench/kernels.ts
 * `--gemm`, x·wᵀ, K = N = 4096) it ran 24.7 / 29.3 / 29.5 TFLOP/s f32 at M = 512 / 2048 / 4096
 * against 13.7 / 13.3 / 15.4 for `tiled`, and 18.2 / 26.5 / 26.9 f16 against 13.5 / 15.3 / 16.2
 * (`tiled128x64`: 22.2 / 24.2 / 24.6 f32, 19.6 / 22.6 / 22.9 f16).
 *
 * @example Back to the 64×64 tiles everywhere
 * ```ts
 * import { matmulAuto } from "./matmul_launch.ts";
 * matmulAuto.largeTiles = "tiled";
 * ```
 */
export const matmulAuto: {
  largeTiles: "tiled" | "tiled128" | "tiled128x64";
  wideGemv: boolean;
  splitK: boolean;
} = {
  largeTiles: "tiled128",
  wideGemv: true,
  splitK: true,
};

/**
 * Fewest 128×128 output tiles (over the batch) for which `auto` takes
 * {@linkcode matmulAuto}`.largeTiles`: 512×4096 (128 tiles, about one per SM of an H200) is the
 * smallest product measured, where `tiled128` was already 1.8× `tiled` in f32; with fewer tiles
 * `tiled`'s 4× more workgroups may matter more (not measured).
 */
export const LARGE_TILES_MIN = 128;

/** Largest M (rows of `a` per batch) for which `auto` picks the GEMV kernel. */
export const GEMV_MAX_M = 8;

/**
 * Largest product (M·N·K multiply-adds per batch) that `auto` runs as `naive` instead of `tiled`
 * on a CPU driver reached through OpenGL (`gpu.adapter.cpuGl`). llvmpipe GL compiles a kernel at
 * its first dispatch; `tiled` (two workgroup barriers, 256 threads) took 2.7-5 s there with an
 * empty shader cache, `naive` 0.03-0.08 s. `naive` runs slower: at 256×1024×1024 (2^28) 0.5 s
 * against 0.12 s a call, 1.4 ns more per multiply-add, so at 2^24 it loses ~25 ms a call, and a
 * run needs well over a hundred such calls before the compile of `tiled` pays; the demo's
 * products (240×64×192) are 2^21-2^22. Larger products keep `tiled`, whose compile the work
 * amortises.
 */
export const GL_NAIVE_MAX_MACS = 2 ** 24;

/** Everything one launch needs (element units). */
export interface Launch {
  op: string;
  a: Tensor;
  b: Tensor;
  bias?: Tensor;
  /** `res:[M, N]` added in the epilogue (batch 1 only). */
  residual?: Tensor;
  /**
   * RMSNorm of `a` before the product (linear only): fused into `gemv16`, else a separate
   * `rmsNorm` dispatch first.
   */
  norm?: RmsNormPrologue;
  out: Tensor;
  dtype: FloatDType;
  batch: number;
  M: number;
  N: number;
  K: number;
  strideA: number;
  strideB: number;
  strideC: number;
  ldc: number;
  colOffset: number;
  transB: boolean;
  variant: MatmulVariant;
  maxBindingBytes?: number;
}

const ALIGN = 256; // minStorageBufferOffsetAlignment upper bound in WebGPU

/** A window `[start, end)` (elements) of a tensor's buffer, bound at a 256-byte aligned offset. */
function window(t: Tensor, start: number, end: number): { binding: Binding; off: number } {
  const bpe = bytesPer(t.dtype);
  const first = Math.floor((start * bpe) / ALIGN) * ALIGN;
  const last = Math.min(t.buffer.size, Math.ceil((end * bpe) / 4) * 4);
  return {
    binding: { buffer: t.buffer, offset: first, size: Math.max(4, last - first) },
    off: (start * bpe - first) / bpe,
  };
}

/**
 * Dispatches the kernel `l.variant` picks (`auto`: see {@linkcode MatmulVariant}) over row blocks of `a` and `out`
 * that fit the binding limit. Shapes are validated by the caller; nothing is read back.
 *
 * @throws {RangeError} When `b` alone, or one row of `a` or `out`, exceeds the binding limit,
 *   or a batched problem would need splitting.
 */
export function launch(l: Launch): void {
  const { gpu } = l.a;
  const dtype = l.dtype;
  if (l.M === 0 || l.N === 0 || l.batch === 0) return;
  const bpe = bytesPer(dtype);
  const limit = Math.min(
    l.maxBindingBytes ?? Infinity,
    gpu.limits.maxStorageBufferBindingSize,
  );
  const bBytes = l.b.size * bpe;
  if (bBytes > limit) {
    const what = l.op === "linear" ? "w" : "b";
    throw new RangeError(
      `${l.op}: ${what} ${fmtShape(l.b.shape)} is ${bBytes} bytes, over the ${limit}-byte ` +
        `binding limit; ` +
        (l.op === "linear"
          ? "split it into row chunks and run one linear per chunk into one output " +
            "(opts.out, opts.outColumnOffset)"
          : "split it along N or the batch"),
    );
  }
  // Rows of a (and of out) per dispatch, so that each bound window fits the limit.
  const rowBytesA = Math.max(1, l.K) * bpe, rowBytesC = l.ldc * bpe;
  const aWhole = (l.strideA ? l.batch * l.strideA : l.M * l.K) * bpe;
  const cWhole = (l.batch - 1) * l.strideC * bpe + l.M * rowBytesC;
  let rowsPer = l.M;
  if (aWhole > limit || cWhole > limit) {
    if (l.batch > 1) {
      throw new RangeError(
        `${l.op}: a ${fmtShape(l.a.shape)} or out ${
          fmtShape(l.out.shape)
        } exceeds the ${limit}-byte binding limit; split the batch`,
      );
    }
    rowsPer = Math.floor((limit - ALIGN) / Math.max(rowBytesA, rowBytesC));
    if (rowsPer < 1) {
      throw new RangeError(
        `${l.op}: one row of a ${fmtShape(l.a.shape)} or out ${
          fmtShape(l.out.shape)
        } exceeds the ${limit}-byte binding limit`,
      );
    }
  }
  const variant = pickVariant(l, gpu.cpuRoutes);
  const g16 = variant === "gemv16" || variant === "gemv16wide";
  if (l.norm && (!g16 || !normFusable(l.norm, dtype))) {
    // Not fusable here: the rmsNorm op, then the same launch on its output.
    using h = rmsNorm(l.a, l.norm.weight, l.norm.eps);
    return launch({ ...l, a: h, norm: undefined });
  }
  const norm = l.norm && {
    gain: window(l.norm.weight, 0, l.K).binding,
    eps: l.norm.eps,
    deferred: l.norm.deferred,
  };
  if (g16) rowsPer = Math.min(rowsPer, GEMV16_MAX_M);
  const big = variant === "tiled128" || variant === "tiled128x64" || variant === "tiled128split";
  const entry = variant === "gemv" ? (l.transB ? "gemv_t" : "gemv") : big ? "tiled128" : variant;
  const kernelFor = (rows: number) =>
    gpu.kernel({
      shader: big ? "matmul_big" : "matmul",
      entry,
      defines: { T: dtype },
      // GEMV: rows of a per workgroup, a pipeline constant so its loops unroll into registers.
      constants: variant === "gemv"
        ? { ROWS: Math.min(GEMV_MAX_M, rows) }
        : big
        ? { TRANS_B: l.transB ? 1 : 0, WIDE: variant === "tiled128x64" ? 0 : 1 }
        : { TRANS_B: l.transB ? 1 : 0 },
    });
  const bWin = window(l.b, 0, l.b.size);
  const biasWin = l.bias ? window(l.bias, 0, l.bias.size) : undefined;
  for (let r0 = 0; r0 < l.M; r0 += rowsPer) {
    const rows = Math.min(rowsPer, l.M - r0);
    const aWin = l.strideA ? window(l.a, 0, l.a.size) : window(l.a, r0 * l.K, (r0 + rows) * l.K);
    const cStart = r0 * l.ldc + l.colOffset;
    const cEnd = cStart + (l.batch - 1) * l.strideC + (rows - 1) * l.ldc + l.N;
    const cWin = window(l.out, cStart, cEnd);
    const rWin = l.residual ? window(l.residual, r0 * l.N, (r0 + rows) * l.N) : undefined;
    if (variant === "skinny" || g16) {
      const d = {
        dtype,
        M: rows,
        N: l.N,
        K: l.K,
        x: aWin.binding,
        offX: aWin.off,
        w: bWin.binding,
        bias: biasWin?.binding,
        res: rWin?.binding,
        offR: rWin?.off ?? 0,
        y: cWin.binding,
        offY: cWin.off,
        ldy: l.ldc,
      };
      if (variant === "skinny") dispatchSkinny(gpu, { ...d, entry: "skinny" });
      else {
        dispatchGemv16(gpu, {
          ...d,
          entry: variant === "gemv16" ? "gemv16" : "gemv16_wide",
          norm,
        });
      }
      continue;
    }
    const gemvRows = Math.min(GEMV_MAX_M, rows);
    const groups = variant === "naive"
      ? Math.ceil((l.batch * rows * l.N) / 256)
      : variant === "tiled"
      ? Math.ceil(l.N / 64) * Math.ceil(rows / 64) * l.batch
      : big
      ? Math.ceil(l.N / (variant === "tiled128x64" ? 64 : 128)) * Math.ceil(rows / 128) * l.batch
      : Math.ceil(l.N / 8) * Math.ceil(rows / gemvRows) * l.batch;
    const params = {
      M: rows,
      N: l.N,
      K: l.K,
      batch: l.batch,
      strideA: l.strideA,
      strideB: l.strideB,
      strideC: l.strideC,
      ldc: l.ldc,
      offA: aWin.off,
      offB: bWin.off,
      offC: cWin.off,
      hasBias: l.bias ? 1 : 0,
      offR: rWin?.off ?? 0,
      hasRes: rWin ? 1 : 0,
    };
    const splits = variant === "tiled128split" ? splitK(groups, l, rows, limit) : 1;
    if (splits > 1) {
      dispatchSplitK(gpu, l, splits, groups, params, [
        aWin.binding,
        bWin.binding,
        (biasWin ?? bWin).binding,
        (rWin ?? bWin).binding,
        cWin.binding,
      ]);
      continue;
    }
    gpu.dispatch(
      kernelFor(rows),
      [
        aWin.binding,
        bWin.binding,
        (biasWin ?? bWin).binding,
        (rWin ?? bWin).binding,
        cWin.binding,
      ],
      Gpu.grid(groups),
      params,
    );
  }
}

/**
 * How `tiled128split` splits K (tests and benchmarks may set them): about `workgroups`
 * workgroups in all (a few for each of an H200's 132 SMs), each split at least `minK` long, at
 * most `max` splits.
 */
export const splitKTuning: { workgroups: number; minK: number; max: number } = {
  workgroups: 512,
  minK: 256,
  max: 8,
};

/**
 * Splits of K for `tiled128split` over `tiles` output tiles of `rows` rows
 * ({@linkcode splitKTuning}), fewer where the f32 partials would not fit one binding; 1: none
 * (the plain `tiled128`).
 */
function splitK(tiles: number, l: Launch, rows: number, limit: number): number {
  const t = splitKTuning;
  let s = Math.min(t.max, Math.floor(t.workgroups / tiles), Math.floor(l.K / t.minK));
  while (s > 1 && s * l.batch * rows * Math.ceil(l.N / 4) * 16 > limit) s--;
  return Math.max(1, s);
}

/**
 * `tiled128_split` over `splits` shares of K into f32 partials, then `splitk_sum` (the partials
 * in split order, the epilogue): `bound` holds a, b, bias, residual and out (bindings 1..5).
 */
function dispatchSplitK(
  gpu: Gpu,
  l: Launch,
  splits: number,
  tiles: number,
  params: Record<string, number>,
  bound: Binding[],
): void {
  const per = l.batch * params.M * Math.ceil(l.N / 4); // vec4s of one split's partials
  const part = gpu.alloc(splits * per * 16, "matmul split-K partials");
  const byBinding = [undefined, ...bound, part];
  const run = (entry: string, constants: Record<string, number>, groups: number) => {
    const k = gpu.kernel({ shader: "matmul_big", entry, defines: { T: l.dtype }, constants });
    const used = k.bindings.filter((d) => d.kind !== "uniform").map((d) => byBinding[d.binding]!);
    gpu.dispatch(k, used, Gpu.grid(groups), params);
  };
  run("tiled128_split", { TRANS_B: l.transB ? 1 : 0, WIDE: 1, KSPLIT: splits }, tiles * splits);
  run("splitk_sum", { KSPLIT: splits }, Math.ceil(per / 256));
  gpu.release(part);
}

/**
 * The kernel for `l.variant` (`auto` resolved: see {@linkcode MatmulVariant}).
 *
 * @throws {RangeError} When `gemv16` is forced on a product it does not take.
 */
function pickVariant(l: Launch, cpu: boolean): Exclude<MatmulVariant, "auto"> {
  const g16 = l.transB && l.batch === 1 && gemvApplies(1, l.K, l.dtype);
  if (l.variant === "gemv16" || l.variant === "gemv16wide" || l.variant === "skinny") {
    if (!g16) {
      throw new RangeError(
        `${l.op}: variant ${l.variant} needs x·wᵀ without batch dims and K a multiple of ` +
          `${l.dtype === "f16" ? 8 : 4} (16-byte words), got K=${l.K} ${l.dtype}, ` +
          `a ${fmtShape(l.a.shape)}, b ${fmtShape(l.b.shape)}`,
      );
    }
    return l.variant;
  }
  if (l.variant !== "auto") return l.variant;
  if (l.M > GEMV_MAX_M && l.a.gpu.adapter.cpuGl && l.M * l.N * l.K <= GL_NAIVE_MAX_MACS) {
    return "naive";
  }
  // A batch of decode rows (parallel chains): the skinny kernel (./skinny.ts) from SKINNY_MIN_M
  // rows, or 16 for a narrow N, up to SKINNY_MAX_M (SKINNY_WIDE_MAX_M for the LM head). It
  // replaced gemv16 in blocks of 16 rows (q/k/v 1024×4096 at M = 16 / 32 / 64 / 128: 46.7 /
  // 93.1 / 186 / 371 µs against 16.3 / 22.8 / 37.2 / 58.8) and the 64×64 tiles of `tiled`
  // (208–244 µs there whatever M).
  const wideN = l.N > GEMV16_AUTO_MAX_N;
  const skinnyRows = l.M >= (l.N >= SKINNY_NARROW_N ? SKINNY_MIN_M : 16) &&
    l.M <= (wideN ? SKINNY_WIDE_MAX_M : SKINNY_MAX_M);
  if (!cpu && g16 && skinnyRows) return "skinny";
  if (l.M > GEMV_MAX_M) {
    // Under 16 rows with a narrow N: gemv16 (one block).
    if (!cpu && g16 && !wideN && l.M < 16) return "gemv16";
    const tiles128 = Math.ceil(l.M / 128) * Math.ceil(l.N / 128) * l.batch;
    const large = !cpu && l.M >= 128 && l.N >= 128 && tiles128 >= LARGE_TILES_MIN;
    if (!large) return "tiled";
    // Too few 128×128 tiles for the GPU (at most half of splitKTuning.workgroups): split K.
    const t = splitKTuning;
    const split = matmulAuto.largeTiles === "tiled128" && matmulAuto.splitK &&
      2 * tiles128 <= t.workgroups && l.K >= 2 * t.minK;
    return split ? "tiled128split" : matmulAuto.largeTiles;
  }
  if (cpu) return "naive";
  // H200, f16, bench/skinny.ts (2026-12-04): gemv16 beat gemv at every M = 2..8 of the model's
  // shapes (down 3072×1024: 9.5 / 19.4 / 28.7 µs at M = 2 / 4 / 8 against 27.6 / 73.5 / 125;
  // q/k/v 15.7 / 19.6 / 28.6 against 16.5 / 22.7 / 35.9). At M = 1 they tie on q/k/v and gate,
  // and gemv16 wins on down (8.9 vs 20.5). The LM head (N > GEMV16_AUTO_MAX_N) takes gemv16wide.
  if (!g16) return "gemv";
  if (l.N <= GEMV16_AUTO_MAX_N) return "gemv16";
  return matmulAuto.wideGemv ? "gemv16wide" : "gemv";
}
