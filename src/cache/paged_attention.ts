/**
 * Attention through the paged KV storage ({@linkcode ./paged_storage.ts}) with the exact SPEC
 * §5.1 rule, its launchers, and the CPU reference they are tested against.
 *
 * Query head h·G+g uses KV head h (GQA, HF order); a stored entry (position i, mark m) is
 * visible to the query at position t iff i ≤ t and (m = 0 or t − i ≤ W); mark 2 (padding) is
 * never visible. Shapes: `q:[B, Hq, n, D]`, pages `[B·Hkv]` of `[len, D]` keys/values →
 * `out:[B, Hq, n, D]`.
 *
 * Decode without policy extras runs `pagedDecodeFlash` ({@linkcode ./paged_decode.ts}:
 * `decode_online`, then `combine`, in `shaders/paged_decode.wgsl`) where its shape allows ({@linkcode decodeKernelFor} names the kernel a call gets); the kernels below
 * are the readable variant and serve the extras.
 *
 * Kernels (`shaders/paged_attention.wgsl`):
 * - `partial`: one workgroup per (page, block of `qb` queries, key partition). Its R = qb·G
 *   query rows (all G query heads of the page share its K/V, GQA) run an online softmax over
 *   the partition's keys in tiles of 32. Decode uses qb = 1 and splits the page into up to
 *   ~256/pages partitions (flash-decoding); prefill uses up to 64 rows per workgroup. The
 *   prefill chunk's own keys are read straight from the k/v tensors as virtual entries
 *   len..len+n-1 (positions t0..t0+n-1, marks from the policy), so nothing has to be written
 *   before attention and dropped after it. With one partition the kernel writes the output.
 * - `decode` (decode only; the fallback of `decodeKernel: "split"` where the flash kernel does not
 *   fit, and `decodeKernel: "split"` per call, when rows are 16-byte words:
 *   headDim % 8 = 0 in f16, % 4 = 0 in f32, and G ≤ 8): split-K flash-decoding, one workgroup
 *   of 256 threads per (page, split). All G query heads of the page share each K/V word, read
 *   once, coalesced, as `vec4<u32>` (8 f16 or 4 f32 per load), f32 math: scores in blocks,
 *   softmax over the split, P·V, per-head sums; `merge_split` combines the splits
 *   (max-subtracted, one workgroup per page, head and 32 output channels).
 *   - v0: one key per thread, ~290 GB/s on an H200 (468 µs at 32K, B = 1).
 *   - v1 (H200, Hkv 8, G 4, D 128, f16, `bench/attention.ts`): 128 threads, splits of ≤ 256
 *     keys, ~1024 workgroups, tiles of 32 keys (2 barriers each, 4 loads of 16 bytes in flight
 *     per thread), register arrays declared for the worst shape (32 + 16 + 16 vec4 per thread:
 *     more than the register file gives 256 threads, so spilled or few workgroups per SM), and
 *     every split at least 32 keys of ceil(len / np). 413 µs at 32K B = 1 (325 GB/s, PyTorch
 *     SDPA 40 µs), a ~57 µs floor at 4K, dense/DMS only 2.7 at CR 7: per-workgroup fixed costs
 *     (barriers, serial load round trips) × many thin splits, not bytes.
 *   - v2 (now): 256 threads; scores in blocks of 128 keys (f16 D 128: 8 lanes per key, each
 *     issuing 8 independent 16-byte loads, 32 KB in flight per workgroup, 2 barriers per
 *     block), softmax in 2 barriers, P·V with 8 independent loads per thread in flight, heads
 *     summed 2 per round; register arrays capped at 16 q words, 8 loads, 16 accumulators
 *     (G = 8 uses 16 lanes per key to fit); splits of ≤ 512 keys (256 for G > 4), about 512
 *     workgroups from the blocks a page holds (`PagedKvStorage.planLength`), and each split takes
 *     max(128, ceil(len / np)) of the true length, so the splits the blocks' spare room or a
 *     loose bound adds (DMS after eviction) exit after one length
 *     read and the live ones keep ≥ one full block: work follows the live entries. Workgroup
 *     memory ≤ the device's limit (J shrinks to fit; 30 KB for f16 G 4 D 128).
 *   `partial` stays as the readable variant and the fallback (`decodeKernel: "tiled"`, per
 *   storage or per call); `test/cache/paged_attention_test.ts` checks that they agree.
 * - `merge`: max-subtracted merge of `partial`'s partitions (m, l, o). A partition with no visible
 *   key has l = 0 and weight 0; this is the correct behaviour in the corner where a head kept
 *   nothing older than its window (SPEC §9.7: the reference's `where(isinf(lse), 0, lse)`
 *   would give such an empty partition weight e^0 = 1 with real flash-attn).
 *
 * - `probs` (decode, only when a policy asks through {@linkcode PagedAttentionArgs.probs}: TOVA,
 *   H2O): `decode` / `partial` also write each slot's scaled logits `[pages, G, stride]`, and
 *   this pass (one workgroup per page, over len·G floats, not over K/V) normalises them per
 *   query head with the head's log-sum-exp and averages over the G heads of the page.
 * - Chunk selection (decode, {@linkcode PagedAttentionArgs.chunks}: Quest): a per-page mask of
 *   key chunks; keys of unselected chunks are not read (treated as invisible).
 * Neither extra changes the default path: without them `lgs = csz = 0` and the kernels write
 * and read nothing more (one uniform test per key).
 *
 * CPU reference: {@linkcode pagedAttentionReference}, the dense f64 §5.1 oracle over the whole
 * sequence (what attention through a cache that holds it must return, whatever a policy kept
 * of the invisible keys); {@linkcode decodeProbsReference} for the probabilities.
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { dispatchBound } from "./dispatch_bound.ts";
import { pagedDecodeFlash } from "./paged_decode.ts";
import { flashDecodeShape } from "./paged_decode_plan.ts";
import { decodeSplit, type Extras, splitDecodeShape } from "./paged_split.ts";
import { FLASH_MIN_QUERIES, pagedPrefillAttention } from "./paged_prefill.ts";
import { pagedAttentionSimple, simpleAttentionFor } from "./paged_simple.ts";
import type { PagedKvStorage } from "./paged_storage.ts";

/** Arguments of {@linkcode pagedAttention}. */
export interface PagedAttentionArgs {
  /** Position of query 0 (and of chunk key 0). */
  t0: number;
  /** W: a marked entry stays visible for distances 0..W. */
  window: number;
  /** Softmax scale. */
  scale: number;
  /**
   * Decode kernel for this call, overriding the storage's `decodeKernel` (whose `"split"`
   * means `"flash"` here): `"flash"` (`pagedDecodeFlash` in ./paged_decode.ts where the shape
   * allows and neither `probs` nor `chunks` is asked for, else `"split"`), `"split"` (the v2
   * split-K `decode` kernel where the shape allows) or `"tiled"` (the readable `partial`).
   */
  decodeKernel?: "flash" | "split" | "tiled";
  /**
   * Prefill kernel, for chunks of at least `FLASH_MIN_QUERIES` queries whose shape it takes
   * (`pagedPrefillAttention` in ./paged_prefill.ts): `"wide"` (64-key tiles) or `"flash"`
   * (32-key tiles); by default the wide kernel where it fits, else flash. `"tiled"`: `partial`.
   */
  prefillKernel?: "flash" | "wide" | "tiled";
  /** Prefill: the chunk's own keys, appended virtually after each page's entries. */
  chunk?: {
    /** `[B, Hkv, n, D]` */
    k: Tensor;
    /** `[B, Hkv, n, D]` */
    v: Tensor;
    /** `[B·Hkv, n]` i32 marks: 0 keep, 1 marked, 2 padding (invisible). */
    marks: GPUBuffer;
  };
  /**
   * Decode only: also write each stored entry's attention probability, averaged over the G
   * query heads of its page, into `buffer` (f32) at `offset + page·stride + slot` for slots
   * below min(len, stride) (`accumulate`: added to what is there). For score-based policies.
   */
  probs?: DecodeProbsOutput;
  /**
   * Decode only: attend only to the keys of selected chunks: slot s of page p is read iff
   * `select[p·stride + floor(s / size)] != 0` (u32). For Quest.
   */
  chunks?: DecodeChunkSelection;
}

