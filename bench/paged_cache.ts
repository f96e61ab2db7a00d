/**
 * Benchmark of the paged KV cache (not a test), dense and DMS policies: one decode step (slot
 * update, scatter, paged flash-decoding attention, merge) and one prefill chunk, for Qwen3-8B-like heads (Hkv = 8,
 * G = 4, D = 128, f16 when available), GPU time from timestamp queries (median of reps).
 * Decode reports the effective bandwidth of reading the live K and V once.
 *
 * Usage: `deno run -A bench/paged_cache.ts [--quick]`
 *
 * @module
 */

import { scriptArgs } from "../src/cli/script_args.ts";
import { getGpu } from "../src/gpu/device.ts";
import { createDmsCache } from "../src/dms/dms_cache.ts";
import { createDenseCache } from "../src/policies/dense.ts";
import { Tensor } from "../src/tensor/tensor.ts";

const args = scriptArgs(
  "paged_cache",
  `usage: deno run -A bench/paged_cache.ts [--quick]

  --quick   contexts 512 and 2048, 3 reps (always on a CPU adapter); else 1K-32K, 15 reps`,
  { quick: { type: "boolean" } },
);
const gpu = await getGpu();
const cpu = gpu.description.includes("llvmpipe");
const quick = args.flag("quick") || cpu;
const dtype: "f32" | "f16" = gpu.hasF16 ? "f16" : "f32";
const [B, Hkv, G, D] = [1, 8, 4, 128];
const Hq = Hkv * G;
const contexts = quick ? [512, 2048] : [1024, 4096, 16384, 32768];
const chunk = quick ? 512 : 4096;
const reps = quick ? 3 : 15;
console.log(`${gpu.description}, ${dtype}, B=${B} Hkv=${Hkv} G=${G} D=${D}`);

function rnd(shape: number[], seed: number, dt: "f32" | "f16" | "i32" = dtype): Tensor {
  const n = shape.reduce((a, b) => a * b);
  if (dt === "i32") {
    return Tensor.fromArray(
      gpu,
      Int32Array.from(randomArray(n, seed, 0, 1), (x) => (x < 0.5 ? 1 : 0)),
      shape,
      "i32",
    );
  }
  return Tensor.fromArray(gpu, randomArray(n, seed), shape, dt);
}

/** n uniform values in [lo, hi) from a seeded mulberry32 stream (the benchmark's own inputs). */
function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = lo + (hi - lo) * (((t ^ (t >>> 14)) >>> 0) / 4294967296);
  }
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

for (const evict of [false, true]) {
  for (const ctx of contexts) {
    const sizes = { layers: 1, batch: B, kvHeads: Hkv, headDim: D, blockSize: 256, dtype };
    using cache = evict
      ? createDmsCache(gpu, { ...sizes, window: 512, preallocateTokens: ctx + 1024 })
      : createDenseCache(gpu, { ...sizes, preallocateTokens: ctx + 1024 });
    let prefillMs = 0, t = 0, seed = 1;
    while (t < ctx) {
      const n = Math.min(chunk, ctx - t);
      using q = rnd([B, Hq, n, D], seed++);
      using k = rnd([B, Hkv, n, D], seed++);
      using v = rnd([B, Hkv, n, D], seed++);
      using d = rnd([B, Hkv, n], seed++, "i32");
      await cache.reserve(n);
      let out: Tensor | undefined;
      const ms = await gpu.profile(() => (out = cache.attend(0, q, k, v, d)));
      out!.dispose();
      if (t + n >= ctx) prefillMs = ms;
      t += n;
    }
    const s0 = await cache.stats();
    const live = s0.liveTokens;
    // Keys seen by the last chunk's queries (causal, dense upper bound) for a FLOP count.
    const n = Math.min(chunk, ctx);
    const pairs = n * (live - n) + (n * (n + 1)) / 2;
    const prefillTflops = (4 * pairs * Hq * D) / (prefillMs * 1e-3) / 1e12;
    using q1 = rnd([B, Hq, 1, D], 100);
    using k1 = rnd([B, Hkv, 1, D], 101);
    using v1 = rnd([B, Hkv, 1, D], 102);
    using d1 = rnd([B, Hkv, 1], 103, "i32");
    await cache.reserve(reps + 2);
    const times: number[] = [];
    for (let r = 0; r < reps + 1; r++) {
      let out: Tensor | undefined;
      const ms = await gpu.profile(() => (out = cache.attend(0, q1, k1, v1, d1)));
      out!.dispose();
      if (r > 0) times.push(ms); // the first step compiles nothing on the GPU clock, but warms caches
    }
    const ms = median(times);
    const bytes = live * 2 * D * (dtype === "f16" ? 2 : 4);
    console.log(
      `${evict ? "dms  " : "dense"} ctx ${String(ctx).padStart(6)}: live ${
        String(live).padStart(7)
      } entries; ` +
        `decode step ${(ms * 1000).toFixed(1).padStart(7)} us (${
          (bytes / (ms * 1e-3) / 1e9).toFixed(0).padStart(5)
        } GB/s K+V); ` +
        `prefill chunk ${n}: ${prefillMs.toFixed(2)} ms (${prefillTflops.toFixed(2)} TFLOP/s)`,
    );
  }
}
