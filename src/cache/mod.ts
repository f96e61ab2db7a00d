/**
 * `@hyperscale/dms/cache`: the paged per-head KV cache every policy runs on — the
 * {@linkcode KvCache} interface the model talks to, {@linkcode PagedKvCache} (storage + a
 * {@linkcode CachePolicy}), the block pools and tables, and paged attention with its CPU
 * reference. Policies: `@hyperscale/dms/policies` (dense, and
 * the baselines), DMS in `@hyperscale/dms/dms`.
 *
 * @example One decode step through a cache
 * ```ts ignore
 * import { createDenseCache } from "@hyperscale/dms/policies";
 * using cache = createDenseCache(gpu, { layers: 1, batch: 1, kvHeads: 2, headDim: 16, dtype: "f32" });
 * await cache.reserve(1);
 * using out = cache.attend(0, q, k, v, decisions); // q:[1,Hq,1,D] k,v:[1,Hkv,1,D]
 * console.log((await cache.stats()).liveTokens);
 * ```
 *
 * @module
 */

export type {
  AttendOptions,
  DecodeAppendTarget,
  DecodeSlots,
  KvCache,
  KvCacheStats,
} from "./kv_cache.ts";
export type { CachePolicy, PolicyStep } from "./policy.ts";
export { PagedKvCache } from "./paged_kv_cache.ts";
export {
  type LayerPool,
  PagedKvStorage,
  type PagedStorageOptions,
  type PageEntries,
} from "./paged_storage.ts";
export {
  type DecodeChunkSelection,
  decodeKernelFor,
  type DecodeProbsOutput,
  decodeProbsReference,
  pagedAttention,
  type PagedAttentionArgs,
  pagedAttentionReference,
  type PagedReferenceOptions,
  type PagedReferenceShape,
} from "./paged_attention.ts";
export { type FlashDecodeArgs, pagedDecodeFlash } from "./paged_decode.ts";
export type { FlashDecodeTuning } from "./paged_decode_plan.ts";
export {
  type DecodePage,
  flashDecodeReference,
  type FlashDecodeReferenceOptions,
} from "./paged_decode_reference.ts";
export type { Gpu } from "../gpu/device.ts";
export type { KernelTime } from "../gpu/profiling.ts";
export type { ReadRange } from "../gpu/readback.ts";
export { Tensor } from "../tensor/tensor.ts";
export type { MemoryStats } from "../gpu/buffers.ts";
export type { ParamValues } from "../gpu/params.ts";
export type { Binding, Kernel, KernelSpec } from "../gpu/pipelines.ts";
export type { ArrayFor, DType } from "../tensor/dtype.ts";
export type { BindingDecl, ParamLayout } from "../gpu/shader.ts";
export type { ParamField } from "../gpu/shader.ts";
export type { ParamType } from "../gpu/shader.ts";
