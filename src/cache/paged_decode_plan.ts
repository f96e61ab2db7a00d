/**
 * The plan of flash-decoding ({@linkcode ./paged_decode.ts}): the kernel's constants for a shape
 * (`flashDecodeShape`), the tuning knobs and their defaults (`FlashDecodeTuning`,
 * `flashDecodeDefaults`, `flashDecodeMinKeys`, `flashDecodeSplitDefaults`), and how a layer's
 * pages are cut into splits (`flashDecodeSplits`, `flashDecodePlan`). The defaults come from H200
 * sweeps, logged in docs/performance.md ("Decode attention").
 *
 * @module
 */

import type { PagedKvStorage } from "./paged_storage.ts";

/**
 * Threads per flash-decoding workgroup unless tuned or the shape needs more (H200: 128 beat 256
 * and 512 at every measured shape; docs/performance.md).
 */
const THREADS = 128;
/** Threads per `combine` workgroup (its workgroup memory bounds the shape). */
export const COMBINE_THREADS = 256;
/**
 * Splits: about this many workgroups in all (from the CPU's length bound), and adaptive splits
 * take at least {@linkcode flashDecodeMinKeys} keys of a page's true length.
 */
const TARGET_WORKGROUPS = 512;
/**
 * The default least keys of an adaptive split (`KMIN`) for G query heads per KV head: 64 at G ≤ 2,
 * 128 above (exported for the CPU twin, ./paged_decode_reference.ts). It only changes pages that
 * get fewer than TARGET_WORKGROUPS workgroups from full splits (small batches); the H200 sweeps
 * behind both values (bench/attention.ts --other-min-keys, bench/generate.ts --decode-min-keys)
 * are in docs/performance.md, session 13.
 *
 * @param G Query heads per KV head.
 * @returns The default least keys of an adaptive split.
 * @example
 * ```ts
 * import { flashDecodeMinKeys } from "./paged_decode_plan.ts";
 * console.log(flashDecodeMinKeys(2), flashDecodeMinKeys(4)); // 64 128
 * ```
 */
export function flashDecodeMinKeys(G: number): number {
  return G <= 2 ? 64 : 128;
}
/** Keys per split at most by default (their entries live in workgroup memory, two per thread). */
const PSMAX = 512;

/**
 * The default split plan for storage `dtype`, `G` query heads per KV head and `threads` per
 * workgroup, where neither `maxKeys` nor `workgroups` is set ({@linkcode FlashDecodeTuning},
 * {@linkcode flashDecodeDefaults}): the keys a split holds at most, the workgroups planned, and
 * the workgroups a wave holds where the last wave is filled (`wave`, unless tuned).
 * Measured on the H200 (session 16, `bench/attention.ts --other-max-keys --other-workgroups`,
 * `bench/generate.ts --variants`; docs/performance.md "Decode attention"), f16 at 128 threads:
 * G 4 takes splits of up to 1024 keys and 384 workgroups, one wave at its 3 workgroups an SM
 * (dense 32K B = 1 81 -> 71 µs, 4K B = 4 55 -> 47); G 2 up to 512 keys and 512 workgroups (dense
 * 32K end to end 390 -> 407 tok/s, DMS 626 -> 655). Session 17 (H100, the same 132 SMs): at G 4
 * a plan over one wave fills its last wave of 396 (dense 32K B = 4 251 -> 234 µs, 128K B = 1 251
 * -> 235, DMS 128K B = 4 176 -> 161; one-wave rows unchanged); at G 2 filling waves of 528
 * changed nothing beyond noise (-1.5% to +5%), so G 2 does not. Elsewhere 2·threads keys (at most
 * 512) and 512 workgroups, the values before those sweeps.
 *
 * @param dtype Storage dtype.
 * @param G Query heads per KV head.
 * @param threads Threads per `decode_online` workgroup.
 * @returns Keys per split at most, the workgroups to plan for, and the wave to fill (if any).
 * @example
 * ```ts
 * import { flashDecodeSplitDefaults } from "./paged_decode_plan.ts";
 * // { maxKeys: 1024, workgroups: 384, wave: 396 }
 * console.log(flashDecodeSplitDefaults("f16", 4, 128));
 * ```
 */
export function flashDecodeSplitDefaults(
  dtype: "f32" | "f16",
  G: number,
  threads: number,
): { maxKeys: number; workgroups: number; wave?: number } {
  if (dtype === "f16" && threads === THREADS) {
    if (G === 2) return { maxKeys: 512, workgroups: TARGET_WORKGROUPS };
    if (G === 4) return { maxKeys: 1024, workgroups: 384, wave: 396 };
  }
  return { maxKeys: Math.min(PSMAX, 2 * threads), workgroups: TARGET_WORKGROUPS };
}

