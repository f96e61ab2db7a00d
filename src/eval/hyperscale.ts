/**
 * Inference-time hyper-scaling (issue 11; SPEC §8): sweep W-L-CR configurations — `chains`
 * parallel sampled generations per problem with a majority vote (W) × a maximum generation
 * length (L) × a cache policy at a compression (CR) — over a synthetic task
 * ({@linkcode ./tasks.ts}), and report the accuracy of each configuration against its exact KV
 * budgets, with the Pareto frontier of every policy ({@linkcode ./pareto.ts}). The paper's claim
 * is that a compressed cache buys accuracy at an equal budget, because the budget it saves pays
 * for more or longer chains.
 *
 * Budgets, per problem (SPEC §8, all in KV tokens summed over layers and KV heads):
 * - `kv_reads`: KV entries read by decode attention, `Σ decode steps Σ layers Σ heads current
 *   length`, of all W chains of a problem — the caches' own counter summed over the batches,
 *   divided by the problems (the prompt's prefill is not a decode read; it is the same for every
 *   configuration of a task). A batch decodes until its last row stops, so a row that has
 *   emitted EOS keeps being counted until then, as it keeps being computed.
 * - `peak_kv_tokens`: the most live KV entries of a problem's W chains together at any step
 *   (prefill included), averaged over problems; `peak_kv_tokens_max` is the largest. Several
 *   problems share a batch, so this comes from a recorded trace of the per-page lengths
 *   ({@linkcode TracedKvCache}), not from the batch-wide peak counter.
 *
 * Sampling is at `temperature` (default 1) for every configuration, W = 1 included, seeded:
 * the same seed gives the same rows ({@linkcode hyperscaleCsv} byte for byte).
 *
 * @example Dense vs a DMS student, W ∈ {1, 4}, L = 4, on single-needle retrieval
 * ```ts ignore
 * const result = await runHyperscale(
 *   [
 *     { policy: "dense", compression: 1, model: teacher, cache: "dense" },
 *     { policy: "dms", compression: 4, model: student, cache: "dms" },
 *   ],
 *   { chains: [1, 4], maxTokens: [4] },
 *   { task: { kind: "kv", length: 240, pairs: 1, depth: [0, 0.5] }, samples: 32, seed: 1 },
 * );
 * await Deno.writeTextFile("results.csv", hyperscaleCsv(result.rows));
 * ```
 *
 * @module
 */

import type { KvCache } from "../cache/kv_cache.ts";
import {
  type CachePolicyName,
  createCacheFor,
  generate,
  type GenerateResult,
} from "../generate.ts";
import type { Transformer } from "../model/transformer.ts";
import { traceBudgets, TracedKvCache } from "./kv_trace.ts";
import { paretoFrontier } from "./pareto.ts";
import { evaluateTaskWith, type KvCacheFactory, type TaskRunner } from "./task_eval.ts";
import { type Task, taskName, type TaskVocab, taskVocab } from "./tasks.ts";

/** One policy at one compression: a model and the cache it generates with. */
export interface HyperscalePolicy {
  /** Series name (one Pareto frontier each): "dense", "dms", "tova", … */
  policy: string;
  /** Nominal compression ratio (1 for dense; for a baseline, the DMS ratio it is matched to). */
  compression: number;
  /** Free-form label of this entry (a student's folder, a budget), default "". */
  label?: string;
  /** The model (a DMS student for "dms"). */
  model: Transformer;
  /** A cache policy name for `createCacheFor`, or a factory of caches on paged storage. */
  cache: CachePolicyName | KvCacheFactory;
  /**
   * Prompt tokens per prefill chunk (`generate`'s `prefillChunk`; default: the model config's
   * `dms_chunked_prefill`, else the whole prompt). 1 feeds the prompt token by token, so a
   * policy's decode-time rule (TOVA's and H2O's attention scores) applies at every prompt token.
   */
  prefillChunk?: number;
}

/** The W × L grid swept for every policy. */
export interface HyperscaleGrid {
  /** Parallel chains per problem, majority vote (W), each ≥ 1. */
  chains: readonly number[];
  /** Maximum new tokens per chain (L), each ≥ 1. */
  maxTokens: readonly number[];
}

/** Progress after each batch. */
export interface HyperscaleProgress {
  /** Configuration index (0-based) and count. */
  config: number;
  /** Configurations in all. */
  configs: number;
  /** The configuration's policy, compression, W and L. */
  policy: string;
  /** Nominal compression. */
  compression: number;
  /** W. */
  chains: number;
  /** L. */
  maxTokens: number;
  /** Problems graded in this configuration so far. */
  done: number;
  /** Problems per configuration. */
  total: number;
}

