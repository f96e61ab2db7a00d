/**
 * What NVIDIA's reference cache reports along a run, as the golden vectors
 * store it (conformance README, "Window and eviction" and "Compression
 * ratio"): which rows of `cache_len` / `cache_retained_mask` are observable,
 * the −1 rows that are not, and `DMSCache.get_cr()` after the prefill and after
 * every decode step. One home for the CPU backend (dense reference) and the
 * GPU backend (our paged cache); `get_cr` itself is the oracle's
 * `compressionRatioGetCr` (SPEC §5.4).
 *
 * Layouts: a "page" is one (layer or batch row, KV head) pair, page-major like
 * the decisions `[pages, T]`; masks are `[T, pages, T]`, lengths `[T, pages]`.
 *
 * @example get_cr rows of a 6-token run with a 4-token prompt, one page
 * ```ts
 * import { inferenceObservables } from "./observables.ts";
 * const lengths = new Int32Array([-1, -1, -1, 4, 4, 5]); // [T=6, L=1, Hkv=1]
 * const o = inferenceObservables(lengths, { T: 6, L: 1, Hkv: 1 }, 4, 3);
 * console.log(o.cacheLen, o.crCache); // [-1, -1, -1, 4, 4, 5], [NaN, NaN, NaN, 4, 1.25, 1.2]
 * ```
 *
 * @module
 */

import { compressionRatioGetCr, visibilityMask } from "../dms/oracle.ts";

/** Cache observables of an inference (B) case. */
export interface InferenceObservables {
  /** `[T, L, Hkv]` keys held after token t for t ≥ P−1, −1 before */
  cacheLen: Int32Array;
  /** `[T]` the model's reported cr: `get_cr` at decode rows t ≥ P, NaN before */
  crModel: Float64Array;
  /** `[T]` the cache's `get_cr()` (row P−1: paged part only, see below), NaN before P−1 */
  crCache: Float64Array;
  /** `[T, L]` the cache's per-layer `get_cr` */
  crCachePerLayer: Float64Array;
}

/**
 * The cache observables of a prefill of P tokens followed by one decode step
 * per further token, from the number of keys each page holds (Wc = W + 1):
 * - decode rows t ≥ P: every key lives in the paged cache; `crCache[t]` =
 *   `crModel[t]` = `1 / mean(len / (t+1))`, per layer likewise;
 * - row P−1 (cache still in PREFILL mode): `get_cr` counts only the paged part,
 *   `len − Wc` per page over P tokens; while that part is uninitialised
 *   (P ≤ Wc) it returns 1.0 and the per-layer values stay NaN; `crModel` is NaN
 *   (the model returns None);
 * - rows t < P−1: −1 lengths, NaN ratios (`lengths` is not read there).
 *
 * Edge case not covered by the vectors: P > Wc with every older key evicted in
 * some layer (paged part initialised but empty) gives `Infinity`.
 *
 * @param lengths `[T, L, Hkv]` keys held after token t (read for t ≥ P−1 only)
 * @param dims T tokens, L layers, Hkv KV heads
 * @param promptLen P, in [1, T]
 * @param cacheWindow Wc = W + 1
 * @throws {RangeError} if `lengths` is not `[T, L, Hkv]` or P is out of range
 */
export function inferenceObservables(
  lengths: ArrayLike<number>,
  dims: { readonly T: number; readonly L: number; readonly Hkv: number },
  promptLen: number,
  cacheWindow: number,
): InferenceObservables {
  const { T, L, Hkv } = dims, P = promptLen, Wc = cacheWindow;
  if (lengths.length !== T * L * Hkv) {
    throw new RangeError(
      `inferenceObservables: lengths: expected [${T}, ${L}, ${Hkv}], got ${lengths.length} values`,
    );
  }
  if (!Number.isInteger(P) || P < 1 || P > T) {
    throw new RangeError(`inferenceObservables: promptLen must be in [1, ${T}], got ${P}`);
  }
  const cacheLen = new Int32Array(T * L * Hkv).fill(-1); // [T, L, Hkv]
  for (let i = (P - 1) * L * Hkv; i < T * L * Hkv; i++) cacheLen[i] = lengths[i];
  const crModel = new Float64Array(T).fill(NaN); // [T]
  const crCache = new Float64Array(T).fill(NaN); // [T]
  const crCachePerLayer = new Float64Array(T * L).fill(NaN); // [T, L]
  const lengthsAt = (t: number, minus: number): number[][] =>
    Array.from(
      { length: L },
      (_, l) => Array.from({ length: Hkv }, (_, h) => cacheLen[(t * L + l) * Hkv + h] - minus),
    ); // [L][Hkv]
  // row P−1: only the paged part (keys older than the last Wc) is counted
  if (P <= Wc) {
    crCache[P - 1] = 1; // paged part uninitialised; per-layer values stay NaN
  } else {
    const paged = lengthsAt(P - 1, Wc);
    crCache[P - 1] = compressionRatioGetCr(paged, P);
    for (let l = 0; l < L; l++) {
      crCachePerLayer[(P - 1) * L + l] = compressionRatioGetCr([paged[l]], P);
    }
  }
  // decode rows: everything lives in the paged cache
  for (let t = P; t < T; t++) {
    const lens = lengthsAt(t, 0);
    crCache[t] = crModel[t] = compressionRatioGetCr(lens, t + 1);
    for (let l = 0; l < L; l++) {
      crCachePerLayer[t * L + l] = compressionRatioGetCr([lens[l]], t + 1);
    }
  }
  return { cacheLen, crModel, crCache, crCachePerLayer };
}

