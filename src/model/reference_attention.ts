/**
 * The float64 reference of DMS attention: {@linkcode attendPage} (dense
 * softmax attention of G query heads over one KV page, with a per-score hook
 * for masks and biases) and {@linkcode attentionOnlyReference} (SPEC §5.1 with
 * key padding, the oracle of the attention-only conformance cases).
 *
 * @example Attention of one query head over three keys, all visible
 * ```ts
 * import { attendPage } from "./reference_attention.ts";
 * const q = new Float64Array([1, 0, 0, 1, 1, 1]); // [G=1, S=3, D=2]
 * const k = new Float64Array([1, 0, 0, 1, 1, 1]); // [S=3, D=2]
 * const v = new Float64Array([1, 2, 3, 4, 5, 6]); // [S=3, D=2]
 * const out = attendPage(q, k, v, 1, 3, 2, 1, (t, j, s) => (j <= t ? s : -Infinity));
 * console.log(out.subarray(0, 2)); // the first query sees only key 0: [1, 2]
 * ```
 *
 * @module
 */

import { visibilityMask } from "../dms/oracle.ts";

/**
 * Attention over one KV page shared by G query heads, dense softmax.
 * `score(t, j, s)` turns the scaled dot product `s` into the final score;
 * `-Infinity` hides the key. A query with no visible key gets 0.
 * q:[G, S, D] k:[S, D] v:[S, D] -> out:[G, S, D]
 */
export function attendPage(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  G: number,
  S: number,
  D: number,
  scale: number,
  score: (t: number, j: number, s: number) => number,
): Float64Array {
  const out = new Float64Array(G * S * D); // [G, S, D]
  const w = new Float64Array(S); // [S] scores of one query row
  for (let g = 0; g < G; g++) {
    for (let t = 0; t < S; t++) {
      const qr = (g * S + t) * D;
      let max = -Infinity;
      for (let j = 0; j < S; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[qr + d] * k[j * D + d];
        w[j] = score(t, j, s * scale);
        if (w[j] > max) max = w[j];
      }
      if (max === -Infinity) continue; // nothing visible (padded query): output 0
      let sum = 0;
      for (let j = 0; j < S; j++) sum += w[j] = Math.exp(w[j] - max);
      for (let j = 0; j < S; j++) {
        const p = w[j] / sum;
        if (p === 0) continue;
        for (let d = 0; d < D; d++) out[qr + d] += p * v[j * D + d];
      }
    }
  }
  return out;
}

/** Output of {@linkcode attentionOnlyReference}. */
export interface AttentionOnlyOutput {
  /** `[B, Hkv, T, G, D]` attention output per position; 0 at padded queries */
  out: Float64Array;
  /** `[T, B, Hkv, T]` keys visible to query t (SPEC §5.1 with key padding) */
  retainedMask: Int32Array;
  /** `[T, B, Hkv]` number of visible keys (= cache length after token t) */
  retainedCount: Int32Array;
}

/**
 * DMS attention with given decisions and key padding, dense (SPEC §5.1):
 * query t sees key j iff j ≤ t, `keyMask[j] = 1` and (`d[j+1] = 0` or
 * t − j ≤ W). Prefill chunks and decode steps give the same numbers (SPEC
 * §5.3), so one dense pass covers both.
 *
 * @param q `[B*Hkv, T, G, D]` (flash layout: row b·Hkv+h, query head h·G+i)
 * @param k `[B, Hkv, T, D]`
 * @param v `[B, Hkv, T, D]`
 * @param decisions `[B, Hkv, T]` hard decisions, unshifted
 * @param keyMask `[B, T]` 1 = token, 0 = (left) padding
 * @param window W (the cache window minus one)
 */
export function attentionOnlyReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  decisions: ArrayLike<number>,
  keyMask: ArrayLike<number>,
  dims: { B: number; Hkv: number; G: number; T: number; D: number },
  window: number,
  scale: number,
): AttentionOnlyOutput {
  const { B, Hkv, G, T, D } = dims;
  const expect = (name: string, arr: ArrayLike<number>, shape: number[]): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    if (arr.length !== n) {
      throw new RangeError(
        `attentionOnlyReference: ${name}: expected [${
          shape.join(", ")
        }] (${n} values), got ${arr.length}`,
      );
    }
  };
  expect("q", q, [B * Hkv, T, G, D]);
  expect("k", k, [B, Hkv, T, D]);
  expect("v", v, [B, Hkv, T, D]);
  expect("decisions", decisions, [B, Hkv, T]);
  expect("keyMask", keyMask, [B, T]);
  const out = new Float64Array(B * Hkv * T * G * D); // [B, Hkv, T, G, D]
  const retainedMask = new Int32Array(T * B * Hkv * T); // [T, B, Hkv, T]
  const retainedCount = new Int32Array(T * B * Hkv); // [T, B, Hkv]
  for (let b = 0; b < B; b++) {
    const km = Array.from({ length: T }, (_, j) => keyMask[b * T + j]); // [T]
    for (let h = 0; h < Hkv; h++) {
      const p = b * Hkv + h;
      const d = Array.from({ length: T }, (_, t) => decisions[p * T + t]); // [T]
      const vis = visibilityMask(d, window, km); // [T, T]
      // q:[T, G, D] -> [G, T, D]
      const qp = new Float64Array(G * T * D); // [G, T, D]
      for (let t = 0; t < T; t++) {
        for (let g = 0; g < G; g++) {
          for (let e = 0; e < D; e++) qp[(g * T + t) * D + e] = q[((p * T + t) * G + g) * D + e];
        }
      }
      const kp = Float64Array.from({ length: T * D }, (_, i) => k[p * T * D + i]); // [T, D]
      const vp = Float64Array.from({ length: T * D }, (_, i) => v[p * T * D + i]); // [T, D]
      const o = attendPage(
        qp,
        kp,
        vp,
        G,
        T,
        D,
        scale,
        (t, j, s) => (vis[t * T + j] ? s : -Infinity),
      ); // [G, T, D]
      for (let t = 0; t < T; t++) {
        for (let g = 0; g < G; g++) {
          for (let e = 0; e < D; e++) out[((p * T + t) * G + g) * D + e] = o[(g * T + t) * D + e];
        }
        let count = 0;
        for (let j = 0; j <= t; j++) {
          retainedMask[((t * B + b) * Hkv + h) * T + j] = vis[t * T + j];
          count += vis[t * T + j];
        }
        retainedCount[(t * B + b) * Hkv + h] = count;
      }
    }
  }
  return { out, retainedMask, retainedCount };
}