/** Where {@linkcode pagedAttention} writes decode attention probabilities (`probs`). */
export interface DecodeProbsOutput {
  /** f32 buffer of the policy, `[.., pages, stride]`. */
  buffer: GPUBuffer;
  /** Element offset of this layer's `[pages, stride]` rows. */
  offset: number;
  /** Slots per page row (entries at slots ≥ stride are not written). */
  stride: number;
  /** true: add to the buffer (accumulated scores), false: overwrite. */
  accumulate: boolean;
}

/** The chunks {@linkcode pagedAttention} attends to in decode (`chunks`). */
export interface DecodeChunkSelection {
  /** u32 `[pages, stride]`: 1 = attend to the chunk. */
  select: GPUBuffer;
  /** Keys (slots) per chunk. */
  size: number;
  /** Chunks per page row of `select` (≥ ceil(len / size) of every page). */
  stride: number;
}

const KT = 32;
const ACC = 16;
const TARGET_WORKGROUPS = 256;

/**
 * Attention of `q` over each page's live entries of `layer` in `s` (and, in prefill, the
 * chunk's own keys) with the exact SPEC §5.1 rule. Records the dispatches; returns the output.
 *
 * @param q `[B, Hq, n, D]`, Hq = G·Hkv (query head h·G+g uses KV head h).
 * @returns `[B, Hq, n, D]`; rows with no visible key (padded queries) are 0.
 */
