/**
 * The DMS policy: delayed eviction with a sliding window (SPEC §2, §5) as a
 * {@linkcode CachePolicy} on the paged per-head storage, and `DmsCache`, the generic
 * {@linkcode PagedKvCache} with it (which does the attention through the pages and the
 * accounting). Everything runs on the GPU; a step reads nothing back. Kernels:
 * `shaders/dms_cache.wgsl`.
 *
 * Index conventions (`src/dms/oracle.ts` is their CPU oracle): `d[t]` (decision computed at
 * token t) marks key t−1, `mark(i) = d(i+1)`, the newest key is unmarked (§2). With the cache
 * window Wc = W + 1, query q sees key i iff i ≤ q, i is not padding, and `mark(i) = 0` or
 * `q − i ≤ W` (§5.1). Positions are column indices: left padding occupies positions too.
 *
 * Policy state per layer and page (b, h): a ring of the last Wc positions, `ring[pos % Wc] =
 * (slot, flag)` (slot −1: no entry there, e.g. padding), kept equal to the storage's per-slot
 * mark. Invariant after every step: the page holds exactly the keys the next query may see,
 * i.e. every stored entry with mark 1 lies in the ring (pos + Wc > newest), and slots
 * 0..len−1 are all live.
 *
 * Decode (n = 1, kernel `decode_update`, then `scatter`, or both as `decode_update_scatter`,
 * then attention): SPEC §5.2 steps 1–4
 * literally. c = ring[t % Wc] is token t − Wc; if flagged, the new token overwrites its slot
 * (the eviction, before attention), else it is appended at len; d_t is written as the flag of
 * token t − 1 (if the page is non-empty); ring[t % Wc] = (slot, 0). Block allocation (§5.2 step
 * 5) is CPU-side from an upper bound of len (see `PagedKvCache.reserve`).
 *
 * Prefill of a chunk of n tokens at positions t0..t0+n−1 (simpler than the reference's
 * recent+paged split of §5.3, and equivalent):
 * 1. `prefill_marks`: chunk marks d(j+1) for j < n−1, 0 for the last, 2 for padding; the carry
 *    writes d(0) onto the previous newest entry (position t0 − 1) (§2 "Prefill").
 * 2. Attention of the chunk's queries over the page's entries plus the chunk's own keys (read
 *    from k/v directly), with the exact §5.1 rule on (position, mark). Because the page holds
 *    every key any later query can see (invariant), this equals the dense §5.1 oracle over all
 *    tokens so far.
 * 3. `prefill_compact`: drops the entries no future query sees, i.e. mark 1 and
 *    pos + Wc ≤ newest (= t0 + n − 1): old ones can only be in the ring, new ones are chunk
 *    entries j ≤ n − 1 − Wc with d(j+1) = 1; padding is never stored. The freed old slots are
 *    refilled first by the chunk's survivors (in position order), the rest are appended at len,
 *    so slots 0..len'−1 stay dense; the ring is rewritten for the last Wc positions.
 * 4. `scatter` writes the survivors' K, V, position and mark.
 * The result is what token-by-token decode leaves: the same set of positions per page (the
 * keys the next query may see, §5.1), the same last-Wc entries and flags. The proof that no
 * slot is left empty: when a page is non-empty the chunk has no padding, at most min(n, Wc) old
 * entries leave, and at least min(n, Wc) new ones (the last Wc) stay. Prefill works after
 * decode too, so multi-turn use (prefill → decode → prefill → …) equals one long sequence,
 * which the reference cannot do (it falls back to 1-token prefills, §5.3 "Mode handling").
 *
 * The dense cache is the dense policy (`createDenseCache` in `src/policies/dense.ts`, the
 * storage's plain append); `evict: false` here is the same slot choice run through the DMS
 * kernels (every decision read as 0, Wc = 1), kept for callers that switch eviction with one
 * flag.
 *
 * @example Prefill a prompt, then decode, through a DMS cache (one layer shown)
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { createDmsCache } from "./dms_cache.ts";
 * const gpu = await getGpu();
 * const [B, Hkv, Hq, D, P] = [1, 2, 4, 16, 10];
 * using cache = createDmsCache(gpu, { layers: 1, batch: B, kvHeads: Hkv, headDim: D, window: 4, blockSize: 2 });
 * const rnd = (n: number) => Array.from({ length: n }, () => Math.random() - 0.5);
 * using q = Tensor.fromArray(gpu, rnd(B * Hq * P * D), [B, Hq, P, D]);
 * using k = Tensor.fromArray(gpu, rnd(B * Hkv * P * D), [B, Hkv, P, D]);
 * using v = Tensor.fromArray(gpu, rnd(B * Hkv * P * D), [B, Hkv, P, D]);
 * using d = Tensor.fromArray(gpu, Array.from({ length: B * Hkv * P }, (_, i) => i % 2), [B, Hkv, P], "i32");
 * using out = cache.attend(0, q, k, v, d);             // prefill: out [1, 4, 10, 16]
 * await cache.reserve(1);
 * using q1 = Tensor.fromArray(gpu, rnd(B * Hq * D), [B, Hq, 1, D]);
 * using k1 = Tensor.fromArray(gpu, rnd(B * Hkv * D), [B, Hkv, 1, D]);
 * using v1 = Tensor.fromArray(gpu, rnd(B * Hkv * D), [B, Hkv, 1, D]);
 * using d1 = Tensor.fromArray(gpu, [1, 0], [B, Hkv, 1], "i32");
 * using o1 = cache.attend(0, q1, k1, v1, d1);           // decode: o1 [1, 4, 1, 16]
 * console.log((await cache.stats()).lengths); // [[8, 8]]: the last 5 positions + odd keys 1, 3, 5
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { dispatchBound } from "../cache/dispatch_bound.ts";
import { PagedKvCache } from "../cache/paged_kv_cache.ts";
import type { PagedKvStorage, PageEntries } from "../cache/paged_storage.ts";
import type { CachePolicy, PolicyStep } from "../cache/policy.ts";
import type { DecodeSlots } from "../cache/kv_cache.ts";
import type { Tensor } from "../tensor/tensor.ts";

/** Options of {@linkcode createDmsCache}. */
export interface DmsCacheOptions {
  /** Decoder layers. */
  layers: number;
  /** Sequences B. */
  batch: number;
  /** KV heads per layer Hkv. */
  kvHeads: number;
  /** Channels per head D. */
  headDim: number;
  /**
   * W = `dms_window_size` (512 in the checkpoints): a marked key stays visible for distances
   * 0..W and leaves when token i + W + 1 arrives. The cache window is Wc = W + 1. Required
   * unless `evict` is false.
   */
  window?: number;
  /** Entries per block (`dms_paged_attention_block_size`); at most W + 1. Default min(256, W + 1). */
  blockSize?: number;
  /** Storage dtype of K and V (q, k, v must match). Default f32. */
  dtype?: "f32" | "f16";
  /**
   * false: nothing is evicted and decisions are ignored (the DMS kernels with Wc = 1). Default
   * true. Prefer `createDenseCache` (src/policies/dense.ts) for a dense cache.
   */
  evict?: boolean;
  /** Tokens per page the initial pool holds (SPEC: 4096). */
  preallocateTokens?: number;
  /** Keys per attention partition (rounded up to 32); default chosen from the lengths. For tests and benchmarks. */
  partitionKeys?: number;
  /** Decode attention kernel, `"split"` (default) or `"tiled"`; see `PagedStorageOptions`. */
  decodeKernel?: "split" | "tiled" | "simple";
}

