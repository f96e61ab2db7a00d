/**
 * The fused decode append (`CachePolicy.decodeAppend`: `append_scatter` for dense,
 * `decode_update_scatter` for DMS) against the readable two-dispatch path it replaces
 * (`decodeUpdate` then `scatterEntries`, each checked against its CPU twin elsewhere): the same
 * prefill and decode steps through two caches, one with `fusedDecode = false`, must give the
 * same attention outputs and leave the same storage (every page's positions, marks, K and V,
 * the lengths and, for DMS, the ring) bit for bit.
 */
import fc from "fast-check";
import assert from "node:assert/strict";
import { createDmsCache, type DmsCache } from "../../src/dms/dms_cache.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import type { PagedKvCache } from "../../src/cache/paged_kv_cache.ts";
import { fcParams, FLOAT_DTYPES, gpu, GPU_TEST } from "../_util.ts";
import { feed, makeProblem } from "./harness.ts";

const arbCase = fc.record({
  policy: fc.constantFrom("dense", "dms"),
  B: fc.integer({ min: 1, max: 2 }),
  Hkv: fc.integer({ min: 1, max: 3 }),
  G: fc.integer({ min: 1, max: 2 }),
  D: fc.constantFrom(2, 3, 8, 16, 128),
  W: fc.integer({ min: 1, max: 6 }),
  bs: fc.integer({ min: 1, max: 4 }),
  prompt: fc.integer({ min: 1, max: 9 }),
  steps: fc.integer({ min: 1, max: 14 }),
  pEvict: fc.constantFrom(0, 0.5, 1),
  seed: fc.integer({ min: 0, max: 1 << 30 }),
});
type Case = typeof arbCase extends fc.Arbitrary<infer X> ? X : never;

function makeCache(c: Case, dtype: "f32" | "f16", fused: boolean): PagedKvCache {
  const shape = { layers: 1, batch: c.B, kvHeads: c.Hkv, headDim: c.D, dtype };
  const cache = c.policy === "dense"
    ? createDenseCache(gpu, { ...shape, blockSize: c.bs, preallocateTokens: 2 })
    : createDmsCache(gpu, {
      ...shape,
      window: c.W,
      blockSize: Math.min(c.bs, c.W),
      preallocateTokens: 2,
    });
  cache.fusedDecode = fused;
  return cache;
}

/** Bytes of every live slot's K and V row, per page in slot order (through the block table). */
async function liveRows(cache: PagedKvCache): Promise<number[][][]> {
  const s = cache.storage, pool = s.pool(0), mb = s.tableWidth, bs = s.blockSize;
  const row = s.headDim * (cache.dtype === "f16" ? 2 : 4);
  const lens = await s.readLengths();
  const table = new Int32Array(await gpu.read(s.table, s.pages * mb * 4)); // layer 0 first
  const bytes = pool.blocks * bs * row;
  const k = new Uint8Array(await gpu.read(pool.k, bytes));
  const v = new Uint8Array(await gpu.read(pool.v, bytes));
  return Array.from({ length: s.pages }, (_, p) =>
    Array.from({ length: lens[p] }, (_, slot) => {
      const ph = table[p * mb + Math.floor(slot / bs)] * bs + (slot % bs);
      return [...k.subarray(ph * row, (ph + 1) * row), ...v.subarray(ph * row, (ph + 1) * row)];
    }));
}

async function run(c: Case, dtype: "f32" | "f16") {
  const T = c.prompt + c.steps;
  const pr = makeProblem({ ...c, T, f16: dtype === "f16" });
  const out = [];
  for (const fused of [true, false]) {
    using cache = makeCache(c, dtype, fused);
    // one prefill chunk, then token by token (the decode path)
    const [o] = await feed(cache, [pr], [c.prompt, ...Array(c.steps).fill(1)], { reserve: true });
    const pages = c.policy === "dms"
      ? await (cache as DmsCache).inspect(0)
      : await cache.storage.snapshot(0);
    out.push({ o, pages, rows: await liveRows(cache) });
  }
  const [f, u] = out;
  const what = `${dtype} ${JSON.stringify(c)}`;
  assert.deepEqual(f.o, u.o, `outputs, ${what}`);
  assert.deepEqual(f.pages, u.pages, `positions, marks (and the DMS ring), ${what}`);
  assert.deepEqual(f.rows, u.rows, `live K and V rows, ${what}`);
}

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    ...GPU_TEST,
    name: `the fused decode append leaves what decodeUpdate + scatterEntries leave (${dtype})`,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(arbCase, async (c) => await run(c, dtype)),
        fcParams(15),
      );
    },
  });
}

Deno.test({
  ...GPU_TEST,
  name: "decode uses the fused append by default: one dispatch a layer fewer",
  fn: async () => {
    const c: Case = {
      policy: "dms",
      B: 1,
      Hkv: 2,
      G: 2,
      D: 8,
      W: 3,
      bs: 2,
      prompt: 4,
      steps: 1,
      pEvict: 0.5,
      seed: 7,
    };
    const pr = makeProblem({ ...c, T: 5 });
    for (const policy of ["dense", "dms"] as const) {
      const counts: number[] = [];
      for (const fused of [true, false]) {
        using cache = makeCache({ ...c, policy }, "f32", fused);
        await feed(cache, [pr], [4], { reserve: true });
        await cache.reserve(1);
        const dispatch = gpu.dispatch;
        let n = 0;
        gpu.dispatch = function (...args: Parameters<typeof dispatch>) {
          n++;
          return dispatch.apply(this, args);
        };
        try {
          await feed(cache, [pr], [1], { start: 4 });
        } finally {
          gpu.dispatch = dispatch;
        }
        counts.push(n);
      }
      assert.equal(counts[1] - counts[0], 1, `${policy}: ${counts[0]} fused, ${counts[1]} not`);
    }
    using fresh = createDenseCache(gpu, { layers: 1, batch: 1, kvHeads: 1, headDim: 8 });
    assert.equal(fresh.fusedDecode, true);
  },
});
