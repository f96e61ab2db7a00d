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
import { scriptArgs } from "../src/cli/script_args.ts";

const USAGE = `usage: deno run -A examples/generate.ts [flags]

  --model DIR        a Hugging Face model folder (config.json, *.safetensors, tokenizer.json);
                     default: a tiny random Qwen3, prompted with token ids
  --hub OWNER/NAME   download the model from the Hub first (then as --model)
  --prompt TEXT      the user message, through the chat template (default: a question)
  --no-think         the chat template without a thinking block
  --max-tokens N     tokens to generate (default 32)
  --temperature X    0: greedy (default 0)
  --top-k N          0: off (default 0)
  --top-p X          in (0, 1] (default 1)
  --seed N           the sampler's seed (default 0)
  --cache dense|dms  the KV cache (default: DMS when the model has DMS fields, else dense)`;

const args = scriptArgs("generate", USAGE, {
  model: { type: "string" },
  hub: { type: "string" },
  prompt: { type: "string" },
  "max-tokens": { type: "string" },
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  seed: { type: "string" },
  cache: { type: "string" },
  "no-think": { type: "boolean" },
});
const maxTokens = args.int("max-tokens", 32, 1);
const sampling = {
  temperature: args.num("temperature", 0),
  topK: args.int("top-k", 0),
  topP: args.num("top-p", 1),
  seed: args.int("seed", 0),
};
if (!(sampling.topP > 0 && sampling.topP <= 1)) {
  args.fail(`--top-p must be in (0, 1], got "${args.str("top-p")}"`);
}
const cache = args.oneOf("cache", ["dense", "dms"] as const);
const userPrompt = args.str("prompt") ?? "Explain the KV cache in one sentence.";

/** Prints `generate: <message>` (the loaders name the file and the field) and exits 1. */
function die(e: unknown): never {
  console.error(`generate: ${(e as Error).message ?? e}`);
  Deno.exit(1);
}

const gpu = await getGpu();
let folder = args.str("model");
const hub = args.str("hub");
if (hub) {
  folder = await downloadModel(hub, {
    onProgress: (f) => console.error(`downloading ${f}`),
  }).catch(die);
}

let model, tok: Tokenizer | undefined, prompt: number[];
if (folder) {
  model = await loadModel(gpu, folder).catch(die);
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
      tok.applyChatTemplate([{ role: "user", content: userPrompt }], {
        enableThinking: !args.flag("no-think"),
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
const gen = generate(model, [prompt], {
  maxTokens,
  cache,
  eosTokenIds: [...new Set([...cfg.eosTokenIds, ...(tok?.eosTokenIds ?? [])])],
  sampling,
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
