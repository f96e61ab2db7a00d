/**
 * `dms generate`: text (or token ids) in, streamed text out, through the DMS cache or any other
 * policy `generate()` knows by name; `--json` prints the tokens, the text and the cache's
 * accounting (compression, KV reads, peak) instead, with the compression trace and, on request,
 * the eviction map (inputs of `dms plot`).
 *
 * @module
 */

import { PagedKvCache } from "../cache/paged_kv_cache.ts";
import type { KvCacheStats } from "../cache/kv_cache.ts";
import { CACHE_POLICY_NAMES, type CachePolicyName, createCacheFor, generate } from "../generate.ts";
import { getGpu } from "../gpu/device.ts";
import { loadModel } from "../model/model.ts";
import { type CompressionPoint, type EvictionMap, readEvictionMap } from "../plot/data.ts";
import { TextStreamDecoder } from "../text.ts";
import { type Command, int, num, oneOf, parse, str, UsageError, write } from "./_command.ts";
import {
  checkSource,
  optionalTokenizer,
  parseIds,
  resolveFolder,
  SOURCE_FLAGS,
  SOURCE_USAGE,
} from "./_model.ts";

const USAGE = `usage: dms generate MODEL|--hub OWNER/NAME (--prompt TEXT | --ids 1,2,3) [options]

Generates a continuation, streaming the text (or, without a tokenizer, the token ids).

${SOURCE_USAGE}
  --prompt TEXT       a user message, rendered with the chat template (needs tokenizer.json)
  --raw               encode --prompt as it is, without the chat template
  --ids 1,2,3         the prompt as token ids
  --policy NAME       KV cache: ${
  CACHE_POLICY_NAMES.join(", ")
} (default dms for a DMS checkpoint, else dense)
  --max-tokens N      new tokens at most (default 64)
  --temperature T     0 = greedy (default 0)
  --top-k K           keep the K most likely tokens (0 = off, default)
  --top-p P           nucleus sampling mass in (0, 1] (1 = off, default)
  --seed S            sampling seed (default 0)
  --json              print {tokens, text, stats, trace} as JSON instead of streaming
  --eviction-map      with --json: add the eviction map of the run (for dms plot eviction-map)
  --debug             stack traces on failures`;

/** What `--json` prints. */
export interface GenerateJson {
  /** The model folder. */
  folder: string;
  /** The cache policy. */
  policy: CachePolicyName;
  /** Prompt token ids. */
  prompt: number[];
  /** Generated token ids (up to and including EOS). */
  tokens: number[];
  /** Their text (special tokens skipped), or null without a tokenizer. */
  text: string | null;
  /** The accounting: compression both ways, KV reads, peaks. */
  stats: {
    compressionRatio: number;
    compressionRatioDenseOverKept: number;
    kvReads: number;
    decodeSteps: number;
    liveTokens: number;
    peakTokens: number;
    peakBytes: number;
  };
  /** Compression after each streamed chunk. */
  trace: CompressionPoint[];
  /** Per layer and KV head, the state of every position (`--eviction-map`). */
  evictionMap?: EvictionMap;
  /** Generation wall time in seconds, prefill included. */
  seconds: number;
}

