/**
 * Flash-style prefill attention through the paged KV storage ({@linkcode ./paged_storage.ts})
 * with the exact SPEC §5.1 rule: its launcher and its readable CPU twin.
 *
 * A prefill chunk of n queries (positions t0..t0+n-1) attends over each page's live entries
 * (whatever the policy kept: dense, or DMS with its marks) and the chunk's own keys, which are
 * appended virtually after the entries (positions t0.., marks from the policy; nothing is written
 * to the cache first). Query head h·G+g uses KV head h (GQA). A key (pos, mark) is visible to the
 * query at position t iff pos ≤ t, mark ≠ 2 (padding) and (mark = 0 or t − pos ≤ W).
 * Shapes: `q:[B, Hq, n, D]`, chunk `k, v:[B, Hkv, n, D]`, marks `[B·Hkv, n]` → `out:[B, Hq, n, D]`.
 *
 * Kernel variants (prefill through the cache; `bench/prefill.ts` times them):
 * - `partial` (shaders/paged_attention.wgsl, the readable tiled kernel, still the path for
 *   chunks shorter than {@linkcode FLASH_MIN_QUERIES} and shapes the flash kernel does not
 *   take): one thread per score with a scalar loop over D from workgroup memory, one thread per
 *   output channel for P·V. ≈ 0.7 TFLOP/s on an H200 (32K dense prefill: 13.2 s of GPU time).
 * - `wide` (shaders/paged_prefill_wide.wgsl, the default where it fits: D ≤ 128, whole 16-byte
 *   words per row): the same workgroups over tiles of 64 keys, laid out like the tiled matmul —
 *   each thread owns a 4 × 4 block of S and 4 rows × 4 (or 8) channels of O in vec4 registers;
 *   the row max of a tile is reduced through workgroup memory, every thread computes the
 *   exponentials, rescale and running sums of its own block (sums reduced once at the end);
 *   K, V and q are read as 16-byte words; head dim and G are pipeline constants. H200, Qwen3-8B
 *   attention shape: 5.8 TFLOP/s dense at 4K and 32K, 3.1–3.4× `flash` (measured before the
 *   word loads).
 * - `flash` (shaders/paged_prefill.wgsl): one workgroup of 256 threads per (page, tile of
 *   64 / G queries), 64 query rows × tiles of 32 keys (16 when D > 128) in workgroup memory,
 *   S = Q·Kᵀ register-blocked (4 rows × 2 keys per thread over D in chunks of 32 channels),
 *   online softmax in f32, O = α·O + P·V with 4 rows × D/16 channels of vec4 accumulators per
 *   thread; chunk keys past the tile's last query are never loaded (causal). f16 storage is
 *   read as f16 and converted; all math in f32. Needs G ≤ 64, D ≤ 256 and ~26 KB of workgroup
 *   memory (checked against the device's limit; otherwise the tiled path runs).
 *
 * CPU twin: {@linkcode pagedPrefillReference}, the same computation from explicit page contents
 * (entries with position and mark, K/V rows) in f64; the test also compares against the dense
 * §5.1 oracle of a whole sequence fed through dense and DMS caches
 * (`test/cache/paged_prefill_test.ts`).
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { dispatchBound } from "./dispatch_bound.ts";
import type { PagedKvStorage } from "./paged_storage.ts";

/** Chunks of at least this many queries go to the flash kernel (shorter ones: `partial`). */
export const FLASH_MIN_QUERIES = 8;

/** Arguments of {@linkcode pagedPrefillAttention}. */
export interface PagedPrefillArgs {
  /** Position of query 0 and of chunk key 0. */
  t0: number;
  /** W: a marked entry stays visible for distances 0..W. */
  window: number;
  /** Softmax scale. */
  scale: number;
  /**
   * Kernel: `"wide"` (64-key tiles, 4 × 4 register blocks; needs D ≤ 128, D % 4 = 0 and
   * ~30 KB of workgroup memory) or `"flash"` (32-key tiles). Default: `"wide"` where the shape
   * fits it, else `"flash"`.
   */
  variant?: "wide" | "flash";
  /** The chunk's own keys, appended virtually after each page's entries. */
  chunk: {
    /** `[B, Hkv, n, D]` */
    k: Tensor;
    /** `[B, Hkv, n, D]` */
    v: Tensor;
    /** `[B·Hkv, n]` i32 marks: 0 keep, 1 marked, 2 padding (invisible). */
    marks: GPUBuffer;
  };
}

const ROWS = 64, DK = 32;

