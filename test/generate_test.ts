import assert from "node:assert/strict";
import fc from "fast-check";
import { parseConfig } from "../src/model/config.ts";
import { createModel } from "../src/model/model.ts";
import { createCacheFor, generate, type GenerateResult } from "../src/generate.ts";
import { fcParams, gpu, GPU_TEST } from "./_util.ts";
import { greedyByFullForward } from "./_greedy.ts";

function tinyConfig(dms: boolean, window = 4) {
  return parseConfig({
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
    ...(dms
      ? {
        dms_window_size: window,
        dms_paged_attention_block_size: 2,
        dms_alpha_scale: 3,
        dms_initial_alpha_offset: 0,
      }
      : {}),
  }, "tiny");
}

/** Drains a generation, handing each chunk to `onChunk`; returns its result. */
async function run<C>(
  gen: AsyncGenerator<C, GenerateResult>,
  onChunk: (chunk: C) => void = () => {},
): Promise<GenerateResult> {
  while (true) {
    const r = await gen.next();
    if (r.done) return r.value;
    onChunk(r.value);
  }
}

Deno.test({
  name: "greedy generation through the dense cache equals recomputing every step from scratch",
  ...GPU_TEST,
  fn: async () => {
    const model = createModel(gpu, tinyConfig(false), { seed: 3 });
    try {
      const prompt = [5, 9, 2, 33, 7];
      const res = await run(
        generate(model, [prompt], {
          maxTokens: 12,
          cache: "dense",
          readbackEvery: 5,
          eosTokenIds: [],
        }),
      );
      assert.deepEqual(res.tokens[0], await greedyByFullForward(model, prompt, 12));
      assert.equal(res.stats.compressionRatio, 1);
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "a batch of left-padded prompts generates what each prompt generates alone",
  ...GPU_TEST,
  fn: async () => {
    for (const dms of [false, true]) {
      const model = createModel(gpu, tinyConfig(dms), { seed: 8 });
      try {
        const prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]];
        const together = await run(
          generate(model, prompts, { maxTokens: 9, readbackEvery: 4, eosTokenIds: [] }),
        );
        for (let b = 0; b < prompts.length; b++) {
          const alone = await run(generate(model, [prompts[b]], { maxTokens: 9, eosTokenIds: [] }));
          assert.deepEqual(together.tokens[b], alone.tokens[0], `dms=${dms} row ${b}`);
        }
      } finally {
        model.dispose();
      }
    }
  },
});

Deno.test({
  name: "seeded sampling is reproducible, streams in chunks and stops at EOS",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 1000 }),
        fc.integer({ min: 1, max: 7 }),
        async (seed, every) => {
          const model = createModel(gpu, tinyConfig(true), { seed: 1 });
          try {
            const opts = {
              maxTokens: 15,
              readbackEvery: every,
              sampling: { temperature: 1.2, topK: 20, topP: 0.95, seed },
            };
            const chunks: number[][] = [];
            const res = await run(generate(model, [[3, 4, 5]], opts), (c) => {
              chunks.push(c.tokens[0]);
            });
            assert.deepEqual(chunks.flat(), res.tokens[0]);
            const again = await run(generate(model, [[3, 4, 5]], opts));
            assert.deepEqual(again.tokens[0], res.tokens[0]);
            const eosAt = res.tokens[0].indexOf(63);
            assert.ok(
              eosAt === -1 ? res.tokens[0].length === 15 : eosAt === res.tokens[0].length - 1,
            );
          } finally {
            model.dispose();
          }
        },
      ),
      fcParams(5),
    );
  },
});

