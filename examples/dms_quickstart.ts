/**
 * DMS in one screen: the same tiny model generates with the dense KV cache
 * and with the DMS cache (delayed eviction, window W), side by side; then the
 * per-head cache lengths, KV reads and compression ratios are printed.
 *
 *   deno run -A examples/dms_quickstart.ts [--tokens 96] [--window 16]
 *
 * The model is random, so its eviction decisions are random too (about half
 * of the decision logits are positive): what matters here is the mechanism.
 * A retrofitted checkpoint (e.g. nvidia/Qwen3-8B-DMS-8x) loads the same way
 * through `loadModel`.
 *
 * @module
 */

import {
  createCacheFor,
  createModel,
  generate,
  type GenerateResult,
  getGpu,
  parseConfig,
} from "@hyperscale/dms";
import { scriptArgs } from "../src/cli/script_args.ts";

const args = scriptArgs(
  "dms_quickstart",
  `usage: deno run -A examples/dms_quickstart.ts [flags]

  --tokens N   new tokens to generate (default 96, at most 4088)
  --window N   the DMS window W: a token marked for eviction stays W more steps (default 16,
               at least 2: it must exceed the cache's block size, min(8, W - 1))
  --seed N     the random model's seed (default 7)`,
  { tokens: { type: "string" }, window: { type: "string" }, seed: { type: "string" } },
);
const N = args.int("tokens", 96, 1, 4088), W = args.int("window", 16, 2, 4096);
const seed = args.int("seed", 7);
const gpu = await getGpu();
const config = parseConfig({
  model_type: "qwen3",
  hidden_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  intermediate_size: 128,
  vocab_size: 256,
  max_position_embeddings: 4096,
  dms_window_size: W,
  dms_paged_attention_block_size: Math.max(1, Math.min(8, W - 1)),
  dms_alpha_scale: 100,
  dms_initial_alpha_offset: 0,
}, "quickstart config");
const model = createModel(gpu, config, { seed });
const prompt = [1, 17, 42, 99, 7, 3, 64, 200];

async function run(policy: "dense" | "dms"): Promise<GenerateResult> {
  const cache = createCacheFor(model, 1, policy);
  try {
    const gen = generate(model, [prompt], { maxTokens: N, cache, eosTokenIds: [] });
    while (true) {
      const r = await gen.next();
      if (r.done) return r.value;
    }
  } finally {
    cache.dispose();
  }
}

const dense = await run("dense");
const dms = await run("dms");
console.log(`device: ${gpu.description}`);
console.log(
  `model: 2 layers, 2 KV heads, window W = ${W} (a marked token stays visible for ${W} more steps)\n`,
);
console.log(`dense: ${dense.tokens[0].slice(0, 16).join(" ")} ...`);
console.log(`dms:   ${dms.tokens[0].slice(0, 16).join(" ")} ...\n`);
const T = dense.stats.tokensSeen;
console.log(`after ${T} tokens, live KV entries per (layer, head):`);
console.log(
  "               " + dms.stats.lengths[0].map((_, h) => `head ${h}`.padStart(8)).join(""),
);
for (let l = 0; l < config.numLayers; l++) {
  console.log(
    `  dense layer ${l}` + dense.stats.lengths[l].map((x) => String(x).padStart(8)).join(""),
  );
  console.log(
    `  dms   layer ${l}` + dms.stats.lengths[l].map((x) => String(x).padStart(8)).join(""),
  );
}
const row = (name: string, a: number | string, b: number | string) =>
  console.log(`${name.padEnd(34)}${String(a).padStart(10)}${String(b).padStart(10)}`);
console.log("");
row("", "dense", "dms");
row("KV entries read while decoding", dense.stats.readTokens, dms.stats.readTokens);
row("peak KV entries", dense.stats.peakTokens, dms.stats.peakTokens);
row("peak KV bytes", dense.stats.peakBytes, dms.stats.peakBytes);
row(
  "compression ratio (get_cr)",
  dense.stats.compressionRatio.toFixed(2),
  dms.stats.compressionRatio.toFixed(2),
);
row(
  "compression ratio (dense/kept)",
  dense.stats.compressionRatioDenseOverKept.toFixed(2),
  dms.stats.compressionRatioDenseOverKept.toFixed(2),
);
model.dispose();
