/**
 * Retrofitting (issue 9): teach a model to evict with DMS (SPEC §3, §4, §6, §9).
 *
 * - {@linkcode retrofit}: the training loop (distillation + compression loss on a CR schedule,
 *   AdamW, checkpoints, resume, progress callback);
 * - batch sources: {@linkcode textFileSource} (packed tokens of a text file),
 *   {@linkcode sequenceSource}, {@linkcode generatorSource} (synthetic tasks),
 *   {@linkcode packDocuments};
 * - checkpoints in Hugging Face layout: {@linkcode saveCheckpoint},
 *   {@linkcode latestCheckpoint}, {@linkcode restoreWeights}, {@linkcode readTrainerState},
 *   {@linkcode readOptimizerState};
 * - one step and the optimizer, for custom loops: {@linkcode forwardBackward},
 *   {@linkcode trainableParameters}, {@linkcode AdamW}, {@linkcode clipGradients}, the schedule
 *   ({@linkcode targetCompressionRatio}, {@linkcode alphaTarget}) and the noise
 *   ({@linkcode logisticNoise}).
 *
 * @example Retrofit a tiny random model with the adapter recipe, then generate with DMS
 * ```ts ignore
 * import { getGpu } from "../gpu/device.ts";
 * import { parseConfig } from "../model/config.ts";
 * import { createModel } from "../model/model.ts";
 * import { generatorSource, retrofit } from "./mod.ts";
 * const gpu = await getGpu();
 * const config = parseConfig({ model_type: "qwen3", hidden_size: 32, num_hidden_layers: 2,
 *   num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8, intermediate_size: 48,
 *   vocab_size: 40, max_position_embeddings: 128 });
 * const model = createModel(gpu, config, { seed: 1, dtype: "f32" });
 * const data = generatorSource((_i, rng) => Array.from({ length: 24 }, () => Math.floor(rng() * 40)),
 *   { batch: 2, seqLen: 24, seed: 7 });
 * const { history } = await retrofit(model, data, {
 *   steps: 24, schedule: { initialCr: 1, finalCr: 2, finalStep: 12 }, window: 4, lr: 2e-3,
 *   checkpointDir: "/tmp/dms-run", checkpointEvery: 12, logEvery: 4,
 *   onStep: (s) => console.log(s.step, s.lossDistill.toFixed(4), s.fracClosed.toFixed(3)),
 * });
 * // /tmp/dms-run/checkpoint-24 loads with loadModel and generates with the DMS cache
 * ```
 *
 * @module
 */

export {
  retrofit,
  type RetrofitOptions,
  type RetrofitResult,
  type RetrofitStepInfo,
  studentConfig,
} from "./retrofit.ts";
export {
  type Batch,
  type BatchSource,
  type BatchSourceState,
  generatorSource,
  type GeneratorSourceOptions,
  packDocuments,
  type PackOptions,
  sequenceSource,
  type SequenceSourceOptions,
  textFileSource,
  type TextFileSourceOptions,
  type TextTokenizer,
} from "./data.ts";
export {
  CHECKPOINT_FILES,
  checkpointPath,
  latestCheckpoint,
  type OptimizerSave,
  readOptimizerState,
  readTrainerState,
  restoreWeights,
  saveCheckpoint,
  type TrainerState,
} from "./checkpoint.ts";
export {
  forwardBackward,
  type StepInputs,
  type StepOptions,
  type StepOutputs,
  type Trainable,
  trainableParameters,
} from "./train_step.ts";
export {
  AdamW,
  type AdamwCheckpoint,
  type AdamwOptions,
  clipGradients,
  globalGradNorm,
} from "./adamw.ts";
export { alphaTarget, type CompressionSchedule, targetCompressionRatio } from "./schedule.ts";
export { logisticNoise, type NoiseKey } from "./noise.ts";
// types the API above refers to (so the documentation is complete from this entry)
export type { OptimizerOptions } from "./adamw.ts";
export type { Transformer } from "../model/transformer.ts";
export type { ModelConfig } from "../model/config.ts";
export type { Tensor } from "../tensor/tensor.ts";
export type { Gpu } from "../gpu/device.ts";
export type { KernelTime } from "../gpu/profiling.ts";
export type { ForwardOptions } from "../model/transformer.ts";
export type { DmsConfig, RopeScaling } from "../model/config.ts";
export type { ChunkedMatrix, LayerWeights, ModelWeights } from "../model/weights.ts";
export type { ArrayFor, DType, FloatDType } from "../tensor/dtype.ts";
export type { MemoryStats } from "../gpu/buffers.ts";
export type { ParamValues } from "../gpu/params.ts";
export type { Binding, Kernel, KernelSpec } from "../gpu/pipelines.ts";
export type { CaptureName, ForwardMode } from "../model/transformer.ts";
export type { AttendOptions, KvCache, KvCacheStats } from "../cache/kv_cache.ts";
export type { BindingDecl, ParamField, ParamLayout, ParamType } from "../gpu/shader.ts";
