import fc from "fast-check";
import assert from "node:assert/strict";
import { createDmsCache, type DmsCache } from "../../src/dms/dms_cache.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import { isVisible, retainedCount } from "../../src/dms/oracle.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, TOL } from "../_util.ts";
import {
  chunking,
  expected,
  feed,
  makeProblem,
  type Problem,
  trackerState,
} from "../cache/harness.ts";

// Tolerances vs the f64 oracle: f32 storage and math: TOL.f32; f16 storage (inputs rounded
// to f16, output stored as f16): TOL.f16.

/** A random cache configuration and problem. */
const arbCase = fc.record({
  B: fc.integer({ min: 1, max: 2 }),
  Hkv: fc.integer({ min: 1, max: 2 }),
  G: fc.integer({ min: 1, max: 3 }),
  D: fc.constantFrom(3, 8, 16),
  W: fc.integer({ min: 1, max: 10 }),
  bsFrac: fc.double({ min: 0, max: 1, noNaN: true }),
  T: fc.integer({ min: 1, max: 44 }),
  sizes: fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 6 }),
  pEvict: fc.constantFrom(0.5, 0.9, 1),
  pads: fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 2, maxLength: 2 }),
  seed: fc.integer({ min: 0, max: 1 << 30 }),
  split: fc.constantFrom(undefined, 32),
});
type Case = typeof arbCase extends fc.Arbitrary<infer X> ? X : never;

function setup(
  c: Case,
  dtype: "f32" | "f16",
  pad = true,
): { pr: Problem; cache: DmsCache; bs: number } {
  const bs = Math.min(c.W + 1, 1 + Math.floor(c.bsFrac * (c.W + 1)));
  const pr = makeProblem({ ...c, pads: pad ? c.pads : undefined, f16: dtype === "f16" });
  const cache = createDmsCache(gpu, {
    layers: 1,
    batch: c.B,
    kvHeads: c.Hkv,
    headDim: c.D,
    window: c.W,
    blockSize: bs,
    dtype,
    preallocateTokens: 2,
    partitionKeys: c.split,
  });
  return { pr, cache, bs };
}

/** Checks every page of layer 0 against the tracker after positions 0..t. */
async function assertPagesMatchOracle(
  cache: DmsCache,
  pr: Problem,
  t: number,
  label: string,
): Promise<void> {
  const pages = await cache.inspect(0);
  const wc = cache.cacheWindow;
  pages.forEach((pg, p) => {
    const want = trackerState(pr, p, t, wc);
    const where = `${label}, page ${p}, after position ${t}`;
    assert.deepEqual(
      [...pg.positions].sort((a, b) => a - b),
      [...want.positions].sort((a, b) => a - b),
      `${where}: positions`,
    );
    // The last Wc entries in order, with their flags (the newest always 0).
    const tail = want.positions.slice(-wc);
    assert.deepEqual(pg.recent.map((e) => e.position), tail, `${where}: ring positions`);
    assert.deepEqual(pg.recent.map((e) => e.flag), want.flags.slice(-wc), `${where}: ring flags`);
    // The storage marks equal the ring flags; entries older than the window are unmarked.
    const flagOf = new Map(pg.recent.map((e) => [e.position, e.flag]));
    pg.positions.forEach((pos, s) =>
      assert.equal(pg.marks[s], flagOf.get(pos) ?? 0, `${where}: mark of ${pos}`)
    );
    pg.recent.forEach((e) =>
      assert.equal(pg.positions[e.slot], e.position, `${where}: ring slot of ${e.position}`)
    );
  });
}

