/**
 * The losses of DMS training (SPEC §6) and of teacher pre-training, each returning the loss
 * and its gradient (the upstream gradient of the loss is 1: scale the result to weight a term):
 *
 * - {@linkcode klDivergence}: `L_distill`, KL(student ‖ teacher) = Σ_v p_s (log p_s − log p_t)
 *   per position, summed over counted positions (weight 1: attention mask 1 and input id not
 *   EOS) and divided by max(count, 1); fp32, temperature 1, no shift. Gradient w.r.t. the
 *   student logits: `p_s ∘ ((log p_s − log p_t) − KL_row) · w_row / count`.
 * - {@linkcode crossEntropy}: `Σ_rows w (lse − x[target]) / max(count, 1)`, gradient
 *   `(softmax − onehot) · w / count` (next-token training of a teacher).
 * - {@linkcode compressionLoss}: `L_cr = mean_b max(0, α* − frac_closed[b])` with
 *   `frac_closed[b]` = mean over layers of mean_{h,t} ST[ℓ, b, h, t]; gradient w.r.t. each ST
 *   value `−1/(B·L·Hkv·T)` where `α* − frac_closed[b] ≥ 0` (torch's clamp passes the gradient
 *   at 0, so at step 0, α* = 0 and nothing closed, it is active), else 0.
 *
 * Kernels (`shaders/loss.wgsl`): a row kernel (one workgroup per position, the row streamed
 * with an online logsumexp: the vocabulary is processed in pieces and never materialised as
 * probabilities — the reference's 4096-wide vocabulary chunks, a numerical detail), a
 * one-workgroup `total` (fixed-order tree sums: deterministic), and an elementwise gradient
 * kernel. Rows are processed in chunks whose bound windows stay within 128 MiB (and the
 * device's `maxStorageBufferBindingSize`): `[N, 151936]` f32 logits are 594 KiB a row.
 * Inputs are f32 (TypeError otherwise). Nothing reads back.
 *
 * @example Distillation loss of two positions, the second masked
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { klDivergence } from "./losses.ts";
 * const gpu = await getGpu();
 * using s = Tensor.fromArray(gpu, [1, 2, 3, 0, 0, 0], [2, 3]); // student logits:[N, V]
 * using t = Tensor.fromArray(gpu, [3, 2, 1, 0, 0, 9], [2, 3]); // teacher logits:[N, V]
 * using w = Tensor.fromArray(gpu, [1, 0], [2]);
 * const { loss, grad } = klDivergence(s, t, w);
 * console.log(await loss.toArray()); // [1.15042...]: row 0 only
 * loss.dispose();
 * grad.dispose();
 * ```
 *
 * @module
 */

import { type Binding, Gpu } from "../gpu/device.ts";
import { rowWorkgroupSize } from "../ops/launch.ts";
import { fmtShape, Tensor } from "../tensor/tensor.ts";

/** Options of the logits losses. */
export interface LossOptions {
  /**
   * Largest byte range bound per buffer; default and maximum: 128 MiB (or the device's
   * `maxStorageBufferBindingSize` when lower). Lower it to exercise the row chunks.
   */
  maxBindingBytes?: number;
}

/** A loss and the gradient of it w.r.t. the logits. */
export interface LossResult {
  /** The loss, `[1]` f32. */
  loss: Tensor<"f32">;
  /** ∂loss/∂logits, `[N, V]` f32. */
  grad: Tensor<"f32">;
}

/** The compression loss, the closed fractions and the gradient w.r.t. each layer's ST values. */
export interface CompressionLossResult {
  /** `L_cr`, `[1]` f32. */
  loss: Tensor<"f32">;
  /** `frac_closed`, `[B]` f32. */
  fracClosed: Tensor<"f32">;
  /** ∂L_cr/∂ST per layer, each `[B, Hkv, T]` f32. */
  grads: Tensor<"f32">[];
}

const MAX_BINDING = 128 * 1024 * 1024;
const ALIGN = 256; // minStorageBufferOffsetAlignment upper bound in WebGPU
const WG = 256;

interface Fields {
  rows?: number;
  v?: number;
  row0?: number;
  off?: number;
  n?: number;
  layer?: number;
  alpha?: number;
}

function fields(f: Fields): Required<Fields> {
  return { rows: 0, v: 0, row0: 0, off: 0, n: 0, layer: 0, alpha: 0, ...f };
}

function bindingLimit(gpu: Gpu, opts: LossOptions): number {
  return Math.min(
    opts.maxBindingBytes ?? MAX_BINDING,
    MAX_BINDING,
    gpu.limits.maxStorageBufferBindingSize,
  );
}

