import assert from "node:assert/strict";
import { parseConfig } from "../../src/model/config.ts";
import {
  createModel,
  exportWeights,
  loadModel,
  type Model,
  saveModel,
} from "../../src/model/model.ts";
import { generate, type GenerateResult } from "../../src/generate.ts";
import { generatorSource, textFileSource } from "../../src/train/data.ts";
import { readOptimizerState } from "../../src/train/checkpoint.ts";
import { retrofit, type RetrofitOptions } from "../../src/train/retrofit.ts";
import { bitsEqual, disposing, gpu, GPU_TEST } from "../_util.ts";

const plain = parseConfig({
  model_type: "qwen3",
  hidden_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  intermediate_size: 48,
  vocab_size: 40,
  max_position_embeddings: 128,
});

const data = () =>
  generatorSource(
    (_i, rng) => Array.from({ length: 24 }, () => Math.floor(rng() * 40)),
    { batch: 2, seqLen: 24, seed: 7 },
  );

const fresh = (): Model => createModel(gpu, plain, { seed: 11, dtype: "f32" });

const base: RetrofitOptions = {
  steps: 24,
  schedule: { initialCr: 2, finalCr: 2, finalStep: 0 }, // α* = 0.5 from step 0
  window: 4,
  lr: 2e-3,
  seed: 3,
};

async function drain(g: AsyncGenerator<unknown, GenerateResult>): Promise<GenerateResult> {
  while (true) {
    const r = await g.next();
    if (r.done) return r.value;
  }
}

