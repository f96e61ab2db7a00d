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
  Params,
} from "./src/gpu/device.ts";
export type { BindingDecl } from "./src/gpu/shader.ts";
export type { FloatDType } from "./src/ops/_launch.ts";
export { readTensors, Tensor } from "./src/tensor/tensor.ts";
export type { ArrayFor, DType } from "./src/tensor/dtype.ts";
export { type RandomOptions, randomTensor } from "./src/tensor/random.ts";
export { add, axpy, mul, scale } from "./src/ops/elementwise.ts";
