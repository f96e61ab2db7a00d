/**
 * The plan of flash-decoding (src/cache/paged_decode_plan.ts): the kernel's constants for a shape
 * and the tuning knobs that set them (each bad value named), the measured split defaults by dtype
 * and G, the splits a layer's pages take (a wave filled, never a split under KMIN), and
 * `flashDecodeDefaults` as preferences that the plan drops where the shape cannot take them. The
 * kernel these plans launch is checked against its oracles in ./paged_decode_test.ts.
 */

import assert from "node:assert/strict";
import {
  flashDecodeDefaults,
  flashDecodePlan,
  flashDecodeShape,
  flashDecodeSplitDefaults,
  flashDecodeSplits,
  type FlashDecodeTuning,
} from "../../src/cache/paged_decode_plan.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import { gpu, GPU_TEST } from "../_util.ts";

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
    // A head split: G 4 as two workgroups of 2 heads plans G 2's splits for 16 (page, group)
    // pairs: up to 512 keys, 512 / 16 = 32 a pair; a split that does not divide G is named.
    const split = flashDecodePlan(s, 0, 4, { headSplit: 2 })!;
    assert.deepEqual([split.shape.GQ, split.shape.SH, split.shape.PSMAX, split.np], [
      2,
      2,
      512,
      32,
    ]);
    // Four groups of one head: G 1's plan (256 keys, 512 workgroups) for 32 pairs: 8192 / 256.
    assert.deepEqual([...plan(4, { headSplit: 4 }), flashDecodePlan(s, 0, 4)!.shape.SH], [
      256,
      32,
      1,
    ]);
    for (const [G, headSplit] of [[4, 3], [2, 4], [8, 16], [4, 0]]) {
      assert.throws(
        () => flashDecodePlan(s, 0, G, { headSplit }),
        new RegExp(`headSplit must be 1, 2, 4 or 8 and divide G = ${G}, got ${headSplit}`),
      );
    }
    try {
      // As a default: taken where it divides G, dropped where it does not; a bad one is named.
      flashDecodeDefaults.headSplit = 2;
      assert.equal(flashDecodePlan(s, 0, 4)!.shape.SH, 2);
      assert.equal(flashDecodePlan(s, 0, 1)!.shape.SH, 1);
      flashDecodeDefaults.headSplit = 3;
      assert.throws(
        () => flashDecodePlan(s, 0, 4),
        /flashDecodeDefaults\.headSplit must be 1, 2, 4 or 8, got 3/,
      );
      flashDecodeDefaults.headSplit = undefined;
      flashDecodeDefaults.maxKeys = 512;
      assert.deepEqual(plan(4), [512, 64]);
      flashDecodeDefaults.maxKeys = undefined;
      flashDecodeDefaults.workgroups = 256;
      assert.deepEqual(plan(4), [256, 32]);
    } finally {
      flashDecodeDefaults.maxKeys = undefined;
      flashDecodeDefaults.workgroups = undefined;
      flashDecodeDefaults.headSplit = undefined;
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
