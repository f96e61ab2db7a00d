/**
 * The `KvCache` interface: what the model's attention layer talks to, shared by the dense
 * cache, the DMS cache ({@linkcode ../dms/dms_cache.ts}) and later baselines (TOVA, H2O,
 * StreamingLLM, Quest). All of them keep their entries in the same paged per-head storage
 * ({@linkcode ./paged_storage.ts}); a policy ({@linkcode ./policy.ts}) only decides which slot each new entry takes and
 * which entries leave.
 *
 * @example One model step through any cache
 * ```ts
 * import type { KvCache } from "./kv_cache.ts";
 * import type { Tensor } from "../tensor/tensor.ts";
 * declare const cache: KvCache;
 * declare const q: Tensor, k: Tensor, v: Tensor, d: Tensor; // q:[B,Hq,n,D] k,v:[B,Hkv,n,D] d:[B,Hkv,n]
 * await cache.reserve(64);                       // every 64 tokens: at most one readback
 * for (let layer = 0; layer < cache.layers; layer++) {
 *   using out = cache.attend(layer, q, k, v, d); // n = 1: decode, n > 1: chunked prefill
 * }
 * const s = await cache.stats();
 * console.log(s.liveTokens, s.readTokens, s.compressionRatio);
 * ```
 *
 * @module
 */

import type { ReadRange } from "../gpu/readback.ts";
import type { Tensor } from "../tensor/tensor.ts";

/** Options of {@linkcode KvCache.attend}. */
export interface AttendOptions {
  /**
   * Key padding mask `[B, n]` (row-major, 1 = token, 0 = padding), CPU data. Only left padding
   * is supported (SPEC §9.8): in each row the zeros come first, and once a row has a real token
   * every later mask entry must be 1. Padded positions are never stored and padded queries
   * output 0. Pass the same mask to every layer of the step.
   */
  keyMask?: ArrayLike<number>;
  /** Softmax scale; default `headDim^-0.5` (Qwen3 `scaling`). */
  scale?: number;
}

/** Accounting of a cache (SPEC §5.4, §8). Token counts are KV entries summed over layers and pages. */
export interface KvCacheStats {
  /** Positions processed so far per page, padding included. */
  tokensSeen: number;
  /** Live entries per page: `[layers][B * Hkv]`, page `b * Hkv + h`. */
  lengths: number[][];
  /** Σ over layers and pages of the live entries now. */
  liveTokens: number;
  /** Highest `liveTokens` after any step (decode token or prefill chunk). */
  peakTokens: number;
  /** KV entries read by decode attention: Σ decode steps Σ layers Σ pages current length (SPEC §8). */
  readTokens: number;
  /** Decode steps counted in `readTokens`. */
  decodeSteps: number;
  /** K and V bytes of the live entries (`liveTokens · 2 · headDim · bytes per element`). */
  liveBytes: number;
  /** K and V bytes at `peakTokens`. */
  peakBytes: number;
  /** Bytes of the block pools as allocated (K, V and the per-slot position/mark), all layers. */
  allocatedBytes: number;
  /**
   * The reference's `get_cr` (SPEC §5.4): `1 / mean over layers and pages of (len / tokensSeen)`,
   * window entries counted as retained, padding counted in `tokensSeen`.
   */
  compressionRatio: number;
  /** Dense over kept: `Σ real tokens / Σ live entries` over all layers and pages (padding excluded). */
  compressionRatioDenseOverKept: number;
}

/**
 * A decode step's slots chosen for every layer before its first one (`CachePolicy.decodeSlots`,
 * the DMS policy: SPEC §5.2 steps 1, 2 and 4), for a kernel that stores the entries and runs
 * step 3 (the step's decision d_t marks token t − 1) itself.
 */
export interface DecodeSlots {
  /** i32 `[layers, pages]` the slot of each page's new entry. */
  dest: GPUBuffer;
  /** i32 `[layers, pages, cacheWindow, 2]` (slot, flag) of the last Wc positions, by position % Wc. */
  ring: GPUBuffer;
  /** Wc = W + 1 (≥ 2). */
  cacheWindow: number;
}

/**
 * Where a kernel stores a decode step's new entry of one layer itself
 * ({@linkcode KvCache.decodeAppendTarget}): page p = b·Hkv + h takes slot s = `lens[lbase + p]`
 * (then `lens[lbase + p] = s + 1`), or with `slots` s = `slots.dest[lbase + p]` (lens already
 * counted), entry e = `table[(lbase + p)·tableWidth + s / blockSize]·blockSize + s % blockSize`
 * of the pools, whose K and V rows (D elements of the storage dtype) get the key and value and
 * whose meta `(position, mark)` gets `(t0, 0)`. With `slots` the kernel also marks the entry of
 * position t0 − 1 (ring row `(lbase + p)·Wc + (t0 − 1) % Wc`, if its slot is ≥ 0) with the step's
 * decision, in the ring and in its meta.
 */
export interface DecodeAppendTarget {
  /** i32 `[layers, pages]` live entries of each page. */
  lens: GPUBuffer;
  /** i32 `[layers, pages, tableWidth]` block of each run of `blockSize` slots. */
  table: GPUBuffer;
  /** i32 `[entries, 2]` (position, mark) of this layer's pool. */
  meta: GPUBuffer;
  /** `[entries, D]` keys of this layer's pool. */
  k: GPUBuffer;
  /** `[entries, D]` values of this layer's pool. */
  v: GPUBuffer;
  /** `layer · pages`: this layer's first row of `lens` and `table`. */
  lbase: number;
  /** Slots per block. */
  blockSize: number;
  /** Blocks per page row of `table`. */
  tableWidth: number;
  /** Position of the new token. */
  t0: number;
  /** The slots of a policy that chooses them per step (DMS); absent: append at `lens`. */
  slots?: DecodeSlots;
}

