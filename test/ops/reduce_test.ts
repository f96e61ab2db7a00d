import assert from "node:assert/strict";
import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { argmax, argmaxReference, max, mean, reduceReference, sum } from "../../src/ops/reduce.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, randomArray } from "../_util.ts";

/**
 * Tolerance of a sum/mean: f32 accumulation error is bounded by ~n·eps·Σ|x|; we allow
 * 1e-6·Σ|x| (f32 eps is 6e-8, and strided partials plus a tree keep the error far below the
 * bound). f16 adds one rounding of the result (rtol 1e-3, half an f16 ulp is 4.9e-4).
 */
function sumTol(dtype: "f32" | "f16", absSum: number, n: number) {
  const scale = n > 0 ? absSum : 0;
  return dtype === "f32"
    ? { atol: 1e-6 * scale + 1e-7, rtol: 1e-6 }
    : { atol: 1e-6 * scale + 1e-7, rtol: 1e-3 };
}

function absSums(x: ArrayLike<number>, n: number, divide: boolean): number {
  let worst = 0;
  for (let r = 0; r * n < x.length; r++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += Math.abs(x[r * n + j]);
    worst = Math.max(worst, divide ? s / n : s);
  }
  return worst;
}

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `sum/mean/max/argmax (${dtype}) match the CPU reference over random shapes`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.integer({ min: 1, max: 5 }), { maxLength: 2 }),
          fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 200, max: 3000 })),
          fc.integer(),
          async (lead, n, seed) => {
            const shape = [...lead, n];
            const size = shape.reduce((a, b) => a * b, 1);
            let x = randomArray(size, seed, -3, 3);
            if (dtype === "f16") x = roundToF16(x);
            using t = Tensor.fromArray(gpu, x, shape, dtype);
            using s = sum(t);
            using m = mean(t);
            using mx = max(t);
            using am = argmax(t);
            assert.deepEqual(s.shape, lead);
            assert.equal(am.dtype, "i32");
            const [gs, gm, gmx, gam] = await Promise.all([
              s.toArray(),
              m.toArray(),
              mx.toArray(),
              am.toArray(),
            ]);
            assertClose(
              gs,
              reduceReference("sum", x, n),
              sumTol(dtype, absSums(x, n, false), n),
              `sum ${shape}`,
            );
            assertClose(
              gm,
              reduceReference("mean", x, n),
              sumTol(dtype, absSums(x, n, true), n),
              `mean ${shape}`,
            );
            // max is exact: a stored value
            assertClose(gmx, reduceReference("max", x, n), { atol: 0 }, `max ${shape}`);
            assert.deepEqual([...gam], [...argmaxReference(x, n)], `argmax ${shape}`);
          },
        ),
        fcParams(25),
      );
    },
  });
}

Deno.test({
  name: "argmax() returns the first index of the maximum on ties, like torch.argmax",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 2000 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer(),
        async (rows, n, levels, seed) => {
          // values from a few levels only: the maximum repeats, often across threads
          const x = randomArray(rows * n, seed, 0, levels).map(Math.floor);
          using t = Tensor.fromArray(gpu, x, [rows, n]);
          using a = argmax(t);
          assert.deepEqual([...(await a.toArray())], [...argmaxReference(x, n)]);
        },
      ),
      fcParams(30),
    );
    // all equal (the answer is 0), and a maximum only at the very end
    using eq = Tensor.fromArray(gpu, new Float32Array(1000).fill(-2), [1, 1000]);
    using last = Tensor.fromArray(gpu, [...new Array(999).fill(0), 1], [1, 1000]);
    using a1 = argmax(eq);
    using a2 = argmax(last);
    assert.deepEqual([...(await a1.toArray()), ...(await a2.toArray())], [0, 999]);
  },
});

Deno.test({
  name: "reductions cover LM-head rows (N = 151936 and 200000)",
  ...GPU_TEST,
  fn: async () => {
    for (const [rows, n] of [[2, 151936], [1, 200000]]) {
      const x = randomArray(rows * n, n, -10, 10);
      x[n - 7] = 11; // the maximum, late in row 0
      x[(rows - 1) * n + 3] = 12; // and early in the last row
      using t = Tensor.fromArray(gpu, x, [rows, n]);
      using s = sum(t);
      using mx = max(t);
      using am = argmax(t);
      const [gs, gmx, gam] = await Promise.all([s.toArray(), mx.toArray(), am.toArray()]);
      assertClose(gs, reduceReference("sum", x, n), sumTol("f32", absSums(x, n, false), n), "sum");
      assertClose(gmx, reduceReference("max", x, n), { atol: 0 }, "max");
      assert.deepEqual([...gam], [...argmaxReference(x, n)]);
      assert.equal(gam[0], rows === 1 ? 3 : n - 7);
    }
  },
});

Deno.test({
  name: "reductions handle N = 1, more than 65535 rows, and a 1-D input",
  ...GPU_TEST,
  fn: async () => {
    const rows = 70000;
    const x = randomArray(rows, 3);
    using t = Tensor.fromArray(gpu, x, [rows, 1]);
    using s = sum(t);
    using am = argmax(t);
    assertClose(await s.toArray(), x, { atol: 0 }, "sum of one");
    assert.ok((await am.toArray()).every((v) => v === 0));
    using v = Tensor.fromArray(gpu, [1, 4, 2], [3]);
    using mv = mean(v);
    assert.deepEqual(mv.shape, []);
    assertClose(await mv.toArray(), [7 / 3], { atol: 1e-6 }, "mean of [3]");
  },
});

Deno.test({
  name: "reductions reject non-float inputs, scalars and empty rows, naming the op",
  ...GPU_TEST,
  fn: async () => {
    using i = Tensor.zeros(gpu, [2, 3], "i32");
    using s = Tensor.zeros(gpu, []);
    using e = Tensor.zeros(gpu, [2, 0]);
    assert.throws(() => sum(i), {
      name: "TypeError",
      message: /sum\(\) x: expected an f32 or f16/,
    });
    assert.throws(() => argmax(s), { name: "RangeError", message: /argmax\(\) x: .*got \[\]/ });
    assert.throws(() => max(e), {
      name: "RangeError",
      message: /max\(\) x: the last dimension is empty in \[2, 0\]/,
    });
    assert.throws(() => mean(e), RangeError);
    using z = sum(e); // an empty sum is 0
    assert.deepEqual([...(await z.toArray())], [0, 0]);
  },
});
