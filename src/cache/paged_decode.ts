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
 *   softmax (running max, rescaled sums) over its rows; the rows merge once at the end. With
 *   {@linkcode FlashDecodeTuning}`.headSplit` = SH > 1, SH neighbouring workgroups take one
 *   (page, split), G / SH heads each: fewer registers a thread, the split's K/V words read SH
 *   times (the repeats mostly from the L2).
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
import {
  COMBINE_THREADS as WG,
  flashDecodeDefaults,
  flashDecodePlan,
  type FlashDecodeTuning,
} from "./paged_decode_plan.ts";
import type { PagedKvStorage } from "./paged_storage.ts";

/** Output vec4 columns per `combine` workgroup, at most. */
const CW = 8;

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
  // SH workgroups share a page's G heads, GQ = G / SH each: the kernels see pages · SH pages of
  // GQ heads (the same rows of q and out), reading K/V page pg / SH.
  const SH = c.SH ?? 1, GQ = c.GQ, vpages = s.pages * SH;
  const rows = vpages * np * GQ;
  const po = gpu.alloc(rows * D * 4, "flash decode o");
  const pml = gpu.alloc(rows * 8, "flash decode m,l");
  const out = Tensor.empty(gpu, [B, Hq, 1, D], s.dtype);
  const pool = s.pool(layer);
  const params = {
    pages: vpages,
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
  const H = Math.max(1, Math.floor(c.WG / (GQ * c.D4)));
  const combine = args.tuning?.combine ?? flashDecodeDefaults.combine ?? "dispatch";
  const fused = !direct && combine === "fused" && vpages <= ARRIVALS &&
    np * GQ + Math.max(GQ * c.D4 * H, c.WG) <= c.SCR;
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
    Gpu.grid(vpages * np),
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
      constants: { WG, GQ, DD: D, D4: c.D4, CW: CW_ },
    }),
    bufs,
    Gpu.grid(vpages * GQ * (c.D4 / CW_)),
    params,
  );
  gpu.release(po);
  gpu.release(pml);
  return out;
}

/** Pages the fused merge counts arrivals for, at most (one u32 each). */
const ARRIVALS = 1 << 16;
