/**
 * `@hyperscale/dms/eval`: conformance as a product — load case folders (the ten golden cases
 * from NVIDIA's reference ship in `testdata/conformance/`), run them on the CPU reference or
 * the GPU backend, and compare every tensor at its tolerance.
 *
 * @example Run the vendored golden cases on the CPU reference
 * ```ts ignore
 * import { formatSummary, runConformance } from "@hyperscale/dms/eval";
 * const report = await runConformance();
 * console.log(formatSummary(report)); // conformance: 10 passed, 0 failed
 * ```
 *
 * @module
 */

export {
  type AttentionOnlyCase,
  type BackendOutputs,
  type CaseBase,
  type CaseJson,
  type CaseReport,
  type CaseTensor,
  type ConformanceBackend,
  type ConformanceReport,
  DEFAULT_CONFORMANCE_DIR,
  formatSummary,
  type InferenceCase,
  type ModelCase,
  runConformance,
  type RunOptions,
  type TensorComparison,
  type Tolerance,
  type TrainForwardCase,
  type WeightMap,
  type WeightTensor,
} from "./conformance.ts";
export type { ElementFailure, NumericArray } from "./compare.ts";
export { gpuBackend } from "./gpu_backend.ts";
export { cpuBackend } from "./cpu_backend.ts";
export type { ModelConfig } from "../model/config.ts";
export type { DmsConfig, RopeScaling } from "../model/config.ts";
export {
  extractResult,
  generateTask,
  type GenerateTaskOptions,
  type KvTask,
  renderTokens,
  SPECIAL_TOKENS,
  type SumTask,
  type Task,
  type TaskBase,
  taskName,
  type TaskSample,
  type TaskVocab,
  taskVocab,
  type TaskVocabOptions,
  TOKENS,
  type VarTrackTask,
} from "./tasks.ts";
export {
  evaluateTask,
  evaluateTaskWith,
  type KvCacheFactory,
  type TaskEvalOptions,
  type TaskEvalResult,
  type TaskProgress,
  type TaskRunner,
} from "./task_eval.ts";
export {
  HYPERSCALE_COLUMNS,
  hyperscaleCsv,
  type HyperscaleGrid,
  type HyperscaleOptions,
  type HyperscalePolicy,
  type HyperscaleProgress,
  type HyperscaleResult,
  type HyperscaleRow,
  runHyperscale,
} from "./hyperscale.ts";
export { type KvTrace, type TraceBudgets, traceBudgets, TracedKvCache } from "./kv_trace.ts";
export { type CostAccuracy, paretoFrontier } from "./pareto.ts";
export type { KvCache, KvCacheStats } from "../cache/kv_cache.ts";
export type { TrainStepCase } from "./case.ts";
export type { CachePolicyName } from "../generate.ts";
export type { Transformer } from "../model/transformer.ts";
export type { SampleOptions } from "../ops/sample.ts";
export type { AttendOptions } from "../cache/kv_cache.ts";
export type { AdamwSettings } from "./case.ts";
export type { Gpu } from "../gpu/device.ts";
export type { KernelTime } from "../gpu/profiling.ts";
export type { ForwardOptions } from "../model/transformer.ts";
export type { ModelWeights } from "../model/weights.ts";
export type { FloatDType } from "../tensor/dtype.ts";
export type { Tensor } from "../tensor/tensor.ts";
export type { MemoryStats } from "../gpu/buffers.ts";
export type { ParamValues } from "../gpu/params.ts";
export type { Binding, Kernel, KernelSpec } from "../gpu/pipelines.ts";
export type { CaptureName, ForwardMode } from "../model/transformer.ts";
export type { ChunkedMatrix, LayerWeights } from "../model/weights.ts";
export type { ArrayFor, DType } from "../tensor/dtype.ts";
export type { BindingDecl, ParamLayout } from "../gpu/shader.ts";
export type { ParamField } from "../gpu/shader.ts";
export type { ParamType } from "../gpu/shader.ts";
