/**
 * The `CachePolicy` seam: what an eviction policy decides on the paged storage. The generic
 * cache ({@linkcode ./paged_kv_cache.ts}) owns the storage, the step bookkeeping, attention
 * and the accounting; a policy only records the GPU work that chooses, for each page, which
 * slot each new entry takes and which stored entries leave (keeping slots 0..len−1 dense and
 * updating `lens`). One policy per file: dense (`src/policies/dense.ts`), DMS
 * (`src/dms/dms_cache.ts`, SPEC §5); TOVA, H2O, StreamingLLM and Quest fill the same hooks
 * (their per-entry scores through {@linkcode CachePolicy.score}).
 *
 * The cache calls, per layer of a step (all recorded on the GPU, nothing read back):
 * - decode (n = 1, no padding): `storage.ensure(+1)` → {@linkcode CachePolicy.decodeUpdate}
 *   (dest[p], marks[p], lens) → `scatterEntries` (./paged_kv.ts) → attention over the pages
 *   (the first two as one dispatch where the policy has {@linkcode CachePolicy.decodeAppend});
 * - prefill chunk: {@linkcode CachePolicy.prefillMarks} (marks[p, j], 2 = padding) → attention
 *   over the pages plus the chunk's own keys with those marks → `storage.ensure(+real tokens)`
 *   → {@linkcode CachePolicy.prefillCompact} (drops, dest[p, j], lens) → `scatterEntries`.
 * Attention always applies the SPEC §5.1 rule with the policy's {@linkcode CachePolicy.window}
 * to the stored (position, mark) pairs, so a policy that keeps every visible key is exact.
 *
 * @example A policy's shape (dense: append every real token, mark nothing)
 * ```ts ignore
 * const policy: CachePolicy = {
 *   name: "dense", window: 0, usesDecisions: false,
 *   attach(storage) {}, decodeUpdate(step) {}, prefillMarks(step) {}, prefillCompact(step) {},
 *   dispose() {}, [Symbol.dispose]() {},
 * };
 * ```
 *
 * @module
 */

import type { Tensor } from "../tensor/tensor.ts";
import type { DecodeSlots } from "./kv_cache.ts";
import type { PagedAttentionArgs } from "./paged_attention.ts";
import type { PagedKvStorage } from "./paged_storage.ts";

/** The buffers and sizes of one policy call (one layer of one step). */
export interface PolicyStep {
  /** Decoder layer. */
  readonly layer: number;
  /** Tokens in this call (1 in decode). */
  readonly n: number;
  /** Position of the call's first token (= tokens seen before this step, padding included). */
  readonly t0: number;
  /** `[B, Hkv, n]` i32 hard decisions (unshifted, SPEC §2), or zeros when the caller gave none. */
  readonly decisions: GPUBuffer;
  /** `[B]` i32: index of each row's first real (non-padding) token in this call (n if none). */
  readonly firstReal: GPUBuffer;
  /** `[pages, n]` i32 the policy writes: mark of each entry (0 keep, 1 marked, 2 padding). */
  readonly marks: GPUBuffer;
  /** `[pages, n]` i32 the policy writes: slot of each entry, −1 = not stored. */
  readonly dest: GPUBuffer;
}

/** An eviction policy on the paged storage; see the module documentation. */
export interface CachePolicy extends Disposable {
  /** Short name for messages ("dense", "dms", ...). */
  readonly name: string;
  /** W of SPEC §5.1: a marked entry stays visible for distances 0..W. */
  readonly window: number;
  /** Whether `KvCache.attend`'s decisions are required (else ignored). */
  readonly usesDecisions: boolean;
  /**
   * True when a decode step's dispatches depend on nothing the policy keeps on the CPU (every
   * step of its decode path is the same dispatches but for the position): the cache may then
   * replay them (`KvCache.replayDecodeStep`). Absent: false.
   */
  readonly replaySafe?: boolean;
  /**
   * True when a decode step's new entry always goes to slot `len` with mark 0 and nothing else
   * changes (no eviction, no state of the policy's own): a kernel may then append it
   * (`KvCache.decodeAppendTarget`). Absent: false.
   */
  readonly appendsInPlace?: boolean;
  /**
   * Optional: the slot choice of decode token `t0` for every layer at once, before the step's
   * first layer (for `KvCache.decodeAppendTarget`; the model's kernel then writes the entries
   * and whatever else the update does). Undefined (nothing run) where the policy cannot split its
   * update so.
   */
  decodeSlots?(t0: number): DecodeSlots | undefined;
  /** Called once by the cache: allocate per-layer, per-page state for `storage`. */
  attach(storage: PagedKvStorage): void;
  /**
   * Decode token at position `t0`: choose `dest[p]` (a recycled slot, or len to append), write
   * `marks[p]`, update `lens` and any marks of older entries. Blocks for len + 1 exist.
   */
  decodeUpdate(step: PolicyStep): void;
  /**
   * Optional fused decode: {@linkcode CachePolicy.decodeUpdate} and the new entry's scatter (K,
   * V, position t0, mark 0) in one dispatch, leaving the storage exactly as the two would.
   * Returns false when it cannot on this device (the cache then calls `decodeUpdate` and
   * `scatterEntries`).
   *
   * @param k `[B, Hkv, 1, D]` the new keys.
   * @param v `[B, Hkv, 1, D]` the new values.
   */
  decodeAppend?(step: PolicyStep, k: Tensor, v: Tensor): boolean;
  /** Prefill, before attention: write the chunk's marks `[pages, n]` (2 for padding). */
  prefillMarks(step: PolicyStep): void;
  /**
   * Prefill, after attention: drop the entries no later query may see, write `dest[p, j]` for
   * the chunk's survivors (freed slots first, then len, len+1, ...) and the new `lens`. Blocks
   * for len + (real tokens of the chunk) exist.
   */
  prefillCompact(step: PolicyStep): void;
  /**
   * Per-entry score hook for score-based baselines (TOVA, H2O, Quest): called with the step's
   * queries before {@linkcode CachePolicy.decodeUpdate} / {@linkcode CachePolicy.prefillCompact},
   * to accumulate scores of the stored entries into the policy's own state. Dense and DMS do
   * not score.
   *
   * @param q `[B, Hq, n, D]` post-RoPE queries.
   */
  score?(step: PolicyStep, q: Tensor): void;
  /**
   * Extra inputs and outputs of this decode step's attention, asked for after
   * {@linkcode CachePolicy.decodeUpdate}: `probs` (the kernel also writes each entry's
   * attention probability, for TOVA and H2O) and `chunks` (attend only to selected key chunks,
   * for Quest). Absent or undefined: plain attention.
   */
  decodeAttention?(step: PolicyStep): Pick<PagedAttentionArgs, "probs" | "chunks"> | undefined;
  /**
   * Optional: copies this policy's per-page state of sequence `row` of `src` (a policy of the
   * same kind and settings, attached to a storage of the same geometry) into every sequence of
   * its own storage, for `PagedKvCache.copySequenceFrom`. Absent: the cache refuses to
   * copy (a policy with state it cannot copy, e.g. accumulated scores).
   */
  copySequenceFrom?(src: CachePolicy, row: number): Promise<void>;
  /** Frees the policy's GPU buffers. Idempotent. */
  dispose(): void;
}
