/**
 * H2O (Zhang et al. 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of
 * Large Language Models", https://arxiv.org/abs/2306.14048) on the paged storage: each page
 * (a budget per KV head) keeps its `recent` newest tokens and, of the older ones, the heavy
 * hitters — the entries with the largest attention mass accumulated over all queries so far.
 * Once full, each new token replaces the entry of least accumulated mass outside the recent
 * window.
 *
 * The machinery is shared with TOVA (./tova.ts): {@linkcode ScoreEvictPolicy} in
 * ./score_evict.ts, kernels in `shaders/score_evict.wgsl`. H2O's rule there: each decode step's
 * attention probabilities (the kernel's `probs` output, averaged over the G query heads of the
 * page) are added to the entries' scores; a new entry starts at 0; each page decides alone,
 * ties to the oldest entry. The decision at step t uses the mass accumulated up to query t − 1,
 * before token t is stored. Prefill keeps the newest `budget` tokens at mass 0 (the prefill
 * kernel has no weights; feed the prompt with `prefillChunk: 1` to accumulate over the prompt's
 * queries too).
 *
 * CPU rule: {@linkcode h2oVictim}.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { createH2oCache } from "./h2o.ts";
 * const gpu = await getGpu();
 * using cache = createH2oCache(gpu, { layers: 2, batch: 1, kvHeads: 2, headDim: 64, budget: 64 });
 * console.log(cache.policy.name); // "h2o"
 * ```
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { PagedKvCache } from "../cache/paged_kv_cache.ts";
import type { DenseCacheOptions } from "./dense.ts";
import { evictionVictim, ScoreEvictPolicy } from "./score_evict.ts";
import { intAtLeast } from "./_options.ts";

/** Options of {@linkcode createH2oCache}. */
export interface H2oCacheOptions extends DenseCacheOptions {
  /** Entries per page at most (counts the incoming token). Must be ≥ 1. */
  budget: number;
  /**
   * Protected recent window, counting the incoming token (0..budget; 0: none). Default
   * ⌊budget / 2⌋ (the paper's equal split between heavy hitters and recent tokens).
   */
  recent?: number;
}

/**
 * Creates an H2O KV cache (heavy hitters + recent window, a budget per page) on the paged
 * storage.
 *
 * @throws {RangeError} For a budget below 1, a recent window outside 0..budget, or bad sizes
 *   (naming the field).
 */
export function createH2oCache(gpu: Gpu, options: H2oCacheOptions): PagedKvCache {
  const op = "createH2oCache";
  const budget = intAtLeast(op, "budget", options.budget, 1);
  const recent = intAtLeast(op, "recent", options.recent ?? Math.floor(budget / 2), 0);
  if (recent > budget) {
    throw new RangeError(`${op}: recent must be <= budget (${budget}), got ${recent}`);
  }
  const blockSize = intAtLeast(op, "blockSize", options.blockSize ?? Math.min(256, budget), 1);
  const policy = createH2oPolicy(budget, recent);
  return new PagedKvCache(gpu, { ...options, blockSize }, policy, "H2oCache");
}

/** The H2O policy: `budget` entries per page, the newest `recent` protected. */
export function createH2oPolicy(budget: number, recent: number): ScoreEvictPolicy {
  intAtLeast("createH2oPolicy", "budget", budget, 1);
  intAtLeast("createH2oPolicy", "recent", recent, 0);
  return new ScoreEvictPolicy({
    name: "h2o",
    budget,
    recent,
    perSequence: false,
    accumulate: true,
  });
}

/**
 * H2O's rule, the scalar CPU twin of its decision for one page: among entries outside the
 * recent window (position + recent ≤ t), the one with the least accumulated attention mass;
 * ties to the oldest position.
 *
 * @param positions Position held in each slot.
 * @param mass Accumulated attention mass of each slot.
 * @param t Position of the incoming token.
 * @param recent Recent window (counts the incoming token; 0: none).
 * @returns The slot the token overwrites, or −1 when every entry is recent.
 *
 * @example Slot 1 has the least mass, slot 3 (position 3) is protected by recent = 2 at t = 4
 * ```ts
 * import { h2oVictim } from "./h2o.ts";
 * console.log(h2oVictim([0, 1, 2, 3], [0.9, 0.2, 0.5, 0.01], 4, 2)); // 1
 * ```
 */
export function h2oVictim(
  positions: readonly number[],
  mass: ArrayLike<number>,
  t: number,
  recent: number,
): number {
  return evictionVictim(positions, [mass], t, recent);
}
