/**
 * TOVA (src/policies/tova.ts) and H2O (src/policies/h2o.ts) against their scalar CPU rules
 * (`tovaVictim`, `h2oVictim`, `keepNewestSlots`), slot by slot, over random problems, chunkings
 * (prefill chunks and decode steps), left padding, GQA and budgets.
 *
 * The twin: per page, the positions in slot order and the scores. Each decode step it applies the
 * policy's rule to the scores the GPU holds before the step (read back, so a near tie cannot
 * split the two: the rule is checked exactly, the scores separately), appends or overwrites,
 * then updates the scores with the f64 attention probabilities of the step's query over the
 * kept entries (`decodeProbsReference`; TOVA overwrites, H2O adds). Prefill keeps the newest
 * `budget` entries. Checked after every chunk: positions exactly, scores within TOL, every page
 * ≤ budget; at the end: every output against f64 attention over the entries the twin kept, and
 * the reads and peak counters against a brute-force count (SPEC §8). One or two layers, each with
 * its own problem.
 */

import fc from "fast-check";
import assert from "node:assert/strict";
import { decodeProbsReference } from "../../src/cache/paged_attention.ts";
import type { PagedKvCache } from "../../src/cache/paged_kv_cache.ts";
import { createH2oCache, h2oVictim } from "../../src/policies/h2o.ts";
import { keepNewestSlots, type ScoreEvictPolicy } from "../../src/policies/score_evict.ts";
import { createTovaCache, tovaVictim } from "../../src/policies/tova.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, TOL } from "../_util.ts";
import { chunking, feed, makeProblem, type Problem } from "../cache/harness.ts";

/** One page of the twin: positions and scores in slot order. */
interface Page {
  pos: number[];
  score: number[];
}

/** The CPU twin of a score-based policy over one layer. */
class Twin {
  readonly pages: Page[];
  /** Expected outputs `[B, Hq, T, D]`. */
  readonly out: Float64Array;
  reads = 0;

  constructor(
    readonly pr: Problem,
    readonly tova: boolean,
    readonly budget: number,
    readonly recent: number,
  ) {
    this.pages = Array.from({ length: pr.B * pr.Hkv }, () => ({ pos: [], score: [] }));
    this.out = new Float64Array(pr.B * pr.Hkv * pr.G * pr.T * pr.D);
  }

  real(b: number, t: number): boolean {
    return !this.pr.mask || this.pr.mask[b * this.pr.T + t] === 1;
  }

  /** Advances by the chunk [t0, t0 + n) as the cache does (decode: n = 1 and a real token). */
  step(t0: number, n: number): void {
    const { B } = this.pr;
    const decode = n === 1 && Array.from({ length: B }, (_, b) => this.real(b, t0)).every(Boolean);
    if (decode) this.#decode(t0);
    else this.#prefill(t0, n);
    if (decode) this.reads += this.pages.reduce((a, p) => a + p.pos.length, 0);
  }

  #decode(t: number): void {
    const { B, Hkv } = this.pr;
    const groups = this.tova
      ? Array.from({ length: B }, (_, b) => Array.from({ length: Hkv }, (_, h) => b * Hkv + h))
      : this.pages.map((_, p) => [p]);
    for (const g of groups) {
      const first = this.pages[g[0]];
      let slot = first.pos.length;
      if (slot >= this.budget) {
        slot = this.tova
          ? tovaVictim(first.pos, g.map((p) => this.pages[p].score))
          : h2oVictim(first.pos, first.score, t, this.recent);
      }
      for (const p of g) {
        this.pages[p].pos[slot] = t;
        this.pages[p].score[slot] = 0;
      }
    }
    this.pages.forEach((page, p) => {
      const w = this.#attend(p, t, page.pos);
      page.score = page.score.map((s, i) => (this.tova ? 0 : s) + w[i]);
    });
  }

  #prefill(t0: number, n: number): void {
    const { Hkv } = this.pr;
    this.pages.forEach((page, p) => {
      const b = Math.floor(p / Hkv);
      const chunk: number[] = [];
      for (let t = t0; t < t0 + n; t++) {
        if (!this.real(b, t)) continue;
        chunk.push(t);
        this.#attend(p, t, [...page.pos, ...chunk]);
      }
      const pos = keepNewestSlots(page.pos, chunk, this.budget);
      page.score = pos.map((x, s) => (this.tova || page.pos[s] !== x ? 0 : page.score[s]));
      page.pos = pos;
    });
  }

  /** Writes the f64 output of query t of page p's heads over keys `keys`; returns the probs. */
  #attend(p: number, t: number, keys: readonly number[]): Float64Array {
    const { G, D, T } = this.pr;
    const k = new Float64Array(keys.length * D), v = new Float64Array(keys.length * D);
    keys.forEach((x, i) => {
      k.set(this.pr.k.subarray((p * T + x) * D, (p * T + x + 1) * D), i * D);
      v.set(this.pr.v.subarray((p * T + x) * D, (p * T + x + 1) * D), i * D);
    });
    const vis = keys.map(() => 1), scale = 1 / Math.sqrt(D);
    const qs: number[] = [];
    for (let g = 0; g < G; g++) {
      const q = this.pr.q.subarray(((p * G + g) * T + t) * D, ((p * G + g) * T + t + 1) * D);
      qs.push(...q);
      const w = decodeProbsReference(q, k, vis, 1, D, scale);
      for (let i = 0; i < keys.length; i++) {
        for (let d = 0; d < D; d++) this.out[((p * G + g) * T + t) * D + d] += w[i] * v[i * D + d];
      }
    }
    return decodeProbsReference(qs, k, vis, G, D, scale);
  }
}

