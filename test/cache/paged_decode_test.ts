/**
 * Flash-decoding through the paged cache (src/cache/paged_decode.ts): the GPU kernel against
 * an f64 oracle computed from the pages' own (position, mark) entries under SPEC §5.1 and
 * against its CPU twin, over random shapes (G 1..8, D 64/128, B 1..3, f32/f16), DMS marks,
 * ragged per-page lengths, padding, block boundaries and one or many splits; the twin against
 * the dense reference of ./paged_attention.ts; and the routing of pagedAttention. The plan's
 * knobs and split rules: ./paged_decode_plan_test.ts.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeKernelFor, pagedAttentionReference } from "../../src/cache/paged_attention.ts";
import { pagedDecodeFlash } from "../../src/cache/paged_decode.ts";
import {
  flashDecodeDefaults,
  flashDecodePlan,
  type FlashDecodeTuning,
} from "../../src/cache/paged_decode_plan.ts";
import { type DecodePage, flashDecodeReference } from "../../src/cache/paged_decode_reference.ts";
import { createDmsCache } from "../../src/dms/dms_cache.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray, TOL } from "../_util.ts";
import { chunking, feed, hideSlot, makeProblem, marksOf, poisonInvisible } from "./harness.ts";

interface Case {
  dtype: "f32" | "f16";
  G: number;
  D: number;
  B: number;
  T: number;
  dms: boolean;
  pEvict: number;
  blockSize: number;
  /** Keys per split (storage partitionKeys); undefined: adaptive. */
  split?: number;
  /** Left padding of sequence 0 (its keys are not stored). */
  pad: number;
  /** A slot of every page whose entry is made invisible (mark 2) before decoding. */
  hide?: number;
  seed: number;
  /** Threads per workgroup and loads per lane (dropped where the shape does not take them). */
  tuning?: FlashDecodeTuning;
}

/** Fills a cache with a problem in chunks, then decodes one query with the flash kernel. */
async function check(
  c: Case,
  opts: { skipFlash?: boolean; skipEarly?: boolean } = {},
): Promise<void> {
  const Hkv = 2, W = Math.max(6, c.blockSize - 1);
  const f16 = c.dtype === "f16";
  const pr = makeProblem({ ...c, Hkv, pads: [c.pad, 0], f16 });
  const sizes = {
    layers: 1,
    batch: c.B,
    kvHeads: Hkv,
    headDim: c.D,
    blockSize: c.blockSize,
    dtype: c.dtype,
    partitionKeys: c.split,
    preallocateTokens: 8,
  };
  using cache = c.dms ? createDmsCache(gpu, { ...sizes, window: W }) : createDenseCache(gpu, sizes);
  await feed(cache, [pr], chunking(c.T, [Math.ceil(c.T / 2), 7, 1, 3]));
  const s = cache.storage;
  const qa = randomArray(c.B * Hkv * c.G * c.D, c.seed + 9, -2, 2);
  using q = Tensor.fromArray(gpu, qa, [c.B, Hkv * c.G, 1, c.D], c.dtype);
  const args = { t0: c.T, window: cache.policy.window, scale: 1 / Math.sqrt(c.D) };
  const label = JSON.stringify(c);
  assert.equal(decodeKernelFor(s, c.G, c.D, {}), "flash", label);
  // Tunings that do not fit this shape or device: fewer knobs.
  let tuning = c.tuning ?? {};
  // A head split that does not divide G is a RangeError (checked in paged_decode_plan_test.ts).
  if (tuning.headSplit && c.G % tuning.headSplit !== 0) tuning = { ...tuning, headSplit: 1 };
  for (const t of [{ threads: tuning.threads, headSplit: tuning.headSplit }, {}]) {
    if (!flashDecodePlan(s, 0, c.G, tuning)) tuning = t;
  }
  if (opts.skipFlash) return;
  if (c.hide !== undefined) await hideSlot(s, c.hide);
  await poisonInvisible(s, args.t0, args.window);
  using fast = pagedDecodeFlash(s, 0, q, { ...args, tuning });
  if (!fast) throw new Error(`no flash kernel for ${label}`);
  const got = await fast.toArray();
  // The early first-block loads (EARLY) skip nothing the default path reads and mask what it
  // zeroes: the same arithmetic in the same order, so the same bits.
  if (!opts.skipEarly) {
    using early = pagedDecodeFlash(s, 0, q, {
      ...args,
      tuning: { ...tuning, earlyLoads: !tuning.earlyLoads },
    })!;
    assert.deepEqual(await early.toArray(), got, `earlyLoads flipped changed the bits ${label}`);
  }
  // The pages as stored: entries by slot, K/V by position from the problem.
  const round = (x: Float32Array) => (f16 ? roundToF16(x) : x);
  const [k, v, qq] = [round(pr.k), round(pr.v), round(qa)];
  const { T, D } = c;
  const pages: DecodePage[] = (await s.snapshot(0)).map((e, p) => ({
    positions: e.positions,
    marks: e.marks,
    k: e.positions.flatMap((pos) => [...k.subarray((p * T + pos) * D, (p * T + pos + 1) * D)]),
    v: e.positions.flatMap((pos) => [...v.subarray((p * T + pos) * D, (p * T + pos + 1) * D)]),
  }));
  // Oracle: one split over every entry = plain softmax over the visible ones.
  const oracle = flashDecodeReference(qq, pages, { ...args, G: c.G, D, np: 1, ps: 1 << 30 });
  assertClose(got, oracle, TOL[c.dtype], `flash vs f64 oracle ${label}`);
  // The twin with the kernel's own splits: with a head split, SH pages of G / SH heads a page
  // (the same rows of q and out), each over the page's entries.
  const { shape, np, ps } = flashDecodePlan(s, 0, c.G, tuning)!;
  const SH = shape.SH ?? 1;
  assert.equal(shape.GQ * SH, c.G, label);
  const twin = flashDecodeReference(qq, pages.flatMap((p) => Array<DecodePage>(SH).fill(p)), {
    ...args,
    G: shape.GQ,
    D,
    np,
    ps,
    kmin: shape.KMIN,
  });
  assertClose(got, twin, TOL[c.dtype], `flash vs CPU twin ${label}`);
}

