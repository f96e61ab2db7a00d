/**
 * Replayed decode steps (`generate`'s `replay`, src/gpu/step_trace.ts,
 * `KvCache.replayDecodeStep`): a generation whose steps are mostly replayed from traces yields the
 * tokens, the accounting and the cache contents of one whose every step runs the ops, and greedy
 * replayed generation equals recomputing each step from scratch without a cache.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../src/model/config.ts";
import { createModel, type Model } from "../src/model/model.ts";
import { createCacheFor, generate, type GenerateOptions } from "../src/generate.ts";
import type { PagedKvCache } from "../src/cache/paged_kv_cache.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import { type StepTrace, traceDelta } from "../src/gpu/step_trace.ts";
import { gpu, GPU_TEST } from "./_util.ts";
import { greedyByFullForward } from "./_greedy.ts";

/**
 * The tiny test model; with `dms`, window W and blocks of `block` entries (by default W = 9 with
 * 8-entry blocks: tokens leave the cache, and blocks fill every 8 tokens, so replays stop at new
 * blocks and resume).
 */
function config(dms: boolean, window = 9, block = 8) {
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
    ...(dms
      ? {
        dms_window_size: window,
        dms_paged_attention_block_size: block,
        dms_alpha_scale: 3,
        dms_initial_alpha_offset: 0,
      }
      : {}),
  }, "tiny");
}

/**
 * Runs a generation to its end, counting the steps replayed (`gpu.replay` calls); `chunks`
 * receives every chunk.
 */
async function generated(
  model: Model,
  cache: PagedKvCache,
  opts: Partial<GenerateOptions> & { prompts?: number[][] },
  chunks: unknown[] = [],
) {
  const orig = gpu.replay;
  let replays = 0;
  gpu.replay = (...a: Parameters<typeof orig>) => {
    replays++;
    return orig.apply(gpu, a);
  };
  try {
    const gen = generate(model, opts.prompts ?? [[1, 2, 3, 4, 5, 6, 7], [8, 9]], {
      maxTokens: 45,
      readbackEvery: 16,
      eosTokenIds: [],
      cache,
      ...opts,
    });
    let r;
    while (!(r = await gen.next()).done) chunks.push(r.value);
    return { ...r.value, replays };
  } finally {
    gpu.replay = orig;
  }
}

/** The logits of one more decode step through `cache` (its contents decide them). */
async function nextLogits(model: Model, cache: PagedKvCache): Promise<number[]> {
  using ids = Tensor.fromArray(gpu, [11, 12], [2, 1], "i32");
  using pos = Tensor.fromArray(gpu, [cache.tokensSeen, cache.tokensSeen - 5], [2, 1], "i32");
  await cache.reserve(1);
  using l = model.forward(ids, { mode: "inference", positions: pos, cache, logits: "last" })!;
  return [...await l.toArray()];
}

Deno.test({
  name: "replayed decode steps give the tokens, accounting and cache contents of encoded ones " +
    "(dense and DMS, a left-padded batch, seeded sampling)",
  ...GPU_TEST,
  fn: async () => {
    for (const policy of ["dense", "dms"] as const) {
      const model = createModel(gpu, config(policy === "dms"), { seed: 4 });
      try {
        using plain = createCacheFor(model, 2, policy);
        using fast = createCacheFor(model, 2, policy);
        const sampling = { temperature: 1.5, seed: 7 };
        const a = await generated(model, plain, { replay: false, sampling });
        const b = await generated(model, fast, { sampling });
        assert.equal(a.replays, 0);
        // 45 tokens in chunks of 16: three steps traced, the rest replayed, across readbacks
        // (not across a new block: DMS's 8-entry blocks fill at the readbacks' reserves).
        assert.ok(b.replays >= (policy === "dms" ? 10 : 25), `${policy}: ${b.replays} replays`);
        assert.deepEqual(b.tokens, a.tokens, policy);
        assert.ok(new Set(a.tokens.flat()).size > 5, "the sampled tokens vary");
        assert.deepEqual(b.stats, a.stats, `${policy}: accounting`);
        assert.deepEqual(await nextLogits(model, fast), await nextLogits(model, plain), policy);
      } finally {
        model.dispose();
      }
    }
  },
});

