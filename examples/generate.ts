/**
 * Streams generated tokens from a model: a tiny random one by default, or a
 * Hugging Face folder (`--model path/to/folder`, or `--hub owner/name` to
 * download it first) with its tokenizer and chat template.
 *
 *   deno run -A examples/generate.ts                       # tiny random Qwen3, token ids
 *   deno run -A examples/generate.ts --model ./Qwen3-0.6B --prompt "What is 2+2?"
 *   deno run -A examples/generate.ts --hub nvidia/Qwen3-8B-DMS-8x --cache dms
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  createModel,
  generate,
  getGpu,
  loadModel,
  loadTokenizer,
  parseConfig,
} from "@hyperscale/dms";
import { checkTokenizerMatchesConfig, type Tokenizer } from "../src/io/tokenizer.ts";
import { downloadModel } from "../src/io/hub.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    hub: { type: "string" },
    prompt: { type: "string", default: "Explain the KV cache in one sentence." },
    "max-tokens": { type: "string", default: "32" },
    temperature: { type: "string", default: "0" },
    "top-k": { type: "string", default: "0" },
    "top-p": { type: "string", default: "1" },
    seed: { type: "string", default: "0" },
    cache: { type: "string" },
    "no-think": { type: "boolean", default: false },
  },
});

const gpu = await getGpu();
let folder = values.model;
if (values.hub) {
  folder = await downloadModel(values.hub, {
    onProgress: (f) => console.error(`downloading ${f}`),
  });
}

let model, tok: Tokenizer | undefined, prompt: number[];
if (folder) {
  model = await loadModel(gpu, folder);
  try {
    tok = await loadTokenizer(folder);
    checkTokenizerMatchesConfig(tok, model.config, `${folder}/config.json`);
  } catch (e) {
    console.error(
      `no usable tokenizer in ${folder} (${(e as Error).message}); prompting with token ids`,
    );
  }
  prompt = tok
    ? tok.encode(
      tok.applyChatTemplate([{ role: "user", content: values.prompt }], {
        enableThinking: !values["no-think"],
      }),
    )
    : [1, 2, 3];
} else {
  const config = parseConfig({
    model_type: "qwen3",
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    intermediate_size: 128,
    vocab_size: 256,
    max_position_embeddings: 1024,
    dms_window_size: 8,
    dms_paged_attention_block_size: 4,
  }, "tiny random model");
  model = createModel(gpu, config, { seed: 1 });
  prompt = [1, 17, 42, 99, 7];
}

const cfg = model.config;
console.error(
  `${folder ?? "tiny random qwen3"}: ${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, ` +
    `${cfg.numHeads}/${cfg.numKvHeads} heads, dtype ${model.dtype}, device ${gpu.description}`,
);
const cache = values.cache === "dms" || values.cache === "dense" ? values.cache : undefined;
const gen = generate(model, [prompt], {
  maxTokens: Number(values["max-tokens"]),
  cache,
  eosTokenIds: [...new Set([...cfg.eosTokenIds, ...(tok?.eosTokenIds ?? [])])],
  sampling: {
    temperature: Number(values.temperature),
    topK: Number(values["top-k"]),
    topP: Number(values["top-p"]),
    seed: Number(values.seed),
  },
});
const enc = new TextEncoder();
const t0 = performance.now();
let n = 0, printed = "";
const all: number[] = [];
while (true) {
  const r = await gen.next();
  if (r.done) {
    const s = r.value.stats;
    const secs = (performance.now() - t0) / 1000;
    console.error(
      `\n${n} tokens in ${
        secs.toFixed(2)
      } s; KV tokens live ${s.liveTokens}, peak ${s.peakTokens}, ` +
        `read ${s.readTokens}; compression ratio ${s.compressionRatio.toFixed(2)} (get_cr), ` +
        `${s.compressionRatioDenseOverKept.toFixed(2)} (dense/kept)`,
    );
    break;
  }
  const toks = r.value.tokens[0];
  n += toks.length;
  all.push(...toks);
  if (tok) {
    // decode everything so far and print the new suffix (multi-byte characters may span chunks)
    const text = tok.decode(all, { skipSpecialTokens: true });
    await Deno.stdout.write(enc.encode(text.slice(printed.length)));
    printed = text;
  } else await Deno.stdout.write(enc.encode(toks.join(" ") + " "));
}
model.dispose();
