/**
 * Quest (Tang et al. 2024, "Quest: Query-Aware Sparsity for Efficient Long-Context LLM
 * Inference", https://arxiv.org/abs/2406.10774) on the paged storage: the cache keeps every
 * token (dense append, no eviction: Quest saves reads, not memory), and each decode query
 * attends only to the key chunks that may matter to it. A chunk is `chunk` consecutive slots of
 * a page (the paper's page); per chunk the policy keeps the channel-wise min and max of its
 * keys, and `Σ_d max(q_d·min_d, q_d·max_d)` is an upper bound of q·k for every key k of the
 * chunk. The query attends to the `topK` chunks of largest bound plus the current chunk (the
 * one holding the newest key). Prefill is dense.
 *
 * How it maps onto the {@linkcode CachePolicy} seam (kernels in `shaders/quest.wgsl`):
 * - Slots: the dense policy's plain append (`appendMarks`, `appendSlots`), nothing marked.
 * - `score` (decode) remembers the step's queries; `decodeAttention`, after the key is stored,
 *   records `quest_bounds` (folds the keys stored since the last decode step into their chunks'
 *   bounds: one key per decode step, the whole prompt on the first) and `quest_select` (the
 *   bounds of each chunk for this query, the selection mask), and hands the mask to the decode
 *   attention as its `chunks` selection, whose kernel does not read unselected keys.
 * - GQA: a page's G query heads share one selection (pages are per KV head); the bound of a
 *   chunk is summed over the G heads.
 * - Accounting (SPEC §8, reads = keys actually read): `quest_select` subtracts each page's
 *   unselected keys from the KV-read counter, so `stats().readTokens` counts Σ steps Σ layers
 *   Σ pages selected keys; live and peak tokens stay those of the dense cache. The bounds
 *   themselves (2 rows of D per chunk: 2 / chunk of the cache per step) are not counted.
 * - Cost: `quest_select` ranks chunks by counting, O(chunks²) per page and step, fine for the
 *   few hundred chunks of this library's scale.
 *
 * CPU twins: {@linkcode questChunkBounds}, {@linkcode questBound}, {@linkcode questSelect}.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { createQuestCache } from "./quest.ts";
 * const gpu = await getGpu();
 * using cache = createQuestCache(gpu, { layers: 2, batch: 1, kvHeads: 2, headDim: 64, chunk: 16, topK: 4 });
 * console.log(cache.policy.name); // "quest"
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { dispatchBound } from "../cache/dispatch_bound.ts";
import type { DecodeChunkSelection } from "../cache/paged_attention.ts";
import { appendMarks, appendSlots } from "../cache/paged_kv.ts";
import { PagedKvCache } from "../cache/paged_kv_cache.ts";
import type { PagedKvStorage } from "../cache/paged_storage.ts";
import type { CachePolicy, PolicyStep } from "../cache/policy.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { DenseCacheOptions } from "./dense.ts";
import { intAtLeast } from "./_options.ts";

/** Options of {@linkcode createQuestCache}. */
export interface QuestCacheOptions extends DenseCacheOptions {
  /** Keys (slots) per chunk. Default 16. */
  chunk?: number;
  /** Chunks attended per decode query besides the current one (≥ 0). Default 8. */
  topK?: number;
}

/**
 * Creates a Quest KV cache (dense storage, decode attention over the top-k chunks by key
 * bounds) on the paged storage.
 *
 * @throws {RangeError} For a chunk below 1, a negative topK, or bad sizes (naming the field).
 */
export function createQuestCache(gpu: Gpu, options: QuestCacheOptions): PagedKvCache {
  const op = "createQuestCache";
  const chunk = intAtLeast(op, "chunk", options.chunk ?? 16, 1);
  const topK = intAtLeast(op, "topK", options.topK ?? 8, 0);
  const blockSize = intAtLeast(op, "blockSize", options.blockSize ?? 256, 1);
  const policy = new QuestPolicy(chunk, topK);
  return new PagedKvCache(gpu, { ...options, blockSize }, policy, "QuestCache");
}

/** The Quest policy; see the module documentation. */
export class QuestPolicy implements CachePolicy {
  /** "quest". */
  readonly name = "quest";
  /** 0: nothing is marked. */
  readonly window = 0;
  /** false: decisions are ignored. */
  readonly usesDecisions = false;
  /** Keys per chunk. */
  readonly chunk: number;
  /** Chunks selected per query besides the current one. */
  readonly topK: number;
  #s: PagedKvStorage | undefined;
  /** Per layer `[pages, cap, 2, D]` f32: min and max of each chunk's keys. */
  #bounds: GPUBuffer[] = [];
  /** `[layers, pages]` i32: slots folded into the bounds. */
  #done: GPUBuffer | undefined;
  /** `[pages, cap]` f32 scratch: this step's bound of each chunk. */
  #ub: GPUBuffer | undefined;
  /** `[pages, cap]` u32: this step's selection (shared by the layers, consumed in turn). */
  #sel: GPUBuffer | undefined;
  #cap = 0;
  #q: Tensor | undefined;

