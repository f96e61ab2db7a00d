/**
 * The flash prefill kernel (src/cache/paged_prefill.ts): on the same pages and chunk it agrees
 * with the readable tiled `partial` path and with its f64 CPU twin computed from the pages' own
 * (position, mark) entries, with the stored rows no query may see (one hidden slot a page, DMS
 * entries past the window) overwritten with NaN; and whole sequences fed through dense and DMS
 * caches in prefill chunks reproduce the dense SPEC §5.1 oracle (padding included).
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { pagedAttention } from "../../src/cache/paged_attention.ts";
import {
  FLASH_MIN_QUERIES,
  flashPrefillShape,
  type PageContents,
  pagedPrefillReference,
  widePrefillShape,
} from "../../src/cache/paged_prefill.ts";
import { createDmsCache } from "../../src/dms/dms_cache.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, randomArray, TOL } from "../_util.ts";
import {
  chunking,
  expected,
  feed,
  hideSlot,
  makeProblem,
  poisonInvisible,
  sliceT,
} from "./harness.ts";

/** Flash vs tiled on the same pages: only the summation order differs. */
const AGREE = {
  f32: { atol: 2e-6, rtol: 1e-5 },
  f16: { atol: 1e-3, rtol: 4e-3 },
};

interface Case {
  dtype: "f32" | "f16";
  G: number;
  D: number;
  dms: boolean;
}

const CASES: Case[] = [
  { dtype: "f32", G: 1, D: 8, dms: true },
  { dtype: "f32", G: 3, D: 24, dms: true },
  { dtype: "f32", G: 4, D: 40, dms: false },
  { dtype: "f32", G: 8, D: 16, dms: true },
  { dtype: "f32", G: 2, D: 136, dms: true },
  { dtype: "f16", G: 4, D: 32, dms: true },
  { dtype: "f16", G: 2, D: 128, dms: false },
  { dtype: "f16", G: 5, D: 8, dms: true },
];

/**
 * Fills a cache with `pre` tokens, then attends one chunk of `n` queries with random chunk marks
 * (0 keep, 1 marked, 2 padding) through both kernels, and checks them against each other and the
 * CPU twin over the snapshot of the pages.
 */
async function check(c: Case, pre: number, n: number, B: number, seed: number, pEvict: number) {
  const Hkv = 2, W = 7, T = pre + n, f16 = c.dtype === "f16";
  const pr = makeProblem({ B, Hkv, G: c.G, D: c.D, T, seed, pEvict, f16 });
  const sizes = {
    layers: 1,
    batch: B,
    kvHeads: Hkv,
    headDim: c.D,
    blockSize: 8,
    dtype: c.dtype,
    preallocateTokens: 16,
  };
  using cache = c.dms ? createDmsCache(gpu, { ...sizes, window: W }) : createDenseCache(gpu, sizes);
  if (pre > 0) await feed(cache, [pr], chunking(pre, [5, 11]));
  const s = cache.storage, window = cache.policy.window, Hq = Hkv * c.G, D = c.D;
  // Stored rows no query of the chunk may see hold NaN: one slot of every page made invisible,
  // and whatever DMS left marked past the window of the chunk's first query.
  if (pre > 0) await hideSlot(s, seed % pre);
  await poisonInvisible(s, pre, window);
  const qa = sliceT(pr.q, B * Hq, T, D, pre, n);
  const ka = sliceT(pr.k, B * Hkv, T, D, pre, n), va = sliceT(pr.v, B * Hkv, T, D, pre, n);
  const u = randomArray(B * Hkv * n, seed + 5, 0, 1);
  const cm = Int32Array.from(u, (x) => (x < 0.1 ? 2 : x < 0.1 + pEvict * 0.9 ? 1 : 0));
  using q = Tensor.fromArray(gpu, qa, [B, Hq, n, D], c.dtype);
  using k = Tensor.fromArray(gpu, ka, [B, Hkv, n, D], c.dtype);
  using v = Tensor.fromArray(gpu, va, [B, Hkv, n, D], c.dtype);
  const marks = gpu.alloc(cm.byteLength, "test chunk marks");
  gpu.write(marks, cm);
  const args = { t0: pre, window, scale: 1 / Math.sqrt(D), chunk: { k, v, marks } };
  using tiled = pagedAttention(s, 0, q, { ...args, prefillKernel: "tiled" });
  const b = await tiled.toArray();
  const label = JSON.stringify({ ...c, pre, n, B, seed, pEvict });
  const outs: [string, ArrayLike<number>][] = [];
  const variants = widePrefillShape(c.dtype, c.G, D, gpu.limits.maxComputeWorkgroupStorageSize)
    ? ["flash", "wide"] as const
    : ["flash"] as const;
  for (const kernel of variants) {
    using out = pagedAttention(s, 0, q, { ...args, prefillKernel: kernel });
    const a = await out.toArray();
    assertClose(a, b, AGREE[c.dtype], `${kernel} vs tiled ${label}`);
    outs.push([kernel, a]);
  }
  gpu.release(marks);
  // The CPU twin over the pages as stored: K/V rows of each entry taken from the problem by
  // position (the cache stores exactly those rows, rounded to the storage dtype).
  const round = (x: ArrayLike<number>) => (f16 ? roundToF16(Float32Array.from(x)) : x);
  const kk = round(pr.k), vv = round(pr.v);
  const pages: PageContents[] = (await s.snapshot(0)).map((e, p) => {
    const rows = (x: ArrayLike<number>) =>
      e.positions.flatMap((pos) => Array.from({ length: D }, (_, d) => x[(p * T + pos) * D + d]));
    return { positions: e.positions, marks: e.marks, k: rows(kk), v: rows(vv) };
  });
  const want = pagedPrefillReference(pages, round(qa), round(ka), round(va), cm, {
    Hkv,
    G: c.G,
    n,
    D,
    t0: pre,
    window,
    scale: 1 / Math.sqrt(D),
  });
  for (const [kernel, a] of outs) {
    assertClose(a, want, TOL[c.dtype], `${kernel} vs CPU twin ${label}`);
  }
}

