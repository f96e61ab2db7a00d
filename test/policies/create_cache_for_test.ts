/**
 * `createCacheFor` (src/generate.ts) builds every name of CACHE_POLICY_NAMES on a tiny model, and
 * each baseline generates through the whole model: with a budget above the sequence (nothing
 * evicted, every chunk selected) greedy tokens equal the dense cache's, bit for bit (the probs
 * and selection extras do not change attention); with a small budget TOVA, H2O and StreamingLLM
 * keep every page within it, and Quest keeps every token but reads fewer than dense.
 */

import assert from "node:assert/strict";
import { CACHE_POLICY_NAMES, createCacheFor, generate } from "../../src/generate.ts";
import type { GenerateResult } from "../../src/generate.ts";
import { parseConfig } from "../../src/model/config.ts";
import { createModel } from "../../src/model/model.ts";
import type { PagedKvCache } from "../../src/cache/paged_kv_cache.ts";
import { gpu, GPU_TEST } from "../_util.ts";

const config = parseConfig({
  model_type: "qwen3",
  hidden_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  intermediate_size: 48,
  vocab_size: 64,
  max_position_embeddings: 512,
  eos_token_id: 63,
  dms_window_size: 4,
  dms_paged_attention_block_size: 2,
}, "tiny");

async function run(gen: AsyncGenerator<unknown, GenerateResult>): Promise<GenerateResult> {
  while (true) {
    const r = await gen.next();
    if (r.done) return r.value;
  }
}

const PROMPTS = [[3, 9, 4, 17, 22, 5, 8, 30, 11, 2, 7, 19], [5, 6, 7, 8, 9, 10, 11, 12]];
const EVICTING = ["streaming", "h2o", "tova"];

Deno.test({
  name:
    "createCacheFor builds every policy name; baselines equal dense without eviction and stay within a small budget",
  ...GPU_TEST,
  fn: async () => {
    const model = createModel(gpu, config, { seed: 5 });
    const gen = async (name: (typeof CACHE_POLICY_NAMES)[number], budget: number) => {
      using cache = createCacheFor(model, PROMPTS.length, name, { budget, chunk: 2 });
      assert.equal((cache as PagedKvCache).policy.name, name);
      return await run(generate(model, PROMPTS, { maxTokens: 10, cache, prefillChunk: 4 }));
    };
    const dense = await gen("dense", 64);
    for (const name of CACHE_POLICY_NAMES) {
      if (name === "dense" || name === "dms") continue;
      const wide = await gen(name, 64);
      if (name !== "streaming") {
        assert.deepEqual(wide.tokens, dense.tokens, `${name}: tokens with a budget above T`);
        assert.equal(wide.stats.readTokens, dense.stats.readTokens, `${name}: reads`);
      }
      const small = await gen(name, 6);
      if (EVICTING.includes(name)) {
        for (const row of small.stats.lengths) {
          for (const len of row) assert.ok(len <= 6, `${name}: page length ${len} > budget 6`);
        }
        assert.ok(
          small.stats.peakTokens <= 6 * 2 * 2 * 2,
          `${name}: peak ${small.stats.peakTokens}`,
        );
      } else {
        assert.equal(small.stats.peakTokens, dense.stats.peakTokens, `${name}: peak`);
        assert.ok(small.stats.readTokens < dense.stats.readTokens, `${name}: reads`);
      }
    }
    // The DMS cache (a DMS config) too.
    using dms = createCacheFor(model, 1, "dms");
    assert.equal((dms as PagedKvCache).policy.name, "dms");
    model.dispose();
  },
});

Deno.test({
  name:
    "createCacheFor: preallocateTokens sizes the first pool, so a wide batch fits the binding limit",
  ...GPU_TEST,
  fn: () => {
    const model = createModel(gpu, config, { seed: 3 });
    const bytesPerPage = 4096 * config.headDim * 4; // the default 4096 tokens, f32
    const batch = Math.ceil(gpu.limits.maxStorageBufferBindingSize / (2 * bytesPerPage)) + 1;
    for (const name of ["dense", "dms", "quest"] as const) {
      assert.throws(
        () => createCacheFor(model, batch, name).dispose(),
        /maxStorageBufferBindingSize/,
        `${name}: B = ${batch} at 4096 tokens per page`,
      );
      const cache = createCacheFor(model, batch, name, { preallocateTokens: 16 });
      cache.dispose();
    }
    model.dispose();
  },
});
