/**
 * TOVA (Oren et al. 2024, "Transformers are Multi-State RNNs", https://arxiv.org/abs/2401.06104)
 * on the paged storage: a fixed budget of entries per page; once full, each new token replaces
 * the entry the current query attends to least, with the attention weights averaged over all
 * heads of the layer (one decision per layer: the same slot leaves every KV head of a
 * sequence). No recent window, no sinks.
 *
 * The machinery is shared with H2O (./h2o.ts): {@linkcode ScoreEvictPolicy} in
 * ./score_evict.ts, kernels in `shaders/score_evict.wgsl`. TOVA's rule there: scores are
 * overwritten by each decode step's attention probabilities (the kernel's `probs` output,
 * averaged over the G query heads of a page), summed over the Hkv pages of a sequence at the
 * decision, ties to the oldest entry. The decision at step t uses the weights of query t − 1
 * (which saw exactly the entries stored then, itself included), before token t is stored; with
 * budget = k + 1 this is the paper's "append, attend, evict the minimum" at a cache of k.
 * Prefill keeps the newest `budget` tokens (the prefill kernel has no weights; feed the prompt
 * with `prefillChunk: 1` to apply the rule at every prompt token).
 *
 * CPU rule: {@linkcode tovaVictim}.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { createTovaCache } from "./tova.ts";
 * const gpu = await getGpu();
 * using cache = createTovaCache(gpu, { layers: 2, batch: 1, kvHeads: 2, headDim: 64, budget: 64 });
 * console.log(cache.policy.name); // "tova"
 * ```
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { PagedKvCache } from "../cache/paged_kv_cache.ts";
import type { DenseCacheOptions } from "./dense.ts";
import { evictionVictim, ScoreEvictPolicy } from "./score_evict.ts";
import { intAtLeast } from "./_options.ts";

/** Options of {@linkcode createTovaCache}. */
export interface TovaCacheOptions extends DenseCacheOptions {
  /** Entries per page at most (counts the incoming token). Must be ≥ 1. */
  budget: number;
}

/**
 * Creates a TOVA KV cache (a fixed budget per page, evicting the least-attended entry of the
 * layer) on the paged storage.
 *
 * @throws {RangeError} For a budget below 1 or bad sizes (naming the field).
 */
export function createTovaCache(gpu: Gpu, options: TovaCacheOptions): PagedKvCache {
  const op = "createTovaCache";
  const budget = intAtLeast(op, "budget", options.budget, 1);
  const blockSize = intAtLeast(op, "blockSize", options.blockSize ?? Math.min(256, budget), 1);
  return new PagedKvCache(gpu, { ...options, blockSize }, createTovaPolicy(budget), "TovaCache");
}

/** The TOVA policy for `budget` entries per page (no recent window, one decision per layer). */
export function createTovaPolicy(budget: number): ScoreEvictPolicy {
  intAtLeast("createTovaPolicy", "budget", budget, 1);
  return new ScoreEvictPolicy({
    name: "tova",
    budget,
    recent: 0,
    perSequence: true,
    accumulate: false,
  });
}

/**
 * TOVA's rule, the scalar CPU twin of its decision: the slot whose attention weight, summed
 * over the heads of the layer (`probs[h][slot]`, each head's weights of the last query), is
 * lowest; ties to the oldest position.
 *
 * @param positions Position held in each slot (the same in every KV head of the sequence).
 * @param probs Per KV head of the sequence, the last query's weight of each slot.
 * @returns The slot the next token overwrites, or −1 for an empty page.
 *
 * @example
 * ```ts
 * import { tovaVictim } from "./tova.ts";
 * console.log(tovaVictim([0, 1, 2], [[0.5, 0.2, 0.3], [0.1, 0.3, 0.6]])); // 1 (sums 0.6, 0.5, 0.9)
 * ```
 */
export function tovaVictim(
  positions: readonly number[],
  probs: readonly ArrayLike<number>[],
): number {
  return evictionVictim(positions, probs, Number.MAX_SAFE_INTEGER, 0);
}
