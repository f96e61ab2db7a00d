/**
 * How bench/attention.ts times a step (one call that records its dispatches and returns a
 * tensor), two ways, several steps' samples interleaved (A B A B …) so that a clock that drifts
 * during a row (the H200 lowers it under light load) weighs on every step alike; timed one after
 * the other, the same kernel measured up to 15-30% apart in one row (session 13):
 * - {@linkcode timePerPass}: every dispatch in a compute pass of its own (`Gpu.profile`), which
 *   adds each pass's start and drain to the sum;
 * - {@linkcode timeChained}: the steps recorded back to back in one pass, as a decode step chains
 *   its dispatches: the time PyTorch's CUDA graph measures for its kernels.
 *
 * @example
 * ```ts ignore
 * import { timeChained, timePerPass } from "./_step_timing.ts";
 * // gpu: a Gpu; a, b: () => Tensor, each one step
 * const [pa, pb] = await timePerPass(gpu, [a, b], { n: 7, sampleMs: 20, warmMs: 200 });
 * const [ca, cb] = await timeChained(gpu, [a, b], 100, 7);
 * ```
 *
 * @module
 */

import type { Gpu } from "../src/gpu/device.ts";
import { type KernelTime, MAX_PROFILED_DISPATCHES } from "../src/gpu/profiling.ts";
import type { Tensor } from "../src/tensor/tensor.ts";
import { median, timeInOnePassEach } from "./_common.ts";

/** Samples of {@linkcode timePerPass}. */
export interface Sampling {
  /** Timed samples of each step, the median reported. */
  n: number;
  /** GPU time each sample spans, about (calls a sample follow from the first call's time). */
  sampleMs: number;
  /** Back-to-back calls before the samples, about this long (clocks up). */
  warmMs: number;
}

/**
 * Median and fastest µs per call of each of `steps`, every dispatch in a pass of its own, after a
 * common warm-up, the samples interleaved. With timestamps every dispatch of every timed call is
 * in the sum: a sample times at most 2048 dispatches (one query set), so it takes at most 2048 /
 * (the step's dispatches) calls; without, the wall clock between two syncs.
 */
export async function timePerPass(
  gpu: Gpu,
  steps: (() => Tensor)[],
  { n, sampleMs, warmMs }: Sampling,
): Promise<{ us: number; minUs: number }[]> {
  const perStep = steps.map(() => 1);
  const sample = async (s: number, k: number): Promise<number> => {
    const step = steps[s];
    const outs: Tensor[] = [];
    try {
      if (gpu.hasTimestamps) {
        const perKernel = new Map<string, KernelTime>();
        const ms = await gpu.profile(
          () => {
            for (let i = 0; i < k; i++) outs.push(step());
          },
          MAX_PROFILED_DISPATCHES,
          perKernel,
        );
        const d = [...perKernel.values()].reduce((a, x) => a + x.count, 0) / k;
        perStep[s] = Math.max(perStep[s], d);
        return ms / k;
      }
      await gpu.sync();
      const t = performance.now();
      for (let i = 0; i < k; i++) outs.push(step());
      await gpu.sync();
      return (performance.now() - t) / k;
    } finally {
      outs.forEach((o) => o.dispose());
    }
  };
  const ks: number[] = [];
  for (let s = 0; s < steps.length; s++) {
    const first = await sample(s, 1);
    const most = Math.floor(MAX_PROFILED_DISPATCHES / perStep[s]);
    ks.push(Math.max(1, Math.min(1000, most, Math.round(sampleMs / first))));
    for (let i = 0, warm = Math.ceil(warmMs / first); i < warm; i++) steps[s]().dispose();
  }
  for (let s = 0; s < steps.length; s++) await sample(s, ks[s]);
  const xs: number[][] = steps.map(() => []);
  for (let i = 0; i < n; i++) {
    for (let s = 0; s < steps.length; s++) xs[s].push(await sample(s, ks[s]));
  }
  return xs.map((x) => ({ us: median(x) * 1000, minUs: Math.min(...x) * 1000 }));
}

/**
 * Median GPU µs a step of each of `steps` with `k` steps recorded back to back in one compute
 * pass ({@linkcode timeInOnePassEach}), over `n` samples of each, interleaved. Undefined without
 * timestamp queries.
 */
export async function timeChained(
  gpu: Gpu,
  steps: (() => Tensor)[],
  k: number,
  n: number,
): Promise<(number | undefined)[]> {
  if (!gpu.hasTimestamps) return steps.map(() => undefined);
  const records = steps.map((step) => () => {
    for (let i = 0; i < k; i++) step().dispose();
  });
  records.forEach((r) => r());
  await gpu.sync();
  return await timeInOnePassEach(gpu, records, k, n);
}
