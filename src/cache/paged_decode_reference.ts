/**
 * The CPU twin of the flash-decoding launcher {@linkcode ./paged_decode.ts}
 * (`pagedDecodeFlash`), in f64, split for split as the kernels compute.
 *
 * @module
 */

import type { FlashDecodeArgs } from "./paged_decode.ts";
import { flashDecodeMinKeys } from "./paged_decode_plan.ts";

/** One page's live entries in slot order, for {@linkcode flashDecodeReference}. */
export interface DecodePage {
  /** `[len]` absolute position of each entry. */
  positions: ArrayLike<number>;
  /** `[len]` mark of each entry: 0 keep, 1 marked (visible for distances 0..W), 2 padding. */
  marks: ArrayLike<number>;
  /** `[len, D]` keys. */
  k: ArrayLike<number>;
  /** `[len, D]` values. */
  v: ArrayLike<number>;
}

/** Sizes and rule of {@linkcode flashDecodeReference}. */
export interface FlashDecodeReferenceOptions extends FlashDecodeArgs {
  /** Query heads per page. */
  G: number;
  /** Head dim. */
  D: number;
  /** Splits per page. */
  np: number;
  /** Keys per split; 0: max(kmin, ceil(len / np)) of each page's length. */
  ps: number;
  /**
   * Smallest adaptive split (default the kernel's untuned one: 64 at G ≤ 2, else 128); pass the
   * planned shape's `KMIN` where a tuning or a default changed it or the split maximum caps it.
   */
  kmin?: number;
}

/**
 * The CPU twin of {@linkcode pagedDecodeFlash}, in f64, written as the kernel computes: per
 * page, per split of the live entries, per query head: max-subtracted softmax statistics
 * (m, l) and the unnormalised output o over the split's visible entries; then the
 * log-sum-exp merge of the splits (a split with l = 0 weighs 0).
 *
 * @param q `[pages, G, D]` (unscaled).
 * @param pages One {@linkcode DecodePage} per page (b·Hkv + h).
 * @returns `[pages, G, D]`; rows with no visible entry are 0.
 *
 * @example One page, two entries, the older marked and out of the window (W = 0)
 * ```ts
 * import { flashDecodeReference } from "./paged_decode_reference.ts";
 * const page = { positions: [0, 1], marks: [1, 0], k: [1, 0, 0, 1], v: [1, 2, 3, 4] };
 * const out = flashDecodeReference([1, 1], [page],
 *   { G: 1, D: 2, t0: 1, window: 0, scale: 1, np: 2, ps: 1 });
 * console.log(out); // [3, 4]: only entry 1 is visible
 * ```
 */
export function flashDecodeReference(
  q: ArrayLike<number>,
  pages: readonly DecodePage[],
  o: FlashDecodeReferenceOptions,
): Float64Array {
  const { G, D, t0, window: W, scale, np } = o;
  const out = new Float64Array(pages.length * G * D);
  pages.forEach((pg, p) => {
    const len = pg.positions.length;
    const ps = o.ps || Math.max(o.kmin ?? flashDecodeMinKeys(G), Math.ceil(len / np));
    const vis = (i: number) => {
      const pos = pg.positions[i], mark = pg.marks[i];
      return pos <= t0 && mark !== 2 && (mark === 0 || t0 - pos <= W);
    };
    for (let g = 0; g < G; g++) {
      const qr = (p * G + g) * D;
      const splits: { m: number; l: number; o: Float64Array }[] = [];
      for (let ks = 0; ks < len; ks += ps) {
        const keys: number[] = [];
        for (let i = ks; i < Math.min(len, ks + ps); i++) if (vis(i)) keys.push(i);
        const sc = keys.map((i) => {
          let d = 0;
          for (let x = 0; x < D; x++) d += q[qr + x] * pg.k[i * D + x];
          return d * scale;
        });
        const m = Math.max(-Infinity, ...sc);
        const acc = new Float64Array(D);
        let l = 0;
        keys.forEach((i, j) => {
          const w = Math.exp(sc[j] - m);
          l += w;
          for (let x = 0; x < D; x++) acc[x] += w * pg.v[i * D + x];
        });
        splits.push({ m, l, o: acc });
      }
      const live = splits.filter((x) => x.l > 0);
      if (!live.length) continue;
      const M = Math.max(...live.map((x) => x.m));
      let l = 0;
      for (const x of live) l += x.l * Math.exp(x.m - M);
      for (const x of live) {
        const w = Math.exp(x.m - M) / l;
        for (let c = 0; c < D; c++) out[qr + c] += w * x.o[c];
      }
    }
  });
  return out;
}