// The output property (every policy, both dtypes, vs the §5.1 oracle) is the shared suite in
// test/policies/policy_suite_test.ts; here: what only DMS has (ring, flags, window edges).

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name:
      `DmsCache (${dtype}) holds exactly the keys its decisions predict after every chunk (tracker set, last Wc in order, flags)`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(arbCase, async (c) => {
          const { pr, cache } = setup(c, dtype);
          using _ = cache;
          // The full T (up to 44), as the final-chunk check this replaces.
          const chunks = chunking(c.T, c.sizes);
          await feed(cache, [pr], chunks, {
            after: async (t0, n) => {
              await assertPagesMatchOracle(cache, pr, t0 + n - 1, JSON.stringify(c));
              if (!pr.mask) {
                const { lengths } = await cache.stats();
                lengths[0].forEach((len, p) => {
                  const d = pr.d.subarray(p * pr.T, (p + 1) * pr.T);
                  assert.equal(
                    len,
                    retainedCount(d, t0 + n - 1, c.W),
                    `length of page ${p} at ${t0 + n - 1}`,
                  );
                });
              }
            },
          });
        }),
        fcParams(dtype === "f32" ? 8 : 6),
      );
    },
  });
}

Deno.test({
  name: "DmsCache with all decisions 0 gives exactly the dense cache's outputs and lengths",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(arbCase, async (c) => {
        const { pr, cache } = setup(c, "f32");
        using _ = cache;
        using dense = createDenseCache(gpu, {
          layers: 1,
          batch: c.B,
          kvHeads: c.Hkv,
          headDim: c.D,
          blockSize: 3,
        });
        const zero = { ...pr, d: new Int32Array(pr.d.length) };
        const chunks = chunking(c.T, c.sizes);
        const [a] = await feed(cache, [zero], chunks);
        const [b] = await feed(dense, [pr], chunks); // random decisions: ignored by the dense policy
        assertClose(a, b, { atol: 1e-6, rtol: 1e-6 }, "DMS with d = 0 vs dense");
        assertClose(b, expected(zero, c.W), TOL.f32, "dense vs causal oracle");
        const [sa, sb] = [await cache.stats(), await dense.stats()];
        assert.deepEqual(sa.lengths, sb.lengths);
        sb.lengths[0].forEach((len, p) => {
          const pad = pr.mask
            ? pr.mask.subarray(Math.floor(p / c.Hkv) * c.T).slice(0, c.T).indexOf(1)
            : 0;
          assert.equal(len, pad < 0 ? 0 : c.T - pad, `dense length of page ${p}`);
        });
      }),
      fcParams(6),
    );
  },
});

Deno.test({
  name: "DmsCache window boundary: a marked key is visible at distance W and gone at W + 1",
  ...GPU_TEST,
  fn: async () => {
    // One page, q = 0 (uniform weights over the visible keys), v[i] = one-hot e_i: out[t][0] is
    // 1/#visible while key 0 is visible and exactly 0 once it is gone. d[1] = 1 marks key 0.
    const W = 3, T = 8, D = 8;
    for (const chunks of [[1, 1, 1, 1, 1, 1, 1, 1], [T], [2, 3, 3], [4, 4], [5, 3]]) {
      const pr: Problem = {
        B: 1,
        Hkv: 1,
        G: 1,
        D,
        T,
        q: new Float32Array(T * D),
        k: new Float32Array(T * D).map((_, i) => (i % 5) / 7),
        v: new Float32Array(T * D).map((_, i) => (i % D === Math.floor(i / D) ? 1 : 0)),
        d: Int32Array.from([0, 1, 0, 0, 0, 0, 0, 0]),
      };
      using cache = createDmsCache(gpu, {
        layers: 1,
        batch: 1,
        kvHeads: 1,
        headDim: D,
        window: W,
        blockSize: 2,
      });
      const lens: number[] = [];
      const [out] = await feed(cache, [pr], chunks, {
        after: async () => void lens.push((await cache.stats()).lengths[0][0]),
      });
      for (let t = 0; t < T; t++) {
        const w0 = out[t * D];
        if (t <= W) {
          assert.ok(
            Math.abs(w0 - 1 / (t + 1)) < 1e-6,
            `chunks ${chunks}: query ${t} weight of key 0 is ${w0}`,
          );
        } else {assert.equal(
            w0,
            0,
            `chunks ${chunks}: query ${t} (distance ${t} > W) still sees key 0`,
          );}
        assert.equal(isVisible(t, 0, 1, W), t <= W); // the oracle agrees
      }
      // Lengths at the end of each chunk: t + 1 up to t = W, then key 0 is gone.
      let t = -1;
      chunks.forEach((n, i) => {
        t += n;
        assert.equal(lens[i], t <= W ? t + 1 : t, `chunks ${chunks}: length after position ${t}`);
      });
    }
  },
});

