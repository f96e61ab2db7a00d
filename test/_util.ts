/**
 * Test helpers: tolerance checks that report the max error and where it
 * occurred, a shared GPU, seeded data, and fast-check settings.
 */

import type fc from "fast-check";
import assert from "node:assert/strict";
import { getGpu, type Gpu } from "../src/gpu/device.ts";
import type { Tensor } from "../src/tensor/tensor.ts";
import type { CaptureName } from "../src/model/transformer.ts";

/** Tolerance `|actual - expected| <= atol + rtol*|expected|`. */
export interface Tolerance {
  atol: number;
  rtol?: number;
}

/** Standard tolerances per storage dtype for float kernels vs the f32/f64 CPU reference. */
export const TOL: Record<"f32" | "f16", Tolerance> = {
  f32: { atol: 1e-5, rtol: 1e-4 },
  f16: { atol: 2e-3, rtol: 1e-2 },
};

/** Result of comparing two arrays. */
export interface Diff {
  maxAbs: number;
  index: number;
  ok: boolean;
}

/** Compares elementwise; never throws. NaN anywhere counts as a failure. */
export function diff(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance): Diff {
  let maxAbs = 0, index = -1, ok = actual.length === expected.length;
  const rtol = tol.rtol ?? 0;
  for (let i = 0; i < Math.min(actual.length, expected.length); i++) {
    const e = expected[i], a = actual[i];
    const d = Math.abs(a - e);
    if (!(d <= tol.atol + rtol * Math.abs(e)) && !(a === e)) ok = false;
    if (Number.isNaN(d) && !(Number.isNaN(a) && Number.isNaN(e))) {
      ok = false;
      if (index < 0) index = i;
    }
    if (d > maxAbs) {
      maxAbs = d;
      index = i;
    }
  }
  return { maxAbs, index, ok };
}

/** Throws with the max error, its index and both values unless close. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: Tolerance,
  label = "values",
): Diff {
  const d = diff(actual, expected, tol);
  if (!d.ok) {
    const i = d.index;
    throw new Error(
      `${label}: max |diff| ${d.maxAbs.toExponential(3)} at index ${i} ` +
        `(actual ${actual[i]}, expected ${expected[i]}; atol ${tol.atol}, rtol ${tol.rtol ?? 0}; ` +
        `lengths ${actual.length}/${expected.length})`,
    );
  }
  return d;
}

/** Deterministic pseudo-random floats in [lo, hi) (mulberry32). */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out[i] = lo + (hi - lo) * u;
  }
  return out;
}

/** Deterministic bits in {0, 1} with P(1) = `p`, from a seed (thresholds {@link randomArray}). */
export function randomBits(n: number, seed: number, p = 0.5): Int32Array {
  return Int32Array.from(randomArray(n, seed, 0, 1), (u) => (u < p ? 1 : 0));
}

/** A keyMask [B, S] with `pads[b]` leading zeros (left padding), B = `pads.length`. */
export function leftPadMask(S: number, pads: number[]): Int32Array {
  return Int32Array.from(
    { length: pads.length * S },
    (_, i) => (i % S < pads[Math.floor(i / S)] ? 0 : 1),
  );
}

/** Asserts two f32 arrays equal bit for bit, naming the first element that differs. */
export function bitsEqual(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, what);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) assert.fail(`${what}: element ${i} differs (${a[i]} vs ${b[i]})`);
  }
}

/** One `using` handle that disposes all of `ms` at scope exit. */
export function disposing(...ms: { dispose(): void }[]): Disposable {
  return { [Symbol.dispose]: () => ms.forEach((m) => m.dispose()) };
}

/** The shared GPU for tests. */
export const gpu: Gpu = await getGpu();

/** Float dtypes available on this device. */
export const FLOAT_DTYPES: ("f32" | "f16")[] = gpu.hasF16 ? ["f32", "f16"] : ["f32"];

/** fast-check run count: `FC_RUNS` env or the given default. */
export function runs(def: number): number {
  const v = Number(Deno.env.get("FC_RUNS"));
  return Number.isFinite(v) && v > 0 ? v : def;
}

/** fast-check parameters for GPU properties (async, seeded by `FC_SEED` when set). */
export function fcParams(numRuns: number): fc.Parameters<unknown> {
  const seed = Number(Deno.env.get("FC_SEED"));
  return {
    numRuns: runs(numRuns),
    ...(Number.isFinite(seed) && Deno.env.get("FC_SEED") ? { seed } : {}),
  };
}

/** Deno.test options for GPU tests (WebGPU keeps resources alive between tests). */
export const GPU_TEST = { sanitizeResources: false, sanitizeOps: false } as const;

/**
 * How many of `rows` sampled rows a sampling test lets fall back on its float tolerance (a draw
 * within rounding of a CDF boundary) or differ between two kernels: 2, plus one per 500 rows, so
 * the allowance grows with `FC_RUNS` as the rows do (lavapipe, measured: 0 in ~4800 rows of
 * `sample_test.ts`, 1 in 1936 of `sample_split_test.ts`'s temperature-only property).
 */
export function nearTieSlack(rows: number): number {
  return 2 + Math.ceil(rows / 500);
}

/**
 * A `capture` callback for `model.forward` that keeps the tensors named `name` (one a layer) and
 * disposes the rest; `values()` reads the kept ones, layer by layer, into one array and disposes them.
 */
export function captureNamed(name: CaptureName): {
  capture: (n: CaptureName, layer: number, t: Tensor) => void;
  values: () => Promise<number[]>;
} {
  const kept: Tensor[] = [];
  return {
    capture: (n, _layer, t) => void (n === name ? kept.push(t) : t.dispose()),
    values: async () => {
      const arrays = await Promise.all(kept.map((t) => t.toArray()));
      kept.forEach((t) => t.dispose());
      return arrays.flatMap((a) => [...a]);
    },
  };
}
