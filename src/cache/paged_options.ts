/**
 * The options of the paged KV storage (`PagedKvStorage` in ./paged_storage.ts), their checks,
 * and the shapes it hands out (a layer's pool, a page's entries).
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";

/** Options of `PagedKvStorage` (./paged_storage.ts). */
export interface PagedStorageOptions {
  /** Decoder layers (one pool and one set of pages each). */
  layers: number;
  /** Sequences B. */
  batch: number;
  /** KV heads Hkv. */
  kvHeads: number;
  /** Head dim D. */
  headDim: number;
  /** Entries per block (`dms_paged_attention_block_size`). */
  blockSize: number;
  /** Storage dtype, default f32. */
  dtype?: "f32" | "f16";
  /** Tokens per page the initial pool is sized for (SPEC: `dms_preallocate_for_tokens`, 4096). */
  preallocateTokens?: number;
  /** Keys per attention partition (a multiple of 32); default: chosen from the page lengths. */
  partitionKeys?: number;
  /**
   * Decode attention kernel: `"split"` (default; split-K over each page's entries, 16-byte K/V
   * rows shared by all query heads of a group; needs headDim % 8 == 0 in f16 or % 4 == 0 in f32
   * and at most 8 query heads per KV head, else `"tiled"` is used) or `"tiled"` (the readable
   * `partial` kernel that prefill uses too), or `"simple"`: the barrier-free per-query kernel
   * (`./paged_simple.ts`) for decode and prefill alike, what OpenGL CPU adapters get anyway.
   */
  decodeKernel?: "split" | "tiled" | "simple";
}

/** The checked options with their defaults: dtype, tokens to preallocate, keys per partition. */
export interface CheckedStorageOptions {
  /** Storage dtype. */
  dtype: "f32" | "f16";
  /** Tokens per page the initial pool is sized for. */
  pre: number;
  /** Keys per partition as given (not yet rounded), or undefined. */
  partitionKeys?: number;
}

/**
 * Checks the options of a paged storage, naming the field.
 *
 * @throws {RangeError} For sizes that are not integers >= 1, a negative `preallocateTokens` or a
 *   `partitionKeys` under 1.
 * @throws {TypeError} For a dtype other than f32/f16, f16 without `shader-f16`, or an unknown
 *   `decodeKernel`.
 */
export function checkStorageOptions(gpu: Gpu, o: PagedStorageOptions): CheckedStorageOptions {
  for (const key of ["layers", "batch", "kvHeads", "headDim", "blockSize"] as const) {
    const x = o[key];
    if (!Number.isInteger(x) || x < 1) {
      throw new RangeError(`PagedKvStorage: ${key} must be an integer >= 1, got ${x}`);
    }
  }
  const dtype = o.dtype ?? "f32";
  if (dtype !== "f32" && dtype !== "f16") {
    throw new TypeError(`PagedKvStorage: dtype must be f32 or f16, got ${dtype}`);
  }
  if (dtype === "f16" && !gpu.hasF16) {
    throw new TypeError("PagedKvStorage: dtype f16 needs the shader-f16 feature");
  }
  const pre = o.preallocateTokens ?? 4096;
  if (!Number.isInteger(pre) || pre < 0) {
    throw new RangeError(`PagedKvStorage: preallocateTokens must be an integer >= 0, got ${pre}`);
  }
  if (o.partitionKeys !== undefined) {
    if (!Number.isInteger(o.partitionKeys) || o.partitionKeys < 1) {
      throw new RangeError(
        `PagedKvStorage: partitionKeys must be an integer >= 1, got ${o.partitionKeys}`,
      );
    }
  }
  if (o.decodeKernel !== undefined && !["split", "tiled", "simple"].includes(o.decodeKernel)) {
    throw new TypeError(
      `PagedKvStorage: decodeKernel must be "split", "tiled" or "simple", got ${o.decodeKernel}`,
    );
  }
  return { dtype, pre, partitionKeys: o.partitionKeys };
}

/** One page's entries in slot order, from {@linkcode PagedKvStorage.snapshot}. */
export interface PageEntries {
  /** Absolute position of each live slot. */
  positions: number[];
  /** Mark of each live slot (0 keep, 1 marked for eviction). */
  marks: number[];
}

/** One layer's block pool: K, V and meta of every slot, as `PagedKvStorage.pool` returns it. */
export interface LayerPool {
  /** K `[blocks·blockSize, D]`. */
  readonly k: GPUBuffer;
  /** V `[blocks·blockSize, D]`. */
  readonly v: GPUBuffer;
  /** `[blocks·blockSize, 2]` i32 (position, mark). */
  readonly meta: GPUBuffer;
  /** Blocks the buffers hold. */
  readonly blocks: number;
}
