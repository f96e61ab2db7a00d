/**
 * Score-based eviction at a fixed budget per page, the machinery TOVA (./tova.ts) and H2O
 * (./h2o.ts) share on the {@linkcode CachePolicy} seam, with the readable CPU twins of its
 * rules. Kernels: `shaders/score_evict.wgsl`.
 *
 * State: `scores[layers, pages, budget]` f32, one per slot. The decode attention kernel writes
 * them as its optional `probs` output (`decodeAttention` → `pagedAttention`'s `probs`): each
 * entry's attention probability for the step's query, averaged over the page's G query heads;
 * TOVA overwrites (the current query's weights), H2O accumulates (the heavy-hitter mass).
 *
 * Decode (`evict_decode`, before the step's attention; the seam records the eviction before
 * attention, so the decision uses the weights of the previous step's query, which saw exactly
 * the entries now stored): while a page holds fewer than `budget` entries the token is
 * appended; then the slot with the lowest score outside the recent window (H2O; TOVA has none)
 * is recycled, ties to the oldest position. `budget` counts the incoming token, so this equals
 * the papers' "add, attend, evict the minimum" with a cache of budget − 1 plus the new token,
 * and the live entries never exceed the budget. A group of pages decides together with scores
 * summed over it: TOVA's group is the Hkv pages of a sequence (one decision per layer, the same
 * slot in every head), H2O's one page (a budget per head).
 *
 * Prefill (`keep_newest`): the prefill attention kernel does not produce weights, so a chunk that
 * overflows the budget keeps the newest `budget` entries (old ones leave first, oldest first);
 * the chunk's entries score 0 (TOVA: every score is reset, so the first eviction after a full
 * prefill takes the oldest entry). To apply the rule at every prompt token, feed the prompt in
 * one-token chunks (`generate`'s `prefillChunk: 1`): a one-token step is a decode step.
 *
 * @example The CPU twin of a decision: the lowest summed score outside the recent window
 * ```ts
 * import { evictionVictim } from "./score_evict.ts";
 * // positions 0..3 at slots 0..3, scores of one page, incoming token at t = 4, recent 2
 * console.log(evictionVictim([0, 1, 2, 3], [[0.5, 0.1, 0.3, 0.05]], 4, 2)); // 1
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { appendMarks } from "../cache/paged_kv.ts";
import { dispatchBound } from "../cache/dispatch_bound.ts";
import type { DecodeProbsOutput } from "../cache/paged_attention.ts";
import type { PagedKvStorage } from "../cache/paged_storage.ts";
import type { CachePolicy, PolicyStep } from "../cache/policy.ts";

/** How a score-based policy decides; see the module documentation. */
export interface ScoreEvictRule {
  /** Policy name ("tova", "h2o"). */
  name: string;
  /** Entries per page at most (counts the incoming token). */
  budget: number;
  /** Protected recent window (counts the incoming token); 0: none. */
  recent: number;
  /** true: pages of a sequence decide together (TOVA); false: each page alone (H2O). */
  perSequence: boolean;
  /** true: scores accumulate over decode steps (H2O); false: the last query's weights (TOVA). */
  accumulate: boolean;
}

/** The shared policy: a {@linkcode CachePolicy} for a {@linkcode ScoreEvictRule}. */
export class ScoreEvictPolicy implements CachePolicy {
  /** The rule's name. */
  readonly name: string;
  /** 0: nothing is marked. */
  readonly window = 0;
  /** false: decisions are ignored. */
  readonly usesDecisions = false;
  /** The rule. */
  readonly rule: Readonly<ScoreEvictRule>;
  #s: PagedKvStorage | undefined;
  #scores: GPUBuffer | undefined;
  #holes: GPUBuffer | undefined;

  /** A policy for `rule` (validated by the create functions). */
  constructor(rule: ScoreEvictRule) {
    this.rule = { ...rule };
    this.name = rule.name;
  }

