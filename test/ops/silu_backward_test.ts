import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { siluReference } from "../../src/ops/silu.ts";
import {
  siluBackward,
  siluBackwardReference,
  swigluBackward,
} from "../../src/ops/silu_backward.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";
import { assertGradClose, finiteDiffGrad } from "./_finite_diff.ts";

// GPU (f32) vs the f64 twin: atol 1e-6, rtol 1e-5 (a few f32 roundings of exp and products).
const TOL = { atol: 1e-6, rtol: 1e-5 };
const shapeArb = fc.array(fc.integer({ min: 1, max: 37 }), { minLength: 1, maxLength: 3 });

Deno.test({
  name: "siluBackward() and swigluBackward() match the f64 twin over random shapes",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(shapeArb, fc.boolean(), fc.integer(), async (shape, gated, seed) => {
        const n = shape.reduce((a, b) => a * b);
        const x = randomArray(n, seed, -30, 30), up = randomArray(n, seed + 1, -4, 4);
        const dy = randomArray(n, seed + 2, -2, 2);
        using tx = Tensor.fromArray(gpu, x, shape);
        using tu = Tensor.fromArray(gpu, up, shape);
        using tdy = Tensor.fromArray(gpu, dy, shape);
        if (gated) {
          const { dgate, dup } = swigluBackward(tx, tu, tdy);
          using _g = dgate, _u = dup;
          assert.deepEqual(dgate.shape, shape);
          const ref = siluBackwardReference(x, dy, up);
          assertClose(await dgate.toArray(), ref.dx, TOL, "dgate");
          assertClose(await dup.toArray(), ref.dup!, TOL, "dup");
        } else {
          using dx = siluBackward(tx, tdy);
          assert.deepEqual(dx.shape, shape);
          assertClose(await dx.toArray(), siluBackwardReference(x, dy).dx, TOL, "dx");
        }
      }),
      fcParams(25),
    );
  },
});

Deno.test({
  name: "siluBackward() stays finite in both tails for huge inputs",
  ...GPU_TEST,
  fn: async () => {
    const x = [-3e38, -1e30, -1000, -88.8, -20, 0, 20, 88.8, 1000, 1e30, 3e38];
    const dy = x.map(() => 1);
    using tx = Tensor.fromArray(gpu, x, [x.length]);
    using tdy = Tensor.fromArray(gpu, dy, [x.length]);
    using dx = siluBackward(tx, tdy);
    const r = await dx.toArray();
    assert.ok(r.every(Number.isFinite), `non-finite gradient: ${r}`);
    assertClose(r, siluBackwardReference(x, dy).dx, TOL, "silu' tails");
  },
});

Deno.test("siluBackwardReference() is the gradient of siluReference() (central differences)", () => {
  // siluReference rounds to f32: atol = the difference quotient's rounding bound + 1e-6
  // (truncation h²·|f'''|/6 with h = 1e-3).
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 12 }), fc.integer(), (n, seed) => {
      const x = randomArray(n, seed, -8, 8), up = randomArray(n, seed + 1, -3, 3);
      const dy = randomArray(n, seed + 2);
      const f = finiteDiffGrad((v) => siluReference(v), x, dy);
      assertGradClose(siluBackwardReference(x, dy).dx, f.grad, f.roundBound + 1e-6, "silu dx");
      const ref = siluBackwardReference(x, dy, up);
      const fg = finiteDiffGrad((v) => siluReference(v, up), x, dy);
      const fu = finiteDiffGrad((v) => siluReference(x, v), up, dy);
      assertGradClose(ref.dx, fg.grad, fg.roundBound + 1e-6, "swiglu dgate");
      assertGradClose(ref.dup!, fu.grad, fu.roundBound + 1e-6, "swiglu dup");
    }),
    { numRuns: 40 },
  );
});

Deno.test({
  name: "siluBackward() and swigluBackward() reject mismatched shapes and non-f32 tensors",
  ...GPU_TEST,
  fn: () => {
    using g = Tensor.zeros(gpu, [2, 3]);
    using u = Tensor.zeros(gpu, [3, 2]);
    using ids = Tensor.zeros(gpu, [2, 3], "i32");
    assert.throws(
      () => swigluBackward(g, u, g),
      (e) =>
        e instanceof RangeError &&
        /swigluBackward\(\) up: .*gate \[2, 3\], got \[3, 2\]/.test(e.message),
    );
    assert.throws(
      () => siluBackward(g, u),
      (e) =>
        e instanceof RangeError &&
        /siluBackward\(\) dy: .*x \[2, 3\], got \[3, 2\]/.test(e.message),
    );
    assert.throws(
      () => siluBackward(ids, g),
      (e) =>
        e instanceof TypeError &&
        /siluBackward\(\) x: expected an f32 tensor, got i32/.test(e.message),
    );
    assert.throws(
      () => swigluBackward(g, g, ids),
      (e) => e instanceof TypeError && /swigluBackward\(\) dy/.test(e.message),
    );
  },
});
