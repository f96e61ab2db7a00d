/**
 * The q/k kernel with the cache append fused in (`headsNormRopeQKAppend`,
 * `KvCache.decodeAppendTarget`): a model's decode steps give the tokens, the logits and the cache
 * contents of the unfused path (`fusedDecode = false`: the q/k kernel, then `attend`'s own update
 * and scatter) bit for bit — through a dense cache for Qwen3 (q/k norms) and Llama (no norms),
 * each with and without DMS fields (the borrowed neuron), and through a DMS cache that evicts
 * (the slots of every layer chosen up front by `decode_slots`, the decisions and the marks of
 * t − 1 in the q/k kernel) for both — with no append dispatch a layer of their own; misuse is
 * named.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/model/config.ts";
import { createModel, type Model } from "../../src/model/model.ts";
import { createCacheFor, generate } from "../../src/generate.ts";
import type { PagedKvCache } from "../../src/cache/paged_kv_cache.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { gpu, GPU_TEST } from "../_util.ts";

const KINDS = ["qwen3", "qwen3 dms", "llama", "llama dms"] as const;

function config(kind: (typeof KINDS)[number]) {
  return parseConfig({
    model_type: kind.startsWith("llama") ? "llama" : "qwen3",
    hidden_size: 32,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 8,
    intermediate_size: 48,
    vocab_size: 64,
    max_position_embeddings: 512,
    // blocks of 4 entries: decode steps cross block boundaries
    ...(kind.endsWith("dms")
      ? {
        dms_window_size: 6,
        dms_paged_attention_block_size: 4,
        dms_alpha_scale: 3,
        dms_initial_alpha_offset: 0,
      }
      : {}),
  }, kind);
}

/** Greedy generation through `cache` (replay off: every step runs the ops). */
async function run(model: Model, cache: PagedKvCache) {
  const gen = generate(model, [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], {
    maxTokens: 12,
    readbackEvery: 4,
    eosTokenIds: [],
    cache,
    replay: false,
  });
  let r;
  while (!(r = await gen.next()).done);
  return r.value;
}

/** One more decode step's logits and dispatches. */
async function step(model: Model, cache: PagedKvCache) {
  await cache.reserve(1);
  using ids = Tensor.fromArray(gpu, [3, 4], [2, 1], "i32");
  using pos = Tensor.fromArray(gpu, [cache.tokensSeen, cache.tokensSeen], [2, 1], "i32");
  const dispatch = gpu.dispatch;
  let n = 0;
  gpu.dispatch = function (...args: Parameters<typeof dispatch>) {
    n++;
    return dispatch.apply(this, args);
  };
  try {
    using l = model.forward(ids, { mode: "inference", positions: pos, cache, logits: "last" })!;
    return { logits: [...await l.toArray()], dispatches: n };
  } finally {
    gpu.dispatch = dispatch;
  }
}

Deno.test({
  name: "decode with the append in the q/k kernel equals the unfused path bit for bit (tokens, " +
    "logits, cache contents), dense and DMS, with no append dispatch a layer",
  ...GPU_TEST,
  fn: async () => {
    const dtypes = gpu.hasF16 ? ["f32", "f16"] as const : ["f32"] as const;
    const runs = [
      ...KINDS.map((kind) => [kind, "dense"] as const),
      ["qwen3 dms", "dms"] as const,
      ["llama dms", "dms"] as const,
    ];
    for (const [kind, policy] of runs) {
      for (const dtype of dtypes) {
        const model = createModel(gpu, config(kind), { seed: 3, dtype });
        try {
          using fused = createCacheFor(model, 2, policy);
          using plain = createCacheFor(model, 2, policy);
          plain.fusedDecode = false;
          const label = `${kind} ${dtype} ${policy}`;
          const a = await run(model, fused), b = await run(model, plain);
          assert.deepEqual(a.tokens, b.tokens, `${label}: tokens`);
          assert.deepEqual(a.stats, b.stats, `${label}: accounting`);
          const sa = await step(model, fused), sb = await step(model, plain);
          assert.deepEqual(sa.logits, sb.logits, `${label}: logits`);
          // the readable path appends with two dispatches a layer (update, scatter); the fused
          // one with none (DMS: one decode_slots a step)
          const saved = 2 * 3 - (policy === "dms" ? 1 : 0);
          assert.equal(sb.dispatches - sa.dispatches, saved, `${label}: append dispatches`);
          for (let l = 0; l < 3; l++) {
            const [x, y] = [await fused.storage.snapshot(l), await plain.storage.snapshot(l)];
            assert.deepEqual(x, y, `${label}: layer ${l} entries`);
          }
          if (policy === "dms") {
            assert.ok(a.stats.compressionRatio > 1.2, `${label}: CR ${a.stats.compressionRatio}`);
          }
        } finally {
          model.dispose();
        }
      }
    }
  },
});

Deno.test({
  name:
    "decodeAppendTarget: dense for the next layer in the storage dtype; DMS only for a caller " +
    "that decides, and then for every layer of the step; attend after it must be that decode step",
  ...GPU_TEST,
  fn: () => {
    const model = createModel(gpu, config("qwen3 dms"), { seed: 1 });
    try {
      using dense = createCacheFor(model, 1, "dense");
      assert.equal(dense.decodeAppendTarget(1, "f32", false), undefined, "layer 0 is next");
      assert.equal(dense.decodeAppendTarget(0, "f16", false), undefined, "f32 storage");
      dense.fusedDecode = false;
      assert.equal(dense.decodeAppendTarget(0, "f32", false), undefined, "fusedDecode off");
      dense.fusedDecode = true;
      const t = dense.decodeAppendTarget(0, "f32", false);
      assert.ok(t && !t.slots);
      assert.deepEqual([t.lbase, t.t0, t.blockSize], [0, 0, dense.storage.blockSize]);
      using q2 = Tensor.zeros(gpu, [1, 4, 2, 8]), k2 = Tensor.zeros(gpu, [1, 2, 2, 8]);
      assert.throws(
        () => dense.attend(0, q2, k2, k2),
        /layer 0's entry was stored through decodeAppendTarget.*n = 1, no keyMask\), got n = 2/,
      );
      using dms = createCacheFor(model, 1, "dms");
      assert.equal(dms.decodeAppendTarget(0, "f32", false), undefined, "DMS needs decisions");
      const d = dms.decodeAppendTarget(0, "f32", true);
      assert.ok(d?.slots, "DMS: the slots of every layer");
      assert.equal(d.slots.cacheWindow, 7);
      using q = Tensor.zeros(gpu, [1, 4, 1, 8]), k = Tensor.zeros(gpu, [1, 2, 1, 8]);
      using dec = Tensor.zeros(gpu, [1, 2, 1], "i32");
      dms.attend(0, q, k, k, dec).dispose();
      assert.throws(
        () => dms.attend(1, q, k, k, dec),
        /slots were chosen for every layer .* layer 1's entry must be stored through/,
      );
    } finally {
      model.dispose();
    }
  },
});