/** One page's state from {@linkcode DmsCache.inspect}. */
export interface DmsPageState extends PageEntries {
  /** The ring: the last Wc positions that have an entry, oldest first, with their slot and flag. */
  recent: { position: number; slot: number; flag: number }[];
}

/**
 * Creates a DMS cache (or, with `evict: false`, a cache that never evicts) on the GPU.
 *
 * @throws {RangeError} For a window that is not an integer ≥ 1, a block size that is not an
 *   integer ≥ 1 or exceeds the cache window W + 1, or bad sizes.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { createDmsCache } from "./dms_cache.ts";
 * const gpu = await getGpu();
 * using cache = createDmsCache(gpu, { layers: 28, batch: 1, kvHeads: 8, headDim: 128, window: 512, dtype: "f16" });
 * ```
 */
export function createDmsCache(gpu: Gpu, options: DmsCacheOptions): DmsCache {
  return new DmsCache(gpu, options);
}

/**
 * The DMS policy (SPEC §5.2): the ring of the last Wc positions per layer and page, decode
 * recycling of a flagged slot leaving the window, prefill marks with the carry, and prefill
 * compaction. See the module documentation.
 */
export class DmsPolicy implements CachePolicy {
  /** "dms". */
  readonly name = "dms";
  /** W; 0 when `evict` is false. */
  readonly window: number;
  /** Wc = W + 1, the ring size. */
  readonly cacheWindow: number;
  /** false: every decision read as 0 (nothing evicted). */
  readonly evict: boolean;
  /** Whether decisions are required: when `evict` is true. */
  readonly usesDecisions: boolean;
  /** The ring and the decisions live on the GPU: every decode step is the same dispatches. */
  readonly replaySafe = true;
  #s: PagedKvStorage | undefined;
  #ring: GPUBuffer | undefined;
  #holes: GPUBuffer | undefined;
  #slots: GPUBuffer | undefined; // decodeSlots: i32 [layers, pages]

