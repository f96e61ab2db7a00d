/**
 * A recorded run of a KV cache: {@linkcode TracedKvCache} wraps a paged cache and, after the last
 * layer of every step, copies the per-page live lengths `lens:[layers, pages]` into a buffer of
 * its own (a GPU copy recorded in order with the step's dispatches: nothing reads back until
 * {@linkcode TracedKvCache.trace}). From the trace {@linkcode traceBudgets} recomputes the budgets
 * of SPEC §8 by brute force — KV reads `Σ decode steps Σ layers Σ pages current length` and the
 * peak `max over steps Σ live entries` — and the peak of any group of rows (the chains of one
 * problem that run together), which the cache's own counters (whole batch) cannot give.
 *
 * Pages are `b · kvHeads + h` (row-major over the batch), as in {@linkcode KvCacheStats.lengths}.
 *
 * @example Budgets of one generation, per group of 2 chains
 * ```ts ignore
 * const traced = new TracedKvCache(createCacheFor(model, 4, "dense"));
 * await drain(generate(model, prompts, { maxTokens: 8, cache: traced }));
 * const b = traceBudgets(await traced.trace(), 2);
 * console.log(b.reads, b.peak, b.groupPeaks); // groupPeaks: [2] (rows 0–1, rows 2–3)
 * ```
 *
 * @module
 */

import type { AttendOptions, KvCache, KvCacheStats } from "../cache/kv_cache.ts";
import { PagedKvCache } from "../cache/paged_kv_cache.ts";
import type { Gpu } from "../gpu/device.ts";
import type { ReadRange } from "../gpu/readback.ts";
import type { Tensor } from "../tensor/tensor.ts";

/** The lengths after every step of a run. */
export interface KvTrace {
  /** Decoder layers. */
  layers: number;
  /** Sequences (rows). */
  batch: number;
  /** KV heads per layer (pages per row). */
  kvHeads: number;
  /** Per step: whether it was a decode step (one token, no padding mask) or a prefill chunk. */
  decode: boolean[];
  /** Per step: live entries `[layers · pages]` after it, layer-major, page `b · kvHeads + h`. */
  lengths: Int32Array[];
}

/** The budgets of a trace (SPEC §8), see {@linkcode traceBudgets}. */
export interface TraceBudgets {
  /** Σ decode steps Σ layers Σ pages of the length after the step (the whole batch). */
  reads: number;
  /** Decode steps. */
  decodeSteps: number;
  /** max over steps (prefill chunks included) of Σ layers Σ pages live entries (the whole batch). */
  peak: number;
  /** Per group of `groupRows` consecutive rows: max over steps of the group's live entries. */
  groupPeaks: number[];
  /** Per row: Σ decode steps Σ layers Σ its pages of the length. */
  rowReads: number[];
}

/**
 * Recomputes the budgets of a run from its trace by brute force (plain loops over steps, layers
 * and pages).
 *
 * @param trace The recorded run ({@linkcode TracedKvCache.trace}).
 * @param groupRows Rows per group for `groupPeaks` (default 1); must divide `trace.batch`.
 * @throws {RangeError} When `groupRows` does not divide the batch or a step has the wrong size.
 */
export function traceBudgets(trace: KvTrace, groupRows = 1): TraceBudgets {
  const { layers, batch, kvHeads } = trace;
  if (!(Number.isInteger(groupRows) && groupRows >= 1 && batch % groupRows === 0)) {
    throw new RangeError(
      `traceBudgets: groupRows must be a positive divisor of the batch ${batch}, got ${groupRows}`,
    );
  }
  const pages = batch * kvHeads, groups = batch / groupRows;
  const groupPeaks = new Array<number>(groups).fill(0);
  const rowReads = new Array<number>(batch).fill(0);
  let reads = 0, decodeSteps = 0, peak = 0;
  trace.lengths.forEach((lens, s) => {
    if (lens.length !== layers * pages) {
      throw new RangeError(
        `traceBudgets: step ${s} has ${lens.length} lengths, expected layers·pages = ${
          layers * pages
        }`,
      );
    }
    const row = new Array<number>(batch).fill(0);
    for (let l = 0; l < layers; l++) {
      for (let p = 0; p < pages; p++) row[Math.floor(p / kvHeads)] += lens[l * pages + p];
    }
    const total = row.reduce((a, b) => a + b, 0);
    peak = Math.max(peak, total);
    for (let g = 0; g < groups; g++) {
      let live = 0;
      for (let b = g * groupRows; b < (g + 1) * groupRows; b++) live += row[b];
      groupPeaks[g] = Math.max(groupPeaks[g], live);
    }
    if (trace.decode[s]) {
      decodeSteps++;
      reads += total;
      row.forEach((x, b) => rowReads[b] += x);
    }
  });
  return { reads, decodeSteps, peak, groupPeaks, rowReads };
}