Deno.test({
  name: "DmsCache prefill then decode equals decode only (outputs and cache contents)",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(arbCase, fc.integer({ min: 1, max: 20 }), async (c, P) => {
        const T = Math.max(c.T, P + 1);
        const a = setup({ ...c, T }, "f32", false);
        const b = setup({ ...c, T }, "f32", false);
        using _a = a.cache;
        using _b = b.cache;
        const [outA] = await feed(a.cache, [a.pr], [P, ...Array(T - P).fill(1)]);
        const [outB] = await feed(b.cache, [b.pr], Array(T).fill(1));
        assertClose(outA, expected(a.pr, c.W), TOL.f32, "prefill + decode vs oracle");
        assertClose(outA, outB, TOL.f32, "prefill + decode vs decode only");
        const [pa, pb] = [await a.cache.inspect(0), await b.cache.inspect(0)];
        pa.forEach((pg, p) => {
          assert.deepEqual(
            [...pg.positions].sort((x, y) => x - y),
            [...pb[p].positions].sort((x, y) => x - y),
          );
          assert.deepEqual(
            pg.recent.map((e) => [e.position, e.flag]),
            pb[p].recent.map((e) => [e.position, e.flag]),
          );
        });
      }),
      fcParams(6),
    );
  },
});

Deno.test({
  name: "DmsCache multi-turn (prefill, decode, prefill, decode) equals one long prefill",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        arbCase,
        fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 4, maxLength: 4 }),
        async (c, turns) => {
          const [p1, d1, p2, d2] = turns;
          const chunksA = [p1, ...Array(d1).fill(1), p2 + 1, ...Array(d2).fill(1)];
          const T = chunksA.reduce((x, y) => x + y);
          const a = setup({ ...c, T }, "f32");
          const b = setup({ ...c, T }, "f32");
          using _a = a.cache;
          using _b = b.cache;
          // Padding only inside the first chunk, so the turns stay valid left padding.
          const pads = c.pads.map((x) => Math.min(x, p1 - 1));
          const pr = makeProblem({ ...c, T, pads });
          const [outA] = await feed(a.cache, [pr], chunksA);
          const [outB] = await feed(b.cache, [pr], [T]);
          const want = expected(pr, c.W);
          assertClose(outA, want, TOL.f32, `multi-turn ${chunksA} vs oracle`);
          assertClose(outB, want, TOL.f32, "one prefill vs oracle");
          const [pa, pb] = [await a.cache.inspect(0), await b.cache.inspect(0)];
          pa.forEach((pg, p) => {
            assert.deepEqual(
              [...pg.positions].sort((x, y) => x - y),
              [...pb[p].positions].sort((x, y) => x - y),
            );
            assert.deepEqual(
              pg.recent.map((e) => [e.position, e.flag]),
              pb[p].recent.map((e) => [e.position, e.flag]),
            );
          });
        },
      ),
      fcParams(6),
    );
  },
});

