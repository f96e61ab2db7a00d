/**
 * Task accuracy through generation: the samples of a synthetic task ({@linkcode ./tasks.ts}) are
 * answered with {@linkcode generate} (greedy by default) through any cache policy, graded by exact
 * match of the result ({@linkcode extractResult}), and the cache accounting of every batch is
 * summed: KV entries read by decode attention, the peak of live entries, and the compression
 * ratio both ways (SPEC §5.4 `get_cr`, and dense over kept).
 *
 * Votes (self-consistency): with `votes > 1` every prompt is generated `votes` times in the same
 * batch with temperature sampling (each row draws its own noise) and the most common result wins
 * (ties: the one reached first). A written-out chain (`sum` with `showWork`) and more votes raise
 * accuracy at more decode tokens, which is what a compressed cache buys (issue 11).
 *
 * The model-free core {@linkcode evaluateTaskWith} takes any {@linkcode TaskRunner}, so the
 * bookkeeping is testable with a fake.
 *
 * @example Dense vs DMS accuracy of a model on 64 needle prompts of 1K tokens
 * ```ts ignore
 * const task = { kind: "kv", length: 1024, pairs: 4 } as const;
 * const dense = await evaluateTask(model, task, { samples: 64, seed: 1, policy: "dense" });
 * const dms = await evaluateTask(model, task, { samples: 64, seed: 1, policy: "dms" });
 * console.log(dense.accuracy, dms.accuracy, dms.compressionRatio);
 * ```
 *
 * @module
 */

import type { KvCache, KvCacheStats } from "../cache/kv_cache.ts";
import { type CachePolicyName, generate, type GenerateResult } from "../generate.ts";
import type { Transformer } from "../model/transformer.ts";
import type { SampleOptions } from "../ops/sample.ts";
import {
  extractResult,
  generateTask,
  type Task,
  type TaskSample,
  type TaskVocab,
  taskVocab,
  TOKENS,
} from "./tasks.ts";

/** A cache for one batch of `batch` sequences (the harness disposes it). */
export type KvCacheFactory = (batch: number) => KvCache;

/** Progress of an evaluation, after each batch. */
export interface TaskProgress {
  /** Samples graded so far. */
  done: number;
  /** Samples in all. */
  total: number;
  /** Correct so far. */
  correct: number;
}

/** Options of {@linkcode evaluateTask}. */
export interface TaskEvalOptions {
  /** Samples to grade. */
  samples: number;
  /** Seed of the samples (and of the sampling noise when voting). */
  seed: number;
  /** Cache policy (default "dense"): a policy name, or a factory of caches. */
  policy?: CachePolicyName | KvCacheFactory;
  /** New tokens per sequence (default: the longest answer of the samples, EOS included). */
  maxTokens?: number;
  /** Generations per prompt, majority vote over their results (default 1). */
  votes?: number;
  /** Sampling temperature (default 0 = greedy with one vote, 1 with several). */
  temperature?: number;
  /** Generated rows per batch (default 16; prompts per batch = max(1, ⌊rows / votes⌋)). */
  batchRows?: number;
  /** Token layout (default `taskVocab()`). */
  vocab?: TaskVocab;
  /** Called after each batch. */
  onProgress?: (p: TaskProgress) => void;
}

/** What {@linkcode evaluateTask} measures. */
export interface TaskEvalResult {
  /** Fraction of samples whose (voted) result equals the expected one exactly, in [0, 1]. */
  accuracy: number;
  /** Samples graded. */
  samples: number;
  /** Per sample: whether it was correct. */
  correct: boolean[];
  /** Per sample: the voted result. */
  predictions: number[][];
  /** KV entries read by decode attention, summed over batches (`readTokens`). */
  kvReads: number;
  /** Decode steps, summed over batches. */
  decodeSteps: number;
  /** Highest live KV entries of any batch (`peakTokens`). */
  peakKvTokens: number;
  /** `get_cr` (SPEC §5.4) averaged over batches, weighted by rows. */
  compressionRatio: number;
  /** Σ real tokens / Σ live entries over the batches at their end. */
  compressionRatioDenseOverKept: number;
  /** The cache accounting of every batch, in order. */
  batches: KvCacheStats[];
}

/** Generates continuations of equal-length prompts: `generate()` or a fake. */
export type TaskRunner = (
  prompts: number[][],
  opts: { maxTokens: number; sampling: SampleOptions; eosTokenIds: readonly number[] },
) => Promise<{ tokens: number[][]; stats: KvCacheStats }>;

async function drain(gen: AsyncGenerator<unknown, GenerateResult>): Promise<GenerateResult> {
  while (true) {
    const r = await gen.next();
    if (r.done) return r.value;
  }
}

