/** The 16-byte-load GEMV (src/ops/gemv.ts) against its f64 CPU reference, and its input checks. */

import assert from "node:assert/strict";
import fc from "fast-check";
import { gemv, gemvReference, gemvTuning, rmsNormRowsReference } from "../../src/ops/gemv.ts";
import { linear, linearReference } from "../../src/ops/matmul.ts";
import { linearQkv } from "../../src/ops/linear_qkv.ts";
import { linearSwiglu, linearSwigluReference } from "../../src/ops/linear_swiglu.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, randomArray } from "../_util.ts";

/** f32 accumulation over K terms of products in [-1, 1]: error grows like sqrt(K). */
const tol = (dtype: "f32" | "f16", K: number) => ({
  atol: (dtype === "f32" ? 2e-6 : 2e-3) * Math.sqrt(K),
  rtol: dtype === "f32" ? 1e-5 : 4e-3,
});

Deno.test({
  name: "gemv() equals x·wᵀ in f64 for M 1..16, K words 1..80, N not a multiple of 4 (f32/f16)",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...FLOAT_DTYPES),
        fc.integer({ min: 1, max: 16 }),
        fc.integer({ min: 1, max: 80 }),
        fc.integer({ min: 1, max: 70 }),
        fc.integer({ min: 0, max: 1 << 30 }),
        async (dtype, M, words, N, seed) => {
          const K = words * (dtype === "f16" ? 8 : 4);
          let x = randomArray(M * K, seed), w = randomArray(N * K, seed + 1);
          if (dtype === "f16") [x, w] = [roundToF16(x), roundToF16(w)];
          using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
          using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
          using y = gemv(tx, tw);
          let want: ArrayLike<number> = gemvReference(x, w, M, K, N);
          if (dtype === "f16") want = roundToF16(Float32Array.from(want));
          assertClose(await y.toArray(), want, tol(dtype, K), `gemv ${dtype} ${M}x${K}x${N}`);
        },
      ),
      fcParams(24),
    );
  },
});

Deno.test({
  name:
    "linear variant gemv16wide (4..64 lanes a row, and the default by M) equals x·wᵀ + bias + residual " +
    "in f64, with and without the RMSNorm prologue, M 1, 3, 16, 21 (blocks of 16), K words 1..90, N 1..300",
  ...GPU_TEST,
  fn: async () => {
    const saved = gemvTuning.wideLanes;
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...FLOAT_DTYPES),
          fc.constantFrom<number | undefined>(undefined, 4, 8, 16, 32, 64),
          fc.constantFrom(1, 3, 16, 21),
          fc.integer({ min: 1, max: 90 }),
          fc.integer({ min: 1, max: 300 }),
          fc.boolean(),
          fc.integer({ min: 0, max: 1 << 30 }),
          async (dtype, lanes, M, words, N, normed, seed) => {
            gemvTuning.wideLanes = lanes;
            const K = words * (dtype === "f16" ? 8 : 4);
            const f = (n: number, s: number) => {
              const d = randomArray(n, s);
              return dtype === "f16" ? roundToF16(d) : d;
            };
            const x = f(M * K, seed), w = f(N * K, seed + 1), b = f(N, seed + 2);
            const res = f(M * N, seed + 3), g = f(K, seed + 4);
            using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
            using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
            using tb = Tensor.fromArray(gpu, b, [N], dtype);
            using tr = Tensor.fromArray(gpu, res, [M, N], dtype);
            using tg = Tensor.fromArray(gpu, g, [K], dtype);
            const norm = normed ? { weight: tg, eps: 1e-6 } : undefined;
            using y = linear(tx, tw, { bias: tb, residual: tr, norm, variant: "gemv16wide" });
            const xs = normed ? rmsNormRowsReference(x, g, 1e-6) : x;
            const want = linearReference(xs, [M, K], w, [N, K], b, res);
            // the normed x is rounded to f16 in f16 (not in the f64 reference): twice the slack
            const t = tol(dtype, K);
            const label = `gemv16wide ${lanes} lanes ${dtype} norm ${normed} ${M}x${K}x${N}`;
            assertClose(
              await y.toArray(),
              want,
              normed ? { atol: 2 * t.atol, rtol: 2 * t.rtol } : t,
              label,
            );
          },
        ),
        fcParams(16),
      );
      gemvTuning.wideLanes = 12;
      using x = Tensor.fromArray(gpu, new Float32Array(8), [1, 8]);
      using w = Tensor.fromArray(gpu, new Float32Array(16), [2, 8]);
      assert.throws(
        () => linear(x, w, { variant: "gemv16wide" }),
        /wideLanes must be 4, 8, 16, 32 or 64, got 12/,
      );
    } finally {
      gemvTuning.wideLanes = saved;
    }
  },
});

