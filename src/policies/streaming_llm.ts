/**
 * StreamingLLM (Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks",
 * https://arxiv.org/abs/2309.17453) on the paged storage: each page keeps its first `sinks`
 * tokens (the attention sinks) and its last `recent` tokens; every older token leaves and its
 * slot is recycled by the next one. Budget per page = sinks + recent, in prefill and decode.
 *
 * How it maps onto the {@linkcode CachePolicy} seam (kernels in `shaders/streaming_llm.wgsl`):
 * - The rule is a function of the real token index r alone, so the policy keeps one counter per
 *   layer and page (real tokens stored) and places token r at slot r while the page has room,
 *   then at `sinks + (r − sinks) mod recent`: the recent window is a ring over the slots after
 *   the sinks, and the new token overwrites exactly the token that leaves it.
 * - Marks: sinks 0, every other entry 1, with the policy's window W = recent − 1. The SPEC §5.1
 *   rule that attention applies then shows a query exactly the sinks plus its last `recent`
 *   keys, also for the queries inside a prefill chunk (whose keys are attended before the
 *   chunk is compacted), so a chunked prefill equals token-by-token decode, and the dense §5.1
 *   oracle with these marks is this policy's attention oracle.
 * - Decode (`stream_slots`): dest = slot(r), the mark, lens = min(r + 1, budget). Prefill
 *   (`stream_marks` before attention, `stream_slots` after): the chunk's survivors (r < sinks or
 *   r ≥ total − recent) go to slot(r), the rest are never stored.
 * No attention weights are needed (no `score` or `decodeAttention` hook).
 *
 * CPU twin: {@linkcode streamingSlots}, the slot array a page holds after a sequence of chunks.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { createStreamingLlmCache } from "./streaming_llm.ts";
 * const gpu = await getGpu();
 * using cache = createStreamingLlmCache(gpu, { layers: 2, batch: 1, kvHeads: 2, headDim: 64, budget: 64, sinks: 4 });
 * console.log(cache.policy.name, cache.policy.window); // "streaming" 59
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { dispatchBound } from "../cache/dispatch_bound.ts";
import { PagedKvCache } from "../cache/paged_kv_cache.ts";
import type { PagedKvStorage } from "../cache/paged_storage.ts";
import type { CachePolicy, PolicyStep } from "../cache/policy.ts";
import type { DenseCacheOptions } from "./dense.ts";
import { intAtLeast } from "./_options.ts";

/** Options of {@linkcode createStreamingLlmCache}. */
export interface StreamingLlmCacheOptions extends DenseCacheOptions {
  /** Entries per page at most: sinks + recent. Must be ≥ sinks + 1. */
  budget: number;
  /** Attention sinks: the first tokens of each page, kept forever. Default 4. */
  sinks?: number;
}

/**
 * Creates a StreamingLLM KV cache (sinks + recent window per page) on the paged storage.
 *
 * @throws {RangeError} For a budget below sinks + 1, negative sinks, or bad sizes (naming the
 *   field).
 */
export function createStreamingLlmCache(
  gpu: Gpu,
  options: StreamingLlmCacheOptions,
): PagedKvCache {
  const op = "createStreamingLlmCache";
  const sinks = intAtLeast(op, "sinks", options.sinks ?? 4, 0);
  const budget = intAtLeast(op, "budget", options.budget, sinks + 1);
  const blockSize = intAtLeast(op, "blockSize", options.blockSize ?? Math.min(256, budget), 1);
  const policy = new StreamingLlmPolicy(sinks, budget - sinks);
  return new PagedKvCache(gpu, { ...options, blockSize }, policy, "StreamingLlmCache");
}

/** The StreamingLLM policy; see the module documentation. */
export class StreamingLlmPolicy implements CachePolicy {
  /** "streaming". */
  readonly name = "streaming";
  /** W = recent − 1: a non-sink entry is visible to queries at distance 0..recent − 1. */
  readonly window: number;
  /** false: decisions are ignored. */
  readonly usesDecisions = false;
  /** Attention sinks per page. */
  readonly sinks: number;
  /** Recent window per page (includes the newest token). */
  readonly recent: number;
  #s: PagedKvStorage | undefined;
  #seen: GPUBuffer | undefined;

