/**
 * StreamingLLM (src/policies/streaming_llm.ts) against its CPU twin: after random chunkings
 * (prefill chunks and decode steps) with left padding, every page holds exactly the tokens
 * `streamingSlots` places, slot by slot; the live entries of every page stay ≤ the budget after
 * every step (so the peak does too); bad options name the field. Attention against the dense
 * §5.1 oracle is in policy_suite_test.ts.
 */

import fc from "fast-check";
import assert from "node:assert/strict";
import { createStreamingLlmCache, streamingSlots } from "../../src/policies/streaming_llm.ts";
import { fcParams, gpu, GPU_TEST } from "../_util.ts";
import { chunking, feed, makeProblem } from "../cache/harness.ts";

/** Real tokens of row b in each chunk (left padding removed). */
export function realChunks(mask: Int32Array | undefined, b: number, T: number, chunks: number[]) {
  let t0 = 0;
  return chunks.map((n) => {
    let m = 0;
    for (let t = t0; t < t0 + n; t++) m += mask ? mask[b * T + t] : 1;
    t0 += n;
    return m;
  });
}

Deno.test({
  name:
    "streaming cache keeps exactly the sinks and the recent window of its CPU twin, slot by slot, never above the budget",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          B: fc.integer({ min: 1, max: 2 }),
          Hkv: fc.integer({ min: 1, max: 2 }),
          sinks: fc.integer({ min: 0, max: 4 }),
          recent: fc.integer({ min: 1, max: 8 }),
          T: fc.integer({ min: 1, max: 40 }),
          sizes: fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 5 }),
          pads: fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 2, maxLength: 2 }),
          bs: fc.integer({ min: 1, max: 8 }),
          seed: fc.integer({ min: 0, max: 1 << 30 }),
        }),
        async (c) => {
          const pr = makeProblem({ ...c, G: 1, D: 4, pEvict: 0 });
          const budget = c.sinks + c.recent;
          using cache = createStreamingLlmCache(gpu, {
            layers: 1,
            batch: c.B,
            kvHeads: c.Hkv,
            headDim: 4,
            budget,
            sinks: c.sinks,
            blockSize: c.bs,
            preallocateTokens: 2,
          });
          const chunks = chunking(c.T, c.sizes);
          const label = JSON.stringify({ ...c, chunks });
          let peak = 0;
          await feed(cache, [pr], chunks, {
            reserve: true,
            after: async () => {
              const st = await cache.stats();
              for (const len of st.lengths[0]) {
                assert.ok(len <= budget, `length ${len} > budget ${budget} ${label}`);
              }
              peak = Math.max(peak, st.liveTokens);
            },
          });
          const st = await cache.stats();
          assert.equal(st.peakTokens, peak, `peak ${label}`);
          const pages = await cache.storage.snapshot(0);
          pages.forEach((page, p) => {
            const b = Math.floor(p / c.Hkv);
            const pad = pr.mask
              ? Math.max(0, pr.mask.subarray(b * c.T, (b + 1) * c.T).indexOf(1))
              : 0;
            const slots = streamingSlots(realChunks(pr.mask, b, c.T, chunks), c.sinks, c.recent);
            assert.deepEqual(page.positions, slots.map((r) => r + pad), `page ${p} ${label}`);
            assert.deepEqual(page.marks, slots.map((r) => (r < c.sinks ? 0 : 1)), `marks ${label}`);
          });
        },
      ),
      fcParams(16),
    );
  },
});

Deno.test({
  name: "createStreamingLlmCache names the field of a bad option",
  ...GPU_TEST,
  fn: () => {
    const base = { layers: 1, batch: 1, kvHeads: 1, headDim: 4 };
    assert.throws(
      () => createStreamingLlmCache(gpu, { ...base, budget: 4, sinks: 4 }),
      /RangeError: createStreamingLlmCache: budget must be an integer >= 5, got 4/,
    );
    assert.throws(
      () => createStreamingLlmCache(gpu, { ...base, budget: 8, sinks: -1 }),
      /createStreamingLlmCache: sinks must be an integer >= 0, got -1/,
    );
    assert.throws(
      () => createStreamingLlmCache(gpu, { ...base, budget: 2.5 }),
      /createStreamingLlmCache: budget must be an integer >= 5, got 2.5/,
    );
  },
});