const caseArb = fc.record({
  dtype: fc.constantFrom(...(gpu.hasF16 ? ["f32", "f16"] as const : ["f32"] as const)),
  G: fc.integer({ min: 1, max: 8 }),
  D: fc.constantFrom(64, 128),
  B: fc.integer({ min: 1, max: 3 }),
  T: fc.integer({ min: 1, max: 400 }),
  dms: fc.boolean(),
  pEvict: fc.constantFrom(0, 0.5, 0.9, 1),
  blockSize: fc.constantFrom(5, 16, 64),
  split: fc.constantFrom(undefined, 32, 64, 200),
  pad: fc.constantFrom(0, 0, 3, 20),
  hide: fc.constantFrom(undefined, undefined, 0, 31, 63, 200),
  seed: fc.integer({ min: 0, max: 1 << 30 }),
  tuning: fc.record({
    threads: fc.constantFrom(64, 128, 256, 512),
    loads: fc.constantFrom(undefined, 1, 2, 4, 8),
    minKeys: fc.constantFrom(undefined, 32, 100),
    combine: fc.constantFrom<"fused" | "dispatch" | undefined>(undefined, "fused"),
    earlyLoads: fc.constantFrom(undefined, true),
    keysPerThread: fc.constantFrom(undefined, 1, 4, 8),
    workgroups: fc.constantFrom(undefined, 1, 8),
    wave: fc.constantFrom(undefined, undefined, 3, 5),
    headSplit: fc.constantFrom(undefined, undefined, 2, 4),
  }).map(({ keysPerThread, ...t }) => ({
    ...t,
    maxKeys: keysPerThread && keysPerThread * t.threads,
  })),
});

Deno.test({
  name:
    "pagedDecodeFlash agrees with the f64 oracle and its CPU twin (G 1..8, D 64/128, DMS marks, ragged pages, padding, B 1..3, one and many splits)",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(fc.asyncProperty(caseArb, (c) => check(c)), fcParams(16));
  },
});