Deno.test({
  name: "generate() rejects empty prompts and tokens outside the vocabulary",
  ...GPU_TEST,
  fn: async () => {
    const model = createModel(gpu, tinyConfig(false), { seed: 1 });
    try {
      await assert.rejects(() => run(generate(model, [[]], { maxTokens: 2 })), /prompt 0 is empty/);
      await assert.rejects(
        () => run(generate(model, [[1, 64]], { maxTokens: 2 })),
        /token 1 = 64 is outside the vocabulary/,
      );
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "multi-turn generation on one DMS cache equals generating after one long prefill",
  ...GPU_TEST,
  fn: async () => {
    const model = createModel(gpu, tinyConfig(true, 3), { seed: 21 });
    const { createCacheFor } = await import("../src/generate.ts");
    try {
      const p1 = [4, 8, 15, 16, 23, 42], p2 = [7, 7, 9];
      // turn 1, then turn 2 on the same cache; the last sampled token is not in the cache yet,
      // so the second prompt starts with it
      const cache = createCacheFor(model, 1, "dms");
      const g1 =
        (await run(generate(model, [p1], { maxTokens: 10, cache, eosTokenIds: [] }))).tokens[0];
      const turn2 = await run(
        generate(model, [[g1[g1.length - 1], ...p2]], { maxTokens: 10, cache, eosTokenIds: [] }),
      );
      cache.dispose();
      // one long prompt holding everything
      const once = await run(
        generate(model, [[...p1, ...g1, ...p2]], { maxTokens: 10, cache: "dms", eosTokenIds: [] }),
      );
      assert.deepEqual(turn2.tokens[0], once.tokens[0]);
      assert.deepEqual(turn2.stats.lengths, once.stats.lengths);
      assert.ok(turn2.stats.compressionRatio > 1);
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "generation reads back once per chunk of readbackEvery tokens, the last chunk's " +
    "accounting included, with the DMS and the dense cache",
  ...GPU_TEST,
  fn: async () => {
    for (const dms of [true, false]) {
      const model = createModel(gpu, tinyConfig(dms), { seed: 2 });
      const orig = gpu.readMany;
      let reads = 0;
      gpu.readMany = (...a: Parameters<typeof orig>) => {
        reads++;
        return orig.apply(gpu, a);
      };
      try {
        // EOS off: chunks after 8, 16, 24, 32 and 37 tokens. (The prefill's reserve may read the
        // lengths once before the first chunk: the tiny DMS pool is one 2-entry block a page.)
        const gen = generate(model, [[3, 4, 5], [6, 7, 8]], {
          maxTokens: 37,
          readbackEvery: 8,
          eosTokenIds: [],
        });
        const seen: number[] = [];
        let sampled = 0;
        const res = await run(gen, (c) => {
          seen.push(reads);
          sampled += c.tokens[0].length;
          // 3 prompt tokens, then every sampled token but the last is in the cache
          assert.equal(c.cacheStats.tokensSeen, 3 + sampled - 1);
        });
        assert.equal(seen.length, 5);
        assert.ok(seen[0] <= 2, `${seen[0]} readbacks up to the first chunk (dms ${dms})`);
        assert.deepEqual(
          seen.map((r) => r - seen[0]),
          [0, 1, 2, 3, 4],
          `one readback a chunk (dms ${dms})`,
        );
        assert.equal(reads, seen[4], `no readback after the last chunk (dms ${dms})`);
        assert.equal(res.tokens[0].length, 37);
        assert.equal(res.stats.tokensSeen, 3 + 36, "the last sampled token is not in the cache");
      } finally {
        gpu.readMany = orig;
        model.dispose();
      }
    }
  },
});

Deno.test({
  name: "generation that ends at EOS reserves no room past its end (the pools stay as the " +
    "final accounting reports them)",
  ...GPU_TEST,
  fn: async () => {
    const model = createModel(gpu, tinyConfig(true), { seed: 3 });
    try {
      // Every token is EOS: both sequences finish in the first chunk of 8.
      using cache = createCacheFor(model, 2, "dms", { preallocateTokens: 2 });
      const res = await run(generate(model, [[3, 4, 5], [6, 7, 8]], {
        maxTokens: 64,
        readbackEvery: 8,
        eosTokenIds: Array.from({ length: 64 }, (_, t) => t),
        cache,
      }));
      assert.deepEqual(res.tokens.map((t) => t.length), [1, 1]);
      assert.equal((await cache.stats()).allocatedBytes, res.stats.allocatedBytes);
    } finally {
      model.dispose();
    }
  },
});
