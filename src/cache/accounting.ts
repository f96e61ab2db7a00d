/**
 * The accounting of a paged cache (SPEC §5.4, §8): live, peak and read KV entries, their bytes and
 * the compression ratios, from the page lengths and the GPU counters read back in one readback
 * (`PagedKvCache.stats` and `reserveAndRead`).
 *
 * @module
 */

import type { KvCacheStats } from "./kv_cache.ts";

/** What {@linkcode accountingFrom} needs. */
export interface AccountingInputs {
  /** Live entries per page `[layers · pages]`, page `b · Hkv + h`. */
  lens: Int32Array;
  /** The storage's counters: [0, 1] KV reads (low, high word), [3] peak tokens, [4] decode steps. */
  counters: Uint32Array;
  /** Positions processed per page, padding included. */
  seen: number;
  /** Left padding per sequence `[B]`. */
  pad: ArrayLike<number>;
  /** Decoder layers. */
  layers: number;
  /** Pages per layer (B · Hkv). */
  pages: number;
  /** KV heads per sequence. */
  kvHeads: number;
  /** Bytes of K and V per stored token. */
  bytesPerToken: number;
  /** Bytes of the block pools as allocated. */
  allocatedBytes: number;
}

/**
 * The accounting of a paged cache from its lengths and counters.
 *
 * @param a Lengths, counters and the cache's shape.
 * @returns The {@linkcode KvCacheStats}: compression ratio = 1 / mean over pages of len / seen;
 *   dense / kept = Σ (seen − padding) / Σ len.
 */
export function accountingFrom(a: AccountingInputs): KvCacheStats {
  const { lens, counters, seen, pages } = a;
  const lengths: number[][] = [];
  let live = 0, frac = 0, dense = 0;
  for (let l = 0; l < a.layers; l++) {
    const row: number[] = [];
    for (let p = 0; p < pages; p++) {
      const len = lens[l * pages + p];
      row.push(len);
      live += len;
      frac += len / Math.max(seen, 1);
      dense += seen - a.pad[Math.floor(p / a.kvHeads)];
    }
    lengths.push(row);
  }
  const count = a.layers * pages;
  return {
    tokensSeen: seen,
    lengths,
    liveTokens: live,
    peakTokens: counters[3],
    readTokens: counters[0] + counters[1] * 2 ** 32,
    decodeSteps: counters[4],
    liveBytes: live * a.bytesPerToken,
    peakBytes: counters[3] * a.bytesPerToken,
    allocatedBytes: a.allocatedBytes,
    compressionRatio: frac > 0 ? 1 / (frac / count) : 1,
    compressionRatioDenseOverKept: live > 0 ? dense / live : 1,
  };
}
