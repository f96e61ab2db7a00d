/**
 * Softmax and log-softmax over the last dimension, numerically safe (the row
 * maximum is subtracted), with an optional additive mask and a causal mode.
 *
 * Masking: the logit of key `j` is `x[j] + mask[j]`. A key is *masked* when
 * `x[j] <= -1e9` or `mask[j] <= -1e9` (so `-1e9`, `-3.40282346e38` and `-inf`
 * all mask; in an f16 mask `-1e9` is stored as `-inf`), or in causal mode when
 * `j > queryOffset + t` for the row's query `t`. Masked keys get probability
 * exactly 0 (log-probability: the lowest finite value of the output dtype,
 * standing in for `-inf`), and a row whose keys are all masked is all zeros
 * (all lowest), never NaN. Milder negative values (the `-5e4`/`-1e5` of the
 * DMS reference) are plain additive biases: they still take part in the
 * softmax, so a row of them gives the same result as in PyTorch.
 *
 * Kernels (`shaders/softmax.wgsl`):
 * - `softmax` / `log_softmax`: one workgroup per row; each thread folds an
 *   online (max, Σexp) pair over a strided slice (8 scores loaded before they
 *   are used: one workgroup per row is memory-latency bound), a tree merge
 *   combines the pairs, and a second pass writes the row. Any N, including
 *   N = 1 and N larger than the workgroup (the size is the smallest power of
 *   two >= 32 covering N / 8, up to 1024). Reads x (and the mask) twice.
 *   H100 (Vulkan), one or eight 151936 rows: 150 µs (300 µs with one load per
 *   step and <= 256 threads); no split-row variant yet for few long rows.
 *
 * @example Causal attention probabilities over scores:[H, T, S]
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { softmax } from "./softmax.ts";
 * const gpu = await getGpu();
 * using scores = Tensor.fromArray(gpu, [1, 2, 3, 1, 2, 3], [1, 2, 3]);
 * using probs = softmax(scores, { causal: { queryOffset: 1 } }); // query t sees keys 0..t+1
 * console.log(await probs.toArray()); // ≈ [0.269, 0.731, 0, 0.090, 0.245, 0.665]
 * ```
 *
 * @module
 */

import { Gpu, type Kernel, type KernelSpec } from "../gpu/device.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { assertFloat, output, rowWorkgroupSize } from "./launch.ts";

/** Logits and mask values at or below this are masked (probability exactly 0). */
export const MASKED: number = -1e9;

/** Options of {@linkcode softmax} and {@linkcode logSoftmax}. */
export interface SoftmaxOptions {
  /**
   * Additive mask, f32 or f16, broadcast onto x like NumPy (right-aligned; each dim equal to
   * x's or 1), e.g. `[N]`, `[T, S]` or `[B, 1, 1, S]` over scores `[B, H, T, S]`.
   * Values <= {@linkcode MASKED} mask the key.
   */
  mask?: Tensor;
  /**
   * Causal mode for scores `[..., T, S]`: key `j` is masked for query `t` when
   * `j > queryOffset + t`. `queryOffset` defaults to `S - T` (the last query sees every key,
   * as when T new tokens follow S - T cached ones).
   */
  causal?: { queryOffset?: number };
}

/** Options of {@linkcode softmaxReference}. */
export interface SoftmaxReferenceOptions {
  /** Additive mask values and their shape (broadcast as in {@linkcode SoftmaxOptions.mask}). */
  mask?: { data: ArrayLike<number>; shape: readonly number[] };
  /** As in {@linkcode SoftmaxOptions.causal}. */
  causal?: { queryOffset?: number };
  /** Log-softmax instead of softmax (masked keys give `-Infinity`). */
  log?: boolean;
}

/** Lowest finite value of a float dtype (stands in for -inf in log-softmax output). */
const LOWEST: Record<FloatDType, number> = { f32: -3.4028234663852886e38, f16: -65504 };

/**
 * The mask's layout over x: its stride along the last dim (0 or 1) and x's leading dims
 * collapsed into groups `[size, maskStride]`, innermost first.
 */
