/**
 * The barrier-free attention kernel (src/cache/paged_simple.ts, forced with `decodeKernel:
 * "simple"`, what OpenGL CPU adapters run) against the dense f64 SPEC §5.1 oracle: dense and DMS
 * caches, chunked and left-padded prefill, then decode, G query heads per KV head, ragged head
 * dims; and equal (within f32 rounding) to the default kernels on the same problem.
 */
import fc from "fast-check";
import assert from "node:assert/strict";
import { createDmsCache } from "../../src/dms/dms_cache.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import { SIMPLE_MAX_HEAD_DIM, simpleAttentionFor } from "../../src/cache/paged_simple.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, TOL } from "../_util.ts";
import { chunking, expected, feed, makeProblem } from "./harness.ts";

const arbCase = fc.record({
  policy: fc.constantFrom("dense", "dms"),
  B: fc.integer({ min: 1, max: 2 }),
  Hkv: fc.integer({ min: 1, max: 2 }),
  G: fc.integer({ min: 1, max: 4 }),
  D: fc.constantFrom(3, 8, 16, 32),
  W: fc.integer({ min: 1, max: 8 }),
  bs: fc.integer({ min: 1, max: 4 }),
  T: fc.integer({ min: 1, max: 40 }),
  sizes: fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 4 }),
  decode: fc.integer({ min: 0, max: 10 }),
  pEvict: fc.constantFrom(0, 0.5, 1),
  pads: fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 2, maxLength: 2 }),
  seed: fc.integer({ min: 0, max: 1 << 30 }),
});
type Case = typeof arbCase extends fc.Arbitrary<infer X> ? X : never;

function cacheFor(c: Case, dtype: "f32" | "f16", kernel: "simple" | "split") {
  const shape = { layers: 1, batch: c.B, kvHeads: c.Hkv, headDim: c.D, dtype };
  return c.policy === "dense"
    ? createDenseCache(gpu, { ...shape, blockSize: c.bs, decodeKernel: kernel })
    : createDmsCache(gpu, {
      ...shape,
      window: c.W,
      blockSize: Math.min(c.bs, c.W),
      decodeKernel: kernel,
    });
}

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    ...GPU_TEST,
    name: `simple attention equals the f64 oracle and the default kernels (${dtype})`,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(arbCase, async (c) => {
          const T = c.T + c.decode;
          const pr = makeProblem({ ...c, T, f16: dtype === "f16" });
          // the padding is left padding of the first chunk only (SPEC §9.8)
          const chunks = [...chunking(c.T, c.sizes), ...Array(c.decode).fill(1)];
          const first = chunks[0];
          const padded = makeProblem({
            ...c,
            T,
            f16: dtype === "f16",
            pads: c.pads.map((p) => Math.min(p, first - 1)),
          });
          const what = `${dtype} ${JSON.stringify(c)}`;
          for (const problem of [pr, padded]) {
            using simple = cacheFor(c, dtype, "simple");
            using fast = cacheFor(c, dtype, "split");
            assert.ok(simpleAttentionFor(simple.storage));
            const [got] = await feed(simple, [problem], chunks, { reserve: true });
            const [ref] = await feed(fast, [problem], chunks, { reserve: true });
            const W = c.policy === "dense" ? 0 : c.W;
            const want = expected(
              c.policy === "dense" ? { ...problem, d: problem.d.map(() => 0) } : problem,
              W,
            );
            assertClose(got, want, TOL[dtype], `simple vs oracle, ${what}`);
            assertClose(got, ref, TOL[dtype], `simple vs default kernels, ${what}`);
          }
        }),
        fcParams(20),
      );
    },
  });
}

Deno.test({
  ...GPU_TEST,
  name: "simple attention is taken only where asked or on OpenGL CPU adapters, up to D = 256",
  fn: () => {
    const shape = { layers: 1, batch: 1, kvHeads: 1, blockSize: 4 };
    using a = createDenseCache(gpu, { ...shape, headDim: 8 });
    assert.equal(simpleAttentionFor(a.storage), gpu.adapter.cpuGl);
    using b = createDenseCache(gpu, { ...shape, headDim: 8, decodeKernel: "simple" });
    assert.equal(simpleAttentionFor(b.storage), true);
    using wide = createDenseCache(gpu, {
      ...shape,
      headDim: SIMPLE_MAX_HEAD_DIM + 8,
      decodeKernel: "simple",
    });
    assert.equal(simpleAttentionFor(wide.storage), false);
    assert.throws(
      () => createDenseCache(gpu, { ...shape, headDim: 8, decodeKernel: "fast" as "split" }),
      /decodeKernel must be "split", "tiled" or "simple", got fast/,
    );
  },
});
