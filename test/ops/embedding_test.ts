import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { embedding, embeddingReference } from "../../src/ops/embedding.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, randomArray } from "../_util.ts";

// Tolerance: exact (atol 0). The gather copies values; f16 tables hold f16-rounded data and
// the reference reads the same rounded values.
const EXACT = { atol: 0 };

function randomIds(n: number, seed: number, lo: number, hi: number): Int32Array {
  return Int32Array.from(randomArray(n, seed, lo, hi + 1), Math.floor);
}

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `embedding() (${dtype}) gathers rows and zeroes out-of-vocab ids`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 40 }),
          fc.integer({ min: 1, max: 50 }),
          fc.oneof(fc.integer({ min: 1, max: 40 }), fc.constantFrom(255, 256, 257, 300)),
          fc.integer(),
          async (n, v, h, seed) => {
            const table = roundToF16(randomArray(v * h, seed, -3, 3));
            const ids = randomIds(n, seed + 1, -3, v + 2); // some ids outside [0, V)
            using ti = Tensor.fromArray(gpu, ids, [n], "i32");
            using tt = Tensor.fromArray(gpu, table, [v, h], dtype);
            using out = embedding(ti, tt);
            assert.deepEqual(out.shape, [n, h]);
            assert.equal(out.dtype, dtype);
            assertClose(await out.toArray(), embeddingReference(ids, table, h), EXACT, "embedding");
          },
        ),
        fcParams(25),
      );
    },
  });

  Deno.test({
    name: `embedding() (${dtype}) with row chunks and a shared out equals one whole-table lookup`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 30 }),
          fc.integer({ min: 2, max: 60 }),
          fc.integer({ min: 1, max: 70 }),
          fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1, maxLength: 4 }),
          fc.integer(),
          async (n, v, h, cuts, seed) => {
            const table = roundToF16(randomArray(v * h, seed, -3, 3));
            const ids = randomIds(n, seed + 1, -2, v + 1);
            const sentinel = new Float32Array(n * h).fill(7);
            using ti = Tensor.fromArray(gpu, ids, [n], "i32");
            using out = Tensor.fromArray(gpu, sentinel, [n, h], dtype);
            // Split [0, V) at random cut points into consecutive chunks.
            const bounds = [0, ...cuts.map((c) => Math.min(v, c)).sort((a, b) => a - b), v];
            for (let k = 0; k + 1 < bounds.length; k++) {
              const [lo, hi] = [bounds[k], bounds[k + 1]];
              if (lo === hi) continue;
              using chunk = Tensor.fromArray(
                gpu,
                table.subarray(lo * h, hi * h),
                [hi - lo, h],
                dtype,
              );
              const r = embedding(ti, chunk, { rowOffset: lo, out });
              assert.equal(r, out);
            }
            // Ids that no chunk holds keep the sentinel; the rest equal the whole-table gather.
            const want = embeddingReference(ids, table, h, 0, sentinel);
            assertClose(await out.toArray(), want, EXACT, "chunked embedding");
          },
        ),
        fcParams(20),
      );
    },
  });
}

Deno.test({
  name: "embedding() writes zeros for ids outside the vocab, including the i32 extremes",
  ...GPU_TEST,
  fn: async () => {
    const [v, h] = [5, 3];
    const table = randomArray(v * h, 3, 1, 2); // no zeros in the table
    const ids = [-1, 5, 2 ** 31 - 1, -(2 ** 31), 4, 0, 6];
    using ti = Tensor.fromArray(gpu, ids, [ids.length], "i32");
    using tt = Tensor.fromArray(gpu, table, [v, h]);
    using out = embedding(ti, tt);
    const got = await out.toArray();
    assert.ok(got.slice(0, 4 * h).every((x) => x === 0), `expected zeros, got ${got}`);
    assertClose(got, embeddingReference(ids, table, h), EXACT, "oov");
    // A chunk with rowOffset: ids below the offset are outside it too.
    using chunk = Tensor.fromArray(gpu, table.subarray(2 * h), [3, h]);
    using out2 = embedding(ti, chunk, { rowOffset: 2 });
    assertClose(await out2.toArray(), embeddingReference(ids, table.subarray(2 * h), h, 2), EXACT);
  },
});

Deno.test({
  name: "embedding() accepts ids of any shape and covers more than 65535 workgroups",
  ...GPU_TEST,
  fn: async () => {
    const [b, t, v, h] = [2, 35000, 11, 256]; // 17.9M outputs > 65535 * 256
    const table = randomArray(v * h, 5);
    const ids = randomIds(b * t, 6, 0, v - 1);
    using ti = Tensor.fromArray(gpu, ids, [b, t], "i32");
    using tt = Tensor.fromArray(gpu, table, [v, h]);
    using out = embedding(ti, tt);
    assert.deepEqual(out.shape, [b, t, h]);
    assertClose(await out.toArray(), embeddingReference(ids, table, h), EXACT, "large gather");
  },
});

Deno.test({
  name: "embedding() rejects wrong dtypes, a bad out and a bad rowOffset",
  ...GPU_TEST,
  fn: () => {
    using ids = Tensor.zeros(gpu, [4], "i32");
    using idsF = Tensor.zeros(gpu, [4]);
    using table = Tensor.zeros(gpu, [10, 8]);
    using tableI = Tensor.zeros(gpu, [10, 8], "i32");
    using flat = Tensor.zeros(gpu, [80]);
    using outBad = Tensor.zeros(gpu, [4, 7]);
    using outI = Tensor.zeros(gpu, [4, 8], "i32");
    assert.throws(
      () => embedding(idsF, table),
      (e) => e instanceof TypeError && /ids/.test(e.message),
    );
    assert.throws(() => embedding(ids, tableI), TypeError);
    assert.throws(() => embedding(ids, outI), TypeError);
    assert.throws(
      () => embedding(ids, flat),
      (e) =>
        e instanceof RangeError && /table: expected shape \[V, H\], got \[80\]/.test(e.message),
    );
    assert.throws(
      () => embedding(ids, table, { out: outBad }),
      (e) =>
        e instanceof RangeError && /out: expected shape \[4, 8\].*got \[4, 7\]/.test(e.message),
    );
    assert.throws(() => embedding(ids, table, { out: outI }), TypeError);
    for (const rowOffset of [-1, 1.5, 2 ** 31]) {
      assert.throws(
        () => embedding(ids, table, { rowOffset }),
        (e) => e instanceof RangeError && /rowOffset/.test(e.message),
      );
    }
  },
});
