/**
 * The CPU reference of dense attention (f64), the oracle the kernels of `attention.ts`, the paged
 * attention of `cache/` and the model references are tested against: {@linkcode attentionReference}
 * states the visibility rules of SPEC §3 (training soft mask) and §5.1 (inference) one by one,
 * then a plain max-subtracted softmax; {@linkcode mergeAttentionReference} merges partial
 * attentions over disjoint key sets by their log-sum-exps (flash decoding, SPEC §9.7).
 * `attention.ts` re-exports all of it beside its launcher.
 *
 * Shapes: `q:[B, Hq, T, D]`, `k, v:[B, Hkv, S, D]` (flat, row-major) → `out:[B, Hq, T, D]`,
 * `lse:[B, Hq, T]`; a row without visible keys has zeros and `lse = EMPTY_ROW_LSE`.
 *
 * @example Two keys, one query, plain causal attention
 * ```ts
 * import { attentionReference } from "./attention_reference.ts";
 * const { out } = attentionReference([1], [0, 1], [10, 20], { B: 1, Hq: 1, Hkv: 1, T: 1, S: 2, D: 1 });
 * console.log(out[0]); // (10 + 20e) / (1 + e) ≈ 17.31
 * ```
 *
 * @module
 */

/**
 * The log-sum-exp of a row without visible keys, and the "masked" sentinel of `farBias`: the
 * lowest f32 (`-3.40282346e38` in WGSL: Chromium rejects the shorter `-3.4028235e38`, which rounds past it), standing for `-Infinity`.
 */
export const EMPTY_ROW_LSE: number = -3.4028234663852886e38;

/** Sizes of an attention problem: `q:[B, Hq, T, D]`, `k, v:[B, Hkv, S, D]`. */
export interface AttentionShape {
  /** Batch. */
  B: number;
  /** Query heads (a multiple of `Hkv`). */
  Hq: number;
  /** KV heads. */
  Hkv: number;
  /** Queries. */
  T: number;
  /** Keys. */
  S: number;
  /** Head dim. */
  D: number;
}

/** Options of {@linkcode attentionReference}; the same meaning as in {@linkcode AttentionOptions}, as flat arrays. */
export interface AttentionReferenceOptions {
  /** Default `D^-0.5`. */
  scale?: number;
  /** Default `S - T`. */
  queryOffset?: number;
  /** `[B, S]`, 0 = padding. */
  keyMask?: ArrayLike<number>;
  /** DMS window W; absent = no far terms. */
  window?: number;
  /** `[B, Hkv, S]`, added beyond the window; `<= -3.40282346e38` masks. */
  farBias?: ArrayLike<number>;
  /** `[B, Hkv, S]`, 1 = invisible beyond the window. */
  farMask?: ArrayLike<number>;
}

/** Output of {@linkcode attentionReference}. */
export interface AttentionReferenceResult {
  /** `[B, Hq, T, D]`. */
  out: Float64Array;
  /** `[B, Hq, T]`, {@linkcode EMPTY_ROW_LSE} for rows without visible keys. */
  lse: Float64Array;
}

/**
 * CPU reference of {@linkcode attention} in f64, written for reading: the masking rules of
 * SPEC §3 and §5.1 one by one, then a plain max-subtracted softmax.
 *
 * @param q `[B, Hq, T, D]` flat.
 * @param k `[B, Hkv, S, D]` flat.
 * @param v `[B, Hkv, S, D]` flat.
 * @param shape The sizes.
 * @param opts Scale, query offset, masks and window terms.
 * @returns `out:[B, Hq, T, D]` and `lse:[B, Hq, T]`.
 *
 * @example Two keys, one query, plain causal attention
 * ```ts
 * import { attentionReference } from "./attention.ts";
 * const { out } = attentionReference([1], [0, 1], [10, 20], { B: 1, Hq: 1, Hkv: 1, T: 1, S: 2, D: 1 });
 * console.log(out[0]); // (10 + 20e) / (1 + e) ≈ 17.31
 * ```
 */
