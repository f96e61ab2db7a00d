/**
 * Hostile `config.json` and `tokenizer.json` files (issue 13, item 1): wrong types, missing,
 * negative, fractional or huge fields, heads that do not divide, unknown RoPE types, NaN,
 * truncations, and tokenizers whose structure, merges or ids do not add up. Every case ends in a
 * TypeError, RangeError or SyntaxError whose message names the file and the field, within a
 * second; a config whose weights would take terabytes is refused before anything is allocated.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { loadConfig, parameterCount, parseConfig } from "../../src/model/config.ts";
import { createModel, loadModel } from "../../src/model/model.ts";
import { checkTokenizerMatchesConfig, loadTokenizer } from "../../src/io/tokenizer.ts";
import { gpu, GPU_TEST } from "../_util.ts";

/** A valid DMS config; every hostile case starts from it. */
const BASE: Record<string, unknown> = {
  model_type: "qwen3",
  hidden_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  intermediate_size: 48,
  vocab_size: 64,
  max_position_embeddings: 512,
  rope_theta: 10000,
  rms_norm_eps: 1e-6,
  dms_window_size: 4,
  dms_paged_attention_block_size: 2,
};

const EPS = /"rms_norm_eps":[^,]+/;

function isTyped(e: unknown): e is Error {
  return e instanceof TypeError || e instanceof RangeError || e instanceof SyntaxError;
}

/** Loads `text` as `<dir>/<name>.json`: the config, or the typed error (anything else fails). */
async function attemptConfig(
  dir: string,
  name: string,
  text: string | Uint8Array,
): Promise<Error | null> {
  const path = `${dir}/${name}.json`;
  if (typeof text === "string") await Deno.writeTextFile(path, text);
  else await Deno.writeFile(path, text);
  const t0 = performance.now();
  try {
    await loadConfig(path);
    return null;
  } catch (e) {
    assert.ok(isTyped(e), `${name}: untyped ${(e as Error).constructor.name}: ${e}`);
    assert.ok(e.message.includes(path), `${name}: no file name in "${e.message}"`);
    return e;
  } finally {
    assert.ok(performance.now() - t0 < 1000, `${name}: took ${performance.now() - t0} ms`);
  }
}

