/**
 * Text in, streamed text out: the one-call helper of a script author, in the spirit of
 * transformers.js pipelines — a model folder or hub id and a prompt give a stream of text
 * pieces and, at the end, the tokens and the cache's accounting.
 *
 * - {@linkcode textGeneration}: loads the model and its tokenizer (a folder, or `owner/name`
 *   downloaded through `downloadModel`), applies the chat template, generates through the DMS
 *   cache (or dense), streams decoded text, and resolves `result` with the text, the tokens, the
 *   {@linkcode KvCacheStats}, timings and optionally the compression trace (one point per
 *   streamed chunk, for `compressionSvg`) and the eviction map (for `evictionMapSvg`).
 * - {@linkcode TextStreamDecoder}: incremental detokenization. A character may span several
 *   tokens (byte-level BPE splits emoji and CJK into byte pieces): decoding each token alone
 *   yields U+FFFD halves. The decoder holds text back while it ends in an incomplete character
 *   and re-decodes a short window of tokens for context (vLLM's prefix/read offsets), so the
 *   concatenated pieces equal decoding all tokens at once.
 *
 * @example Stream an answer, then read the accounting
 * ```ts ignore
 * import { textGeneration } from "@hyperscale/dms";
 * const run = textGeneration("nvidia/Qwen3-8B-DMS-8x", "Why is the sky blue?", { maxTokens: 64 });
 * for await (const piece of run) await Deno.stdout.write(new TextEncoder().encode(piece));
 * const { stats, tokensPerSecond } = await run.result;
 * console.log(`\n${tokensPerSecond.toFixed(1)} tok/s, compression ${stats.compressionRatio.toFixed(2)}`);
 * ```
 *
 * @module
 */

import { type CachePolicyName, createCacheFor, generate } from "./generate.ts";
import { PagedKvCache } from "./cache/paged_kv_cache.ts";
import type { KvCacheStats } from "./cache/kv_cache.ts";
import { getGpu } from "./gpu/device.ts";
import { downloadModel, type DownloadOptions } from "./io/hub.ts";
import {
  type ChatMessage,
  checkTokenizerMatchesConfig,
  loadTokenizer,
  type Tokenizer,
} from "./io/tokenizer.ts";
import { loadModel, type ModelOptions } from "./model/model.ts";
import type { Transformer } from "./model/transformer.ts";
import type { SampleOptions } from "./ops/sample.ts";
import { type CompressionPoint, type EvictionMap, readEvictionMap } from "./plot/data.ts";

const REPLACEMENT = "\uFFFD";

/**
 * Turns a stream of token ids into a stream of text that never splits a character.
 *
 * @example
 * ```ts ignore
 * const dec = new TextStreamDecoder(tokenizer, { skipSpecialTokens: true });
 * let text = "";
 * for (const id of ids) text += dec.push([id]);
 * text += dec.flush(); // === tokenizer.decode(ids, { skipSpecialTokens: true })
 * ```
 */
export class TextStreamDecoder {
  readonly #tok: Pick<Tokenizer, "decode">;
  readonly #skip: boolean;
  readonly #ids: number[] = [];
  #prefix = 0; // tokens before this index are done; [prefix, read) is the context window
  #read = 0; // tokens before this index have been emitted as text

  /**
   * Creates a decoder with nothing pushed yet.
   *
   * @param tokenizer Anything with the tokenizer's `decode`.
   * @param options `skipSpecialTokens` (default true): drop `<|im_end|>` and the like.
   */
  constructor(tokenizer: Pick<Tokenizer, "decode">, options: { skipSpecialTokens?: boolean } = {}) {
    this.#tok = tokenizer;
    this.#skip = options.skipSpecialTokens ?? true;
  }

  /** Every id pushed so far. */
  get ids(): readonly number[] {
    return this.#ids;
  }

  /**
   * Adds token ids; returns the text they complete ("" while the text so far ends inside a
   * character).
   */
  push(ids: readonly number[]): string {
    this.#ids.push(...ids);
    const done = this.#decode(this.#prefix, this.#read);
    const all = this.#decode(this.#prefix, this.#ids.length);
    if (all.length <= done.length || all.endsWith(REPLACEMENT)) return "";
    this.#prefix = this.#read;
    this.#read = this.#ids.length;
    return all.slice(done.length);
  }

  /** Returns the text still held back at the end (an incomplete character decodes as U+FFFD). */
  flush(): string {
    const done = this.#decode(this.#prefix, this.#read);
    const all = this.#decode(this.#prefix, this.#ids.length);
    this.#prefix = this.#read;
    this.#read = this.#ids.length;
    return all.slice(done.length);
  }

