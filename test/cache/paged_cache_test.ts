import fc from "fast-check";
import assert from "node:assert/strict";
import { PagedKvStorage } from "../../src/cache/paged_storage.ts";
import { pagedAttention } from "../../src/cache/paged_attention.ts";
import { createDmsCache } from "../../src/dms/dms_cache.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import {
  compressionRatioDenseOverKept,
  compressionRatioGetCr,
  retainedCount,
} from "../../src/dms/oracle.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose, fcParams, gpu, GPU_TEST, TOL } from "../_util.ts";
import { expected, feed, makeProblem } from "./harness.ts";

Deno.test({
  name:
    "PagedKvStorage grows its pool geometrically over many tokens with 1-entry blocks, contents preserved",
  ...GPU_TEST,
  fn: async () => {
    const pr = makeProblem({ B: 2, Hkv: 2, G: 2, D: 8, T: 120, seed: 7, pEvict: 0 });
    using cache = createDenseCache(gpu, {
      layers: 1,
      batch: 2,
      kvHeads: 2,
      headDim: 8,
      blockSize: 1,
      preallocateTokens: 1,
    });
    const s = cache.storage;
    const sizes = [s.poolBlocks(0)];
    const widths = [s.tableWidth];
    const [out] = await feed(cache, [pr], [5, ...Array(115).fill(1)], {
      after: () => {
        if (s.poolBlocks(0) !== sizes.at(-1)) sizes.push(s.poolBlocks(0));
        if (s.tableWidth !== widths.at(-1)) widths.push(s.tableWidth);
      },
    });
    assertClose(out, expected(pr, 0), TOL.f32, "dense attention across pool growth");
    assert.equal(sizes[0], 4, "initial pool: ceil(1 / 1) blocks per page × 4 pages");
    for (let i = 1; i < sizes.length; i++) {
      // One growth per call, to the first of ceil(1.5·old), ceil(1.5·ceil(1.5·old)), ... that fits.
      let x = sizes[i - 1];
      while (x < sizes[i]) x = Math.ceil(1.5 * x);
      assert.equal(x, sizes[i], `growth ${i} is not a chain of ceil(1.5·old): ${sizes}`);
    }
    assert.ok(sizes.at(-1)! >= 4 * 120, `pool holds every token: ${sizes}`);
    assert.ok(widths.length > 3, `block table widened: ${widths}`);
    const st = await cache.stats();
    assert.deepEqual(st.lengths, [[120, 120, 120, 120]]);
    assert.equal(st.allocatedBytes, sizes.at(-1)! * 1 * (2 * 8 * 4 + 8));
  },
});

/** One layer, one sequence, 2 KV heads, W = 2 (Wc = 3), 1-entry blocks, a 1-token pool. */
function dmsW2(headDim: number) {
  return {
    layers: 1,
    batch: 1,
    kvHeads: 2,
    headDim,
    window: 2,
    blockSize: 1,
    preallocateTokens: 1,
  };
}

Deno.test({
  name:
    "DmsCache.reserve() reads lengths back only when blocks would run out, and pools follow the true lengths",
  ...GPU_TEST,
  fn: async () => {
    // W = 2 and every decision 1: each page keeps exactly Wc = 3 entries.
    const T = 48, D = 4;
    const pr = makeProblem({ B: 1, Hkv: 2, G: 1, D, T, seed: 3, pEvict: 1 });
    const opts = dmsW2(D);
    using lazy = createDmsCache(gpu, opts);
    using reserved = createDmsCache(gpu, opts);
    await feed(lazy, [pr], Array(T).fill(1));
    const orig = gpu.readMany;
    let reads = 0, reserves = 0;
    gpu.readMany = (...a: Parameters<typeof orig>) => {
      reads++;
      return orig.apply(gpu, a);
    };
    try {
      await feed(reserved, [pr], Array(T).fill(1), {
        after: async (t0) => {
          if ((t0 + 1) % 8 === 0) {
            reserves++;
            await reserved.reserve(8);
          }
        },
      });
    } finally {
      gpu.readMany = orig;
    }
    // feed() itself reads the outputs once; each reserve(8) reads at most once.
    assert.ok(
      reads - 1 <= reserves && reads - 1 >= 1,
      `${reads - 1} readbacks for ${reserves} reserve() calls`,
    );
    assert.deepEqual(
      [...lazy.storage.blocksOf(0)],
      [T, T],
      "without reserve() the bound grows by 1 per token",
    );
    for (const b of reserved.storage.blocksOf(0)) {
      assert.ok(b <= 3 + 8 + 8, `with reserve(): ${b} blocks`);
    }
    assert.deepEqual((await reserved.stats()).lengths, [[3, 3]]);
    await assert.rejects(() => reserved.reserve(-1), /steps must be an integer >= 0, got -1/);
  },
});