function maskLayout(
  op: string,
  xShape: readonly number[],
  mShape: readonly number[],
): { inner: number; groups: [number, number][] } {
  const r = xShape.length;
  const bad = () =>
    new RangeError(
      `${op} mask: cannot broadcast ${fmtShape(mShape)} onto x ${
        fmtShape(xShape)
      } (each mask dim must equal x's, right-aligned, or be 1)`,
    );
  if (mShape.length > r) throw bad();
  const m = [...new Array(r - mShape.length).fill(1), ...mShape];
  if (m.some((d, i) => d !== xShape[i] && d !== 1)) throw bad();
  const stride = new Array<number>(r);
  stride[r - 1] = 1;
  for (let i = r - 2; i >= 0; i--) stride[i] = stride[i + 1] * m[i + 1];
  const groups: [number, number][] = [];
  for (let i = r - 2; i >= 0; i--) {
    if (xShape[i] === 1) continue;
    const s = m[i] === 1 ? 0 : stride[i];
    const last = groups[groups.length - 1];
    if (last && last[1] * last[0] === s) last[0] *= xShape[i];
    else groups.push([xShape[i], s]);
  }
  if (groups.length > 4) {
    throw new RangeError(
      `${op} mask: broadcasting ${fmtShape(mShape)} onto ${
        fmtShape(xShape)
      } alternates between broadcast and real dims more than 4 times; reshape the mask`,
    );
  }
  return { inner: m[r - 1] === 1 ? 0 : 1, groups };
}

function launch(entry: "softmax" | "log_softmax", x: Tensor, opts: SoftmaxOptions): Tensor {
  const op = entry === "softmax" ? "softmax()" : "logSoftmax()";
  assertFloat(x, `${op} x`);
  if (x.rank < 1) {
    throw new RangeError(`${op} x: expected shape [..., N], got ${fmtShape(x.shape)}`);
  }
  const n = x.shape[x.rank - 1];
  const mask = opts.mask;
  if (mask) assertFloat(mask, `${op} mask`);
  const layout = mask ? maskLayout(op, x.shape, mask.shape) : { inner: 0, groups: [] };
  let causal = 0, T = 1, queryOffset = 0;
  if (opts.causal) {
    if (x.rank < 2) {
      throw new RangeError(`${op} causal: expected scores [..., T, S], got ${fmtShape(x.shape)}`);
    }
    causal = 1;
    T = x.shape[x.rank - 2];
    queryOffset = opts.causal.queryOffset ?? n - T;
    if (!(Number.isInteger(queryOffset) && Math.abs(queryOffset) < 2 ** 30)) {
      throw new RangeError(`${op} causal.queryOffset: expected an integer, got ${queryOffset}`);
    }
  }
  const gpu = x.gpu;
  const out = output(gpu, x.shape, x.dtype);
  const rows = n === 0 ? 0 : x.size / n;
  if (rows === 0) return out;
  const WG = rowWorkgroupSize(gpu, n);
  const spec: KernelSpec = {
    shader: "softmax",
    entry,
    defines: { T: x.dtype, M: mask?.dtype ?? x.dtype },
    constants: { WG },
  };
  const k: Kernel = gpu.kernel(spec);
  const g = [...layout.groups];
  while (g.length < 4) g.push([1, 0]);
  const params = {
    rows,
    n,
    has_mask: mask ? 1 : 0,
    mask_inner: layout.inner,
    d0: g[0][0],
    d1: g[1][0],
    d2: g[2][0],
    d3: g[3][0],
    s0: g[0][1],
    s1: g[1][1],
    s2: g[2][1],
    s3: g[3][1],
    causal,
    t: T,
    query_offset: queryOffset,
    lowest: LOWEST[x.dtype],
  };
  gpu.dispatch(k, [x.buffer, (mask ?? x).buffer, out.buffer], Gpu.grid(rows), params);
  return out;
}