/**
 * Override constants of the `flash` kernel for G, D, or undefined when the shape does not fit
 * it (G > 64, D > 256, or more workgroup memory than `maxShared` bytes).
 */
export function flashPrefillShape(
  G: number,
  D: number,
  maxShared: number,
): Record<string, number> | undefined {
  if (!(G >= 1 && G <= ROWS) || !(D >= 1 && D <= 256)) return undefined;
  const BK = D > 128 ? 16 : 32;
  const STAGE = Math.max(ROWS * DK + BK * DK, BK * D);
  const PS = BK * ROWS;
  const bytes = 4 * (STAGE + PS + 4 * BK + 4 * ROWS + 1);
  if (bytes > maxShared) return undefined;
  return { BK, KPT: BK / 16, DC: Math.ceil(D / 16), STAGE, PS };
}

/**
 * Override constants of the `wide` kernel for G, D, or undefined when the shape does not fit it
 * (G > 64, D > 128 or not a multiple of 4, or more workgroup memory than `maxShared` bytes):
 * chunks of 32 channels and slices of 32 V keys where ~39 KB fit, else 16 and 16 (~30 KB).
 */
export function widePrefillShape(
  dtype: "f32" | "f16",
  G: number,
  D: number,
  maxShared: number,
): Record<string, number> | undefined {
  const EPV = dtype === "f16" ? 8 : 4; // elements per 16-byte word
  if (!(G >= 1 && G <= ROWS) || !(D >= EPV && D <= 128 && D % EPV === 0)) return undefined;
  for (const step of [32, 16]) {
    const WSTAGE = Math.max(2 * step * 17, step * D / 4);
    // wst + wps (1024 vec4) + wred (256 vec4) + 4 key arrays of 64 + 2 row arrays + len
    const bytes = 16 * WSTAGE + 16 * 1024 + 16 * 256 + 4 * 4 * 64 + 2 * 4 * ROWS + 4;
    if (bytes <= maxShared) {
      return { SDK: step, VH: step, DC4: Math.ceil(D / 64), WSTAGE, WD: D, WGQ: G, EPV };
    }
  }
  return undefined;
}

/**
 * Prefill attention of the chunk's queries `q` over each page's live entries of `layer` and the
 * chunk's own keys, through the `flash` kernel. Records the dispatch and returns the output, or
 * undefined when the shape does not fit the kernel (the caller then runs the tiled path).
 *
 * @param q `[B, Hq, n, D]`, Hq = G·Hkv (query head h·G+g uses KV head h).
 * @returns `[B, Hq, n, D]` in the storage dtype; rows with no visible key are 0.
 *
 * @example A dense cache, one layer: the first chunk attends only to itself
 * ```ts ignore
 * const out = pagedPrefillAttention(storage, 0, q, { t0: 0, window: 512, scale, chunk });
 * ```
 */
export function pagedPrefillAttention(
  s: PagedKvStorage,
  layer: number,
  q: Tensor,
  args: PagedPrefillArgs,
): Tensor | undefined {
  s.checkLayer(layer);
  const gpu = s.gpu;
  const [B, Hq, n, D] = q.shape;
  const Hkv = s.kvHeads, G = Hq / Hkv;
  const { k, v } = args.chunk;
  if (k.shape.join() !== [B, Hkv, n, D].join() || v.shape.join() !== k.shape.join()) {
    throw new RangeError(
      `pagedPrefillAttention: chunk k/v must be [${B}, ${Hkv}, ${n}, ${D}], got ` +
        `[${k.shape}] and [${v.shape}]`,
    );
  }
  const maxShared = gpu.limits.maxComputeWorkgroupStorageSize;
  const wide = args.variant === "flash" ? undefined : widePrefillShape(s.dtype, G, D, maxShared);
  const c = wide ?? (args.variant === "wide" ? undefined : flashPrefillShape(G, D, maxShared));
  if (!c) return undefined;
  const bq = Math.floor(ROWS / G);
  const nqt = Math.ceil(n / bq);
  const out = Tensor.empty(gpu, [B, Hq, n, D], s.dtype);
  const pool = s.pool(layer);
  const bufs = [
    undefined,
    s.lens,
    s.table,
    pool.meta,
    pool.k,
    pool.v,
    q.buffer,
    k.buffer,
    v.buffer,
    args.chunk.marks,
    out.buffer,
  ];
  const kernel = gpu.kernel({
    shader: wide ? "paged_prefill_wide" : "paged_prefill",
    entry: wide ? "wide" : "flash",
    defines: { T: s.dtype },
    constants: c,
  });
  dispatchBound(gpu, kernel, bufs, Gpu.grid(s.pages * nqt), {
    pages: s.pages,
    hkv: Hkv,
    g: G,
    d: D,
    n,
    bq,
    nqt,
    bs: s.blockSize,
    mb: s.tableWidth,
    lbase: layer * s.pages,
    t0: args.t0,
    window: args.window,
    scale: args.scale,
  });
  return out;
}