/** A window `[start, end)` (f32 elements) of a buffer, bound at a 256-byte aligned offset. */
function window(t: Tensor, start: number, end: number): { b: Binding; off: number } {
  const first = Math.floor((start * 4) / ALIGN) * ALIGN;
  const last = Math.min(t.buffer.size, end * 4);
  return {
    b: { buffer: t.buffer, offset: first, size: Math.max(4, last - first) },
    off: start - first / 4,
  };
}

/** Row chunks `[r0, r1)` of `[n, v]` f32 whose windows fit `limit` bytes. */
function rowChunks(op: string, n: number, v: number, limit: number): [number, number][] {
  if (n === 0) return [[0, 0]];
  const per = n * v * 4 <= limit ? n : Math.floor((limit - ALIGN) / (v * 4));
  if (per < 1) {
    throw new RangeError(
      `${op}: one row of ${v} f32 logits exceeds the ${limit}-byte binding limit`,
    );
  }
  const out: [number, number][] = [];
  for (let r = 0; r < n; r += per) out.push([r, Math.min(n, r + per)]);
  return out;
}

function assertF32(op: string, what: string, t: Tensor, rank: number): void {
  if (t.dtype !== "f32") {
    throw new TypeError(`${op}: ${what} must be f32, got ${t.dtype}${fmtShape(t.shape)}`);
  }
  if (t.rank !== rank) {
    throw new RangeError(`${op}: ${what} must have rank ${rank}, got ${fmtShape(t.shape)}`);
  }
}

function checkRows(op: string, logits: Tensor, weights: Tensor): [number, number] {
  assertF32(op, "logits", logits, 2);
  const [n, v] = logits.shape;
  if (v < 1) {
    throw new RangeError(`${op}: logits ${fmtShape(logits.shape)} has an empty vocabulary`);
  }
  assertF32(op, "weights", weights, 1);
  if (weights.shape[0] !== n) {
    throw new RangeError(
      `${op}: weights ${fmtShape(weights.shape)} must be [${n}] for logits ${
        fmtShape(logits.shape)
      }`,
    );
  }
  return [n, v];
}

/** Runs rows → total → grad for KL (teacher given) or CE (targets given). */
function logitsLoss(
  op: "klDivergence" | "crossEntropy",
  x: Tensor,
  other: Tensor,
  weights: Tensor,
  opts: LossOptions,
): LossResult {
  const gpu = x.gpu;
  const [n, v] = x.shape;
  const kl = op === "klDivergence";
  const loss = Tensor.empty(gpu, [1], "f32");
  const grad = Tensor.empty(gpu, [n, v], "f32");
  using stats = Tensor.zeros(gpu, [4 * n + 4], "f32");
  const rowWg = rowWorkgroupSize(gpu, v);
  const kRows = gpu.kernel({
    shader: "loss",
    entry: kl ? "kl_rows" : "ce_rows",
    constants: { WG: rowWg },
  });
  const kGrad = gpu.kernel({
    shader: "loss",
    entry: kl ? "kl_grad" : "ce_grad",
    constants: { WG },
  });
  const chunks = rowChunks(op, n, v, bindingLimit(gpu, opts));
  for (const [r0, r1] of chunks) {
    const xs = window(x, r0 * v, r1 * v);
    const f = fields({ rows: r1 - r0, v, row0: r0, off: xs.off, n });
    if (kl) {
      const ts = window(other, r0 * v, r1 * v);
      gpu.dispatch(kRows, [xs.b, ts.b, stats.buffer], Gpu.grid(r1 - r0), f);
    } else {
      gpu.dispatch(kRows, [xs.b, other.buffer, stats.buffer], Gpu.grid(r1 - r0), f);
    }
  }
  const kTotal = gpu.kernel({ shader: "loss", entry: "total", constants: { WG } });
  gpu.dispatch(kTotal, [weights.buffer, stats.buffer, loss.buffer], [1], fields({ n }));
  for (const [r0, r1] of chunks) {
    const xs = window(x, r0 * v, r1 * v), gs = window(grad, r0 * v, r1 * v);
    const f = fields({ rows: r1 - r0, v, row0: r0, off: xs.off, n });
    const wgs = Gpu.grid(Math.ceil(((r1 - r0) * v) / WG));
    const bufs = kl
      ? [xs.b, window(other, r0 * v, r1 * v).b, weights.buffer, stats.buffer, gs.b]
      : [xs.b, weights.buffer, other.buffer, stats.buffer, gs.b];
    gpu.dispatch(kGrad, bufs, wgs, f);
  }
  return { loss, grad };
}