/** A per-layer, per-head KV cache with attention through it. */
export interface KvCache extends Disposable {
  /** Decoder layers. */
  readonly layers: number;
  /** Sequences. */
  readonly batch: number;
  /** KV heads per layer. */
  readonly kvHeads: number;
  /** Channels per head. */
  readonly headDim: number;
  /** Storage element type; q, k and v must have it too. */
  readonly dtype: "f32" | "f16";
  /** Positions processed so far (advanced after the last layer of each step). */
  readonly tokensSeen: number;

  /**
   * Stores the step's keys and values for `layer`, applies the policy, and returns attention of
   * `q` over everything the policy lets each query see. Layers must be called in order
   * 0..layers-1 within a step, all with the same `n`. `n = 1` without a padding mask is a decode
   * step; otherwise a (chunked) prefill whose queries attend to all earlier tokens and to the
   * chunk causally.
   *
   * @param layer Decoder layer index.
   * @param q Queries `[B, Hq, n, D]`, post-RoPE, Hq a multiple of Hkv (HF GQA order).
   * @param k Keys `[B, Hkv, n, D]`, post-RoPE.
   * @param v Values `[B, Hkv, n, D]`.
   * @param decisions Hard eviction decisions `[B, Hkv, n]` i32 (unshifted: `d[t]` marks token
   *   t-1, SPEC §2); ignored (and optional) for policies that do not use them, and for a layer
   *   whose entry a kernel stored ({@linkcode KvCache.decodeAppendTarget}).
   * @returns `[B, Hq, n, D]` in the cache's dtype; padded query rows are 0.
   */
  attend(
    layer: number,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    decisions?: Tensor,
    options?: AttendOptions,
  ): Tensor;

  /**
   * Makes sure every page has room for `steps` more tokens without allocating pessimistically,
   * refreshing the true lengths with one batched readback only when the CPU's upper bounds say
   * new blocks would be needed. Call it every N decode tokens (and before a big prefill).
   */
  reserve(steps: number): Promise<void>;

  /** Reads the lengths and the GPU counters back (one readback) and returns the accounting. */
  stats(): Promise<KvCacheStats>;

  /**
   * {@linkcode KvCache.reserve} and {@linkcode KvCache.stats} in one readback, together with
   * byte ranges the caller reads anyway: generation reads its sampled tokens this way, so a chunk
   * of decode steps costs one readback whatever the cache needs. Call it between steps, with
   * nothing encoded while it waits. (Added to the interface on 2026-12-04: a cache implemented
   * outside this package needs it too.)
   *
   * @param steps Room to make on every page, as in `reserve` (0: none), or a function of the
   *   `extra` bytes that returns it (generation reserves 0 once the tokens read show every
   *   sequence finished).
   * @param extra Ranges to read back in the same readback.
   * @returns The bytes of `extra` in order, and the accounting as of the readback (before any
   *   block is allocated).
   * @param during Optional: called once the readback is on its way (copies submitted) and before
   *   waiting for it, with the decode steps every page has room for without a new block; it may
   *   encode up to that many decode steps (so the GPU works while the readback waits for Deno's
   *   ~10 ms poll) and returns how many it encoded. The lengths read are then raised by that many
   *   before the room is reserved; the accounting is as of the readback. A cache may ignore it
   *   (never call it).
   */
  reserveAndRead(
    steps: number | ((extra: ArrayBuffer[]) => number),
    extra: readonly ReadRange[],
    during?: (room: number) => number,
  ): Promise<{ bytes: ArrayBuffer[]; stats: KvCacheStats }>;

  /**
   * Optional, for generation's replayed decode steps (`generate`'s `replay`): called instead of
   * `attend` for every layer of a decode step whose GPU work `generate` replays from a trace of
   * the previous decode step (`Gpu.replay`, with the uniform words that change per step, such as
   * the position, patched). Advances what the cache keeps on the CPU by that step and returns
   * true, or returns false and changes nothing when the step would encode differently from the
   * previous one (a new block, another kernel plan, a policy with CPU-side state per step, a
   * previous step that was not a plain decode step); `generate` then runs the step through
   * `attend`.
   */
  replayDecodeStep?(): boolean;

  /**
   * Optional: for a decode step (one token a sequence, no key mask), makes room for `layer`'s
   * new entry and returns where a kernel may store it ({@linkcode DecodeAppendTarget}): for a
   * policy that appends in place (dense), or, when the caller's kernel computes the step's
   * decisions (`decides`), for a policy that chooses the step's slots up front (DMS: at layer 0
   * for every layer; the step's other layers must then take this path too). The caller's kernel
   * must store the entry (key post-RoPE) before `attend(layer, ...)`, which then skips its own
   * append. The model fuses this into its q/k preparation: one dispatch a layer fewer. Undefined
   * (nothing changed) when the cache or its policy cannot, or for a storage dtype other than
   * `dtype`.
   */
  decodeAppendTarget?(
    layer: number,
    dtype: "f32" | "f16",
    decides: boolean,
  ): DecodeAppendTarget | undefined;

  /** Frees the GPU buffers. */
  dispose(): void;
}
