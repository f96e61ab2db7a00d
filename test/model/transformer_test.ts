import fc from "fast-check";
import assert from "node:assert/strict";
import { type ModelConfig, parseConfig } from "../../src/model/config.ts";
import { createModel, exportWeights, loadModel, saveModel } from "../../src/model/model.ts";
import { loadReferenceModel, teacherForward, trainForward } from "../../src/model/reference.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose, captureNamed, fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";

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
  name:
    "saveModel refuses, before writing anything, a config loadModel would refuse (window 1 = block 1)",
  ...GPU_TEST,
  fn: async () => {
    const base = fc.sample(tinyConfig, { seed: 5, numRuns: 1 })[0];
    const cfg = { ...base, dms: { ...base.dms, window: 1, blockSize: 1 } };
    const dir = `${await Deno.makeTempDir()}/student`;
    const model = createModel(gpu, cfg, { seed: 11 });
    try {
      await assert.rejects(
        () => saveModel(model, dir),
        (e: Error) =>
          e instanceof RangeError && e.message.includes(`${dir}/config.json would not load back`) &&
          e.message.includes("dms_window_size (1)"),
      );
      await assert.rejects(() => Deno.stat(dir), Deno.errors.NotFound);
    } finally {
      model.dispose();
    }
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

Deno.test({
  name: "prefill logits equal token-by-token decode logits through the dense and the DMS cache",
  ...GPU_TEST,
  fn: async () => {
    const { createDmsCache } = await import("../../src/dms/dms_cache.ts");
    await fc.assert(
      fc.asyncProperty(
        tinyConfig,
        fc.integer({ min: 2, max: 14 }),
        fc.integer(),
        fc.boolean(),
        async (cfg, T, seed, evict) => {
          const model = createModel(gpu, cfg, { seed });
          const mk = () =>
            createDmsCache(gpu, {
              layers: cfg.numLayers,
              batch: 1,
              kvHeads: cfg.numKvHeads,
              headDim: cfg.headDim,
              window: cfg.dms.window,
              blockSize: cfg.dms.blockSize,
              evict,
            });
          const ids = Array.from(randomArray(T, seed, 0, cfg.vocabSize), Math.floor);
          const a = mk(), b = mk();
          try {
            using idt = Tensor.fromArray(gpu, ids, [1, T], "i32");
            using pos = positions(1, T);
            const alphas = captureNamed("alpha");
            using all = model.forward(idt, {
              mode: "inference",
              positions: pos,
              cache: a,
              capture: alphas.capture,
            })!;
            const alpha = await alphas.values();
            // prefill and decode compute α through different kernels (|Δα| ≤ ~3e-6 measured):
            // an α within 1e-4 of 0 could evict in one and not the other, so skip it.
            if (evict && alpha.some((v) => Math.abs(v) < 1e-4)) return;
            const expect = await all.toArray();
            const V = cfg.vocabSize;
            for (let t = 0; t < T; t++) {
              using one = Tensor.fromArray(gpu, [ids[t]], [1, 1], "i32");
              using p = Tensor.fromArray(gpu, [t], [1, 1], "i32");
              await b.reserve(1);
              using lg = model.forward(one, { mode: "inference", positions: p, cache: b })!;
              assertClose(await lg.toArray(), expect.subarray(t * V, (t + 1) * V), {
                atol: 1e-4,
                rtol: 1e-4,
              }, `step ${t}`);
            }
            assert.deepEqual((await a.stats()).lengths, (await b.stats()).lengths);
          } finally {
            a.dispose();
            b.dispose();
            model.dispose();
          }
        },
      ),
      fcParams(6),
    );
  },
});

Deno.test({
  name: "an f16 model's teacher logits stay close to the CPU reference",
  ignore: !gpu.hasF16,
  ...GPU_TEST,
  fn: async () => {
    const cfg = fc.sample(tinyConfig, { seed: 9, numRuns: 1 })[0];
    const model = createModel(gpu, cfg, { seed: 4, dtype: "f16" });
    try {
      const ref = loadReferenceModel(cfg, await exportWeights(model)); // the f16 weights, widened
      const ids = [3, 1, 4, 1, 5, 9, 2, 6];
      using idt = Tensor.fromArray(gpu, ids, [1, 8], "i32");
      using pos = positions(1, 8);
      using logits = model.forward(idt, { mode: "teacher", positions: pos })!;
      // f16 activations: about 3 significant digits per op, through 1-2 layers
      assertClose(await logits.toArray(), teacherForward(ref, [ids]).logits, {
        atol: 5e-2,
        rtol: 5e-2,
      }, "f16 logits");
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name: "loadModel() names the tensor and the file when a weight is missing or has the wrong shape",
  ...GPU_TEST,
  fn: async () => {
    const { openSafetensors, writeSafetensors } = await import("../../src/io/safetensors.ts");
    const cfg = fc.sample(tinyConfig, { seed: 3, numRuns: 1 })[0];
    const dir = await Deno.makeTempDir();
    const model = createModel(gpu, cfg, { seed: 1 });
    try {
      await saveModel(model, dir);
      const file = `${dir}/model.safetensors`;
      const f = await openSafetensors(file);
      const all: Record<string, { dtype: "F32"; shape: readonly number[]; data: Float32Array }> =
        {};
      for (const name of f.tensors.keys()) {
        const t = await f.read(name);
        all[name] = { dtype: "F32", shape: t.shape, data: t.data as Float32Array };
      }
      f.close();
      const name = "model.layers.0.self_attn.k_proj.weight";
      const { [name]: kw, ...rest } = all;
      await writeSafetensors(file, rest);
      await assert.rejects(
        () => loadModel(gpu, dir),
        (e: Error) => e.message.includes(name) && e.message.includes(dir),
      );
      await writeSafetensors(file, {
        ...rest,
        [name]: { dtype: "F32", shape: [kw.shape[1], kw.shape[0]], data: kw.data },
      });
      await assert.rejects(
        () => loadModel(gpu, dir),
        (e: Error) =>
          e instanceof RangeError &&
          /layer 0 .*k_proj\.weight: expected \[\d+, \d+\], got \[\d+, \d+\] in .*model\.safetensors/
            .test(e.message),
      );
      await Deno.writeTextFile(
        `${dir}/config.json`,
        JSON.stringify({ model_type: "qwen3", hidden_size: 24 }),
      );
      await assert.rejects(() => loadModel(gpu, dir), /config\.json.*num_hidden_layers/s);
    } finally {
      model.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
