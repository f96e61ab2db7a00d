/**
 * Test helpers for the paged caches: random problems, the dense float64 §5.1 oracle
 * (`pagedAttentionReference` of src/cache/paged_attention.ts with marks from
 * `oracle.marksFromDecisions`), and a driver that feeds a whole sequence through a cache in
 * chunks and assembles the outputs with one readback.
 */

import { marksFromDecisions, NaiveTracker } from "../../src/dms/oracle.ts";
import { pagedAttentionReference } from "../../src/cache/paged_attention.ts";
import type { KvCache } from "../../src/cache/kv_cache.ts";
import type { PagedKvStorage } from "../../src/cache/paged_storage.ts";
import { readTensors, Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { gpu, randomArray } from "../_util.ts";

/** A whole attention problem (one layer), CPU side. */
export interface Problem {
  B: number;
  Hkv: number;
  G: number;
  D: number;
  T: number;
  /** [B, Hq, T, D] */
  q: Float32Array;
  /** [B, Hkv, T, D] */
  k: Float32Array;
  /** [B, Hkv, T, D] */
  v: Float32Array;
  /** [B, Hkv, T] 0/1, unshifted (d[t] marks key t-1) */
  d: Int32Array;
  /** [B, T] 1 = token, 0 = left padding; absent = no padding */
  mask?: Int32Array;
}

/** Sizes and randomness of {@linkcode makeProblem}. */
export interface ProblemSpec {
  B: number;
  Hkv: number;
  G: number;
  D: number;
  T: number;
  seed: number;
  /** P(d = 1). */
  pEvict: number;
  /** Left padding per row (clamped to T). */
  pads?: readonly number[];
  /** Round q, k, v to f16. */
  f16?: boolean;
}

/** Random q/k/v in [-1, 1) (scaled so that scores vary), decisions with P(1) = pEvict. */
export function makeProblem(s: ProblemSpec): Problem {
  const { B, Hkv, G, D, T } = s;
  let q = randomArray(B * Hkv * G * T * D, s.seed, -2, 2);
  let k = randomArray(B * Hkv * T * D, s.seed + 1);
  let v = randomArray(B * Hkv * T * D, s.seed + 2);
  if (s.f16) [q, k, v] = [roundToF16(q), roundToF16(k), roundToF16(v)];
  const u = randomArray(B * Hkv * T, s.seed + 3, 0, 1);
  const d = Int32Array.from(u, (x) => (x < s.pEvict ? 1 : 0));
  let mask: Int32Array | undefined;
  if (s.pads && s.pads.some((p) => p > 0)) {
    mask = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const pad = Math.min(T, s.pads[b % s.pads.length]);
      for (let t = pad; t < T; t++) mask[b * T + t] = 1;
    }
  }
  return { B, Hkv, G, D, T, q, k, v, d, mask };
}

/** Marks `[B, Hkv, T]`: mark(i) = d(i+1) per page (SPEC §2), from the oracle. */
export function marksOf(pr: Problem): Uint8Array {
  const { B, Hkv, T } = pr;
  const out = new Uint8Array(B * Hkv * T);
  for (let p = 0; p < B * Hkv; p++) {
    out.set(marksFromDecisions(pr.d.subarray(p * T, (p + 1) * T)), p * T);
  }
  return out;
}

/** The dense f64 oracle: every query over all T keys under SPEC §5.1, `[B, Hq, T, D]`. */
export function expected(pr: Problem, window: number, scale?: number): Float64Array {
  const { B, Hkv, G, D, T } = pr;
  return pagedAttentionReference(pr.q, pr.k, pr.v, { B, Hq: Hkv * G, Hkv, T, D }, {
    scale,
    keyMask: pr.mask,
    window,
    marks: marksOf(pr),
  });
}

/** Rows t0..t0+n-1 of the third axis of a [A, T, inner] array (A = product of leading dims). */
export function sliceT(
  x: ArrayLike<number>,
  A: number,
  T: number,
  inner: number,
  t0: number,
  n: number,
): number[] {
  const out: number[] = [];
  for (let a = 0; a < A; a++) {
    for (let t = t0; t < t0 + n; t++) {
      for (let c = 0; c < inner; c++) out.push(x[(a * T + t) * inner + c]);
    }
  }
  return out;
}

/** Chunk sizes covering T: `sizes` repeated cyclically, the last one trimmed. */
export function chunking(T: number, sizes: readonly number[]): number[] {
  const out: number[] = [];
  let t = 0, i = 0;
  while (t < T) {
    const n = Math.min(sizes[i++ % sizes.length], T - t);
    out.push(n);
    t += n;
  }
  return out;
}

/** Options of {@linkcode feed}. */
export interface FeedOptions {
  /** First position of `chunks[0]` in the problem (default 0: the cache is fresh). */
  start?: number;
  /** Called after each chunk (all layers) with its [t0, t0 + n). */
  after?: (t0: number, n: number) => Promise<void> | void;
  /** Call `cache.reserve(n)` before each chunk. */
  reserve?: boolean;
}

