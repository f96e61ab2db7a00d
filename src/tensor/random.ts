/**
 * Seeded random tensors generated on the GPU (`shaders/random.wgsl`), with a
 * CPU twin that reproduces the same values: element i depends only on
 * `(seed, i)` through a PCG hash, so results do not depend on the workgroup
 * size or the device.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { randomTensor } from "./random.ts";
 * const gpu = await getGpu();
 * using w = randomTensor(gpu, [4, 8], { seed: 7, dist: "normal", std: 0.02 });
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import type { DType } from "./dtype.ts";
import { numel, Tensor } from "./tensor.ts";

/** Distribution and parameters of {@linkcode randomTensor}. */
export interface RandomOptions {
  /** 32-bit seed. */
  seed: number;
  /** `uniform` in [lo, hi) (default [0, 1)), or `normal` with mean/std (default 0/1). */
  dist?: "uniform" | "normal";
  /** Uniform lower bound (default 0). */
  lo?: number;
  /** Uniform upper bound, exclusive (default 1). */
  hi?: number;
  /** Normal mean (default 0). */
  mean?: number;
  /** Normal standard deviation (default 1). */
  std?: number;
  /** Float dtype of the result (default f32). */
  dtype?: "f32" | "f16";
}

const WG = 256;

/** Fills a new tensor with seeded random values on the GPU. */
export function randomTensor(
  gpu: Gpu,
  shape: readonly number[],
  opts: RandomOptions,
): Tensor<"f32" | "f16"> {
  const dtype = opts.dtype ?? "f32";
  const t = Tensor.empty(gpu, shape, dtype);
  const n = t.size;
  const normal = opts.dist === "normal";
  const [a, b] = normal ? [opts.mean ?? 0, opts.std ?? 1] : [opts.lo ?? 0, opts.hi ?? 1];
  const k = gpu.kernel({
    shader: "random",
    entry: "fill",
    defines: { T: dtype },
    constants: { WG },
  });
  const params = { n, seed: opts.seed >>> 0, dist: normal ? 1 : 0, lo: a, hi: b };
  gpu.dispatch(k, [t.buffer], Gpu.grid(Math.ceil(n / WG)), params);
  return t;
}

/** PCG hash, identical to the WGSL `pcg()`. */
export function pcgHash(v: number): number {
  const state = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** CPU twin of {@linkcode randomTensor} (values as f32; the caller rounds to f16 if needed). */
export function randomReference(shape: readonly number[], opts: RandomOptions): Float32Array {
  const n = numel(shape);
  const out = new Float32Array(n);
  const hs = pcgHash(opts.seed);
  const unit = (i: number) => Math.fround((pcgHash((i ^ hs) >>> 0) >>> 8) / 16777216);
  const normal = opts.dist === "normal";
  const [a, b] = normal ? [opts.mean ?? 0, opts.std ?? 1] : [opts.lo ?? 0, opts.hi ?? 1];
  for (let i = 0; i < n; i++) {
    if (!normal) {
      out[i] = Math.fround(a) + (Math.fround(b) - Math.fround(a)) * unit(i);
    } else {
      const u1 = 1 - unit((2 * i) >>> 0);
      const u2 = unit((2 * i + 1) >>> 0);
      out[i] = a + b * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    }
  }
  return out;
}

/** The dtype a random tensor can have. */
export type RandomDType = Extract<DType, "f32" | "f16">;
