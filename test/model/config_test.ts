import assert from "node:assert/strict";
import fc from "fast-check";
import {
  configToJson,
  DMS_DEFAULTS,
  loadConfig,
  type ModelConfig,
  parseConfig,
} from "../../src/model/config.ts";

const CONFORMANCE = new URL("../../testdata/conformance/", import.meta.url).pathname;
const RUNS = Number(Deno.env.get("FC_RUNS")) || 0;

/** A minimal plain Qwen3 config (no DMS fields). */
const QWEN3 = {
  model_type: "qwen3",
  hidden_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  intermediate_size: 128,
  vocab_size: 256,
  max_position_embeddings: 512,
};

/** Llama 3.2 1B's config.json (abridged, real values). */
const LLAMA32 = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  head_dim: 64,
  hidden_act: "silu",
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-05,
  rope_scaling: {
    factor: 32.0,
    high_freq_factor: 4.0,
    low_freq_factor: 1.0,
    original_max_position_embeddings: 8192,
    rope_type: "llama3",
  },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.45.0.dev0",
  use_cache: true,
  vocab_size: 128256,
};

function roundTrips(cfg: ModelConfig): void {
  const json = JSON.parse(JSON.stringify(configToJson(cfg)));
  assert.deepEqual(parseConfig(json), cfg);
}

Deno.test("loadConfig reads every conformance config.json, and configToJson round-trips them", async () => {
  let n = 0;
  for await (const entry of Deno.readDir(CONFORMANCE)) {
    const dir = `${CONFORMANCE}${entry.name}`;
    const raw = await Deno.readTextFile(`${dir}/config.json`).catch(() => null);
    if (raw === null) continue; // C cases have no model
    n++;
    const json = JSON.parse(raw);
    const cfg = await loadConfig(dir);
    assert.deepEqual(cfg, await loadConfig(`${dir}/config.json`));
    assert.equal(cfg.modelType, "qwen3");
    assert.deepEqual(
      [cfg.hiddenSize, cfg.numLayers, cfg.numHeads, cfg.numKvHeads, cfg.headDim],
      [64, 2, 4, 2, 16],
    );
    assert.deepEqual([cfg.intermediateSize, cfg.vocabSize, cfg.ropeTheta], [128, 256, 10000]);
    assert.deepEqual([cfg.ropeScaling, cfg.rmsNormEps, cfg.attentionBias], [null, 1e-6, false]);
    assert.equal(cfg.tieWordEmbeddings, entry.name.startsWith("B2"));
    assert.equal(cfg.torchDtype, "float32");
    assert.equal(cfg.isDms, true);
    assert.deepEqual(cfg.dms, {
      window: json.dms_window_size,
      alphaScale: json.dms_alpha_scale,
      alphaOffset: json.dms_initial_alpha_offset,
      separateAlpha: json.dms_separate_alpha,
      alphaPer: json.dms_alpha_per,
      tau: json.dms_tau,
      blockSize: json.dms_paged_attention_block_size,
      compressionRatio: 8,
      disableEviction: false,
      chunkedPrefill: entry.name.startsWith("B3") ? 7 : null,
      preallocateForTokens: 128,
      manualInferenceMode: false,
    });
    // Cross-check against case.json's own summary of the DMS settings.
    const caseJson = JSON.parse(await Deno.readTextFile(`${dir}/case.json`));
    for (const [k, v] of Object.entries(caseJson.dms as Record<string, unknown>)) {
      assert.equal(json[k], v, `${entry.name}: ${k}`);
    }
    assert.equal(cfg.extra.transformers_version, "5.17.0");
    assert.equal("hidden_size" in cfg.extra, false);
    roundTrips(cfg);
  }
  assert.equal(n, 8, "eight A/B cases have a config.json");
});

Deno.test("parseConfig fills HF and DMS reference defaults", () => {
  const cfg = parseConfig(QWEN3);
  assert.equal(cfg.numKvHeads, 4);
  assert.equal(cfg.headDim, 16);
  assert.deepEqual(cfg.dms, DMS_DEFAULTS);
  assert.deepEqual(cfg.dms, {
    window: 512,
    alphaScale: 100,
    alphaOffset: 5,
    separateAlpha: false,
    alphaPer: "head",
    tau: 0.1,
    blockSize: 256,
    compressionRatio: null,
    disableEviction: false,
    chunkedPrefill: null,
    preallocateForTokens: 4096,
    manualInferenceMode: false,
  });
  assert.deepEqual(
    [cfg.isDms, cfg.tieWordEmbeddings, cfg.attentionBias, cfg.mlpBias, cfg.hiddenAct],
    [false, false, false, false, "silu"],
  );
  assert.deepEqual([cfg.ropeTheta, cfg.ropeScaling, cfg.rmsNormEps], [10000, null, 1e-6]);
  assert.deepEqual([cfg.bosTokenIds, cfg.eosTokenIds, cfg.torchDtype], [[], [], null]);
  assert.deepEqual(cfg.extra, {});
  assert.equal("dms_window_size" in configToJson(cfg), false);
  roundTrips(cfg);
  // null means "use the default", as HF writes it.
  assert.deepEqual(parseConfig({ ...QWEN3, num_key_value_heads: null, head_dim: null }), cfg);
});