/** The most common result (ties: the first reached). */
function vote(results: number[][]): number[] {
  const counts = new Map<string, { n: number; first: number }>();
  results.forEach((r, i) => {
    const k = r.join(",");
    const c = counts.get(k);
    if (c) c.n++;
    else counts.set(k, { n: 1, first: i });
  });
  let best = { n: 0, first: 0 };
  for (const c of counts.values()) if (c.n > best.n) best = c;
  return results[best.first];
}

/**
 * Grades a task with any runner; see {@linkcode evaluateTask}.
 *
 * @throws {RangeError} For samples, votes or batchRows that are not positive integers.
 */
export async function evaluateTaskWith(
  run: TaskRunner,
  task: Task,
  opts: TaskEvalOptions,
): Promise<TaskEvalResult> {
  const votes = opts.votes ?? 1, rows = opts.batchRows ?? 16;
  for (
    const [k, x] of [["samples", opts.samples], ["votes", votes], ["batchRows", rows]] as const
  ) {
    if (!(Number.isInteger(x) && x >= 1)) {
      throw new RangeError(`evaluateTask: ${k} must be an integer >= 1, got ${x}`);
    }
  }
  const samples: TaskSample[] = generateTask(task, {
    count: opts.samples,
    seed: opts.seed,
    vocab: opts.vocab ?? taskVocab(),
  });
  const maxTokens = opts.maxTokens ?? Math.max(...samples.map((s) => s.answer.length));
  const temperature = opts.temperature ?? (votes > 1 ? 1 : 0);
  const per = Math.max(1, Math.floor(rows / votes));
  const correct: boolean[] = [], predictions: number[][] = [], batches: KvCacheStats[] = [];
  let kvReads = 0, decodeSteps = 0, peak = 0, crSum = 0, crRows = 0, real = 0, live = 0;
  for (let s0 = 0; s0 < samples.length; s0 += per) {
    const chunk = samples.slice(s0, s0 + per);
    const prompts = chunk.flatMap((s) => Array.from({ length: votes }, () => s.prompt));
    const { tokens, stats } = await run(prompts, {
      maxTokens,
      sampling: { temperature, seed: (opts.seed * 7919 + s0) >>> 0 },
      eosTokenIds: [TOKENS.EOS],
    });
    chunk.forEach((s, i) => {
      const got = vote(tokens.slice(i * votes, (i + 1) * votes).map(extractResult));
      predictions.push(got);
      correct.push(got.length === s.result.length && got.every((t, j) => t === s.result[j]));
    });
    batches.push(stats);
    kvReads += stats.readTokens;
    decodeSteps += stats.decodeSteps;
    peak = Math.max(peak, stats.peakTokens);
    crSum += stats.compressionRatio * prompts.length;
    crRows += prompts.length;
    real += stats.compressionRatioDenseOverKept * stats.liveTokens;
    live += stats.liveTokens;
    opts.onProgress?.({
      done: correct.length,
      total: samples.length,
      correct: correct.filter((c) => c).length,
    });
  }
  return {
    accuracy: correct.filter((c) => c).length / correct.length,
    samples: correct.length,
    correct,
    predictions,
    kvReads,
    decodeSteps,
    peakKvTokens: peak,
    compressionRatio: crSum / crRows,
    compressionRatioDenseOverKept: live > 0 ? real / live : 1,
    batches,
  };
}

/**
 * Grades a model on `samples` prompts of a task: batched {@linkcode generate} through the chosen
 * cache (a fresh one per batch), exact match of the result, majority vote with `votes > 1`.
 *
 * @param model A decoder whose vocabulary holds the task vocabulary (≥ `vocab.size`).
 * @param task The task ({@linkcode generateTask}).
 * @param opts Samples, seed, policy, votes, … ({@linkcode TaskEvalOptions}).
 * @returns Accuracy in [0, 1] and the summed cache accounting.
 * @throws {RangeError} (rejects) When the model's vocabulary is smaller than the task's, or for bad
 *   options.
 */
export async function evaluateTask(
  model: Transformer,
  task: Task,
  opts: TaskEvalOptions,
): Promise<TaskEvalResult> {
  const vocab = opts.vocab ?? taskVocab();
  if (model.config.vocabSize < vocab.size) {
    throw new RangeError(
      `evaluateTask: model vocab_size ${model.config.vocabSize} < task vocabulary ${vocab.size}`,
    );
  }
  const policy = opts.policy ?? "dense";
  const run: TaskRunner = async (prompts, o) => {
    const cache = typeof policy === "function" ? policy(prompts.length) : policy;
    try {
      return await drain(
        generate(model, prompts, { ...o, cache, readbackEvery: Math.min(o.maxTokens, 32) }),
      );
    } finally {
      if (typeof cache === "object") cache.dispose();
    }
  };
  return await evaluateTaskWith(run, task, { ...opts, vocab });
}
