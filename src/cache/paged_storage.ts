/**
 * Paged per-head KV storage on the GPU: block pools, geometric growth, reserve, lengths, the
 * step counters and their readbacks. Policies ({@linkcode ./policy.ts}: dense in
 * `src/policies/dense.ts`, DMS in `src/dms/dms_cache.ts`) decide which slot each entry takes;
 * the kernels that append, write and count entries are {@linkcode ./paged_kv.ts}, attention
 * through the pages is {@linkcode ./paged_attention.ts}, the block table
 * {@linkcode ./block_table.ts}. This module only allocates and reads back.
 *
 * Layout, per layer ℓ and page p = b·Hkv + h (SPEC §5.2 "Paging"):
 * - a pool of blocks of `blockSize` entries: K `[blocks, blockSize, D]`, V the same, and
 *   `meta [blocks, blockSize, 2]` i32 = (absolute position, mark) of each entry. Keys are
 *   stored post-RoPE; with the position stored too, attention applies the §5.1 rule exactly
 *   even to entries a policy has not removed yet (and storage order never matters);
 * - a block table row per page ({@linkcode BlockTable}: CPU-owned, uploaded when it changes):
 *   slot s of the page lives in block `table[ℓ, p, s / blockSize]` at offset `s % blockSize`;
 * - `lens[ℓ, p]` (GPU): the page's live entries occupy slots 0..len-1. Policies keep them
 *   dense (an evicted slot is refilled in place, never left as a hole).
 * - The pool starts with `ceil(preallocateTokens / blockSize) · B · Hkv` blocks (each page
 *   gets one block up front) and grows geometrically, `new = ceil(1.5 · old)` (repeated until
 *   large enough), copying the old contents on the GPU. Blocks are never freed within a
 *   sequence (SPEC §9.11: the allocation follows the longest a page has been).
 *
 * Lengths live on the GPU, so allocation cannot read them every token. The CPU keeps an upper
 * bound per page (+1 per decode token, +n per prefill chunk). {@linkcode PagedKvStorage.ensure}
 * allocates from the bound alone (never reads back; safe but may over-allocate under
 * eviction); {@linkcode PagedKvStorage.reserve} first refreshes every bound with one batched
 * readback of all layers' lengths, but only when some bound would need a new block. A decode
 * loop that calls `reserve(N)` every N tokens therefore reads back at most once per N tokens
 * and its pools follow the true lengths.
 *
 * The counters (live, peak, 64-bit reads, steps) are updated on the GPU by `accountStep`
 * ({@linkcode ./paged_kv.ts}) and read back only by {@linkcode PagedKvStorage.readCounters}.
 *
 * @example A storage with two pages (policies and {@linkcode ./paged_kv_cache.ts} drive it)
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { PagedKvStorage } from "./paged_storage.ts";
 * const gpu = await getGpu();
 * const s = new PagedKvStorage(gpu, { layers: 1, batch: 1, kvHeads: 2, headDim: 64, blockSize: 16 });
 * await s.reserve(128);
 * console.log(await s.readLengths()); // Int32Array [0, 0]
 * s.dispose();
 * ```
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import type { ReadRange } from "../gpu/readback.ts";
import { bytesPer } from "../tensor/dtype.ts";
import { BlockTable } from "./block_table.ts";
import {
  checkStorageOptions,
  type LayerPool,
  type PagedStorageOptions,
  type PageEntries,
} from "./paged_options.ts";

export type { LayerPool, PagedStorageOptions, PageEntries } from "./paged_options.ts";

interface Pool {
  k: GPUBuffer;
  v: GPUBuffer;
  meta: GPUBuffer;
  /** Blocks the buffers hold. */
  blocks: number;
  /** Blocks handed out to pages. */
  used: number;
}

/** Keys per attention tile; partitions are multiples of it. */
const KT = 32;
const STATS_WORDS = 8;

/** Per-layer paged KV storage; see the module documentation. */
export class PagedKvStorage {
  /** The device. */
  readonly gpu: Gpu;
  /** Decoder layers. */
  readonly layers: number;
  /** Sequences B. */
  readonly batch: number;
  /** KV heads Hkv. */
  readonly kvHeads: number;
  /** Head dim D. */
  readonly headDim: number;
  /** Entries per block. */
  readonly blockSize: number;
  /** Storage dtype. */
  readonly dtype: "f32" | "f16";
  /** Pages per layer: B · Hkv. */
  readonly pages: number;
  /** `[layers, pages]` i32 live lengths (GPU). */
  readonly lens: GPUBuffer;
  /** u32[8] counters: reads lo/hi, live, peak, decode steps, prefill chunks. */
  readonly counters: GPUBuffer;

