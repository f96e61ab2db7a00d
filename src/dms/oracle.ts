/**
 * The DMS index conventions as plain CPU code: the readable oracle that the
 * GPU cache, the model and the tests are checked against. Every function cites
 * the section of `shared/SPEC.md` it implements.
 *
 * Notation: positions start at 0; `window` is the config's `dms_window_size`
 * W; the cache window is `W + 1` (SPEC §9.2: cache classes take W+1, the
 * training mask takes W). `d[t]` is the hard decision computed while
 * processing token t; it marks key t−1 (SPEC §2).
 *
 * @example Which keys does query 6 see?
 * ```ts
 * import { marksFromDecisions, isVisible } from "./oracle.ts";
 * const d = [0, 1, 0, 1, 0, 0, 0];        // d[1] marks key 0, d[3] marks key 2
 * const mark = marksFromDecisions(d);     // [1, 0, 1, 0, 0, 0, 0]
 * isVisible(6, 0, mark[0], 4);             // false: marked and 6 - 0 > 4
 * isVisible(6, 2, mark[2], 4);             // true: distance 4 <= W
 * ```
 *
 * @module
 */

/** Hard inference decision (SPEC §1): `1[alpha > 0]`, strict. */
export function hardDecision(alpha: number): 0 | 1 {
  return alpha > 0 ? 1 : 0;
}

/**
 * Decision logit from the borrowed query neuron (SPEC §1a):
 * `alpha = scale * qNormed[firstHeadOfGroup, headDim - 1] - offset`.
 */
export function alphaFromQueryNeuron(
  qLastChannel: number,
  alphaScale: number,
  alphaOffset: number,
): number {
  return qLastChannel * alphaScale - alphaOffset;
}

/**
 * Shift by one (SPEC §2): `mark[i] = d[i + 1]`; the newest key has no mark
 * yet (0). `d[0]` decides nothing.
 *
 * @param decisions `[T]` hard decisions in token order.
 * @returns `[T]` per-key eviction marks.
 */
export function marksFromDecisions(decisions: ArrayLike<number>): Uint8Array {
  const n = decisions.length;
  const mark = new Uint8Array(n);
  for (let i = 0; i + 1 < n; i++) mark[i] = decisions[i + 1] ? 1 : 0;
  return mark;
}

/**
 * The visibility rule (SPEC §5.1): query position q sees key i iff `i <= q`
 * and (`mark(i) = 0` or `q - i <= window`). A marked key stays visible for
 * distances 0..W (W+1 queries including its own) and leaves before the query
 * at distance W+1.
 */
export function isVisible(q: number, i: number, mark: number, window: number): boolean {
  if (i > q) return false;
  return mark === 0 || q - i <= window;
}

/**
 * Dense visibility mask for one (batch, KV head) page, `[T, T]` row-major
 * (`mask[q * T + i]`), with optional key padding (`keyMask[i] = 0` hides key i).
 *
 * @param decisions `[T]` hard decisions (unshifted, as stored in the golden vectors).
 */
export function visibilityMask(
  decisions: ArrayLike<number>,
  window: number,
  keyMask?: ArrayLike<number>,
): Uint8Array {
  checkWindow(window);
  const T = decisions.length;
  const mark = marksFromDecisions(decisions);
  const m = new Uint8Array(T * T);
  for (let q = 0; q < T; q++) {
    for (let i = 0; i <= q; i++) {
      if (keyMask && !keyMask[i]) continue;
      m[q * T + i] = isVisible(q, i, mark[i], window) ? 1 : 0;
    }
  }
  return m;
}

/**
 * Number of keys a page holds right after processing token `t` (SPEC §5.1,
 * §7.6): the keys visible to query t. Marks use only decisions `<= t`.
 */
export function retainedCount(decisions: ArrayLike<number>, t: number, window: number): number {
  let n = 0;
  for (let i = 0; i <= t; i++) {
    const mark = i + 1 <= t ? (decisions[i + 1] ? 1 : 0) : 0;
    if (isVisible(t, i, mark, window)) n++;
  }
  return n;
}

/** One entry of {@linkcode NaiveTracker}: the token position and its flag. */
export interface TrackedEntry {
  /** Absolute token position. */
  pos: number;
  /** 1 when the next token's decision marked this one for eviction. */
  flag: number;
}

