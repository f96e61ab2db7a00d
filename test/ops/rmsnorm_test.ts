import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { rmsNorm, rmsNormReference } from "../../src/ops/rmsnorm.ts";
import {
  assertClose,
  diff,
  fcParams,
  FLOAT_DTYPES,
  gpu,
  GPU_TEST,
  randomArray,
  TOL,
} from "../_util.ts";

// Tolerances: TOL[dtype] (f32: atol 1e-5, rtol 1e-4; f16: atol 2e-3, rtol 1e-2) against the f64
// reference on the same (f16-rounded) inputs. Outputs are O(1): |x|/rms(x) <= sqrt(3) for
// uniform rows, times a gain in [0.5, 1.5].

/** Row lengths: small, around every workgroup size (32..256), and long rows (several strides). */
const dArb = fc.oneof(
  fc.integer({ min: 1, max: 40 }),
  fc.constantFrom(31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 1536),
  fc.integer({ min: 200, max: 700 }),
);

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `rmsNorm() (${dtype}) matches the CPU reference for any row length`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 0, maxLength: 3 }),
          dArb,
          fc.constantFrom(1e-6, 1e-5, 0.1),
          fc.constantFrom(1e-3, 1, 10),
          fc.boolean(),
          fc.integer(),
          async (lead, d, eps, amp, f32Gain, seed) => {
            const shape = [...lead, d];
            const n = shape.reduce((a, b) => a * b);
            const gdt = f32Gain ? "f32" : dtype;
            let x = randomArray(n, seed, -amp, amp);
            let w = randomArray(d, seed + 1, 0.5, 1.5);
            if (dtype === "f16") x = roundToF16(x);
            if (gdt === "f16") w = roundToF16(w);
            using tx = Tensor.fromArray(gpu, x, shape, dtype);
            using tw = Tensor.fromArray(gpu, w, [d], gdt);
            using out = rmsNorm(tx, tw, eps);
            assert.deepEqual(out.shape, shape);
            assert.equal(out.dtype, dtype);
            assertClose(
              await out.toArray(),
              rmsNormReference(x, w, eps),
              TOL[dtype],
              `rmsNorm ${dtype} x${JSON.stringify(shape)} gain ${gdt} eps ${eps}`,
            );
          },
        ),
        fcParams(30),
      );
    },
  });
}

Deno.test({
  name: "rmsNorm() normalises each head when q is viewed as [B, T, heads, headDim] (q_norm)",
  ...GPU_TEST,
  fn: async () => {
    const [B, T, H, D] = [2, 3, 4, 128];
    // Heads with very different scales, so a norm over H*D would give a different answer.
    const q = randomArray(B * T * H * D, 11, -1, 1).map((v, i) => v * 10 ** ((i / D) % H - 2));
    const w = randomArray(D, 12, 0.5, 1.5);
    using tq = Tensor.fromArray(gpu, q, [B, T, H * D]);
    using heads = tq.reshape([B, T, H, D]);
    using tw = Tensor.fromArray(gpu, w, [D]);
    using out = rmsNorm(heads, tw, 1e-6);
    assert.deepEqual(out.shape, [B, T, H, D]);
    const got = await out.toArray();
    assertClose(got, rmsNormReference(q, w, 1e-6), TOL.f32, "per-head rmsNorm");
    const wholeRow = rmsNormReference(
      q,
      Float32Array.from({ length: H * D }, (_, i) => w[i % D]),
      1e-6,
    );
    assert.ok(!diff(got, wholeRow, TOL.f32).ok, "per-head and whole-row norms should differ");
  },
});

Deno.test({
  name: "rmsNorm() applies eps: zero rows give zeros, tiny rows are damped",
  ...GPU_TEST,
  fn: async () => {
    const d = 50;
    const x = new Float32Array(2 * d);
    for (let i = d; i < 2 * d; i++) x[i] = 1e-3 * ((i % 7) - 3);
    const w = new Float32Array(d).fill(1);
    using tx = Tensor.fromArray(gpu, x, [2, d]);
    using tw = Tensor.fromArray(gpu, w, [d]);
    using out = rmsNorm(tx, tw, 1e-2);
    const got = await out.toArray();
    assert.ok(got.slice(0, d).every((v) => v === 0), "zero row must stay zero");
    assertClose(got, rmsNormReference(x, w, 1e-2), TOL.f32, "eps-dominated rows");
    // Without eps the tiny row would be normalised to O(1).
    assert.ok(Math.max(...got.slice(d).map(Math.abs)) < 0.05);
  },
});

Deno.test({
  name: "rmsNorm() covers more than 65535 rows through a 2D grid",
  ...GPU_TEST,
  fn: async () => {
    const rows = 65535 + 300, d = 3;
    const x = randomArray(rows * d, 5, -2, 2);
    const w = Float32Array.of(1, -2, 0.5);
    using tx = Tensor.fromArray(gpu, x, [rows, d]);
    using tw = Tensor.fromArray(gpu, w, [d]);
    using out = rmsNorm(tx, tw, 1e-6);
    assertClose(await out.toArray(), rmsNormReference(x, w, 1e-6), TOL.f32, "many rows");
  },
});

Deno.test({
  name: "rmsNorm() rejects a gain of the wrong length, integer tensors and a bad eps",
  ...GPU_TEST,
  fn: () => {
    using x = Tensor.zeros(gpu, [2, 3, 8]);
    using w = Tensor.zeros(gpu, [6]);
    using w8 = Tensor.zeros(gpu, [8]);
    using ids = Tensor.zeros(gpu, [2, 8], "i32");
    assert.throws(
      () => rmsNorm(x, w, 1e-6),
      (e) =>
        e instanceof RangeError &&
        /rmsNorm\(\) gain: expected shape \[8\] to match x \[2, 3, 8\], got \[6\]/.test(e.message),
    );
    assert.throws(() => rmsNorm(ids, w8, 1e-6), TypeError);
    using ids16 = ids.reshape([16]);
    assert.throws(() => rmsNorm(x, ids16, 1e-6), TypeError);
    for (const eps of [-1, NaN, Infinity]) {
      assert.throws(
        () => rmsNorm(x, w8, eps),
        (e) => e instanceof RangeError && /eps/.test(e.message),
      );
    }
  },
});