  #pools: Pool[] = [];
  #table: BlockTable; // rows [layers, pages]
  #allocated = 0; // blocks allocated so far (blocksAllocated)
  #bound: Float64Array; // [layers, pages] upper bound of the length
  /** A 16-byte scratch buffer bound where a kernel's unused read_write binding needs one. */
  readonly dummy: GPUBuffer;
  /** Keys per attention partition (a multiple of 32), or undefined: chosen from the lengths. */
  readonly partitionKeys: number | undefined;
  /** Decode attention kernel, see {@linkcode PagedStorageOptions.decodeKernel}. */
  readonly decodeKernel: "split" | "tiled" | "simple";
  #disposed = false;

  /** Allocates the pools (one block per page up front) and the zeroed lengths. */
  constructor(gpu: Gpu, options: PagedStorageOptions) {
    const o = options;
    const { dtype, pre, partitionKeys } = checkStorageOptions(gpu, o);
    if (partitionKeys !== undefined) this.partitionKeys = Math.ceil(partitionKeys / KT) * KT;
    this.decodeKernel = o.decodeKernel ?? "split";
    this.gpu = gpu;
    this.layers = o.layers;
    this.batch = o.batch;
    this.kvHeads = o.kvHeads;
    this.headDim = o.headDim;
    this.blockSize = o.blockSize;
    this.dtype = dtype;
    this.pages = o.batch * o.kvHeads;
    const lp = this.layers * this.pages;
    this.lens = gpu.alloc(lp * 4, "kv lens");
    this.counters = gpu.alloc(STATS_WORDS * 4, "kv counters");
    this.dummy = gpu.alloc(16, "kv dummy");
    const enc = gpu.encoder();
    enc.clearBuffer(this.lens);
    enc.clearBuffer(this.counters);
    this.#bound = new Float64Array(lp);
    this.#table = new BlockTable(gpu, lp, this.blockSize);
    const initial = Math.max(1, Math.ceil(pre / this.blockSize)) * this.pages;
    for (let l = 0; l < this.layers; l++) {
      this.#pools.push(this.#newPool(initial));
      for (let p = 0; p < this.pages; p++) this.#allocBlock(l, p);
    }
  }

  /** Block-table width (blocks per page row). */
  get tableWidth(): number {
    return this.#table.width;
  }

  /** The block table `[layers, pages, tableWidth]` i32 on the GPU (uploaded if it changed). */
  get table(): GPUBuffer {
    return this.#table.buffer;
  }

  /** Layer ℓ's pool buffers (replaced when the pool grows: do not keep them across steps). */
  pool(layer: number): LayerPool {
    this.checkLayer(layer);
    return this.#pools[layer];
  }

  /** Layer ℓ's meta buffer `[blocks·blockSize, 2]` i32 (position, mark). */
  meta(layer: number): GPUBuffer {
    return this.#pools[layer].meta;
  }

  /** Blocks allocated to each page of a layer (CPU mirror). */
  blocksOf(layer: number): Int32Array {
    return this.#table.blocks.subarray(layer * this.pages, (layer + 1) * this.pages);
  }

  /** Blocks in the pool of a layer (allocated capacity). */
  poolBlocks(layer: number): number {
    return this.#pools[layer].blocks;
  }

