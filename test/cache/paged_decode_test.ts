/**
 * Flash-decoding through the paged cache (src/cache/paged_decode.ts): the GPU kernel against
 * an f64 oracle computed from the pages' own (position, mark) entries under SPEC §5.1 and
 * against its CPU twin, over random shapes (G 1..8, D 64/128, B 1..3, f32/f16), DMS marks,
 * ragged per-page lengths, padding, block boundaries and one or many splits; the twin against
 * the dense reference of ./paged_attention.ts; and the routing of pagedAttention.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeKernelFor, pagedAttentionReference } from "../../src/cache/paged_attention.ts";
import { pagedDecodeFlash } from "../../src/cache/paged_decode.ts";
import {
  flashDecodeDefaults,
  flashDecodePlan,
  flashDecodeShape,
  flashDecodeSplitDefaults,
  flashDecodeSplits,
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
  for (const t of [{ threads: tuning.threads }, {}]) {
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
  // The twin with the kernel's own splits.
  const { shape, np, ps } = flashDecodePlan(s, 0, c.G, tuning)!;
  const twin = flashDecodeReference(qq, pages, { ...args, G: c.G, D, np, ps, kmin: shape.KMIN });
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

Deno.test("flashDecodeShape names a bad tuning: threads, minKeys, maxKeys, workgroups, wave, combine, earlyLoads", () => {
  assert.throws(
    () => flashDecodeShape("f16", 4, 128, 1 << 15, { earlyLoads: 1 as unknown as boolean }),
    /earlyLoads must be true or false, got 1/,
  );
  assert.equal(flashDecodeShape("f16", 4, 128, 1 << 15, { earlyLoads: true })!.EARLY, 1);
  assert.equal(flashDecodeShape("f16", 4, 128, 1 << 15)!.EARLY, 0);
  assert.throws(
    () =>
      flashDecodeShape("f16", 4, 128, 1 << 15, {
        combine: "later" as unknown as "fused",
      }),
    /combine must be "fused" or "dispatch", got later/,
  );
  assert.throws(
    () => flashDecodeShape("f16", 4, 128, 1 << 15, { threads: 96 }),
    /threads/,
  );
  for (const minKeys of [0, -4, 2.5]) {
    assert.throws(
      () => flashDecodeShape("f16", 4, 128, 1 << 15, { minKeys }),
      /minKeys must be an integer >= 1/,
    );
  }
  assert.equal(flashDecodeShape("f16", 4, 128, 1 << 15, { minKeys: 64 })?.KMIN, 64);
  // The default split minimum by G (flashDecodeMinKeys): 64 at G <= 2, 128 above.
  assert.equal(flashDecodeShape("f16", 2, 128, 1 << 15, {})?.KMIN, 64);
  assert.equal(flashDecodeShape("f16", 1, 128, 1 << 15, {})?.KMIN, 64);
  assert.equal(flashDecodeShape("f16", 3, 128, 1 << 15, {})?.KMIN, 128);
  assert.equal(flashDecodeShape("f16", 4, 128, 1 << 15, {})?.KMIN, 128);
  for (const maxKeys of [96, 384, 2048]) {
    assert.throws(
      () => flashDecodeShape("f16", 4, 128, 1 << 15, { threads: 128, maxKeys }),
      /maxKeys must be 1, 2, 4 or 8 times threads \(128\)/,
    );
  }
  assert.equal(
    flashDecodeShape("f16", 4, 128, 1 << 15, { threads: 128, maxKeys: 1024 })?.PSMAX,
    1024,
  );
  for (const wave of [0, 2.5]) {
    assert.throws(
      () => flashDecodeShape("f16", 4, 128, 1 << 15, { wave }),
      new RegExp(`: wave must be an integer >= 1, got ${wave}`),
    );
  }
  for (const workgroups of [0, 1.5]) {
    assert.throws(
      () => flashDecodeShape("f16", 4, 128, 1 << 15, { workgroups }),
      /: workgroups must be an integer >= 1/,
    );
  }
  // The defaults a benchmark sets are checked too, and a power-of-two maxKeys is fitted to the
  // threads (8 keys a thread at most).
  try {
    flashDecodeDefaults.workgroups = 0;
    assert.throws(
      () => flashDecodeShape("f16", 4, 128, 1 << 15, {}),
      /flashDecodeDefaults\.workgroups must be an integer >= 1, got 0/,
    );
    flashDecodeDefaults.workgroups = undefined;
    flashDecodeDefaults.maxKeys = 300;
    assert.throws(
      () => flashDecodeShape("f16", 4, 128, 1 << 15, {}),
      /flashDecodeDefaults\.maxKeys must be a power of two, got 300/,
    );
    flashDecodeDefaults.maxKeys = 4096;
    assert.equal(flashDecodeShape("f16", 4, 128, 1 << 15, { threads: 128 })?.PSMAX, 1024);
  } finally {
    flashDecodeDefaults.workgroups = undefined;
    flashDecodeDefaults.maxKeys = undefined;
  }
});

Deno.test({
  name: "flashDecodePlan takes the measured split plan by dtype and G where no split knob is set",
  ...GPU_TEST,
  fn: () => {
    // The H200 sweeps' rule (flashDecodeSplitDefaults): f16 at 128 threads, G 4: splits of up to
    // 1024 keys and 384 workgroups; G 2: 512 keys, 512 workgroups; elsewhere 2·threads keys (at
    // most 512) and 512 workgroups.
    assert.deepEqual(flashDecodeSplitDefaults("f16", 4, 128), {
      maxKeys: 1024,
      workgroups: 384,
      wave: 396,
    });
    // The default plan at G 4 fills its last wave (session 17): 32 pages (B 4) of 32K keys take
    // 37 splits a page (1184 workgroups, 3 waves of 396) instead of 32 (1024, 2.6 waves).
    const g4 = flashDecodeShape("f16", 4, 128, 1 << 15)!;
    const { workgroups: w4, wave: v4 } = flashDecodeSplitDefaults("f16", 4, 128);
    assert.deepEqual(flashDecodeSplits(32768, 32, g4, undefined, w4), { np: 32, ps: 0 });
    assert.deepEqual(flashDecodeSplits(32768, 32, g4, undefined, w4, v4), { np: 37, ps: 0 });
    assert.deepEqual(flashDecodeSplitDefaults("f16", 2, 128), { maxKeys: 512, workgroups: 512 });
    for (
      const [dtype, G, threads] of [["f16", 1, 128], ["f16", 8, 128], ["f32", 4, 128]] as const
    ) {
      assert.deepEqual(flashDecodeSplitDefaults(dtype, G, threads), {
        maxKeys: 256,
        workgroups: 512,
      });
    }
    assert.deepEqual(flashDecodeSplitDefaults("f16", 4, 256), { maxKeys: 512, workgroups: 512 });
    assert.equal(flashDecodeShape("f32", 4, 128, 1 << 15)?.PSMAX, 256);
    // One layer of 8 pages (B 1, Hkv 8) with room for 8192 entries each: splits per page np =
    // max(ceil(8192 / maxKeys), min(ceil(workgroups / 8), ceil(8192 / KMIN))).
    const sizes = { layers: 1, batch: 1, kvHeads: 8, headDim: 128, blockSize: 256 };
    using cache = createDenseCache(gpu, { ...sizes, dtype: "f16" });
    const s = cache.storage;
    s.ensure(0, 8192);
    assert.equal(s.planLength(0), 8192);
    const plan = (G: number, tuning?: FlashDecodeTuning) => {
      const p = flashDecodePlan(s, 0, G, tuning)!;
      return [p.shape.PSMAX, p.np];
    };
    assert.deepEqual(plan(4), [1024, 48]); // 384 / 8 pages
    assert.deepEqual(plan(2), [512, 64]);
    assert.deepEqual(plan(1), [256, 64]);
    // One split knob set: the other keeps its value from before the sweeps (256 keys, 512).
    assert.deepEqual(plan(4, { workgroups: 512 }), [256, 64]);
    assert.deepEqual(plan(4, { workgroups: 128 }), [256, 32]); // ceil(8192 / 256) splits at least
    assert.deepEqual(plan(4, { maxKeys: 1024 }), [1024, 64]);
    // Filling the last wave: 48 splits a page (384 workgroups) is one wave of 396 (nothing to
    // fill), or 1.9 waves of 200 -> floor(400 / 8) = 50 a page; 8192 / KMIN 128 = 64 at most.
    assert.deepEqual(plan(4, { wave: 396 }), [1024, 48]);
    assert.deepEqual(plan(4, { wave: 200 }), [1024, 50]);
    assert.deepEqual(plan(4, { wave: 17 }), [1024, 48]); // 23 waves of 17 -> floor(391 / 8) = 48
    assert.deepEqual(plan(4, { wave: 100 }), [1024, 50]); // 4 waves -> 400 / 8
    // One knob set (256 keys, 32 splits a page: 256 workgroups): no filling within one wave.
    assert.deepEqual(plan(4, { workgroups: 1, wave: 256 }), [256, 32]);
    assert.deepEqual(plan(4, { workgroups: 1, wave: 255 }), [256, 63]); // 2 waves: 510 / 8
    assert.deepEqual(plan(4, { workgroups: 1, wave: 60 }), [256, 37]); // 5 waves: 300 / 8
    // Never splits under KMIN: 8192 / 1024 = 8 a page however many the wave would take.
    assert.deepEqual(plan(4, { maxKeys: 1024, workgroups: 1, wave: 63 }), [1024, 15]);
    assert.deepEqual(plan(4, { maxKeys: 1024, workgroups: 1, minKeys: 1024, wave: 63 }), [1024, 8]);
    try {
      flashDecodeDefaults.maxKeys = 512;
      assert.deepEqual(plan(4), [512, 64]);
      flashDecodeDefaults.maxKeys = undefined;
      flashDecodeDefaults.workgroups = 256;
      assert.deepEqual(plan(4), [256, 32]);
    } finally {
      flashDecodeDefaults.maxKeys = undefined;
      flashDecodeDefaults.workgroups = undefined;
    }
  },
});

Deno.test({
  name: "flashDecodePlan applies flashDecodeDefaults.threads and .loads where the shape takes " +
    "them, else the untuned choice; bad defaults are named",
  ...GPU_TEST,
  fn: () => {
    const sizes = { layers: 1, batch: 1, kvHeads: 2, headDim: 128, blockSize: 16 };
    using cache = createDenseCache(gpu, { ...sizes, dtype: "f32" });
    const s = cache.storage;
    const wg = () => flashDecodePlan(s, 0, 2)?.shape.WG;
    try {
      assert.equal(wg(), 128);
      flashDecodeDefaults.threads = 256;
      assert.equal(wg(), 256);
      assert.equal(flashDecodePlan(s, 0, 2, { threads: 128 })?.shape.WG, 128); // the call wins
      // f32, D 128: 32 lanes a row need 128 threads at least; a default of 64 falls back.
      flashDecodeDefaults.threads = 64;
      assert.equal(wg(), 128);
      flashDecodeDefaults.threads = 100;
      assert.throws(wg, /flashDecodeDefaults\.threads must be 64, 128, 256 or 512, got 100/);
      flashDecodeDefaults.threads = undefined;
      flashDecodeDefaults.minKeys = 0;
      assert.throws(wg, /flashDecodeDefaults\.minKeys must be an integer >= 1, got 0/);
      flashDecodeDefaults.minKeys = 32;
      assert.equal(flashDecodePlan(s, 0, 2)?.shape.KMIN, 32);
      flashDecodeDefaults.earlyLoads = "yes" as unknown as boolean;
      assert.throws(wg, /flashDecodeDefaults\.earlyLoads must be true or false, got yes/);
      flashDecodeDefaults.earlyLoads = true;
      assert.equal(flashDecodePlan(s, 0, 2)?.shape.EARLY, 1);
      assert.equal(flashDecodePlan(s, 0, 2, { earlyLoads: false })?.shape.EARLY, 0); // the call wins
      flashDecodeDefaults.earlyLoads = undefined;
      // loads: J 8 where the shape takes it (G <= 4), else dropped; the call's own loads win.
      const J = (G: number, t?: FlashDecodeTuning) => flashDecodePlan(s, 0, G, t)?.shape.J;
      assert.equal(J(2), 4);
      flashDecodeDefaults.loads = 8;
      assert.equal(J(2), 8);
      assert.equal(J(2, { loads: 2 }), 2);
      assert.equal(J(8), 2); // G 8 holds two head quads: J 8 does not fit, the untuned J
      flashDecodeDefaults.threads = 256;
      flashDecodeDefaults.loads = 2;
      assert.deepEqual([wg(), J(2)], [256, 2]); // both preferences
      flashDecodeDefaults.loads = 3;
      assert.throws(wg, /flashDecodeDefaults\.loads must be 1, 2, 4 or 8, got 3/);
    } finally {
      flashDecodeDefaults.threads = undefined;
      flashDecodeDefaults.minKeys = undefined;
      flashDecodeDefaults.earlyLoads = undefined;
      flashDecodeDefaults.loads = undefined;
    }
  },
});
