/**
 * `@hyperscale/dms`: Dynamic Memory Sparsification (Łańcucki et al.,
 * "Inference-Time Hyper-Scaling with KV Cache Compression", NeurIPS 2025) in
 * TypeScript, with every tensor op a WGSL compute kernel on WebGPU.
 *
 * @example Run a kernel
 * ```ts
 * import { add, getGpu, Tensor } from "@hyperscale/dms";
 * const gpu = await getGpu();
 * using a = Tensor.fromArray(gpu, [1, 2, 3], [3]);
 * using b = Tensor.fromArray(gpu, [10, 20, 30], [3]);
 * using c = add(a, b);
 * console.log(await c.toArray()); // Float32Array [11, 22, 33]
 * ```
 *
 * @module
 */

export {
  type Binding,
  getGpu,
  Gpu,
  type GpuOptions,
  type Kernel,
  type KernelSpec,
  type MemoryStats,
  type ParamValues,
} from "./src/gpu/device.ts";
export type { BindingDecl, ParamField, ParamLayout, ParamType } from "./src/gpu/shader.ts";
export { readTensors, Tensor } from "./src/tensor/tensor.ts";
export type { ArrayFor, DType, FloatDType } from "./src/tensor/dtype.ts";
export { type RandomOptions, randomTensor } from "./src/tensor/random.ts";
export { add, axpy, elementwiseReference, mul, scale } from "./src/ops/elementwise.ts";
export {
  linear,
  type LinearOptions,
  linearReference,
  matmul,
  type MatmulOptions,
  matmulReference,
  type MatmulVariant,
} from "./src/ops/matmul.ts";
export { rmsNorm, rmsNormReference } from "./src/ops/rmsnorm.ts";
export {
  rope,
  ropeInvFreq,
  type RopeLayout,
  type RopeOptions,
  ropeReference,
  type RopeScaling as HfRopeScaling,
} from "./src/ops/rope.ts";
export { silu, siluReference, swiglu } from "./src/ops/silu.ts";
export { embedding, type EmbeddingOptions, embeddingReference } from "./src/ops/embedding.ts";
export { cast, castReference } from "./src/ops/cast.ts";
export {
  attention,
  ATTENTION_MAX_D,
  type AttentionKernel,
  type AttentionOptions,
  attentionReference,
  type AttentionReferenceOptions,
  type AttentionReferenceResult,
  type AttentionResult,
  type AttentionShape,
  EMPTY_ROW_LSE,
  mergeAttentionReference,
} from "./src/ops/attention.ts";
export {
  logSoftmax,
  MASKED,
  softmax,
  type SoftmaxOptions,
  softmaxReference,
  type SoftmaxReferenceOptions,
} from "./src/ops/softmax.ts";
export {
  argmax,
  argmaxReference,
  max,
  mean,
  type ReduceOp,
  reduceReference,
  sum,
} from "./src/ops/reduce.ts";
export { swapAxes12, swapAxes12Reference } from "./src/ops/layout.ts";
export {
  sample,
  type SampleKernel,
  type SampleOptions,
  sampleReference,
  type SampleTargets,
  sampleUniform,
} from "./src/ops/sample.ts";
export {
  type ChatMessage,
  type ChatTemplateOptions,
  checkTokenizerMatchesConfig,
  loadTokenizer,
  type Tokenizer,
} from "./src/io/tokenizer.ts";
export { downloadModel, type DownloadOptions } from "./src/io/hub.ts";
export {
  Checkpoint,
  openCheckpoint,
  type OpenOptions,
  openSafetensors,
  type RawTensor,
  type RowRange,
  type SafetensorsDtype,
  SafetensorsFile,
  type TensorData,
  type TensorInfo,
  type TensorInput,
  type TensorReader,
  writeSafetensors,
} from "./src/io/safetensors.ts";
export {
  configToJson,
  type DmsConfig,
  loadConfig,
  type ModelConfig,
  parseConfig,
  type RopeScaling,
} from "./src/model/config.ts";
export type {
  ChunkedMatrix,
  LayerWeights,
  ModelWeights,
  WeightOptions,
} from "./src/model/weights.ts";
export {
  createModel,
  exportWeights,
  loadModel,
  Model,
  type ModelOptions,
  saveModel,
} from "./src/model/model.ts";
export {
  type CaptureName,
  type ForwardMode,
  type ForwardOptions,
  Transformer,
} from "./src/model/transformer.ts";
export {
  type DecisionOptions,
  type InferDecisions,
  inferDecisions,
  takeQueryNeuron,
  type TrainDecisions,
  trainDecisions,
  zeroQueryNeuron,
} from "./src/dms/decisions.ts";
export * as oracle from "./src/dms/oracle.ts";
export type { AttendOptions, KvCache, KvCacheStats } from "./src/cache/kv_cache.ts";
export {
  createDmsCache,
  DmsCache,
  type DmsCacheOptions,
  type DmsPageState,
  DmsPolicy,
} from "./src/dms/dms_cache.ts";
export { createDenseCache, type DenseCacheOptions, DensePolicy } from "./src/policies/dense.ts";
export type { CachePolicy, PolicyStep } from "./src/cache/policy.ts";
export { PagedKvCache } from "./src/cache/paged_kv_cache.ts";
export {
  type LayerPool,
  PagedKvStorage,
  type PagedStorageOptions,
  type PageEntries,
} from "./src/cache/paged_storage.ts";
export {
  pagedAttention,
  type PagedAttentionArgs,
  pagedAttentionReference,
  type PagedReferenceOptions,
  type PagedReferenceShape,
} from "./src/cache/paged_attention.ts";
export {
  type CachePolicyName,
  createCacheFor,
  generate,
  type GenerateChunk,
  type GenerateOptions,
  type GenerateResult,
} from "./src/generate.ts";
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
} from "./src/eval/conformance.ts";
export type { ElementFailure, NumericArray } from "./src/eval/compare.ts";
export { gpuBackend } from "./src/eval/gpu_backend.ts";
export { cpuBackend } from "./src/eval/cpu_backend.ts";
