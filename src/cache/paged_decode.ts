/**
 * Flash-decoding through the paged KV storage ({@linkcode ./paged_storage.ts}): the fast decode
 * attention (one query per sequence) with the exact SPEC §5.1 rule, its launcher and its CPU
 * twin (`flashDecodeReference`, in ./paged_decode_reference.ts). {@linkcode ./paged_attention.ts}
 * routes decode here when no policy extra (probabilities, chunk selection) is asked for; its
 * `partial` kernel stays the readable variant.
 *
 * Query head h·G+g uses KV head h; a stored entry (position i, mark m) is visible to the query
 * at position t0 iff i ≤ t0, m ≠ 2 and (m = 0 or t0 − i ≤ W). Shapes: `q:[B, Hq, 1, D]`,
 * pages `[B·Hkv]` of `[len, D]` → `out:[B, Hq, 1, D]`.
 *
 * Algorithm (the CPU twin `flashDecodeReference` spells it out): each page's `len`
 * entries are cut into `np` splits of `ps` keys (`ps = max(KMIN, ceil(len / np))` of the page's
 * own length unless fixed, so a loose CPU length bound only adds empty splits); per split and
 * query head: scores s = scale·q·k over the visible keys, m = max s, p = exp(s − m),
 * l = Σp, o = Σ p·v; then the splits merge by log-sum-exp: out = Σ e^{m_i−M} o_i / Σ e^{m_i−M} l_i
 * (a split without a visible key weighs 0; a row with none is 0).
 *
 * Kernels:
 * - `decode_online` (`shaders/paged_decode.wgsl`): one workgroup per (page,
 *   split), all G query heads of the page at once so that each K/V word is read once; rows read
 *   as 16-byte words (8 f16 or 4 f32), L = D/EPV consecutive lanes per row (coalesced). One
 *   pass per split: each block of keys has its K and V words requested a block ahead, partial
 *   dots meet in workgroup memory (2 barriers per block), and every thread keeps its own online
 *   softmax (running max, rescaled sums) over its rows; the rows merge once at the end.
 * - `combine` (`shaders/paged_decode_combine.wgsl`, which includes paged_decode.wgsl): one
 *   workgroup per (page, head, 8 output vec4 columns), online merge of the splits per thread,
 *   then a tree. With the tuning `combine: "fused"` the same merge runs inside `decode_online`
 *   instead, in the workgroup of the page's split that finishes last (an arrival count per page;
 *   the splits' outputs exchanged through atomics), one dispatch a layer fewer
 *   ({@linkcode flashDecodeDefaults} says why it is not the default). With one split a page
 *   (`np = 1`: pages of at most `KMIN` keys ({@linkcode flashDecodeMinKeys}), or more with {@linkcode FlashDecodeTuning}`.minKeys`)
 *   `decode_online` divides by l and stores the output itself (`DIRECT`) and no combine runs: the
 *   same values (one split's merge is that division), one dispatch fewer.
 *
 * Why the kernel looks as it does (the versions before it, every sweep and every variant tried):
 * docs/performance.md, "Decode attention".
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { deviceCounters } from "../gpu/buffers.ts";
import { Tensor } from "../tensor/tensor.ts";
import { dispatchBound } from "./dispatch_bound.ts";
import type { PagedKvStorage } from "./paged_storage.ts";

/**
 * Threads per flash-decoding workgroup unless tuned or the shape needs more (H200: 128 beat 256
 * and 512 at every measured shape; docs/performance.md).
 */
