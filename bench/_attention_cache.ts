/**
 * The caches `bench/attention.ts` times: one layer holding `ctx` tokens a sequence, dense or DMS
 * with a forced fraction of its decisions set (a benchmark knob, not a model path), filled chunk
 * by chunk through the policy and the storage as a prefill would.
 *
 * @example
 * ```ts
 * import { getGpu } from "../src/gpu/device.ts";
 * import { filledCache } from "./_attention_cache.ts";
 * const gpu = await getGpu();
 * using cache = await filledCache(gpu, {
 *   ctx: 1024, B: 1, dtype: "f32", cr: 8, kvHeads: 8, headDim: 128, window: 32, blockSize: 32,
 * });
 * console.log((await cache.stats()).liveTokens);
 * ```
 *
 * @module
 */

import type { Gpu } from "../src/gpu/device.ts";
import type { PagedKvCache } from "../src/cache/paged_kv_cache.ts";
import { scatterEntries } from "../src/cache/paged_kv.ts";
import { createDmsCache } from "../src/dms/dms_cache.ts";
import { createDenseCache } from "../src/policies/dense.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import { random } from "./_common.ts";

/** Storage dtype of a benchmarked cache. */
export type CacheDtype = "f32" | "f16";

/** What {@linkcode filledCache} builds. */
export interface FilledCacheOptions {
  /** Tokens a sequence. */
  ctx: number;
  /** Sequences. */
  B: number;
  dtype: CacheDtype;
  /** DMS with a fraction 1 − 1/cr of the decisions set; undefined: the dense cache. */
  cr?: number;
  kvHeads: number;
  headDim: number;
  /** DMS window W. */
  window: number;
  blockSize: number;
  /** Keys a decode split (storage `partitionKeys`); undefined: from the length bound. */
  partitionKeys?: number;
}

/**
 * A one-layer cache holding `ctx` tokens per sequence: dense, or DMS with a fraction 1 − 1/cr of
 * the decisions set. Its pools are allocated for the whole context (`preallocateTokens: ctx +
 * 64`), so a DMS cache uses the first blocks of its pools only. The caller disposes it.
 */
export async function filledCache(gpu: Gpu, o: FilledCacheOptions): Promise<PagedKvCache> {
  const { ctx, B, dtype, cr, kvHeads: HKV, headDim: D } = o;
  const sizes = {
    layers: 1,
    batch: B,
    kvHeads: HKV,
    headDim: D,
    blockSize: o.blockSize,
    dtype,
    preallocateTokens: ctx + 64,
    partitionKeys: o.partitionKeys,
  };
  const cache = cr
    ? createDmsCache(gpu, { ...sizes, window: o.window })
    : createDenseCache(gpu, sizes);
  const s = cache.storage, pages = s.pages;
  const n = Math.min(ctx, Math.max(256, Math.floor((1 << 23) / (B * HKV * D))));
  const [k, v] = chunkKv(gpu, B, HKV, n, D, dtype);
  using firstReal = Tensor.zeros(gpu, [B], "i32");
  const pMark = cr ? 1 - 1 / cr : 0;
  for (let t0 = 0, c = 0; t0 < ctx; t0 += n, c++) {
    const m = Math.min(n, ctx - t0);
    const kc = m === n ? k : sliceTokens(gpu, k, m), vc = m === n ? v : sliceTokens(gpu, v, m);
    const u = random(B * HKV * m, 1000 + c, 0, 1);
    using d = Tensor.fromArray(
      gpu,
      Int32Array.from(u, (x) => (x < pMark ? 1 : 0)),
      [B, HKV, m],
      "i32",
    );
    const marks = gpu.alloc(pages * m * 4, "bench marks");
    const dest = gpu.alloc(pages * m * 4, "bench dest");
    const step = {
      layer: 0,
      n: m,
      t0,
      decisions: d.buffer,
      firstReal: firstReal.buffer,
      marks,
      dest,
    };
    cache.policy.prefillMarks(step);
    s.ensure(0, () => m);
    cache.policy.prefillCompact(step);
    scatterEntries(s, 0, dest, marks, kc, vc, t0);
    gpu.release(marks);
    gpu.release(dest);
    if (kc !== k) [kc, vc].forEach((x) => x.dispose());
    if (c % 8 === 7) await gpu.sync();
  }
  await gpu.sync();
  return cache;
}

let kvMemo: { key: string; k: Tensor; v: Tensor } | undefined;

/** Random K and V `[B, Hkv, n, D]` of one fill chunk, kept for the next fill of the same shape. */
function chunkKv(
  gpu: Gpu,
  B: number,
  HKV: number,
  n: number,
  D: number,
  dtype: CacheDtype,
): [Tensor, Tensor] {
  const key = `${B} ${HKV} ${n} ${D} ${dtype}`;
  if (kvMemo?.key !== key || kvMemo.k.gpu !== gpu) {
    kvMemo?.k.dispose();
    kvMemo?.v.dispose();
    const shape = [B, HKV, n, D];
    kvMemo = {
      key,
      k: Tensor.fromArray(gpu, random(B * HKV * n * D, 1), shape, dtype),
      v: Tensor.fromArray(gpu, random(B * HKV * n * D, 2), shape, dtype),
    };
  }
  return [kvMemo.k, kvMemo.v];
}

/** Random K or V `[B, Hkv, m, D]` in x's dtype, for the last, shorter chunk. */
function sliceTokens(gpu: Gpu, x: Tensor, m: number): Tensor {
  const [B, H, , Dd] = x.shape;
  const r = random(B * H * m * Dd, 3);
  return Tensor.fromArray(gpu, r, [B, H, m, Dd], x.dtype as CacheDtype);
}