  /** A DMS policy with window W (taken as 0 when `evict` is false: nothing is marked). */
  constructor(window: number, evict = true) {
    this.evict = evict;
    this.window = evict ? window : 0;
    this.cacheWindow = this.window + 1;
    this.usesDecisions = evict;
  }

  /** Allocates the ring `[layers, pages, Wc, 2]` (slots −1) and the holes `[pages, Wc]`. */
  attach(storage: PagedKvStorage): void {
    const gpu = storage.gpu, wc = this.cacheWindow;
    this.#s = storage;
    const ring = new Int32Array(storage.layers * storage.pages * wc * 2);
    for (let i = 0; i < ring.length; i += 2) ring[i] = -1;
    this.#ring = gpu.alloc(ring.byteLength, "dms ring");
    gpu.write(this.#ring, ring);
    this.#holes = gpu.alloc(storage.pages * wc * 4, "dms holes");
    this.#slots = gpu.alloc(storage.layers * storage.pages * 4, "dms decode slots");
  }

  /** SPEC §5.2 steps 1–4 (kernel `decode_update`). */
  decodeUpdate(step: PolicyStep): void {
    this.#run("decode_update", 64, step, Math.ceil(this.#storage.pages / 64));
  }

  /**
   * SPEC §5.2 steps 1–4 and the new entry's scatter in one dispatch (kernel
   * `decode_update_scatter`, one workgroup per page; K/V rows copied as 32-bit words). False
   * (not fused) when the device binds fewer than 9 storage buffers per stage or a row is not a
   * whole number of words.
   */
  decodeAppend(step: PolicyStep, k: Tensor, v: Tensor): boolean {
    const s = this.#storage, gpu = s.gpu;
    const rowBytes = s.headDim * (s.dtype === "f16" ? 2 : 4);
    if (gpu.limits.maxStorageBuffersPerShaderStage < 9 || rowBytes % 4 !== 0) return false;
    const pool = s.pool(step.layer);
    this.#run("decode_update_scatter", 64, step, s.pages, {
      rw: rowBytes / 4,
      extra: { 10: k.buffer, 11: v.buffer, 12: pool.k, 13: pool.v },
    });
    return true;
  }

  /**
   * SPEC §5.2 steps 1, 2 and 4 of decode token `t0` on every layer at once (kernel
   * `decode_slots`, before the step's first layer): `CachePolicy.decodeSlots`. Undefined (nothing
   * run) without eviction (Wc = 1: the token that leaves is t − 1, whose flag the step's own
   * decision sets).
   */
  decodeSlots(t0: number): DecodeSlots | undefined {
    if (!this.evict || this.cacheWindow < 2) return undefined;
    const s = this.#storage;
    const step: PolicyStep = {
      layer: 0,
      n: 1,
      t0,
      decisions: this.#slots!,
      firstReal: this.#slots!,
      marks: this.#slots!,
      dest: this.#slots!,
    };
    this.#run("decode_slots", 64, step, Math.ceil((s.layers * s.pages) / 64));
    return { dest: this.#slots!, ring: this.#ring!, cacheWindow: this.cacheWindow };
  }

  /** Chunk marks d(j+1), 0 for the last, 2 for padding, and the carry (kernel `prefill_marks`). */
  prefillMarks(step: PolicyStep): void {
    this.#run("prefill_marks", 64, step, Math.ceil((this.#storage.pages * step.n) / 64));
  }

  /** Drops marked entries leaving the window, places the survivors (kernel `prefill_compact`). */
  prefillCompact(step: PolicyStep): void {
    this.#run("prefill_compact", 256, step, this.#storage.pages);
  }

  /**
   * Copies the ring rows of sequence `row` of `src` (a DMS policy with the same window and
   * eviction setting) into every sequence (one readback of `src`'s ring).
   */
  async copySequenceFrom(src: CachePolicy, row: number): Promise<void> {
    if (!(src instanceof DmsPolicy) || src.cacheWindow !== this.cacheWindow) {
      throw new TypeError(
        `DMS policy: can copy only a DMS policy with window ${this.window}, got ${src.name}` +
          (src instanceof DmsPolicy ? ` with window ${src.window}` : ""),
      );
    }
    const a = src.#storage, b = this.#storage, wc = this.cacheWindow, hkv = b.kvHeads;
    const words = wc * 2;
    const from = new Int32Array(await a.gpu.read(src.#ring!, a.layers * a.pages * words * 4));
    const to = new Int32Array(b.layers * b.pages * words);
    for (let l = 0; l < b.layers; l++) {
      for (let p = 0; p < b.pages; p++) {
        const sp = l * a.pages + row * hkv + (p % hkv);
        to.set(from.subarray(sp * words, (sp + 1) * words), (l * b.pages + p) * words);
      }
    }
    b.gpu.write(this.#ring!, to);
  }

  /**
   * Reads the ring of `layer` back: per page, the last Wc positions before `seen` that have an
   * entry, oldest first. One readback; for tests and debugging.
   */
  async readRing(layer: number, seen: number): Promise<DmsPageState["recent"][]> {
    const s = this.#storage, pages = s.pages, wc = this.cacheWindow;
    const ring = new Int32Array(await s.gpu.read(this.#ring!, s.layers * pages * wc * 8));
    return Array.from({ length: pages }, (_, p) => {
      const recent: DmsPageState["recent"] = [];
      for (let pos = Math.max(0, seen - wc); pos < seen; pos++) {
        const i = ((layer * pages + p) * wc + (pos % wc)) * 2;
        if (ring[i] >= 0) recent.push({ position: pos, slot: ring[i], flag: ring[i + 1] });
      }
      return recent;
    });
  }

  /** Frees the ring and the holes. Idempotent. */
  dispose(): void {
    if (!this.#s) return;
    this.#s.gpu.release(this.#ring!);
    this.#s.gpu.release(this.#holes!);
    this.#s.gpu.release(this.#slots!);
    this.#s = undefined;
  }

  /** `using policy = ...` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  get #storage(): PagedKvStorage {
    if (!this.#s) throw new Error("DmsPolicy: not attached to a storage (or disposed)");
    return this.#s;
  }

  #run(
    entry: string,
    wg: number,
    step: PolicyStep,
    groups: number,
    fused?: { rw: number; extra: Record<number, GPUBuffer> },
  ): void {
    const s = this.#storage, gpu = s.gpu, layer = step.layer;
    const params = {
      pages: s.pages,
      hkv: s.kvHeads,
      n: step.n,
      wc: this.cacheWindow,
      evict: this.evict ? 1 : 0,
      bs: s.blockSize,
      mb: s.tableWidth,
      lbase: layer * s.pages,
      t0: step.t0,
      rw: fused?.rw ?? 0,
      layers: s.layers,
    };
    const kern = gpu.kernel({ shader: "dms_cache", entry, constants: { WG: wg } });
    const bufs = [
      undefined,
      s.lens,
      this.#ring,
      s.table,
      s.meta(layer),
      step.decisions,
      step.firstReal,
      step.marks,
      step.dest,
      this.#holes,
    ];
    for (const [b, buf] of Object.entries(fused?.extra ?? {})) bufs[Number(b)] = buf;
    dispatchBound(gpu, kern, bufs, Gpu.grid(groups), params);
  }
}

/** The DMS KV cache: {@linkcode PagedKvCache} with the {@linkcode DmsPolicy}. */
export class DmsCache extends PagedKvCache {
  /** W; 0 when `evict` is false. */
  readonly window: number;
  /** Wc = W + 1, the ring size. */
  readonly cacheWindow: number;
  /** false: nothing is evicted. */
  readonly evict: boolean;
  readonly #dms: DmsPolicy;

  /** Prefer {@linkcode createDmsCache}. */
  constructor(gpu: Gpu, options: DmsCacheOptions) {
    const evict = options.evict ?? true;
    let window = 0;
    if (evict) {
      const w = options.window;
      if (w === undefined) {
        throw new RangeError("createDmsCache: window is required when evict is true");
      }
      if (!Number.isInteger(w) || w < 1) {
        throw new RangeError(`createDmsCache: window must be an integer >= 1, got ${w}`);
      }
      window = w;
    }
    const blockSize = options.blockSize ?? (evict ? Math.min(256, window + 1) : 256);
    if (!Number.isInteger(blockSize) || blockSize < 1) {
      throw new RangeError(`createDmsCache: blockSize must be an integer >= 1, got ${blockSize}`);
    }
    if (evict && blockSize > window + 1) {
      throw new RangeError(
        `createDmsCache: blockSize ${blockSize} exceeds the cache window W + 1 = ${window + 1} ` +
          `(window ${window}); SPEC §5.2 needs block_size <= W + 1`,
      );
    }
    const policy = new DmsPolicy(window, evict);
    super(
      gpu,
      {
        layers: options.layers,
        batch: options.batch,
        kvHeads: options.kvHeads,
        headDim: options.headDim,
        blockSize,
        dtype: options.dtype,
        preallocateTokens: options.preallocateTokens,
        partitionKeys: options.partitionKeys,
        decodeKernel: options.decodeKernel,
      },
      policy,
      "DmsCache",
    );
    this.#dms = policy;
    this.window = policy.window;
    this.cacheWindow = policy.cacheWindow;
    this.evict = evict;
  }

  /**
   * Reads one layer's pages back: live positions and marks in slot order, and the ring (last
   * Wc positions with an entry, oldest first). For tests and debugging; two readbacks.
   */
  async inspect(layer: number): Promise<DmsPageState[]> {
    const entries = await this.storage.snapshot(layer);
    const rings = await this.#dms.readRing(layer, this.tokensSeen);
    return entries.map((e, p) => ({ ...e, recent: rings[p] }));
  }
}