export function attentionReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  shape: AttentionShape,
  opts: AttentionReferenceOptions = {},
): AttentionReferenceResult {
  const { B, Hq, Hkv, T, S, D } = shape;
  const need = (name: string, a: ArrayLike<number> | undefined, n: number) => {
    if (a && a.length !== n) {
      throw new RangeError(`attentionReference(): ${name} has ${a.length} values, expected ${n}`);
    }
  };
  if (Hkv < 1 || Hq % Hkv !== 0) {
    throw new RangeError(`attentionReference(): Hq=${Hq} must be a multiple of Hkv=${Hkv}`);
  }
  need("q", q, B * Hq * T * D);
  need("k", k, B * Hkv * S * D);
  need("v", v, B * Hkv * S * D);
  need("keyMask", opts.keyMask, B * S);
  need("farBias", opts.farBias, B * Hkv * S);
  need("farMask", opts.farMask, B * Hkv * S);
  const G = Hq / Hkv;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const queryOffset = opts.queryOffset ?? S - T;
  const W = opts.window ?? Infinity; // no window given: no key is ever "far"
  const { keyMask, farBias, farMask } = opts;

  const out = new Float64Array(B * Hq * T * D);
  const lse = new Float64Array(B * Hq * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      // GQA, HF repeat_kv order: query heads hkv*G .. hkv*G+G-1 share KV head hkv (SPEC §1).
      const hkv = Math.floor(h / G);
      for (let t = 0; t < T; t++) {
        const row = (b * Hq + h) * T + t;
        const qpos = queryOffset + t; // absolute position of this query; key i sits at i
        const keys: number[] = [];
        const scores: number[] = [];
        for (let i = 0; i < S; i++) {
          // Causal (SPEC §3, §5.1): a query never sees a later key.
          if (i > qpos) continue;
          // Padding (SPEC §5.1, left padding): keyMask 0 is never visible.
          if (keyMask && keyMask[b * S + i] === 0) continue;
          let s = 0;
          for (let d = 0; d < D; d++) s += q[row * D + d] * k[((b * Hkv + hkv) * S + i) * D + d];
          s *= scale;
          // Window (SPEC §3: "q - i <= W -> s"): distances 0..W, i.e. the current key and the
          // W before it, are always visible and get nothing added. Only far keys go on.
          if (qpos - i > W) {
            const f = (b * Hkv + hkv) * S + i;
            // SPEC §5.1: a marked key (mark(i) = d(i+1) = 1) is invisible beyond the window.
            if (farMask && farMask[f] !== 0) continue;
            if (farBias) {
              // The "masked" sentinel (lowest f32 or -Infinity) acts exactly like farMask = 1.
              if (farBias[f] <= EMPTY_ROW_LSE) continue;
              // SPEC §3 training soft mask: s + log σ(−z[i+1]) = s + log(1 − α̃[i+1]).
              s += farBias[f];
            }
          }
          keys.push(i);
          scores.push(s);
        }
        // A row without visible keys outputs zeros (SPEC §5.3 step 5 zeroes padded queries).
        if (keys.length === 0) {
          lse[row] = EMPTY_ROW_LSE;
          continue;
        }
        const m = Math.max(...scores);
        let l = 0;
        for (const s of scores) l += Math.exp(s - m);
        for (let j = 0; j < keys.length; j++) {
          const p = Math.exp(scores[j] - m) / l;
          const vb = ((b * Hkv + hkv) * S + keys[j]) * D;
          for (let d = 0; d < D; d++) out[row * D + d] += p * v[vb + d];
        }
        lse[row] = m + Math.log(l);
      }
    }
  }
  return { out, lse };
}

/**
 * Merges partial attentions over disjoint key sets by their log-sum-exps (flash-decoding
 * merge, CPU f64): `out = Σ_p e^(lse_p - m) out_p / Σ_p e^(lse_p - m)` with `m = max_p lse_p`.
 * A part whose row had no visible keys (`lse <= EMPTY_ROW_LSE`) weighs 0 (SPEC §9.7: not 1).
 *
 * @param parts Each `out:[rows, D]` and `lse:[rows]` (flat), e.g. from {@linkcode attention}.
 * @param D Head dim.
 * @returns The merged `out:[rows, D]` and `lse:[rows]`.
 */
export function mergeAttentionReference(
  parts: readonly { out: ArrayLike<number>; lse: ArrayLike<number> }[],
  D: number,
): AttentionReferenceResult {
  const rows = parts.length ? parts[0].lse.length : 0;
  for (const p of parts) {
    if (p.lse.length !== rows || p.out.length !== rows * D) {
      throw new RangeError(
        `mergeAttentionReference(): parts need out:[${rows}, ${D}] and lse:[${rows}], got ` +
          `${p.out.length} and ${p.lse.length} values`,
      );
    }
  }
  const out = new Float64Array(rows * D);
  const lse = new Float64Array(rows).fill(EMPTY_ROW_LSE);
  for (let r = 0; r < rows; r++) {
    const live = parts.filter((p) => p.lse[r] > EMPTY_ROW_LSE);
    if (!live.length) continue; // no part saw a key: zeros
    const m = Math.max(...live.map((p) => p.lse[r]));
    let l = 0;
    for (const p of live) {
      const w = Math.exp(p.lse[r] - m);
      l += w;
      for (let d = 0; d < D; d++) out[r * D + d] += w * p.out[r * D + d];
    }
    for (let d = 0; d < D; d++) out[r * D + d] /= l;
    lse[r] = m + Math.log(l);
  }
  return { out, lse };
}
