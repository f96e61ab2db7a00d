import fc from "fast-check";
import assert from "node:assert/strict";
import { randomReference, randomTensor } from "../../src/tensor/random.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST } from "../_util.ts";

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `randomTensor() (${dtype}) reproduces the CPU twin for uniform and normal fills`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 3000 }),
          fc.integer({ min: 0, max: 0xffffffff }),
          fc.boolean(),
          async (n, seed, normal) => {
            const opts = normal
              ? { seed, dist: "normal" as const, mean: 0.5, std: 2, dtype }
              : { seed, lo: -3, hi: 5, dtype };
            using t = randomTensor(gpu, [n], opts);
            let ref = randomReference([n], opts);
            if (dtype === "f16") ref = roundToF16(ref);
            // uniform: exact integer hash, f32 affine map; normal: f32 log/cos vs f64
            const tol = dtype === "f16"
              ? { atol: 1e-2, rtol: 2e-3 }
              : normal
              ? { atol: 2e-4, rtol: 1e-4 }
              : { atol: 1e-6 };
            assertClose(
              await t.toArray(),
              ref,
              tol,
              `random ${dtype} ${normal ? "normal" : "uniform"}`,
            );
          },
        ),
        fcParams(15),
      );
    },
  });
}

Deno.test({
  name: "randomTensor() normal samples have the requested mean and std",
  ...GPU_TEST,
  fn: async () => {
    using t = randomTensor(gpu, [200000], { seed: 3, dist: "normal", mean: 1, std: 0.5 });
    const a = await t.toArray();
    let s = 0, s2 = 0;
    for (const x of a) {
      s += x;
      s2 += x * x;
    }
    const mean = s / a.length, std = Math.sqrt(s2 / a.length - mean * mean);
    assert.ok(Math.abs(mean - 1) < 0.01, `mean ${mean}`);
    assert.ok(Math.abs(std - 0.5) < 0.01, `std ${std}`);
  },
});