Deno.test({
  name: "createDmsCache() rejects bad windows and block sizes, naming the values",
  ...GPU_TEST,
  fn: () => {
    const base = { layers: 1, batch: 1, kvHeads: 1, headDim: 4 };
    assert.throws(
      () => createDmsCache(gpu, { ...base, window: 0 }),
      /window must be an integer >= 1, got 0/,
    );
    assert.throws(
      () => createDmsCache(gpu, { ...base, window: -3 }),
      /window must be an integer >= 1, got -3/,
    );
    assert.throws(() => createDmsCache(gpu, { ...base, window: 2.5 }), /got 2\.5/);
    assert.throws(() => createDmsCache(gpu, { ...base }), /window is required/);
    assert.throws(
      () => createDmsCache(gpu, { ...base, window: 4, blockSize: 0 }),
      /blockSize must be an integer >= 1, got 0/,
    );
    assert.throws(() => createDmsCache(gpu, { ...base, window: 4, blockSize: -2 }), RangeError);
    assert.throws(
      () => createDmsCache(gpu, { ...base, window: 4, blockSize: 6 }),
      /blockSize 6 exceeds the cache window W \+ 1 = 5 \(window 4\)/,
    );
    assert.throws(
      () => createDmsCache(gpu, { ...base, layers: 0, window: 4 }),
      /layers must be an integer >= 1, got 0/,
    );
    createDmsCache(gpu, { ...base, window: 4, blockSize: 5 }).dispose(); // block size = Wc is allowed
    createDenseCache(gpu, { ...base, blockSize: 64 }).dispose(); // no window constraint without eviction
  },
});

Deno.test({
  name: "DmsCache.attend() rejects wrong shapes, dtypes, layer order and non-left padding",
  ...GPU_TEST,
  fn: () => {
    using cache = createDmsCache(gpu, {
      layers: 2,
      batch: 2,
      kvHeads: 2,
      headDim: 4,
      window: 3,
      blockSize: 2,
    });
    const t = (shape: number[], dtype: "f32" | "i32" = "f32") => Tensor.zeros(gpu, shape, dtype);
    using q = t([2, 4, 3, 4]);
    using k = t([2, 2, 3, 4]);
    using v = t([2, 2, 3, 4]);
    using d = t([2, 2, 3], "i32");
    using dBad = t([2, 3, 3], "i32");
    using dBad2 = t([2, 2], "i32");
    using dF = t([2, 2, 3]);
    using kBad = t([2, 2, 3, 5]);
    using qBad = t([2, 3, 3, 4]);
    assert.throws(
      () => cache.attend(0, q, k, v, dBad),
      /decisions: expected shape \[2, 2, 3\] \[B, Hkv, n\], got \[2, 3, 3\]/,
    );
    assert.throws(() => cache.attend(0, q, k, v, dBad2), /got \[2, 2\]/);
    assert.throws(() => cache.attend(0, q, k, v, dF), TypeError);
    assert.throws(() => cache.attend(0, q, k, v), /decisions .* are required/);
    assert.throws(
      () => cache.attend(0, q, kBad, v, d),
      /k: expected shape \[2, 2, 3, 4\], got \[2, 2, 3, 5\]/,
    );
    assert.throws(
      () => cache.attend(0, qBad, k, v, d),
      /q has 3 heads, not a positive multiple of the 2 KV heads/,
    );
    assert.throws(() => cache.attend(1, q, k, v, d), /expected layer 0, got 1/);
    assert.throws(
      () => cache.attend(0, q, k, v, d, { keyMask: [1, 0, 1, 1, 1, 1] }),
      /row 0 has a 0 at 1 after a token/,
    );
    assert.throws(
      () => cache.attend(0, q, k, v, d, { keyMask: [1, 1, 1] }),
      /keyMask: expected 6 values/,
    );
    assert.throws(
      () => cache.attend(0, q, k, v, d, { keyMask: [0, 2, 1, 1, 1, 1] }),
      /must be 0 or 1, got 2/,
    );
    cache.attend(0, q, k, v, d, { keyMask: [0, 1, 1, 1, 1, 1] }).dispose();
    assert.throws(() => cache.attend(1, q, k, v, d), /different keyMask/);
    cache.attend(1, q, k, v, d, { keyMask: [0, 1, 1, 1, 1, 1] }).dispose();
    // Row 0 has started: a later 0 is not left padding.
    assert.throws(
      () => cache.attend(0, q, k, v, d, { keyMask: [0, 1, 1, 1, 1, 1] }),
      /row 0 has a 0 at 0 after a token/,
    );
  },
});