  /** A policy keeping `sinks` first and `recent` last tokens per page (recent ≥ 1). */
  constructor(sinks: number, recent: number) {
    intAtLeast("StreamingLlmPolicy", "sinks", sinks, 0);
    intAtLeast("StreamingLlmPolicy", "recent", recent, 1);
    this.sinks = sinks;
    this.recent = recent;
    this.window = recent - 1;
  }

  /** Entries per page at most: sinks + recent. */
  get budget(): number {
    return this.sinks + this.recent;
  }

  /** Allocates the real-token counters `[layers, pages]` (zeroed). */
  attach(storage: PagedKvStorage): void {
    this.#s = storage;
    this.#seen = storage.gpu.alloc(storage.layers * storage.pages * 4, "streaming seen");
    storage.gpu.encoder().clearBuffer(this.#seen);
  }

  /** The token takes slot(r); the token leaving the window is overwritten. */
  decodeUpdate(step: PolicyStep): void {
    this.#run("stream_slots", step, this.#storage.pages, true);
  }

  /** Marks: 2 padding, 0 sinks, 1 the rest. */
  prefillMarks(step: PolicyStep): void {
    this.#run("stream_marks", step, Math.ceil((this.#storage.pages * step.n) / 64), false);
  }

  /** The chunk's survivors go to slot(r), the others are not stored. */
  prefillCompact(step: PolicyStep): void {
    this.#run("stream_slots", step, this.#storage.pages, false);
  }

  /** Frees the counters. Idempotent. */
  dispose(): void {
    if (!this.#s) return;
    this.#s.gpu.release(this.#seen!);
    this.#s = undefined;
  }

  /** `using policy = ...` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  get #storage(): PagedKvStorage {
    if (!this.#s) throw new Error("StreamingLlmPolicy: not attached to a storage (or disposed)");
    return this.#s;
  }

  #run(entry: string, step: PolicyStep, groups: number, decode: boolean): void {
    const s = this.#storage, gpu = s.gpu;
    const kern = gpu.kernel({ shader: "streaming_llm", entry, constants: { WG: 64 } });
    const bufs = [undefined, s.lens, this.#seen, step.firstReal, step.marks, step.dest];
    dispatchBound(gpu, kern, bufs, Gpu.grid(groups), {
      pages: s.pages,
      hkv: s.kvHeads,
      n: step.n,
      lbase: step.layer * s.pages,
      sinks: this.sinks,
      recent: this.recent,
      decode: decode ? 1 : 0,
    });
  }
}

/**
 * The CPU twin of the policy for one page: feeds `chunks` real-token counts (a decode step is
 * a chunk of 1) and returns the real token index held in each slot, in slot order — what the
 * GPU page must hold. Token r goes to slot r while r < budget, else to sinks + (r − sinks) mod
 * recent; a chunk's token that would be overwritten within the same chunk is never stored.
 *
 * @example Sinks 1, recent 2, five tokens one by one: slots hold tokens 0, 3, 4
 * ```ts
 * import { streamingSlots } from "./streaming_llm.ts";
 * console.log(streamingSlots([1, 1, 1, 1, 1], 1, 2)); // [0, 4, 3]
 * ```
 */
export function streamingSlots(chunks: readonly number[], sinks: number, recent: number): number[] {
  const slots: number[] = [];
  let seen = 0;
  for (const m of chunks) {
    const total = seen + m;
    for (let r = seen; r < total; r++) {
      if (!(r < sinks || r >= total - recent)) continue; // leaves within the chunk
      const slot = r < sinks + recent ? r : sinks + ((r - sinks) % recent);
      slots[slot] = r;
    }
    seen = total;
  }
  return slots;
}
