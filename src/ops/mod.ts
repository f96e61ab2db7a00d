/**
 * `@hyperscale/dms/ops`: the tensor and its ops, each a WGSL kernel with a CPU reference beside
 * its launcher (the reference is the readable spec of the op, and what the tests compare with).
 * Ops record into one shared command encoder and return new tensors; only `toArray()` reads
 * back.
 *
 * @example RMSNorm on the GPU against its CPU reference
 * ```ts ignore
 * import { getGpu, rmsNorm, rmsNormReference, Tensor } from "@hyperscale/dms/ops";
 * const gpu = await getGpu();
 * const x = [1, 2, 3, 4, 5, 6], gain = [1, 1, 2];
 * using xt = Tensor.fromArray(gpu, x, [2, 3]);
 * using gt = Tensor.fromArray(gpu, gain, [3]);
 * using y = rmsNorm(xt, gt, 1e-6);
 * console.log(await y.toArray(), rmsNormReference(x, gain, 1e-6));
 * ```
 *
 * @module
 */

export * from "../gpu/mod.ts";
export { readTensors, Tensor } from "../tensor/tensor.ts";
export type { ArrayFor, DType, FloatDType } from "../tensor/dtype.ts";
export { type RandomOptions, randomTensor } from "../tensor/random.ts";
export { add, axpy, elementwiseReference, mul, scale } from "./elementwise.ts";
export {
  linear,
  type LinearOptions,
  linearReference,
  matmul,
  type MatmulOptions,
  matmulReference,
  type MatmulVariant,
} from "./matmul.ts";
export {
  linearSwiglu,
  type LinearSwigluOptions,
  linearSwigluReference,
  type LinearSwigluVariant,
} from "./linear_swiglu.ts";
export {
  LINEAR_NORM_OUT_FUSED_MAX_M,
  linearNormOut,
  type LinearNormOutOptions,
  linearNormOutReference,
  type LinearNormOutResult,
  type LinearNormOutVariant,
} from "./linear_norm_out.ts";
export {
  linearQkv,
  type LinearQkvOptions,
  linearQkvReference,
  type LinearQkvVariant,
  type QkvProjections,
} from "./linear_qkv.ts";
export { GEMV_NORM_DEFERRED_MAX_M, type RmsNormPrologue, rmsNormRowsReference } from "./gemv.ts";
export { rmsNorm, rmsNormReference } from "./rmsnorm.ts";
export {
  rope,
  ropeInvFreq,
  type RopeLayout,
  type RopeOptions,
  ropeReference,
  type RopeScaling as HfRopeScaling,
} from "./rope.ts";
export { silu, siluReference, swiglu } from "./silu.ts";
export { embedding, type EmbeddingOptions, embeddingReference } from "./embedding.ts";
export { cast, castReference } from "./cast.ts";
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
} from "./attention.ts";
export {
  logSoftmax,
  MASKED,
  softmax,
  type SoftmaxOptions,
  softmaxReference,
  type SoftmaxReferenceOptions,
} from "./softmax.ts";
export {
  argmax,
  argmaxReference,
  max,
  mean,
  type ReduceOp,
  reduceReference,
  sum,
} from "./reduce.ts";
export { swapAxes12, swapAxes12Reference } from "./layout.ts";
export {
  HEADS_ROPE_MAX_D,
  headsNormRope,
  headsNormRopeReference,
  type HeadsRopeOptions,
  type HeadsRopeReferenceOptions,
  type HeadsRopeResult,
} from "./heads_rope.ts";
export {
  sample,
  type SampleKernel,
  type SampleOptions,
  sampleReference,
  type SampleTargets,
  sampleUniform,
} from "./sample.ts";