async function run(args: string[]): Promise<number> {
  const p = parse(args, {
    ...SOURCE_FLAGS,
    prompt: { type: "string" },
    raw: { type: "boolean" },
    ids: { type: "string" },
    policy: { type: "string" },
    "max-tokens": { type: "string" },
    temperature: { type: "string" },
    "top-k": { type: "string" },
    "top-p": { type: "string" },
    seed: { type: "string" },
    json: { type: "boolean" },
    "eviction-map": { type: "boolean" },
  }, 1);
  const src = checkSource(p);
  const prompt = str(p, "prompt"), idsText = str(p, "ids");
  if ((prompt === undefined) === (idsText === undefined)) {
    throw new UsageError("give exactly one of --prompt TEXT and --ids 1,2,3");
  }
  const ids = idsText === undefined ? undefined : parseIds(idsText);
  const policyFlag = oneOf(p, "policy", CACHE_POLICY_NAMES, undefined);
  const maxTokens = int(p, "max-tokens", 64, 1);
  const sampling = {
    temperature: num(p, "temperature", 0, 0),
    topK: int(p, "top-k", 0, 0),
    topP: num(p, "top-p", 1, Number.MIN_VALUE, 1),
    seed: int(p, "seed", 0, 0, 2 ** 32 - 1),
  };
  const json = p.values.json === true;
  if (p.values["eviction-map"] && !json) throw new UsageError("--eviction-map needs --json");

  const folder = await resolveFolder(src);
  const model = await loadModel(await getGpu(), folder);
  try {
    const tokenizer = await optionalTokenizer(folder, model.config);
    if (prompt !== undefined && !tokenizer) {
      throw new Error(
        `${folder}/tokenizer.json: missing, so --prompt cannot be encoded (use --ids)`,
      );
    }
    const promptIds = ids ?? tokenizer!.encode(
      p.values.raw ? prompt! : tokenizer!.applyChatTemplate([{ role: "user", content: prompt! }], {
        enableThinking: false,
      }),
    );
    const V = model.config.vocabSize;
    const bad = promptIds.findIndex((t) => t >= V);
    if (bad >= 0) {
      throw new RangeError(
        `--ids: token ${promptIds[bad]} is outside the vocabulary of ${folder}/config.json ` +
          `(vocab_size ${V})`,
      );
    }
    const policy = policyFlag ?? (model.config.isDms ? "dms" : "dense");
    using cache = createCacheFor(model, 1, policy);
    const eos = [...new Set([...model.config.eosTokenIds, ...(tokenizer?.eosTokenIds ?? [])])];
    const decoder = tokenizer ? new TextStreamDecoder(tokenizer) : null;
    const tokens: number[] = [], trace: CompressionPoint[] = [];
    let stats: KvCacheStats | undefined;
    const t0 = performance.now();
    for await (
      const chunk of generate(model, [promptIds], {
        maxTokens,
        cache,
        sampling,
        eosTokenIds: eos,
        readbackEvery: 8,
      })
    ) {
      const ts = chunk.tokens[0];
      tokens.push(...ts);
      stats = chunk.stats ?? stats;
      if (json) {
        const s = chunk.cacheStats;
        trace.push({
          policy,
          tokensSeen: s.tokensSeen,
          liveTokens: s.liveTokens,
          compressionRatio: s.compressionRatio,
        });
      } else if (decoder) await write(decoder.push(ts));
      else if (ts.length) await write(ts.join(" ") + " ");
    }
    const seconds = (performance.now() - t0) / 1000;
    stats ??= await cache.stats();
    if (!json) {
      await write((decoder ? decoder.flush() : "") + "\n");
      console.error(
        `${tokens.length} tokens in ${seconds.toFixed(2)} s, policy ${policy}: compression ` +
          `${stats.compressionRatio.toFixed(2)}, KV reads ${stats.readTokens}, peak KV ` +
          `${stats.peakTokens} entries`,
      );
      return 0;
    }
    const out: GenerateJson = {
      folder,
      policy,
      prompt: promptIds,
      tokens,
      text: tokenizer ? tokenizer.decode(tokens, { skipSpecialTokens: true }) : null,
      stats: {
        compressionRatio: stats.compressionRatio,
        compressionRatioDenseOverKept: stats.compressionRatioDenseOverKept,
        kvReads: stats.readTokens,
        decodeSteps: stats.decodeSteps,
        liveTokens: stats.liveTokens,
        peakTokens: stats.peakTokens,
        peakBytes: stats.peakBytes,
      },
      trace,
      seconds,
    };
    if (p.values["eviction-map"] && cache instanceof PagedKvCache) {
      out.evictionMap = await readEvictionMap(cache);
    }
    await write(JSON.stringify(out) + "\n");
    return 0;
  } finally {
    model.dispose();
  }
}

/** `dms generate`. */
export const generateCommand: Command = {
  name: "generate",
  summary: "generate text or tokens through the DMS (or another) KV cache",
  usage: USAGE,
  run,
};
