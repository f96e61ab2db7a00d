/**
 * One DMS training step on the GPU (src/train/train_step.ts `forwardBackward`): losses and the
 * gradient of every weight against the float64 reference step (`referenceTrainStep`) on tiny
 * random models (both decision variants, head/layer granularity, tied/untied, Qwen3/Llama);
 * the training forward's logits against `model.forward(ids, { mode: "train", noise })`; the
 * trainable sets; checkpointed layers; no leaked GPU buffers; f32 only. The "lm" objective:
 * train_step_lm_test.ts; the tiny models: _tiny_train.ts.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import type { ModelConfig } from "../../src/model/config.ts";
import { createModel, exportWeights, type Model } from "../../src/model/model.ts";
import { loadReferenceModel } from "../../src/model/reference.ts";
import { referenceTrainStep } from "../../src/train/reference_step.ts";
import {
  forwardBackward,
  type StepInputs,
  trainableParameters,
} from "../../src/train/train_step.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose, captureNamed, fcParams, gpu, GPU_TEST } from "../_util.ts";
import { configOf, inputs, noiseTensors, readGrads, type Spec, tolFor, V } from "./_tiny_train.ts";

const specArb: fc.Arbitrary<Spec> = fc.record({
  modelType: fc.constantFrom("qwen3" as const, "llama" as const),
  layers: fc.integer({ min: 1, max: 2 }),
  kv: fc.integer({ min: 1, max: 2 }),
  group: fc.integer({ min: 1, max: 3 }),
  headDim: fc.constantFrom(4, 8, 16),
  separateAlpha: fc.boolean(),
  perLayer: fc.boolean(),
  tied: fc.boolean(),
  bias: fc.boolean(),
  window: fc.integer({ min: 2, max: 6 }),
});

Deno.test({
  name: "forwardBackward() losses, logits and every weight's gradient match the f64 reference step",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        specArb,
        fc.integer({ min: 1, max: 2 }),
        fc.integer({ min: 1, max: 11 }),
        fc.double({ min: 0.05, max: 0.95, noNaN: true }),
        fc.integer({ min: 0, max: 1 << 20 }),
        async (spec, B, T, alphaTarget, seed) => {
          const cfg = configOf(spec);
          const model = createModel(gpu, cfg, { seed });
          const { ids, rows, noise } = inputs(cfg, B, T, seed);
          const nts = noiseTensors(cfg, noise, B, T);
          const eos = ids[0]; // the first token's id is EOS: its positions carry no KL term
          try {
            const ref = loadReferenceModel(cfg, await exportWeights(model));
            const expect = referenceTrainStep(ref, rows, noise, {
              targetFracToClose: alphaTarget,
              eosTokenId: eos,
            });
            const out = forwardBackward(model, {
              ids,
              batch: B,
              seqLen: T,
              objective: "distill",
              alphaTarget,
              eosTokenIds: [eos],
              noise: nts,
              trainable: "all",
            }, { keepLogits: true });
            try {
              using idt = Tensor.fromArray(gpu, ids, [B, T], "i32");
              using pos = Tensor.fromArray(gpu, ids.map((_, i) => i % T), [B, T], "i32");
              const zs = captureNamed("z");
              using trainLogits = model.forward(idt, {
                mode: "train",
                positions: pos,
                noise: nts,
                capture: zs.capture,
              })!;
              const z = await zs.values();
              // frac_closed and loss_cr count hard decisions z > 0, taken on the GPU and in f64
              // apart (|Δz| ≤ 6.6e-6 measured): a z within 1e-4 of 0 could flip one, so skip it.
              if (z.some((v) => Math.abs(v) < 1e-4)) return;
              const logits = await out.logits!.toArray();
              assertClose(
                logits,
                await trainLogits.toArray(),
                { atol: 1e-5, rtol: 1e-5 },
                "logits vs model.forward train",
              );
              assertClose(logits, expect.logits, { atol: 2e-4, rtol: 2e-4 }, "logits vs reference");
              const tol = { atol: 2e-5, rtol: 1e-4 };
              assertClose(
                await out.lossDistill!.toArray(),
                [expect.lossDistill],
                tol,
                "loss_distill",
              );
              assertClose(await out.lossCr!.toArray(), [expect.lossCr], tol, "loss_cr");
              assertClose(await out.loss.toArray(), [expect.lossTotal], tol, "loss_total");
              assertClose(await out.fracClosed!.toArray(), expect.fracClosed, tol, "frac_closed");
              const grads = await readGrads(out.grads);
              assert.deepEqual([...grads.keys()].sort(), [...expect.grads.keys()].sort());
              for (const [name, g] of expect.grads) {
                assertClose(grads.get(name)!, g, tolFor(g), `grad ${name}`);
              }
            } finally {
              out.dispose();
            }
          } finally {
            for (const t of nts) t.dispose();
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
    'forwardBackward() with "adapters" returns exactly the dms_proj_alpha* gradients, equal to the reference\'s',
  ...GPU_TEST,
  fn: async () => {
    for (const bias of [false, true]) {
      const spec: Spec = {
        modelType: "qwen3",
        layers: 2,
        kv: 2,
        group: 2,
        headDim: 8,
        separateAlpha: true,
        perLayer: false,
        tied: false,
        bias,
        window: 2,
      };
      const cfg = configOf(spec), B = 2, T = 9;
      const model = createModel(gpu, cfg, { seed: 3 });
      const { ids, rows, noise } = inputs(cfg, B, T, 5);
      const nts = noiseTensors(cfg, noise, B, T);
      try {
        const before = await exportWeights(model);
        const keys = [...trainableParameters(model, "adapters").keys()].sort();
        const want = [...before.keys()].filter((k) => k.includes("dms_proj_alpha")).sort();
        assert.deepEqual(keys, want);
        assert.equal(keys.length, bias ? 6 : 4);
        const expect = referenceTrainStep(loadReferenceModel(cfg, before), rows, noise, {
          targetFracToClose: 0.6,
          eosTokenId: null,
        });
        const out = forwardBackward(model, {
          ids,
          batch: B,
          seqLen: T,
          objective: "distill",
          alphaTarget: 0.6,
          noise: nts,
          trainable: "adapters",
        });
        const grads = await readGrads(out.grads);
        out.dispose();
        assert.deepEqual([...grads.keys()].sort(), want);
        for (const k of want) {
          assertClose(grads.get(k)!, expect.grads.get(k)!, tolFor(expect.grads.get(k)!), k);
        }
        // the step never writes a weight
        const after = await exportWeights(model);
        for (const [k, t] of before) assert.deepEqual(after.get(k)!.data, t.data, k);
      } finally {
        for (const t of nts) t.dispose();
        model.dispose();
      }
    }
  },
});

function stepInputs(cfg: ModelConfig, B: number, T: number, checkpointLayers: boolean): StepInputs {
  const { ids } = inputs(cfg, B, T, 21);
  return {
    ids,
    batch: B,
    seqLen: T,
    objective: "distill",
    alphaTarget: 0.4,
    noise: { seed: 4, step: 2 },
    trainable: "all",
    checkpointLayers,
  };
}

Deno.test({
  name:
    "forwardBackward() with checkpointLayers gives identical losses and gradients, and frees every buffer",
  ...GPU_TEST,
  fn: async () => {
    for (const separateAlpha of [false, true]) {
      const spec: Spec = {
        modelType: "qwen3",
        layers: 3,
        kv: 2,
        group: 2,
        headDim: 8,
        separateAlpha,
        perLayer: separateAlpha,
        tied: true,
        bias: false,
        window: 3,
      };
      const cfg = configOf(spec), B = 2, T = 10;
      const model: Model = createModel(gpu, cfg, { seed: 8 });
      try {
        await gpu.sync();
        const live0 = gpu.memory().liveBytes;
        const read = async (ck: boolean) => {
          const out = forwardBackward(model, stepInputs(cfg, B, T, ck));
          const r = { loss: await out.loss.toArray(), grads: await readGrads(out.grads) };
          out.dispose();
          return r;
        };
        const plain = await read(false);
        assert.equal(gpu.memory().liveBytes, live0, "live bytes after a step and dispose()");
        const ck = await read(true);
        assert.equal(gpu.memory().liveBytes, live0, "live bytes after a checkpointed step");
        assert.deepEqual(ck.loss, plain.loss);
        for (const [k, g] of plain.grads) assert.deepEqual(ck.grads.get(k), g, k);
      } finally {
        model.dispose();
      }
    }
  },
});

Deno.test({
  name: "forwardBackward() rejects an f16 model, naming the dtype, and distill on a plain model",
  ...GPU_TEST,
  fn: () => {
    const spec: Spec = {
      modelType: "llama",
      layers: 1,
      kv: 1,
      group: 1,
      headDim: 4,
      separateAlpha: false,
      perLayer: false,
      tied: false,
      bias: false,
      window: 1,
      dms: false,
    };
    const cfg = configOf(spec);
    const inp: StepInputs = {
      ids: new Int32Array(4),
      batch: 1,
      seqLen: 4,
      objective: "distill",
      trainable: "all",
      noise: { seed: 1, step: 0 },
    };
    if (gpu.hasF16) {
      const m16 = createModel(gpu, cfg, { seed: 1, dtype: "f16" });
      try {
        assert.throws(
          () => forwardBackward(m16, { ...inp, objective: "lm" }),
          (e: Error) => e instanceof TypeError && /f16/.test(e.message),
        );
      } finally {
        m16.dispose();
      }
    }
    const m = createModel(gpu, cfg, { seed: 1 });
    try {
      assert.throws(() => forwardBackward(m, inp), TypeError);
      assert.throws(() => forwardBackward(m, { ...inp, ids: new Int32Array(3) }), RangeError);
    } finally {
      m.dispose();
    }
  },
});

Deno.test({
  name:
    "forwardBackward() over row-chunked embedding / LM head: one gradient per chunk, assembled equal to the reference's",
  ...GPU_TEST,
  fn: async () => {
    for (const tied of [false, true]) {
      const spec: Spec = {
        modelType: "llama",
        layers: 1,
        kv: 1,
        group: 2,
        headDim: 8,
        separateAlpha: false,
        perLayer: false,
        tied,
        bias: false,
        window: 2,
      };
      const cfg = configOf(spec), B = 1, T = 7, H = cfg.hiddenSize;
      const model = createModel(gpu, cfg, { seed: 2, maxBindingBytes: 10 * H * 4 }); // 4 chunks
      const { ids, rows, noise } = inputs(cfg, B, T, 3);
      const nts = noiseTensors(cfg, noise, B, T);
      try {
        assert.equal(model.weights.embed.chunks.length, 4);
        const expect = referenceTrainStep(
          loadReferenceModel(cfg, await exportWeights(model)),
          rows,
          noise,
          {
            targetFracToClose: 0.3,
            eosTokenId: null,
          },
        );
        for (const trainable of ["all", (n: string) => !n.startsWith("lm_head")] as const) {
          const out = forwardBackward(model, {
            ids,
            batch: B,
            seqLen: T,
            objective: "distill",
            alphaTarget: 0.3,
            noise: nts,
            trainable,
          });
          const grads = await readGrads(out.grads);
          out.dispose();
          const keys = [...grads.keys()].filter((k) => k.includes("#")).sort();
          const want = [
            "model.embed_tokens.weight#0",
            "model.embed_tokens.weight#10",
            "model.embed_tokens.weight#20",
            "model.embed_tokens.weight#30",
          ];
          if (!tied && trainable === "all") {
            want.push(
              "lm_head.weight#0",
              "lm_head.weight#10",
              "lm_head.weight#20",
              "lm_head.weight#30",
            );
          }
          assert.deepEqual(keys, want.sort());
          for (const name of ["model.embed_tokens.weight", "lm_head.weight"]) {
            if (!expect.grads.has(name) || !grads.has(`${name}#0`)) continue;
            const whole = new Float32Array(V * H);
            for (const r0 of [0, 10, 20, 30]) whole.set(grads.get(`${name}#${r0}`)!, r0 * H);
            assertClose(whole, expect.grads.get(name)!, tolFor(expect.grads.get(name)!), name);
          }
          assertClose(
            grads.get("model.norm.weight")!,
            expect.grads.get("model.norm.weight")!,
            tolFor(expect.grads.get("model.norm.weight")!),
            "norm",
          );
        }
      } finally {
        for (const t of nts) t.dispose();
        model.dispose();
      }
    }
  },
});