/** Whether the split plan is left to {@linkcode flashDecodeSplitDefaults}: no split knob set. */
function splitsUntuned(tuning: FlashDecodeTuning): boolean {
  return tuning.maxKeys === undefined && tuning.workgroups === undefined &&
    flashDecodeDefaults.maxKeys === undefined && flashDecodeDefaults.workgroups === undefined;
}
/** Override constants of `decode_online` for one shape (see the WGSL header). */
export type FlashDecodeShape = Record<string, number>;

/**
 * Tuning knobs of the flash-decoding kernels (benchmarks sweep them; the defaults come from
 * those sweeps): threads per workgroup and 16-byte loads in flight per lane and pool.
 */
export interface FlashDecodeTuning {
  /** Threads per workgroup: 64, 128, 256 or 512 (default 128, 256 where the shape needs it). */
  threads?: number;
  /**
   * Loads in flight per lane (J): 1, 2, 4 or 8; default the most up to 4 that fit. J 8 lost on
   * the H200 (dense 32K B = 4 282 against 249 µs) and on an H100 (session 23: 182-255 registers a
   * thread, two workgroups an SM; end to end at 32K dense 357 -> 332 tok/s, DMS 611 -> 572).
   */
  loads?: number;
  /**
   * Adaptive splits take at least this many keys (default 64 at G ≤ 2 query heads per KV head,
   * else 128, the rule of `flashDecodeMinKeys`; capped by the split maximum).
   */
  minKeys?: number;
  /**
   * Keys per split at most: `threads` times 1, 2, 4 or 8 (default {@linkcode flashDecodeSplitDefaults}
   * where `workgroups` is unset too, else 2·`threads` at most 512; {@linkcode flashDecodeDefaults}
   * `.maxKeys` sets another default); each thread locates up to eight of a split's keys before the
   * split streams.
   */
  maxKeys?: number;
  /**
   * Splits: about this many workgroups in all ({@linkcode flashDecodeSplits}; default
   * {@linkcode flashDecodeSplitDefaults} where `maxKeys` is unset too, else 512;
   * {@linkcode flashDecodeDefaults}`.workgroups` sets another default).
   */
  workgroups?: number;
  /**
   * Workgroups one wave of the GPU holds (its SMs times the workgroups an SM keeps resident), to
   * fill the last wave: where the planned splits need more than one wave, a page takes more
   * (shorter) splits until the last wave is full, never splits under `minKeys`
   * ({@linkcode flashDecodeSplits}). Default: {@linkcode flashDecodeSplitDefaults}' (396 for f16
   * at G 4 and 128 threads: 3 workgroups of 168 registers an SM, 132 SMs) where no split knob is
   * set, else none. At G 2 a wave is 528 (4 an SM); filling it did not pay (session 17).
   */
  wave?: number;
  /**
   * How the splits of a page merge: `fused`, by the split that finishes last inside
   * `decode_online`, or `dispatch` (default, {@linkcode flashDecodeDefaults}), the `combine`
   * kernel after it. The fused merge lost on the H200 (session 16: end to end at 32K dense 392 ->
   * 376 tok/s, DMS 663 -> 618).
   */
  combine?: "fused" | "dispatch";
  /**
   * Whether each thread requests its first block's K and V words straight from the block table,
   * beside the split's visibility reads, instead of after the barrier that publishes them
   * (`EARLY`): one dependent global load fewer before the first dot, the same results (rows
   * found invisible are masked as the default path skips them). Default false
   * ({@linkcode flashDecodeDefaults}): no measurable change on the H200 (session 16, attention
   * bench at G 2 and 4, within 1% but one noisy row), nor on an H100 with the cache read from
   * memory (session 23, `--cold`: within 3.5%) or end to end (32K DMS 611 -> 612 tok/s).
   */
  earlyLoads?: boolean;
  /**
   * Workgroups that share a KV page's G query heads (SH: 1, 2, 4 or 8, dividing G): each takes
   * G / SH heads of every split, so a thread holds the query and sums of fewer heads (fewer
   * registers, more workgroups an SM) while the page's K/V words are read SH times, by
   * neighbouring workgroups (the repeats meant to come from the L2). Default 1: SH 2 was 1.3-1.8x slower
   * on the H200 at G 4 and G 2, dense and DMS, 32K-128K, from cache and from memory (session 25,
   * `bash bench/h200_ab.sh heads`; docs/performance.md): a repeat from the L2 is not free. A
   * default ({@linkcode flashDecodeDefaults}) that does not divide G is dropped; a tuning that
   * does not is a RangeError.
   */
  headSplit?: number;
}

