import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import {
  rope,
  ropeInvFreq,
  type RopeLayout,
  ropeReference,
  type RopeScaling,
} from "../../src/ops/rope.ts";
import { ropeBackward, ropeBackwardReference } from "../../src/ops/rope_backward.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";
import { assertGradClose, finiteDiffGrad } from "./_finite_diff.ts";

// GPU (f32) vs the f64 twin (same f32 angle, f64 cos/sin): atol 1e-5, rtol 1e-4, as the forward's
// f32 tolerance (the kernel's cos/sin are within 1.5e-7 of the f32 angle's; dy in [-1, 1]).
const TOL = { atol: 1e-5, rtol: 1e-4 };

const LLAMA31: RopeScaling = {
  rope_type: "llama3",
  factor: 8,
  low_freq_factor: 1,
  high_freq_factor: 4,
  original_max_position_embeddings: 8192,
};

function randomPositions(n: number, seed: number, max: number): Int32Array {
  return Int32Array.from(randomArray(n, seed, 0, max + 1), Math.floor);
}

Deno.test({
  name: "ropeBackward() matches the f64 twin over shapes, layouts, positions and scalings",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          B: fc.integer({ min: 1, max: 2 }),
          H: fc.integer({ min: 1, max: 3 }),
          T: fc.integer({ min: 1, max: 7 }),
          D: fc.oneof(fc.integer({ min: 1, max: 20 }).map((h) => 2 * h), fc.constantFrom(64, 130)),
        }),
        fc.constantFrom<RopeLayout>("BHTD", "BTHD"),
        fc.boolean(),
        fc.constantFrom<RopeScaling | undefined>(undefined, LLAMA31, { type: "linear", factor: 4 }),
        fc.constantFrom(16, 2000, 40000),
        fc.integer(),
        async ({ B, H, T, D }, layout, batchedPos, scaling, maxPos, seed) => {
          const shape = layout === "BHTD" ? [B, H, T, D] : [B, T, H, D];
          const dy = randomArray(B * H * T * D, seed);
          const pos = randomPositions(batchedPos ? B * T : T, seed + 1, maxPos);
          const inv = ropeInvFreq(D, 500000, scaling);
          using tdy = Tensor.fromArray(gpu, dy, shape);
          using tpos = Tensor.fromArray(gpu, pos, batchedPos ? [B, T] : [T], "i32");
          using tinv = Tensor.fromArray(gpu, inv, [D / 2]);
          using dx = ropeBackward(tdy, tpos, tinv, { layout });
          assert.deepEqual(dx.shape, shape);
          const ref = ropeBackwardReference(dy, shape, pos, inv, layout);
          assertClose(await dx.toArray(), ref, TOL, `ropeBackward ${layout} ${shape}`);
        },
      ),
      fcParams(30),
    );
  },
});

Deno.test({
  name: "ropeBackward() undoes rope() (a rotation's transpose is its inverse) on the GPU",
  ...GPU_TEST,
  fn: async () => {
    const [B, H, T, D] = [2, 3, 5, 16];
    const x = randomArray(B * H * T * D, 9);
    using tx = Tensor.fromArray(gpu, x, [B, H, T, D]);
    using tpos = Tensor.fromArray(gpu, randomPositions(B * T, 3, 3000), [B, T], "i32");
    using tinv = Tensor.fromArray(gpu, ropeInvFreq(D, 10000), [D / 2]);
    using y = rope(tx, tpos, tinv);
    using back = ropeBackward(y, tpos, tinv);
    assertClose(await back.toArray(), x, TOL, "ropeBackward(rope(x))");
  },
});

Deno.test("ropeBackwardReference() is the gradient of ropeReference() (central differences)", () => {
  // ropeReference is linear in x and rounds its output to f32: atol = the difference quotient's
  // rounding bound + 1e-9 (no truncation error for a linear map).
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 2 }),
      fc.integer({ min: 1, max: 2 }),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 3 }).map((h) => 2 * h),
      fc.constantFrom<RopeLayout>("BHTD", "BTHD"),
      fc.integer(),
      (B, H, T, D, layout, seed) => {
        const shape = layout === "BHTD" ? [B, H, T, D] : [B, T, H, D];
        const x = randomArray(B * H * T * D, seed), dy = randomArray(x.length, seed + 1);
        const pos = randomPositions(B * T, seed + 2, 5000);
        const inv = ropeInvFreq(D, 10000, LLAMA31);
        const f = finiteDiffGrad((v) => ropeReference(v, shape, pos, inv, layout), x, dy);
        const ref = ropeBackwardReference(dy, shape, pos, inv, layout);
        assertGradClose(ref, f.grad, f.roundBound + 1e-9, `rope dx ${layout}`);
      },
    ),
    { numRuns: 30 },
  );
});

Deno.test({
  name: "ropeBackward() rejects bad shapes, layouts and dtypes, naming the argument",
  ...GPU_TEST,
  fn: () => {
    using dy = Tensor.zeros(gpu, [1, 2, 3, 8]);
    using pos = Tensor.zeros(gpu, [3], "i32");
    using inv = Tensor.zeros(gpu, [4]);
    using inv5 = Tensor.zeros(gpu, [5]);
    using posF = Tensor.zeros(gpu, [3]);
    using pos4 = Tensor.zeros(gpu, [4], "i32");
    using odd = Tensor.zeros(gpu, [1, 2, 3, 7]);
    assert.throws(
      () => ropeBackward(dy, pos, inv5),
      (e) =>
        e instanceof RangeError &&
        /ropeBackward\(\) invFreq: expected shape \[4\].*\[1, 2, 3, 8\].*got \[5\]/.test(e.message),
    );
    assert.throws(
      () => ropeBackward(dy, pos4, inv),
      (e) =>
        e instanceof RangeError && /ropeBackward\(\) positions: .*\[3\].*got \[4\]/.test(e.message),
    );
    assert.throws(
      () => ropeBackward(odd, pos, inv),
      (e) => e instanceof RangeError && /even/.test(e.message),
    );
    assert.throws(
      () => ropeBackward(dy, pos, inv, { layout: "THD" as RopeLayout }),
      (e) => e instanceof RangeError && /layout/.test(e.message),
    );
    assert.throws(
      () => ropeBackward(dy, posF, inv),
      (e) =>
        e instanceof TypeError &&
        /ropeBackward\(\) positions: expected an i32 tensor, got f32/.test(e.message),
    );
    assert.throws(
      () => ropeBackward(pos4.reshape([1, 1, 1, 4]), pos, inv),
      (e) => e instanceof TypeError && /ropeBackward\(\) dy: expected an f32/.test(e.message),
    );
  },
});