/**
 * A {@linkcode KvCache} that forwards everything to a paged cache and records the live lengths
 * after every step (see the module documentation). It owns the inner cache: disposing it disposes
 * both.
 */
export class TracedKvCache implements KvCache {
  /** The wrapped cache. */
  readonly inner: PagedKvCache;
  readonly #gpu: Gpu;
  readonly #bytes: number;
  readonly #steps: GPUBuffer[] = [];
  readonly #decode: boolean[] = [];
  #n = 0;
  #masked = false;

  /**
   * Wraps `inner` (and takes ownership of it).
   *
   * @param inner A cache on paged storage (dense, DMS or a baseline policy).
   * @throws {TypeError} When `inner` is not a `PagedKvCache` (its lengths cannot be traced).
   */
  constructor(inner: KvCache) {
    if (!(inner instanceof PagedKvCache)) {
      throw new TypeError(
        "TracedKvCache: the cache must be a PagedKvCache (paged storage with a policy) to trace its lengths",
      );
    }
    this.inner = inner;
    this.#gpu = inner.storage.gpu;
    this.#bytes = inner.layers * inner.storage.pages * 4;
  }

  /** Decoder layers. */
  get layers(): number {
    return this.inner.layers;
  }
  /** Sequences. */
  get batch(): number {
    return this.inner.batch;
  }
  /** KV heads. */
  get kvHeads(): number {
    return this.inner.kvHeads;
  }
  /** Head dim. */
  get headDim(): number {
    return this.inner.headDim;
  }
  /** Storage dtype. */
  get dtype(): "f32" | "f16" {
    return this.inner.dtype;
  }
  /** Positions processed so far. */
  get tokensSeen(): number {
    return this.inner.tokensSeen;
  }

  /** See {@linkcode KvCache.attend}; after the last layer the lengths are copied to the trace. */
  attend(
    layer: number,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    decisions?: Tensor,
    options?: AttendOptions,
  ): Tensor {
    if (layer === 0) {
      this.#n = k.shape[2];
      this.#masked = options?.keyMask !== undefined;
    }
    const out = this.inner.attend(layer, q, k, v, decisions, options);
    if (layer === this.layers - 1) {
      const buf = this.#gpu.alloc(this.#bytes, "kv trace step");
      this.#gpu.encoder().copyBufferToBuffer(this.inner.storage.lens, 0, buf, 0, this.#bytes);
      this.#steps.push(buf);
      this.#decode.push(this.#n === 1 && !this.#masked);
    }
    return out;
  }

  /** See {@linkcode KvCache.reserve}. */
  reserve(steps: number): Promise<void> {
    return this.inner.reserve(steps);
  }

  /** See {@linkcode KvCache.stats}. */
  stats(): Promise<KvCacheStats> {
    return this.inner.stats();
  }
  /** See {@linkcode KvCache.reserveAndRead}. */
  reserveAndRead(
    steps: number | ((extra: ArrayBuffer[]) => number),
    extra: readonly ReadRange[],
  ): Promise<{ bytes: ArrayBuffer[]; stats: KvCacheStats }> {
    return this.inner.reserveAndRead(steps, extra);
  }

  /** Reads the recorded lengths back (one readback). */
  async trace(): Promise<KvTrace> {
    const bufs = await this.#gpu.readMany(
      this.#steps.map((buffer) => ({ buffer, size: this.#bytes })),
    );
    return {
      layers: this.layers,
      batch: this.batch,
      kvHeads: this.kvHeads,
      decode: [...this.#decode],
      lengths: bufs.map((b) => new Int32Array(b)),
    };
  }

  /** Frees the trace buffers and the inner cache. Idempotent. */
  dispose(): void {
    for (const b of this.#steps.splice(0)) this.#gpu.release(b);
    this.inner.dispose();
  }

  /** `using cache = ...` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