Deno.test({
  name: "pagedDecodeFlash handles the corners: one key, an empty split run, a long page (f32, f16)",
  ...GPU_TEST,
  fn: async () => {
    const base = { G: 4, D: 128, B: 1, dms: false, pEvict: 0, blockSize: 16, pad: 0, seed: 5 };
    const dtypes = gpu.hasF16 ? ["f32", "f16"] as const : ["f32"] as const;
    for (const dtype of dtypes) {
      await check({ ...base, dtype, T: 1 });
      await check({ ...base, dtype, T: 1300 }); // several adaptive splits
      await check({ ...base, dtype, T: 300, dms: true, pEvict: 1, G: 8 }); // all marked
      await check({ ...base, dtype, T: 40, pad: 40, B: 2 }); // sequence 0 is all padding
      // More output sums (2·D/4 + G) than threads: D 256 at 128 threads, D 512 (f16) at 256.
      await check({ ...base, dtype, T: 300, D: 256, G: 8, dms: true, pEvict: 0.5 });
      if (dtype === "f16") await check({ ...base, dtype, T: 300, D: 512, G: 8 });
      for (const threads of [64, 128, 512]) {
        const tuning = { threads, loads: 8 };
        await check({ ...base, dtype, T: 1300, dms: true, pEvict: 0.5, tuning });
      }
      // Splits of up to 8 keys a thread (1024 at 128 threads): 1300 keys in two splits.
      const long = { threads: 128, maxKeys: 1024, workgroups: 1 };
      await check({ ...base, dtype, T: 1300, dms: true, pEvict: 0.5, tuning: long });
      await check({ ...base, dtype, T: 1300, G: 8, tuning: { ...long, maxKeys: 512 } });
      // A filled last wave: B 2, two splits of up to 1024 keys a page, waves of 3 or 5
      // workgroups: the pages take more, shorter splits (ragged ends), as flashDecodeSplits plans.
      for (const wave of [3, 5]) {
        await check({
          ...base,
          dtype,
          T: 1300,
          B: 2,
          dms: true,
          pEvict: 0.5,
          tuning: { ...long, wave },
        });
      }
      // The fused merge: many splits, empty ones (padding), more outputs than threads.
      const fused = { combine: "fused" as const };
      await check({ ...base, dtype, T: 1300, tuning: fused });
      await check({ ...base, dtype, T: 600, pad: 300, B: 2, split: 64, tuning: fused });
      await check({ ...base, dtype, T: 300, D: 256, G: 8, dms: true, pEvict: 0.5, tuning: fused });
      // EARLY reads the first block's rows past a short split as the split's last key (clamped):
      // splits of 32 keys in blocks of 64 (D 64, 256 threads), each split's last key made
      // invisible (and poisoned), so those rows must be masked too.
      const early = { threads: 256, earlyLoads: true };
      for (const hide of [31, 63, 99]) {
        await check({ ...base, dtype, T: 100, D: 64, split: 32, hide, tuning: early });
      }
      // Head splits: G 4 as two workgroups of 2 heads and four of 1, G 8 as two of 4 (many
      // splits, DMS marks, the fused merge, padding).
      for (const headSplit of [2, 4]) {
        await check({ ...base, dtype, T: 1300, dms: true, pEvict: 0.5, tuning: { headSplit } });
        await check({ ...base, dtype, T: 600, pad: 300, B: 2, tuning: { ...fused, headSplit } });
      }
      await check({
        ...base,
        dtype,
        T: 300,
        G: 8,
        dms: true,
        pEvict: 0.5,
        tuning: { headSplit: 2 },
      });
      // One split a page (DIRECT: 40 keys, under KMIN), GQ 3 (G 6 as 2 × 3), one head a group at
      // G 8 (SH 8).
      for (const headSplit of [2, 4]) await check({ ...base, dtype, T: 40, tuning: { headSplit } });
      const g6 = { G: 6, dms: true, pEvict: 0.5, tuning: { headSplit: 2 } };
      await check({ ...base, dtype, T: 700, ...g6 });
      await check({ ...base, dtype, T: 300, G: 8, tuning: { headSplit: 8 } });
      // G 3, 5, 7: WG / G lanes a head in the merge's (m, l) tree, not a power of two.
      for (const G of [3, 5, 7]) {
        await check({ ...base, dtype, T: 1300, G, dms: true, pEvict: 0.5, tuning: fused });
      }
    }
  },
});

