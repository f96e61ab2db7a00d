/**
 * Logistic noise for the Gumbel-sigmoid of DMS training (SPEC §4): `n = G1 − G2` with
 * G1, G2 ~ Gumbel(0, 1), i.e. `n ~ Logistic(0, 1)`, sampled as `n = log(u) − log(1 − u)` with
 * u uniform in (0, 1). The decision of a (layer, batch, head, position) is then
 * `hard = 1[σ((a + n)/τ) > 0.5] = 1[a + n > 0]`, so `P(hard = 1) = σ(a)` for any τ.
 *
 * The RNG is counter-based (PCG hash, as `shaders/random.wgsl`): element i of the noise of
 * `(seed, step, layer)` depends only on those three numbers and i, never on the device or the
 * workgroup size, so a resumed run redraws exactly the same noise. Keys:
 * `k1 = pcg(pcg(seed) ^ step)`, `k2 = pcg(pcg(layer) ^ k1)` — injective in step for a seed, and
 * in layer for a step; element i is `pcg(pcg(i ^ k1) ^ k2)`. SPEC §4 only asks for a seeded
 * logistic sampler, not torch's bit stream (its noise is bf16; ours is f32).
 *
 * u = (2k + 1)/2^24 for a 23-bit random integer k, strictly inside (0, 1); both 2k + 1 and
 * 2^24 − 2k − 1 are exact in f32, so |n| ≤ log(2^24 − 1) ≈ 16.64 and no NaN/inf occurs.
 *
 * Kernel (`shaders/noise.wgsl`, `logistic`): one thread per element, 256 per workgroup.
 *
 * @example The noise of layer 3 at step 10, shape [B, Hkv, T]
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { logisticNoise } from "./noise.ts";
 * const gpu = await getGpu();
 * using n = logisticNoise(gpu, [1, 2, 16], { seed: 42, step: 10, layer: 3 });
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { pcgHash } from "../tensor/random.ts";
import { numel, Tensor } from "../tensor/tensor.ts";

/** What the noise of one layer at one step is drawn from. */
export interface NoiseKey {
  /** Run seed (u32). */
  seed: number;
  /** Optimizer step (u32; from 0). Different steps give independent noise. */
  step: number;
  /** Layer index (u32). Different layers give independent noise. */
  layer: number;
}

const WG = 256;
const TWO24 = 16777216;

function u32(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new RangeError(`logisticNoise: ${what} must be an integer in 0..2^32-1, got ${v}`);
  }
  return v >>> 0;
}

/** The two 32-bit keys of a {@linkcode NoiseKey} (as the kernel receives them). */
export function noiseKeys(key: NoiseKey): [number, number] {
  const seed = u32(key.seed, "seed"), step = u32(key.step, "step");
  const layer = u32(key.layer, "layer");
  const k1 = pcgHash((pcgHash(seed) ^ step) >>> 0);
  const k2 = pcgHash((pcgHash(layer) ^ k1) >>> 0);
  return [k1, k2];
}

/**
 * Logistic(0, 1) noise of one layer at one step, generated on the GPU.
 *
 * @param gpu Device.
 * @param shape Usually `[B, Hkv, T]` (any shape; element i in row-major order).
 * @param key `{ seed, step, layer }`.
 * @returns A new f32 tensor of `shape`.
 * @throws {RangeError} When a key field is not a u32.
 */
export function logisticNoise(gpu: Gpu, shape: readonly number[], key: NoiseKey): Tensor<"f32"> {
  const [k1, k2] = noiseKeys(key);
  const out = Tensor.empty(gpu, shape, "f32");
  const n = out.size;
  const k = gpu.kernel({ shader: "noise", entry: "logistic", constants: { WG } });
  gpu.dispatch(k, [out.buffer], Gpu.grid(Math.ceil(n / WG)), { n, k1, k2 });
  return out;
}

/**
 * CPU twin of {@linkcode logisticNoise}: the same random integers, the logs in f64 (the GPU's
 * f32 logs agree to ~1e-5 absolute).
 */
export function logisticNoiseReference(shape: readonly number[], key: NoiseKey): Float64Array {
  const [k1, k2] = noiseKeys(key);
  const n = numel(shape);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const bits = pcgHash((pcgHash((i ^ k1) >>> 0) ^ k2) >>> 0);
    const odd = (((bits >>> 9) << 1) | 1) >>> 0;
    out[i] = Math.log(odd) - Math.log(TWO24 - odd);
  }
  return out;
}
