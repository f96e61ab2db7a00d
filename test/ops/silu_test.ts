import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { silu, siluReference, swiglu } from "../../src/ops/silu.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, randomArray, TOL } from "../_util.ts";

// Tolerances: TOL[dtype] (f32: atol 1e-5, rtol 1e-4; f16: atol 2e-3, rtol 1e-2) against the
// f64 reference evaluated on the same (f16-rounded) inputs.

const shapeArb = fc.array(fc.integer({ min: 1, max: 37 }), { minLength: 1, maxLength: 3 });

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `silu() and swiglu() (${dtype}) match the CPU reference over random shapes`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(shapeArb, fc.boolean(), fc.integer(), async (shape, gated, seed) => {
          const n = shape.reduce((a, b) => a * b);
          // silu over [-30, 30] covers both saturated tails; swiglu's product stays in f16 range.
          let x = randomArray(n, seed, gated ? -8 : -30, gated ? 8 : 30);
          let up = randomArray(n, seed + 1, -4, 4);
          if (dtype === "f16") [x, up] = [roundToF16(x), roundToF16(up)];
          using tx = Tensor.fromArray(gpu, x, shape, dtype);
          using tu = Tensor.fromArray(gpu, up, shape, dtype);
          using out = gated ? swiglu(tx, tu) : silu(tx);
          assert.deepEqual(out.shape, shape);
          assert.equal(out.dtype, dtype);
          const ref = siluReference(x, gated ? up : undefined);
          assertClose(
            await out.toArray(),
            ref,
            TOL[dtype],
            `${gated ? "swiglu" : "silu"} ${dtype}`,
          );
        }),
        fcParams(25),
      );
    },
  });
}

Deno.test({
  name: "silu() stays finite and accurate in both tails for huge inputs",
  ...GPU_TEST,
  fn: async () => {
    const x = [-3e38, -1e30, -1000, -88.8, -20, -1e-30, 0, 1e-30, 20, 88.8, 1000, 1e30, 3e38];
    using tx = Tensor.fromArray(gpu, x, [x.length]);
    using out = silu(tx);
    const r = await out.toArray();
    assert.ok(r.every(Number.isFinite), `non-finite output: ${r}`);
    assertClose(r, siluReference(x), TOL.f32, "silu tails");
  },
});

Deno.test({
  name: "silu() covers more than 65535 workgroups through a 2D grid",
  ...GPU_TEST,
  fn: async () => {
    const n = 256 * 65535 + 777;
    const x = randomArray(n, 7, -6, 6);
    using tx = Tensor.fromArray(gpu, x, [n]);
    using out = silu(tx);
    assertClose(await out.toArray(), siluReference(x), TOL.f32, "large silu");
  },
});

Deno.test({
  name: "swiglu() rejects mismatched shapes and dtypes, silu() rejects integers",
  ...GPU_TEST,
  fn: () => {
    using g = Tensor.zeros(gpu, [2, 3]);
    using u = Tensor.zeros(gpu, [3, 2]);
    using ids = Tensor.zeros(gpu, [4], "i32");
    assert.throws(
      () => swiglu(g, u),
      (e) => e instanceof RangeError && /swiglu\(\).*gate \[2, 3\].*up \[3, 2\]/.test(e.message),
    );
    assert.throws(() => silu(ids), (e) => e instanceof TypeError && /silu\(\) x/.test(e.message));
    if (gpu.hasF16) {
      using h = Tensor.zeros(gpu, [2, 3], "f16");
      assert.throws(() => swiglu(g, h), TypeError);
    }
  },
});
