import assert from "node:assert/strict";
import fc from "fast-check";
import { readTensors, Tensor } from "../../src/tensor/tensor.ts";
import { f16BitsToF32, f32ToF16Bits, roundToF16 } from "../../src/tensor/dtype.ts";
import { FLOAT_DTYPES, gpu, GPU_TEST } from "../_util.ts";

Deno.test({
  name: "fromArray() then toArray() round-trips every dtype",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: -100000, max: 100000 }), { minLength: 1, maxLength: 300 }),
        async (ints) => {
          for (const dtype of ["i32", "u32", ...FLOAT_DTYPES] as const) {
            const data = dtype === "u32"
              ? ints.map((x) => Math.abs(x))
              : dtype === "i32"
              ? ints
              : ints.map((x) => x / 7);
            using t = Tensor.fromArray(gpu, data, [data.length], dtype);
            const back = await t.toArray();
            const expect = dtype === "f16"
              ? roundToF16(data)
              : dtype === "f32"
              ? Float32Array.from(data)
              : data;
            assert.deepEqual([...back], [...expect], dtype);
          }
        },
      ),
      { numRuns: 20 },
    );
  },
});

Deno.test("f32ToF16Bits() rounds to nearest even and handles subnormals, overflow and NaN", () => {
  assert.equal(f32ToF16Bits(1), 0x3c00);
  assert.equal(f32ToF16Bits(65504), 0x7bff);
  assert.equal(f32ToF16Bits(1e6), 0x7c00);
  assert.equal(f32ToF16Bits(-0), 0x8000);
  assert.equal(f16BitsToF32(f32ToF16Bits(2 ** -24)), 2 ** -24);
  assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN))));
  assert.equal(f16BitsToF32(f32ToF16Bits(1 + 2 ** -11)), 1); // tie -> even
  assert.equal(f16BitsToF32(f32ToF16Bits(1 + 3 * 2 ** -11)), 1 + 2 ** -9);
});

Deno.test({
  name: "reshape() shares the buffer, infers -1, and names both shapes on mismatch",
  ...GPU_TEST,
  fn: async () => {
    using t = Tensor.fromArray(gpu, [1, 2, 3, 4, 5, 6], [2, 3]);
    using v = t.reshape([-1, 2]);
    assert.deepEqual(v.shape, [3, 2]);
    assert.deepEqual([...(await v.toArray())], [1, 2, 3, 4, 5, 6]);
    assert.throws(() => t.reshape([4, 2]), /Cannot reshape \[2, 3\] to \[4, 2\]/);
    assert.throws(
      () => Tensor.fromArray(gpu, [1, 2, 3], [2, 2]),
      (e: unknown) =>
        e instanceof RangeError && /3 elements but shape \[2, 2\] needs 4/.test(e.message),
    );
  },
});

Deno.test({
  name: "a disposed tensor cannot be used, and views keep the buffer alive",
  ...GPU_TEST,
  fn: async () => {
    const t = Tensor.fromArray(gpu, [7, 8], [2]);
    const v = t.reshape([1, 2]);
    t.dispose();
    t.dispose(); // idempotent
    assert.throws(() => t.buffer, /used after dispose/);
    assert.deepEqual([...(await v.toArray())], [7, 8]);
    v.dispose();
  },
});

Deno.test({
  name: "zeros() clears a reused buffer and readTensors() reads several in one map",
  ...GPU_TEST,
  fn: async () => {
    const junk = Tensor.fromArray(gpu, [1, 2, 3, 4, 5], [5]);
    junk.dispose();
    using z = Tensor.zeros(gpu, [5]);
    using o = Tensor.fromArray(gpu, [3, -4], [2], "i32");
    const [a, b] = await readTensors([z, o]);
    assert.deepEqual([...a], [0, 0, 0, 0, 0]);
    assert.deepEqual([...b], [3, -4]);
  },
});

Deno.test({
  name: "live and peak GPU bytes follow allocations and disposals",
  ...GPU_TEST,
  fn: () => {
    const before = gpu.memory().liveBytes;
    gpu.resetPeak();
    const a = Tensor.empty(gpu, [1000]);
    const b = Tensor.empty(gpu, [1000]);
    assert.equal(gpu.memory().liveBytes - before, 8000);
    a.dispose();
    b.dispose();
    assert.equal(gpu.memory().liveBytes, before);
    assert.ok(gpu.memory().peakBytes >= before + 8000);
    assert.ok(gpu.memory().pooledBytes >= 8000);
  },
});

Deno.test({
  name: "an unknown dtype is a TypeError",
  ...GPU_TEST,
  fn: () => {
    assert.throws(() => Tensor.empty(gpu, [2], "f64" as "f32"), TypeError);
    assert.throws(() => Tensor.empty(gpu, [2, -1]), RangeError);
  },
});
