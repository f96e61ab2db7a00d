import assert from "node:assert/strict";
import fc from "fast-check";
import {
  HYPERSCALE_COLUMNS,
  hyperscaleCsv,
  type HyperscalePolicy,
  runHyperscale,
} from "../../src/eval/hyperscale.ts";
import { type KvTrace, traceBudgets, TracedKvCache } from "../../src/eval/kv_trace.ts";
import { paretoFrontier } from "../../src/eval/pareto.ts";
import { type Task, taskVocab, TOKENS } from "../../src/eval/tasks.ts";
import { createCacheFor, generate, type GenerateResult } from "../../src/generate.ts";
import { parseConfig } from "../../src/model/config.ts";
import { createModel, type Model } from "../../src/model/model.ts";
import { fcParams, gpu, GPU_TEST } from "../_util.ts";

function tinyModel(): Model {
  return createModel(
    gpu,
    parseConfig({
      model_type: "qwen3",
      hidden_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 8,
      intermediate_size: 48,
      vocab_size: taskVocab().size,
      max_position_embeddings: 512,
      eos_token_id: TOKENS.EOS,
      dms_window_size: 4,
      dms_paged_attention_block_size: 2,
      dms_alpha_scale: 3,
      dms_initial_alpha_offset: 0,
    }, "tiny"),
    { seed: 11 },
  );
}

async function drain(gen: AsyncGenerator<unknown, GenerateResult>): Promise<GenerateResult> {
  while (true) {
    const r = await gen.next();
    if (r.done) return r.value;
  }
}

Deno.test("traceBudgets counts reads over decode steps only and peaks per group of rows", () => {
  // 1 layer, 2 rows, 1 KV head: a prefill step then two decode steps
  const trace: KvTrace = {
    layers: 1,
    batch: 2,
    kvHeads: 1,
    decode: [false, true, true],
    lengths: [[5, 5], [6, 3], [4, 4]].map((x) => Int32Array.from(x)),
  };
  const b = traceBudgets(trace);
  assert.equal(b.reads, 6 + 3 + 4 + 4);
  assert.equal(b.decodeSteps, 2);
  assert.equal(b.peak, 10);
  assert.deepEqual(b.groupPeaks, [6, 5]);
  assert.deepEqual(b.rowReads, [10, 7]);
  assert.deepEqual(traceBudgets(trace, 2).groupPeaks, [10]);
  assert.throws(
    () => traceBudgets(trace, 3),
    /groupRows must be a positive divisor of the batch 2/,
  );
  const bad = { ...trace, lengths: [Int32Array.from([1])] };
  assert.throws(() => traceBudgets(bad), /step 0 has 1 lengths, expected layers·pages = 2/);
});

Deno.test({
  name:
    "TracedKvCache: reads and peak recomputed from the recorded lengths equal the cache counters",
  ...GPU_TEST,
  fn: async () => {
    const model = tinyModel();
    try {
      const P = 24, B = 3, L = 7, layers = 2, Hkv = 2;
      const prompts = Array.from(
        { length: B },
        (_, b) => Array.from({ length: P }, (_, i) => 16 + ((i * 7 + b * 3) % 100)),
      );
      for (const policy of ["dense", "dms"] as const) {
        using cache = new TracedKvCache(createCacheFor(model, B, policy));
        const { stats } = await drain(
          generate(model, prompts, {
            maxTokens: L,
            cache,
            eosTokenIds: [],
            prefillChunk: 10, // three prefill chunks: 10, 10, 4
            readbackEvery: 3,
          }),
        );
        const trace = await cache.trace();
        assert.deepEqual(trace.decode, [false, false, false, ...Array(L - 1).fill(true)]);
        const b = traceBudgets(trace, B);
        assert.equal(b.reads, stats.readTokens, `${policy}: reads`);
        assert.equal(b.decodeSteps, stats.decodeSteps, `${policy}: decode steps`);
        assert.equal(b.peak, stats.peakTokens, `${policy}: peak`);
        assert.deepEqual(b.groupPeaks, [stats.peakTokens]);
        assert.deepEqual(
          [...trace.lengths.at(-1)!],
          stats.lengths.flat(),
          `${policy}: last lengths`,
        );
        if (policy === "dense") {
          // every page holds every token: after decode step i it holds P + i
          const pages = layers * B * Hkv;
          let reads = 0;
          for (let i = 1; i < L; i++) reads += pages * (P + i);
          assert.equal(b.reads, reads);
          assert.equal(b.peak, pages * (P + L - 1));
          assert.deepEqual(b.rowReads, Array(B).fill(reads / B));
        } else {
          assert.ok(b.peak <= layers * B * Hkv * (P + L - 1));
        }
      }
    } finally {
      model.dispose();
    }
  },
});

