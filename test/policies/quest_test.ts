/**
 * Quest (src/policies/quest.ts) against its CPU twins: the chunk bound is an upper bound of q·k
 * for every key of the chunk (fast-check, exact in f64); and the GPU cache, over random
 * prefill chunkings, decode steps, left padding, GQA, chunk sizes and topK, holds exactly the
 * CPU chunk bounds of its keys and selects exactly the chunks `questSelect` picks at every
 * decode step (integer-valued q and k, so bounds are exact and ties are real ties, broken by
 * the rule; one or two layers, each with its own problem; the selection buffer is shared by the
 * layers in turn, so it is read for the last one, the others show in their outputs); every output equals f64 attention over the selected keys (prefill: dense); the
 * KV-read counter equals the selected keys summed over decode steps, layers and pages (SPEC §8: reads
 * = keys actually read), lengths and peak those of the dense cache.
 */

import fc from "fast-check";
import assert from "node:assert/strict";
import { decodeProbsReference } from "../../src/cache/paged_attention.ts";
import {
  createQuestCache,
  questBound,
  questChunkBounds,
  type QuestPolicy,
  questSelect,
} from "../../src/policies/quest.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, TOL } from "../_util.ts";
import { chunking, feed, makeProblem, type Problem } from "../cache/harness.ts";

Deno.test("questBound is an upper bound of q·k for every key of the chunk", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8 }).chain((D) =>
        fc.record({
          D: fc.constant(D),
          G: fc.integer({ min: 1, max: 4 }),
          keys: fc.array(
            fc.array(fc.double({ min: -100, max: 100, noNaN: true }), {
              minLength: D,
              maxLength: D,
            }),
            { minLength: 1, maxLength: 20 },
          ),
          q: fc.array(fc.double({ min: -100, max: 100, noNaN: true }), {
            minLength: 4 * D,
            maxLength: 4 * D,
          }),
        })
      ),
      ({ D, G, keys, q }) => {
        const qg = q.slice(0, G * D);
        const { min, max } = questChunkBounds(keys.flat(), D, keys.length);
        const u = questBound(qg, min, max);
        for (const k of keys) {
          // Same summation order as questBound: each term is bounded, rounding is monotone.
          let dot = 0;
          for (let i = 0; i < G * D; i++) dot += qg[i] * k[i % D];
          assert.ok(dot <= u, `q·k = ${dot} > bound ${u}`);
        }
      },
    ),
    fcParams(300),
  );
});

/** Integer-valued q and k in [-3, 3] (exact in f16, exact bounds and sums in f32). */
function integerProblem(pr: Problem): Problem {
  return {
    ...pr,
    q: pr.q.map((x) => Math.round(x * 1.5) + 0), // + 0: no -0
    k: pr.k.map((x) => Math.round(x * 3) + 0),
  };
}

/** f64 softmax attention of query t of page p's head g over the keys at `pos`, into out. */
function attend(pr: Problem, out: Float64Array, p: number, t: number, pos: readonly number[]) {
  const { G, D, T } = pr;
  const k = pos.flatMap((x) => Array.from(pr.k.subarray((p * T + x) * D, (p * T + x + 1) * D)));
  for (let g = 0; g < G; g++) {
    const row = ((p * G + g) * T + t) * D;
    const w = decodeProbsReference(
      pr.q.subarray(row, row + D),
      k,
      pos.map(() => 1),
      1,
      D,
      D ** -0.5,
    );
    pos.forEach((x, i) => {
      for (let d = 0; d < D; d++) out[row + d] += w[i] * pr.v[(p * T + x) * D + d];
    });
  }
}