/**
 * The kernel's constants for storage `dtype`, `G` query heads per KV head and head dim `D`,
 * or undefined where it does not apply: G > 8, or rows that are not 4..64 whole 16-byte words
 * of a power-of-two count (D = 32..512 in f16, 16..256 in f32) with at least 4 rows per pass
 * (threads / (D / EPV) ≥ 4), or workgroup memory over `maxShared` bytes, or `tuning.loads`
 * that does not fit. Untuned threads: 128, or 256 where 128 do not fit.
 */
export function flashDecodeShape(
  dtype: "f32" | "f16",
  G: number,
  D: number,
  maxShared: number,
  tuning: FlashDecodeTuning = {},
): FlashDecodeShape | undefined {
  if (tuning.threads === undefined) {
    // Untuned: 128 threads, or 256 where the rows need more lanes (D = 512 in f16, 256 in f32).
    for (const threads of [THREADS, 256]) {
      const c = flashDecodeShape(dtype, G, D, maxShared, { ...tuning, threads });
      if (c) return c;
    }
    return undefined;
  }
  const threads = tuning.threads;
  if (tuning.combine !== undefined && tuning.combine !== "fused" && tuning.combine !== "dispatch") {
    throw new RangeError(
      `flashDecodeShape: combine must be "fused" or "dispatch", got ${tuning.combine}`,
    );
  }
  if (tuning.earlyLoads !== undefined && typeof tuning.earlyLoads !== "boolean") {
    throw new RangeError(
      `flashDecodeShape: earlyLoads must be true or false, got ${tuning.earlyLoads}`,
    );
  }
  if (tuning.minKeys !== undefined && !(Number.isInteger(tuning.minKeys) && tuning.minKeys >= 1)) {
    throw new RangeError(
      `flashDecodeShape: minKeys must be an integer >= 1, got ${tuning.minKeys}`,
    );
  }
  for (
    const [what, wgs] of [
      ["workgroups", tuning.workgroups],
      ["flashDecodeDefaults.workgroups", flashDecodeDefaults.workgroups],
      ["wave", tuning.wave],
      ["flashDecodeDefaults.wave", flashDecodeDefaults.wave],
    ] as const
  ) {
    if (wgs !== undefined && !(Number.isInteger(wgs) && wgs >= 1)) {
      throw new RangeError(`flashDecodeShape: ${what} must be an integer >= 1, got ${wgs}`);
    }
  }
  const dflt = flashDecodeDefaults.maxKeys;
  if (dflt !== undefined && !(Number.isInteger(Math.log2(dflt)) && dflt >= 1)) {
    throw new RangeError(
      `flashDecodeShape: flashDecodeDefaults.maxKeys must be a power of two, got ${dflt}`,
    );
  }
  const maxKeys = tuning.maxKeys;
  if (maxKeys !== undefined && ![1, 2, 4, 8].some((e) => maxKeys === e * threads)) {
    throw new RangeError(
      `flashDecodeShape: maxKeys must be 1, 2, 4 or 8 times threads (${threads}), got ${maxKeys}`,
    );
  }
  if (![64, 128, 256, 512].includes(threads)) {
    throw new RangeError(`flashDecodeShape: threads must be 64, 128, 256 or 512, got ${threads}`);
  }
  const EPV = dtype === "f16" ? 8 : 4;
  if (!Number.isInteger(G) || G < 1 || G > 8 || D % EPV !== 0) return undefined;
  const L = D / EPV;
  if (![4, 8, 16, 32, 64].includes(L) || L > threads / 4) return undefined;
  const GV = Math.ceil(G / 4), KP = threads / L, D4 = D / 4, NV = EPV / 4;
  // More loads in flight where registers allow (G > 4 holds twice the state).
  // J = 8 on request only: slower on the H200 (dense 32K f16 B = 4 282 vs 247 µs).
  const loads = tuning.loads === 8 && GV === 1 ? [8] : GV === 2 ? [2, 1] : [4, 2, 1];
  for (const J of tuning.loads ? loads.filter((j) => j === tuning.loads) : loads) {
    const KB = J * KP;
    if (KB * GV > threads) continue;
    // The split maximum: asked for, else the default's (a power of two) within threads·[1, 8].
    const cap = maxKeys ??
      (dflt
        ? Math.min(8 * threads, Math.max(threads, dflt))
        : splitsUntuned(tuning)
        ? flashDecodeSplitDefaults(dtype, G, threads).maxKeys
        : Math.min(PSMAX, 2 * threads));
    for (let ps = cap; ps >= KB; ps /= 2) {
      if (ps % KB !== 0) continue;
      const SCR = Math.max(KB * (L + 1) * GV, 2 * KP * D4 + KP * GV, threads);
      const bytes = 4 + 4 * ps + 16 * KB * GV + 16 * SCR;
      const combine = COMBINE_THREADS * (4 + 4 + 16);
      if (Math.max(bytes, combine) > maxShared) continue;
      const shape: FlashDecodeShape = {
        WG: threads,
        GQ: G,
        GV,
        EPV,
        NV,
        DD: D,
        D4,
        L,
        KP,
        J,
        KB,
        PSMAX: ps,
        KMIN: Math.min(tuning.minKeys ?? flashDecodeMinKeys(G), ps),
        EARLY: tuning.earlyLoads ? 1 : 0,
        SCR,
        SPB: KB * GV,
      };
      return shape;
    }
  }
  return undefined;
}