Deno.test({
  name:
    "DmsCache.reserveAndRead() reads the caller's ranges, the lengths and the counters in one " +
    "readback every call, reserves like reserve() and returns what stats() returns",
  ...GPU_TEST,
  fn: async () => {
    const T = 48, D = 4;
    const pr = makeProblem({ B: 1, Hkv: 2, G: 1, D, T, seed: 3, pEvict: 1 });
    const opts = dmsW2(D);
    using cache = createDmsCache(gpu, opts);
    using marker = Tensor.fromArray(gpu, [7, -8, 9], [3], "i32");
    const orig = gpu.readMany;
    let reads = 0, calls = 0;
    gpu.readMany = (...a: Parameters<typeof orig>) => {
      reads++;
      return orig.apply(gpu, a);
    };
    try {
      await feed(cache, [pr], Array(T).fill(1), {
        after: async (t0) => {
          if ((t0 + 1) % 8 !== 0) return;
          calls++;
          const before = reads;
          // Every other call passes the steps as a function of the bytes read.
          let seen: number[] | undefined;
          const steps = calls % 2 ? 8 : (bytes: ArrayBuffer[]) => {
            seen = [...new Int32Array(bytes[0])];
            return 8;
          };
          const got = await cache.reserveAndRead(steps, [{ buffer: marker.buffer, size: 12 }]);
          assert.equal(reads - before, 1, `one readback at t0 = ${t0}`);
          assert.deepEqual([...new Int32Array(got.bytes[0])], [7, -8, 9]);
          if (calls % 2 === 0) assert.deepEqual(seen, [7, -8, 9]);
          assert.equal(got.stats.tokensSeen, t0 + 1);
          assert.deepEqual(got.stats.lengths, [[Math.min(3, t0 + 1), Math.min(3, t0 + 1)]]);
          const { allocatedBytes: _a, ...now } = await cache.stats();
          const { allocatedBytes: _b, ...read } = got.stats;
          assert.deepEqual(read, now, `the accounting read with the bytes at t0 = ${t0}`);
        },
      });
    } finally {
      gpu.readMany = orig;
    }
    assert.equal(calls, T / 8);
    for (const b of cache.storage.blocksOf(0)) {
      assert.ok(b <= 3 + 8 + 8, `with reserveAndRead(): ${b} blocks`);
    }
    const last = await cache.reserveAndRead(0, []);
    assert.deepEqual(last.bytes, []);
    assert.deepEqual(last.stats, await cache.stats());
    await assert.rejects(() => cache.reserveAndRead(1.5, []), /steps must be an integer >= 0/);
    await assert.rejects(() => cache.reserveAndRead(() => -1, []), /steps must be an integer >= 0/);
  },
});

Deno.test({
  name:
    "DmsCache accounting: KV reads, live and peak tokens, bytes, get_cr and dense/kept match the oracle",
  ...GPU_TEST,
  fn: async () => {
    const B = 2, Hkv = 2, D = 8, W = 3, T = 30, P = 11;
    const layers = [0.3, 0.8].map((p, l) =>
      makeProblem({ B, Hkv, G: 2, D, T, seed: 20 + l, pEvict: p })
    );
    using cache = createDmsCache(gpu, {
      layers: 2,
      batch: B,
      kvHeads: Hkv,
      headDim: D,
      window: W,
      blockSize: 2,
    });
    const chunks = [P, ...Array(T - P).fill(1)];
    await feed(cache, layers, chunks);
    const sumAt = (t: number) => {
      let s = 0;
      for (const pr of layers) {
        for (let p = 0; p < B * Hkv; p++) {
          s += retainedCount(pr.d.subarray(p * T, (p + 1) * T), t, W);
        }
      }
      return s;
    };
    let reads = 0, peak = sumAt(P - 1);
    for (let t = P; t < T; t++) {
      reads += sumAt(t);
      peak = Math.max(peak, sumAt(t));
    }
    const lengths = layers.map((pr) =>
      Array.from(
        { length: B * Hkv },
        (_, p) => retainedCount(pr.d.subarray(p * T, (p + 1) * T), T - 1, W),
      )
    );
    const s = await cache.stats();
    assert.deepEqual(s.lengths, lengths);
    assert.equal(s.tokensSeen, T);
    assert.equal(s.decodeSteps, T - P);
    assert.equal(s.readTokens, reads);
    assert.equal(s.liveTokens, sumAt(T - 1));
    assert.equal(s.peakTokens, peak);
    assert.equal(s.liveBytes, s.liveTokens * 2 * D * 4);
    assert.equal(s.peakBytes, peak * 2 * D * 4);
    assert.ok(Math.abs(s.compressionRatio - compressionRatioGetCr(lengths, T)) < 1e-12);
    assert.ok(
      Math.abs(s.compressionRatioDenseOverKept - compressionRatioDenseOverKept(lengths, T)) < 1e-12,
    );
    assert.ok(s.compressionRatio > 1.2, `some compression: ${s.compressionRatio}`);
  },
});

