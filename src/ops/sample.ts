/**
 * Next-token sampling on the GPU: greedy, temperature, top-k, top-p (in
 * Hugging Face's order: temperature, then top-k, then top-p), seeded. The
 * sampled token can be written straight into an i32 buffer at an offset (the
 * next decode step's input) and into a token log, and the step counter can
 * come from a GPU buffer, so a generation loop never reads back per token.
 *
 * Semantics (the CPU reference {@linkcode sampleReference} is the spec):
 * - greedy (`temperature` 0, the default, or `topK` 1): the first index of the
 *   row's maximum, like `torch.argmax`.
 * - `w_i = exp((l_i - max) / temperature)`.
 * - top-k keeps the logits >= the k-th largest (ties at the threshold are all
 *   kept, like HF's `TopKLogitsWarper`).
 * - top-p keeps the logits >= the largest value `t` whose kept mass
 *   `Σ_{l_i >= t} w_i` is still >= `topP` × the top-k set's mass: the smallest
 *   nucleus reaching `topP`, always at least the maximum (HF's
 *   `TopPLogitsWarper`, except that a tie at the boundary is kept whole).
 * - the draw: `u = sampleUniform(seed, step, row)` ∈ [0, 1); the token is the
 *   first kept index, in index order, whose running mass exceeds `u` × the
 *   kept mass. So a seeded run is reproducible, and the draw of row `b` at step
 *   `s` depends only on `(seed, s, b)`.
 *
 * Kernel (`shaders/sample.wgsl`), one workgroup per row (every global pass
 * loads 8 logits per thread before using them):
 * 1. one pass for the max (and its first index: greedy ends here) and the min.
 * 2. Candidate path (top-k and/or top-p): a histogram pass counts the row and
 *    its mass in 16 buckets geometric in `(max - l) / temperature`; the top
 *    buckets that must hold every keepable token (k of them, or mass
 *    `topP` × Z) are gathered, when at most 8 × workgroup size (2048) tokens,
 *    into workgroup memory; there a bitonic sort by (value desc, index asc)
 *    gives the top-k and top-p thresholds exactly, the kept tokens are
 *    re-sorted by index and the draw is made. 3 passes over the row.
 * 3. General path (when the candidates do not fit: large k, flat rows under
 *    top-p): top-k and top-p thresholds by a 16-way radix-style select on the
 *    logits' order-preserving u32 keys: each pass sums the count (top-k) or
 *    the mass `w` (top-p) of the keys in 16 equal sub-ranges of the current
 *    range (per-thread bins in workgroup memory and a tree reduction: no
 *    atomics), then keeps the highest sub-range whose lower edge still keeps
 *    enough; 4 bits per pass, at most 8 passes per threshold, exact element
 *    values for any V and any k or p. Then the draw over the row: segment
 *    masses over contiguous index ranges (one per thread), walked in order by
 *    one thread; the segment owning the goal is scanned.
 * Passes over the row: 1 greedy, 2 temperature only, 3 on the candidate path,
 * up to 3 + 19 on the general path. Both paths are checked against the
 * reference (tests force each one by the size of k).
 * Kernel variants (`kernel` option):
 * - `"naive"` (`shaders/sample_naive.wgsl`), the readable twin: one workgroup
 *   per row, every step a plain pass plus a tree reduction; thresholds by
 *   bisection on the logits' u32 keys (32 halvings per threshold, each a pass
 *   over the row: exact element values), then the draw by a scan of segment
 *   masses. Up to ~67 passes. It is the first kernel's bisection (40 halvings
 *   on the scaled value, then a snap to an element) made exact on keys.
 * - `"fast"` (default, `shaders/sample.wgsl`): the candidate and general paths
 *   above; 1 to 3 passes on typical rows. A test checks both against the
 *   reference on the same rows. Greedy and temperature-only rows (no top-k
 *   below V, no top-p below 1) with V >= 16384 are routed to `"split"`.
 *   On a CPU driver reached through OpenGL (`gpu.adapter.cpuGl`) the default
 *   is `"naive"` instead: llvmpipe GL compiles a kernel at its first dispatch,
 *   with a coroutine per workgroup barrier, and took 7-13 s for `"fast"` at
 *   WG 32 (V <= 256), 164 s at WG 256 under top-k + top-p, 5 s for `"split"`,
 *   against 0.3-0.5 s for `"naive"`, which then ran as fast or faster there
 *   (V = 151936: greedy 0.01 s, top-k 50 + top-p 0.9 0.06 s, B = 4;
 *   `bench/first_dispatch.ts`, `MESA_SHADER_CACHE_DISABLE=true`).
 * - `"split"` (`shaders/sample_split.wgsl`), greedy and temperature only
 *   (a RangeError otherwise): many workgroups per row. Pass 1, one workgroup
 *   per chunk of 2048 logits (each read once): the chunk's max, its first
 *   index and (temperature) its mass `Σ exp((l - m_chunk) / T)`, written as
 *   partials `[B, chunks]`. Pass 2, one workgroup per row: the max over the
 *   chunks by (value desc, index asc) is the greedy token; under temperature
 *   the chunk masses are rescaled to the row max (log-sum-exp), and the
 *   chunk holding the goal `u × Z` is found in index order (contiguous runs
 *   of chunks per thread, an inclusive scan, the first run past the goal
 *   walked in order), then the same inside that chunk over its logits.
 *   V = 151936 is 75 workgroups in pass 1 instead of one; the row is read
 *   once (plus one chunk under temperature).
 *
 * Speed (H100, Vulkan, V = 151936, B = 1 or 8, Gaussian logits with a few
 * peaks): greedy 207 µs, temperature 415-473 µs, top-k 50 / top-p 0.9 /
 * top-k 20 + top-p 0.95 ≈ 660 µs (candidate path), top-k 3000 (general path)
 * 2.1 ms. The previous kernel took 2.6 / 2.9 / 1.85 ms for the top-k / top-p /
 * both cases (on harder rows that also take the general path here: 2.1 /
 * 2.4 / 1.6 ms). The limit is one workgroup per row: a pass over a 600 KB
 * row runs on one SM at ~3 GB/s (latency bound). The split kernel takes that
 * limit away for greedy and temperature-only rows (not yet timed on a GPU;
 * issue 10 measured 227 µs for the fast kernel's greedy on the H200); top-k
 * and top-p still run one workgroup per row.
 *
 * Float error: thresholds on counts are exact; masses are f32 sums on the GPU
 * and f64 in the reference, so the token can differ from the reference only
 * when the goal or the top-p mass lies within float error of a boundary.
 *
 * @example Greedy next tokens for two rows
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { sample } from "./sample.ts";
 * const gpu = await getGpu();
 * using logits = Tensor.fromArray(gpu, [0, 3, 1, 5, 2, 0], [2, 3]);
 * using ids = sample(logits);
 * console.log(await ids.toArray()); // Int32Array [1, 0]
 * ```
 *
 * @example Seeded nucleus sampling straight into the next step's input ids:[B, 1]
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { sample } from "./sample.ts";
 * const gpu = await getGpu();
 * using logits = Tensor.fromArray(gpu, [0, 3, 1, 5, 2, 0], [2, 3]);
 * using next = Tensor.zeros(gpu, [2, 1], "i32");
 * using step = Tensor.fromArray(gpu, [7], [1], "u32"); // e.g. kept up to date on the GPU
 * sample(logits, { temperature: 0.7, topK: 50, topP: 0.9, seed: 1, step, out: next });
 * console.log(await next.toArray());
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { pcgHash } from "../tensor/random.ts";
import { fmtShape, Tensor } from "../tensor/tensor.ts";

/** Sampling settings (HF names in camelCase). */
export interface SampleOptions {
  /** 0 (default) = greedy; otherwise logits are divided by it. */
  temperature?: number;
  /** Keep the k most likely tokens, ties at the k-th kept (0 = off, 1 = greedy). */
  topK?: number;
  /** Keep the smallest set of most likely tokens with probability mass ≥ topP (1 = off). */
  topP?: number;
  /** Random seed, an integer taken modulo 2^32 (default 0). */
  seed?: number;
}