Deno.test({
  name: "tensors made between chunks survive replays, and two generations interleaved chunk by " +
    "chunk give what each gives alone (a replay never writes into a pooled buffer handed out " +
    "since its trace)",
  ...GPU_TEST,
  fn: async () => {
    const model = createModel(gpu, config(false), { seed: 6 });
    const held: Tensor[] = [];
    try {
      const opts = { maxTokens: 40, readbackEvery: 8, eosTokenIds: [] };
      const alone = async (p: number[]) => {
        using c = createCacheFor(model, 1, "dense");
        return (await generated(model, c, { ...opts, replay: false, prompts: [p] })).tokens;
      };
      using c1 = createCacheFor(model, 1, "dense");
      using c2 = createCacheFor(model, 1, "dense");
      const g1 = generate(model, [[1, 2, 3]], { ...opts, cache: c1 });
      const g2 = generate(model, [[4, 5, 6, 7]], { ...opts, cache: c2 });
      const out1: number[] = [], out2: number[] = [];
      for (let i = 0; i < 5; i++) {
        const a = await g1.next(), b = await g2.next();
        if (!a.done) out1.push(...a.value.tokens[0]);
        if (!b.done) out2.push(...b.value.tokens[0]);
        // small tensors, of the sizes a step's temporaries have, kept to the end
        for (const n of [32, 64, 48, 16]) {
          held.push(Tensor.fromArray(gpu, Array.from({ length: n }, (_, j) => i * 1000 + j), [n]));
        }
      }
      assert.deepEqual([out1], await alone([1, 2, 3]));
      assert.deepEqual([out2], await alone([4, 5, 6, 7]));
      for (const [k, t] of held.entries()) {
        const i = Math.floor(k / 4), v = await t.toArray();
        assert.deepEqual([...v], Array.from({ length: v.length }, (_, j) => i * 1000 + j), `${k}`);
      }
    } finally {
      for (const t of held) t.dispose();
      model.dispose();
    }
  },
});

