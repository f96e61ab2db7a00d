/**
 * Generation: prefill then decode, with the whole loop on the GPU. Sampling
 * runs on the GPU and writes the next token straight into the next step's
 * input buffer and into a token log; the CPU reads the log back every
 * `readbackEvery` tokens (Deno pays ~11 ms per readback; the cache's lengths and counters come
 * back in the same readback: `KvCache.reserveAndRead`), checks EOS, and
 * streams tokens out as an async iterator. A batch of independent sequences
 * (left-padded prompts) decodes together.
 *
 * The KV cache decides what attention sees: {@linkcode createCacheFor} builds
 * the DMS cache from the model's `dms_*` config, or the dense cache (same
 * paged storage, nothing evicted). Accounting (KV reads, peak KV tokens,
 * compression ratio) comes from the cache with every chunk (`cacheStats`) and at the end.
 *
 * Multi-turn: pass the same cache object to the next `generate` call and it
 * continues where the last one stopped (prefill → decode → prefill → decode,
 * each prompt prefilled in one chunked pass: no one-token fallback as in the
 * reference, SPEC §5.3). The last sampled token of a turn is not in the cache
 * yet, so the next turn's prompt starts with it. Within one cache every
 * sequence of a batch must have the same length from the second turn on (only
 * left padding of the first prompt is supported, SPEC §9.8).
 *
 * @example Stream tokens from a tiny random model; the last chunk carries the accounting
 * ```ts ignore
 * for await (const step of generate(model, [[1, 2, 3]], { maxTokens: 16 })) {
 *   console.log(step.tokens[0]);
 *   if (step.stats) console.log(step.stats.compressionRatio, step.stats.readTokens);
 * }
 * ```
 *
 * @module
 */

import { Tensor } from "./tensor/tensor.ts";
import type { Transformer } from "./model/transformer.ts";
import type { KvCache, KvCacheStats } from "./cache/kv_cache.ts";
import type { PagedKvCache } from "./cache/paged_kv_cache.ts";
import { createDmsCache } from "./dms/dms_cache.ts";
import { createDenseCache } from "./policies/dense.ts";
import { createStreamingLlmCache } from "./policies/streaming_llm.ts";
import { createH2oCache } from "./policies/h2o.ts";
import { createTovaCache } from "./policies/tova.ts";
import { createQuestCache } from "./policies/quest.ts";
import { sample, type SampleOptions } from "./ops/sample.ts";
import type { Gpu } from "./gpu/device.ts";
import { sameDelta, type StepTrace, type TraceDelta, traceDelta } from "./gpu/step_trace.ts";

/** Every cache policy name {@linkcode createCacheFor} knows (the CLI's `--policy` choices). */
export const CACHE_POLICY_NAMES: readonly ["dms", "dense", "streaming", "h2o", "tova", "quest"] = [
  "dms",
  "dense",
  "streaming",
  "h2o",
  "tova",
  "quest",
] as const;

/**
 * Which cache policy to generate with (the policies: `CachePolicy` in src/cache/policy.ts): DMS,
 * dense, and the training-free baselines of src/policies/ (StreamingLLM, H2O, TOVA, Quest).
 */
export type CachePolicyName = typeof CACHE_POLICY_NAMES[number];

/**
 * Options of the baseline policies in {@linkcode createCacheFor} (each ignores the fields it does
 * not use). Budgets are KV entries per page (one sequence, KV head and layer).
 */
export interface CachePolicyOptions {
  /**
   * streaming, h2o, tova: entries per page at most (default 256, or sinks + recent for streaming
   * when only recent is given); quest: topK = max(1, floor(budget / chunk)) when topK is absent.
   */
  budget?: number;
  /** streaming: attention sinks (default 4). */
  sinks?: number;
  /** streaming: recent window (budget = sinks + recent); h2o: recent window (default budget / 2, floored). */
  recent?: number;
  /** quest: keys per chunk (default 16). */
  chunk?: number;
  /** quest: chunks attended per query besides the current one (default 8, or from budget). */
  topK?: number;
  /**
   * Every policy: tokens per page the pool is first sized for (default the config's
   * `dms_preallocate_for_tokens`, at most 4096). The pool grows past it when needed (SPEC §5.2);
   * a caller that knows its lengths (prompt + new tokens) keeps a wide batch within the
   * device's binding limit this way.
   */
  preallocateTokens?: number;
}