  #decode(from: number, to: number): string {
    return from >= to ? "" : this.#tok.decode(this.#ids.slice(from, to), {
      skipSpecialTokens: this.#skip,
    });
  }
}

/** A model and its tokenizer, loaded once and reused across calls. */
export interface LoadedTextModel {
  /** The model (its config's `eos_token_id` ends generation, with the tokenizer's). */
  model: Transformer;
  /** Its tokenizer. */
  tokenizer: Tokenizer;
}

/** Options of {@linkcode textGeneration}. */
export interface TextGenerationOptions {
  /** New tokens at most (default 128). */
  maxTokens?: number;
  /** KV cache policy (default "dms" for a DMS checkpoint, else "dense"). */
  policy?: CachePolicyName;
  /** Sampling (default greedy). */
  sampling?: SampleOptions;
  /** Render a string prompt with the chat template as one user turn (default true). */
  chat?: boolean;
  /** Qwen3 thinking mode in the chat template (default false). */
  enableThinking?: boolean;
  /** Decode tokens per streamed chunk (default 4). */
  readbackEvery?: number;
  /** Record a {@linkcode CompressionPoint} after every chunk (one extra readback each). */
  trace?: boolean;
  /** Read the eviction map back at the end (one readback per layer). */
  evictionMap?: boolean;
  /** Hub download options when the source is a hub id. */
  download?: DownloadOptions;
  /** Model loading options (dtype). */
  model?: ModelOptions;
}

/** What a {@linkcode textGeneration} run resolves with. */
export interface TextGenerationResult {
  /** The generated text (special tokens skipped). */
  text: string;
  /** The generated token ids (up to and including EOS). */
  tokens: number[];
  /** Prompt length in tokens. */
  promptTokens: number;
  /** The cache policy used. */
  policy: CachePolicyName;
  /** The cache's accounting after the last step. */
  stats: KvCacheStats;
  /** One point per streamed chunk when `trace` was set, else empty. */
  trace: CompressionPoint[];
  /** The eviction map when `evictionMap` was set. */
  evictionMap?: EvictionMap;
  /** The model folder, when the helper loaded it. */
  folder?: string;
  /** Seconds spent loading (0 for a {@linkcode LoadedTextModel}) and generating. */
  seconds: { load: number; generate: number };
  /** Generated tokens per second of generation (prefill included). */
  tokensPerSecond: number;
}

/**
 * A running generation: iterate it once for the text pieces; `result` resolves at the end
 * (awaiting it without iterating runs the generation to the end, discarding the pieces).
 */
export class TextGeneration implements AsyncIterable<string> {
  readonly #gen: AsyncGenerator<string, TextGenerationResult>;
  readonly #result: Promise<TextGenerationResult>;
  #resolve!: (r: TextGenerationResult) => void;
  #reject!: (e: unknown) => void;
  #started = false;

  /** Prefer {@linkcode textGeneration}. */
  constructor(gen: AsyncGenerator<string, TextGenerationResult>) {
    this.#gen = gen;
    this.#result = new Promise((res, rej) => {
      this.#resolve = res;
      this.#reject = rej;
    });
    this.#result.catch(() => {}); // the error also reaches the iteration; no unhandled rejection
  }

  /** The text, tokens and accounting, once the generation has finished. */
  get result(): Promise<TextGenerationResult> {
    if (!this.#started) this.#drain();
    return this.#result;
  }

  /** Streams the generated text, piece by piece. */
  async *[Symbol.asyncIterator](): AsyncGenerator<string, void> {
    if (this.#started) throw new Error("textGeneration: a run can be iterated only once");
    this.#started = true;
    let finished = false;
    try {
      while (true) {
        const r = await this.#gen.next();
        if (r.done) {
          finished = true;
          this.#resolve(r.value);
          return;
        }
        yield r.value;
      }
    } catch (e) {
      finished = true;
      this.#reject(e);
      throw e;
    } finally {
      if (!finished) {
        this.#reject(new Error("textGeneration: the stream was stopped before the end"));
        await this.#gen.return(undefined as never); // frees the cache (and the model it loaded)
      }
    }
  }

  async #drain(): Promise<void> {
    try {
      for await (const _ of this) { /* discard the pieces */ }
    } catch { /* already delivered to `result` */ }
  }
}