/**
 * `L_distill` = KL(student ‖ teacher) over counted positions (SPEC §6), with its gradient.
 *
 * @param student Student logits `[N, V]` f32 (N = B·T positions).
 * @param teacher Teacher logits `[N, V]` f32 (a constant: no gradient is returned for it).
 * @param weights `[N]` f32: 1 for a counted position, 0 for a masked one (padding, EOS input).
 * @param opts `maxBindingBytes` (tests).
 * @returns `{ loss:[1], grad:[N, V] }` (new tensors, owned by the caller).
 * @throws {TypeError} For a non-f32 input. {RangeError} For mismatched shapes.
 */
export function klDivergence(
  student: Tensor,
  teacher: Tensor,
  weights: Tensor,
  opts: LossOptions = {},
): LossResult {
  const op = "klDivergence";
  checkRows(op, student, weights);
  assertF32(op, "teacher", teacher, 2);
  if (teacher.shape[0] !== student.shape[0] || teacher.shape[1] !== student.shape[1]) {
    throw new RangeError(
      `${op}: teacher ${fmtShape(teacher.shape)} must match student ${fmtShape(student.shape)}`,
    );
  }
  return logitsLoss(op, student, teacher, weights, opts);
}

/**
 * Weighted mean cross-entropy of next-token targets, with its gradient (teacher pre-training).
 *
 * @param logits `[N, V]` f32.
 * @param targets `[N]` i32 token ids in `[0, V)` (a masked row may hold any value).
 * @param weights `[N]` f32: 1 counted, 0 masked; the mean divides by max(Σ weights, 1).
 * @param opts `maxBindingBytes` (tests).
 * @returns `{ loss:[1], grad:[N, V] }` (new tensors, owned by the caller).
 * @throws {TypeError} For a wrong dtype. {RangeError} For mismatched shapes.
 */
export function crossEntropy(
  logits: Tensor,
  targets: Tensor,
  weights: Tensor,
  opts: LossOptions = {},
): LossResult {
  const op = "crossEntropy";
  const [n] = checkRows(op, logits, weights);
  if (targets.dtype !== "i32") {
    throw new TypeError(
      `${op}: targets must be i32, got ${targets.dtype}${fmtShape(targets.shape)}`,
    );
  }
  if (targets.rank !== 1 || targets.shape[0] !== n) {
    throw new RangeError(`${op}: targets ${fmtShape(targets.shape)} must be [${n}]`);
  }
  return logitsLoss(op, logits, targets, weights, opts);
}

/**
 * The one-sided compression loss `L_cr` (SPEC §6) and its gradient w.r.t. the straight-through
 * decision values of every layer (`hard − stopgrad(p) + p`: the gradient then reaches the
 * decision logits through `p`, SPEC §4).
 *
 * @param stValues ST values per layer, each `[B, Hkv, T]` f32, all the same shape.
 * @param alphaTarget α* (schedule.ts `alphaTarget(step)`), in [0, 1].
 * @returns `{ loss:[1], fracClosed:[B], grads: [B, Hkv, T] per layer }` (new tensors).
 * @throws {TypeError} For a non-f32 input. {RangeError} For no layer or mismatched shapes.
 */
export function compressionLoss(
  stValues: readonly Tensor[],
  alphaTarget: number,
): CompressionLossResult {
  const op = "compressionLoss";
  if (!stValues.length) {
    throw new RangeError(`${op}: stValues is empty (one [B, Hkv, T] per layer)`);
  }
  if (!Number.isFinite(alphaTarget)) throw new RangeError(`${op}: alphaTarget must be finite`);
  const s0 = stValues[0];
  stValues.forEach((t, l) => {
    assertF32(op, `stValues[${l}]`, t, 3);
    if (t.shape.some((d, i) => d !== s0.shape[i])) {
      throw new RangeError(
        `${op}: stValues[${l}] ${fmtShape(t.shape)} differs from stValues[0] ${fmtShape(s0.shape)}`,
      );
    }
  });
  const gpu = s0.gpu;
  const [b, h, t] = s0.shape;
  const v = h * t, nl = stValues.length;
  if (b * v * 4 > Math.min(MAX_BINDING, gpu.limits.maxStorageBufferBindingSize)) {
    throw new RangeError(`${op}: stValues ${fmtShape(s0.shape)} exceeds the binding limit`);
  }
  const loss = Tensor.empty(gpu, [1], "f32");
  const fracClosed = Tensor.empty(gpu, [b], "f32");
  using partial = Tensor.zeros(gpu, [nl * b], "f32");
  using coef = Tensor.zeros(gpu, [b], "f32");
  const kPart = gpu.kernel({
    shader: "loss",
    entry: "cr_partial",
    constants: { WG: rowWorkgroupSize(gpu, v) },
  });
  stValues.forEach((st, layer) => {
    gpu.dispatch(kPart, [st.buffer, partial.buffer], Gpu.grid(b), fields({ rows: b, v, layer }));
  });
  const kTotal = gpu.kernel({ shader: "loss", entry: "cr_total", constants: { WG } });
  gpu.dispatch(
    kTotal,
    [partial.buffer, loss.buffer, fracClosed.buffer, coef.buffer],
    [1],
    fields({ rows: b, v, n: nl, alpha: alphaTarget }),
  );
  const kGrad = gpu.kernel({ shader: "loss", entry: "cr_grad", constants: { WG } });
  const grads = stValues.map(() => {
    const g = Tensor.empty(gpu, s0.shape, "f32");
    gpu.dispatch(
      kGrad,
      [g.buffer, coef.buffer],
      Gpu.grid(Math.ceil((b * v) / WG)),
      fields({ rows: b, v }),
    );
    return g;
  });
  return { loss, fracClosed, grads };
}

