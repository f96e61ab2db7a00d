/** The 16-byte-load GEMV (src/ops/gemv.ts) against its f64 CPU reference, and its input checks. */

import assert from "node:assert/strict";
import fc from "fast-check";
import { gemv, gemvReference } from "../../src/ops/gemv.ts";
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
