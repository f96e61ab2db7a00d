/**
 * `PagedKvCache.copySequenceFrom` (parallel chains from one prompt prefilled once) against the
 * path it replaces: prefilling the same prompt in every row of a batch. After the copy, the
 * pages equal the CPU twin's replication of the source (`copySequenceReference`), and decoding
 * the same next tokens through both caches gives the same outputs and leaves the same pages
 * (positions, marks, DMS ring) bit for bit.
 */
import fc from "fast-check";
import assert from "node:assert/strict";
import { createDmsCache, type DmsCache } from "../../src/dms/dms_cache.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import { copySequenceReference } from "../../src/cache/fork.ts";
import type { PagedKvCache } from "../../src/cache/paged_kv_cache.ts";
import { fcParams, FLOAT_DTYPES, gpu, GPU_TEST } from "../_util.ts";
import { feed, makeProblem, type Problem } from "./harness.ts";

const arbCase = fc.record({
  policy: fc.constantFrom("dense", "dms"),
  B: fc.integer({ min: 1, max: 3 }),
  Hkv: fc.integer({ min: 1, max: 2 }),
  G: fc.integer({ min: 1, max: 2 }),
  D: fc.constantFrom(2, 8, 16),
  W: fc.integer({ min: 1, max: 5 }),
  bs: fc.integer({ min: 1, max: 3 }),
  prompt: fc.integer({ min: 1, max: 12 }),
  steps: fc.integer({ min: 1, max: 8 }),
  pEvict: fc.constantFrom(0, 0.5, 1),
  seed: fc.integer({ min: 0, max: 1 << 30 }),
});
type Case = typeof arbCase extends fc.Arbitrary<infer X> ? X : never;

function makeCache(c: Case, batch: number, dtype: "f32" | "f16"): PagedKvCache {
  const shape = { layers: 2, batch, kvHeads: c.Hkv, headDim: c.D, dtype, preallocateTokens: 1 };
  return c.policy === "dense"
    ? createDenseCache(gpu, { ...shape, blockSize: c.bs })
    : createDmsCache(gpu, { ...shape, window: c.W, blockSize: Math.min(c.bs, c.W) });
}

/** The one-row problem repeated in B rows (same q, k, v and decisions in every row). */
function repeatRows(one: Problem, B: number): Problem {
  const rep = <T extends Float32Array | Int32Array>(x: T): T => {
    const out = new (x.constructor as new (n: number) => T)(x.length * B);
    for (let b = 0; b < B; b++) out.set(x, b * x.length);
    return out;
  };
  return { ...one, B, q: rep(one.q), k: rep(one.k), v: rep(one.v), d: rep(one.d) };
}

async function pages(cache: PagedKvCache, layer: number) {
  return cache.policy.name === "dms"
    ? await (cache as DmsCache).inspect(layer)
    : await cache.storage.snapshot(layer);
}

async function run(c: Case, dtype: "f32" | "f16") {
  const T = c.prompt + c.steps;
  const one = makeProblem({ ...c, B: 1, T, f16: dtype === "f16" });
  const layers = [one, makeProblem({ ...c, B: 1, T, seed: c.seed + 9, f16: dtype === "f16" })];
  const manyLayers = layers.map((p) => repeatRows(p, c.B));
  const decode = Array(c.steps).fill(1);
  const what = `${dtype} ${JSON.stringify(c)}`;

  // The path it replaces: the prompt prefilled in every row, then decoded.
  using direct = makeCache(c, c.B, dtype);
  await feed(direct, manyLayers, [c.prompt], { reserve: true });
  const want = await feed(direct, manyLayers, decode, { start: c.prompt, reserve: true });

  // Prefill once, copy into B rows, decode the same tokens.
  using src = makeCache(c, 1, dtype);
  await feed(src, layers, [c.prompt], { reserve: true });
  using copy = makeCache(c, c.B, dtype);
  await copy.copySequenceFrom(src);
  assert.equal(copy.tokensSeen, c.prompt);
  for (let l = 0; l < 2; l++) {
    const twin = copySequenceReference(await src.storage.snapshot(l), c.Hkv, 0, c.B);
    assert.deepEqual(await copy.storage.snapshot(l), twin, `copied pages, layer ${l}, ${what}`);
  }
  const got = await feed(copy, manyLayers, decode, { start: c.prompt, reserve: true });
  assert.deepEqual(got, want, `decode outputs, ${what}`);
  for (let l = 0; l < 2; l++) {
    assert.deepEqual(await pages(copy, l), await pages(direct, l), `pages, layer ${l}, ${what}`);
  }
}

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    ...GPU_TEST,
    name: `copySequenceFrom + decode equals prefilling the prompt in every row (${dtype})`,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(arbCase, async (c) => await run(c, dtype)),
        fcParams(12),
      );
    },
  });
}

Deno.test({
  ...GPU_TEST,
  name: "copySequenceFrom refuses a used cache, another policy or window, a bad row or geometry",
  fn: async () => {
    const shape = { layers: 1, kvHeads: 2, headDim: 8, blockSize: 2 };
    using src = createDmsCache(gpu, { ...shape, batch: 1, window: 3 });
    const pr = makeProblem({ B: 1, Hkv: 2, G: 1, D: 8, T: 3, seed: 1, pEvict: 0.5 });
    await feed(src, [pr], [3], { reserve: true });
    using dense = createDenseCache(gpu, { ...shape, batch: 2 });
    await assert.rejects(dense.copySequenceFrom(src), /dense policy .* cannot copy .* dms/);
    using w4 = createDmsCache(gpu, { ...shape, batch: 2, window: 4 });
    await assert.rejects(w4.copySequenceFrom(src), /window 4\).*\(window 3\)/);
    using ok = createDmsCache(gpu, { ...shape, batch: 2, window: 3 });
    await assert.rejects(ok.copySequenceFrom(src, 1), /row must be an integer in 0\.\.0, got 1/);
    using d16 = createDmsCache(gpu, { ...shape, headDim: 16, batch: 2, window: 3 });
    await assert.rejects(d16.copySequenceFrom(src), /headDim differs \(source 8, copy 16\)/);
    await ok.copySequenceFrom(src);
    await assert.rejects(ok.copySequenceFrom(src), /must be fresh, it has seen 3 tokens/);
  },
});