/** Kernel variants of {@linkcode sample} (see the module header). */
export type SampleKernel = "fast" | "naive" | "split";

/** Logits per workgroup in pass 1 of the split kernel (`CHUNK` in shaders/sample_split.wgsl). */
const SPLIT_CHUNK = 2048;

/** The default kernel routes greedy and temperature-only rows this long to `"split"`. */
const SPLIT_MIN_VOCAB = 16384;

/** Workgroup size of the naive kernel (one row per workgroup; speed is not its job). */
const NAIVE_WG = 64;

/** Where {@linkcode sample} writes, which draw it uses, and which kernel runs. */
export interface SampleTargets {
  /**
   * Kernel variant: `"fast"` (default; `"naive"` on an OpenGL CPU adapter, see the module
   * header), the readable `"naive"` twin, or `"split"` (greedy and temperature only; `"fast"`
   * takes it for V >= 16384). All give the same tokens.
   */
  kernel?: SampleKernel;
  /**
   * Decode step mixed into the draw (default 0): an integer (modulo 2^32), or a u32/i32 tensor whose element 0
   * holds it on the GPU (read when the kernel runs, so a decode loop can advance it on the GPU).
   */
  step?: number | Tensor;
  /** i32 tensor to write row b's token into, at element `outOffset + b` (e.g. the next step's `[B, 1]` input ids). */
  out?: Tensor;
  /** First element of `out` written (default 0). */
  outOffset?: number;
  /** i32 `[B, C]` token log; column `logColumn mod C` receives this step's tokens. */
  log?: Tensor;
  /**
   * Column of `log`, taken modulo C (default 0): a ring, so that a caller can pass the step
   * itself (`generate` does: its uniforms then change by the same amount every step).
   */
  logColumn?: number;
}