const arb = fc.record({
  tova: fc.boolean(),
  layers: fc.integer({ min: 1, max: 2 }),
  B: fc.integer({ min: 1, max: 2 }),
  Hkv: fc.integer({ min: 1, max: 2 }),
  G: fc.integer({ min: 1, max: 3 }),
  D: fc.constantFrom(3, 8, 16),
  budget: fc.integer({ min: 1, max: 12 }),
  recentFrac: fc.double({ min: 0, max: 1, noNaN: true }),
  T: fc.integer({ min: 1, max: 40 }),
  prefill: fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 0, maxLength: 3 }),
  pads: fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 2, maxLength: 2 }),
  bs: fc.integer({ min: 1, max: 8 }),
  split: fc.constantFrom(undefined, 32),
  seed: fc.integer({ min: 0, max: 1 << 30 }),
});

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name:
      `tova and h2o caches (${dtype}) evict exactly the slots their CPU rules choose, attend over the kept entries and stay within the budget`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(arb, async (c) => {
          // One problem per layer: the layers' scores and pages must not mix.
          const prs = Array.from(
            { length: c.layers },
            (_, l) =>
              makeProblem({ ...c, seed: c.seed + 100 * l, pEvict: 0, f16: dtype === "f16" }),
          );
          const recent = c.tova ? 0 : Math.round(c.recentFrac * c.budget);
          const opts = {
            layers: c.layers,
            batch: c.B,
            kvHeads: c.Hkv,
            headDim: c.D,
            budget: c.budget,
            blockSize: c.bs,
            dtype,
            preallocateTokens: 2,
            partitionKeys: c.split,
          };
          using cache: PagedKvCache = c.tova
            ? createTovaCache(gpu, opts)
            : createH2oCache(gpu, { ...opts, recent });
          const policy = cache.policy as ScoreEvictPolicy;
          const twins = prs.map((pr) => new Twin(pr, c.tova, c.budget, recent));
          // Prefill chunks first, then decode steps (chunks of 1).
          const pre = chunking(c.T, c.prefill.length ? c.prefill : [1]);
          const n0 = c.prefill.length ? Math.min(pre.length, c.prefill.length) : 0;
          const chunks = [...pre.slice(0, n0), ...chunking(c.T - sum(pre.slice(0, n0)), [1])];
          const label = `${dtype} ${JSON.stringify({ ...c, recent, chunks })}`;
          let peak = 0;
          const outs = await feed(cache, prs, chunks, {
            reserve: true,
            after: async (t0, n) => {
              for (const [l, twin] of twins.entries()) {
                twin.step(t0, n);
                const pages = await cache.storage.snapshot(l);
                const got = await policy.readScores(l);
                pages.forEach((page, p) => {
                  const tw = twin.pages[p];
                  const at = `layer ${l} page ${p} after [${t0}, ${t0 + n}) ${label}`;
                  assert.deepEqual(page.positions, tw.pos, `positions of ${at}`);
                  assert.ok(page.positions.length <= c.budget, `over budget: ${at}`);
                  const mine = got.subarray(p * c.budget, p * c.budget + tw.pos.length);
                  assertClose(mine, tw.score, TOL[dtype], `scores of ${at}`);
                  tw.score = Array.from(mine); // decide the next step on the GPU's exact scores
                });
              }
              peak = Math.max(peak, sum(twins.map((tw) => sum(tw.pages.map((p) => p.pos.length)))));
            },
          });
          twins.forEach((tw, l) => assertClose(outs[l], tw.out, TOL[dtype], `out ${l} ${label}`));
          const st = await cache.stats();
          assert.equal(st.readTokens, sum(twins.map((tw) => tw.reads)), `reads ${label}`);
          assert.equal(st.peakTokens, peak, `peak ${label}`);
        }),
        fcParams(dtype === "f32" ? 16 : 6),
      );
    },
  });
}

function sum(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

Deno.test({
  name: "createTovaCache and createH2oCache name the field of a bad option",
  ...GPU_TEST,
  fn: () => {
    const base = { layers: 1, batch: 1, kvHeads: 1, headDim: 4 };
    assert.throws(
      () => createTovaCache(gpu, { ...base, budget: 0 }),
      /RangeError: createTovaCache: budget must be an integer >= 1, got 0/,
    );
    assert.throws(
      () => createH2oCache(gpu, { ...base, budget: 8, recent: 9 }),
      /RangeError: createH2oCache: recent must be <= budget \(8\), got 9/,
    );
    assert.throws(
      () => createH2oCache(gpu, { ...base, budget: 8, recent: -1 }),
      /createH2oCache: recent must be an integer >= 0, got -1/,
    );
  },
});
