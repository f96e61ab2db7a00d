/**
 * The barrier-free paged attention kernel (`shaders/paged_simple.wgsl`): one invocation per
 * query row loops over its page's live entries, then (prefill) the chunk's own keys, with an
 * online softmax and the exact SPEC §5.1 rule. No workgroup memory, no barriers: slow on a GPU,
 * but what an OpenGL CPU adapter (Mesa's llvmpipe GL) can compile in a second — the flash
 * kernels took 182 s (prefill) and 146 s (decode) to compile there on two cores, most of the
 * demo's 6 minutes. {@linkcode pagedAttention} routes to it on such adapters, and everywhere
 * for a storage made with `decodeKernel: "simple"`. Its CPU twin is the same f64 oracle as the
 * other attention kernels' (`pagedAttentionReference`).
 *
 * @example A cache whose attention runs through this kernel (tests force it on Vulkan)
 * ```ts ignore
 * const cache = createDmsCache(gpu, { ...shape, window: 8, blockSize: 4, decodeKernel: "simple" });
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { dispatchBound } from "./dispatch_bound.ts";
import type { PagedKvStorage } from "./paged_storage.ts";

/** Widest head the kernel's per-invocation accumulator holds. */
export const SIMPLE_MAX_HEAD_DIM = 256;

/** Arguments of {@linkcode pagedAttentionSimple} (a subset of `PagedAttentionArgs`). */
export interface SimpleAttentionArgs {
  /** Position of query 0 (and of chunk key 0). */
  t0: number;
  /** W: a marked entry stays visible for distances 0..W. */
  window: number;
  /** Softmax scale. */
  scale: number;
  /** Prefill: the chunk's own keys `[B, Hkv, n, D]` and marks `[B·Hkv, n]` (2 = padding). */
  chunk?: { k: Tensor; v: Tensor; marks: GPUBuffer };
}

/**
 * Whether attention on `s` takes the simple kernel by default: a storage made with
 * `decodeKernel: "simple"`, or an OpenGL CPU adapter (heads up to
 * {@linkcode SIMPLE_MAX_HEAD_DIM} channels).
 */
export function simpleAttentionFor(s: PagedKvStorage): boolean {
  if (s.headDim > SIMPLE_MAX_HEAD_DIM) return false;
  return s.decodeKernel === "simple" || s.gpu.adapter.cpuGl;
}

/**
 * Attention of `q` through the pages of `layer` (and the chunk's keys), one invocation per
 * query row. Records one dispatch.
 *
 * @param q `[B, Hq, n, D]`, Hq = G·Hkv.
 * @returns `[B, Hq, n, D]` in the storage dtype; rows with no visible key are 0.
 * @throws {RangeError} For a head wider than {@linkcode SIMPLE_MAX_HEAD_DIM}.
 */
export function pagedAttentionSimple(
  s: PagedKvStorage,
  layer: number,
  q: Tensor,
  args: SimpleAttentionArgs,
): Tensor {
  const [B, Hq, n, D] = q.shape;
  if (D > SIMPLE_MAX_HEAD_DIM) {
    throw new RangeError(`simple attention: head dim ${D} > ${SIMPLE_MAX_HEAD_DIM}`);
  }
  const gpu = s.gpu, G = Hq / s.kvHeads, nc = args.chunk ? n : 0;
  const out = Tensor.empty(gpu, [B, Hq, n, D], s.dtype);
  const pool = s.pool(layer);
  const c = args.chunk;
  const bufs = [
    undefined,
    s.lens,
    s.table,
    pool.meta,
    pool.k,
    pool.v,
    q.buffer,
    c?.k.buffer ?? s.dummy,
    c?.v.buffer ?? s.dummy,
    c?.marks ?? s.dummy,
    out.buffer,
  ];
  const kernel = gpu.kernel({
    shader: "paged_simple",
    entry: "simple",
    defines: { T: s.dtype },
    constants: { WG: 64 },
  });
  dispatchBound(gpu, kernel, bufs, Gpu.grid(Math.ceil((s.pages * G * n) / 64)), {
    pages: s.pages,
    hkv: s.kvHeads,
    g: G,
    d: D,
    n,
    nc,
    bs: s.blockSize,
    mb: s.tableWidth,
    lbase: layer * s.pages,
    t0: args.t0,
    window: args.window,
    scale: args.scale,
  });
  return out;
}
