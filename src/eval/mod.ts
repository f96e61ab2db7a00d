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