/** Result of a CPU loss twin (f64). */
export interface LossReference {
  /** The loss. */
  loss: number;
  /** ∂loss/∂logits, row-major `[N, V]`. */
  grad: Float64Array;
}

function logSoftmaxRow(x: ArrayLike<number>, base: number, v: number): Float64Array {
  let m = -Infinity;
  for (let j = 0; j < v; j++) m = Math.max(m, x[base + j]);
  let s = 0;
  for (let j = 0; j < v; j++) s += Math.exp(x[base + j] - m);
  const lse = m + Math.log(s), out = new Float64Array(v);
  for (let j = 0; j < v; j++) out[j] = x[base + j] - lse;
  return out;
}

/** CPU twin of {@linkcode klDivergence} in f64: logits row-major `[n, v]`. */
export function klDivergenceReference(
  student: ArrayLike<number>,
  teacher: ArrayLike<number>,
  weights: ArrayLike<number>,
  n: number,
  v: number,
): LossReference {
  const grad = new Float64Array(n * v), klRows = new Float64Array(n), ls = [], lt = [];
  let count = 0, num = 0;
  for (let r = 0; r < n; r++) {
    ls.push(logSoftmaxRow(student, r * v, v));
    lt.push(logSoftmaxRow(teacher, r * v, v));
    for (let j = 0; j < v; j++) klRows[r] += Math.exp(ls[r][j]) * (ls[r][j] - lt[r][j]);
    count += weights[r];
    num += weights[r] * klRows[r];
  }
  const inv = 1 / Math.max(count, 1);
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < v; j++) {
      grad[r * v + j] = Math.exp(ls[r][j]) * ((ls[r][j] - lt[r][j]) - klRows[r]) * weights[r] * inv;
    }
  }
  return { loss: num * inv, grad };
}

/** CPU twin of {@linkcode crossEntropy} in f64: logits row-major `[n, v]`. */
export function crossEntropyReference(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  weights: ArrayLike<number>,
  n: number,
  v: number,
): LossReference {
  const grad = new Float64Array(n * v);
  let count = 0, num = 0;
  for (let r = 0; r < n; r++) count += weights[r];
  const inv = 1 / Math.max(count, 1);
  for (let r = 0; r < n; r++) {
    const ls = logSoftmaxRow(logits, r * v, v);
    const tgt = Math.min(Math.max(targets[r], 0), v - 1);
    num += weights[r] * -ls[tgt];
    for (let j = 0; j < v; j++) {
      grad[r * v + j] = (Math.exp(ls[j]) - (j === targets[r] ? 1 : 0)) * weights[r] * inv;
    }
  }
  return { loss: num * inv, grad };
}

/** CPU twin of {@linkcode compressionLoss} in f64: `st[l]` row-major `[b, hkv·t]`. */
export function compressionLossReference(
  st: readonly ArrayLike<number>[],
  b: number,
  alphaTarget: number,
): { loss: number; fracClosed: Float64Array; grads: Float64Array[] } {
  const nl = st.length, v = st[0].length / b;
  const frac = new Float64Array(b);
  for (const layer of st) {
    for (let i = 0; i < b; i++) {
      let s = 0;
      for (let j = 0; j < v; j++) s += layer[i * v + j];
      frac[i] += s / v / nl;
    }
  }
  let loss = 0;
  const coef = new Float64Array(b);
  for (let i = 0; i < b; i++) {
    loss += Math.max(0, alphaTarget - frac[i]) / b;
    coef[i] = alphaTarget - frac[i] >= 0 ? -1 / (b * nl * v) : 0;
  }
  const grads = st.map(() =>
    Float64Array.from({ length: b * v }, (_, k) => coef[Math.floor(k / v)])
  );
  return { loss, fracClosed: frac, grads };
}