const arb = fc.record({
  layers: fc.integer({ min: 1, max: 2 }),
  B: fc.integer({ min: 1, max: 2 }),
  Hkv: fc.integer({ min: 1, max: 2 }),
  G: fc.integer({ min: 1, max: 3 }),
  D: fc.constantFrom(3, 8, 16),
  chunk: fc.integer({ min: 1, max: 6 }),
  topK: fc.integer({ min: 0, max: 4 }),
  T: fc.integer({ min: 1, max: 44 }),
  prefill: fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 0, maxLength: 3 }),
  pads: fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 2, maxLength: 2 }),
  bs: fc.integer({ min: 1, max: 8 }),
  kernel: fc.constantFrom("split" as const, "tiled" as const),
  seed: fc.integer({ min: 0, max: 1 << 30 }),
});

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name:
      `quest cache (${dtype}) selects exactly the chunks of its CPU rule, attends over them only and counts only their keys as read`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(arb, async (c) => {
          // One problem per layer: the layers' bounds must not mix.
          const prs = Array.from({ length: c.layers }, (_, l) =>
            integerProblem(
              makeProblem({ ...c, seed: c.seed + 100 * l, pEvict: 0, f16: dtype === "f16" }),
            ));
          const { B, Hkv, G, D, T } = prs[0];
          using cache = createQuestCache(gpu, {
            layers: c.layers,
            batch: B,
            kvHeads: Hkv,
            headDim: D,
            chunk: c.chunk,
            topK: c.topK,
            blockSize: c.bs,
            dtype,
            preallocateTokens: 2,
            decodeKernel: c.kernel,
          });
          const policy = cache.policy as QuestPolicy;
          const pre = chunking(T, c.prefill.length ? c.prefill : [1]);
          const n0 = c.prefill.length ? Math.min(pre.length, c.prefill.length) : 0;
          const done = pre.slice(0, n0).reduce((a, b) => a + b, 0);
          const chunks = [...pre.slice(0, n0), ...chunking(T - done, [1])];
          const label = `${dtype} ${JSON.stringify({ ...c, chunks })}`;
          const mask = prs[0].mask;
          const pad = Array.from(
            { length: B },
            (_, b) => mask ? mask.subarray(b * T, (b + 1) * T).indexOf(1) : 0,
          );
          const wants = prs.map(() => new Float64Array(B * Hkv * G * T * D));
          let reads = 0, peak = 0;
          const outs = await feed(cache, prs, chunks, {
            reserve: true,
            after: async (t0, n) => {
              const decode = n === 1 && pad.every((f) => f >= 0 && f <= t0);
              let live = 0;
              for (const [l, pr] of prs.entries()) {
                const want = wants[l];
                const st = decode ? await policy.readState(l) : undefined;
                for (let p = 0; p < B * Hkv; p++) {
                  const f = pad[Math.floor(p / Hkv)];
                  for (let t = t0; t < t0 + n; t++) {
                    if (f < 0 || t < f) continue; // padding: output 0
                    const stored = Array.from({ length: t - f + 1 }, (_, s) => f + s);
                    if (!decode) {
                      attend(pr, want, p, t, stored);
                      continue;
                    }
                    const keys = pr.k.subarray((p * T + f) * D, (p * T + t + 1) * D);
                    const bnd = questChunkBounds(keys, D, c.chunk);
                    const nch = bnd.min.length / D, cap = policy.capacity;
                    const qp = Array.from(
                      { length: G * D },
                      (_, i) => pr.q[((p * G + Math.floor(i / D)) * T + t) * D + (i % D)],
                    );
                    const ub = Array.from({ length: nch }, (_, ch) =>
                      questBound(
                        qp,
                        bnd.min.subarray(ch * D, (ch + 1) * D),
                        bnd.max.subarray(ch * D, (ch + 1) * D),
                      ));
                    const sel = questSelect(ub, c.topK);
                    const at = `layer ${l} page ${p} t ${t} ${label}`;
                    for (let ch = 0; ch < nch; ch++) {
                      const row = (p * cap + ch) * 2 * D;
                      assert.deepEqual(
                        [...st!.bounds.subarray(row, row + 2 * D)].map((x) => x + 0),
                        [
                          ...bnd.min.subarray(ch * D, (ch + 1) * D),
                          ...bnd.max.subarray(ch * D, (ch + 1) * D),
                        ],
                        `bounds of chunk ${ch}, ${at}`,
                      );
                    }
                    // The selection buffer holds the last layer's (the layers take turns).
                    if (l === c.layers - 1) {
                      assert.deepEqual(
                        [...st!.select.subarray(p * cap, p * cap + nch)],
                        sel,
                        `selection ${at}`,
                      );
                    }
                    const read = stored.filter((_, s) => sel[Math.floor(s / c.chunk)] === 1);
                    reads += read.length;
                    attend(pr, want, p, t, read);
                  }
                  live += f < 0 ? 0 : Math.max(0, t0 + n - f);
                }
              }
              peak = Math.max(peak, live);
            },
          });
          outs.forEach((out, l) => assertClose(out, wants[l], TOL[dtype], `out ${l} ${label}`));
          const st = await cache.stats();
          assert.equal(st.readTokens, reads, `reads ${label}`);
          assert.equal(st.peakTokens, peak, `peak ${label}`);
        }),
        fcParams(dtype === "f32" ? 16 : 6),
      );
    },
  });
}

Deno.test({
  name: "createQuestCache names the field of a bad option",
  ...GPU_TEST,
  fn: () => {
    const base = { layers: 1, batch: 1, kvHeads: 1, headDim: 4 };
    assert.throws(
      () => createQuestCache(gpu, { ...base, chunk: 0 }),
      /RangeError: createQuestCache: chunk must be an integer >= 1, got 0/,
    );
    assert.throws(
      () => createQuestCache(gpu, { ...base, topK: -1 }),
      /RangeError: createQuestCache: topK must be an integer >= 0, got -1/,
    );
  },
});