const THREADS = 128;
/** Threads per `combine` workgroup. */
const WG = 256;
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
 * import { flashDecodeMinKeys } from "./paged_decode.ts";
 * console.log(flashDecodeMinKeys(2), flashDecodeMinKeys(4)); // 64 128
 * ```
 */
export function flashDecodeMinKeys(G: number): number {
  return G <= 2 ? 64 : 128;
}
/** Keys per split at most (their entries live in workgroup memory, two per thread). */
const PSMAX = 512;
/** Output vec4 columns per `combine` workgroup, at most. */
const CW = 8;

/** Override constants of `decode_online` for one shape (see the WGSL header). */
export type FlashDecodeShape = Record<string, number>;

/**
 * Tuning knobs of the flash-decoding kernels (benchmarks sweep them; the defaults come from
 * those sweeps): threads per workgroup and 16-byte loads in flight per lane and pool.
 */
export interface FlashDecodeTuning {
  /** Threads per workgroup: 64, 128, 256 or 512 (default 128, 256 where the shape needs it). */
  threads?: number;
  /** Loads in flight per lane (J): 1, 2, 4 or 8; default the most up to 4 that fit. */
  loads?: number;
  /**
   * Adaptive splits take at least this many keys (default 64 at G ≤ 2 query heads per KV head,
   * else 128, the rule of `flashDecodeMinKeys`; capped by the split maximum).
   */
  minKeys?: number;
  /**
   * Keys per split at most: `threads` times 1, 2, 4 or 8 (default 2·`threads`, at most 512;
   * {@linkcode flashDecodeDefaults}`.maxKeys` sets another default); each thread locates up to
   * eight of a split's keys before the split streams. H200 (f16, G 4, 128 threads,
   * `bench/attention.ts --other-max-keys`, 2026-12-04): 512 keys took dense 128K B = 4 from 849 to 787 µs, DMS CR 8
   * 128K B = 4 179 -> 160, 32K B = 4 64 -> 59, but dense 32K B = 1 82 -> 91 (half the splits);
   * with G 2 (Qwen3-0.6B) and 1024 keys, 2K B = 4 and 32K rows lost 12-25%. Not the default.
   */
  maxKeys?: number;
  /**
   * Splits: about this many workgroups in all (default 512, {@linkcode flashDecodeSplits};
   * {@linkcode flashDecodeDefaults}`.workgroups` sets another default).
   */
  workgroups?: number;
  /**
   * How the splits of a page merge: `fused`, by the split that finishes last inside
   * `decode_online`, or `dispatch` (default, {@linkcode flashDecodeDefaults}), the `combine`
   * kernel after it.
   */
  combine?: "fused" | "dispatch";
  /**
   * Whether each thread requests its first block's K and V words straight from the block table,
   * beside the split's visibility reads, instead of after the barrier that publishes them
   * (`EARLY`): one dependent global load fewer before the first dot, the same results (rows
   * found invisible are masked as the default path skips them). Default false
   * ({@linkcode flashDecodeDefaults}); not measured on a GPU yet.
   */
  earlyLoads?: boolean;
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
    const [what, wgs] of [["", tuning.workgroups], [
      "flashDecodeDefaults.",
      flashDecodeDefaults.workgroups,
    ]] as const
  ) {
    if (wgs !== undefined && !(Number.isInteger(wgs) && wgs >= 1)) {
      throw new RangeError(
        `flashDecodeShape: ${what}workgroups must be an integer >= 1, got ${wgs}`,
      );
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
      (dflt ? Math.min(8 * threads, Math.max(threads, dflt)) : Math.min(PSMAX, 2 * threads));
    for (let ps = cap; ps >= KB; ps /= 2) {
      if (ps % KB !== 0) continue;
      const SCR = Math.max(KB * (L + 1) * GV, 2 * KP * D4 + KP * GV, threads);
      const bytes = 4 + 4 * ps + 16 * KB * GV + 16 * SCR;
      const combine = WG * (4 + 4 + 16);
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
 * the kernel's `PSMAX` keys, none under its `KMIN`; `partitionKeys` fixes the split size.
 */
export function flashDecodeSplits(
  maxLen: number,
  pages: number,
  c: FlashDecodeShape,
  partitionKeys?: number,
  workgroups = TARGET_WORKGROUPS,
): { np: number; ps: number } {
  const len = Math.max(1, maxLen);
  if (partitionKeys) {
    const ps = Math.min(c.PSMAX, partitionKeys);
    return { np: Math.ceil(len / ps), ps };
  }
  const want = Math.ceil(workgroups / pages);
  const np = Math.max(Math.ceil(len / c.PSMAX), Math.min(want, Math.ceil(len / c.KMIN)));
  return { np, ps: 0 };
}

/** What {@linkcode pagedDecodeFlash} launches for a layer: kernel constants and splits. */
export interface FlashDecodePlan {
  /** Override constants ({@linkcode flashDecodeShape}). */
  shape: FlashDecodeShape;
  /** Splits per page. */
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
  const tuned = {
    ...tuning,
    minKeys: tuning.minKeys ?? d.minKeys,
    earlyLoads: tuning.earlyLoads ?? d.earlyLoads,
  };
  // A default thread count is a preference: where the shape cannot take it, the untuned choice.
  const shape =
    (tuning.threads === undefined && d.threads !== undefined
      ? flashDecodeShape(s.dtype, G, s.headDim, maxShared, { ...tuned, threads: d.threads })
      : undefined) ?? flashDecodeShape(s.dtype, G, s.headDim, maxShared, tuned);
  if (!shape) return undefined;
  return {
    shape,
    ...flashDecodeSplits(
      maxLen,
      s.pages,
      shape,
      s.partitionKeys,
      tuning.workgroups ?? flashDecodeDefaults.workgroups,
    ),
  };
}

/** Arguments of {@linkcode pagedDecodeFlash}. */
export interface FlashDecodeArgs {
  /** Position of the query. */
  t0: number;
  /** W: a marked entry stays visible for distances 0..W. */
  window: number;
  /** Softmax scale. */
  scale: number;
  /** Tuning knobs (benchmarks). */
  tuning?: FlashDecodeTuning;
}

/**
 * Decode attention of `q` over each page's live entries of `layer` (`decode_online`,
 * then `combine` unless one split covers every page). Records the dispatches; returns the output, or undefined when the shape does not
 * fit the kernel ({@linkcode flashDecodeShape}).
 *
 * @param q `[B, Hq, 1, D]` in the storage dtype, Hq = G·Hkv.
 * @returns `[B, Hq, 1, D]`; rows with no visible key are 0.
 */
export function pagedDecodeFlash(
  s: PagedKvStorage,
  layer: number,
  q: Tensor,
  args: FlashDecodeArgs,
): Tensor | undefined {
  const gpu = s.gpu;
  const [B, Hq, n, D] = q.shape;
  const G = Hq / s.kvHeads;
  if (n !== 1 || D !== s.headDim || !Number.isInteger(G)) {
    throw new RangeError(
      `pagedDecodeFlash: q must be [B, G·${s.kvHeads}, 1, ${s.headDim}], got [${q.shape}]`,
    );
  }
  const plan = flashDecodePlan(s, layer, G, args.tuning);
  if (!plan) return undefined;
  const { shape: c, np, ps } = plan;
  const rows = s.pages * np * G;
  const po = gpu.alloc(rows * D * 4, "flash decode o");
  const pml = gpu.alloc(rows * 8, "flash decode m,l");
  const out = Tensor.empty(gpu, [B, Hq, 1, D], s.dtype);
  const pool = s.pool(layer);
  const params = {
    pages: s.pages,
    hkv: s.kvHeads,
    np,
    ps,
    bs: s.blockSize,
    mb: s.tableWidth,
    lbase: layer * s.pages,
    t0: args.t0,
    window: args.window,
    scale: args.scale,
  };
  const bufs = [undefined, s.lens, s.table, pool.meta, pool.k, pool.v, q.buffer, po, pml];
  bufs[9] = out.buffer;
  // One split a page: decode_online normalises and stores the output itself (no combine); more:
  // the split that finishes last merges them (FUSED) where its workgroup memory holds the weights
  // and partial sums, else the combine kernel does.
  const direct = np === 1;
  const H = Math.max(1, Math.floor(c.WG / (G * c.D4)));
  const combine = args.tuning?.combine ?? flashDecodeDefaults.combine ?? "dispatch";
  const fused = !direct && combine === "fused" && s.pages <= ARRIVALS &&
    np * G + Math.max(G * c.D4 * H, c.WG) <= c.SCR;
  // bound always (the entry names it), used with FUSED (see deviceCounters)
  bufs[10] = deviceCounters(gpu.device, "flash decode arrivals", ARRIVALS * 4);
  dispatchBound(
    gpu,
    gpu.kernel({
      shader: "paged_decode",
      entry: "decode_online",
      defines: { T: s.dtype },
      constants: { ...c, DIRECT: direct ? 1 : 0, FUSED: fused ? 1 : 0 },
    }),
    bufs,
    Gpu.grid(s.pages * np),
    params,
  );
  if (direct || fused) {
    gpu.release(po);
    gpu.release(pml);
    return out;
  }
  const CW_ = Math.min(CW, c.D4);
  dispatchBound(
    gpu,
    gpu.kernel({
      shader: "paged_decode_combine",
      entry: "combine",
      defines: { T: s.dtype },
      constants: { WG, GQ: G, DD: D, D4: c.D4, CW: CW_ },
    }),
    bufs,
    Gpu.grid(s.pages * G * (c.D4 / CW_)),
    params,
  );
  gpu.release(po);
  gpu.release(pml);
  return out;
}

/**
 * Defaults of {@linkcode FlashDecodeTuning} for calls that give none (benchmarks set them:
 * `bench/generate.ts --variants`, `--combine`, `--decode-*`). `maxKeys` unset: 2·threads, at most
 * 512; `workgroups` unset: 512; `combine` unset: `dispatch`; `earlyLoads` unset: false; `threads`
 * unset: 128 (256 where the shape needs it), and a default the shape cannot take falls back to
 * that choice; `minKeys` unset: 64 at G ≤ 2, else 128 (`flashDecodeMinKeys`). `threads`,
 * `minKeys` and `earlyLoads` apply where {@linkcode flashDecodePlan} plans a layer. The fused merge
 * lost to the combine dispatch on the H200 in session 10; session 13's restructured merge and
 * `earlyLoads` are tested but not yet timed on a GPU (docs/performance.md, "Decode attention").
 *
 * @example Every merge inside decode_online
 * ```ts
 * import { flashDecodeDefaults } from "./paged_decode.ts";
 * flashDecodeDefaults.combine = "fused";
 * ```
 */
export const flashDecodeDefaults: Pick<
  FlashDecodeTuning,
  "combine" | "maxKeys" | "workgroups" | "threads" | "minKeys" | "earlyLoads"
> = {};

/** Pages the fused merge counts arrivals for, at most (one u32 each). */
const ARRIVALS = 1 << 16;