export function pagedAttention(
  s: PagedKvStorage,
  layer: number,
  q: Tensor,
  args: PagedAttentionArgs,
): Tensor {
  s.checkLayer(layer);
  const gpu = s.gpu;
  const [B, Hq, n, D] = q.shape;
  const Hkv = s.kvHeads, G = Hq / Hkv;
  const nc = args.chunk ? n : 0;
  const decode = n === 1;
  const rowsMax = decode ? G : 64;
  const wg = G * D <= 128 * ACC && decode ? 128 : 256;
  if (G * D > 256 * ACC) {
    throw new RangeError(
      `attention: query heads per KV head × headDim = ${G} × ${D} exceeds ${256 * ACC}`,
    );
  }
  // Queries per workgroup: as many as fit (rows <= 64, R·D <= ACC·WG), but no more than the
  // next power of two >= n, so that few pipeline variants exist.
  const fit = Math.max(1, Math.min(Math.floor(rowsMax / G), Math.floor((wg * ACC) / (G * D))));
  const qb = Math.min(fit, 2 ** Math.ceil(Math.log2(n)));
  checkExtras(args, decode, G);
  const forced = args.decodeKernel !== undefined || args.prefillKernel !== undefined;
  if (!forced && !args.probs && !args.chunks && simpleAttentionFor(s)) {
    return pagedAttentionSimple(s, layer, q, args); // OpenGL CPU adapters (./paged_simple.ts)
  }
  if (args.chunk && n >= FLASH_MIN_QUERIES && args.prefillKernel !== "tiled") {
    const variant = args.prefillKernel === "flash" || args.prefillKernel === "wide"
      ? args.prefillKernel
      : undefined;
    const out = pagedPrefillAttention(s, layer, q, { ...args, chunk: args.chunk, variant });
    if (out) return out;
  }
  const kind = decode && !args.chunk ? decodeKernelFor(s, G, D, args) : "tiled";
  if (kind === "flash") {
    const out = pagedDecodeFlash(s, layer, q, args);
    if (out) return out;
  }
  const ex = extras(s, args, G);
  if (kind === "split") {
    const out = decodeSplit(s, layer, q, args, G, ex);
    if (out) return finishExtras(s, layer, args, G, ex, out);
  }
  const R = qb * G;
  const nqb = Math.ceil(n / qb);
  // Decode plans its grid from the blocks (stable between allocations), prefill from the bounds.
  let maxLen = 0;
  if (decode && !args.chunk) maxLen = s.planLength(layer);
  else for (const b of s.bounds(layer)) maxLen = Math.max(maxLen, b);
  const maxKeys = Math.max(1, maxLen + nc);
  const tiles = Math.ceil(maxKeys / KT);
  let ps: number;
  if (s.partitionKeys) {
    ps = s.partitionKeys;
  } else {
    const want = Math.min(tiles, Math.max(1, Math.ceil(TARGET_WORKGROUPS / (s.pages * nqb))));
    ps = KT * Math.ceil(tiles / want);
  }
  const np = Math.ceil(maxKeys / ps);
  const direct = np === 1;
  const out = Tensor.empty(gpu, [B, Hq, n, D], s.dtype);
  const part = direct ? undefined : gpu.alloc(s.pages * nqb * np * R * (D + 2) * 4, "attn part");
  const pool = s.pool(layer);
  const params = {
    pages: s.pages,
    hkv: Hkv,
    g: G,
    d: D,
    n,
    nc,
    qb,
    nqb,
    np,
    ps,
    rows: R,
    bs: s.blockSize,
    mb: s.tableWidth,
    lbase: layer * s.pages,
    direct: direct ? 1 : 0,
    t0: args.t0,
    window: args.window,
    scale: args.scale,
    ...ex.fields,
  };
  const bufs = [
    undefined,
    s.lens,
    s.table,
    pool.meta,
    pool.k,
    pool.v,
    q.buffer,
    args.chunk ? args.chunk.k.buffer : q.buffer,
    args.chunk ? args.chunk.v.buffer : q.buffer,
    args.chunk ? args.chunk.marks : s.lens,
    part ?? s.dummy,
    out.buffer,
  ];
  bufs[16] = ex.lg;
  bufs[17] = ex.sel;
  const constants = { WG: wg, R, KT, RD: R * D, RKT: R * KT };
  const kp = gpu.kernel({
    shader: "paged_attention",
    entry: "partial",
    defines: { T: s.dtype },
    constants,
  });
  dispatchBound(gpu, kp, bufs, Gpu.grid(s.pages * nqb * np), params);
  if (part) {
    const km = gpu.kernel({
      shader: "paged_attention",
      entry: "merge",
      defines: { T: s.dtype },
      constants: {
        WG: Math.min(64, Math.max(1, 2 ** Math.ceil(Math.log2(D)))),
        R,
        KT,
        RD: R * D,
        RKT: R * KT,
      },
    });
    dispatchBound(gpu, km, bufs, Gpu.grid(s.pages * G * n), params);
    gpu.release(part);
  }
  return finishExtras(s, layer, args, G, ex, out);
}