Deno.test({
  name:
    "pagedDecodeFlash: one split a page takes one dispatch (decode_online stores the output), " +
    "more splits two (then combine)",
  ...GPU_TEST,
  fn: async () => {
    const base = { G: 2, D: 64, B: 1, dms: true, pEvict: 0.5, blockSize: 16, pad: 0, seed: 3 };
    const dispatch = gpu.dispatch;
    // At G 2 KMIN = 64 keys a split at least (flashDecodeMinKeys), so pages of at most 64 keys
    // (T 60) take one split, T 100 two, unless a tuning or default asks for more; at G 4 KMIN =
    // 128: a dense page of 100 keys one split, of 200 two.
    type Run = {
      T: number;
      want: number;
      tuning?: FlashDecodeTuning;
      defaults?: typeof flashDecodeDefaults;
      G?: number;
      dms?: boolean;
    };
    const runs: Run[] = [
      { T: 60, want: 1 },
      { T: 100, want: 2 },
      { T: 100, want: 2, dms: false },
      { T: 100, want: 1, dms: false, G: 4 },
      { T: 200, want: 2, dms: false, G: 4 },
      { T: 100, want: 1, tuning: { minKeys: 128 } },
      { T: 100, want: 1, defaults: { minKeys: 128 } },
      { T: 100, want: 2, tuning: { minKeys: 64 }, defaults: { minKeys: 128 } },
      { T: 1300, want: 2 },
      { T: 1300, want: 2, defaults: { threads: 256 } },
      { T: 1300, want: 1, tuning: { combine: "fused" } },
      { T: 60, want: 1, tuning: { combine: "dispatch" } },
      { T: 250, want: 1, tuning: { minKeys: 512 } },
    ];
    const reset = () => {
      for (const k of Object.keys(flashDecodeDefaults)) {
        delete flashDecodeDefaults[k as keyof typeof flashDecodeDefaults];
      }
    };
    try {
      for (const { T, want, tuning = {}, defaults = {}, G = base.G, dms = base.dms } of runs) {
        reset();
        Object.assign(flashDecodeDefaults, defaults);
        let n = 0;
        gpu.dispatch = function (...args: Parameters<typeof dispatch>) {
          n++;
          return dispatch.apply(this, args);
        };
        try {
          // check() also fills the cache: pagedDecodeFlash's dispatches are the difference
          // from the same check without it (below).
          await check({ ...base, G, dms, dtype: "f32", T, tuning }, { skipEarly: true });
        } finally {
          gpu.dispatch = dispatch;
        }
        const withFlash = n;
        n = 0;
        gpu.dispatch = function (...args: Parameters<typeof dispatch>) {
          n++;
          return dispatch.apply(this, args);
        };
        try {
          await check({ ...base, G, dms, dtype: "f32", T, tuning }, { skipFlash: true });
        } finally {
          gpu.dispatch = dispatch;
        }
        reset();
        assert.equal(
          withFlash - n,
          want,
          `G ${G} T ${T} dms ${dms} ${JSON.stringify([tuning, defaults])}`,
        );
      }
    } finally {
      reset();
    }
  },
});

Deno.test("flashDecodeReference equals the dense §5.1 reference for any split", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 0, max: 8 }),
      fc.integer({ min: 0, max: 1 << 30 }),
      (T, G, np, W, seed) => {
        const D = 4, Hkv = 2;
        const pr = makeProblem({ B: 1, Hkv, G, D, T, seed, pEvict: 0.5 });
        const marks = marksOf(pr);
        const want = pagedAttentionReference(pr.q, pr.k, pr.v, { B: 1, Hq: Hkv * G, Hkv, T, D }, {
          window: W,
          marks,
        });
        // The last query over all T keys of each page, as pages of the twin.
        const q: number[] = [], exp: number[] = [];
        const pages: DecodePage[] = [];
        for (let p = 0; p < Hkv; p++) {
          for (let g = 0; g < G; g++) {
            const row = ((p * G + g) * T + T - 1) * D;
            q.push(...pr.q.subarray(row, row + D));
            exp.push(...want.subarray(row, row + D));
          }
          pages.push({
            positions: Array.from({ length: T }, (_, i) => i),
            marks: marks.subarray(p * T, (p + 1) * T),
            k: pr.k.subarray(p * T * D, (p + 1) * T * D),
            v: pr.v.subarray(p * T * D, (p + 1) * T * D),
          });
        }
        const got = flashDecodeReference(q, pages, {
          G,
          D,
          t0: T - 1,
          window: W,
          scale: 1 / Math.sqrt(D),
          np,
          ps: 0,
          kmin: 1,
        });
        assertClose(got, exp, { atol: 1e-9, rtol: 1e-9 }, JSON.stringify({ T, G, np, W, seed }));
      },
    ),
    fcParams(50),
  );
});

Deno.test({
  name: "pagedAttention routes plain decode to the flash kernel and policy extras to the old one",
  ...GPU_TEST,
  fn: () => {
    using cache = createDenseCache(gpu, {
      layers: 1,
      batch: 1,
      kvHeads: 2,
      headDim: 64,
      blockSize: 16,
    });
    const s = cache.storage;
    const probs = { buffer: s.dummy, offset: 0, stride: 4, accumulate: false };
    const chunks = { select: s.dummy, size: 16, stride: 1 };
    assert.equal(decodeKernelFor(s, 4, 64, {}), "flash");
    assert.equal(decodeKernelFor(s, 4, 64, { probs }), "split");
    assert.equal(decodeKernelFor(s, 4, 64, { chunks }), "split");
    assert.equal(decodeKernelFor(s, 4, 64, { decodeKernel: "split" }), "split");
    assert.equal(decodeKernelFor(s, 4, 64, { decodeKernel: "tiled" }), "tiled");
    assert.equal(decodeKernelFor(s, 4, 60, {}), "tiled"); // rows not whole 16-byte words
  },
});