Deno.test("parseConfig takes rope_theta from rope_parameters (transformers 5.x) and dtype from dtype", () => {
  const cfg = parseConfig({
    ...QWEN3,
    rope_parameters: { rope_type: "default", rope_theta: 1000000 },
    dtype: "bfloat16",
  });
  assert.equal(cfg.ropeTheta, 1000000);
  assert.equal(cfg.ropeScaling, null);
  assert.equal(cfg.torchDtype, "bfloat16");
  const scaled = parseConfig({
    ...QWEN3,
    rope_parameters: { rope_type: "linear", factor: 4, rope_theta: 5e5 },
  });
  assert.deepEqual([scaled.ropeTheta, scaled.ropeScaling], [5e5, { type: "linear", factor: 4 }]);
  roundTrips(scaled);
});

Deno.test("parseConfig reads a Llama 3.2 config with llama3 RoPE scaling and several EOS ids", () => {
  const cfg = parseConfig(LLAMA32);
  assert.equal(cfg.modelType, "llama");
  assert.deepEqual([cfg.numHeads, cfg.numKvHeads, cfg.headDim], [32, 8, 64]);
  assert.deepEqual(cfg.ropeScaling, {
    type: "llama3",
    factor: 32,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  assert.deepEqual([cfg.ropeTheta, cfg.rmsNormEps, cfg.tieWordEmbeddings], [500000, 1e-5, true]);
  assert.deepEqual([cfg.bosTokenIds, cfg.eosTokenIds], [[128000], [128001, 128008, 128009]]);
  assert.equal(cfg.torchDtype, "bfloat16");
  assert.deepEqual(cfg.extra.architectures, ["LlamaForCausalLM"]);
  assert.equal(cfg.isDms, false);
  roundTrips(cfg);
  const json = configToJson(cfg);
  assert.deepEqual(json.rope_scaling, LLAMA32.rope_scaling);
  assert.deepEqual(json.rope_parameters, { ...LLAMA32.rope_scaling, rope_theta: 500000 });
  assert.deepEqual(json.eos_token_id, LLAMA32.eos_token_id);
  // The legacy "type" key and "linear" scaling.
  const lin = parseConfig({ ...LLAMA32, rope_scaling: { type: "linear", factor: 2 } });
  assert.deepEqual(lin.ropeScaling, { type: "linear", factor: 2 });
});

Deno.test("parseConfig names the file, field, expectation and value in type errors", () => {
  const cases: [unknown, string][] = [
    [
      { ...QWEN3, num_key_value_heads: "x" },
      'config.json: field "num_key_value_heads": expected a positive integer, got "x"',
    ],
    [
      { ...QWEN3, hidden_size: undefined },
      'config.json: field "hidden_size": expected a positive integer, got nothing (missing)',
    ],
    [
      { ...QWEN3, num_hidden_layers: 1.5 },
      'config.json: field "num_hidden_layers": expected a positive integer, got 1.5',
    ],
    [
      { ...QWEN3, num_attention_heads: -4 },
      'config.json: field "num_attention_heads": expected a positive integer, got -4',
    ],
    [
      { ...QWEN3, model_type: "mistral" },
      'config.json: field "model_type": expected "qwen3" or "llama", got "mistral"',
    ],
    [
      { ...QWEN3, hidden_act: "gelu" },
      'config.json: field "hidden_act": expected "silu" (the only supported activation), got "gelu"',
    ],
    [
      { ...QWEN3, dms_alpha_per: "token" },
      'config.json: field "dms_alpha_per": expected "head" or "layer", got "token"',
    ],
    [
      { ...QWEN3, tie_word_embeddings: "yes" },
      'config.json: field "tie_word_embeddings": expected true or false, got "yes"',
    ],
    [
      { ...QWEN3, eos_token_id: "</s>" },
      'config.json: field "eos_token_id": expected a token id, an array of token ids or null, got "</s>"',
    ],
    [
      { ...QWEN3, rope_scaling: { rope_type: "yarn", factor: 4 } },
      'config.json: field "rope_scaling.rope_type": expected "default", "llama3" or "linear", got "yarn"',
    ],
    [
      { ...LLAMA32, rope_scaling: { ...LLAMA32.rope_scaling, low_freq_factor: undefined } },
      'config.json: field "rope_scaling.low_freq_factor": expected a positive number, got nothing (missing)',
    ],
    [
      { ...QWEN3, rope_parameters: { rope_theta: "big" } },
      'config.json: field "rope_parameters.rope_theta": expected a positive number, got "big"',
    ],
    [{ ...QWEN3, dms_tau: 0 }, 'config.json: field "dms_tau": expected a positive number, got 0'],
    [[1, 2], "config.json: expected a JSON object, got [1,2]"],
  ];
  for (const [json, message] of cases) {
    assert.throws(() => parseConfig(json), (e: Error) => {
      assert.ok(e instanceof TypeError, `${message}: got ${e.name}`);
      assert.equal(e.message, message);
      return true;
    });
  }
  // Several bad fields are all reported; the file name is the one given.
  assert.throws(
    () => parseConfig({ ...QWEN3, vocab_size: 0, intermediate_size: null }, "m/config.json"),
    (e: Error) =>
      e.message.includes('m/config.json: field "vocab_size"') &&
      e.message.includes('m/config.json: field "intermediate_size"'),
  );
});

Deno.test("parseConfig rejects inconsistent values with RangeErrors naming both", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { ...QWEN3, num_key_value_heads: 3 },
      /num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)/,
    ],
    [
      { ...QWEN3, hidden_size: 66 },
      /hidden_size \(66\) is not divisible by num_attention_heads \(4\)/,
    ],
    [{ ...QWEN3, head_dim: 15 }, /head_dim \(15\) must be even/],
    [{ ...QWEN3, dms_window_size: -1 }, /dms_window_size must be >= 0, got -1/],
    [
      { ...QWEN3, dms_window_size: 4, dms_paged_attention_block_size: 4 },
      /dms_window_size \(4\) must be greater than dms_paged_attention_block_size \(4\)/,
    ],
    [
      { ...QWEN3, dms_window_size: 128 },
      /dms_window_size \(128\) must be greater than dms_paged_attention_block_size \(256\)/,
    ],
    [{ ...QWEN3, use_sliding_window: true }, /sliding-window layers are not supported/],
  ];
  for (const [json, re] of cases) {
    assert.throws(
      () => parseConfig(json),
      (e: Error) => e instanceof RangeError && re.test(e.message),
    );
  }
  // head_dim given explicitly need not be hidden / heads (Qwen3-0.6B: 1024 / 16 heads, head_dim 128).
  assert.equal(parseConfig({ ...QWEN3, hidden_size: 66, head_dim: 32 }).headDim, 32);
  assert.equal(
    parseConfig({ ...QWEN3, dms_window_size: 5, dms_paged_attention_block_size: 4 }).dms.window,
    5,
  );
});

