/**
 * The split-K `decode` kernel of `shaders/paged_attention.wgsl` (the v2 decode path: all G query
 * heads of a page per K/V word, each page's keys in splits, then `merge_split`), which also serves
 * the policy extras of {@linkcode ./paged_attention.ts} (`probs` for score-based policies, `chunks`
 * for Quest). Moved out of ./paged_attention.ts unchanged; the readable `partial` kernel and the
 * routing stay there, the fast flash-decoding kernel is ./paged_decode.ts.
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { dispatchBound } from "./dispatch_bound.ts";
import type { PagedKvStorage } from "./paged_storage.ts";

/** The policy extras of one call: the logits buffer, the selection and their uniforms. */
export interface Extras {
  lg: GPUBuffer;
  sel: GPUBuffer;
  fields: { lgs: number; csz: number; cst: number; pbase: number; pacc: number };
}

/** Keys per decode split, at most, for G <= 4 (workgroup arrays are sized for it). */
const SPLIT_KEYS_MAX = 512;
/** Adaptive splits take at least this many keys of a page's true length (one score block). */
const SPLIT_KEYS_MIN = 128;
/** Decode splits: as many as give about this many workgroups (a few per SM on a big GPU). */
const SPLIT_TARGET_WORKGROUPS = 512;
/** Threads per `decode` workgroup. */
const SPLIT_WG = 256;
/** Score block and value pass: keys per workgroup between uses of the loaded words. */
const SPLIT_BLOCK = 128;
/** Per-thread register arrays of the kernel: q words, loads in flight (QMAX, XMAX in WGSL). */
const QMAX = 16, XMAX = 8;

/**
 * Override constants of the `decode` kernel for one shape, or undefined when it does not apply
 * (rows not whole 16-byte words, G > 8, too many q words per lane, or workgroup memory over
 * `maxShared` bytes).
 */
export function splitDecodeShape(
  dtype: "f32" | "f16",
  G: number,
  D: number,
  maxShared: number,
): Record<string, number> | undefined {
  const EPV = dtype === "f16" ? 8 : 4;
  if (!(G >= 1 && G <= 8) || D % EPV !== 0) return undefined;
  const WG = SPLIT_WG, L = D / EPV, NV = EPV / 4;
  // Lanes per key: 8 (or the largest power of two dividing L), more when the lane's q words
  // would not fit its registers (G = 8 with D = 128).
  let LN = 8;
  while (L % LN !== 0) LN /= 2;
  while (G * (L / LN) * NV > QMAX && LN < 32 && L % (2 * LN) === 0) LN *= 2;
  const VPL = L / LN, RPI = WG / LN, RPV = Math.floor(WG / L);
  if (RPV < 1 || VPL > XMAX || G * VPL * NV > QMAX) return undefined;
  const D4 = D / 4, GV = Math.ceil(G / 4);
  // Split size cap: 512 keys' scores for G <= 4, 256 for G <= 8 (the same workgroup memory).
  const PSMAX = SPLIT_KEYS_MAX / GV;
  const JV = Math.min(XMAX, Math.ceil(SPLIT_BLOCK / RPV));
  let CW = 8;
  while (D4 % CW !== 0) CW /= 2;
  // The most loads in flight (J) whose workgroup memory fits.
  for (let J = Math.min(Math.floor(XMAX / VPL), Math.ceil(SPLIT_BLOCK / RPI)); J >= 1; J--) {
    const KB = RPI * J;
    const partials = KB * (LN + 1) * GV;
    const HR = Math.max(1, Math.min(G, Math.floor(partials / (RPV * D4))));
    const SCR = Math.max(partials, HR * RPV * D4);
    const bytes = 4 * PSMAX + 16 * PSMAX * GV + 16 * SCR + 8 * WG + 64;
    if (bytes > maxShared) continue;
    return {
      WG,
      GQ: G,
      PSMAX,
      KMIN: Math.min(SPLIT_KEYS_MIN, PSMAX),
      EPV,
      NV,
      DD: D,
      L,
      LN,
      VPL,
      RPI,
      J,
      KB,
      RPV,
      JV,
      D4,
      GV,
      SPN: PSMAX * GV,
      HR,
      SCR,
      CW,
    };
  }
  return undefined;
}

/**
 * Decode through the fast `decode` kernel (split-K over each page, all G heads per K/V word),
 * then `merge_split` when split; undefined when the shape does not fit it.
 */
export function decodeSplit(
  s: PagedKvStorage,
  layer: number,
  q: Tensor,
  args: { t0: number; window: number; scale: number },
  G: number,
  ex: Extras,
): Tensor | undefined {
  const gpu = s.gpu;
  const [B, Hq, , D] = q.shape;
  const c = splitDecodeShape(s.dtype, G, D, gpu.limits.maxComputeWorkgroupStorageSize);
  if (!c) return undefined;
  const maxLen = s.planLength(layer);
  // Fixed partitions when asked for (capped at the kernel's maximum), else np from the blocks'
  // room (about SPLIT_TARGET_WORKGROUPS in all, within [maxLen / max, maxLen / min] per page)
  // and ps = 0: each split takes max(KMIN, ceil(len / np)) of the page's true length, so the
  // splits the spare room adds (DMS after eviction) stay empty and cost one length read.
  let ps = 0, np: number;
  if (s.partitionKeys) {
    ps = Math.min(c.PSMAX, s.partitionKeys);
    np = Math.ceil(maxLen / ps);
  } else {
    const want = Math.ceil(SPLIT_TARGET_WORKGROUPS / s.pages);
    np = Math.max(Math.ceil(maxLen / c.PSMAX), Math.min(want, Math.ceil(maxLen / c.KMIN)));
  }
  const direct = np === 1;
  const out = Tensor.empty(gpu, [B, Hq, 1, D], s.dtype);
  const rows = s.pages * np * G;
  const po = direct ? undefined : gpu.alloc(rows * D * 4, "attn split o");
  const pml = gpu.alloc(direct ? 16 : rows * 8, "attn split m,l");
  const pool = s.pool(layer);
  const params = {
    pages: s.pages,
    hkv: s.kvHeads,
    g: G,
    d: D,
    n: 1,
    nc: 0,
    qb: 1,
    nqb: 1,
    np,
    ps,
    rows: G,
    bs: s.blockSize,
    mb: s.tableWidth,
    lbase: layer * s.pages,
    direct: direct ? 1 : 0,
    t0: args.t0,
    window: args.window,
    scale: args.scale,
    ...ex.fields,
  };
  const bufs: (GPUBuffer | undefined)[] = [];
  bufs[1] = s.lens;
  bufs[2] = s.table;
  bufs[3] = pool.meta;
  bufs[6] = q.buffer;
  bufs[11] = out.buffer;
  bufs[12] = pool.k;
  bufs[13] = pool.v;
  bufs[14] = po ?? s.dummy;
  bufs[15] = pml;
  bufs[16] = ex.lg;
  bufs[17] = ex.sel;
  const kd = gpu.kernel({
    shader: "paged_attention",
    entry: "decode",
    defines: { T: s.dtype },
    constants: c,
  });
  dispatchBound(gpu, kd, bufs, Gpu.grid(s.pages * np), params);
  if (po) {
    const km = gpu.kernel({
      shader: "paged_attention",
      entry: "merge_split",
      defines: { T: s.dtype },
      constants: { ...c, WG: 128 },
    });
    dispatchBound(gpu, km, bufs, Gpu.grid(s.pages * G * (D / 4 / c.CW)), params);
    gpu.release(po);
  }
  gpu.release(pml);
  return out;
}
