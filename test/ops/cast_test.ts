import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { cast, castReference } from "../../src/ops/cast.ts";
import { fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";

// Tolerance: exact. f32 -> f16 must give the round-to-nearest-even bits of roundToF16 (what
// PyTorch's .half() gives), f16 -> f32 and same-dtype copies are exact. Compared with
// deepStrictEqual, so NaN matches NaN and -0 must stay -0.

const NO_F16 = !gpu.hasF16;

/** Values across the f16 range: normals, subnormals, overflow, exact ties. */
function mixedValues(n: number, seed: number): Float32Array {
  const u = randomArray(n, seed, 0, 1);
  const v = randomArray(n, seed + 1, -1, 1);
  return v.map((x, i) => {
    const k = Math.floor(u[i] * 6);
    if (k === 0) return x; // [-1, 1]
    if (k === 1) return x * 7e4; // up to overflow
    if (k === 2) return x * 6.2e-5; // f16 subnormals (< 2^-14)
    if (k === 3) return x * 1e-7; // around the smallest subnormal 2^-24
    // Exact ties: halfway between two f16 values of random exponent.
    const e = Math.floor(u[i] * 1e4) % 30 - 15;
    return Math.sign(x || 1) * 2 ** e * (1 + (2 * Math.floor(Math.abs(x) * 1023) + 1) / 2048);
  });
}

Deno.test({
  name: "cast() f32 -> f16 -> f32 rounds to nearest even exactly like roundToF16",
  ...GPU_TEST,
  ignore: NO_F16,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 41 }), { minLength: 1, maxLength: 3 }),
        fc.integer(),
        async (shape, seed) => {
          const n = shape.reduce((a, b) => a * b);
          const x = mixedValues(n, seed);
          using tx = Tensor.fromArray(gpu, x, shape);
          using h = cast(tx, "f16");
          using back = cast(h, "f32");
          assert.equal(h.dtype, "f16");
          assert.equal(back.dtype, "f32");
          assert.deepEqual(back.shape, shape);
          const want = Array.from(castReference(x, "f16"));
          assert.deepStrictEqual(Array.from(await h.toArray()), want);
          assert.deepStrictEqual(Array.from(await back.toArray()), want);
        },
      ),
      fcParams(25),
    );
  },
});

Deno.test({
  name: "cast() to f16 handles zeros, infinities, NaN, overflow and subnormal ties",
  ...GPU_TEST,
  ignore: NO_F16,
  fn: async () => {
    const x = [
      0,
      -0,
      Infinity,
      -Infinity,
      NaN,
      65504,
      65519.99,
      65520,
      -65520,
      1e30,
      3.4e38, // 65520 is the first value rounding to inf
      2 ** -24,
      2 ** -25,
      1.5 * 2 ** -25,
      2 ** -26,
      -(2 ** -25),
      3 * 2 ** -25, // subnormal ties
      2 ** -14,
      2 ** -14 - 2 ** -25,
      1e-40, // smallest normal, rounding into it, f32 denormal
      1 + 2 ** -11,
      1 + 3 * 2 ** -11,
      2049,
      2051,
      -2051, // normal ties to even
    ];
    using tx = Tensor.fromArray(gpu, x, [x.length]);
    using h = cast(tx, "f16");
    using back = cast(h, "f32");
    const want = Array.from(castReference(x, "f16"));
    assert.deepStrictEqual(Array.from(await h.toArray()), want);
    assert.deepStrictEqual(Array.from(await back.toArray()), want);
    // Spot values, independent of roundToF16.
    const got = await back.toArray();
    assert.deepStrictEqual(
      [got[1], got[6], got[7], got[12], got[13], got[20], got[21], got[22]],
      [-0, 65504, Infinity, 0, 2 ** -24, 1, 1 + 2 ** -9, 2048],
    );
  },
});

Deno.test({
  name: "cast() to the same dtype copies: later writes to x do not reach the result",
  ...GPU_TEST,
  fn: async () => {
    for (const dtype of gpu.hasF16 ? ["f32", "f16"] as const : ["f32"] as const) {
      const x = castReference(randomArray(37, 9, -100, 100), dtype);
      using tx = Tensor.fromArray(gpu, x, [37], dtype);
      using y = cast(tx, dtype);
      tx.write(new Float32Array(37).fill(5));
      assert.equal(y.dtype, dtype);
      assert.deepStrictEqual(Array.from(await y.toArray()), Array.from(x));
    }
  },
});

Deno.test({
  name: "cast() rejects integer tensors and non-float target dtypes",
  ...GPU_TEST,
  fn: () => {
    using ids = Tensor.zeros(gpu, [4], "i32");
    using x = Tensor.zeros(gpu, [4]);
    assert.throws(
      () => cast(ids, "f32"),
      (e) => e instanceof TypeError && /cast\(\) x/.test(e.message),
    );
    assert.throws(
      () => cast(x, "i32" as "f32"),
      (e) => e instanceof TypeError && /cast\(\) dtype.*"i32"/.test(e.message),
    );
  },
});