Deno.test({
  name:
    "Partitions without a visible key weigh 0 in the merge (SPEC §9.7), in decode and in prefill",
  ...GPU_TEST,
  fn: async () => {
    // Page 0 evicts everything (keeps Wc = 3 entries), page 1 nothing: with 32-key partitions
    // page 0's later partitions are empty in decode; in a 100-token prefill the early queries'
    // later partitions hold only future keys. An empty partition weighted 1 would shrink the
    // outputs by l / (l + 1).
    const T = 100, D = 8, W = 2;
    for (const chunks of [[1, ...Array(T - 1).fill(1)], [T], [40, 60]]) {
      const pr = makeProblem({ B: 1, Hkv: 2, G: 2, D, T, seed: 11, pEvict: 0 });
      pr.d.fill(1, 0, T);
      using cache = createDmsCache(gpu, {
        layers: 1,
        batch: 1,
        kvHeads: 2,
        headDim: D,
        window: W,
        blockSize: 3,
        partitionKeys: 32,
      });
      const [out] = await feed(cache, [pr], chunks);
      assertClose(out, expected(pr, W), TOL.f32, `chunks ${chunks.length}`);
      assert.deepEqual((await cache.stats()).lengths, [[3, T]]);
    }
  },
});

Deno.test({
  name:
    "The split and tiled decode kernels agree with each other and with the oracle (GQA up to 8, D up to 128)",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        // (G, D, keys per partition): pairs G·D/4 below and above the workgroup size, one and
        // several partitions; a fixed set keeps the number of pipelines (compile time) small.
        fc.constantFrom<[number, number, number | undefined]>(
          [1, 4, undefined],
          [2, 16, 32],
          [3, 32, 32],
          [8, 32, 64],
          [8, 128, undefined],
        ),
        fc.integer({ min: 1, max: 48 }),
        fc.integer({ min: 0, max: 1 << 30 }),
        async ([G, D, split], T, seed) => {
          const pr = makeProblem({ B: 2, Hkv: 1, G, D, T, seed, pEvict: 0.7 });
          const make = (decodeKernel: "split" | "tiled") =>
            createDmsCache(gpu, {
              layers: 1,
              batch: 2,
              kvHeads: 1,
              headDim: D,
              window: 5,
              blockSize: 4,
              partitionKeys: split,
              decodeKernel,
            });
          using a = make("split");
          using b = make("tiled");
          const chunks = [Math.ceil(T / 3), ...Array(T - Math.ceil(T / 3)).fill(1)];
          const [oa] = await feed(a, [pr], chunks);
          const [ob] = await feed(b, [pr], chunks);
          const label = JSON.stringify({ G, D, T, split });
          assertClose(oa, ob, { atol: 2e-6, rtol: 1e-5 }, `split vs tiled ${label}`);
          assertClose(oa, expected(pr, 5), TOL.f32, `split vs oracle ${label}`);
        },
      ),
      fcParams(10),
    );
  },
});

Deno.test({
  name: "PagedKvStorage rejects bad sizes, oversized pools and too many query heads per KV head",
  ...GPU_TEST,
  fn: () => {
    const base = { layers: 1, batch: 1, kvHeads: 1, headDim: 4, blockSize: 2 };
    assert.throws(
      () => new PagedKvStorage(gpu, { ...base, headDim: 0 }),
      /headDim must be an integer >= 1, got 0/,
    );
    assert.throws(
      () => new PagedKvStorage(gpu, { ...base, blockSize: 1.5 }),
      /blockSize must be an integer >= 1, got 1\.5/,
    );
    assert.throws(
      () => new PagedKvStorage(gpu, { ...base, preallocateTokens: -1 }),
      /preallocateTokens/,
    );
    assert.throws(
      () => new PagedKvStorage(gpu, { ...base, headDim: 1024, preallocateTokens: 1 << 26 }),
      /exceeds this device's maxStorageBufferBindingSize/,
    );
    using s = new PagedKvStorage(gpu, { ...base, headDim: 512 });
    using q = Tensor.zeros(gpu, [1, 16, 1, 512]);
    assert.throws(
      () => pagedAttention(s, 0, q, { t0: 0, window: 1, scale: 1 }),
      /16 × 512 exceeds 4096/,
    );
    assert.throws(
      () => pagedAttention(s, 1, q, { t0: 0, window: 1, scale: 1 }),
      /layer must be an integer in 0\.\.0, got 1/,
    );
  },
});