/**
 * Workgroup size: 32 for V <= 256 (many short rows: fewer idle threads at each barrier), else
 * 256, or 128 when the device has less than 20 KiB of workgroup memory (the kernel takes about
 * 76 bytes per thread: 16 bins, or 8 candidates of key and index, and reduction scratch). Few
 * sizes: each one is a separate pipeline to compile.
 */
function workgroupSize(gpu: Gpu, v: number): number {
  if (v <= 256) return 32;
  return gpu.limits.maxComputeWorkgroupStorageSize >= 20480 &&
      gpu.limits.maxComputeInvocationsPerWorkgroup >= 256
    ? 256
    : 128;
}

/**
 * Samples one token per row of `logits:[B, V]` on the GPU.
 *
 * @param logits `[B, V]`, f32 or f16, 1 <= V < 2^24, with at least one finite logit per row.
 * @param opts Sampling settings, the step, and where to write.
 * @returns `opts.out` itself when given (tokens at `outOffset..outOffset+B-1`), else a new i32 `[B]`.
 * @throws {TypeError} When logits are not float, or out/log/step have the wrong dtype.
 * @throws {RangeError} For bad shapes or options (naming them).
 */
export function sample(logits: Tensor, opts: SampleOptions & SampleTargets = {}): Tensor<"i32"> {
  if (logits.dtype !== "f32" && logits.dtype !== "f16") {
    throw new TypeError(
      `sample() logits: expected f32 or f16, got ${logits.dtype}${fmtShape(logits.shape)}`,
    );
  }
  if (logits.rank !== 2 || logits.shape[1] < 1 || logits.shape[1] >= 2 ** 24) {
    throw new RangeError(
      `sample() logits: expected shape [B, V] with 1 <= V < 2^24, got ${fmtShape(logits.shape)}`,
    );
  }
  const [B, V] = logits.shape;
  const temperature = opts.temperature ?? 0, topK = opts.topK ?? 0, topP = opts.topP ?? 1;
  const seed = opts.seed ?? 0;
  if (!(temperature >= 0 && Number.isFinite(temperature))) {
    throw new RangeError(`sample(): temperature must be >= 0, got ${temperature}`);
  }
  const invTemp = temperature === 0 ? 0 : Math.fround(1 / temperature);
  if (!Number.isFinite(invTemp)) {
    throw new RangeError(`sample(): temperature ${temperature} is too small (use 0 for greedy)`);
  }
  if (!(Number.isInteger(topK) && topK >= 0)) {
    throw new RangeError(`sample(): topK must be an integer >= 0, got ${topK}`);
  }
  if (!(topP > 0 && topP <= 1)) {
    throw new RangeError(`sample(): topP must be in (0, 1], got ${topP}`);
  }
  const variant = opts.kernel ?? (logits.gpu.adapter.cpuGl ? "naive" : "fast");
  if (variant !== "fast" && variant !== "naive" && variant !== "split") {
    throw new RangeError(`sample(): kernel must be "fast", "naive" or "split", got ${variant}`);
  }
  // greedy, or temperature alone (top-k >= V and top-p 1 keep the whole row)
  const greedy = temperature === 0 || topK === 1;
  const plain = greedy || ((topK === 0 || topK >= V) && topP >= 1);
  if (variant === "split" && !plain) {
    throw new RangeError(
      `sample(): kernel "split" takes greedy or temperature-only sampling, got topK ${topK}, topP ${topP}`,
    );
  }
  if (!Number.isSafeInteger(seed)) {
    throw new RangeError(`sample(): seed must be an integer, got ${seed}`);
  }
  const stepT = opts.step instanceof Tensor ? opts.step : undefined;
  const step = stepT ? 0 : (opts.step as number | undefined) ?? 0;
  if (stepT && ((stepT.dtype !== "u32" && stepT.dtype !== "i32") || stepT.size < 1)) {
    throw new TypeError(
      `sample() step: expected a u32 or i32 tensor with >= 1 element, got ${stepT.dtype}${
        fmtShape(stepT.shape)
      }`,
    );
  }
  if (!stepT && !Number.isSafeInteger(step)) {
    throw new RangeError(`sample(): step must be an integer, got ${step}`);
  }
  const gpu = logits.gpu;
  const offset = opts.outOffset ?? 0;
  if (opts.out) {
    if (opts.out.dtype !== "i32") {
      throw new TypeError(
        `sample() out: expected an i32 tensor, got ${opts.out.dtype}${fmtShape(opts.out.shape)}`,
      );
    }
    if (!(Number.isInteger(offset) && offset >= 0 && offset + B <= opts.out.size)) {
      throw new RangeError(
        `sample() out: ${B} tokens at outOffset ${offset} do not fit in ${
          fmtShape(opts.out.shape)
        }`,
      );
    }
  } else if (offset !== 0) {
    throw new RangeError(`sample(): outOffset ${offset} needs an out tensor`);
  }
  const log = opts.log;
  const cols = log ? log.shape[log.rank - 1] : 1;
  const col = log ? (opts.logColumn ?? 0) : 0;
  if (log && log.dtype !== "i32") {
    throw new TypeError(`sample() log: expected an i32 tensor, got ${log.dtype}`);
  }
  if (
    log &&
    (log.rank !== 2 || log.shape[0] !== B || cols < 1 ||
      !(Number.isInteger(col) && col >= 0 && col <= 0xffffffff))
  ) {
    throw new RangeError(
      `sample() log: must be i32 [${B}, C >= 1] with an integer logColumn in 0..2^32-1, got ${log.dtype}${
        fmtShape(log.shape)
      } column ${col}`,
    );
  }
  const out = opts.out ?? Tensor.empty(gpu, [B], "i32");
  if (B === 0) return out as Tensor<"i32">;
  if (variant === "split" || (variant === "fast" && plain && V >= SPLIT_MIN_VOCAB)) {
    const seedU = seed >>> 0, stepU = step >>> 0, inv = greedy ? 0 : invTemp;
    sampleSplit(logits, out, { offset, log, cols, col, inv, seed: seedU, step: stepU, stepT });
    return out as Tensor<"i32">;
  }
  const k = gpu.kernel({
    shader: variant === "fast" ? "sample" : "sample_naive",
    entry: log ? "sample_log" : "sample",
    defines: { T: logits.dtype },
    // the readable twin keeps small workgroups (small workgroup arrays: fast GL compiles)
    constants: { WG: variant === "fast" ? workgroupSize(gpu, V) : NAIVE_WG },
  });
  const params = {
    rows: B,
    vocab: V,
    out_offset: offset,
    log_cols: cols,
    log_col: col,
    top_k: topK,
    inv_temp: invTemp,
    top_p: topP,
    seed: seed >>> 0, // integers modulo 2^32
    step: step >>> 0,
    step_from_buffer: stepT ? 1 : 0,
  };
  const buffers = [logits.buffer, (stepT ?? logits).buffer, out.buffer];
  if (log) buffers.push(log.buffer);
  gpu.dispatch(k, buffers, Gpu.grid(B), params);
  return out as Tensor<"i32">;
}