/**
 * Softmax over the last dimension: `exp(s - max) / Σ exp(s - max)` with `s = x + mask`.
 *
 * @param x `[..., N]`, f32 or f16 (e.g. attention scores `[B, H, T, S]` or logits `[B, V]`).
 * @param opts Optional additive mask (broadcast) and causal mode.
 * @returns A new tensor `[..., N]` of x's dtype; masked keys 0, fully masked rows all 0.
 * @throws {TypeError} When x or the mask is not a float tensor.
 * @throws {RangeError} When x is a scalar, the mask does not broadcast, or causal mode gets
 *   fewer than 2 dims.
 *
 * @example Additive padding mask over scores:[2, 3]
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { softmax } from "./softmax.ts";
 * const gpu = await getGpu();
 * using s = Tensor.fromArray(gpu, [0, 0, 0, 1, 1, 1], [2, 3]);
 * using m = Tensor.fromArray(gpu, [0, 0, -1e9], [3]);
 * using p = softmax(s, { mask: m });
 * console.log(await p.toArray()); // [0.5, 0.5, 0, 0.5, 0.5, 0]
 * ```
 */
export function softmax(x: Tensor, opts: SoftmaxOptions = {}): Tensor<FloatDType> {
  return launch("softmax", x, opts) as Tensor<FloatDType>;
}

/**
 * Log-softmax over the last dimension: `s - max - log Σ exp(s - max)` with `s = x + mask`.
 *
 * @param x `[..., N]`, f32 or f16.
 * @param opts Optional additive mask (broadcast) and causal mode.
 * @returns A new tensor `[..., N]` of x's dtype; masked keys hold the dtype's lowest finite
 *   value (-3.40282346e38 for f32, -65504 for f16) in place of `-inf`.
 * @throws {TypeError} When x or the mask is not a float tensor.
 * @throws {RangeError} As {@linkcode softmax}.
 */
export function logSoftmax(x: Tensor, opts: SoftmaxOptions = {}): Tensor<FloatDType> {
  return launch("log_softmax", x, opts) as Tensor<FloatDType>;
}

/**
 * CPU reference for {@linkcode softmax} / {@linkcode logSoftmax}: plain loops in f64, the same
 * masking rules (masked keys: 0, or `-Infinity` for log; fully masked rows: all 0 / `-Infinity`).
 *
 * @param x Row-major values of `shape`.
 * @param shape `[..., N]`.
 * @param opts Mask, causal mode, log.
 * @returns The result, row-major `[..., N]`.
 */
export function softmaxReference(
  x: ArrayLike<number>,
  shape: readonly number[],
  opts: SoftmaxReferenceOptions = {},
): Float64Array {
  const r = shape.length;
  const n = shape[r - 1];
  const out = new Float64Array(x.length);
  const rows = n === 0 ? 0 : x.length / n;
  const T = r >= 2 ? shape[r - 2] : 1;
  const qOff = opts.causal ? opts.causal.queryOffset ?? n - T : 0;
  // mask index of x's flat index i: right-aligned broadcast
  const mShape = opts.mask
    ? [...new Array(r - opts.mask.shape.length).fill(1), ...opts.mask.shape]
    : [];
  const maskAt = (i: number): number => {
    if (!opts.mask) return 0;
    let rem = i, idx = 0, stride = 1;
    for (let d = r - 1; d >= 0; d--) {
      const c = rem % shape[d];
      rem = Math.floor(rem / shape[d]);
      if (mShape[d] !== 1) idx += c * stride;
      stride *= mShape[d];
    }
    return opts.mask.data[idx];
  };
  const s = new Float64Array(n);
  const live = new Array<boolean>(n);
  for (let row = 0; row < rows; row++) {
    const t = row % T;
    let m = -Infinity;
    for (let j = 0; j < n; j++) {
      const v = x[row * n + j], mv = maskAt(row * n + j);
      live[j] = v > MASKED && mv > MASKED && !(opts.causal && j > qOff + t);
      s[j] = v + mv;
      if (live[j] && s[j] > m) m = s[j];
    }
    let d = 0;
    for (let j = 0; j < n; j++) if (live[j]) d += Math.exp(s[j] - m);
    for (let j = 0; j < n; j++) {
      out[row * n + j] = opts.log
        ? (live[j] ? s[j] - m - Math.log(d) : -Infinity)
        : (live[j] ? Math.exp(s[j] - m) / d : 0);
    }
  }
  return out;
}
