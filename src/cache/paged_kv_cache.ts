/**
 * `PagedKvCache`: the generic {@linkcode KvCache} — paged per-head storage
 * ({@linkcode ./paged_storage.ts}) plus one {@linkcode CachePolicy} — with the step
 * bookkeeping every policy shares: layer order, left-padding masks, decode vs prefill, the
 * attention of each step ({@linkcode ./paged_attention.ts}) and the accounting (SPEC §5.4, §8).
 * The dense cache (`createDenseCache`, src/policies/dense.ts) and the DMS cache (`DmsCache`,
 * src/dms/dms_cache.ts) are this class with their policy.
 *
 * A step is one `attend` per layer, in order, all with the same n. n = 1 without padding is a
 * decode step, anything else a prefill chunk; {@linkcode ./policy.ts} lists the calls each
 * makes. Positions are column indices: left padding occupies positions too, is never stored
 * (mark 2) and its queries output 0.
 *
 * Accounting (all on the GPU, read back only by {@linkcode PagedKvCache.stats}): per-page live
 * lengths; after the last layer of each step the total live entries, their peak, and in decode
 * the KV entries read (Σ layers Σ pages current length, SPEC §8); the compression ratio as the
 * reference's `get_cr` and as dense/kept.
 *
 * @example A dense cache, one layer, one prefill chunk
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { createDenseCache } from "../policies/dense.ts";
 * const gpu = await getGpu();
 * using cache = createDenseCache(gpu, { layers: 1, batch: 1, kvHeads: 1, headDim: 4 });
 * using q = Tensor.fromArray(gpu, Array(12).fill(0.5), [1, 1, 3, 4]);
 * using out = cache.attend(0, q, q, q);
 * console.log((await cache.stats()).lengths); // [[3]]
 * ```
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import type { ReadRange } from "../gpu/readback.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { AttendOptions, DecodeAppendTarget, KvCache, KvCacheStats } from "./kv_cache.ts";
import { pagedAttention } from "./paged_attention.ts";
import { accountingFrom } from "./accounting.ts";
import {
  checkAttendDecisions,
  checkAttendInputs,
  checkLeftPadding,
  sameMask,
} from "./_attend_checks.ts";
import { copySequence } from "./fork.ts";
import { DecodeAppends } from "./decode_appends.ts";
import { accountStep, scatterEntries } from "./paged_kv.ts";
import { PagedKvStorage, type PagedStorageOptions } from "./paged_storage.ts";
import type { CachePolicy, PolicyStep } from "./policy.ts";

/** A {@linkcode KvCache} on paged storage with one policy; see the module documentation. */
export class PagedKvCache implements KvCache {
  /** The paged storage (shared layout with every other policy). */
  readonly storage: PagedKvStorage;
  /** The eviction policy. */
  readonly policy: CachePolicy;
  /** Decoder layers. */
  readonly layers: number;
  /** Sequences. */
  readonly batch: number;
  /** KV heads. */
  readonly kvHeads: number;
  /** Head dim. */
  readonly headDim: number;
  /** Storage dtype. */
  readonly dtype: "f32" | "f16";
  /**
   * Decode through the policy's fused {@linkcode CachePolicy.decodeAppend} where it has one
   * (default: one dispatch per layer fewer), and offer {@linkcode PagedKvCache.decodeAppendTarget}
   * to the model for a policy that appends in place; false: `decodeUpdate` then
   * `scatterEntries`, the readable path the fused ones equal bit for bit
   * (test/cache/decode_append_test.ts, test/model/decode_append_model_test.ts).
   */
  fusedDecode = true;

  readonly #gpu: Gpu;
  readonly #label: string;
  readonly #fr: GPUBuffer;
  readonly #frHost: Int32Array;
  readonly #step1: { dest: GPUBuffer; marks: GPUBuffer; dummy: GPUBuffer };
  readonly #started: Uint8Array;
  readonly #pad: Float64Array;
  #seen = 0;
  #nextLayer = 0;
  #blocksAtStep = -1; // storage.blocksAllocated after the last step run through attend()
  #stepN = 0;
  #stepPrefill = false;
  #stepMask: Int32Array | undefined;
  #frUploaded: Int32Array | undefined;
  #disposed = false;
  readonly #appends = new DecodeAppends();