/**
 * Splits per page and keys per split (0: adaptive, chosen per page on the GPU) for pages whose
 * lengths are at most `maxLen`: about {@linkcode TARGET_WORKGROUPS} workgroups, no split over
 * the kernel's `PSMAX` keys, none under its `KMIN`; `partitionKeys` fixes the split size. With
 * `wave` (workgroups one wave holds) and more than one wave planned, each page takes as many
 * splits as fill the last wave (`floor(waves · wave / pages)`), still none under `KMIN`.
 *
 * @example 32 pages (B 4, Hkv 8) of 32K keys, splits of up to 1024: 32 a page, 1024 workgroups
 * (2.6 waves of 396); filling the third wave takes 37 a page (1184 workgroups)
 * ```ts
 * import { flashDecodeSplits } from "./paged_decode_plan.ts";
 * const c = { PSMAX: 1024, KMIN: 128 };
 * console.log(flashDecodeSplits(32768, 32, c, undefined, 384)); // { np: 32, ps: 0 }
 * console.log(flashDecodeSplits(32768, 32, c, undefined, 384, 396)); // { np: 37, ps: 0 }
 * ```
 */
export function flashDecodeSplits(
  maxLen: number,
  pages: number,
  c: FlashDecodeShape,
  partitionKeys?: number,
  workgroups: number = TARGET_WORKGROUPS,
  wave?: number,
): { np: number; ps: number } {
  const len = Math.max(1, maxLen);
  if (partitionKeys) {
    const ps = Math.min(c.PSMAX, partitionKeys);
    return { np: Math.ceil(len / ps), ps };
  }
  const want = Math.ceil(workgroups / pages);
  let np = Math.max(Math.ceil(len / c.PSMAX), Math.min(want, Math.ceil(len / c.KMIN)));
  if (wave && pages * np > wave) {
    const fill = Math.floor(Math.ceil(pages * np / wave) * wave / pages);
    np = Math.max(np, Math.min(fill, Math.ceil(len / c.KMIN)));
  }
  return { np, ps: 0 };
}

/** What {@linkcode pagedDecodeFlash} launches for a layer: kernel constants and splits. */
export interface FlashDecodePlan {
  /**
   * Override constants: {@linkcode flashDecodeShape}'s for G / SH query heads a workgroup (its
   * `GQ`), and `SH`, the workgroups that share a page's heads (`FlashDecodeTuning.headSplit`).
   */
  shape: FlashDecodeShape;
  /** Splits per page (per page and head group where SH > 1). */
  np: number;
  /** Keys per split; 0: adaptive per page. */
  ps: number;
}

/**
 * The kernel and splits {@linkcode pagedDecodeFlash} uses for `layer` of `s` with `G` query
 * heads per KV head, or undefined where no flash kernel takes the shape.
 */