  /** A policy with `chunk` keys per chunk attending to `topK` chunks besides the current one. */
  constructor(chunk: number, topK: number) {
    this.chunk = intAtLeast("QuestPolicy", "chunk", chunk, 1);
    this.topK = intAtLeast("QuestPolicy", "topK", topK, 0);
  }

  /** Allocates the folded counters `[layers, pages]` (zeroed); bounds grow with the pages. */
  attach(storage: PagedKvStorage): void {
    this.#s = storage;
    this.#done = storage.gpu.alloc(storage.layers * storage.pages * 4, "quest done");
    storage.gpu.encoder().clearBuffer(this.#done);
  }

  /** Appends the token at len. */
  decodeUpdate(step: PolicyStep): void {
    appendSlots(this.#storage, step.layer, 1, step.firstReal, step.dest, true);
  }

  /** Marks real tokens 0 and padding 2. */
  prefillMarks(step: PolicyStep): void {
    appendMarks(this.#storage, step.n, step.firstReal, step.marks);
  }

  /** Appends the chunk's real tokens (prefill is dense). */
  prefillCompact(step: PolicyStep): void {
    appendSlots(this.#storage, step.layer, step.n, step.firstReal, step.dest, false);
  }

  /** Remembers a decode step's queries `[B, Hq, 1, D]` for {@linkcode QuestPolicy.decodeAttention}. */
  score(step: PolicyStep, q: Tensor): void {
    this.#q = step.n === 1 ? q : undefined;
  }

  /** Folds new keys into the bounds, selects the chunks; attention reads only those. */
  decodeAttention(step: PolicyStep): { chunks: DecodeChunkSelection } {
    const s = this.#storage, gpu = s.gpu, q = this.#q;
    if (!q) throw new Error("QuestPolicy.decodeAttention: no queries (score() was not called)");
    this.#q = undefined;
    let most = 1;
    for (const b of s.bounds(step.layer)) most = Math.max(most, b);
    this.#grow(Math.ceil(most / this.chunk));
    const G = q.shape[1] / s.kvHeads;
    const bufs = [
      undefined,
      s.lens,
      s.table,
      s.pool(step.layer).k,
      this.#bounds[step.layer],
      this.#done,
      q.buffer,
      this.#ub,
      this.#sel,
      s.counters,
    ];
    const params = {
      pages: s.pages,
      d: s.headDim,
      g: G,
      bs: s.blockSize,
      mb: s.tableWidth,
      lbase: step.layer * s.pages,
      chunk: this.chunk,
      cap: this.#cap,
      topk: this.topK,
    };
    for (const entry of ["quest_bounds", "quest_select"]) {
      const kern = gpu.kernel({
        shader: "quest",
        entry,
        defines: { T: s.dtype },
        constants: { WG: 64 },
      });
      dispatchBound(gpu, kern, bufs, Gpu.grid(s.pages), params);
    }
    return { chunks: { select: this.#sel!, size: this.chunk, stride: this.#cap } };
  }

  /**
   * Reads back the last decode attention's selection, `[pages, chunks]` u32 (1 = attended), and
   * one layer's chunk bounds `[pages, chunks, 2, D]` (min row, max row). For tests and debugging.
   */
  async readState(layer: number): Promise<{ select: Uint32Array; bounds: Float32Array }> {
    const s = this.#storage, cap = this.#cap;
    if (cap === 0) return { select: new Uint32Array(0), bounds: new Float32Array(0) };
    const [a, b] = await s.gpu.readMany([
      { buffer: this.#sel!, size: s.pages * cap * 4 },
      { buffer: this.#bounds[layer], size: s.pages * cap * 2 * s.headDim * 4 },
    ]);
    return { select: new Uint32Array(a), bounds: new Float32Array(b) };
  }

  /** Chunks per page row of the selection and bounds buffers (0 before the first decode step). */
  get capacity(): number {
    return this.#cap;
  }

  /** Frees the bounds, counters, scratch and selection. Idempotent. */
  dispose(): void {
    if (!this.#s) return;
    const g = this.#s.gpu;
    for (const b of [...this.#bounds, this.#done, this.#ub, this.#sel]) if (b) g.release(b);
    this.#bounds = [];
    this.#s = undefined;
  }

  /** `using policy = ...` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  get #storage(): PagedKvStorage {
    if (!this.#s) throw new Error("QuestPolicy: not attached to a storage (or disposed)");
    return this.#s;
  }

  /** Grows every row to `need` chunks at least (×1.5), keeping each page's bounds. */
  #grow(need: number): void {
    if (need <= this.#cap) return;
    const s = this.#storage, gpu = s.gpu, old = this.#cap;
    const cap = Math.max(need, Math.ceil(old * 1.5), 4);
    const row = 2 * s.headDim * 4;
    const enc = gpu.encoder();
    for (let l = 0; l < s.layers; l++) {
      const nu = gpu.alloc(s.pages * cap * row, "quest bounds");
      const prev = this.#bounds[l];
      if (prev) {
        for (let p = 0; p < s.pages; p++) {
          enc.copyBufferToBuffer(prev, p * old * row, nu, p * cap * row, old * row);
        }
        gpu.release(prev);
      }
      this.#bounds[l] = nu;
    }
    if (this.#ub) gpu.release(this.#ub);
    if (this.#sel) gpu.release(this.#sel);
    this.#ub = gpu.alloc(s.pages * cap * 4, "quest bounds per chunk");
    this.#sel = gpu.alloc(s.pages * cap * 4, "quest selection");
    this.#cap = cap;
  }
}

/**
 * CPU twin of the chunk bounds of one page: channel-wise min and max of the keys of each chunk
 * of `chunk` slots.
 *
 * @param keys `[len, D]` the page's keys in slot order.
 * @returns `min`, `max`: `[chunks, D]` each, chunks = ceil(len / chunk).
 *
 * @example
 * ```ts
 * import { questChunkBounds } from "./quest.ts";
 * const { min, max } = questChunkBounds([1, -2, 3, 0, 5, 5], 2, 2);
 * console.log(min, max); // [1, -2, 5, 5] [3, 0, 5, 5]
 * ```
 */
export function questChunkBounds(
  keys: ArrayLike<number>,
  D: number,
  chunk: number,
): { min: Float64Array; max: Float64Array } {
  const len = keys.length / D, nch = Math.ceil(len / chunk);
  const min = new Float64Array(nch * D).fill(Infinity);
  const max = new Float64Array(nch * D).fill(-Infinity);
  for (let s = 0; s < len; s++) {
    const c = Math.floor(s / chunk);
    for (let d = 0; d < D; d++) {
      min[c * D + d] = Math.min(min[c * D + d], keys[s * D + d]);
      max[c * D + d] = Math.max(max[c * D + d], keys[s * D + d]);
    }
  }
  return { min, max };
}

/**
 * CPU twin of a chunk's bound: Σ_g Σ_d max(q_gd·min_d, q_gd·max_d), an upper bound of
 * Σ_g q_g·k for every key k with min ≤ k ≤ max channel-wise (each term bounds q_gd·k_d).
 *
 * @param q `[G, D]` the query heads that share the page.
 * @param min `[D]` the chunk's channel-wise minimum.
 * @param max `[D]` the chunk's channel-wise maximum.
 *
 * @example
 * ```ts
 * import { questBound } from "./quest.ts";
 * console.log(questBound([1, -1], [0, -2], [2, 1])); // 2 + 2 = 4
 * ```
 */
export function questBound(
  q: ArrayLike<number>,
  min: ArrayLike<number>,
  max: ArrayLike<number>,
): number {
  const D = min.length;
  let u = 0;
  for (let i = 0; i < q.length; i++) {
    const d = i % D;
    u += Math.max(q[i] * min[d], q[i] * max[d]);
  }
  return u;
}

/**
 * CPU twin of the selection: the last chunk (the current one) and, of the others, the `topK`
 * with the largest bound, ties to the lower chunk.
 *
 * @param bounds Bound of each chunk, chunk 0 first.
 * @returns 1 for each selected chunk, else 0.
 *
 * @example
 * ```ts
 * import { questSelect } from "./quest.ts";
 * console.log(questSelect([3, 7, 3, 1], 2)); // [1, 1, 0, 1]
 * ```
 */
export function questSelect(bounds: readonly number[], topK: number): number[] {
  const n = bounds.length;
  const order = bounds.slice(0, Math.max(0, n - 1)).map((u, c) => ({ u, c }));
  order.sort((a, b) => b.u - a.u || a.c - b.c);
  const sel = bounds.map((_, c) => (c === n - 1 ? 1 : 0));
  for (const { c } of order.slice(0, topK)) sel[c] = 1;
  return sel;
}
