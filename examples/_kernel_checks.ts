/**
 * Checks for the op families whose launchers land separately (softmax,
 * reductions, sampling); returns rows of [op, shape, max error].
 *
 * @module
 */
import type { Gpu } from "../mod.ts";

/** Extra op checks for the kernels demo. */
export function extraKernelChecks(
  _gpu: Gpu,
  _dtype: "f32" | "f16",
): Promise<[string, string, number][]> {
  return Promise.resolve([]);
}