/** Options of {@linkcode runHyperscale}. */
export interface HyperscaleOptions {
  /** The task (prompts are generated from `seed`). */
  task: Task;
  /** Problems per configuration. */
  samples: number;
  /** Seed of the problems and of the sampling noise. */
  seed: number;
  /** Sampling temperature of every chain (default 1; 0 = greedy, and votes then agree). */
  temperature?: number;
  /** Generated rows per batch (default 32; whole problems: max(1, ⌊rows / W⌋) per batch). */
  batchRows?: number;
  /** Token layout (default `taskVocab()`). */
  vocab?: TaskVocab;
  /** Called after each batch. */
  onProgress?: (p: HyperscaleProgress) => void;
}

/** One configuration's result: a row of `results.csv`. */
export interface HyperscaleRow {
  /** Series name. */
  policy: string;
  /** The entry's label. */
  label: string;
  /** Nominal compression ratio. */
  compression: number;
  /** W: chains per problem. */
  chains: number;
  /** L: max new tokens per chain. */
  max_tokens: number;
  /** Problems graded. */
  samples: number;
  /** Fraction of problems whose voted result is exact. */
  accuracy: number;
  /** KV entries read by decode attention per problem (all W chains; see the module doc). */
  kv_reads: number;
  /** Peak live KV entries of a problem's W chains together, mean over problems. */
  peak_kv_tokens: number;
  /** Peak live KV entries of a problem's W chains together, max over problems. */
  peak_kv_tokens_max: number;
  /** Measured compression `get_cr` (SPEC §5.4), mean over rows. */
  compression_ratio: number;
  /** Whether the row is on its policy's accuracy-vs-reads frontier. */
  reads_frontier: boolean;
  /** Whether the row is on its policy's accuracy-vs-peak frontier. */
  memory_frontier: boolean;
}

/** What {@linkcode runHyperscale} returns. */
export interface HyperscaleResult {
  /** `taskName(task)`. */
  task: string;
  /** The seed. */
  seed: number;
  /** The sampling temperature. */
  temperature: number;
  /** One row per configuration, in sweep order (policy, then L, then W). */
  rows: HyperscaleRow[];
  /** Wall seconds per configuration, in row order (not in the CSV: it is not deterministic). */
  seconds: number[];
}

/** The CSV columns, in order. */
export const HYPERSCALE_COLUMNS: readonly (keyof HyperscaleRow)[] = [
  "policy",
  "label",
  "compression",
  "chains",
  "max_tokens",
  "samples",
  "accuracy",
  "kv_reads",
  "peak_kv_tokens",
  "peak_kv_tokens_max",
  "compression_ratio",
  "reads_frontier",
  "memory_frontier",
];

async function drain(gen: AsyncGenerator<unknown, GenerateResult>): Promise<GenerateResult> {
  while (true) {
    const r = await gen.next();
    if (r.done) return r.value;
  }
}

function positiveInts(field: string, xs: readonly number[]): void {
  if (xs.length === 0) throw new RangeError(`runHyperscale: grid.${field} is empty`);
  for (const x of xs) {
    if (!(Number.isInteger(x) && x >= 1)) {
      throw new RangeError(`runHyperscale: grid.${field} must hold integers >= 1, got ${x}`);
    }
  }
}

/** Marks each row's membership of its policy's frontiers (in place). */
function markFrontiers(rows: HyperscaleRow[]): void {
  for (const policy of new Set(rows.map((r) => r.policy))) {
    const mine = rows.filter((r) => r.policy === policy);
    for (const r of mine) r.reads_frontier = r.memory_frontier = false;
    const reads = paretoFrontier(mine.map((r) => ({ cost: r.kv_reads, accuracy: r.accuracy, r })));
    const peak = paretoFrontier(
      mine.map((r) => ({ cost: r.peak_kv_tokens, accuracy: r.accuracy, r })),
    );
    for (const p of reads) p.r.reads_frontier = true;
    for (const p of peak) p.r.memory_frontier = true;
  }
}

/**
 * Runs the sweep: every policy entry × every L × every W, `samples` problems each (the same
 * problems for every configuration), graded by majority vote over the W sampled chains.
 *
 * @param policies The policy entries (each with its model and cache).
 * @param grid The W and L values.
 * @param opts Task, problems, seed, temperature, progress.
 * @returns One row per configuration with accuracy, budgets and frontier membership.
 * @throws {RangeError} (rejects) For an empty or non-integer grid, no policies, a model whose
 *   vocabulary is smaller than the task's, or bad options.
 */