/**
 * The reference tests' naive list tracker (SPEC §7.4), with the cache window
 * `cacheWindow = W + 1`: each new token sets the previous entry's flag to its
 * own decision and appends itself with flag 0; if the list is longer than
 * the cache window and the entry at −(cacheWindow + 1) is flagged, it is
 * deleted. The surviving positions equal the keys the next query can see.
 */
export class NaiveTracker {
  /** Entries in arrival order. */
  readonly entries: TrackedEntry[] = [];
  /** Tokens pushed so far. */
  seen = 0;

  /** The cache window W + 1. */
  readonly cacheWindow: number;

  /**
   * Creates an empty tracker.
   *
   * @param cacheWindow W + 1.
   */
  constructor(cacheWindow: number) {
    this.cacheWindow = cacheWindow;
    if (!Number.isInteger(cacheWindow) || cacheWindow < 1) {
      throw new RangeError(`cacheWindow must be an integer >= 1, got ${cacheWindow}`);
    }
  }

  /** Adds token `seen` with its decision `d` (which marks the previous token). */
  push(d: number): void {
    const e = this.entries;
    if (e.length) e[e.length - 1].flag = d ? 1 : 0;
    e.push({ pos: this.seen++, flag: 0 });
    const k = e.length - (this.cacheWindow + 1);
    if (k >= 0 && e[k].flag) e.splice(k, 1);
  }

  /** Positions currently held, in arrival order. */
  positions(): number[] {
    return this.entries.map((x) => x.pos);
  }
}

/**
 * The reference's `get_cr` (SPEC §5.4): the mean over layers and pages of
 * `len / max(tokensSeen, 1)`, inverted.
 *
 * @param lengths `[layers][pages]` live entries per page.
 * @param tokensSeen tokens processed so far (per layer, the same for all).
 */
export function compressionRatioGetCr(
  lengths: readonly (readonly number[])[],
  tokensSeen: number,
): number {
  let sum = 0, n = 0;
  for (const layer of lengths) {
    for (const len of layer) {
      sum += len / Math.max(tokensSeen, 1);
      n++;
    }
  }
  return n ? 1 / (sum / n) : 1;
}

/** Dense-over-kept compression ratio: `Σ tokensSeen / Σ len` over all pages. */
export function compressionRatioDenseOverKept(
  lengths: readonly (readonly number[])[],
  tokensSeen: number,
): number {
  let kept = 0, dense = 0;
  for (const layer of lengths) {
    for (const len of layer) {
      kept += len;
      dense += tokensSeen;
    }
  }
  return kept ? dense / kept : 1;
}

/**
 * Gumbel-sigmoid with straight-through (SPEC §4), one element:
 * `z = (alpha + noise) / tau`, `p = σ(z)`, `hard = 1[p > 0.5] = 1[z > 0]`.
 * The forward value of the straight-through decision equals `hard`.
 */
export function gumbelSigmoid(
  alpha: number,
  noise: number,
  tau: number,
): { z: number; p: number; hard: 0 | 1 } {
  const z = (alpha + noise) / tau;
  const p = 1 / (1 + Math.exp(-z));
  return { z, p, hard: z > 0 ? 1 : 0 };
}

/**
 * Training-mode additive bias of key i for queries farther than the window
 * (SPEC §3): `log σ(−m[i])` with `m[i] = z[i + 1]` for `i < T − 1` and
 * `m[T − 1] = 0`. Returns `[T]`.
 */
export function trainFarBias(z: ArrayLike<number>): Float64Array {
  const T = z.length;
  const out = new Float64Array(T);
  for (let i = 0; i < T; i++) {
    const m = i + 1 < T ? z[i + 1] : 0;
    out[i] = logSigmoid(-m);
  }
  return out;
}

/** Numerically stable `log σ(x)`. */
export function logSigmoid(x: number): number {
  return x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x));
}

/**
 * The compression-rate schedule (SPEC §6): linear in CR from `initialCr` to
 * `finalCr` over `finalStep` steps; returns the target fraction to close
 * `alpha* = 1 − 1/CR`.
 */
export function targetFracToClose(
  step: number,
  initialCr: number,
  finalCr: number,
  finalStep: number,
): number {
  const progress = Math.min(step / finalStep, 1);
  const cr = initialCr + (finalCr - initialCr) * progress;
  return 1 - 1 / cr;
}

function checkWindow(window: number): void {
  if (!Number.isInteger(window) || window < 0) {
    throw new RangeError(`window must be an integer >= 0, got ${window}`);
  }
}
