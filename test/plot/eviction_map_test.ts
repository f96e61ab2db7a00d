import assert from "node:assert/strict";
import { createDmsCache } from "../../src/dms/dms_cache.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import { isVisible, marksFromDecisions } from "../../src/dms/oracle.ts";
import type { PagedKvCache } from "../../src/cache/paged_kv_cache.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import {
  classifyPage,
  type EntryState,
  evictionCounts,
  type EvictionMap,
  evictionMapSvg,
  evictionRuns,
  readEvictionMap,
} from "../../src/plot/eviction_map.ts";
import { gpu, GPU_TEST, randomArray } from "../_util.ts";

const [L, B, Hkv, Hq, D, W] = [2, 2, 2, 4, 4, 3];

/** Random decisions d[layer][b][h][t] in {0, 1} (about half marked), deterministic. */
function decisionsFor(T: number, seed: number): number[][][][] {
  const u = randomArray(L * B * Hkv * T, seed, 0, 1);
  let i = 0;
  return Array.from(
    { length: L },
    () =>
      Array.from(
        { length: B },
        () =>
          Array.from(
            { length: Hkv },
            () => Array.from({ length: T }, () => (u[i++] < 0.5 ? 1 : 0)),
          ),
      ),
  );
}

/** Feeds a prefill of `P` tokens then `decode` single tokens through `cache`, layer by layer. */
async function drive(cache: PagedKvCache, d: number[][][][], P: number, decode: number) {
  const step = async (t0: number, n: number, seed: number) => {
    await cache.reserve(n);
    for (let l = 0; l < L; l++) {
      const dec: number[] = [];
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < Hkv; h++) for (let j = 0; j < n; j++) dec.push(d[l][b][h][t0 + j]);
      }
      using q = Tensor.fromArray(gpu, randomArray(B * Hq * n * D, seed + l), [B, Hq, n, D]);
      using k = Tensor.fromArray(gpu, randomArray(B * Hkv * n * D, seed + 9 + l), [B, Hkv, n, D]);
      using v = Tensor.fromArray(gpu, randomArray(B * Hkv * n * D, seed + 99 + l), [B, Hkv, n, D]);
      using dt = Tensor.fromArray(gpu, dec, [B, Hkv, n], "i32");
      cache.attend(l, q, k, v, dt).dispose();
    }
  };
  await step(0, P, 1);
  for (let t = P; t < P + decode; t++) await step(t, 1, 100 + t);
}

/** The SPEC §5.1 oracle: the state of key i after the query at the newest position. */
function oracleStates(d: readonly number[], window: number): EntryState[] {
  const T = d.length, mark = marksFromDecisions(d);
  return Array.from(
    { length: T },
    (_, i) => !isVisible(T - 1, i, mark[i], window) ? "evicted" : mark[i] ? "window" : "kept",
  );
}

Deno.test({
  name: "readEvictionMap: a real DMS cache read back after prefill + decode equals the §5.1 oracle",
  ...GPU_TEST,
  fn: async () => {
    const P = 9, N = 7, T = P + N;
    const d = decisionsFor(T, 5);
    using cache = createDmsCache(gpu, {
      layers: L,
      batch: B,
      kvHeads: Hkv,
      headDim: D,
      window: W,
      blockSize: 2,
      preallocateTokens: 2,
    });
    await drive(cache, d, P, N);
    const stats = await cache.stats();
    let windowSeen = 0, evictedSeen = 0;
    for (let b = 0; b < B; b++) {
      const map = await readEvictionMap(cache, { sequence: b });
      assert.equal(map.tokensSeen, T);
      assert.equal(map.window, W);
      const counts = evictionCounts(map);
      for (let l = 0; l < L; l++) {
        for (let h = 0; h < Hkv; h++) {
          assert.deepEqual(
            map.states[l][h],
            oracleStates(d[l][b][h], W),
            `layer ${l} b ${b} h ${h}`,
          );
          const c = counts[l][h];
          assert.equal(c.kept + c.window, stats.lengths[l][b * Hkv + h], "stored = kept + window");
          assert.equal(c.kept + c.window + c.evicted, T);
          windowSeen += c.window;
          evictedSeen += c.evicted;
        }
      }
    }
    assert.ok(windowSeen > 0 && evictedSeen > 0, "the random decisions exercise every state");
  },
});

Deno.test({
  name: "readEvictionMap: the dense cache keeps every position",
  ...GPU_TEST,
  fn: async () => {
    const d = decisionsFor(12, 6);
    using cache = createDenseCache(gpu, { layers: L, batch: B, kvHeads: Hkv, headDim: D });
    await drive(cache, d, 5, 7);
    const map = await readEvictionMap(cache, { sequence: 1 });
    assert.deepEqual(
      map.states,
      Array.from({ length: L }, () => [
        Array(12).fill("kept"),
        Array(12).fill("kept"),
      ]),
    );
    await assert.rejects(
      () => readEvictionMap(cache, { sequence: 2 }),
      /sequence must be in 0\.\.1/,
    );
  },
});

Deno.test("classifyPage: absent = evicted, marked within W of the newest = window, bad input named", () => {
  const s = classifyPage({ positions: [9, 0, 6, 3], marks: [0, 1, 1, 0] }, 10, 3);
  assert.deepEqual(s, [
    "evicted", // marked, 9 − 0 > 3 (stored but invisible)
    "evicted",
    "evicted",
    "kept",
    "evicted",
    "evicted",
    "window", // marked, 9 − 6 = 3 ≤ W
    "evicted",
    "evicted",
    "kept",
  ]);
  assert.throws(() => classifyPage({ positions: [1, 1], marks: [0, 0] }, 4, 2), /stored twice/);
  assert.throws(
    () => classifyPage({ positions: [4], marks: [0] }, 4, 2),
    /position 4, outside 0\.\.3/,
  );
  assert.throws(() => classifyPage({ positions: [0], marks: [2] }, 4, 2), /mark 2/);
  assert.throws(() => classifyPage({ positions: [0], marks: [] }, 4, 2), /1 positions but 0 marks/);
});

Deno.test("evictionMapSvg: one rectangle per run, a panel per layer, the legend and the title", async () => {
  const rnd = randomArray(2 * 3 * 40, 11, 0, 3);
  const states: EntryState[][][] = [0, 1].map((l) =>
    [0, 1, 2].map((h) =>
      Array.from({ length: 40 }, (_, p) =>
        (["kept", "window", "evicted"] as const)[
          Math.floor(rnd[(l * 3 + h) * 40 + p])
        ])
    )
  );
  const map: EvictionMap = { tokensSeen: 40, window: 4, sequence: 0, states };
  // brute-force run count: 1 + the number of changes along each row
  let expectedRuns = 0;
  for (const heads of states) {
    for (const row of heads) {
      expectedRuns += 1 + row.filter((s, i) => i > 0 && s !== row[i - 1]).length;
    }
  }
  const runs = evictionRuns(map);
  assert.equal(runs.length, expectedRuns);
  for (const r of runs) {
    for (let p = r.start; p < r.end; p++) assert.equal(states[r.layer][r.head][p], r.state);
  }
  const svg = await evictionMapSvg(map);
  assert.ok(svg.startsWith("<svg"));
  assert.equal((svg.match(/aria-roledescription="rect mark"/g) ?? []).length, expectedRuns);
  const labels = ["layer 0", "layer 1", "KV head 0", "KV head 2", "kept", "window", "evicted"];
  for (const label of [...labels, "position"]) {
    assert.match(svg, new RegExp(`>${label}</text>`), label);
  }
  assert.match(svg, />Eviction map: 40 positions, window W = 4, sequence 0</);
});
