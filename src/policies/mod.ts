/**
 * `@hyperscale/dms/policies`: cache policies on the shared paged storage, one file each — the
 * dense policy (never evicts) and the training-free baselines: StreamingLLM (sinks + recent
 * window), H2O (heavy hitters + recent window), TOVA (evict the entry the current query attends
 * least), Quest (attend only to the top-k key chunks; saves reads, not memory). DMS, the method
 * itself, is `@hyperscale/dms/dms`.
 *
 * @example A dense cache
 * ```ts ignore
 * import { createDenseCache } from "@hyperscale/dms/policies";
 * using cache = createDenseCache(gpu, { layers: 2, batch: 1, kvHeads: 2, headDim: 16, dtype: "f32" });
 * ```
 *
 * @module
 */

export { createDenseCache, type DenseCacheOptions, DensePolicy } from "./dense.ts";
export {
  createStreamingLlmCache,
  type StreamingLlmCacheOptions,
  StreamingLlmPolicy,
  streamingSlots,
} from "./streaming_llm.ts";
export { createTovaCache, createTovaPolicy, type TovaCacheOptions, tovaVictim } from "./tova.ts";
export { createH2oCache, createH2oPolicy, type H2oCacheOptions, h2oVictim } from "./h2o.ts";
export {
  createQuestCache,
  questBound,
  type QuestCacheOptions,
  questChunkBounds,
  QuestPolicy,
  questSelect,
} from "./quest.ts";
export {
  evictionVictim,
  keepNewestSlots,
  ScoreEvictPolicy,
  type ScoreEvictRule,
} from "./score_evict.ts";
export type { PagedKvCache } from "../cache/paged_kv_cache.ts";
export type { PagedKvStorage } from "../cache/paged_storage.ts";
export type { CachePolicy, PolicyStep } from "../cache/policy.ts";
export type {
  DecodeChunkSelection,
  DecodeProbsOutput,
  PagedAttentionArgs,
} from "../cache/paged_attention.ts";
export type { Gpu } from "../gpu/device.ts";
export type { KernelTime } from "../gpu/profiling.ts";
export type { AttendOptions, KvCache, KvCacheStats } from "../cache/kv_cache.ts";
export type { LayerPool, PageEntries } from "../cache/paged_storage.ts";
export type { MemoryStats } from "../gpu/buffers.ts";
export type { ParamValues } from "../gpu/params.ts";
export type { Binding, Kernel, KernelSpec } from "../gpu/pipelines.ts";
export type { Tensor } from "../tensor/tensor.ts";
export type { BindingDecl, ParamLayout } from "../gpu/shader.ts";
export type { ArrayFor, DType } from "../tensor/dtype.ts";
export type { ParamField } from "../gpu/shader.ts";
export type { ParamType } from "../gpu/shader.ts";