Deno.test({
  name: "a policy with CPU state per step (Quest) is not replayed, and generates what it does " +
    "without replay; steps encoded while a readback waits change nothing either",
  ...GPU_TEST,
  fn: async () => {
    const model = createModel(gpu, config(false), { seed: 5 });
    try {
      const quest = { chunk: 4, budget: 12 };
      using q1 = createCacheFor(model, 2, "quest", quest);
      using q2 = createCacheFor(model, 2, "quest", quest);
      const opts = { maxTokens: 60, readbackEvery: 16, sampling: { temperature: 1.5, seed: 3 } };
      const a = await generated(model, q1, { ...opts, replay: false });
      const b = await generated(model, q2, opts);
      assert.equal(b.replays, 0, "Quest keeps CPU state per step: no replay");
      assert.deepEqual(b.tokens, a.tokens);
      assert.deepEqual(b.stats, a.stats);
      for (const policy of ["dense", "dms"] as const) {
        using c1 = createCacheFor(model, 2, policy);
        using c2 = createCacheFor(model, 2, policy);
        const chunks: unknown[][] = [[], []];
        const x = await generated(model, c1, { ...opts, readbackOverlap: 0 }, chunks[0]);
        const y = await generated(model, c2, { ...opts, readbackOverlap: 5 }, chunks[1]);
        assert.deepEqual(y.tokens, x.tokens, policy);
        assert.deepEqual(chunks[1], chunks[0], `${policy}: the chunks and their accounting`);
      }
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "readback overlap: off by default for a cache passed in (after an early EOS the cache " +
    "ends where the result's accounting does), and when asked for, its steps are in the cache",
  ...GPU_TEST,
  fn: async () => {
    const model = createModel(gpu, config(false), { seed: 2 });
    try {
      // Every token is EOS: both sequences finish at the first readback (a chunk of 8).
      const opts = { maxTokens: 40, readbackEvery: 8, eosTokenIds: [...Array(64).keys()] };
      for (const overlap of [undefined, 4]) {
        using cache = createCacheFor(model, 2, "dense");
        const r = await generated(model, cache, { ...opts, readbackOverlap: overlap });
        assert.deepEqual(r.tokens.map((t) => t.length), [1, 1]);
        assert.equal(r.stats.tokensSeen, 7 + 7, "the prompt's 7 (padded) + the chunk's 8 - 1");
        assert.equal(cache.tokensSeen, r.stats.tokensSeen + (overlap ?? 0), `overlap ${overlap}`);
      }
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "every decode step between block allocations is the first one's trace plus k times one " +
    "delta (what replaying assumes after checking three), across readbacks, dense and DMS",
  ...GPU_TEST,
  fn: async () => {
    for (const dms of [false, true]) {
      // one 62-entry block a page holds the whole run: no allocation after the prefill
      const cfg = config(dms, 63, 62);
      const model = createModel(gpu, cfg, { seed: 9 });
      try {
        using cache = createCacheFor(model, 2, dms ? "dms" : "dense", { preallocateTokens: 62 });
        cache.replayDecodeStep = () => false; // every step encoded by the ops, and traced
        const traces: StepTrace[] = [];
        const end = gpu.endTrace;
        gpu.endTrace = () => {
          const t = end.apply(gpu);
          traces.push(t);
          return t;
        };
        try {
          await generated(model, cache, {
            maxTokens: 40,
            readbackEvery: 8,
            readbackOverlap: 3,
            sampling: { temperature: 1.5, seed: 1 },
          });
        } finally {
          gpu.endTrace = end;
        }
        assert.ok(traces.length >= 38, `${traces.length} traced steps`);
        // The first decode step after the prefill makes what later steps reuse (the zero
        // decisions of a model without them, step buffers): linear from the next one on.
        const first = traces.findIndex((t, i) =>
          i + 1 < traces.length && traceDelta(t, traces[i + 1])
        );
        assert.ok(first >= 0 && first <= 1, `dms=${dms}: steps agree from step ${first} on`);
        const base = traces[first], d = traceDelta(base, traces[first + 1])!;
        assert.ok(d.delta.length > 0, "the position, the sampling step and the log column");
        for (let k = 2; first + k < traces.length; k++) {
          const dk = traceDelta(base, traces[first + k]);
          assert.ok(dk, `dms=${dms}: step ${first + k} launches what step ${first} did`);
          assert.deepEqual([...dk.dispatch], [...d.dispatch], `dms=${dms} step ${first + k}`);
          assert.deepEqual([...dk.word], [...d.word], `dms=${dms} step ${first + k}`);
          assert.deepEqual(
            [...dk.delta],
            [...d.delta].map((x) => x * k),
            `dms=${dms} step ${first + k}`,
          );
        }
      } finally {
        model.dispose();
      }
    }
  },
});

Deno.test({
  name: "greedy generation with replayed steps equals recomputing every step without a cache",
  ...GPU_TEST,
  fn: async () => {
    const model = createModel(gpu, config(false), { seed: 3 });
    try {
      const prompt = [5, 9, 2, 33, 7];
      using cache = createCacheFor(model, 1, "dense");
      const orig = gpu.replay;
      let replays = 0;
      gpu.replay = (...a: Parameters<typeof orig>) => (replays++, orig.apply(gpu, a));
      const gen = generate(model, [prompt], { maxTokens: 24, readbackEvery: 12, cache });
      let r;
      try {
        while (!(r = await gen.next()).done);
      } finally {
        gpu.replay = orig;
      }
      assert.ok(replays >= 12, `${replays} replays`);
      assert.deepEqual(r.value.tokens[0], await greedyByFullForward(model, prompt, 24));
    } finally {
      model.dispose();
    }
  },
});