/** Options of {@linkcode generate}. */
export interface GenerateOptions {
  /** New tokens per sequence at most. */
  maxTokens: number;
  /** Cache policy (default "dms" when the config is a DMS checkpoint, else "dense"), or a cache to (re)use. */
  cache?: CachePolicyName | KvCache;
  /** Sampling (default greedy). `seed` makes it reproducible. */
  sampling?: SampleOptions;
  /** Token ids that end a sequence (default: the config's `eos_token_id`). */
  eosTokenIds?: readonly number[];
  /** Decode tokens between readbacks (default 16). */
  readbackEvery?: number;
  /** Prefill chunk length (default: the config's `dms_chunked_prefill`, else the whole prompt). */
  prefillChunk?: number;
  /**
   * Decode steps encoded while a chunk's readback waits: Deno resolves a readback ~10 ms after it
   * is submitted, and these steps keep the GPU busy meanwhile (H200, Qwen3-0.6B geometry, 2K: 396
   * / 433 / 468 tok/s with 0 / 4 / 8 at 32 tokens a chunk). They are the next chunk's first steps,
   * within the room the cache's blocks have, and each reserve makes room for them (a DMS pool may
   * end up that many entries a page larger). When the readback shows every sequence finished,
   * they were computed for nothing and the cache holds them (past the result's `stats`), so a
   * cache you pass in for another turn would continue after them. Default: 8 when `generate`
   * makes the cache, 0 when you pass one (its contents after an EOS stay as without overlap).
   */
  readbackOverlap?: number;
  /**
   * Replay decode steps (default true): once three consecutive decode steps encoded the same
   * dispatches but for uniform words that grow by the same amount each step (the position, the
   * sampling step, the token log's column), the next steps are re-encoded from the last one's
   * trace (`Gpu.replay`) without running the model's or the cache's JavaScript, across readbacks,
   * while the cache agrees (`KvCache.replayDecodeStep`: no new block since the traced step, a
   * replay-safe policy) and the GPU does (`Gpu.canReplay`: no pooled buffer destroyed or handed
   * out since the trace, as a caller's tensors made between chunks would be; three steps are
   * traced again then). The tokens are the same either way; false encodes every step.
   */
  replay?: boolean;
}

/** One streamed chunk: the new tokens of each sequence since the last chunk. */
export interface GenerateChunk {
  /** New tokens per sequence (empty for finished sequences). */
  tokens: number[][];
  /** Whether each sequence has finished (EOS or max tokens). */
  done: boolean[];
  /** The cache's accounting, on the last chunk only (so `for await` reaches it too). */
  stats?: KvCacheStats;
  /**
   * The cache's accounting as of this chunk's readback, on every chunk (read with the tokens: no
   * readback of its own), taken before the room for the next chunk is reserved (so its
   * `allocatedBytes` may trail a later `cache.stats()`). On the last chunk it equals `stats`.
   */
  cacheStats: KvCacheStats;
}

/** What {@linkcode generate} returns when it finishes. */
export interface GenerateResult {
  /** All generated tokens per sequence (up to and including EOS). */
  tokens: number[][];
  /** The cache's accounting after the last step. */
  stats: KvCacheStats;
}

/**
 * Creates the cache a model generates with: `policy` on the paged storage, sized for `model`
 * (a {@linkcode PagedKvCache}, so `copySequenceFrom` can fan one prefilled prompt out to chains).
 */
export function createCacheFor(
  model: Transformer,
  batch: number,
  policy: CachePolicyName,
  options: CachePolicyOptions = {},
): PagedKvCache {
  const c = model.config;
  const base = {
    layers: c.numLayers,
    batch,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    dtype: model.dtype,
    preallocateTokens: Math.max(
      1,
      Math.min(options.preallocateTokens ?? Infinity, c.dms.preallocateForTokens, 4096),
    ),
  };
  const o = options, sinks = o.sinks ?? 4;
  const denseBlocks = Math.min(c.dms.blockSize, 256);
  if (policy === "dense") return createDenseCache(model.gpu, { ...base, blockSize: denseBlocks });
  if (policy === "quest") {
    const chunk = o.chunk ?? 16;
    const topK = o.topK ?? (o.budget === undefined ? 8 : Math.max(1, Math.floor(o.budget / chunk)));
    return createQuestCache(model.gpu, { ...base, blockSize: denseBlocks, chunk, topK });
  }
  const budget = o.budget ??
    (policy === "streaming" && o.recent !== undefined ? sinks + o.recent : 256);
  // Evicting baselines never hold more than `budget` entries per page: size the pool for that.
  const capped = { ...base, preallocateTokens: Math.min(base.preallocateTokens, budget) };
  if (policy === "streaming") {
    return createStreamingLlmCache(model.gpu, { ...capped, budget, sinks });
  }
  if (policy === "h2o") return createH2oCache(model.gpu, { ...capped, budget, recent: o.recent });
  if (policy === "tova") return createTovaCache(model.gpu, { ...capped, budget });
  return createDmsCache(model.gpu, {
    ...base,
    window: c.dms.window,
    blockSize: Math.min(c.dms.blockSize, c.dms.window + 1),
  });
}