Deno.test({
  name:
    "The flash and wide prefill kernels agree with the tiled kernel and the CPU twin on the same pages (f32/f16, G 1..8, D 8..136, dense and DMS)",
  ...GPU_TEST,
  fn: async () => {
    const cases = CASES.filter((c) => FLOAT_DTYPES.includes(c.dtype));
    for (const c of cases) {
      assert.ok(
        flashPrefillShape(c.G, c.D, gpu.limits.maxComputeWorkgroupStorageSize),
        `the flash kernel must take ${JSON.stringify(c)} on this device`,
      );
      if (c.D <= 128) {
        assert.ok(
          widePrefillShape(c.dtype, c.G, c.D, gpu.limits.maxComputeWorkgroupStorageSize),
          `the wide kernel must take ${JSON.stringify(c)} on this device`,
        );
      }
    }
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...cases),
        fc.integer({ min: 0, max: 70 }),
        fc.integer({ min: FLASH_MIN_QUERIES, max: 70 }),
        fc.integer({ min: 1, max: 2 }),
        fc.integer({ min: 0, max: 1 << 30 }),
        fc.constantFrom(0, 0.5, 1),
        async (c, pre, n, B, seed, pEvict) => await check(c, pre, n, B, seed, pEvict),
      ),
      fcParams(14),
    );
  },
});

Deno.test({
  name:
    "Prefill through dense and DMS caches in flash-sized chunks reproduces the dense §5.1 oracle, padding included",
  ...GPU_TEST,
  fn: async () => {
    for (const dtype of FLOAT_DTYPES) {
      for (const dms of [false, true]) {
        const B = 2, Hkv = 2, G = 2, D = 32, T = 90, W = 9;
        const pr = makeProblem({
          B,
          Hkv,
          G,
          D,
          T,
          seed: dms ? 11 : 12,
          pEvict: 0.6,
          pads: [0, 13],
          f16: dtype === "f16",
        });
        const sizes = {
          layers: 1,
          batch: B,
          kvHeads: Hkv,
          headDim: D,
          blockSize: 8,
          dtype,
          preallocateTokens: 16,
        };
        using cache = dms
          ? createDmsCache(gpu, { ...sizes, window: W })
          : createDenseCache(gpu, sizes);
        const [got] = await feed(cache, [pr], chunking(T, [33, 8, 49]));
        // The dense policy ignores decisions: its oracle marks nothing.
        const seen = dms ? pr : { ...pr, d: new Int32Array(pr.d.length) };
        const want = expected(seen, cache.policy.window);
        assertClose(got, want, TOL[dtype], `${dtype} ${dms ? "dms" : "dense"} vs oracle`);
      }
    }
  },
});