  /** Decode steps every page of every layer has room for without a new block (bounds vs blocks). */
  decodeRoom(): number {
    const bs = this.blockSize, have = this.#table.blocks;
    let room = Infinity;
    for (let i = 0; i < this.#bound.length; i++) {
      room = Math.min(room, have[i] * bs - this.#bound[i]);
    }
    return Math.max(0, room === Infinity ? 0 : room);
  }

  /**
   * Blocks allocated so far, all layers (a version of the block tables and pools: a decode step
   * encoded before and one after a change of it may differ in buffers and grids).
   */
  get blocksAllocated(): number {
    return this.#allocated;
  }

  /**
   * The longest page a decode kernel of `layer` plans its grid for: the most entries any page's
   * blocks hold (≥ every bound, ≥ 1). It changes only when blocks are allocated, so consecutive
   * decode steps between allocations launch the same grids (what replaying a step relies on:
   * `KvCache.replayDecodeStep`); the kernels read each page's true length on the GPU.
   */
  planLength(layer: number): number {
    const base = layer * this.pages, have = this.#table.blocks;
    let most = 1;
    for (let p = 0; p < this.pages; p++) most = Math.max(most, have[base + p] * this.blockSize);
    return most;
  }

  /** The CPU's upper bound of each page's length in a layer. */
  bounds(layer: number): Float64Array {
    return this.#bound.subarray(layer * this.pages, (layer + 1) * this.pages);
  }

  /** Bytes per stored token of K and V. */
  get bytesPerToken(): number {
    return 2 * this.headDim * bytesPer(this.dtype);
  }

  /** Bytes of all pools (K, V and meta), as allocated. */
  get allocatedBytes(): number {
    let blocks = 0;
    for (const p of this.#pools) blocks += p.blocks;
    return blocks * this.blockSize * (this.bytesPerToken + 8);
  }

  /**
   * Allocates blocks so that page p of `layer` can hold `bound + extra(p)` entries, from the
   * CPU bound alone (no readback), and raises the bound by `extra(p)`.
   *
   * @param extra Entries each page may gain in this call (e.g. 1 per decode token), the same
   *   for every page or per page.
   */
  ensure(layer: number, extra: number | ((page: number) => number)): void {
    this.checkLayer(layer);
    const base = layer * this.pages;
    if (typeof extra === "number") {
      // Decode: every bound grows by the same amount; no allocation while the blocks suffice.
      const cap = this.blockSize, have = this.#table.blocks;
      let fits = true;
      for (let p = 0; p < this.pages && fits; p++) {
        fits = this.#bound[base + p] + extra <= have[base + p] * cap;
      }
      if (fits) {
        for (let p = 0; p < this.pages; p++) this.#bound[base + p] += extra;
        return;
      }
      const n = extra;
      extra = () => n;
    }
    const need = Array.from({ length: this.pages }, (_, p) => this.#bound[base + p] + extra(p));
    this.#ensureLayer(layer, need);
    need.forEach((x, p) => (this.#bound[base + p] = x));
  }

  /**
   * Ensures every page of every layer has room for `steps` more entries. Reads the true lengths
   * back (one readback for all layers) only when some bound says a new block would be needed.
   */
  async reserve(steps: number): Promise<void> {
    if (!this.needsLengths(steps)) return;
    this.reserveFrom(await this.readLengths(), steps);
  }

  /**
   * Whether {@linkcode PagedKvStorage.reserve} would read the lengths back for `steps`: some
   * page's CPU bound plus `steps` exceeds its blocks.
   *
   * @throws {RangeError} When `steps` is not an integer >= 0.
   */
  needsLengths(steps: number): boolean {
    if (!Number.isInteger(steps) || steps < 0) {
      throw new RangeError(`reserve: steps must be an integer >= 0, got ${steps}`);
    }
    const bs = this.blockSize;
    for (let i = 0; i < this.#bound.length; i++) {
      if (this.#bound[i] + steps > this.#table.blocks[i] * bs) return true;
    }
    return false;
  }

  /**
   * {@linkcode PagedKvStorage.reserve} from lengths already read back: every bound becomes the
   * true length, then pages get blocks for `steps` more entries. `lens` must be the lengths after
   * every step encoded so far but the last `since` decode steps (each adds at most one entry a
   * page: the bounds become `lens + since`).
   *
   * @param lens `[layers · pages]` (as {@linkcode PagedKvStorage.readLengths} returns them).
   * @param since Decode steps encoded after the lengths were read (default 0).
   * @throws {RangeError} When `steps` is not an integer >= 0 or `lens` has the wrong length.
   */
  reserveFrom(lens: Int32Array, steps: number, since = 0): void {
    if (!Number.isInteger(steps) || steps < 0) {
      throw new RangeError(`reserve: steps must be an integer >= 0, got ${steps}`);
    }
    if (lens.length !== this.#bound.length) {
      throw new RangeError(
        `reserveFrom: expected ${this.#bound.length} lengths (layers · pages), got ${lens.length}`,
      );
    }
    for (let i = 0; i < lens.length; i++) this.#bound[i] = lens[i] + since;
    if (!this.needsLengths(steps)) return;
    for (let l = 0; l < this.layers; l++) {
      const base = l * this.pages;
      this.#ensureLayer(
        l,
        Array.from({ length: this.pages }, (_, p) => this.#bound[base + p] + steps),
      );
    }
  }

  /** The ranges {@linkcode PagedKvStorage.readCounters} reads: the lengths, then the counters. */
  counterRanges(): [ReadRange, ReadRange] {
    return [
      { buffer: this.lens, size: this.layers * this.pages * 4 },
      { buffer: this.counters, size: STATS_WORDS * 4 },
    ];
  }

  /** Reads every layer's page lengths back: `[layers · pages]`, page-major within a layer. */
  async readLengths(): Promise<Int32Array> {
    const bytes = await this.gpu.read(this.lens, this.layers * this.pages * 4);
    return new Int32Array(bytes);
  }

  /** Reads the lengths and the counters back with one readback. */
  async readCounters(): Promise<{ lens: Int32Array; counters: Uint32Array }> {
    const [a, b] = await this.gpu.readMany(this.counterRanges());
    return { lens: new Int32Array(a), counters: new Uint32Array(b) };
  }

  /** Reads one layer's live entries back (positions and marks in slot order), for tests and debugging. */
  async snapshot(layer: number): Promise<PageEntries[]> {
    this.checkLayer(layer);
    const pool = this.#pools[layer];
    const [lb, mbuf] = await this.gpu.readMany([
      { buffer: this.lens, size: this.layers * this.pages * 4 },
      { buffer: pool.meta, size: pool.blocks * this.blockSize * 8 },
    ]);
    const lens = new Int32Array(lb);
    const meta = new Int32Array(mbuf);
    const out: PageEntries[] = [];
    for (let p = 0; p < this.pages; p++) {
      const len = lens[layer * this.pages + p];
      const e: PageEntries = { positions: [], marks: [] };
      for (let s = 0; s < len; s++) {
        const ph = this.physical(layer, p, s);
        e.positions.push(meta[2 * ph]);
        e.marks.push(meta[2 * ph + 1]);
      }
      out.push(e);
    }
    return out;
  }

  /** Physical entry index of slot s of page p (CPU block table). */
  physical(layer: number, page: number, slot: number): number {
    try {
      return this.#table.physical(layer * this.pages + page, slot);
    } catch {
      throw new RangeError(`page ${page} of layer ${layer} has no block for slot ${slot}`);
    }
  }

  /** Frees all GPU buffers. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const g = this.gpu;
    g.flush();
    for (const p of this.#pools) this.#releasePool(p);
    this.#pools = [];
    g.release(this.lens);
    g.release(this.counters);
    this.#table.dispose();
    g.release(this.dummy);
  }

  /** `using storage = ...` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Throws after dispose() or for a layer outside 0..layers-1. */
  checkLayer(layer: number): void {
    if (this.#disposed) throw new Error("PagedKvStorage used after dispose()");
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.layers) {
      throw new RangeError(`layer must be an integer in 0..${this.layers - 1}, got ${layer}`);
    }
  }

  #newPool(blocks: number): Pool {
    const slots = blocks * this.blockSize;
    const bytes = slots * this.headDim * bytesPer(this.dtype);
    const limit = this.gpu.limits.maxStorageBufferBindingSize;
    if (bytes > limit) {
      throw new RangeError(
        `KV pool of ${blocks} blocks × ${this.blockSize} entries × ${this.headDim} channels ` +
          `(${bytes} bytes) exceeds this device's maxStorageBufferBindingSize (${limit})`,
      );
    }
    return {
      k: this.gpu.alloc(bytes, "kv pool k"),
      v: this.gpu.alloc(bytes, "kv pool v"),
      meta: this.gpu.alloc(slots * 8, "kv pool meta"),
      blocks,
      used: 0,
    };
  }

  /** Grows a layer's pool geometrically (ceil(1.5·old), repeated) to at least `minBlocks`, on the GPU. */
  #grow(layer: number, minBlocks: number): void {
    const old = this.#pools[layer];
    let blocks = old.blocks;
    while (blocks < minBlocks) blocks = Math.ceil(1.5 * blocks);
    const nu = this.#newPool(blocks);
    nu.used = old.used;
    const enc = this.gpu.encoder();
    enc.copyBufferToBuffer(old.k, 0, nu.k, 0, old.k.size);
    enc.copyBufferToBuffer(old.v, 0, nu.v, 0, old.v.size);
    enc.copyBufferToBuffer(old.meta, 0, nu.meta, 0, old.meta.size);
    this.#releasePool(old);
    this.#pools[layer] = nu;
  }

  #releasePool(p: Pool): void {
    for (const b of [p.k, p.v, p.meta]) this.gpu.release(b);
  }

  /** Gives each page p of `layer` room for `need[p]` entries; grows the pool at most once. */
  #ensureLayer(layer: number, need: readonly number[]): void {
    const bs = this.blockSize, base = layer * this.pages;
    let extra = 0;
    const have = this.#table.blocks;
    need.forEach((x, p) => (extra += Math.max(0, Math.ceil(x / bs) - have[base + p])));
    if (extra === 0) return;
    const pool = this.#pools[layer];
    if (pool.used + extra > pool.blocks) this.#grow(layer, pool.used + extra);
    need.forEach((x, p) => {
      while (have[base + p] * bs < x) this.#allocBlock(layer, p);
    });
  }

  #allocBlock(layer: number, page: number): void {
    this.#allocated++;
    const pool = this.#pools[layer];
    if (pool.used >= pool.blocks) this.#grow(layer, pool.used + 1);
    this.#table.push(layer * this.pages + page, this.#pools[layer].used++);
  }
}