/** Launches the split kernel (greedy or temperature only; see the module header). */
function sampleSplit(
  logits: Tensor,
  out: Tensor,
  o: {
    offset: number;
    log?: Tensor;
    cols: number;
    col: number;
    inv: number;
    seed: number;
    step: number;
    stepT?: Tensor;
  },
): void {
  const gpu = logits.gpu;
  const [B, V] = logits.shape;
  const chunks = Math.ceil(V / SPLIT_CHUNK);
  const kernel = (entry: string) =>
    gpu.kernel({ shader: "sample_split", entry, defines: { T: logits.dtype } });
  const params = {
    rows: B,
    vocab: V,
    chunks,
    out_offset: o.offset,
    log_cols: o.cols,
    log_col: o.col,
    inv_temp: o.inv,
    seed: o.seed,
    step: o.step,
    step_from_buffer: o.stepT ? 1 : 0,
  };
  // part:[B, chunks] of (max, first index, mass) in 3 words
  using part = Tensor.empty(gpu, [B, chunks, 3], "u32");
  gpu.dispatch(kernel("partials"), [logits.buffer, part.buffer], Gpu.grid(B * chunks), params);
  const buffers = [logits.buffer, (o.stepT ?? logits).buffer, part.buffer, out.buffer];
  if (o.log) buffers.push(o.log.buffer);
  gpu.dispatch(kernel(o.log ? "finish_log" : "finish"), buffers, Gpu.grid(B), params);
}