Deno.test("paretoFrontier keeps exactly the non-dominated points (brute-force dominance)", () => {
  const point = fc.record({
    cost: fc.integer({ min: 0, max: 12 }),
    accuracy: fc.integer({ min: 0, max: 8 }).map((x) => x / 8),
  });
  fc.assert(
    fc.property(fc.array(point, { maxLength: 30 }), (pts) => {
      const front = paretoFrontier(pts);
      const dominated = (p: { cost: number; accuracy: number }) =>
        pts.some((q) =>
          q.cost <= p.cost && q.accuracy >= p.accuracy &&
          (q.cost < p.cost || q.accuracy > p.accuracy)
        );
      // one representative per distinct non-dominated (cost, accuracy): the first in input order
      const expected = pts.filter((p, i) =>
        !dominated(p) &&
        pts.findIndex((q) => q.cost === p.cost && q.accuracy === p.accuracy) === i
      );
      assert.deepEqual(new Set(front), new Set(expected));
      for (let i = 1; i < front.length; i++) {
        assert.ok(front[i].cost > front[i - 1].cost && front[i].accuracy > front[i - 1].accuracy);
      }
    }),
    fcParams(300),
  );
  assert.throws(() => paretoFrontier([{ cost: NaN, accuracy: 1 }]), /point 0 needs a finite/);
});

Deno.test({
  name: "runHyperscale: the same seed gives the same CSV; dense budgets match the closed form",
  ...GPU_TEST,
  fn: async () => {
    const model = tinyModel();
    try {
      const task: Task = { kind: "kv", length: 20, pairs: 1 };
      const policies: HyperscalePolicy[] = [
        { policy: "dense", compression: 1, model, cache: "dense" },
        { policy: "dms", compression: 2, label: "tiny", model, cache: "dms" },
      ];
      const grid = { chains: [1, 2], maxTokens: [3] };
      const progress: number[] = [];
      const opts = { task, samples: 3, seed: 5, batchRows: 4 };
      const a = await runHyperscale(policies, grid, {
        ...opts,
        onProgress: (p) => progress.push(p.config),
      });
      const b = await runHyperscale(policies, grid, opts);
      const csv = hyperscaleCsv(a.rows);
      assert.equal(csv, hyperscaleCsv(b.rows));
      // one report per batch: configurations in order, each reported at least once
      assert.ok(progress.every((c, i) => i === 0 || c >= progress[i - 1]));
      assert.deepEqual([...new Set(progress)], [0, 1, 2, 3]);
      const lines = csv.trim().split("\n");
      assert.equal(lines[0], HYPERSCALE_COLUMNS.join(","));
      assert.equal(lines.length, 5);
      assert.deepEqual(a.rows.map((r) => [r.policy, r.chains]), [
        ["dense", 1],
        ["dense", 2],
        ["dms", 1],
        ["dms", 2],
      ]);
      const pagesPerChain = 2 * 2; // layers · KV heads
      for (const r of a.rows.filter((r) => r.policy === "dense")) {
        // each problem's W chains: after decode steps 1 and 2 every page holds 21 and 22 entries
        assert.equal(r.peak_kv_tokens, r.chains * pagesPerChain * 22);
        assert.equal(r.peak_kv_tokens_max, r.peak_kv_tokens);
        assert.equal(r.kv_reads, r.chains * pagesPerChain * (21 + 22));
        assert.equal(r.compression_ratio, 1);
      }
      for (const r of a.rows.filter((r) => r.policy === "dms")) {
        assert.ok(r.peak_kv_tokens <= r.chains * pagesPerChain * 22);
        assert.ok(r.accuracy >= 0 && r.accuracy <= 1);
      }
      await assert.rejects(
        () => runHyperscale(policies, { chains: [0], maxTokens: [3] }, opts),
        /grid.chains must hold integers >= 1, got 0/,
      );
    } finally {
      model.dispose();
    }
  },
});