/**
 * The decode kernel {@linkcode pagedAttention} runs for a query of `G` heads per KV head and
 * head dim `D` with these arguments (one query, no chunk keys): `"flash"`
 * (./paged_decode.ts), `"split"` (the v2 `decode` kernel) or `"tiled"` (`partial`).
 */
export function decodeKernelFor(
  s: PagedKvStorage,
  G: number,
  D: number,
  args: Pick<PagedAttentionArgs, "decodeKernel" | "probs" | "chunks">,
): "flash" | "split" | "tiled" {
  const want = args.decodeKernel ?? (s.decodeKernel === "split" ? "flash" : "tiled");
  const maxShared = s.gpu.limits.maxComputeWorkgroupStorageSize;
  if (
    want === "flash" && !args.probs && !args.chunks &&
    flashDecodeShape(s.dtype, G, D, maxShared)
  ) {
    return "flash";
  }
  if (want === "tiled" || !splitDecodeShape(s.dtype, G, D, maxShared)) return "tiled";
  return "split";
}

function checkExtras(args: PagedAttentionArgs, decode: boolean, G: number): void {
  if (!args.probs && !args.chunks) return;
  if (!decode || args.chunk) {
    throw new RangeError("attention: probs and chunks are decode-only (n = 1, no chunk keys)");
  }
  for (
    const [name, x] of [
      ["probs.stride", args.probs?.stride],
      ["chunks.size", args.chunks?.size],
      ["chunks.stride", args.chunks?.stride],
    ] as const
  ) {
    if (x !== undefined && (!Number.isInteger(x) || x < 1)) {
      throw new RangeError(`attention: ${name} must be an integer >= 1, got ${x}`);
    }
  }
  if (args.probs && G > 32) {
    throw new RangeError(`attention: probs need at most 32 query heads per KV head, got ${G}`);
  }
}

/** Buffers and uniforms of the extras (16-byte stand-ins when not asked for). */
function extras(s: PagedKvStorage, args: PagedAttentionArgs, G: number): Extras {
  const pr = args.probs, ch = args.chunks;
  const lgs = pr ? pr.stride : 0;
  return {
    lg: s.gpu.alloc(pr ? s.pages * G * lgs * 4 : 16, "attn logits"),
    sel: ch ? ch.select : s.table,
    fields: {
      lgs,
      csz: ch ? ch.size : 0,
      cst: ch ? ch.stride : 0,
      pbase: pr ? pr.offset : 0,
      pacc: pr?.accumulate ? 1 : 0,
    },
  };
}

/** Runs the `probs` pass when asked for, releases the logits; returns `out`. */
function finishExtras(
  s: PagedKvStorage,
  layer: number,
  args: PagedAttentionArgs,
  G: number,
  ex: Extras,
  out: Tensor,
): Tensor {
  if (args.probs) {
    const gpu = s.gpu;
    const kern = gpu.kernel({
      shader: "paged_attention",
      entry: "probs",
      defines: { T: s.dtype },
      constants: { WG: 64, R: G, KT, RD: G, RKT: G * KT },
    });
    const bufs: (GPUBuffer | undefined)[] = [];
    bufs[1] = s.lens;
    bufs[16] = ex.lg;
    bufs[18] = args.probs.buffer;
    dispatchBound(gpu, kern, bufs, Gpu.grid(s.pages), {
      ...NO_FIELDS,
      pages: s.pages,
      hkv: s.kvHeads,
      g: G,
      lbase: layer * s.pages,
      ...ex.fields,
    });
  }
  s.gpu.release(ex.lg);
  return out;
}

const NO_FIELDS = {
  pages: 0,
  hkv: 0,
  g: 0,
  d: 0,
  n: 1,
  nc: 0,
  qb: 1,
  nqb: 1,
  np: 1,
  ps: 0,
  rows: 0,
  bs: 1,
  mb: 1,
  lbase: 0,
  direct: 1,
  t0: 0,
  window: 0,
  scale: 1,
};

export {
  decodeProbsReference,
  pagedAttentionReference,
  type PagedReferenceOptions,
  type PagedReferenceShape,
} from "./paged_attention_reference.ts";