Deno.test({
  name:
    "retrofit() with the adapter recipe: loss falls, closed fraction rises to the target, frozen weights bit-exact, checkpoint loads and generates with the DMS cache",
  ...GPU_TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "dms_retro_" });
    const model = fresh();
    using _ = disposing(model);
    try {
      const before = await exportWeights(model);
      const seen: number[] = [];
      const r = await retrofit(model, data(), {
        ...base,
        checkpointDir: dir,
        logEvery: 4,
        onStep: (s) => void seen.push(s.step),
      });
      assert.deepEqual(seen, [3, 7, 11, 15, 19, 23]);
      const h = r.history;
      assert.equal(h.length, 6);
      for (const s of h) {
        assert.equal(s.alphaTarget, 0.5);
        assert.equal(s.targetCr, 2);
        assert.ok(s.tokensPerSecond > 0 && s.stepsPerSecond > 0);
        assert.ok(Number.isFinite(s.lossDistill) && Number.isFinite(s.gradNorm));
      }
      const loss = (i: number) => h[i].lossDistill + h[i].lossCr;
      assert.ok(
        loss(h.length - 1) < loss(0),
        `loss fell: ${h.map((s) => (s.lossDistill + s.lossCr).toFixed(4)).join(" ")}`,
      );
      assert.ok(h[0].fracClosed < 0.25, `starts near σ(−5): ${h[0].fracClosed}`);
      assert.ok(
        h[h.length - 1].fracClosed > 0.35,
        `closed fraction rose toward 0.5: ${h.map((s) => s.fracClosed.toFixed(3)).join(" ")}`,
      );
      // the model is now a DMS model with adapters; every base weight is unchanged
      assert.ok(model.config.isDms && model.config.dms.separateAlpha);
      assert.equal(model.config.dms.window, 4);
      assert.equal(plain.isDms, false, "the caller's config object is not changed");
      const after = await exportWeights(model);
      for (const [name, t] of before) bitsEqual(after.get(name)!.data, t.data, name);
      assert.equal(after.size, before.size + 4); // 2 layers × (dms_proj_alpha, _norm)
      const alpha = after.get("model.layers.0.self_attn.dms_proj_alpha.weight")!.data;
      assert.ok(alpha.some((x) => x !== 0), "Wα trained");

      // the final checkpoint loads with loadModel and generates with the DMS cache
      assert.equal(r.checkpoint, `${dir}/checkpoint-24`);
      const loaded = await loadModel(gpu, r.checkpoint!, { dtype: "f32" });
      using _l = disposing(loaded);
      assert.ok(loaded.config.isDms && loaded.config.dms.separateAlpha);
      assert.equal(loaded.config.dms.compressionRatio, 2);
      const prompt = [Array.from({ length: 20 }, (_, i) => (i * 7) % 40)];
      const opts = { maxTokens: 12, cache: "dms" as const };
      const a = await drain(generate(loaded, prompt, opts));
      const b = await drain(generate(model, prompt, opts));
      assert.equal(a.tokens[0].length, 12);
      assert.deepEqual(a.tokens, b.tokens);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "retrofit() resumed from a checkpoint equals the uninterrupted run (bit-exact)",
  ...GPU_TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "dms_retro_" });
    try {
      const opts: RetrofitOptions = {
        ...base,
        steps: 6,
        schedule: { initialCr: 1, finalCr: 4, finalStep: 4 },
        logEvery: 100,
      };
      const whole = fresh(), first = fresh(), second = fresh();
      using _ = disposing(whole, first, second);
      await retrofit(whole, data(), { ...opts, checkpointDir: `${dir}/a` });
      await retrofit(first, data(), { ...opts, steps: 3, checkpointDir: `${dir}/b` });
      const r = await retrofit(second, data(), {
        ...opts,
        checkpointDir: `${dir}/b`,
        resume: true,
      });
      assert.equal(r.steps, 6);
      assert.equal(r.history.length, 1, "only the last step is reported (logEvery 100)");
      assert.equal(r.history[0].step, 5);
      const want = await exportWeights(whole), got = await exportWeights(second);
      for (const [name, t] of want) bitsEqual(got.get(name)!.data, t.data, name);
      const names = [0, 1].flatMap((l) => [
        `model.layers.${l}.self_attn.dms_proj_alpha.weight`,
        `model.layers.${l}.self_attn.dms_proj_alpha_norm.weight`,
      ]).sort();
      const oa = await readOptimizerState(`${dir}/a/checkpoint-6`, names);
      const ob = await readOptimizerState(`${dir}/b/checkpoint-6`, names);
      assert.equal(ob.step, 6);
      oa.m.forEach((m, i) => bitsEqual(ob.m[i], m, `m ${names[i]}`));
      oa.v.forEach((v, i) => bitsEqual(ob.v[i], v, `v ${names[i]}`));
      // a different seed is a different run (the test can fail)
      const other = fresh();
      using _o = disposing(other);
      await retrofit(other, data(), { ...opts, seed: 4 });
      const diff = await exportWeights(other);
      const k = "model.layers.0.self_attn.dms_proj_alpha.weight";
      assert.notDeepEqual([...diff.get(k)!.data], [...want.get(k)!.data]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "retrofit() borrowed-neuron variant: q_proj rows phase out to 0, then DMS neuron mode with a frozen teacher",
  ...GPU_TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "dms_retro_" });
    const model = fresh();
    using _ = disposing(model);
    try {
      const orig = await exportWeights(model);
      await assert.rejects(
        retrofit(fresh(), data(), { ...base, decisions: "neuron" }),
        /borrowed-neuron decisions need q_proj trainable/,
      );
      const r = await retrofit(model, data(), {
        ...base,
        steps: 4,
        trainable: "all",
        decisions: "neuron",
        neuronPhaseIn: 2,
        checkpointEvery: 1,
        checkpointDir: dir,
      });
      // during the phase-in the student is plain (no compression term)
      assert.equal(r.history[0].lossCr, 0);
      assert.equal(r.history[0].targetCr, 1);
      assert.equal(r.history[2].alphaTarget, 0.5);
      const cfg1 = JSON.parse(await Deno.readTextFile(`${dir}/checkpoint-1/config.json`));
      assert.equal(cfg1.dms_window_size, undefined, "step 1: still plain");
      const cfg2 = JSON.parse(await Deno.readTextFile(`${dir}/checkpoint-2/config.json`));
      assert.equal(cfg2.dms_separate_alpha, false, "step 2: DMS, borrowed neuron");
      // the rows follow 1 − (s + 1)/K after each phase-in step: half, then exactly 0
      const H = 32, D = 8, G = 2;
      const qOf = async (path: string) => {
        const m = await loadModel(gpu, path, { dtype: "f32" });
        const q = (await exportWeights(m)).get("model.layers.1.self_attn.q_proj.weight")!.data;
        m.dispose();
        return q;
      };
      const q0 = orig.get("model.layers.1.self_attn.q_proj.weight")!.data;
      const q1 = await qOf(`${dir}/checkpoint-1`), q2 = await qOf(`${dir}/checkpoint-2`);
      for (const g of [0, 1]) {
        const r0 = ((g * G) * D + D - 1) * H;
        bitsEqual(q1.slice(r0, r0 + H), q0.slice(r0, r0 + H).map((x) => x * 0.5), `row ${g} half`);
        assert.deepEqual([...q2.slice(r0, r0 + H)], new Array(H).fill(0), `row ${g} zero`);
      }
      // other rows trained
      assert.ok(q2.some((x, i) => x !== q0[i] && x !== 0));
      assert.ok(model.config.isDms && !model.config.dms.separateAlpha);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "retrofit() takes a Llama folder loaded with loadModel and text through textFileSource",
  ...GPU_TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "dms_retro_" });
    try {
      const llama = parseConfig({
        model_type: "llama",
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        intermediate_size: 48,
        vocab_size: 64,
        max_position_embeddings: 128,
        tie_word_embeddings: true,
      });
      const src = createModel(gpu, llama, { seed: 5, dtype: "f32" });
      await saveModel(src, `${dir}/base`);
      src.dispose();
      const model = await loadModel(gpu, `${dir}/base`, { dtype: "f32" });
      using _ = disposing(model);
      const text = Array.from({ length: 40 }, (_, i) => `line ${i} of the corpus`).join("\n\n");
      await Deno.writeTextFile(`${dir}/corpus.txt`, text);
      const tok = {
        encode: (t: string) => [...t].map((c) => c.charCodeAt(0) % 63 + 1),
        eosTokenIds: [0],
      };
      const data = await textFileSource(`${dir}/corpus.txt`, tok, {
        batch: 2,
        seqLen: 32,
        seed: 42,
      });
      const r = await retrofit(model, data, {
        ...base,
        steps: 3,
        checkpointDir: `${dir}/run`,
      });
      assert.equal(r.history.length, 3);
      const again = await loadModel(gpu, `${dir}/run/checkpoint-3`, { dtype: "f32" });
      using _a = disposing(again);
      assert.equal(again.config.modelType, "llama");
      assert.ok(again.config.isDms && again.config.dms.separateAlpha);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
