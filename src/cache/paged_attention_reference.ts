/**
 * The CPU twins of the kernels in `./paged_attention.ts`: paged attention as the dense f64
 * oracle over the same pages (SPEC §5.1 visibility), and the decode kernel's optional per-entry
 * probabilities (`probs`) that the score-based policies read.
 *
 * @module
 */

import { attentionReference } from "../ops/attention.ts";

/** Sizes of {@linkcode pagedAttentionReference}. */
export interface PagedReferenceShape {
  /** Sequences. */
  B: number;
  /** Query heads (a multiple of Hkv). */
  Hq: number;
  /** KV heads (pages per sequence). */
  Hkv: number;
  /** Positions 0..T-1 (queries and keys). */
  T: number;
  /** Head dim. */
  D: number;
}

/** Options of {@linkcode pagedAttentionReference}. */
export interface PagedReferenceOptions {
  /** W: a marked key is visible for distances 0..W. */
  window: number;
  /** `[B, Hkv, T]` 0/1 marks, mark(i) = d(i+1) (SPEC §2); absent: nothing marked (dense). */
  marks?: ArrayLike<number>;
  /** `[B, T]` 1 = token, 0 = left padding. */
  keyMask?: ArrayLike<number>;
  /** Default `D^-0.5`. */
  scale?: number;
}

/**
 * The CPU reference of {@linkcode pagedAttention} over a whole sequence, in f64: every query
 * t over keys 0..t under SPEC §5.1 (causal, padding invisible, a marked key only within
 * distance W). Any cache policy that keeps at least the visible keys must return this.
 *
 * @param q `[B, Hq, T, D]` flat.
 * @param k `[B, Hkv, T, D]` flat.
 * @param v `[B, Hkv, T, D]` flat.
 * @returns `[B, Hq, T, D]`; rows without a visible key are 0.
 *
 * @example One query, two keys, the older one marked and out of the window
 * ```ts
 * import { pagedAttentionReference } from "./paged_attention.ts";
 * const out = pagedAttentionReference([1, 0, 1, 0, 0, 1], [1, 0, 0, 1, 1, 1], [1, 2, 3, 4, 5, 6],
 *   { B: 1, Hq: 1, Hkv: 1, T: 3, D: 2 }, { window: 1, marks: [1, 0, 0] });
 * console.log(out.subarray(4)); // query 2 sees keys 1 and 2 only
 * ```
 */
export function pagedAttentionReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  shape: PagedReferenceShape,
  opts: PagedReferenceOptions,
): Float64Array {
  const { B, Hq, Hkv, T, D } = shape;
  return attentionReference(q, k, v, { B, Hq, Hkv, T, S: T, D }, {
    scale: opts.scale,
    keyMask: opts.keyMask,
    window: opts.window,
    farMask: opts.marks ?? new Uint8Array(B * Hkv * T),
  }).out;
}

/**
 * The CPU twin of the `probs` pass for one page, in f64: the attention probability of each
 * stored entry for the decode query, softmax per query head over the visible entries, averaged
 * over the page's G query heads (invisible or unselected entries get 0; a head that sees no
 * entry contributes 0).
 *
 * @param q `[G, D]` the page's query heads (unscaled).
 * @param keys `[len, D]` the page's keys in slot order.
 * @param visible `[len]` nonzero where the entry is attended.
 * @returns `[len]` probabilities.
 *
 * @example Two equal keys share the probability
 * ```ts
 * import { decodeProbsReference } from "./paged_attention.ts";
 * console.log(decodeProbsReference([1, 0], [1, 0, 1, 0], [1, 1], 1, 2, 1)); // [0.5, 0.5]
 * ```
 */
export function decodeProbsReference(
  q: ArrayLike<number>,
  keys: ArrayLike<number>,
  visible: ArrayLike<number>,
  G: number,
  D: number,
  scale: number,
): Float64Array {
  const len = visible.length;
  const out = new Float64Array(len);
  for (let g = 0; g < G; g++) {
    const sc: number[] = [];
    for (let s = 0; s < len; s++) {
      let d = 0;
      for (let c = 0; c < D; c++) d += q[g * D + c] * keys[s * D + c];
      sc.push(visible[s] ? d * scale : -Infinity);
    }
    const m = Math.max(...sc);
    if (m === -Infinity) continue;
    const w = sc.map((x) => (x === -Infinity ? 0 : Math.exp(x - m)));
    const l = w.reduce((a, b) => a + b, 0);
    for (let s = 0; s < len; s++) out[s] += w[s] / l / G;
  }
  return out;
}
