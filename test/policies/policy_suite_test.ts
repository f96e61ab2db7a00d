/**
 * One suite, every policy (DESIGN "Testing layers" 2, STYLE 10): each cache policy runs through
 * the same fast-check property against the dense f64 oracle with the SPEC §5.1 visibility
 * mask (`pagedAttentionReference`, marks from `oracle.marksFromDecisions`), over random
 * decisions, block sizes, GQA, chunkings (prefill and decode) and left padding, in both dtypes;
 * then the page lengths against the policy's retained count. A new policy adds one entry to
 * POLICIES. Policy-specific boundaries (DMS window edges, flags, slot recycling) live beside
 * the policy (test/dms/dms_cache_test.ts).
 *
 * Tolerances vs the f64 oracle: f32 storage and math: TOL.f32; f16 storage (inputs rounded to
 * f16, output stored as f16): TOL.f16.
 */

import fc from "fast-check";
import assert from "node:assert/strict";
import type { KvCache } from "../../src/cache/kv_cache.ts";
import { createDmsCache } from "../../src/dms/dms_cache.ts";
import { retainedCount } from "../../src/dms/oracle.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import { createStreamingLlmCache } from "../../src/policies/streaming_llm.ts";
import { createH2oCache } from "../../src/policies/h2o.ts";
import { createTovaCache } from "../../src/policies/tova.ts";
import { createQuestCache } from "../../src/policies/quest.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, TOL } from "../_util.ts";
import { chunking, expected, feed, makeProblem, type Problem } from "../cache/harness.ts";

/** Cache sizes a policy entry builds its cache from. */
interface Sizes {
  batch: number;
  kvHeads: number;
  headDim: number;
  dtype: "f32" | "f16";
  /** In [0, 1]: where the block size falls in the policy's allowed range. */
  bsFrac: number;
  /** W drawn by the property (policies with a fixed window ignore it). */
  W: number;
  partitionKeys?: number;
}

/** One policy under test. */
interface PolicyEntry {
  name: string;
  create(s: Sizes): KvCache;
  /** The oracle's window W and whether decisions mark keys (false: dense, no marks). */
  window(s: Sizes): number;
  usesDecisions: boolean;
  /** Live entries of a page with decisions `d` after position t (no padding). */
  retained(d: Int32Array, t: number, s: Sizes): number;
  /**
   * The oracle's decisions `[B, Hkv, T]` when the policy's visibility is not the problem's
   * decisions (StreamingLLM: sinks unmarked, the rest marked; mark(i) = d(i+1)).
   */
  oracleDecisions?(pr: Problem, s: Sizes): Int32Array;
}

const blockSize = (s: Sizes, max: number) => Math.min(max, 1 + Math.floor(s.bsFrac * max));

function dms(fixedW?: number): PolicyEntry {
  const w = (s: Sizes) => fixedW ?? s.W;
  return {
    name: fixedW === undefined ? "dms (random W)" : `dms W=${fixedW}`,
    create: (s) =>
      createDmsCache(gpu, {
        layers: 1,
        batch: s.batch,
        kvHeads: s.kvHeads,
        headDim: s.headDim,
        window: w(s),
        blockSize: blockSize(s, w(s) + 1),
        dtype: s.dtype,
        preallocateTokens: 2,
        partitionKeys: s.partitionKeys,
      }),
    window: w,
    usesDecisions: true,
    retained: (d, t, s) => retainedCount(d, t, w(s)),
  };
}

/**
 * StreamingLLM with `sinks` and recent = W + 1 (budget sinks + W + 1): the §5.1 oracle with
 * sinks unmarked, every later real token marked, window W.
 */
function streaming(sinks: number): PolicyEntry {
  return {
    name: `streaming sinks=${sinks}`,
    create: (s) =>
      createStreamingLlmCache(gpu, {
        layers: 1,
        batch: s.batch,
        kvHeads: s.kvHeads,
        headDim: s.headDim,
        budget: sinks + s.W + 1,
        sinks,
        blockSize: blockSize(s, 8),
        dtype: s.dtype,
        preallocateTokens: 2,
        partitionKeys: s.partitionKeys,
      }),
    window: (s) => s.W,
    usesDecisions: true,
    retained: (_d, t, s) => Math.min(t + 1, sinks + s.W + 1),
    oracleDecisions: (pr) => {
      const { B, Hkv, T } = pr, d = new Int32Array(B * Hkv * T);
      for (let p = 0; p < B * Hkv; p++) {
        const b = Math.floor(p / Hkv);
        const pad = pr.mask ? pr.mask.subarray(b * T, (b + 1) * T).indexOf(1) : 0;
        for (let i = Math.max(pad, 0); i + 1 < T; i++) d[p * T + i + 1] = i - pad >= sinks ? 1 : 0;
      }
      return d;
    },
  };
}

