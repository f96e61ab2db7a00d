import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { rmsNormReference } from "../../src/ops/rmsnorm.ts";
import { rmsNormBackward, rmsNormBackwardReference } from "../../src/ops/rmsnorm_backward.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";
import { assertGradClose, finiteDiffGrad } from "./_finite_diff.ts";

// GPU (f32) vs the f64 twin: dx atol 2e-5, rtol 1e-4 (x, dy in [-1, 1], gain in [0.5, 1.5]).
// dgain sums over every row (N = prod(lead) · rows, up to 9 · 9 · 130 = 10530): its f32 rounding
// grows like √N (σ 1.5e-5 measured at N = 10530), so atol max(2e-5, 1.5e-6·√N), ~10σ at any N.
const TOL_DX = { atol: 2e-5, rtol: 1e-4 };
const tolDgain = (N: number) => ({ atol: Math.max(2e-5, 1.5e-6 * Math.sqrt(N)), rtol: 1e-4 });

Deno.test({
  name: "rmsNormBackward() matches the f64 twin over random shapes (rows past the 64-row block)",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 9 }), { maxLength: 2 }),
        fc.integer({ min: 1, max: 130 }),
        fc.integer({ min: 1, max: 300 }),
        fc.constantFrom(1e-6, 1e-5, 0.5),
        fc.integer(),
        async (lead, rows, D, eps, seed) => {
          const shape = [...lead, rows, D];
          const n = shape.reduce((a, b) => a * b);
          const x = randomArray(n, seed), dy = randomArray(n, seed + 1);
          const g = randomArray(D, seed + 2, 0.5, 1.5);
          using tx = Tensor.fromArray(gpu, x, shape);
          using tg = Tensor.fromArray(gpu, g, [D]);
          using tdy = Tensor.fromArray(gpu, dy, shape);
          const { dx, dgain } = rmsNormBackward(tx, tg, tdy, eps);
          using _dx = dx, _dg = dgain;
          assert.deepEqual(dx.shape, shape);
          assert.deepEqual(dgain.shape, [D]);
          const ref = rmsNormBackwardReference(x, g, dy, eps);
          assertClose(await dx.toArray(), ref.dx, TOL_DX, `dx ${shape}`);
          const N = n / D;
          assertClose(await dgain.toArray(), ref.dgain, tolDgain(N), `dgain ${shape}`);
        },
      ),
      fcParams(25),
    );
  },
});

Deno.test("rmsNormBackwardReference() is the gradient of rmsNormReference() (central differences)", () => {
  // rmsNormReference rounds to f32: atol = the difference quotient's rounding bound + 1e-6
  // (truncation h²·|f'''|/6 with h = 1e-3 and |x| ~ 1).
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 6 }),
      fc.constantFrom(1e-6, 0.1),
      fc.integer(),
      (rows, D, eps, seed) => {
        const x = randomArray(rows * D, seed), dy = randomArray(rows * D, seed + 1);
        const g = randomArray(D, seed + 2, 0.5, 1.5);
        // Keep rows away from x = 0, where r = eps^(-1/2) makes the function stiff.
        for (let r = 0; r < rows; r++) x[r * D] = x[r * D] < 0 ? x[r * D] - 0.5 : x[r * D] + 0.5;
        const ref = rmsNormBackwardReference(x, g, dy, eps);
        const fx = finiteDiffGrad((v) => rmsNormReference(v, g, eps), x, dy);
        const fg = finiteDiffGrad((v) => rmsNormReference(x, v, eps), g, dy);
        assertGradClose(ref.dx, fx.grad, fx.roundBound + 1e-6, "dx");
        assertGradClose(ref.dgain, fg.grad, fg.roundBound + 1e-6, "dgain");
      },
    ),
    { numRuns: 40 },
  );
});

Deno.test({
  name: "rmsNormBackward() is deterministic (bit-identical dgain over repeated runs)",
  ...GPU_TEST,
  fn: async () => {
    const [rows, D] = [1000, 128];
    const x = randomArray(rows * D, 1), dy = randomArray(rows * D, 2), g = randomArray(D, 3);
    using tx = Tensor.fromArray(gpu, x, [rows, D]);
    using tg = Tensor.fromArray(gpu, g, [D]);
    using tdy = Tensor.fromArray(gpu, dy, [rows, D]);
    const runs: Float32Array[] = [];
    for (let i = 0; i < 3; i++) {
      const { dx, dgain } = rmsNormBackward(tx, tg, tdy, 1e-6);
      runs.push(await dgain.toArray());
      dx.dispose();
      dgain.dispose();
    }
    assert.deepEqual(runs[1], runs[0]);
    assert.deepEqual(runs[2], runs[0]);
    assertClose(runs[0], rmsNormBackwardReference(x, g, dy, 1e-6).dgain, tolDgain(rows), "dgain");
  },
});

Deno.test({
  name: "rmsNormBackward() gives zero dgain for no rows and rejects bad shapes, eps and dtypes",
  ...GPU_TEST,
  fn: async () => {
    using x0 = Tensor.zeros(gpu, [0, 3]);
    using g = Tensor.fromArray(gpu, [1, 2, 3], [3]);
    const e = rmsNormBackward(x0, g, x0, 1e-6);
    assert.deepEqual([...await e.dgain.toArray()], [0, 0, 0]);
    e.dx.dispose();
    e.dgain.dispose();

    using x = Tensor.zeros(gpu, [2, 3]);
    using dyBad = Tensor.zeros(gpu, [3, 2]);
    using g4 = Tensor.zeros(gpu, [4]);
    using ids = Tensor.zeros(gpu, [2, 3], "i32");
    assert.throws(
      () => rmsNormBackward(x, g, dyBad, 1e-6),
      (e) =>
        e instanceof RangeError &&
        /rmsNormBackward\(\) dy: .*x \[2, 3\], got \[3, 2\]/.test(e.message),
    );
    assert.throws(
      () => rmsNormBackward(x, g4, x, 1e-6),
      (e) =>
        e instanceof RangeError &&
        /rmsNormBackward\(\) gain: expected shape \[3\].*got \[4\]/.test(e.message),
    );
    assert.throws(
      () => rmsNormBackward(x, g, x, -1),
      (e) => e instanceof RangeError && /eps/.test(e.message),
    );
    assert.throws(
      () => rmsNormBackward(x, g, ids, 1e-6),
      (e) =>
        e instanceof TypeError &&
        /rmsNormBackward\(\) dy: expected an f32 tensor, got i32/.test(e.message),
    );
  },
});
