/** The skinny matmul for decode batches (src/ops/skinny.ts) against its f64 CPU reference. */

import assert from "node:assert/strict";
import fc from "fast-check";
import { skinny, skinnyReference, skinnyTuning } from "../../src/ops/skinny.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, randomArray } from "../_util.ts";

/** f32 accumulation over K terms of products in [-1, 1]: error grows like sqrt(K). */
const tol = (dtype: "f32" | "f16", K: number) => ({
  atol: (dtype === "f32" ? 2e-6 : 2e-3) * Math.sqrt(K),
  rtol: dtype === "f32" ? 1e-5 : 4e-3,
});

/** Sets (or, with undefined, unsets) the workgroup shape switches. */
function setTuning(wg: number | undefined, lanes: number | undefined): void {
  skinnyTuning.wg = wg;
  skinnyTuning.lanes = lanes;
}

/** Workgroup shapes the kernel takes: threads, lanes a slot of 4 columns. */
const SHAPES: [number | undefined, number | undefined][] = [
  [undefined, undefined],
  [128, 16],
  [128, 32],
  [128, 4],
  [64, 16],
  [64, 8],
  [64, 4],
];

Deno.test({
  name: "skinny() equals x·wᵀ in f64 for M 1..40 (blocks of 16), K words 1..100 (chunk tails), " +
    "N 1..90, every workgroup shape (f32/f16)",
  ...GPU_TEST,
  fn: async () => {
    const saved = { ...skinnyTuning };
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...FLOAT_DTYPES),
          fc.constantFrom(...SHAPES),
          fc.integer({ min: 1, max: 40 }),
          fc.integer({ min: 1, max: 100 }),
          fc.integer({ min: 1, max: 90 }),
          fc.integer({ min: 0, max: 1 << 30 }),
          async (dtype, [wg, lanes], M, words, N, seed) => {
            setTuning(wg, lanes);
            const K = words * (dtype === "f16" ? 8 : 4);
            let x = randomArray(M * K, seed), w = randomArray(N * K, seed + 1);
            if (dtype === "f16") [x, w] = [roundToF16(x), roundToF16(w)];
            using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
            using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
            using y = skinny(tx, tw);
            let want: ArrayLike<number> = skinnyReference(x, w, M, K, N);
            if (dtype === "f16") want = roundToF16(Float32Array.from(want));
            const what = `skinny ${dtype} ${M}x${K}x${N} wg ${wg} lanes ${lanes}`;
            assertClose(await y.toArray(), want, tol(dtype, K), what);
          },
        ),
        fcParams(30),
      );
    } finally {
      setTuning(saved.wg, saved.lanes);
    }
  },
});

Deno.test({
  name: "skinny() names the shape it cannot take",
  ...GPU_TEST,
  fn: () => {
    using x = Tensor.fromArray(gpu, new Float32Array(0), [0, 8]);
    using w = Tensor.fromArray(gpu, new Float32Array(2 * 8), [2, 8]);
    assert.throws(() => skinny(x, w), /x\[0, 8\] f32: needs M >= 1/);
    using x2 = Tensor.fromArray(gpu, new Float32Array(4 * 6), [4, 6]);
    using w2 = Tensor.fromArray(gpu, new Float32Array(2 * 6), [2, 6]);
    assert.throws(() => skinny(x2, w2), /K a multiple of 4/);
    using w3 = Tensor.fromArray(gpu, new Float32Array(2 * 4), [2, 4]);
    assert.throws(() => skinny(x2, w3), /expected x:\[M, K\] and w:\[N, K\]/);
    const saved = { ...skinnyTuning };
    try {
      using x4 = Tensor.fromArray(gpu, new Float32Array(32 * 8), [32, 8]);
      setTuning(64, 32);
      assert.throws(() => skinny(x4, w), /at most wg \/ 4\), got wg 64 and lanes 32/);
      setTuning(256, 16);
      assert.throws(() => skinny(x4, w), /needs wg 64 or 128/);
    } finally {
      setTuning(saved.wg, saved.lanes);
    }
  },
});