/** One page's live entries, as {@linkcode pagedPrefillReference} reads them. */
export interface PageContents {
  /** Absolute position of each entry. */
  positions: ArrayLike<number>;
  /** Mark of each entry: 0 keep, 1 marked, 2 padding. */
  marks: ArrayLike<number>;
  /** `[len, D]` keys. */
  k: ArrayLike<number>;
  /** `[len, D]` values. */
  v: ArrayLike<number>;
}

/** Sizes and rule of {@linkcode pagedPrefillReference}. */
export interface PagedPrefillReferenceArgs {
  /** KV heads (pages per sequence). */
  Hkv: number;
  /** Query heads per KV head. */
  G: number;
  /** Queries per page (= chunk keys). */
  n: number;
  /** Head dim. */
  D: number;
  /** Position of query 0 and chunk key 0. */
  t0: number;
  /** W. */
  window: number;
  /** Softmax scale. */
  scale: number;
}

/**
 * The readable CPU twin of the `flash` kernel, in f64: for each page (b, h), each query j at
 * position t0 + j and each of its G heads, a softmax over the page's entries followed by the
 * chunk's keys, keeping only the keys visible under SPEC §5.1.
 *
 * @param pages `[B·Hkv]` page contents before the chunk.
 * @param q `[B, Hq, n, D]` flat.
 * @param kc `[B, Hkv, n, D]` flat chunk keys.
 * @param vc `[B, Hkv, n, D]` flat chunk values.
 * @param cm `[B·Hkv, n]` chunk marks.
 * @returns `[B, Hq, n, D]`; rows without a visible key are 0.
 *
 * @example One page, no earlier entries, two chunk keys
 * ```ts
 * import { pagedPrefillReference } from "./paged_prefill.ts";
 * const empty = { positions: [], marks: [], k: [], v: [] };
 * const out = pagedPrefillReference([empty], [1, 1], [1, 1], [2, 4], [0, 0],
 *   { Hkv: 1, G: 1, n: 2, D: 1, t0: 0, window: 4, scale: 1 });
 * console.log(out); // query 0 sees value 2; query 1 sees 2 and 4 equally: 3
 * ```
 */
export function pagedPrefillReference(
  pages: readonly PageContents[],
  q: ArrayLike<number>,
  kc: ArrayLike<number>,
  vc: ArrayLike<number>,
  cm: ArrayLike<number>,
  a: PagedPrefillReferenceArgs,
): Float64Array {
  const { Hkv, G, n, D, t0, window, scale } = a;
  const out = new Float64Array(pages.length * G * n * D);
  const visible = (t: number, pos: number, mark: number) =>
    pos <= t && mark !== 2 && (mark === 0 || t - pos <= window);
  pages.forEach((page, pg) => {
    const len = page.positions.length;
    // Keys of this page: entries 0..len-1, then chunk keys len..len+n-1.
    const key = (i: number) =>
      i < len
        ? { pos: page.positions[i], mark: page.marks[i], k: page.k, v: page.v, row: i }
        : { pos: t0 + i - len, mark: cm[pg * n + i - len], k: kc, v: vc, row: pg * n + i - len };
    for (let g = 0; g < G; g++) {
      const b = Math.floor(pg / Hkv), h = pg % Hkv;
      const head = b * Hkv * G + h * G + g;
      for (let j = 0; j < n; j++) {
        const qo = (head * n + j) * D;
        const scores: { s: number; v: ArrayLike<number>; row: number }[] = [];
        for (let i = 0; i < len + n; i++) {
          const e = key(i);
          if (!visible(t0 + j, e.pos, e.mark)) continue;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qo + d] * e.k[e.row * D + d];
          scores.push({ s: dot * scale, v: e.v, row: e.row });
        }
        if (!scores.length) continue;
        const m = Math.max(...scores.map((x) => x.s));
        let l = 0;
        for (const x of scores) l += Math.exp(x.s - m);
        for (const x of scores) {
          const w = Math.exp(x.s - m) / l;
          for (let d = 0; d < D; d++) out[qo + d] += w * x.v[x.row * D + d];
        }
      }
    }
  });
  return out;
}