/**
 * Generates text from a prompt with one call: `source` is a model folder, a hub id
 * (`owner/name`, downloaded or found in the local cache) or an already loaded model and
 * tokenizer. Iterate the returned run for the text pieces; `await run.result` for the text,
 * tokens, accounting and timings. A model the helper loads is freed at the end.
 *
 * @param source Model folder, hub id or {@linkcode LoadedTextModel}.
 * @param prompt A user message (rendered with the chat template unless `chat: false`), a
 *   conversation, or token ids.
 * @throws {TypeError} (through the iteration or `result`) For a source that is neither a folder
 *   nor a hub id, or a folder without a usable tokenizer (naming the folder).
 *
 * @example
 * ```ts ignore
 * import { textGeneration } from "@hyperscale/dms";
 * const run = textGeneration("./Qwen3-0.6B", "Name three colours.", { maxTokens: 32, policy: "dense" });
 * for await (const piece of run) console.log(piece);
 * console.log((await run.result).stats.liveTokens);
 * ```
 */
export function textGeneration(
  source: string | LoadedTextModel,
  prompt: string | readonly ChatMessage[] | readonly number[],
  options: TextGenerationOptions = {},
): TextGeneration {
  return new TextGeneration(run(source, prompt, options));
}

/** A folder as it is, a hub id downloaded (or found in the cache); anything else an error. */
async function resolveFolder(source: string, download?: DownloadOptions): Promise<string> {
  try {
    if ((await Deno.stat(source)).isDirectory) return source;
    throw new TypeError(`textGeneration: ${source} is a file, not a model folder`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (!/^[\w.-]+\/[\w.-]+$/.test(source)) {
    throw new TypeError(
      `textGeneration: "${source}" is neither a model folder nor a hub id (owner/name)`,
    );
  }
  return await downloadModel(source, download);
}

async function* run(
  source: string | LoadedTextModel,
  prompt: string | readonly ChatMessage[] | readonly number[],
  o: TextGenerationOptions,
): AsyncGenerator<string, TextGenerationResult> {
  const t0 = performance.now();
  let model: Transformer, tokenizer: Tokenizer, folder: string | undefined;
  if (typeof source === "string") {
    folder = await resolveFolder(source, o.download);
    model = await loadModel(await getGpu(), folder, o.model);
    try {
      tokenizer = await loadTokenizer(folder);
      checkTokenizerMatchesConfig(tokenizer, model.config, `${folder}/config.json`);
    } catch (e) {
      model.dispose();
      throw new TypeError(
        `textGeneration: ${folder} has no usable tokenizer: ${(e as Error).message}`,
        { cause: e },
      );
    }
  } else ({ model, tokenizer } = source);
  const t1 = performance.now();
  try {
    const messages: readonly ChatMessage[] | undefined = typeof prompt === "string"
      ? (o.chat ?? true) ? [{ role: "user", content: prompt }] : undefined
      : prompt.length && typeof prompt[0] === "object"
      ? prompt as readonly ChatMessage[]
      : undefined;
    const ids = messages
      ? tokenizer.encode(
        tokenizer.applyChatTemplate(messages, { enableThinking: o.enableThinking ?? false }),
      )
      : typeof prompt === "string"
      ? tokenizer.encode(prompt)
      : [...prompt as readonly number[]];
    const policy = o.policy ?? (model.config.isDms ? "dms" : "dense");
    using cache = createCacheFor(model, 1, policy);
    const decoder = new TextStreamDecoder(tokenizer);
    const eos = [...new Set([...model.config.eosTokenIds, ...tokenizer.eosTokenIds])];
    const trace: CompressionPoint[] = [];
    const tokens: number[] = [];
    let stats: KvCacheStats | undefined, text = "";
    for await (
      const chunk of generate(model, [ids], {
        maxTokens: o.maxTokens ?? 128,
        cache,
        eosTokenIds: eos,
        sampling: o.sampling,
        readbackEvery: o.readbackEvery ?? 4,
      })
    ) {
      tokens.push(...chunk.tokens[0]);
      stats = chunk.stats ?? stats;
      if (o.trace) {
        const s = chunk.cacheStats;
        trace.push({
          policy,
          tokensSeen: s.tokensSeen,
          liveTokens: s.liveTokens,
          compressionRatio: s.compressionRatio,
        });
      }
      const piece = decoder.push(chunk.tokens[0]);
      text += piece;
      if (piece) yield piece;
    }
    const tail = decoder.flush();
    text += tail;
    if (tail) yield tail;
    stats ??= await cache.stats();
    const evictionMap = o.evictionMap && cache instanceof PagedKvCache
      ? await readEvictionMap(cache)
      : undefined;
    const secs = (performance.now() - t1) / 1000;
    return {
      text,
      tokens,
      promptTokens: ids.length,
      policy,
      stats,
      trace,
      evictionMap,
      folder,
      seconds: { load: folder === undefined ? 0 : (t1 - t0) / 1000, generate: secs },
      tokensPerSecond: tokens.length / Math.max(secs, 1e-9),
    };
  } finally {
    if (folder !== undefined) model.dispose();
  }
}