export async function runHyperscale(
  policies: readonly HyperscalePolicy[],
  grid: HyperscaleGrid,
  opts: HyperscaleOptions,
): Promise<HyperscaleResult> {
  if (policies.length === 0) throw new RangeError("runHyperscale: no policies");
  positiveInts("chains", grid.chains);
  positiveInts("maxTokens", grid.maxTokens);
  const vocab = opts.vocab ?? taskVocab();
  const temperature = opts.temperature ?? 1;
  if (!(Number.isFinite(temperature) && temperature >= 0)) {
    throw new RangeError(`runHyperscale: temperature must be >= 0, got ${temperature}`);
  }
  policies.forEach((p, i) => {
    if (p.model.config.vocabSize < vocab.size) {
      throw new RangeError(
        `runHyperscale: policy ${i} (${p.policy}): model vocab_size ${p.model.config.vocabSize} < task vocabulary ${vocab.size}`,
      );
    }
    if (!(Number.isFinite(p.compression) && p.compression > 0)) {
      throw new RangeError(
        `runHyperscale: policy ${i} (${p.policy}): compression must be > 0, got ${p.compression}`,
      );
    }
  });
  const configs = policies.length * grid.maxTokens.length * grid.chains.length;
  const rows: HyperscaleRow[] = [], seconds: number[] = [];
  for (const entry of policies) {
    for (const maxTokens of grid.maxTokens) {
      for (const chains of grid.chains) {
        const config = rows.length, t0 = performance.now();
        const peaks: number[] = [];
        const run: TaskRunner = async (prompts, o) => {
          const inner: KvCache = typeof entry.cache === "function"
            ? entry.cache(prompts.length)
            : createCacheFor(entry.model, prompts.length, entry.cache, {
              preallocateTokens: Math.max(...prompts.map((p) => p.length)) + o.maxTokens,
            });
          using cache = new TracedKvCache(inner);
          const res = await drain(
            generate(entry.model, prompts, {
              ...o,
              cache,
              readbackEvery: Math.min(o.maxTokens, 32),
              ...(entry.prefillChunk ? { prefillChunk: entry.prefillChunk } : {}),
            }),
          );
          peaks.push(...traceBudgets(await cache.trace(), chains).groupPeaks);
          return res;
        };
        const r = await evaluateTaskWith(run, opts.task, {
          samples: opts.samples,
          seed: opts.seed,
          maxTokens,
          votes: chains,
          temperature,
          batchRows: Math.max(opts.batchRows ?? 32, chains),
          vocab,
          onProgress: (p) =>
            opts.onProgress?.({
              config,
              configs,
              policy: entry.policy,
              compression: entry.compression,
              chains,
              maxTokens,
              done: p.done,
              total: p.total,
            }),
        });
        rows.push({
          policy: entry.policy,
          label: entry.label ?? "",
          compression: entry.compression,
          chains,
          max_tokens: maxTokens,
          samples: r.samples,
          accuracy: r.accuracy,
          kv_reads: r.kvReads / r.samples,
          peak_kv_tokens: peaks.reduce((a, b) => a + b, 0) / peaks.length,
          peak_kv_tokens_max: Math.max(...peaks),
          compression_ratio: r.compressionRatio,
          reads_frontier: false,
          memory_frontier: false,
        });
        seconds.push((performance.now() - t0) / 1000);
      }
    }
  }
  markFrontiers(rows);
  return { task: taskName(opts.task), seed: opts.seed, temperature, rows, seconds };
}

/** A CSV field: numbers to at most 4 decimals, strings quoted when they need it. */
function field(x: HyperscaleRow[keyof HyperscaleRow]): string {
  if (typeof x === "number") return String(Math.round(x * 1e4) / 1e4);
  if (typeof x === "boolean") return x ? "1" : "0";
  return /[",\n]/.test(x) ? `"${x.replaceAll('"', '""')}"` : x;
}

/**
 * The rows as CSV (header {@linkcode HYPERSCALE_COLUMNS}, numbers rounded to 4 decimals, booleans
 * 0/1, `\n` line ends): deterministic, so the same seed gives the same bytes.
 *
 * @example
 * ```ts ignore
 * await writeTextFileAtomic(`${dir}/results.csv`, hyperscaleCsv(result.rows));
 * ```
 */
export function hyperscaleCsv(rows: readonly HyperscaleRow[]): string {
  const lines = [HYPERSCALE_COLUMNS.join(",")];
  for (const r of rows) lines.push(HYPERSCALE_COLUMNS.map((c) => field(r[c])).join(","));
  return lines.join("\n") + "\n";
}
