import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { embeddingReference } from "../../src/ops/embedding.ts";
import {
  embeddingBackward,
  embeddingBackwardReference,
  type EmbeddingBackwardVariant,
} from "../../src/ops/embedding_backward.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";
import { assertGradClose, finiteDiffGrad } from "./_finite_diff.ts";

// GPU (f32) vs the f64 twin: atol 1e-5, rtol 1e-5 (sums of <= 60 values in [-1, 1]).
const TOL = { atol: 1e-5, rtol: 1e-5 };

function randomIds(n: number, seed: number, lo: number, hi: number): Int32Array {
  return Int32Array.from(randomArray(n, seed, lo, hi), Math.floor);
}

Deno.test({
  name:
    "embeddingBackward() matches the f64 twin over shapes, repeats, chunks and out-of-range ids",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 2 }),
        fc.integer({ min: 1, max: 70 }),
        fc.integer({ min: 1, max: 40 }),
        fc.constantFrom<EmbeddingBackwardVariant>("naive", "sorted"),
        fc.boolean(),
        fc.boolean(),
        fc.integer(),
        async (idShape, H, V, variant, chunked, accumulate, seed) => {
          const n = idShape.reduce((a, b) => a * b);
          // Ids in [-2, V + 2): repeats, and a few outside the vocabulary (skipped).
          const ids = randomIds(n, seed, -2, V + 2);
          const dy = randomArray(n * H, seed + 1);
          const rowOffset = chunked ? Math.floor(V / 3) : 0;
          const rows = chunked ? Math.ceil(V / 2) : V;
          const prev = randomArray(rows * H, seed + 2);
          using tids = Tensor.fromArray(gpu, ids, idShape, "i32");
          using tdy = Tensor.fromArray(gpu, dy, [...idShape, H]);
          using tacc = Tensor.fromArray(gpu, prev, [rows, H]);
          const dw = embeddingBackward(tids, tdy, V, {
            variant,
            rowOffset: chunked ? rowOffset : undefined,
            rows: chunked ? rows : undefined,
            accumulate: accumulate ? tacc : undefined,
          });
          assert.deepEqual(dw.shape, [rows, H]);
          if (accumulate) assert.equal(dw, tacc);
          const ref = embeddingBackwardReference(ids, dy, H, rows, rowOffset);
          if (accumulate) ref.forEach((v, i) => ref[i] = v + prev[i]);
          assertClose(await dw.toArray(), ref, TOL, `${variant} N=${n} H=${H} V=${V}`);
          if (!accumulate) dw.dispose();
        },
      ),
      fcParams(30),
    );
  },
});

Deno.test({
  name: "embeddingBackward() sorted agrees bit for bit with the readable naive kernel",
  ...GPU_TEST,
  fn: async () => {
    const [N, H, V] = [700, 33, 50];
    const ids = randomIds(N, 5, 0, V), dy = randomArray(N * H, 6);
    using tids = Tensor.fromArray(gpu, ids, [N], "i32");
    using tdy = Tensor.fromArray(gpu, dy, [N, H]);
    using a = embeddingBackward(tids, tdy, V, { variant: "naive" });
    using b = embeddingBackward(tids, tdy, V, { variant: "sorted" });
    assert.deepEqual(await b.toArray(), await a.toArray());
    assertClose(await b.toArray(), embeddingBackwardReference(ids, dy, H, V), TOL, "sorted");
  },
});

Deno.test("embeddingBackwardReference() is the gradient of embeddingReference() (central differences)", () => {
  // embeddingReference is linear in the table and copies it exactly: atol = rounding bound + 1e-9.
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 5 }),
      fc.integer(),
      (N, H, V, seed) => {
        const ids = randomIds(N, seed, -1, V + 1);
        const table = randomArray(V * H, seed + 1), dy = randomArray(N * H, seed + 2);
        const f = finiteDiffGrad((t) => embeddingReference(ids, t, H), table, dy);
        const ref = embeddingBackwardReference(ids, dy, H, V);
        assertGradClose(ref, f.grad, f.roundBound + 1e-9, "dW");
      },
    ),
    { numRuns: 40 },
  );
});

Deno.test({
  name: "embeddingBackward() handles no tokens and rejects bad shapes, chunks and dtypes",
  ...GPU_TEST,
  fn: async () => {
    using none = Tensor.zeros(gpu, [0], "i32");
    using dy0 = Tensor.zeros(gpu, [0, 3]);
    for (const variant of ["naive", "sorted"] as const) {
      using z = embeddingBackward(none, dy0, 2, { variant });
      assert.deepEqual([...await z.toArray()], [0, 0, 0, 0, 0, 0]);
    }
    using ids = Tensor.zeros(gpu, [4], "i32");
    using dy = Tensor.zeros(gpu, [4, 3]);
    using dyBad = Tensor.zeros(gpu, [5, 3]);
    using fids = Tensor.zeros(gpu, [4]);
    using acc = Tensor.zeros(gpu, [3, 3]);
    assert.throws(
      () => embeddingBackward(ids, dyBad, 10),
      (e) =>
        e instanceof RangeError &&
        /embeddingBackward\(\) dy: expected shape \[4, H\].*ids \[4\], got \[5, 3\]/.test(
          e.message,
        ),
    );
    assert.throws(
      () => embeddingBackward(ids, dy, 10, { rowOffset: 8, rows: 4 }),
      (e) => e instanceof RangeError && /chunk rows 8\.\.11 do not fit in vocab 10/.test(e.message),
    );
    assert.throws(
      () => embeddingBackward(ids, dy, 10, { accumulate: acc }),
      (e) =>
        e instanceof RangeError &&
        /accumulate: expected shape \[10, 3\], got \[3, 3\]/.test(e.message),
    );
    assert.throws(
      () => embeddingBackward(fids, dy, 10),
      (e) =>
        e instanceof TypeError &&
        /embeddingBackward\(\) ids: expected an i32 tensor, got f32/.test(e.message),
    );
    assert.throws(
      () => embeddingBackward(ids, ids.reshape([4, 1]), 10),
      (e) => e instanceof TypeError && /embeddingBackward\(\) dy: expected an f32/.test(e.message),
    );
  },
});
