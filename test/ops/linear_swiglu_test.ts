/**
 * linearSwiglu() (src/ops/linear_swiglu.ts): the fused `gemv16_swiglu` kernel and the unfused
 * chain against the f64 CPU reference and against each other, and its input checks.
 */

import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import {
  linearSwiglu,
  linearSwigluReference,
  type LinearSwigluVariant,
} from "../../src/ops/linear_swiglu.ts";
import { linear } from "../../src/ops/matmul.ts";
import { swiglu } from "../../src/ops/silu.ts";
import {
  assertClose,
  fcParams,
  FLOAT_DTYPES,
  gpu,
  GPU_TEST,
  randomArray,
  type Tolerance,
} from "../_util.ts";

type Dt = "f32" | "f16";

/**
 * Inputs in [-1, 1], so g and u are sums of K terms of size ≲ √K/3. An error δ in g or u moves
 * silu(g)·u by about |u|·δ or |silu(g)|·δ, hence atol ∝ √K·√K: f32 accumulation (1e-6 per √K
 * of g) or, in f16, the unfused chain's roundings of g and u to f16 (2^-11 relative each) and
 * the output's. A wrong or missing term moves g or u by ~0.1, the output by ~0.1·√K/3 or more.
 */
function tol(dtype: Dt, K: number): Tolerance {
  return dtype === "f32" ? { atol: 2e-6 * K, rtol: 1e-4 } : { atol: 5e-4 * K, rtol: 4e-3 };
}

function data(n: number, seed: number, dtype: Dt): Float32Array {
  const d = randomArray(n, seed);
  return dtype === "f16" ? roundToF16(d) : d;
}

const words = (dtype: Dt) => (dtype === "f16" ? 8 : 4);

Deno.test({
  name: "linearSwiglu() equals silu(x·gateᵀ + bg) ⊙ (x·upᵀ + bu) in f64 and the unfused GPU " +
    "chain, fused (gemv16_swiglu below 8 rows, skinny_swiglu from 8) and unfused, M 1..40, F odd, " +
    "with and without biases",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<Dt>(...FLOAT_DTYPES),
        fc.constantFrom<LinearSwigluVariant>("fused", "unfused", "auto"),
        fc.array(fc.integer({ min: 1, max: 2 }), { maxLength: 1 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 37 }),
        fc.boolean(),
        fc.boolean(),
        fc.integer(),
        async (dtype, variant, lead0, T, kWords, F, withGateBias, withUpBias, seed) => {
          const K = kWords * words(dtype);
          const lead = [...lead0, T], M = lead.reduce((a, b) => a * b, 1);
          const x = data(M * K, seed, dtype);
          const gate = data(F * K, seed + 1, dtype), up = data(F * K, seed + 2, dtype);
          const gb = withGateBias ? data(F, seed + 3, dtype) : undefined;
          const ub = withUpBias ? data(F, seed + 4, dtype) : undefined;
          using tx = Tensor.fromArray(gpu, x, [...lead, K], dtype);
          using tg = Tensor.fromArray(gpu, gate, [F, K], dtype);
          using tu = Tensor.fromArray(gpu, up, [F, K], dtype);
          using tgb = gb ? Tensor.fromArray(gpu, gb, [F], dtype) : undefined;
          using tub = ub ? Tensor.fromArray(gpu, ub, [F], dtype) : undefined;
          using y = linearSwiglu(tx, tg, tu, { gateBias: tgb, upBias: tub, variant });
          assert.deepEqual(y.shape, [...lead, F]);
          const got = await y.toArray();
          const label = `linearSwiglu ${dtype} ${variant} [${M},${K},${F}] biases ${!!gb}/${!!ub}`;
          const ref = linearSwigluReference(x, [M, K], gate, up, F, { gateBias: gb, upBias: ub });
          assertClose(got, ref, tol(dtype, K), label);
          using g = linear(tx, tg, { bias: tgb, variant: "naive" });
          using u = linear(tx, tu, { bias: tub, variant: "naive" });
          using chain = swiglu(g, u);
          assertClose(got, await chain.toArray(), tol(dtype, K), `${label} vs chain`);
        },
      ),
      fcParams(30),
    );
  },
});

Deno.test({
  name: "linearSwiglu() falls back to the unfused chain for M > 256 and ragged K",
  ...GPU_TEST,
  fn: async () => {
    for (const dtype of FLOAT_DTYPES) {
      for (const [M, K, F] of [[257, 16, 5], [20, 7, 33], [3, 13, 7], [1, 1, 1]]) {
        const x = data(M * K, M, dtype);
        const gate = data(F * K, K, dtype), up = data(F * K, F, dtype);
        using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
        using tg = Tensor.fromArray(gpu, gate, [F, K], dtype);
        using tu = Tensor.fromArray(gpu, up, [F, K], dtype);
        using y = linearSwiglu(tx, tg, tu);
        assertClose(
          await y.toArray(),
          linearSwigluReference(x, [M, K], gate, up, F),
          tol(dtype, K),
          `linearSwiglu fallback ${dtype} [${M},${K},${F}]`,
        );
      }
    }
  },
});

Deno.test({
  name: "linearSwiglu() rejects mismatched shapes, biases and dtypes, and fused where it " +
    "does not apply",
  ...GPU_TEST,
  fn: () => {
    const range = (re: RegExp) => (e: unknown) => e instanceof RangeError && re.test(e.message);
    using x = Tensor.zeros(gpu, [2, 8]), g = Tensor.zeros(gpu, [6, 8]);
    using u5 = Tensor.zeros(gpu, [5, 8]), u = Tensor.zeros(gpu, [6, 8]);
    using g7 = Tensor.zeros(gpu, [6, 7]), b5 = Tensor.zeros(gpu, [5]);
    assert.throws(
      () => linearSwiglu(x, g, u5),
      range(/gate and up must both be \[F, K=8\].*x \[2, 8\], gate \[6, 8\], up \[5, 8\]/),
    );
    assert.throws(() => linearSwiglu(x, g7, u), range(/gate \[6, 7\]/));
    assert.throws(() => linearSwiglu(x, g, u, { upBias: b5 }), range(/upBias must be \[6\]/));
    assert.throws(() => linearSwiglu(x, g, u, { gateBias: b5 }), range(/gateBias must be \[6\]/));
    using x9 = Tensor.zeros(gpu, [257, 8]);
    assert.throws(
      () => linearSwiglu(x9, g, u, { variant: "fused" }),
      range(/fused needs M <= 256.*multiple of 4/),
    );
    using x6 = Tensor.zeros(gpu, [1, 6]), g6 = Tensor.zeros(gpu, [6, 6]);
    assert.throws(() => linearSwiglu(x6, g6, g6, { variant: "fused" }), range(/fused needs/));
    if (gpu.hasF16) {
      using h = Tensor.zeros(gpu, [6, 8], "f16");
      assert.throws(() => linearSwiglu(x, g, h), TypeError);
    }
  },
});
