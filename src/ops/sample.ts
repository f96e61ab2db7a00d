/**
 * Next-token sampling on the GPU: greedy, temperature, top-k, top-p (in
 * Hugging Face's order), seeded. The sampled token is written into an i32
 * buffer that the next decode step reads as its input, and into a token log,
 * so a generation loop never reads back per token.
 *
 * Kernel (`shaders/sample.wgsl`): one workgroup per row; max by tree
 * reduction; top-k and top-p thresholds by bisection on the value (then
 * snapped to an element value, so ties at the threshold are kept like HF's
 * `logits < kth_value` filter); the draw `u` depends only on
 * `(seed, step, row)` through a PCG hash and is inverted with a segmented
 * prefix sum. The CPU reference {@linkcode sampleReference} computes the same
 * thresholds exactly by sorting.
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
 * @module
 */

import { Params } from "../gpu/device.ts";
import { pcgHash } from "../tensor/random.ts";
import { fmtShape, Tensor } from "../tensor/tensor.ts";

/** Sampling settings (HF names in camelCase). */
export interface SampleOptions {
  /** 0 (default) = greedy; otherwise logits are divided by it. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off). */
  topK?: number;
  /** Keep the smallest set of most likely tokens with probability mass ≥ topP (1 = off). */
  topP?: number;
  /** Random seed (default 0). */
  seed?: number;
}

/** Where {@linkcode sample} writes, and which draw it uses. */
export interface SampleTargets {
  /** Decode step counter mixed into the draw (default 0). */
  step?: number;
  /** i32 tensor of B elements (e.g. the next step's `[B, 1]` input ids) to write into. */
  out?: Tensor;
  /** i32 `[B, C]` token log; column `logColumn` receives this step's tokens. */
  log?: Tensor;
  /** Column of `log` (default 0). */
  logColumn?: number;
}

/**
 * Samples one token per row of `logits:[B, V]` (f32) on the GPU.
 *
 * @returns i32 `[B]` tokens, or `opts.out` itself when given.
 * @throws {RangeError} For bad shapes or options (naming them).
 */
export function sample(logits: Tensor, opts: SampleOptions & SampleTargets = {}): Tensor<"i32"> {
  if (logits.dtype !== "f32" || logits.rank !== 2) {
    throw new RangeError(
      `sample(): logits must be f32 [B, V], got ${logits.dtype}${fmtShape(logits.shape)}`,
    );
  }
  const [B, V] = logits.shape;
  const temperature = opts.temperature ?? 0, topK = opts.topK ?? 0, topP = opts.topP ?? 1;
  if (!(temperature >= 0 && Number.isFinite(temperature))) {
    throw new RangeError(`sample(): temperature must be >= 0, got ${temperature}`);
  }
  if (!(Number.isInteger(topK) && topK >= 0)) {
    throw new RangeError(`sample(): topK must be an integer >= 0, got ${topK}`);
  }
  if (!(topP > 0 && topP <= 1)) {
    throw new RangeError(`sample(): topP must be in (0, 1], got ${topP}`);
  }
  const gpu = logits.gpu;
  const out = opts.out ?? Tensor.empty(gpu, [B], "i32");
  if (out.dtype !== "i32" || out.size !== B) {
    throw new RangeError(
      `sample(): out must be i32 with ${B} elements, got ${out.dtype}${fmtShape(out.shape)}`,
    );
  }
  const log = opts.log ?? out;
  const cols = opts.log ? log.shape[log.rank - 1] : 1;
  const col = opts.log ? (opts.logColumn ?? 0) : 0;
  if (
    opts.log &&
    (log.dtype !== "i32" || log.rank !== 2 || log.shape[0] !== B || !(col >= 0 && col < cols))
  ) {
    throw new RangeError(
      `sample(): log must be i32 [${B}, C] with 0 <= logColumn < C, got ${log.dtype}${
        fmtShape(log.shape)
      } column ${col}`,
    );
  }
  if (B === 0) return out as Tensor<"i32">;
  const k = gpu.kernel({ shader: "sample", entry: "sample" });
  const params = new Params().u32(V).u32(cols).u32(col).u32(topK).f32(temperature).f32(topP)
    .u32(opts.seed ?? 0).u32(opts.step ?? 0);
  // Without a log, the kernel's log write goes to a scratch buffer.
  using scratch = opts.log ? undefined : Tensor.empty(gpu, [B], "i32");
  gpu.dispatch(k, [logits.buffer, out.buffer, (scratch ?? log).buffer], [B], params);
  return out as Tensor<"i32">;
}

/** The draw `u ∈ [0, 1)` the kernel uses for `(seed, step, row)`. */
export function sampleUniform(seed: number, step: number, row: number): number {
  const h = pcgHash((pcgHash((pcgHash(seed) ^ step) >>> 0) ^ row) >>> 0);
  return (h >>> 8) / 16777216;
}

/**
 * CPU reference: the token chosen from one row of logits for a given draw `u`
 * (exact thresholds by sorting, f64).
 */
export function sampleReference(logits: ArrayLike<number>, opts: SampleOptions, u: number): number {
  const V = logits.length;
  let m = -Infinity, arg = 0;
  for (let i = 0; i < V; i++) if (logits[i] > m) [m, arg] = [logits[i], i];
  const T = opts.temperature ?? 0;
  if (T <= 0) return arg;
  const x = Array.from(logits, (l) => (l - m) / T);
  const desc = [...x].sort((a, b) => b - a);
  const k = opts.topK ?? 0;
  const tk = k > 0 && k < V ? desc[k - 1] : desc[V - 1];
  let z = 0;
  for (const v of x) if (v >= tk) z += Math.exp(v);
  let t = tk;
  const p = opts.topP ?? 1;
  if (p < 1) {
    let acc = 0;
    for (const v of desc) {
      if (v < tk) break;
      acc += Math.exp(v);
      t = v;
      if (acc >= p * z) break;
    }
  }
  let total = 0;
  for (const v of x) if (v >= t) total += Math.exp(v);
  const target = u * total;
  let acc = 0, last = 0;
  for (let i = 0; i < V; i++) {
    if (x[i] < t) continue;
    acc += Math.exp(x[i]);
    last = i;
    if (acc > target) return i;
  }
  return last;
}
