import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import { swapAxes12, swapAxes12Reference } from "../../src/ops/layout.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";
import assert from "node:assert/strict";

Deno.test({
  name: "swapAxes12() moves [A, B, C, D] to [A, C, B, D] like the CPU reference, for every dtype",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.tuple(
          fc.integer({ min: 1, max: 3 }),
          fc.integer({ min: 1, max: 9 }),
          fc.integer({ min: 1, max: 9 }),
          fc.integer({ min: 1, max: 17 }),
        ),
        fc.constantFrom(...(gpu.hasF16 ? ["f32", "f16", "i32"] as const : ["f32", "i32"] as const)),
        async (shape, dtype) => {
          const n = shape.reduce((x, y) => x * y);
          const data = Array.from(randomArray(n, n), (v) => Math.round(v * 1000));
          using x = Tensor.fromArray(gpu, data, shape, dtype);
          using y = swapAxes12(x);
          assert.deepEqual(y.shape, [shape[0], shape[2], shape[1], shape[3]]);
          assertClose(await y.toArray(), swapAxes12Reference(data, shape), { atol: 0 }, "swap12");
        },
      ),
      fcParams(20),
    );
  },
});

Deno.test({
  name: "swapAxes12() rejects a tensor that is not rank 4",
  ...GPU_TEST,
  fn: () => {
    using x = Tensor.zeros(gpu, [2, 3]);
    assert.throws(() => swapAxes12(x), /expected rank 4, got shape \[2, 3\]/);
  },
});