  /**
   * Allocates the storage and attaches `policy` to it.
   *
   * @param label Names the cache in error messages (`<label>.attend: ...`).
   */
  constructor(gpu: Gpu, storage: PagedStorageOptions, policy: CachePolicy, label = "PagedKvCache") {
    this.storage = new PagedKvStorage(gpu, storage);
    this.policy = policy;
    policy.attach(this.storage);
    this.#gpu = gpu;
    this.#label = label;
    this.layers = storage.layers;
    this.batch = storage.batch;
    this.kvHeads = storage.kvHeads;
    this.headDim = storage.headDim;
    this.dtype = this.storage.dtype;
    const pages = this.storage.pages;
    this.#fr = gpu.alloc(this.batch * 4, "kv first real");
    this.#frHost = new Int32Array(this.batch);
    gpu.encoder().clearBuffer(this.#fr);
    this.#frUploaded = new Int32Array(this.batch);
    this.#step1 = {
      dest: gpu.alloc(pages * 4, "kv dest"),
      marks: gpu.alloc(pages * 4, "kv marks"),
      dummy: gpu.alloc(16, "kv no decisions"),
    };
    gpu.encoder().clearBuffer(this.#step1.marks);
    gpu.encoder().clearBuffer(this.#step1.dummy);
    this.#started = new Uint8Array(this.batch);
    this.#pad = new Float64Array(this.batch);
  }

  /** Positions processed so far (padding included); advanced after the last layer of a step. */
  get tokensSeen(): number {
    return this.#seen;
  }

  /**
   * Stores the step's k/v for `layer` under the policy and returns attention of q through
   * the cache; see {@linkcode KvCache.attend}.
   *
   * @param decisions `[B, Hkv, n]` i32 hard decisions (unshifted, SPEC §2); required when the
   *   policy uses them, else optional and ignored.
   * @returns `[B, Hq, n, D]`.
   * @throws {RangeError} Wrong shapes (naming them), layers out of order, a keyMask that is not
   *   left padding.
   * @throws {TypeError} Wrong dtypes, missing decisions.
   */
  attend(
    layer: number,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    decisions?: Tensor,
    options: AttendOptions = {},
  ): Tensor {
    const op = `${this.#label}.attend`;
    if (this.#disposed) throw new Error(`${op}: cache used after dispose()`);
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.layers) {
      throw new RangeError(
        `${op}: layer must be an integer in 0..${this.layers - 1}, got ${layer}`,
      );
    }
    if (layer !== this.#nextLayer) {
      throw new RangeError(
        `${op}: layers must be attended in order 0..${this.layers - 1} within a step: ` +
          `expected layer ${this.#nextLayer}, got ${layer}`,
      );
    }
    const n = checkAttendInputs(op, this, q, k, v);
    if (layer > 0 && n !== this.#stepN) {
      throw new RangeError(
        `${op}: layer ${layer} got n = ${n} tokens, but layer 0 of this step got ${this.#stepN}`,
      );
    }
    const appended = this.#appends.take(op, layer, n, options.keyMask);
    // decisions are read by the append alone: none for an entry a kernel stored
    if (!appended) checkAttendDecisions(op, this, this.policy, n, decisions);
    if (layer === 0) {
      this.#beginStep(op, n, options.keyMask);
    } else {
      this.#checkSameMask(op, layer, options.keyMask);
    }
    const scale = options.scale ?? 1 / Math.sqrt(this.headDim);
    const dBuf = this.policy.usesDecisions && decisions ? decisions.buffer : this.#step1.dummy;
    const out = this.#stepPrefill
      ? this.#prefill(layer, q, k, v, dBuf, scale)
      : this.#decode(layer, q, k, v, dBuf, scale, appended);
    if (layer === this.layers - 1) this.#endStep();
    else this.#nextLayer = layer + 1;
    return out;
  }

  /**
   * See {@linkcode KvCache.replayDecodeStep}: true (and the step's CPU side done: each page's
   * bound + 1, the position + 1) when the last step was a plain decode step, the policy is
   * replay-safe, no block was allocated since that step (a readback's `reserveAndRead` may have
   * added some) and every page's blocks hold one more entry: the buffers, the block tables and
   * the kernels' grids (`PagedKvStorage.planLength`) are those of the traced step; else false,
   * nothing changed.
   */
  replayDecodeStep(): boolean {
    if (this.#disposed || this.#nextLayer !== 0 || this.#seen === 0) return false;
    if (this.#stepPrefill || this.#stepN !== 1 || !this.policy.replaySafe) return false;
    // No block since the last encoded step (a readback's reserve may have added some), none now.
    if (this.storage.blocksAllocated !== this.#blocksAtStep || this.storage.needsLengths(1)) {
      return false;
    }
    for (let l = 0; l < this.layers; l++) this.storage.ensure(l, 1);
    this.#seen += 1;
    return true;
  }

  /**
   * See {@linkcode KvCache.decodeAppendTarget} (with {@linkcode PagedKvCache.fusedDecode}): a
   * policy that appends in place gets `storage.ensure(layer, 1)`; one with `decodeSlots` (DMS), for
   * a caller that `decides`, at layer 0 the blocks of every layer and the slot dispatch.
   */
  decodeAppendTarget(
    layer: number,
    dtype: "f32" | "f16",
    decides: boolean,
  ): DecodeAppendTarget | undefined {
    if (this.#disposed || !this.fusedDecode) return undefined;
    if (layer !== this.#nextLayer || dtype !== this.dtype) return undefined;
    return this.#appends.target(this.storage, this.policy, layer, this.#seen, decides);
  }

  /** See {@linkcode KvCache.reserve}: room for `steps` more tokens per page, at most one readback. */
  reserve(steps: number): Promise<void> {
    return this.storage.reserve(steps);
  }

  /** See {@linkcode KvCache.stats}. One readback. Call between steps (after the last layer). */
  async stats(): Promise<KvCacheStats> {
    const { lens, counters } = await this.storage.readCounters();
    return this.#statsFrom(lens, counters);
  }

  /**
   * See {@linkcode KvCache.reserveAndRead}: `extra`, the lengths and the counters in one
   * readback; the accounting is taken as of the readback, before any block is allocated.
   * `during` may encode as many decode steps as every page has room for
   * (`PagedKvStorage.decodeRoom`).
   */
  async reserveAndRead(
    steps: number | ((extra: ArrayBuffer[]) => number),
    extra: readonly ReadRange[],
    during?: (room: number) => number,
  ): Promise<{ bytes: ArrayBuffer[]; stats: KvCacheStats }> {
    const s = this.storage;
    const check = (n: number) => {
      if (!Number.isInteger(n) || n < 0) {
        throw new RangeError(`reserveAndRead: steps must be an integer >= 0, got ${n}`);
      }
      return n;
    };
    if (typeof steps === "number") check(steps);
    const seen = this.#seen;
    // readMany records the copies and submits before it first waits: steps `during` encodes
    // come after them in the queue.
    const reading = s.gpu.readMany([...extra, ...s.counterRanges()]);
    let since = 0;
    if (during) {
      const room = s.decodeRoom();
      try {
        since = during(room);
      } catch (e) {
        await reading.catch(() => {}); // no unhandled rejection of the readback
        throw e;
      }
      if (!Number.isInteger(since) || since < 0 || since > room) {
        throw new RangeError(
          `reserveAndRead: during() must return the steps it encoded, 0..${room}, got ${since}`,
        );
      }
    }
    const all = await reading;
    const bytes = all.slice(0, extra.length);
    const lens = new Int32Array(all[extra.length]);
    const stats = this.#statsFrom(lens, new Uint32Array(all[extra.length + 1]), seen);
    s.reserveFrom(lens, check(typeof steps === "number" ? steps : steps(bytes)), since);
    return { bytes, stats };
  }

  /** The accounting from the lengths `[layers · pages]` and the GPU counters (`seen` positions). */
  #statsFrom(lens: Int32Array, counters: Uint32Array, seen = this.#seen): KvCacheStats {
    const s = this.storage;
    return accountingFrom({
      lens,
      counters,
      seen,
      pad: this.#pad,
      layers: this.layers,
      pages: s.pages,
      kvHeads: this.kvHeads,
      bytesPerToken: s.bytesPerToken,
      allocatedBytes: s.allocatedBytes,
    });
  }

  /**
   * Makes every sequence of this cache a copy of sequence `row` of `src`: its KV entries
   * (positions, marks, K and V), the policy's state and the position, so that B chains can be
   * sampled from one prompt prefilled once (then `generate(model, chains, { cache })` continues
   * from position `src.tokensSeen`). This cache must be fresh (nothing stored yet) and match `src`
   * in layers, KV heads, head dim, dtype, block size and policy. The copy's counters start at
   * zero (reads and peak count from here). One readback of `src`'s lengths (and the DMS ring).
   *
   * @example Eight chains from one prefilled prompt
   * ```ts ignore
   * using one = createCacheFor(model, 1, "dms");
   * // ... prefill the prompt but its last token into `one` (model.forward with `cache: one`, as
   * // bench/chains.ts does: generate() always samples at least one token)
   * using eight = createCacheFor(model, 8, "dms");
   * await eight.copySequenceFrom(one);
   * ```
   *
   * @throws {RangeError} A cache that is not fresh, a row outside `src`'s batch, a geometry that
   *   differs (naming the field), `src` in the middle of a step.
   * @throws {TypeError} A policy that differs from `src`'s or cannot copy its state.
   */
  async copySequenceFrom(src: PagedKvCache, row = 0): Promise<void> {
    const op = `${this.#label}.copySequenceFrom`;
    if (this.#seen !== 0 || this.#nextLayer !== 0) {
      throw new RangeError(`${op}: this cache must be fresh, it has seen ${this.#seen} tokens`);
    }
    if (src.#nextLayer !== 0) {
      throw new RangeError(
        `${op}: the source is in the middle of a step (layer ${src.#nextLayer})`,
      );
    }
    if (
      src.policy.name !== this.policy.name || src.policy.window !== this.policy.window ||
      !this.policy.copySequenceFrom
    ) {
      throw new TypeError(
        `${op}: the ${this.policy.name} policy (window ${this.policy.window}) cannot copy the ` +
          `state of a ${src.policy.name} cache (window ${src.policy.window})`,
      );
    }
    await copySequence(src.storage, this.storage, row);
    await this.policy.copySequenceFrom(src.policy, row);
    this.#seen = src.#seen;
    this.#pad.fill(src.#pad[row]);
    this.#started.fill(src.#started[row]);
  }

  /** Frees the GPU buffers (storage, policy, step buffers). Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.storage.dispose();
    this.policy.dispose();
    const g = this.#gpu;
    for (const b of [this.#fr, this.#step1.dest, this.#step1.marks, this.#step1.dummy]) {
      g.release(b);
    }
  }

  /** `using cache = ...` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  #beginStep(op: string, n: number, keyMask: ArrayLike<number> | undefined): void {
    const B = this.batch;
    const fr = this.#frHost;
    fr.fill(0);
    this.#stepMask = undefined;
    if (keyMask) this.#stepMask = checkLeftPadding(op, keyMask, B, n, this.#started, fr);
    this.#stepN = n;
    this.#stepPrefill = n > 1 || fr.some((f) => f > 0);
    if (this.#stepPrefill && !equal(fr, this.#frUploaded)) {
      this.#gpu.write(this.#fr, fr);
      this.#frUploaded = fr.slice();
    }
  }

  #checkSameMask(op: string, layer: number, keyMask: ArrayLike<number> | undefined): void {
    if (!sameMask(this.#stepMask, keyMask)) {
      throw new RangeError(
        `${op}: layer ${layer} got a different keyMask than layer 0 of this step`,
      );
    }
  }

  #endStep(): void {
    this.#appends.endStep();
    accountStep(this.storage, !this.#stepPrefill);
    this.#blocksAtStep = this.storage.blocksAllocated;
    const n = this.#stepN;
    for (let b = 0; b < this.batch; b++) {
      const f = this.#frHost[b];
      this.#pad[b] += f;
      if (f < n) this.#started[b] = 1;
    }
    this.#seen += n;
    this.#nextLayer = 0;
  }

  #decode(
    layer: number,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    d: GPUBuffer,
    scale: number,
    appended: boolean,
  ): Tensor {
    const s = this.storage, t0 = this.#seen;
    if (!appended) s.ensure(layer, 1);
    const { dest, marks } = this.#step1;
    const step: PolicyStep = { layer, n: 1, t0, decisions: d, firstReal: this.#fr, marks, dest };
    this.policy.score?.(step, q);
    if (appended) {
      // stored by the caller's kernel (decodeAppendTarget): slot len, mark 0
    } else if (!(this.fusedDecode && this.policy.decodeAppend?.(step, k, v))) {
      this.policy.decodeUpdate(step);
      scatterEntries(s, layer, dest, marks, k, v, t0);
    }
    const extras = this.policy.decodeAttention?.(step);
    return pagedAttention(s, layer, q, { t0, window: this.policy.window, scale, ...extras });
  }

  #prefill(layer: number, q: Tensor, k: Tensor, v: Tensor, d: GPUBuffer, scale: number): Tensor {
    const s = this.storage, gpu = this.#gpu, t0 = this.#seen;
    const n = this.#stepN, pages = s.pages;
    const marks = gpu.alloc(pages * n * 4, "kv chunk marks");
    const dest = gpu.alloc(pages * n * 4, "kv chunk dest");
    const step: PolicyStep = { layer, n, t0, decisions: d, firstReal: this.#fr, marks, dest };
    this.policy.prefillMarks(step);
    const out = pagedAttention(s, layer, q, {
      t0,
      window: this.policy.window,
      scale,
      chunk: { k, v, marks },
    });
    s.ensure(layer, (p) => n - this.#frHost[Math.floor(p / this.kvHeads)]);
    this.policy.score?.(step, q);
    this.policy.prefillCompact(step);
    scatterEntries(s, layer, dest, marks, k, v, t0);
    gpu.release(marks);
    gpu.release(dest);
    return out;
  }
}

function equal(a: Int32Array, b: Int32Array | undefined): boolean {
  return b !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);
}