  /** Allocates the scores `[layers, pages, budget]` (zeroed) and the holes `[pages, budget]`. */
  attach(storage: PagedKvStorage): void {
    const gpu = storage.gpu, b = this.rule.budget;
    this.#s = storage;
    this.#scores = gpu.alloc(storage.layers * storage.pages * b * 4, `${this.name} scores`);
    gpu.encoder().clearBuffer(this.#scores);
    this.#holes = gpu.alloc(storage.pages * b * 4, `${this.name} holes`);
  }

  /** Appends below the budget, else recycles the victim's slot (kernel `evict_decode`). */
  decodeUpdate(step: PolicyStep): void {
    const s = this.#storage, gsz = this.rule.perSequence ? s.kvHeads : 1;
    this.#run("evict_decode", step, s.pages / gsz, gsz);
  }

  /** The step's attention also writes the entries' probabilities into the scores. */
  decodeAttention(step: PolicyStep): { probs: DecodeProbsOutput } {
    const s = this.#storage;
    return {
      probs: {
        buffer: this.#scores!,
        offset: step.layer * s.pages * this.rule.budget,
        stride: this.rule.budget,
        accumulate: this.rule.accumulate,
      },
    };
  }

  /** Marks real tokens 0 and padding 2 (the plain append's marks). */
  prefillMarks(step: PolicyStep): void {
    appendMarks(this.#storage, step.n, step.firstReal, step.marks);
  }

  /** Keeps the newest `budget` entries (kernel `keep_newest`). */
  prefillCompact(step: PolicyStep): void {
    this.#run("keep_newest", step, this.#storage.pages, 1);
  }

  /** Reads one layer's scores back, `[pages, budget]` (slot order). For tests and debugging. */
  async readScores(layer: number): Promise<Float32Array> {
    const s = this.#storage, size = s.pages * this.rule.budget * 4;
    const all = await s.gpu.read(this.#scores!, (layer + 1) * size);
    return new Float32Array(all, layer * size, s.pages * this.rule.budget);
  }

  /** Frees the scores and the holes. Idempotent. */
  dispose(): void {
    if (!this.#s) return;
    this.#s.gpu.release(this.#scores!);
    this.#s.gpu.release(this.#holes!);
    this.#s = undefined;
  }

  /** `using policy = ...` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  get #storage(): PagedKvStorage {
    if (!this.#s) throw new Error(`${this.name} policy: not attached to a storage (or disposed)`);
    return this.#s;
  }

  #run(entry: string, step: PolicyStep, groups: number, gsz: number): void {
    const s = this.#storage, gpu = s.gpu, r = this.rule;
    const kern = gpu.kernel({ shader: "score_evict", entry, constants: { WG: 64 } });
    const bufs = [
      undefined,
      s.lens,
      s.table,
      s.meta(step.layer),
      this.#scores,
      step.firstReal,
      step.dest,
      this.#holes,
    ];
    dispatchBound(gpu, kern, bufs, Gpu.grid(groups), {
      pages: s.pages,
      hkv: s.kvHeads,
      n: step.n,
      bs: s.blockSize,
      mb: s.tableWidth,
      lbase: step.layer * s.pages,
      t0: step.t0,
      budget: r.budget,
      recent: r.recent,
      gsz,
      keep: r.accumulate ? 1 : 0,
    });
  }
}

/**
 * The CPU twin of `evict_decode`'s choice for one group of pages that share a slot layout: the
 * slot with the lowest score summed over the group among entries outside the recent window
 * (position + recent ≤ t; recent 0: all), ties to the oldest position. −1 if none.
 *
 * @param positions Position held in each slot.
 * @param scores Per page of the group, the score of each slot.
 * @param t Position of the incoming token.
 */
export function evictionVictim(
  positions: readonly number[],
  scores: readonly (ArrayLike<number>)[],
  t: number,
  recent: number,
): number {
  let best = -1, bestScore = Infinity, bestPos = Infinity;
  positions.forEach((pos, s) => {
    if (recent > 0 && pos + recent > t) return;
    // Sum in f32 order as the kernel does.
    let sc = 0;
    for (const row of scores) sc = Math.fround(sc + row[s]);
    if (best < 0 || sc < bestScore || (sc === bestScore && pos < bestPos)) {
      best = s;
      bestScore = sc;
      bestPos = pos;
    }
  });
  return best;
}

/**
 * The CPU twin of `keep_newest` for one page: the positions held per slot after a prefill chunk
 * of real tokens at `chunk` positions, keeping the newest `budget` of old and new entries; freed
 * slots are refilled in slot order, then the page grows.
 *
 * @example
 * ```ts
 * import { keepNewestSlots } from "./score_evict.ts";
 * console.log(keepNewestSlots([5, 1, 3], [7, 8], 4)); // [5, 7, 3, 8]
 * ```
 */
export function keepNewestSlots(
  positions: readonly number[],
  chunk: readonly number[],
  budget: number,
): number[] {
  const drop = Math.max(0, positions.length + chunk.length - budget);
  const order = [...positions].sort((a, b) => a - b);
  const gone = new Set(order.slice(0, Math.min(drop, positions.length)));
  const stay = chunk.slice(Math.max(0, drop - positions.length));
  const out = [...positions];
  const holes = out.flatMap((pos, s) => (gone.has(pos) ? [s] : []));
  stay.forEach((pos, i) => {
    if (i < holes.length) out[holes[i]] = pos;
    else out.push(pos);
  });
  return out;
}