Deno.test("hand-made hostile config.json files are refused naming the file and the field", async () => {
  const dir = await Deno.makeTempDir();
  const cases: [string, Record<string, unknown>, string][] = [
    ["string_heads", { num_key_value_heads: "x" }, "num_key_value_heads"],
    ["missing_hidden", { hidden_size: undefined }, "hidden_size"],
    ["negative_layers", { num_hidden_layers: -2 }, "num_hidden_layers"],
    ["fractional_vocab", { vocab_size: 63.5 }, "vocab_size"],
    ["unsafe_vocab", { vocab_size: 2 ** 60 }, "vocab_size"],
    [
      "heads_not_dividing",
      { num_attention_heads: 6, num_key_value_heads: 4 },
      "num_key_value_heads",
    ],
    ["odd_head_dim", { head_dim: 7 }, "head_dim"],
    ["hidden_not_dividing", { head_dim: undefined, hidden_size: 30 }, "hidden_size"],
    ["unknown_rope", { rope_scaling: { rope_type: "yarn", factor: 4 } }, "rope_scaling.rope_type"],
    ["rope_missing_factor", { rope_scaling: { rope_type: "llama3" } }, "rope_scaling.factor"],
    ["rope_not_object", { rope_scaling: 3 }, "rope_scaling"],
    ["zero_eps", { rms_norm_eps: 0 }, "rms_norm_eps"],
    ["unknown_model", { model_type: "gpt2" }, "model_type"],
    ["gelu", { hidden_act: "gelu" }, "hidden_act"],
    [
      "window_below_block",
      { dms_window_size: 2, dms_paged_attention_block_size: 4 },
      "dms_window_size",
    ],
    ["negative_window", { dms_window_size: -1 }, "dms_window_size"],
    ["bad_alpha_per", { dms_alpha_per: "token" }, "dms_alpha_per"],
    ["bad_eos", { eos_token_id: [1, -3] }, "eos_token_id"],
    ["sliding_window", { use_sliding_window: true }, "use_sliding_window"],
  ];
  for (const [name, patch, field] of cases) {
    const err = await attemptConfig(dir, name, JSON.stringify({ ...BASE, ...patch }));
    assert.ok(err, `${name}: accepted`);
    assert.ok(err.message.includes(field), `${name}: field ${field} not named in "${err.message}"`);
  }
  // Python's json writes NaN and Infinity; they are not JSON
  for (const lit of ["NaN", "Infinity", "-Infinity"]) {
    const err = await attemptConfig(
      dir,
      `lit_${lit}`,
      JSON.stringify(BASE).replace(EPS, `"rms_norm_eps":${lit}`),
    );
    assert.ok(err instanceof SyntaxError, `${lit}: ${err}`);
  }
  // a number too large for a double parses as Infinity: not a positive number
  const inf = await attemptConfig(
    dir,
    "huge_literal",
    JSON.stringify(BASE).replace(EPS, `"rms_norm_eps":1e999`),
  );
  assert.match(inf?.message ?? "", /rms_norm_eps/);
  for (const [name, text] of [["empty", ""], ["array", "[1, 2]"], ["null", "null"]]) {
    assert.ok(await attemptConfig(dir, name, text), `${name}: accepted`);
  }
  assert.ok(await attemptConfig(dir, "binary", new Uint8Array([0xff, 0xfe, 0x00, 0x7b])));
  // 17 MiB of spaces around a valid object: refused by its size, unread
  const padded = await attemptConfig(dir, "oversized", " ".repeat(17 << 20) + JSON.stringify(BASE));
  assert.match(padded?.message ?? "", /too large for a config/);
  // a device that never ends is refused unread, not read forever
  for (const dev of ["/dev/zero", "/dev/urandom"]) {
    await assert.rejects(
      () => loadConfig(dev),
      new RegExp(`^TypeError: ${dev}: not a regular file`),
    );
    await assert.rejects(
      () => loadTokenizer(dev),
      new RegExp(`^TypeError: ${dev}: not a regular file`),
    );
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("truncated configs and configs with one field replaced by random JSON end in typed errors", async () => {
  const dir = await Deno.makeTempDir();
  const text = JSON.stringify(BASE, null, 2);
  let n = 0;
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: text.length - 2 }), async (cut) => {
      // every proper prefix of a pretty-printed object lacks its closing brace
      assert.ok(await attemptConfig(dir, `cut${n++}`, text.slice(0, cut)), `cut at ${cut}`);
    }),
    { numRuns: 60, seed: 5 },
  );
  const fields = Object.keys(BASE);
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...fields),
      fc.option(fc.jsonValue({ maxDepth: 2 }), { nil: undefined }),
      async (field, value) => {
        const name = `mut${n++}`;
        const err = await attemptConfig(dir, name, JSON.stringify({ ...BASE, [field]: value }));
        if (err) {
          assert.ok(
            err.message.includes(field),
            `${field}=${JSON.stringify(value)}: ${err.message}`,
          );
          return;
        }
        // accepted: then the normalised config is consistent
        const c = parseConfig({ ...BASE, [field]: value });
        assert.ok(c.numHeads % c.numKvHeads === 0 && c.headDim % 2 === 0);
        assert.ok(c.dms.window > c.dms.blockSize);
        for (const k of ["hiddenSize", "numLayers", "vocabSize", "intermediateSize"] as const) {
          assert.ok(Number.isSafeInteger(c[k]) && c[k] > 0, `${field}: ${k} = ${c[k]}`);
        }
      },
    ),
    { numRuns: 200, seed: 6 },
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test({
  name: "a config whose weights would take terabytes is refused before anything is allocated",
  ...GPU_TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const huge = { ...BASE, vocab_size: 2 ** 31 - 1, hidden_size: 1 << 20, head_dim: 8 };
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(huge));
    const cfg = await loadConfig(dir); // a valid config: only its size is absurd
    assert.ok(parameterCount(cfg) * 4 > 2 ** 40, `${parameterCount(cfg)} parameters`);
    const live = gpu.memory().liveBytes;
    const t0 = performance.now();
    // no model.safetensors in the folder: the size check must come first
    await assert.rejects(
      () => loadModel(gpu, dir),
      (e: Error) =>
        e instanceof RangeError && e.message.startsWith(`${dir}/config.json: the weights need`) &&
        e.message.includes(`vocab_size ${2 ** 31 - 1}`) && e.message.includes("hidden_size"),
    );
    assert.throws(() => createModel(gpu, cfg, { seed: 1 }), /the weights need .* GiB/);
    assert.ok(performance.now() - t0 < 1000);
    assert.equal(gpu.memory().liveBytes, live, "something was allocated");
    await Deno.remove(dir, { recursive: true });
  },
});

/** A small byte-level BPE tokenizer.json: vocab {a, b, ab}, one merge. */
function tokenizerJson(patch: (j: Record<string, unknown>) => void = () => {}): string {
  const j: Record<string, unknown> = {
    version: "1.0",
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: {
      type: "ByteLevel",
      add_prefix_space: false,
      trim_offsets: true,
      use_regex: true,
    },
    post_processor: null,
    decoder: { type: "ByteLevel" },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      vocab: { a: 0, b: 1, ab: 2 },
      merges: ["a b"],
    },
  };
  patch(j);
  return JSON.stringify(j);
}

