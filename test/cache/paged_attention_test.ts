/**
 * The decode kernels of paged attention (src/cache/paged_attention.ts): the fast split-K
 * `decode` kernel against the readable `partial` kernel on the same pages, and both against an
 * f64 oracle computed from the pages' own (position, mark) entries under SPEC §5.1, with the
 * stored rows the query may not see overwritten with NaN.
 */

import fc from "fast-check";
import { pagedAttention } from "../../src/cache/paged_attention.ts";
import type { PagedKvStorage } from "../../src/cache/paged_storage.ts";
import { createDmsCache } from "../../src/dms/dms_cache.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray, TOL } from "../_util.ts";
import { feed, hideSlot, makeProblem, poisonInvisible, type Problem } from "./harness.ts";

/** Split vs tiled on the same pages: only the summation order differs. */
const AGREE = {
  f32: { atol: 2e-6, rtol: 1e-5 },
  f16: { atol: 1e-3, rtol: 4e-3 },
};

/**
 * Decode attention of `q` (position t0) over what the storage holds, in f64: for each page its
 * live entries (from a snapshot), visible iff pos <= t0 and (mark = 0 or t0 - pos <= window),
 * K/V taken from the problem by position. `[B, Hq, 1, D]`.
 */
async function oracle(
  s: PagedKvStorage,
  pr: Problem,
  q: Float32Array,
  t0: number,
  window: number,
  f16: boolean,
): Promise<Float64Array> {
  const { B, Hkv, G, D, T } = pr;
  const round = (x: Float32Array) => (f16 ? roundToF16(x) : x);
  const k = round(pr.k), v = round(pr.v), qq = round(q);
  const pages = await s.snapshot(0);
  const out = new Float64Array(B * Hkv * G * D);
  const scale = 1 / Math.sqrt(D);
  for (let p = 0; p < B * Hkv; p++) {
    const { positions, marks } = pages[p];
    const vis = positions
      .map((pos, i) => ({ pos, mark: marks[i] }))
      .filter((e) => e.pos <= t0 && e.mark !== 2 && (e.mark === 0 || t0 - e.pos <= window));
    for (let g = 0; g < G; g++) {
      const row = (p * G + g) * D;
      const sc = vis.map((e) => {
        let d = 0;
        for (let c = 0; c < D; c++) d += qq[row + c] * k[(p * T + e.pos) * D + c];
        return d * scale;
      });
      const m = Math.max(...sc);
      const w = sc.map((x) => Math.exp(x - m));
      const l = w.reduce((a, b) => a + b, 0);
      vis.forEach((e, i) => {
        for (let c = 0; c < D; c++) out[row + c] += (w[i] / l) * v[(p * T + e.pos) * D + c];
      });
    }
  }
  return out;
}

interface Case {
  dtype: "f32" | "f16";
  G: number;
  D: number;
  /** Keys per partition; undefined: chosen from the length bound. */
  split?: number;
  dms: boolean;
}

/** Fills a cache with the first T tokens of a problem, then decodes one query both ways. */
async function check(c: Case, T: number, B: number, seed: number, pEvict: number) {
  const Hkv = 2, W = 6;
  const pr = makeProblem({ B, Hkv, G: c.G, D: c.D, T, seed, pEvict, f16: c.dtype === "f16" });
  const sizes = {
    layers: 1,
    batch: B,
    kvHeads: Hkv,
    headDim: c.D,
    blockSize: 5,
    dtype: c.dtype,
    partitionKeys: c.split,
    preallocateTokens: 10,
  };
  using cache = c.dms ? createDmsCache(gpu, { ...sizes, window: W }) : createDenseCache(gpu, sizes);
  const first = Math.ceil(T / 2);
  await feed(cache, [pr], [first, ...Array(T - first).fill(1)]);
  const qa = randomArray(B * Hkv * c.G * c.D, seed + 9, -2, 2);
  using q = Tensor.fromArray(gpu, qa, [B, Hkv * c.G, 1, c.D], c.dtype);
  const window = cache.policy.window;
  const args = { t0: T, window, scale: 1 / Math.sqrt(c.D) };
  // Stored rows the query may not see hold NaN (one hidden slot a page, DMS entries past the
  // window): neither kernel may let them into a sum.
  await hideSlot(cache.storage, seed % T);
  await poisonInvisible(cache.storage, T, window);
  using fast = pagedAttention(cache.storage, 0, q, { ...args, decodeKernel: "split" });
  using slow = pagedAttention(cache.storage, 0, q, { ...args, decodeKernel: "tiled" });
  const [a, b] = [await fast.toArray(), await slow.toArray()];
  const label = JSON.stringify({ ...c, T, B, seed, pEvict });
  assertClose(a, b, AGREE[c.dtype], `split vs tiled ${label}`);
  const want = await oracle(cache.storage, pr, qa, T, window, c.dtype === "f16");
  assertClose(a, want, TOL[c.dtype], `split vs oracle ${label}`);
}

const CASES: Case[] = [
  { dtype: "f32", G: 1, D: 4, dms: true },
  { dtype: "f32", G: 3, D: 32, split: 32, dms: true },
  { dtype: "f32", G: 8, D: 32, split: 64, dms: true },
  { dtype: "f32", G: 4, D: 128, dms: false },
  { dtype: "f32", G: 2, D: 24, split: 512, dms: true },
  { dtype: "f16", G: 4, D: 128, dms: true },
  { dtype: "f16", G: 8, D: 16, split: 32, dms: false },
  { dtype: "f16", G: 1, D: 8, dms: true },
];

Deno.test({
  name:
    "The split decode kernel agrees with the tiled kernel and the f64 oracle on the same pages (f32/f16, G 1..8, one and many splits)",
  ...GPU_TEST,
  fn: async () => {
    const cases = CASES.filter((c) => c.dtype === "f32" || gpu.hasF16);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...cases),
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 1, max: 2 }),
        fc.integer({ min: 0, max: 1 << 30 }),
        fc.constantFrom(0, 0.5, 0.9, 1),
        async (c, T, B, seed, pEvict) => await check(c, T, B, seed, pEvict),
      ),
      fcParams(16),
    );
  },
});