/**
 * The draw `u ∈ [0, 1)` the kernel uses for `(seed, step, row)`: 24 bits of
 * `pcg(pcg(pcg(seed) ^ step) ^ row)`.
 */
export function sampleUniform(seed: number, step: number, row: number): number {
  const h = pcgHash((pcgHash((pcgHash(seed) ^ step) >>> 0) ^ row) >>> 0);
  return (h >>> 8) / 16777216;
}

/**
 * CPU reference: the token chosen from one row of logits for a given draw `u`
 * (plain loops and sorting, f64). The spec of {@linkcode sample}.
 *
 * @param logits One row `[V]` (for f16 logits, the f16-rounded values).
 * @param opts Sampling settings.
 * @param u The draw in [0, 1), e.g. {@linkcode sampleUniform}`(seed, step, row)`.
 * @returns The token index.
 */
export function sampleReference(logits: ArrayLike<number>, opts: SampleOptions, u: number): number {
  const V = logits.length;
  let m = -Infinity, arg = 0;
  for (let i = 0; i < V; i++) if (logits[i] > m) [m, arg] = [logits[i], i];
  const T = opts.temperature ?? 0, k = opts.topK ?? 0, p = opts.topP ?? 1;
  if (T <= 0 || k === 1) return arg;
  const desc = Array.from(logits).sort((a, b) => b - a);
  const w = (l: number) => Math.exp((l - m) / T);
  // top-k: keep l >= the k-th largest
  let t = k > 0 && k < V ? desc[k - 1] : desc[V - 1];
  if (p < 1) {
    let zk = 0;
    for (let i = 0; i < V; i++) if (logits[i] >= t) zk += w(logits[i]);
    // top-p: the largest kept value whose mass from the top reaches p * zk
    let acc = 0;
    for (const l of desc) {
      if (l < t) break;
      acc += w(l);
      if (acc >= p * zk) {
        t = l;
        break;
      }
    }
  }
  let total = 0;
  for (let i = 0; i < V; i++) if (logits[i] >= t) total += w(logits[i]);
  const goal = u * total;
  let acc = 0, last = arg;
  for (let i = 0; i < V; i++) {
    if (logits[i] < t) continue;
    acc += w(logits[i]);
    last = i;
    if (acc > goal) return i;
  }
  return last;
}
