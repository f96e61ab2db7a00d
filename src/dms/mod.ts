/**
 * `@hyperscale/dms/dms`: Dynamic Memory Sparsification itself — decision logits from the
 * borrowed query neuron or the adapter (SPEC §1), hard and Gumbel-sigmoid decisions (SPEC §1,
 * §4), the delayed-eviction cache policy on the paged storage (SPEC §5), and the scalar CPU
 * oracle of the visibility rule (SPEC §5.1).
 *
 * @example Which keys does a query see? (SPEC §5.1)
 * ```ts
 * import { oracle } from "@hyperscale/dms/dms";
 * const marks = oracle.marksFromDecisions([0, 1, 0, 0]); // d[1] = 1 marks key 0 (SPEC §2)
 * // window W = 1: the marked key 0 is seen by queries 0 and 1, not by query 2
 * console.log(oracle.isVisible(1, 0, marks[0], 1), oracle.isVisible(2, 0, marks[0], 1)); // true false
 * ```
 *
 * @module
 */

export {
  type DecisionOptions,
  type InferDecisions,
  inferDecisions,
  takeQueryNeuron,
  type TrainDecisions,
  trainDecisions,
  zeroQueryNeuron,
} from "./decisions.ts";
export * as oracle from "./oracle.ts";
export {
  createDmsCache,
  DmsCache,
  type DmsCacheOptions,
  type DmsPageState,
  DmsPolicy,
} from "./dms_cache.ts";
export type { Gpu } from "../gpu/device.ts";
export type { KernelTime } from "../gpu/profiling.ts";
export { Tensor } from "../tensor/tensor.ts";
export type { CachePolicy, PolicyStep } from "../cache/policy.ts";
export { PagedKvCache } from "../cache/paged_kv_cache.ts";
export type { PagedKvStorage, PageEntries } from "../cache/paged_storage.ts";
export type { AttendOptions, KvCache, KvCacheStats } from "../cache/kv_cache.ts";
export type { LayerPool } from "../cache/paged_storage.ts";
export type { MemoryStats } from "../gpu/buffers.ts";
export type { ParamValues } from "../gpu/params.ts";
export type { Binding, Kernel, KernelSpec } from "../gpu/pipelines.ts";
export type { ArrayFor, DType } from "../tensor/dtype.ts";
export type { BindingDecl, ParamLayout } from "../gpu/shader.ts";
export type { ParamField } from "../gpu/shader.ts";
export type { ParamType } from "../gpu/shader.ts";
export {
  type HeadNorm,
  headsNormRopeQK,
  headsNormRopeQKReference,
  headsRopeQKBuffers,
  headsRopeQKFused,
  type HeadsRopeQKOptions,
  type HeadsRopeQKReferenceOptions,
  type HeadsRopeQKResult,
} from "./heads_rope_qk.ts";
export {
  decodeAppendTargetFor,
  headsNormRopeQKAppend,
  headsRopeQKAppendBuffers,
  headsRopeQKAppendFits,
} from "./heads_rope_append.ts";
