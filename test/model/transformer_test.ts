import fc from "fast-check";
import assert from "node:assert/strict";
import { type ModelConfig, parseConfig } from "../../src/model/config.ts";
import { createModel, exportWeights, loadModel, saveModel } from "../../src/model/model.ts";
import { loadReferenceModel, teacherForward, trainForward } from "../../src/model/reference.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";

/** A tiny random config (fast-check). */
const tinyConfig = fc.record({
  modelType: fc.constantFrom("qwen3", "llama"),
  kv: fc.integer({ min: 1, max: 2 }),
  group: fc.integer({ min: 1, max: 3 }),
  headDim: fc.constantFrom(4, 8, 16),
  layers: fc.integer({ min: 1, max: 2 }),
  separateAlpha: fc.boolean(),
  perLayer: fc.boolean(),
  tied: fc.boolean(),
  bias: fc.boolean(),
  window: fc.integer({ min: 2, max: 8 }),
}).map((r): ModelConfig =>
  parseConfig({
    model_type: r.modelType,
    hidden_size: 24,
    num_hidden_layers: r.layers,
    num_attention_heads: r.kv * r.group,
    num_key_value_heads: r.kv,
    head_dim: r.headDim,
    intermediate_size: 40,
    vocab_size: 50,
    max_position_embeddings: 256,
    rope_theta: 10000,
    rms_norm_eps: 1e-6,
    tie_word_embeddings: r.tied,
    attention_bias: r.bias,
    dms_window_size: r.window,
    dms_paged_attention_block_size: 1,
    dms_separate_alpha: r.separateAlpha,
    dms_alpha_per: r.perLayer ? "layer" : "head",
    dms_alpha_scale: 3,
    dms_initial_alpha_offset: 0,
    dms_tau: 0.5,
  }, "tiny")
);

function positions(B: number, T: number): Tensor<"i32"> {
  return Tensor.fromArray(gpu, Array.from({ length: B * T }, (_, i) => i % T), [B, T], "i32");
}

Deno.test({
  name: "teacher-mode logits of the GPU decoder equal the CPU reference model",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        tinyConfig,
        fc.integer({ min: 1, max: 2 }),
        fc.integer({ min: 1, max: 13 }),
        fc.integer(),
        async (cfg, B, T, seed) => {
          const model = createModel(gpu, cfg, { seed });
          try {
            const ref = loadReferenceModel(cfg, await exportWeights(model));
            const ids = Array.from(
              { length: B },
              (_, b) => Array.from(randomArray(T, seed + b, 0, cfg.vocabSize), Math.floor),
            );
            using idt = Tensor.fromArray(gpu, ids.flat(), [B, T], "i32");
            using pos = positions(B, T);
            using logits = model.forward(idt, { mode: "teacher", positions: pos })!;
            const expect = teacherForward(ref, ids);
            assertClose(
              await logits.toArray(),
              expect.logits,
              { atol: 1e-4, rtol: 1e-4 },
              "teacher logits",
            );
          } finally {
            model.dispose();
          }
        },
      ),
      fcParams(8),
    );
  },
});

Deno.test({
  name:
    "train-mode logits and Gumbel-sigmoid decisions of the GPU decoder equal the CPU reference model",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        tinyConfig,
        fc.integer({ min: 1, max: 2 }),
        fc.integer({ min: 1, max: 13 }),
        fc.integer(),
        async (cfg, B, T, seed) => {
          const model = createModel(gpu, cfg, { seed });
          const L = cfg.numLayers, Hkv = cfg.numKvHeads;
          const noise = randomArray(L * B * Hkv * T, seed + 7, -2, 2);
          const noiseT = Array.from(
            { length: L },
            (_, l) =>
              Tensor.fromArray(gpu, noise.subarray(l * B * Hkv * T, (l + 1) * B * Hkv * T), [
                B,
                Hkv,
                T,
              ]) as Tensor<"f32">,
          );
          const st: Tensor[] = [];
          try {
            const ref = loadReferenceModel(cfg, await exportWeights(model));
            const ids = Array.from(
              { length: B },
              (_, b) => Array.from(randomArray(T, seed + b, 0, cfg.vocabSize), Math.floor),
            );
            using idt = Tensor.fromArray(gpu, ids.flat(), [B, T], "i32");
            using pos = positions(B, T);
            using logits = model.forward(idt, {
              mode: "train",
              positions: pos,
              noise: noiseT,
              capture: (name, _l, t) => (name === "z" ? st.push(t) : t.dispose()),
            })!;
            const expect = trainForward(ref, ids, noise, 0.5);
            const z = new Float64Array(L * B * Hkv * T);
            for (let l = 0; l < L; l++) {
              z.set(await st[l].toArray(), l * B * Hkv * T);
            }
            // a flipped decision near z = 0 would change the logits; the property only checks exact agreement elsewhere
            if (expect.decisionLogitsNoisy.some((v) => Math.abs(v) < 1e-3)) return;
            assertClose(z, expect.decisionLogitsNoisy, { atol: 1e-3, rtol: 1e-4 }, "z");
            assertClose(
              await logits.toArray(),
              expect.logits,
              { atol: 1e-4, rtol: 1e-4 },
              "train logits",
            );
          } finally {
            model.dispose();
            for (const t of [...noiseT, ...st]) t.dispose();
          }
        },
      ),
      fcParams(8),
    );
  },
});

Deno.test({
  name: "a saved model loads back bit-exact and gives the same logits",
  ...GPU_TEST,
  fn: async () => {
    const cfg = fc.sample(tinyConfig, { seed: 5, numRuns: 1 })[0];
    const dir = await Deno.makeTempDir();
    const model = createModel(gpu, cfg, { seed: 11 });
    await saveModel(model, dir);
    const again = await loadModel(gpu, dir);
    try {
      const a = await exportWeights(model), b = await exportWeights(again);
      assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
      for (const [k, v] of a) assert.deepEqual(b.get(k)!.data, v.data, k);
      using ids = Tensor.fromArray(gpu, [1, 2, 3], [1, 3], "i32");
      using pos = positions(1, 3);
      using la = model.forward(ids, { mode: "teacher", positions: pos })!;
      using lb = again.forward(ids, { mode: "teacher", positions: pos })!;
      assert.deepEqual(await la.toArray(), await lb.toArray());
    } finally {
      model.dispose();
      again.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
