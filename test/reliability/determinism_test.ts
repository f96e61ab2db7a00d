/**
 * Determinism (issue 13, item 5): with the same seed, sampled generation through the DMS cache
 * gives the same tokens, the same eviction decisions (the live positions, marks and ring of every
 * page of every layer, read back with `DmsCache.inspect`) and the same compression ratio across
 * runs and across readback intervals (`readbackEvery`: the CPU only reads the token log, so how
 * often it does must not change what the GPU computes).
 */

import assert from "node:assert/strict";
import { parseConfig } from "../../src/model/config.ts";
import { createModel } from "../../src/model/model.ts";
import { createCacheFor, generate, type GenerateResult } from "../../src/generate.ts";
import type { DmsCache, DmsPageState } from "../../src/dms/dms_cache.ts";
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
  dms_window_size: 4,
  dms_paged_attention_block_size: 2,
  dms_alpha_scale: 3, // decisions that depend on the tokens: some evicted, some kept
  dms_initial_alpha_offset: 0,
}, "tiny");

const PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13]]; // two lengths: left padding too
const TOKENS = 40;

interface Outcome {
  result: GenerateResult;
  decisions: DmsPageState[][];
}

async function once(
  model: ReturnType<typeof createModel>,
  seed: number,
  readbackEvery: number,
): Promise<Outcome> {
  const cache = createCacheFor(model, PROMPTS.length, "dms") as DmsCache;
  try {
    const gen = generate(model, PROMPTS, {
      maxTokens: TOKENS,
      cache,
      readbackEvery,
      eosTokenIds: [],
      sampling: { temperature: 0.9, topP: 0.95, seed },
    });
    let r = await gen.next();
    while (!r.done) r = await gen.next();
    const decisions: DmsPageState[][] = [];
    for (let l = 0; l < config.numLayers; l++) decisions.push(await cache.inspect(l));
    return { result: r.value, decisions };
  } finally {
    cache.dispose();
  }
}

Deno.test({
  name: "the same seed gives the same tokens, decisions and compression ratio at any readbackEvery",
  ...GPU_TEST,
  fn: async () => {
    const model = createModel(gpu, config, { seed: 11 });
    try {
      const ref = await once(model, 1234, 16);
      const { stats } = ref.result;
      // the decisions are not trivial: some tokens evicted, some kept outside the window
      const pages = config.numLayers * PROMPTS.length * config.numKvHeads;
      const seen = Math.max(...PROMPTS.map((p) => p.length)) + TOKENS - 1;
      assert.ok(stats.compressionRatio > 1.2, `CR ${stats.compressionRatio}`);
      assert.ok(stats.liveTokens > pages * (config.dms.window + 1), `${stats.liveTokens} live`);
      assert.ok(stats.liveTokens < pages * seen);
      for (const every of [16, 1, 5, TOKENS]) {
        const o = await once(model, 1234, every);
        const why = `readbackEvery ${every}`;
        assert.deepEqual(o.result.tokens, ref.result.tokens, `${why}: tokens`);
        assert.deepEqual(o.decisions, ref.decisions, `${why}: decisions`);
        assert.deepEqual(o.result.stats.lengths, stats.lengths, `${why}: lengths`);
        assert.equal(o.result.stats.compressionRatio, stats.compressionRatio, `${why}: CR`);
        assert.equal(o.result.stats.readTokens, stats.readTokens, `${why}: KV reads`);
      }
      // and the seed matters (so the equalities above are not vacuous)
      const other = await once(model, 4321, 16);
      assert.notDeepEqual(other.result.tokens, ref.result.tokens);
    } finally {
      model.dispose();
    }
  },
});