/**
 * A score-based policy whose budget (64) exceeds every problem's length (T ≤ 44): it never
 * evicts, so it must equal dense attention while its `probs` output runs on every decode step.
 * Its evictions are checked against its CPU rule in score_evict_test.ts.
 */
function unbound(name: "tova" | "h2o"): PolicyEntry {
  const create = name === "tova" ? createTovaCache : createH2oCache;
  return {
    name: `${name} (budget above T)`,
    create: (s) =>
      create(gpu, {
        layers: 1,
        batch: s.batch,
        kvHeads: s.kvHeads,
        headDim: s.headDim,
        budget: 64,
        blockSize: blockSize(s, 8),
        dtype: s.dtype,
        preallocateTokens: 2,
        partitionKeys: s.partitionKeys,
      }),
    window: () => 0,
    usesDecisions: false,
    retained: (_d, t) => t + 1,
  };
}

/**
 * Quest with chunks of W keys and topK 64 (more chunks than any problem has): every chunk is
 * selected, so it must equal dense attention while its bounds and selection run on every
 * decode step. Its selection of fewer chunks is checked against its CPU rule in quest_test.ts.
 */
const questAll: PolicyEntry = {
  name: "quest (topK above the chunks)",
  create: (s) =>
    createQuestCache(gpu, {
      layers: 1,
      batch: s.batch,
      kvHeads: s.kvHeads,
      headDim: s.headDim,
      chunk: s.W,
      topK: 64,
      blockSize: blockSize(s, 8),
      dtype: s.dtype,
      preallocateTokens: 2,
      partitionKeys: s.partitionKeys,
    }),
  window: () => 0,
  usesDecisions: false,
  retained: (_d, t) => t + 1,
};

/** Every policy; a new one adds a line here. */
const POLICIES: PolicyEntry[] = [
  {
    name: "dense",
    create: (s) =>
      createDenseCache(gpu, {
        layers: 1,
        batch: s.batch,
        kvHeads: s.kvHeads,
        headDim: s.headDim,
        blockSize: blockSize(s, 8),
        dtype: s.dtype,
        preallocateTokens: 2,
        partitionKeys: s.partitionKeys,
      }),
    window: () => 0,
    usesDecisions: false,
    retained: (_d, t) => t + 1,
  },
  dms(),
  dms(1),
  dms(16),
  streaming(0),
  streaming(3),
  unbound("tova"),
  unbound("h2o"),
  questAll,
];

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

/** The oracle's view of the problem: the dense policy ignores decisions (nothing marked). */
function seenBy(policy: PolicyEntry, pr: Problem, s: Sizes): Problem {
  if (policy.oracleDecisions) return { ...pr, d: policy.oracleDecisions(pr, s) };
  return policy.usesDecisions ? pr : { ...pr, d: new Int32Array(pr.d.length) };
}

for (const policy of POLICIES) {
  for (const dtype of FLOAT_DTYPES) {
    Deno.test({
      name:
        `${policy.name} cache (${dtype}) equals dense §5.1 attention over random decisions, block sizes, GQA, chunkings and left padding`,
      ...GPU_TEST,
      fn: async () => {
        await fc.assert(
          fc.asyncProperty(arbCase, async (c) => {
            const sizes: Sizes = {
              batch: c.B,
              kvHeads: c.Hkv,
              headDim: c.D,
              dtype,
              bsFrac: c.bsFrac,
              W: c.W,
              partitionKeys: c.split,
            };
            const pr = makeProblem({ ...c, f16: dtype === "f16" });
            using cache = policy.create(sizes);
            const chunks = chunking(c.T, c.sizes);
            const [out] = await feed(cache, [pr], chunks);
            const W = policy.window(sizes);
            const label = `${policy.name} ${JSON.stringify({ ...c, chunks })}`;
            assertClose(out, expected(seenBy(policy, pr, sizes), W), TOL[dtype], `out ${label}`);
            const { lengths } = await cache.stats();
            lengths[0].forEach((len, p) => {
              const b = Math.floor(p / c.Hkv);
              const pad = pr.mask ? pr.mask.subarray(b * c.T, (b + 1) * c.T).indexOf(1) : 0;
              const d = seenBy(policy, pr, sizes).d.subarray(p * c.T, (p + 1) * c.T);
              // Padding shifts the page's tokens: its real decisions start at `pad`.
              const want = pad < 0 ? 0 : policy.retained(d.subarray(pad), c.T - 1 - pad, sizes);
              assert.equal(len, want, `length of page ${p}, ${label}`);
            });
          }),
          fcParams(dtype === "f32" ? 14 : 6),
        );
      },
    });
  }
}
