/**
 * The dense policy: never evicts. Every real token is appended at the page's length, nothing
 * is marked, decisions are ignored; attention sees every earlier key (plain causal attention
 * with left padding). This is the KV cache a model without DMS uses, and the baseline every
 * other policy is measured against.
 *
 * Slot choice is the storage's plain append (`appendMarks`, `appendSlots` in
 * `src/cache/paged_kv.ts`, kernels in `shaders/paged_kv.wgsl`): prefill marks real tokens 0 and
 * padding 2, then appends the chunk's real tokens at len, len+1, ... in order; decode appends
 * the token at len. The policy has no state of its own: nothing is flagged, recycled or
 * dropped.
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

import type { Gpu } from "../gpu/device.ts";
import { appendMarks, appendScatter, appendSlots } from "../cache/paged_kv.ts";
import { PagedKvCache } from "../cache/paged_kv_cache.ts";
import type { PagedKvStorage } from "../cache/paged_storage.ts";
import type { CachePolicy, PolicyStep } from "../cache/policy.ts";
import type { Tensor } from "../tensor/tensor.ts";

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
  decodeKernel?: "split" | "tiled" | "simple";
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
  /** Its decode step keeps no CPU state: the same dispatches every step (append, attention). */
  readonly replaySafe = true;
  /** Every decode entry goes to slot len with mark 0: a kernel may append it itself. */
  readonly appendsInPlace = true;
  #s: PagedKvStorage | undefined;

  /** Remembers the storage (the dense policy keeps no state of its own). */
  attach(storage: PagedKvStorage): void {
    this.#s = storage;
  }

  /** Appends the token at len (its mark stays 0). */
  decodeUpdate(step: PolicyStep): void {
    appendSlots(this.#storage, step.layer, 1, step.firstReal, step.dest, true);
  }

  /** The same append fused with the scatter (kernel `append_scatter`). */
  decodeAppend(step: PolicyStep, k: Tensor, v: Tensor): boolean {
    appendScatter(this.#storage, step.layer, k, v, step.t0, step.dest);
    return true;
  }

  /** Marks real tokens 0 and padding 2. */
  prefillMarks(step: PolicyStep): void {
    appendMarks(this.#storage, step.n, step.firstReal, step.marks);
  }

  /** Appends the chunk's real tokens at len, len+1, ...; padding is not stored. */
  prefillCompact(step: PolicyStep): void {
    appendSlots(this.#storage, step.layer, step.n, step.firstReal, step.dest, false);
  }

  /** Nothing to copy: the dense policy keeps no state beyond the storage. */
  copySequenceFrom(src: CachePolicy): Promise<void> {
    if (src.name !== this.name) {
      return Promise.reject(
        new TypeError(`dense policy: cannot copy a ${src.name} policy's state`),
      );
    }
    return Promise.resolve();
  }

  /** Detaches from the storage. Idempotent. */
  dispose(): void {
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
}
