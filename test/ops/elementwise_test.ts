import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { add, axpy, elementwiseReference, mul, scale } from "../../src/ops/elementwise.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, randomArray, TOL } from "../_util.ts";
import assert from "node:assert/strict";

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `add/mul/axpy/scale (${dtype}) match the CPU reference over broadcast shapes`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 3 }),
          fc.integer({ min: 0, max: 3 }),
          fc.integer({ min: 0, max: 3 }),
          fc.constantFrom("add", "mul", "axpy", "scale" as const),
          fc.integer(),
          async (inner, lead, keep, op, seed) => {
            const bShape = inner.slice(Math.min(keep, inner.length - 1));
            const aShape = [lead + 1, ...inner];
            const an = aShape.reduce((x, y) => x * y), bn = bShape.reduce((x, y) => x * y);
            let a = randomArray(an, seed), b = randomArray(bn, seed + 1);
            if (dtype === "f16") [a, b] = [roundToF16(a), roundToF16(b)];
            using ta = Tensor.fromArray(gpu, a, aShape, dtype);
            using tb = Tensor.fromArray(gpu, b, bShape, dtype);
            using out = op === "add"
              ? add(ta, tb)
              : op === "mul"
              ? mul(ta, tb)
              : op === "axpy"
              ? axpy(0.75, ta, tb)
              : scale(ta, -1.5);
            const ref = elementwiseReference(
              op,
              a,
              op === "scale" ? a : b,
              op === "axpy" ? 0.75 : -1.5,
            );
            assertClose(await out.toArray(), ref, TOL[dtype], `${op} ${dtype}`);
          },
        ),
        fcParams(25),
      );
    },
  });
}

Deno.test({
  name: "add() rejects shapes that do not broadcast, naming both",
  ...GPU_TEST,
  fn: () => {
    using a = Tensor.zeros(gpu, [2, 3]);
    using b = Tensor.zeros(gpu, [2]);
    assert.throws(() => add(a, b), /cannot broadcast \[2\] onto \[2, 3\]/);
  },
});

Deno.test({
  name: "add() covers more than 65535 workgroups through a 2D grid",
  ...GPU_TEST,
  fn: async () => {
    const n = 256 * 65535 + 1000;
    const a = randomArray(n, 1);
    using ta = Tensor.fromArray(gpu, a, [n]);
    using tb = Tensor.fromArray(gpu, [1], [1]);
    using out = add(ta, tb);
    const r = await out.toArray();
    assertClose(r, elementwiseReference("add", a, [1]), TOL.f32, "large add");
  },
});
