/**
 * `@hyperscale/dms`: Dynamic Memory Sparsification (Łańcucki et al., "Inference-Time
 * Hyper-Scaling with KV Cache Compression", NeurIPS 2025) in TypeScript, with every tensor op a
 * WGSL compute kernel on WebGPU.
 *
 * This entry point holds what a user of the library calls: models ({@linkcode loadModel},
 * {@linkcode createModel}), {@linkcode generate} with a dense or a DMS cache, the caches and
 * their policies, conformance against NVIDIA's golden vectors, and the config and file entry
 * points. The building blocks have their own entry points: `@hyperscale/dms/ops` (tensors and
 * kernels with their CPU references), `/gpu`, `/io`, `/model`, `/cache`, `/policies`, `/dms`, `/eval`.
 *
 * @example Generate with the DMS cache and read its accounting
 * ```ts
 * import { createModel, generate, getGpu, parseConfig } from "@hyperscale/dms";
 * const gpu = await getGpu();
 * const config = parseConfig({
 *   model_type: "qwen3", hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
 *   num_key_value_heads: 2, head_dim: 16, intermediate_size: 128, vocab_size: 256,
 *   max_position_embeddings: 1024, dms_window_size: 16, dms_paged_attention_block_size: 8,
 * });
 * const model = createModel(gpu, config, { seed: 1 });
 * const run = generate(model, [[1, 2, 3]], { maxTokens: 8, cache: "dms" });
 * let r = await run.next();
 * while (!r.done) r = await run.next();
 * console.log(r.value.tokens[0].length, r.value.stats.compressionRatio);
 * model.dispose();
 * ```
 *
 * @module
 */

export {
  type Binding,
  getGpu,
  type Gpu,
  type GpuOptions,
  type Kernel,
  type KernelSpec,
  type MemoryStats,
  type ParamValues,
} from "./src/gpu/device.ts";
export type { BindingDecl, ParamField, ParamLayout, ParamType } from "./src/gpu/shader.ts";
export type { KernelTime } from "./src/gpu/profiling.ts";
export { Tensor } from "./src/tensor/tensor.ts";
export type { ArrayFor, DType, FloatDType } from "./src/tensor/dtype.ts";
export {
  configToJson,
  type DmsConfig,
  loadConfig,
  type ModelConfig,
  parseConfig,
  type RopeScaling,
} from "./src/model/config.ts";
export { createModel, loadModel, Model, type ModelOptions, saveModel } from "./src/model/model.ts";
export {
  type CaptureName,
  type ForwardMode,
  type ForwardOptions,
  Transformer,
} from "./src/model/transformer.ts";
export type {
  ChunkedMatrix,
  LayerWeights,
  ModelWeights,
  WeightOptions,
} from "./src/model/weights.ts";
export {
  CACHE_POLICY_NAMES,
  type CachePolicyName,
  type CachePolicyOptions,
  createCacheFor,
  generate,
  type GenerateChunk,
  type GenerateOptions,
  type GenerateResult,
} from "./src/generate.ts";
export {
  type LoadedTextModel,
  TextGeneration,
  textGeneration,
  type TextGenerationOptions,
  type TextGenerationResult,
  TextStreamDecoder,
} from "./src/text.ts";
export type { CompressionPoint, EntryState, EvictionMap } from "./src/plot/data.ts";
export type { SampleOptions } from "./src/ops/sample.ts";
export type {
  AttendOptions,
  DecodeAppendTarget,
  DecodeSlots,
  KvCache,
  KvCacheStats,
} from "./src/cache/kv_cache.ts";
export type { CachePolicy, PolicyStep } from "./src/cache/policy.ts";
export type {
  DecodeChunkSelection,
  DecodeProbsOutput,
  PagedAttentionArgs,
} from "./src/cache/paged_attention.ts";
export { PagedKvCache } from "./src/cache/paged_kv_cache.ts";
export type { LayerPool, PagedKvStorage, PageEntries } from "./src/cache/paged_storage.ts";
export { createDenseCache, type DenseCacheOptions } from "./src/policies/dense.ts";
export {
  createStreamingLlmCache,
  type StreamingLlmCacheOptions,
} from "./src/policies/streaming_llm.ts";
export { createTovaCache, type TovaCacheOptions } from "./src/policies/tova.ts";
export { createH2oCache, type H2oCacheOptions } from "./src/policies/h2o.ts";
export { createQuestCache, type QuestCacheOptions } from "./src/policies/quest.ts";
export {
  createDmsCache,
  DmsCache,
  type DmsCacheOptions,
  type DmsPageState,
} from "./src/dms/dms_cache.ts";
export {
  type AdamwSettings,
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
  type TrainStepCase,
  type WeightMap,
  type WeightTensor,
} from "./src/eval/conformance.ts";
export type { ElementFailure, NumericArray } from "./src/eval/compare.ts";
export { cpuBackend } from "./src/eval/cpu_backend.ts";
export { gpuBackend } from "./src/eval/gpu_backend.ts";
export {
  generateTask,
  type GenerateTaskOptions,
  type Task,
  type TaskSample,
  taskVocab,
} from "./src/eval/tasks.ts";
export { evaluateTask, type TaskEvalOptions, type TaskEvalResult } from "./src/eval/task_eval.ts";
export {
  hyperscaleCsv,
  type HyperscaleGrid,
  type HyperscaleOptions,
  type HyperscalePolicy,
  type HyperscaleResult,
  type HyperscaleRow,
  runHyperscale,
} from "./src/eval/hyperscale.ts";
export {
  type BatchSource,
  generatorSource,
  retrofit,
  type RetrofitOptions,
  type RetrofitResult,
  type RetrofitStepInfo,
  textFileSource,
} from "./src/train/mod.ts";
export {
  type ChatMessage,
  type ChatTemplateOptions,
  loadTokenizer,
  type Tokenizer,
} from "./src/io/tokenizer.ts";
export { downloadModel, type DownloadOptions, findCachedModel, hubCacheDir } from "./src/io/hub.ts";
export {
  type Checkpoint,
  openCheckpoint,
  type OpenOptions,
  type RawTensor,
  type RowRange,
  type SafetensorsDtype,
  type SafetensorsFile,
  type TensorData,
  type TensorInfo,
  type TensorInput,
  type TensorReader,
  writeSafetensors,
} from "./src/io/safetensors.ts";
export type { KvCacheFactory, TaskProgress } from "./src/eval/task_eval.ts";
export type { HyperscaleProgress } from "./src/eval/hyperscale.ts";
export type {
  KvTask,
  SumTask,
  TaskVocab,
  TaskVocabOptions,
  VarTrackTask,
} from "./src/eval/tasks.ts";
export type {
  Batch,
  BatchSourceState,
  GeneratorSourceOptions,
  TextFileSourceOptions,
  TextTokenizer,
} from "./src/train/data.ts";
export type { CompressionSchedule } from "./src/train/schedule.ts";
export type { Trainable } from "./src/train/train_step.ts";
export type { TaskBase } from "./src/eval/tasks.ts";
