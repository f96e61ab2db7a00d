/**
 * `@hyperscale/dms/gpu`: the WebGPU runtime under every op, for kernel authors: the device
 * ({@linkcode getGpu}, {@linkcode Gpu}), kernels built from the WGSL files in `shaders/`,
 * uniforms packed by field name against the shader's `struct Params`, the buffer pool and
 * timestamp profiling.
 *
 * @example Dispatch a kernel by hand
 * ```ts ignore
 * import { getGpu } from "@hyperscale/dms/gpu";
 * const gpu = await getGpu();
 * const k = gpu.kernel({ shader: "elementwise", entry: "scale", defines: { T: "f32" } });
 * const x = gpu.alloc(16), y = gpu.alloc(16);
 * gpu.write(x, new Float32Array([1, 2, 3, 4]));
 * gpu.dispatch(k, [x, y], [1], { n: 4, m: 1, alpha: 2 }); // fields of struct Params, by name
 * console.log(new Float32Array(await gpu.read(y, 16))); // [2, 4, 6, 8]
 * ```
 *
 * @module
 */

export {
  type AdapterSummary,
  type Binding,
  getGpu,
  Gpu,
  type GpuOptions,
  type Kernel,
  type KernelSpec,
  type MemoryStats,
  type ParamValues,
  slowAdapterHint,
} from "./device.ts";
export type { BindingDecl, ParamField, ParamLayout, ParamType } from "./shader.ts";
export type { KernelTime } from "./profiling.ts";
export type { ReadRange } from "./readback.ts";
export {
  sameDelta,
  type StepTrace,
  type TracedDispatch,
  type TraceDelta,
  traceDelta,
} from "./step_trace.ts";