Deno.test("loadConfig reports a file that is not JSON as a SyntaxError naming it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dms_cfg_" });
  try {
    await Deno.writeTextFile(`${dir}/config.json`, "{ hidden_size: 1 }");
    await assert.rejects(
      loadConfig(dir),
      (e: Error) =>
        e instanceof SyntaxError && e.message.startsWith(`${dir}/config.json: not valid JSON`),
    );
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ ...QWEN3, num_hidden_layers: "2" }),
    );
    await assert.rejects(
      loadConfig(dir),
      new RegExp(`^TypeError: ${dir}/config.json: field "num_hidden_layers"`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("configToJson round-trips random valid configs, extra fields included", () => {
  const arb = fc.record({
    model_type: fc.constantFrom("qwen3", "llama"),
    kv: fc.integer({ min: 1, max: 8 }),
    group: fc.integer({ min: 1, max: 4 }),
    headDim: fc.integer({ min: 1, max: 64 }).map((x) => 2 * x),
    layers: fc.integer({ min: 1, max: 64 }),
    theta: fc.double({ min: 1, max: 1e7, noNaN: true }),
    eos: fc.oneof(fc.constant(null), fc.nat(), fc.array(fc.nat(), { maxLength: 3 })),
    tie: fc.boolean(),
    scaling: fc.oneof(
      fc.constant(null),
      fc.record({
        rope_type: fc.constant("linear"),
        factor: fc.double({ min: 1, max: 64, noNaN: true }),
      }),
    ),
    dms: fc.option(
      fc.record({
        dms_window_size: fc.integer({ min: 2, max: 4096 }),
        dms_alpha_per: fc.constantFrom("head", "layer"),
        dms_separate_alpha: fc.boolean(),
        dms_cr: fc.option(fc.integer({ min: 1, max: 32 })),
        dms_paged_attention_block_size: fc.constant(1),
      }),
    ),
    extra: fc.dictionary(fc.stringMatching(/^x_[a-z]{1,6}$/), fc.jsonValue()),
  });
  fc.assert(
    fc.property(arb, (a) => {
      const json = {
        ...a.extra,
        model_type: a.model_type,
        hidden_size: 64,
        num_hidden_layers: a.layers,
        num_attention_heads: a.kv * a.group,
        num_key_value_heads: a.kv,
        head_dim: a.headDim,
        intermediate_size: 96,
        vocab_size: 1000,
        max_position_embeddings: 4096,
        rope_theta: a.theta,
        rope_scaling: a.scaling,
        eos_token_id: a.eos,
        tie_word_embeddings: a.tie,
        ...a.dms,
      };
      const cfg = parseConfig(JSON.parse(JSON.stringify(json))); // as read from a file
      assert.equal(cfg.isDms, a.dms !== null);
      assert.deepEqual(cfg.extra, JSON.parse(JSON.stringify(a.extra)));
      roundTrips(cfg);
    }),
    { numRuns: RUNS > 0 ? RUNS : 100 },
  );
});
