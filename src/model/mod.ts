/**
 * `@hyperscale/dms/model`: the Qwen3/Llama decoder on the GPU ({@linkcode Transformer}), its
 * configuration (Hugging Face `config.json` with the `dms_*` fields), its weights, and the
 * float64 CPU reference decoder the GPU one is tested against.
 *
 * @example GPU logits against the CPU reference
 * ```ts ignore
 * import { createModel, exportWeights, loadReferenceModel, parseConfig, teacherForward } from "@hyperscale/dms/model";
 * ```
 *
 * @module
 */

export {
  configToJson,
  type DmsConfig,
  loadConfig,
  type ModelConfig,
  parseConfig,
  type RopeScaling,
} from "./config.ts";
export type { ChunkedMatrix, LayerWeights, ModelWeights, WeightOptions } from "./weights.ts";
export {
  createModel,
  exportWeights,
  loadModel,
  Model,
  type ModelOptions,
  saveModel,
} from "./model.ts";
export {
  type CaptureName,
  type ForwardMode,
  type ForwardOptions,
  Transformer,
} from "./transformer.ts";
export {
  attendPage,
  attentionOnlyReference,
  inferenceForward,
  loadReferenceModel,
  type ReferenceModel,
  teacherForward,
  trainForward,
} from "./reference.ts";
export type {
  AttentionOnlyOutput,
  InferenceOutput,
  Linear,
  LoadOptions,
  ReferenceLayer,
  TeacherOutput,
  TrainOutput,
  WeightMap,
  WeightTensor,
} from "./reference.ts";
export type { Gpu } from "../gpu/device.ts";
export type { KernelTime } from "../gpu/profiling.ts";
export { Tensor } from "../tensor/tensor.ts";
export type { FloatDType } from "../tensor/dtype.ts";
export type { KvCache } from "../cache/kv_cache.ts";
export type { AttendOptions, KvCacheStats } from "../cache/kv_cache.ts";
export type { MemoryStats } from "../gpu/buffers.ts";
export type { ParamValues } from "../gpu/params.ts";
export type { Binding, Kernel, KernelSpec } from "../gpu/pipelines.ts";
export type { CompressionScalars } from "./reference_compression.ts";
export type { ArrayFor, DType } from "../tensor/dtype.ts";
export type { BindingDecl, ParamLayout } from "../gpu/shader.ts";
export type { ParamField } from "../gpu/shader.ts";
export type { ParamType } from "../gpu/shader.ts";
