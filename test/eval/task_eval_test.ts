import assert from "node:assert/strict";
import type { KvCache, KvCacheStats } from "../../src/cache/kv_cache.ts";
import { evaluateTask, evaluateTaskWith, type TaskRunner } from "../../src/eval/task_eval.ts";
import { generateTask, type Task, taskVocab, TOKENS } from "../../src/eval/tasks.ts";
import { createCacheFor } from "../../src/generate.ts";
import { parseConfig } from "../../src/model/config.ts";
import { createModel } from "../../src/model/model.ts";
import { gpu, GPU_TEST } from "../_util.ts";

function fakeStats(i: number, rows: number): KvCacheStats {
  return {
    tokensSeen: 40,
    lengths: [],
    liveTokens: 100 + i,
    peakTokens: 120 + 10 * i,
    readTokens: 1000 * (i + 1),
    decodeSteps: 3,
    liveBytes: 0,
    peakBytes: 0,
    allocatedBytes: 0,
    compressionRatio: 1 + i + rows / 100,
    compressionRatioDenseOverKept: 2 + i,
  };
}

/** A fake that answers from a table of known prompts, wrong on every sample index in `wrong`. */
function oracleRunner(
  task: Task,
  n: number,
  seed: number,
  wrong: Set<number>,
  calls: { rows: number; maxTokens: number; temperature?: number }[],
): TaskRunner {
  const table = new Map<string, { answer: number[]; index: number }>();
  generateTask(task, { count: n, seed }).forEach((s, index) =>
    table.set(s.prompt.join(), { answer: s.answer, index })
  );
  return (prompts, o) => {
    const i = calls.length;
    calls.push({
      rows: prompts.length,
      maxTokens: o.maxTokens,
      temperature: o.sampling.temperature,
    });
    assert.deepEqual(o.eosTokenIds, [TOKENS.EOS]);
    const seen = new Map<string, number>();
    const tokens = prompts.map((p) => {
      const k = seen.get(p.join()) ?? 0;
      seen.set(p.join(), k + 1);
      const known = table.get(p.join())!;
      assert.ok(known, "prompt not among the task's samples");
      if (!wrong.has(known.index)) return [...known.answer, 99].slice(0, o.maxTokens);
      // the 1st, 3rd, ... vote of a wrong sample is wrong, the others right
      return k % 2 === 0 ? [TOKENS.RESULT, 17, TOKENS.EOS] : known.answer;
    });
    return Promise.resolve({ tokens, stats: fakeStats(i, prompts.length) });
  };
}

Deno.test("evaluateTaskWith grades exact results and sums the cache accounting of every batch", async () => {
  const task: Task = { kind: "sum", length: 48, pairs: 4, terms: 2 };
  const calls: { rows: number; maxTokens: number; temperature?: number }[] = [];
  const wrong = new Set([0, 3, 4]);
  const progress: number[] = [];
  const r = await evaluateTaskWith(oracleRunner(task, 10, 5, wrong, calls), task, {
    samples: 10,
    seed: 5,
    batchRows: 4,
    onProgress: (p) => progress.push(p.done * 100 + p.correct),
  });
  assert.deepEqual(calls.map((c) => c.rows), [4, 4, 2]);
  assert.ok(calls.every((c) => c.maxTokens === 2 * 4 + 3 && c.temperature === 0));
  assert.equal(r.accuracy, 7 / 10);
  assert.deepEqual(r.correct.map((c, i) => c === !wrong.has(i)), Array(10).fill(true));
  assert.deepEqual(progress, [400 + 2, 800 + 5, 1000 + 7]); // wrong: 0 and 3 in batch 1, 4 in 2
  assert.equal(r.kvReads, 1000 + 2000 + 3000);
  assert.equal(r.decodeSteps, 9);
  assert.equal(r.peakKvTokens, 140);
  const crs = [1.04, 2.04, 3.02];
  assert.ok(Math.abs(r.compressionRatio - (4 * crs[0] + 4 * crs[1] + 2 * crs[2]) / 10) < 1e-12);
  const real = 2 * 100 + 3 * 101 + 4 * 102;
  assert.ok(Math.abs(r.compressionRatioDenseOverKept - real / (100 + 101 + 102)) < 1e-12);
  assert.equal(r.batches.length, 3);
});

Deno.test("votes repeat each prompt in the batch, sample with temperature and take the majority", async () => {
  const task: Task = { kind: "kv", length: 32, pairs: 2 };
  const calls: { rows: number; maxTokens: number; temperature?: number }[] = [];
  // sample 1's rows alternate wrong (even) / right (odd): 3 votes → 2 wrong, 4 votes → a tie
  const run3 = oracleRunner(task, 4, 9, new Set([1]), calls);
  const r3 = await evaluateTaskWith(run3, task, { samples: 4, seed: 9, votes: 3, batchRows: 7 });
  assert.deepEqual(calls.map((c) => c.rows), [6, 6]); // 2 prompts × 3 votes per batch
  assert.equal(calls[0].temperature, 1);
  assert.deepEqual(r3.correct, [true, false, true, true]);
  const r4 = await evaluateTaskWith(oracleRunner(task, 4, 9, new Set([1]), []), task, {
    samples: 4,
    seed: 9,
    votes: 4,
    temperature: 0.5,
  });
  assert.deepEqual(r4.correct, [true, false, true, true]); // tie → the first reached (wrong)
  await assert.rejects(
    () => evaluateTaskWith(run3, task, { samples: 0, seed: 1 }),
    /samples must be/,
  );
});

function tinyModel() {
  const v = taskVocab();
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
      vocab_size: v.size,
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

Deno.test({
  name: "evaluateTask on a tiny random model: accuracy in [0, 1], reads equal the dense cache's",
  ...GPU_TEST,
  fn: async () => {
    const model = tinyModel();
    try {
      const task: Task = { kind: "vartrack", length: 40, chains: 2, hops: 2 };
      const made: KvCache[] = [];
      const r = await evaluateTask(model, task, {
        samples: 5,
        seed: 3,
        batchRows: 3,
        maxTokens: 4,
        policy: (b) => {
          const c = createCacheFor(model, b, "dense");
          made.push(c);
          return c;
        },
      });
      assert.ok(r.accuracy >= 0 && r.accuracy <= 1);
      assert.equal(made.length, 2);
      // dense: decode step i (1..maxTokens-1) reads P + i entries per layer and page
      const pages = (B: number) => 2 * B * 2;
      const reads = (B: number) => pages(B) * [1, 2, 3].reduce((s, i) => s + 40 + i, 0);
      assert.equal(r.kvReads, reads(3) + reads(2));
      assert.equal(r.decodeSteps, 6);
      assert.equal(r.peakKvTokens, pages(3) * 43);
      assert.equal(r.compressionRatio, 1);
      assert.equal(r.compressionRatioDenseOverKept, 1);
      const dms = await evaluateTask(model, task, {
        samples: 5,
        seed: 3,
        policy: "dms",
        maxTokens: 4,
      });
      assert.ok(dms.compressionRatio >= 1 && dms.kvReads <= r.kvReads);
      assert.equal(dms.batches.length, 1);
      await assert.rejects(
        () => evaluateTask(model, task, { samples: 1, seed: 0, vocab: taskVocab({ keys: 200 }) }),
        /vocab_size 128 < task vocabulary 264/,
      );
    } finally {
      model.dispose();
    }
  },
});
