/**
 * The compression schedule of DMS retrofitting (SPEC §6, `dms_schedule`): the target
 * compression ratio rises **linearly in CR** (not in α*) from `initialCr` to `finalCr` over
 * `finalStep` optimizer steps and stays at `finalCr` afterwards; the target closed fraction
 * that the one-sided compression loss pushes towards is `α* = 1 − 1/CR`.
 *
 * `step` is the optimizer step about to be taken, counted from 0 (HF `global_step`): the
 * first step uses step 0, so with `initialCr = 1` it has `α* = 0`.
 *
 * @example The reference recipe (1 → 16 over 510 steps): CR 8 at step 238
 * ```ts
 * import { alphaTarget, targetCompressionRatio } from "./schedule.ts";
 * const s = { initialCr: 1, finalCr: 16, finalStep: 510 };
 * console.log(targetCompressionRatio(238, s)); // 8
 * console.log(alphaTarget(238, s)); // 0.875
 * console.log(alphaTarget(0, s)); // 0
 * ```
 *
 * @module
 */

/** Parameters of the CR schedule (SPEC §6: `initial_cr`, `final_cr`, `final_step`). */
export interface CompressionSchedule {
  /** CR at step 0 (>= 1; the reference uses 1). */
  initialCr: number;
  /** CR from `finalStep` on (>= 1; e.g. 8 or 16). */
  finalCr: number;
  /** Step at which `finalCr` is reached (>= 0; 0 means `finalCr` from the start). */
  finalStep: number;
}

function check(step: number, s: CompressionSchedule): void {
  if (!Number.isFinite(step) || step < 0) {
    throw new RangeError(`schedule: step must be a finite number >= 0, got ${step}`);
  }
  for (const k of ["initialCr", "finalCr"] as const) {
    if (!(s[k] >= 1) || !Number.isFinite(s[k])) {
      throw new RangeError(`schedule: ${k} must be a finite number >= 1, got ${s[k]}`);
    }
  }
  if (!(s.finalStep >= 0) || !Number.isFinite(s.finalStep)) {
    throw new RangeError(`schedule: finalStep must be a finite number >= 0, got ${s.finalStep}`);
  }
}

/**
 * Target compression ratio at `step`:
 * `initialCr + (finalCr − initialCr) · min(step / finalStep, 1)` (SPEC §6).
 *
 * @param step Optimizer step, from 0.
 * @param schedule `{ initialCr, finalCr, finalStep }`.
 * @returns The target CR (>= 1).
 * @throws {RangeError} For a negative step or CR < 1.
 */
export function targetCompressionRatio(step: number, schedule: CompressionSchedule): number {
  check(step, schedule);
  const { initialCr, finalCr, finalStep } = schedule;
  const progress = finalStep === 0 ? 1 : Math.min(step / finalStep, 1);
  return initialCr + (finalCr - initialCr) * progress;
}

/**
 * Target closed fraction `α*(step) = 1 − 1/CR(step)` (SPEC §6), the `target_frac_to_close`
 * of the compression loss. Step 0 with `initialCr = 1` gives 0.
 *
 * @param step Optimizer step, from 0.
 * @param schedule `{ initialCr, finalCr, finalStep }`.
 * @returns α* in [0, 1).
 */
export function alphaTarget(step: number, schedule: CompressionSchedule): number {
  return 1 - 1 / targetCompressionRatio(step, schedule);
}