Deno.test({
  name: "gemv() rejects mismatched shapes, K not a whole number of words, M > 16 and mixed dtypes",
  ...GPU_TEST,
  fn: () => {
    using x = Tensor.fromArray(gpu, new Float32Array(8), [1, 8]);
    using w = Tensor.fromArray(gpu, new Float32Array(12), [3, 4]);
    assert.throws(() => gemv(x, w), /gemv: expected x:\[M, K\] and w:\[N, K\]/);
    using x6 = Tensor.fromArray(gpu, new Float32Array(6), [1, 6]);
    using w6 = Tensor.fromArray(gpu, new Float32Array(12), [2, 6]);
    assert.throws(() => gemv(x6, w6), /multiple of 4/);
    using x9 = Tensor.fromArray(gpu, new Float32Array(68), [17, 4]);
    using w4 = Tensor.fromArray(gpu, new Float32Array(8), [2, 4]);
    assert.throws(() => gemv(x9, w4), /M <= 16/);
    if (gpu.hasF16) {
      using h = Tensor.fromArray(gpu, new Float32Array(8), [2, 4], "f16");
      using x1 = Tensor.fromArray(gpu, new Float32Array(4), [1, 4]);
      assert.throws(() => gemv(x1, h), TypeError);
    }
  },
});

Deno.test({
  name: "gemv16's main loop (two words a lane and step, then one) over long rows: gemv, " +
    "q/k/v and SwiGLU equal x·wᵀ in f64 for 191..449 words a row (K up to 3592 in f16)",
  ...GPU_TEST,
  fn: async () => {
    for (const dtype of FLOAT_DTYPES) {
      const epv = dtype === "f16" ? 8 : 4;
      // 64 lanes a row: 191 words give lanes 2 or 3 words, 256 four each, 257 lane 0 a fifth (a
      // one-word tail), 320 five each, 384 six, 385 and 449 lane 0 seven and eight
      for (const words of [191, 256, 257, 320, 384, 385, 449]) {
        const K = words * epv, M = words % 3 + 1, N = 5;
        const f = (n: number, s: number) => {
          const d = randomArray(n, s);
          return dtype === "f16" ? roundToF16(d) : d;
        };
        const x = f(M * K, words), w = f(N * K, words + 1), w2 = f(N * K, words + 2);
        using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
        using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
        using tw2 = Tensor.fromArray(gpu, w2, [N, K], dtype);
        const label = `${dtype} M ${M} K ${K}`;
        const round = (v: Float64Array) =>
          dtype === "f16" ? roundToF16(Float32Array.from(v)) : Float32Array.from(v);
        const want = round(gemvReference(x, w, M, K, N));
        const want2 = round(gemvReference(x, w2, M, K, N));
        using y = gemv(tx, tw);
        assertClose(await y.toArray(), want, tol(dtype, K), `gemv ${label}`);
        const o = linearQkv(tx, tw, tw2, tw, { variant: "fused" });
        using q = o.q, k = o.k, v = o.v;
        assertClose(await q.toArray(), want, tol(dtype, K), `q ${label}`);
        assertClose(await k.toArray(), want2, tol(dtype, K), `k ${label}`);
        assertClose(await v.toArray(), want, tol(dtype, K), `v ${label}`);
        using s = linearSwiglu(tx, tw, tw2, { variant: "fused" });
        const ref = linearSwigluReference(x, [M, K], w, w2, N);
        const t = tol(dtype, K);
        assertClose(
          await s.toArray(),
          ref,
          { atol: t.atol * 4, rtol: 2 * t.rtol },
          `swiglu ${label}`,
        );
      }
    }
  },
});