export function flashDecodePlan(
  s: PagedKvStorage,
  layer: number,
  G: number,
  tuning: FlashDecodeTuning = {},
): FlashDecodePlan | undefined {
  const maxShared = s.gpu.limits.maxComputeWorkgroupStorageSize;
  const maxLen = s.planLength(layer);
  const d = flashDecodeDefaults;
  const bad = (key: string, want: string) =>
    new RangeError(
      `flashDecodePlan: flashDecodeDefaults.${key} must be ${want}, got ${d[key as "threads"]}`,
    );
  if (d.threads !== undefined && ![64, 128, 256, 512].includes(d.threads)) {
    throw bad("threads", "64, 128, 256 or 512");
  }
  if (d.minKeys !== undefined && !(Number.isInteger(d.minKeys) && d.minKeys >= 1)) {
    throw bad("minKeys", "an integer >= 1");
  }
  if (d.earlyLoads !== undefined && typeof d.earlyLoads !== "boolean") {
    throw bad("earlyLoads", "true or false");
  }
  if (d.loads !== undefined && ![1, 2, 4, 8].includes(d.loads)) throw bad("loads", "1, 2, 4 or 8");
  if (d.headSplit !== undefined && ![1, 2, 4, 8].includes(d.headSplit)) {
    throw bad("headSplit", "1, 2, 4 or 8");
  }
  const hs = tuning.headSplit;
  if (hs !== undefined && !([1, 2, 4, 8].includes(hs) && G % hs === 0)) {
    throw new RangeError(
      `flashDecodePlan: headSplit must be 1, 2, 4 or 8 and divide G = ${G}, got ${hs}`,
    );
  }
  // Head groups: each workgroup takes G / SH of the page's heads; the splits are planned for
  // pages · SH (page, group) pairs.
  const SH = hs ?? (d.headSplit !== undefined && G % d.headSplit === 0 ? d.headSplit : 1);
  const Gk = G / SH;
  const tuned = {
    ...tuning,
    minKeys: tuning.minKeys ?? d.minKeys,
    earlyLoads: tuning.earlyLoads ?? d.earlyLoads,
  };
  // A default thread count or loads count is a preference: where the shape cannot take it, the
  // choice without it (the loads default dropped first, then the threads default).
  const withThreads = tuning.threads === undefined && d.threads !== undefined
    ? { ...tuned, threads: d.threads }
    : undefined;
  const shapeOf = (t: FlashDecodeTuning | undefined) =>
    t && flashDecodeShape(s.dtype, Gk, s.headDim, maxShared, t);
  const shape =
    (tuning.loads === undefined && d.loads !== undefined
      ? shapeOf({ ...(withThreads ?? tuned), loads: d.loads })
      : undefined) ?? shapeOf(withThreads) ?? shapeOf(tuned);
  if (!shape) return undefined;
  return {
    shape: { ...shape, SH },
    ...flashDecodeSplits(
      maxLen,
      s.pages * SH,
      shape,
      s.partitionKeys,
      tuning.workgroups ?? flashDecodeDefaults.workgroups ??
        (splitsUntuned(tuning)
          ? flashDecodeSplitDefaults(s.dtype, Gk, shape.WG).workgroups
          : TARGET_WORKGROUPS),
      tuning.wave ?? flashDecodeDefaults.wave ??
        (splitsUntuned(tuning) ? flashDecodeSplitDefaults(s.dtype, Gk, shape.WG).wave : undefined),
    ),
  };
}

/**
 * Defaults of {@linkcode FlashDecodeTuning} for calls that give none (benchmarks set them:
 * `bench/generate.ts --variants`, `--combine`, `--decode-*`). `maxKeys` and `workgroups` both
 * unset: {@linkcode flashDecodeSplitDefaults} (the measured plan by dtype and G, with its `wave`);
 * one of them set: the other is 2·threads keys (at most 512) or 512 workgroups, and no wave is
 * filled unless `wave` is set; `combine` unset: `dispatch`; `earlyLoads` unset: false; `threads`
 * unset: 128 (256 where the shape needs it), and a default the shape cannot take falls back to
 * that choice; `loads` unset: the most up to 4 that fit, and a default the shape cannot take
 * (8 at G > 4) is dropped likewise; `minKeys` unset: 64 at G ≤ 2, else 128
 * (`flashDecodeMinKeys`). `threads`, `loads`, `minKeys` and `earlyLoads` apply where
 * {@linkcode flashDecodePlan} plans a layer. The fused merge
 * lost to the combine dispatch on the H200 in sessions 10 and 16 and `earlyLoads` changed nothing
 * measurable (docs/performance.md, "Decode attention").
 *
 * @example Every merge inside decode_online
 * ```ts
 * import { flashDecodeDefaults } from "./paged_decode_plan.ts";
 * flashDecodeDefaults.combine = "fused";
 * ```
 */
export const flashDecodeDefaults: Pick<
  FlashDecodeTuning,
  | "combine"
  | "maxKeys"
  | "workgroups"
  | "threads"
  | "minKeys"
  | "earlyLoads"
  | "wave"
  | "loads"
  | "headSplit"
> = {};