/**
 * Generates continuations of `prompts` (token ids, any lengths ≥ 1), streaming
 * chunks of new tokens; the iterator's return value holds all tokens and the
 * cache accounting.
 *
 * @throws {RangeError} For an empty prompt, a token id outside the vocabulary, maxTokens < 1 or a
 *   readbackOverlap that is not an integer >= 0.
 */
export async function* generate(
  model: Transformer,
  prompts: readonly (readonly number[])[],
  opts: GenerateOptions,
): AsyncGenerator<GenerateChunk, GenerateResult> {
  const overlap = checkInputs(model, prompts, opts);
  const cfg = model.config, gpu = model.gpu;
  const B = prompts.length;
  const eos = new Set(opts.eosTokenIds ?? cfg.eosTokenIds);
  const every = Math.max(1, opts.readbackEvery ?? 16);
  const ownCache = typeof opts.cache !== "object";
  const cache: KvCache = typeof opts.cache === "object"
    ? opts.cache
    : createCacheFor(model, B, opts.cache ?? (cfg.isDms ? "dms" : "dense"));
  const start = cache.tokensSeen;
  const P = Math.max(...prompts.map((p) => p.length));
  const next = Tensor.zeros(gpu, [B, 1], "i32"); // the next step's input ids
  const log = Tensor.zeros(gpu, [B, every], "i32"); // sampled tokens since the last readback
  const all: number[][] = prompts.map(() => []);
  const done = prompts.map(() => false);
  let final: KvCacheStats | undefined;
  try {
    const last = await prefill(model, prompts, cache, opts.prefillChunk);
    // --- decode, GPU-resident: sample -> next ids -> forward -> sample ...
    const posT = Tensor.empty(gpu, [B, 1], "i32");
    const replayer = opts.replay !== false && cache.replayDecodeStep
      ? new StepReplayer(gpu)
      : undefined;
    let tracing = false;
    // Decode step `step`: the last sampled token through the model at its position, then
    // sampling with RNG step `step` into log column `step` (a ring of `every` columns; chunks
    // start at multiples of every), so that every uniform of a step grows by 1 a step: replayed
    // from the last trace when the replayer and the cache agree.
    const decodeStep = (step: number) => {
      posT.write(Array.from({ length: B }, () => start + P + step - 1)); // flushes: slot 0
      if (replayer?.ready && cache.replayDecodeStep!()) return replayer.replay();
      if (replayer) {
        gpu.beginTrace();
        tracing = true;
      }
      const l = model.forward(next, { mode: "inference", positions: posT, cache, logits: "last" })!;
      const logits = l.reshape([B, cfg.vocabSize]) as Tensor<"f32">;
      l.dispose();
      sample(logits, { ...opts.sampling, step, out: next, log, logColumn: step });
      logits.dispose();
      if (replayer) {
        replayer.add(gpu.endTrace());
        tracing = false;
      }
    };
    try {
      const first = last.reshape([B, cfg.vocabSize]) as Tensor<"f32">;
      last.dispose();
      sample(first, { ...opts.sampling, step: 0, out: next, log, logColumn: 0 });
      first.dispose();
      let step = 1, pending = 1;
      while (true) {
        const finished = step >= opts.maxTokens;
        if (pending === every || finished) {
          // One readback a chunk: the sampled tokens, with the cache's lengths and counters (its
          // room for the rest of the generation, none once every sequence is done, and the
          // accounting). While it waits (~10 ms in Deno), the next chunk's first steps run.
          const chunkOut: number[][] = prompts.map(() => []);
          let ahead = 0;
          const { stats } = await cache.reserveAndRead(
            (bytes) => {
              const rows = new Int32Array(bytes[0]);
              for (let b = 0; b < B; b++) {
                for (let i = 0; i < pending && !done[b]; i++) {
                  const t = rows[b * every + i];
                  chunkOut[b].push(t);
                  all[b].push(t);
                  if (eos.has(t)) done[b] = true;
                }
                if (finished) done[b] = true;
              }
              return done.every((d) => d) ? 0 : Math.min(every, opts.maxTokens - step - ahead);
            },
            [{ buffer: log.buffer, size: B * every * 4 }],
            finished || overlap === 0 ? undefined : (room) => {
              ahead = Math.min(overlap, room, every - 1, opts.maxTokens - step);
              for (let i = 0; i < ahead; i++) decodeStep(step + i);
              if (ahead > 0) gpu.flush(); // each step submits the one before: submit the last too
              return ahead;
            },
          );
          if (done.every((d) => d)) {
            final = stats;
            yield { tokens: chunkOut, done: [...done], stats: final, cacheStats: stats };
            break;
          }
          yield { tokens: chunkOut, done: [...done], cacheStats: stats };
          step += ahead;
          pending = ahead;
          continue;
        }
        decodeStep(step);
        step++;
        pending++;
      }
    } finally {
      if (tracing) gpu.endTrace();
      posT.dispose();
    }
    return { tokens: all, stats: final ?? await cache.stats() };
  } finally {
    next.dispose();
    log.dispose();
    if (ownCache) cache.dispose();
  }
}