/**
 * Feeds `problems` (one per layer, same sizes) through `cache` in `chunks`, passing the mask
 * slice of each chunk when the problem has padding. Returns every layer's outputs assembled
 * to `[B, Hq, T', D]` over the fed range (one readback at the end).
 */
export async function feed(
  cache: KvCache,
  problems: readonly Problem[],
  chunks: readonly number[],
  opts: FeedOptions = {},
): Promise<Float32Array[]> {
  const { B, Hkv, G, D, T } = problems[0];
  const Hq = Hkv * G;
  const dtype = cache.dtype;
  const outs: Tensor[][] = problems.map(() => []);
  let t0 = opts.start ?? 0;
  const first = t0;
  for (const n of chunks) {
    if (opts.reserve) await cache.reserve(n);
    problems.forEach((pr, layer) => {
      using q = Tensor.fromArray(gpu, sliceT(pr.q, B * Hq, T, D, t0, n), [B, Hq, n, D], dtype);
      using k = Tensor.fromArray(gpu, sliceT(pr.k, B * Hkv, T, D, t0, n), [B, Hkv, n, D], dtype);
      using v = Tensor.fromArray(gpu, sliceT(pr.v, B * Hkv, T, D, t0, n), [B, Hkv, n, D], dtype);
      using d = Tensor.fromArray(gpu, sliceT(pr.d, B * Hkv, T, 1, t0, n), [B, Hkv, n], "i32");
      const keyMask = pr.mask ? sliceT(pr.mask, B, T, 1, t0, n) : undefined;
      outs[layer].push(cache.attend(layer, q, k, v, d, { keyMask }));
    });
    if (opts.after) await opts.after(t0, n);
    t0 += n;
  }
  const span = t0 - first;
  const arrays = await readTensors(outs.flat());
  outs.flat().forEach((t) => t.dispose());
  return problems.map((_, layer) => {
    const full = new Float32Array(B * Hq * span * D);
    let c0 = 0;
    chunks.forEach((n, ci) => {
      const a = arrays[layer * chunks.length + ci];
      for (let r = 0; r < B * Hq; r++) {
        full.set(a.subarray(r * n * D, (r + 1) * n * D), (r * span + c0) * D);
      }
      c0 += n;
    });
    return full;
  });
}

/**
 * The oracle's page contents after processing positions 0..t: NaiveTracker over the page's
 * real tokens (SPEC §7.4), positions shifted by the row's left padding.
 */
export function trackerState(
  pr: Problem,
  page: number,
  t: number,
  cacheWindow: number,
): { positions: number[]; flags: number[] } {
  const { T, Hkv } = pr;
  const b = Math.floor(page / Hkv);
  const tr = new NaiveTracker(cacheWindow);
  let pad = 0;
  for (let i = 0; i <= t; i++) {
    if (pr.mask && !pr.mask[b * T + i]) {
      pad++;
      continue;
    }
    tr.push(pr.d[page * T + i]);
  }
  return {
    positions: tr.entries.map((e) => e.pos + pad),
    flags: tr.entries.map((e) => e.flag),
  };
}

/**
 * Overwrites with NaN the K and V rows of every entry of layer 0 that no query at position t0 or
 * later may see (SPEC §5.1: mark 2, a position after t0, or marked and more than `window` before
 * t0), so a kernel that lets any of their words into a score or a sum fails its oracle.
 */
export async function poisonInvisible(
  s: PagedKvStorage,
  t0: number,
  window: number,
  pools: { k: boolean; v: boolean } = { k: true, v: true },
): Promise<void> {
  const { k, v, meta, blocks } = s.pool(0);
  const entries = blocks * s.blockSize;
  const m = new Int32Array(await gpu.read(meta, entries * 8));
  const f16 = s.dtype === "f16";
  const row = f16 ? new Uint16Array(s.headDim).fill(0x7e00) : new Float32Array(s.headDim).fill(NaN);
  for (let e = 0; e < entries; e++) {
    const pos = m[2 * e], mark = m[2 * e + 1];
    if (pos <= t0 && mark !== 2 && (mark === 0 || t0 - pos <= window)) continue;
    if (pools.k) gpu.write(k, row, e * row.byteLength);
    if (pools.v) gpu.write(v, row, e * row.byteLength);
  }
}

/** Makes slot `slot` of every page of layer 0 that holds it invisible (mark 2, position kept). */
export async function hideSlot(s: PagedKvStorage, slot: number): Promise<void> {
  const { meta } = s.pool(0);
  const lens = await s.readLengths();
  for (let p = 0; p < s.pages; p++) {
    if (slot >= lens[p]) continue;
    const e = s.physical(0, p, slot);
    const pos = new Int32Array(await gpu.read(meta, 4, e * 8))[0];
    gpu.write(meta, new Int32Array([pos, 2]), e * 8);
  }
}