Deno.test("hostile tokenizer.json files are refused naming the file and the field", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/tokenizer.json`;
  await Deno.writeTextFile(file, tokenizerJson());
  const ok = await loadTokenizer(dir);
  assert.deepEqual(ok.encode("ab"), [2]); // the base file is valid
  type J = Record<string, unknown> & { model: Record<string, unknown> };
  const cases: [string, (j: J) => void, string][] = [
    ["vocab as array", (j) => (j.model.vocab = [1, 2]), "model.vocab"],
    ["string id", (j) => (j.model.vocab = { a: "x" }), "model.vocab.a"],
    ["negative id", (j) => (j.model.vocab = { a: -1 }), "model.vocab.a"],
    ["duplicate id", (j) => (j.model.vocab = { a: 0, b: 0, ab: 2 }), "model.vocab.b"],
    ["merge of unknown token", (j) => (j.model.merges = ["a z"]), "model.merges.0"],
    ["merge result not in vocab", (j) => (j.model.vocab = { a: 0, b: 1 }), "model.merges.0"],
    ["merge not a string", (j) => (j.model.merges = [5]), "model.merges.0"],
    ["merges not an array", (j) => (j.model.merges = "a b"), "model.merges"],
    ["unknown model type", (j) => (j.model.type = "Foo"), "model.type"],
    ["added token without content", (j) => (j.added_tokens = [{ id: 3 }]), "added_tokens.0"],
    [
      "added token id 2^32",
      (j) => (j.added_tokens = [{ id: 2 ** 32, content: "<x>" }]),
      "added_tokens.0.id",
    ],
    ["unknown pre_tokenizer", (j) => (j.pre_tokenizer = { type: "Nope" }), "PreTokenizer"],
    [
      "unigram vocab of strings",
      (j) => Object.assign(j.model, { type: "Unigram", vocab: ["a"] }),
      "model.vocab.0",
    ],
  ];
  for (const [why, patch, field] of cases) {
    await Deno.writeTextFile(file, tokenizerJson(patch as (j: Record<string, unknown>) => void));
    await assert.rejects(
      () => loadTokenizer(dir),
      (e: Error) => {
        assert.ok(isTyped(e), `${why}: ${e.constructor.name}: ${e.message}`);
        assert.ok(e.message.startsWith(`${file}: `), `${why}: no file in "${e.message}"`);
        assert.ok(e.message.includes(field), `${why}: no field ${field} in "${e.message}"`);
        return true;
      },
      why,
    );
  }
  // truncations: never anything but a SyntaxError naming the file
  const text = tokenizerJson();
  for (let cut = 0; cut < text.length; cut += 7) {
    await Deno.writeTextFile(file, text.slice(0, cut));
    await assert.rejects(
      () => loadTokenizer(dir),
      (e: Error) => isTyped(e) && e.message.includes(file),
    );
  }
  // ids beyond the config's vocabulary: both files and both sizes named
  await Deno.writeTextFile(
    file,
    tokenizerJson((j) => (j.added_tokens = [{ id: 100, content: "<x>", special: true }])),
  );
  const wide = await loadTokenizer(dir);
  assert.equal(wide.vocabSize, 101);
  assert.throws(
    () => checkTokenizerMatchesConfig(wide, parseConfig(BASE), "tiny/config.json"),
    (e: Error) =>
      e instanceof RangeError && e.message.includes(file) && e.message.includes("101") &&
      e.message.includes("tiny/config.json has vocab_size 64"),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("tokenizer.json with a random part replaced loads and encodes in range, or is refused naming the file", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/tokenizer.json`;
  const paths: [string, ...string[]][] = [
    ["model", "type"],
    ["model", "vocab"],
    ["model", "vocab", "ab"],
    ["model", "merges"],
    ["model", "merges", "0"],
    ["model", "continuing_subword_prefix"],
    ["added_tokens"],
    ["pre_tokenizer"],
    ["decoder"],
    ["normalizer"],
  ];
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...paths),
      fc.option(fc.jsonValue({ maxDepth: 2 }), { nil: undefined }),
      async (path, value) => {
        const j = JSON.parse(tokenizerJson());
        let o = j;
        for (const k of path.slice(0, -1)) o = o[k];
        o[path[path.length - 1]] = value;
        await Deno.writeTextFile(file, JSON.stringify(j));
        const why = `${path.join(".")} = ${JSON.stringify(value)}`;
        let tok;
        try {
          tok = await loadTokenizer(dir);
        } catch (e) {
          assert.ok(isTyped(e), `${why}: ${(e as Error).constructor.name}: ${e}`);
          assert.ok(e.message.startsWith(`${file}: `), `${why}: ${e.message}`);
          return;
        }
        // accepted: every id it produces has a row below vocabSize, or encode refuses the text
        for (const text of ["ab", "ba a", "\u00e9\u00e9"]) {
          let ids: number[];
          try {
            ids = tok.encode(text);
          } catch (e) {
            assert.ok(e instanceof RangeError && e.message.startsWith(`${file}: `), `${why}: ${e}`);
            continue;
          }
          for (const id of ids) {
            assert.ok(Number.isInteger(id) && id >= 0 && id < tok.vocabSize, `${why}: id ${id}`);
          }
        }
      },
    ),
    { numRuns: 150, seed: 8 },
  );
  await Deno.remove(dir, { recursive: true });
});