/**
 * The input checks of `generate`; returns the readback overlap.
 *
 * @throws {RangeError} As `generate` documents.
 */
function checkInputs(
  model: Transformer,
  prompts: readonly (readonly number[])[],
  opts: GenerateOptions,
): number {
  const V = model.config.vocabSize;
  if (prompts.length === 0) throw new RangeError("generate: no prompts");
  if (!(Number.isInteger(opts.maxTokens) && opts.maxTokens >= 1)) {
    throw new RangeError(`generate: maxTokens must be an integer >= 1, got ${opts.maxTokens}`);
  }
  const overlap = opts.readbackOverlap ?? (typeof opts.cache === "object" ? 0 : 8);
  if (!(Number.isInteger(overlap) && overlap >= 0)) {
    throw new RangeError(`generate: readbackOverlap must be an integer >= 0, got ${overlap}`);
  }
  prompts.forEach((p, b) => {
    if (!p.length) throw new RangeError(`generate: prompt ${b} is empty`);
    p.forEach((t, i) => {
      if (!(Number.isInteger(t) && t >= 0 && t < V)) {
        throw new RangeError(
          `generate: prompt ${b} token ${i} = ${t} is outside the vocabulary [0, ${V})`,
        );
      }
    });
  });
  return overlap;
}

/**
 * The prompts through the model into `cache`, left-padded to the longest (padded keys are never
 * stored), in chunks of `prefillChunk` tokens (default: the config's `chunkedPrefill`, else all).
 *
 * @returns The logits of each sequence's last prompt token, `[B, 1, vocab]` f32.
 */
async function prefill(
  model: Transformer,
  prompts: readonly (readonly number[])[],
  cache: KvCache,
  prefillChunk: number | undefined,
): Promise<Tensor<"f32">> {
  const gpu = model.gpu, B = prompts.length, start = cache.tokensSeen;
  const P = Math.max(...prompts.map((p) => p.length));
  const ids = new Int32Array(B * P), mask = new Int32Array(B * P), pos = new Int32Array(B * P);
  prompts.forEach((p, b) => {
    const pad = P - p.length;
    for (let i = 0; i < P; i++) {
      ids[b * P + i] = i < pad ? 0 : p[i - pad];
      mask[b * P + i] = i < pad ? 0 : 1;
      pos[b * P + i] = start + i;
    }
  });
  const chunk = Math.max(1, prefillChunk ?? model.config.dms.chunkedPrefill ?? P);
  let last: Tensor<"f32"> | undefined;
  try {
    for (let s = 0; s < P; s += chunk) {
      const e = Math.min(P, s + chunk), n = e - s;
      const slice = (a: Int32Array) => {
        const out = new Int32Array(B * n);
        for (let b = 0; b < B; b++) out.set(a.subarray(b * P + s, b * P + e), b * n);
        return out;
      };
      await cache.reserve(n);
      using idt = Tensor.fromArray(gpu, slice(ids), [B, n], "i32");
      using pst = Tensor.fromArray(gpu, slice(pos), [B, n], "i32");
      const km = slice(mask);
      last?.dispose();
      last = undefined;
      last = model.forward(idt, {
        mode: "inference",
        positions: pst,
        cache,
        keyMask: km.every((x) => x === 1) ? undefined : km,
        logits: e === P ? "last" : "none",
      });
    }
  } catch (e) {
    last?.dispose();
    throw e;
  }
  return last!;
}

/**
 * The replay state of {@linkcode generate}'s decode loop: the last traced step, the per-step
 * change of its uniforms, and whether three consecutive traces agreed on that change (then the
 * following steps are replayed from the last trace: `Gpu.replay` with `delta · k`).
 */
class StepReplayer {
  #gpu: Gpu;
  #last: StepTrace | undefined;
  #delta: TraceDelta | undefined;
  #verified = false;
  #times = 0;

  constructor(gpu: Gpu) {
    this.#gpu = gpu;
  }

  /** Whether the next step may be replayed (if the cache agrees). */
  get ready(): boolean {
    return this.#verified && this.#gpu.canReplay(this.#last!);
  }

  /** Takes the trace of a step encoded by the ops. */
  add(t: StepTrace): void {
    const d = this.#last && t.clean ? traceDelta(this.#last, t) : undefined;
    this.#verified = d !== undefined && this.#delta !== undefined && sameDelta(d, this.#delta);
    this.#delta = d;
    this.#last = t.clean ? t : undefined;
    this.#times = 0;
  }

  /** Encodes the next step from the last trace. */
  replay(): void {
    this.#gpu.replay(this.#last!, this.#delta, ++this.#times);
  }
}
