/**
 * The bookkeeping of decode entries a kernel stores itself (`KvCache.decodeAppendTarget`), for
 * {@linkcode ./paged_kv_cache.ts}: which layer's entry was stored, the slots a policy chose for
 * every layer of the step (`CachePolicy.decodeSlots`), and the checks `attend` makes against them.
 *
 * @module
 */

import type { DecodeAppendTarget, DecodeSlots } from "./kv_cache.ts";
import type { CachePolicy } from "./policy.ts";
import type { PagedKvStorage } from "./paged_storage.ts";

/** One cache's stored-entry state across a step. */
export class DecodeAppends {
  #appended = -1; // the layer whose decode entry a kernel stored, or -1
  #slots: DecodeSlots | undefined; // this step's slots for every layer (DMS)

  /**
   * The target of `layer`'s entry at position `t0`, or undefined (nothing changed): a policy that
   * appends in place gets `storage.ensure(layer, 1)`; one with `decodeSlots`, for a caller that
   * `decides`, at layer 0 the blocks of every layer and the policy's slot dispatch, at later layers
   * that dispatch's slots.
   */
  target(
    s: PagedKvStorage,
    policy: CachePolicy,
    layer: number,
    t0: number,
    decides: boolean,
  ): DecodeAppendTarget | undefined {
    if (policy.appendsInPlace) {
      s.ensure(layer, 1);
    } else {
      if (!decides || !policy.decodeSlots) return undefined;
      if (layer === 0) {
        for (let l = 0; l < s.layers; l++) s.ensure(l, 1);
        this.#slots = policy.decodeSlots(t0);
      }
      if (!this.#slots) return undefined;
    }
    this.#appended = layer;
    const pool = s.pool(layer);
    const { lens, table, blockSize, tableWidth } = s;
    return {
      lens,
      table,
      meta: pool.meta,
      k: pool.k,
      v: pool.v,
      lbase: layer * s.pages,
      blockSize,
      tableWidth,
      t0,
      slots: this.#slots,
    };
  }

  /**
   * Called by `attend(layer, ...)` with the step's n and key mask: whether a kernel stored this
   * layer's entry (then the cache skips its append); clears the mark.
   *
   * @throws {RangeError} A stored entry for anything but a decode step (n = 1, no mask), or a
   *   layer without one in a step whose slots were chosen for every layer (naming `op`).
   */
  take(op: string, layer: number, n: number, keyMask: unknown): boolean {
    const appended = this.#appended === layer;
    if (appended && (n !== 1 || keyMask !== undefined)) {
      throw new RangeError(
        `${op}: layer ${layer}'s entry was stored through decodeAppendTarget, which is for a ` +
          `decode step (n = 1, no keyMask), got n = ${n}` +
          (keyMask !== undefined ? " and a keyMask" : ""),
      );
    }
    if (this.#slots && !appended) {
      // The policy chose every layer's slot at layer 0: its own update would run twice.
      throw new RangeError(
        `${op}: this step's slots were chosen for every layer (decodeAppendTarget at layer 0), ` +
          `so layer ${layer}'s entry must be stored through decodeAppendTarget too`,
      );
    }
    this.#appended = -1;
    return appended;
  }

  /** At the end of a step: the step's slots are spent. */
  endStep(): void {
    this.#slots = undefined;
  }
}