/**
 * Rows where a case's cache can be observed. Inference (B): t ≥ P−1 (after
 * the prefill and after every decode step). Attention only (C): the last row
 * of each prefill chunk and every decode row t ≥ S.
 *
 * @returns `[T]` 1 = observable
 */
export function observableRows(
  T: number,
  at: { readonly promptLen: number } | {
    readonly prefillChunks: readonly (readonly [number, number])[];
    readonly prefillLen: number;
  },
): Uint8Array {
  const rows = new Uint8Array(T); // [T]
  if ("promptLen" in at) return rows.fill(1, Math.max(at.promptLen - 1, 0));
  for (const [, end] of at.prefillChunks) rows[end - 1] = 1;
  return rows.fill(1, at.prefillLen);
}

/**
 * A copy of `x:[T, ...]` with every row t where `observable[t] = 0` set to −1
 * (how the vectors mark what the reference cache could not show).
 */
export function hideUnobservable(x: Int32Array, observable: Uint8Array): Int32Array {
  const T = observable.length, row = x.length / T;
  if (!Number.isInteger(row)) {
    throw new RangeError(`hideUnobservable: ${x.length} values are not [${T}, ...]`);
  }
  const out = x.slice();
  for (let t = 0; t < T; t++) if (!observable[t]) out.fill(-1, t * row, (t + 1) * row);
  return out;
}

/**
 * The SPEC §5.1 retained mask of every page from its decisions: query t
 * keeps key j ≤ t iff `keyMask[j] = 1` and (t − j ≤ W or `d[j+1] = 0`).
 *
 * @param decisions `[pages, T]` hard decisions, unshifted
 * @param window W
 * @param keyMask optional per page: `[T]` 1 = token, 0 = padding
 * @returns `[T, pages, T]`
 */
export function denseRetainedMask(
  decisions: ArrayLike<number>,
  pages: number,
  T: number,
  window: number,
  keyMask?: (page: number) => ArrayLike<number>,
): Int32Array {
  if (decisions.length !== pages * T) {
    throw new RangeError(
      `denseRetainedMask: decisions: expected [${pages}, ${T}], got ${decisions.length} values`,
    );
  }
  const out = new Int32Array(T * pages * T); // [T, pages, T]
  for (let p = 0; p < pages; p++) {
    const d = Array.from({ length: T }, (_, t) => decisions[p * T + t]); // [T]
    const vis = visibilityMask(d, window, keyMask?.(p)); // [T, T]
    for (let t = 0; t < T; t++) {
      for (let j = 0; j <= t; j++) out[(t * pages + p) * T + j] = vis[t * T + j];
    }
  }
  return out;
}

/**
 * `retained_mask` of a cache run: the rows read back from the cache where it
 * was observed, the dense §5.1 rule (`dense`) in the rows it was not (−1).
 *
 * @param observed `[T, pages, T]` with −1 rows where nothing was read
 * @param dense `[T, pages, T]` from {@linkcode denseRetainedMask}
 */
export function fillUnobserved(observed: Int32Array, dense: Int32Array, T: number): Int32Array {
  if (observed.length !== dense.length) {
    throw new RangeError(
      `fillUnobserved: observed has ${observed.length} values, dense ${dense.length}`,
    );
  }
  const out = observed.slice(), n = T;
  for (let r = 0; r < out.length; r += n) {
    if (out[r] === -1) out.set(dense.subarray(r, r + n), r);
  }
  return out;
}

/** Row sums of a retained mask: `[T, pages, T]` -> `[T, pages]` (keys held after token t). */
export function retainedCounts(mask: ArrayLike<number>, T: number): Int32Array {
  const rows = mask.length / T;
  const out = new Int32Array(rows); // [T, pages]
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < T; j++) s += mask[r * T + j];
    out[r] = s;
  }
  return out;
}
