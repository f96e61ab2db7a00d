/**
 * The dense policy: never evicts. Every real token is appended at the page's length, nothing
 * is marked, decisions are ignored; attention sees every earlier key (plain causal attention
 * with left padding). This is the KV cache a model without DMS uses, and the baseline every
 * other policy is measured against.
 *
 * Slot choice runs the append paths of `shaders/dms_cache.wgsl` with the ring of size 1 and
 * `evict = 0` (every decision read as 0): `decode_update` appends at len, `prefill_marks`
 * marks real tokens 0 and padding 2, `prefill_compact` appends the chunk's real tokens in
 * order. No entry is ever flagged, so nothing is recycled or dropped.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { createDenseCache } from "./dense.ts";
 * const gpu = await getGpu();
 * using cache = createDenseCache(gpu, { layers: 2, batch: 1, kvHeads: 2, headDim: 64 });
 * console.log(cache.policy.name); // "dense"
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { dispatchBound } from "../cache/dispatch_bound.ts";
import { PagedKvCache } from "../cache/paged_kv_cache.ts";
import type { PagedKvStorage } from "../cache/paged_storage.ts";
import type { CachePolicy, PolicyStep } from "../cache/policy.ts";

/** Options of {@linkcode createDenseCache}. */
export interface DenseCacheOptions {
  /** Decoder layers. */
  layers: number;
  /** Sequences B. */
  batch: number;
  /** KV heads per layer Hkv. */
  kvHeads: number;
  /** Channels per head D. */
  headDim: number;
  /** Entries per block. Default 256. */
  blockSize?: number;
  /** Storage dtype of K and V (q, k, v must match). Default f32. */
  dtype?: "f32" | "f16";
  /** Tokens per page the initial pool holds (SPEC: 4096). */
  preallocateTokens?: number;
  /** Keys per attention partition (rounded up to 32); default chosen from the lengths. */
  partitionKeys?: number;
  /** Decode attention kernel, `"split"` (default) or `"tiled"`; see `PagedStorageOptions`. */
  decodeKernel?: "split" | "tiled";
}

/**
 * Creates the dense KV cache (never evicts) on the paged storage.
 *
 * @throws {RangeError} For a block size or other size that is not an integer ≥ 1.
 */
export function createDenseCache(gpu: Gpu, options: DenseCacheOptions): PagedKvCache {
  const blockSize = options.blockSize ?? 256;
  if (!Number.isInteger(blockSize) || blockSize < 1) {
    throw new RangeError(`createDenseCache: blockSize must be an integer >= 1, got ${blockSize}`);
  }
  return new PagedKvCache(gpu, { ...options, blockSize }, new DensePolicy());
}

/** The dense policy; see the module documentation. */
export class DensePolicy implements CachePolicy {
  /** "dense". */
  readonly name = "dense";
  /** 0 (no entry is ever marked, so the window never hides one). */
  readonly window = 0;
  /** false: decisions are ignored. */
  readonly usesDecisions = false;
  #s: PagedKvStorage | undefined;
  #ring: GPUBuffer | undefined;
  #holes: GPUBuffer | undefined;

  /** Allocates the size-1 ring `[layers, pages, 1, 2]` (slots −1) the append kernels use. */
  attach(storage: PagedKvStorage): void {
    const gpu = storage.gpu;
    this.#s = storage;
    const ring = new Int32Array(storage.layers * storage.pages * 2);
    for (let i = 0; i < ring.length; i += 2) ring[i] = -1;
    this.#ring = gpu.alloc(ring.byteLength, "dense ring");
    gpu.write(this.#ring, ring);
    this.#holes = gpu.alloc(storage.pages * 4, "dense holes");
  }

  /** Appends the token at len. */
  decodeUpdate(step: PolicyStep): void {
    this.#run("decode_update", 64, step, Math.ceil(this.#storage.pages / 64));
  }

  /** Marks real tokens 0 and padding 2. */
  prefillMarks(step: PolicyStep): void {
    this.#run("prefill_marks", 64, step, Math.ceil((this.#storage.pages * step.n) / 64));
  }

  /** Appends the chunk's real tokens at len, len+1, ... */
  prefillCompact(step: PolicyStep): void {
    this.#run("prefill_compact", 256, step, this.#storage.pages);
  }

  /** Frees the ring and the holes. Idempotent. */
  dispose(): void {
    if (!this.#s) return;
    this.#s.gpu.release(this.#ring!);
    this.#s.gpu.release(this.#holes!);
    this.#s = undefined;
  }

  /** `using policy = ...` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  get #storage(): PagedKvStorage {
    if (!this.#s) throw new Error("DensePolicy: not attached to a storage (or disposed)");
    return this.#s;
  }

  #run(entry: string, wg: number, step: PolicyStep, groups: number): void {
    const s = this.#storage, gpu = s.gpu, layer = step.layer;
    const params = {
      pages: s.pages,
      hkv: s.kvHeads,
      n: step.n,
      wc: 1,
      evict: 0,
      bs: s.blockSize,
      mb: s.tableWidth,
      lbase: layer * s.pages,
      t0: step.t0,
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
    dispatchBound(gpu, kern, bufs, Gpu.grid(groups), params);
  }
}
