/**
 * The float64 reference of one DMS training step (src/train/reference_step.ts):
 * its hand-written gradients against central finite differences of the
 * independent forward reference (src/model/reference.ts `trainForward` /
 * `teacherForward`) on tiny random models, for every weight kind, both
 * decision variants (adapter, borrowed query neuron), "head" and "layer"
 * granularity, tied and untied embeddings, Qwen3 and Llama; plus the
 * straight-through compression loss, the soft-mask trap, clipping and AdamW.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { type ReferenceModel, teacherForward, trainForward } from "../../src/model/reference.ts";
import { referenceParams, referenceTrainStep } from "../../src/train/reference_step.ts";
import {
  adamwReferenceStep,
  clipGradNormReference,
  newAdamwState,
} from "../../src/train/reference_adamw.ts";
import { klForwardBackward } from "../../src/train/reference_vjp.ts";
import { fcParams } from "../_util.ts";
import { makeModel, normal, type Spec, V } from "../_reference_model.ts";

const specArb = (): fc.Arbitrary<Spec> =>
  fc.record({
    modelType: fc.constantFrom("qwen3" as const, "llama" as const),
    L: fc.integer({ min: 1, max: 2 }),
    Hkv: fc.integer({ min: 1, max: 2 }),
    G: fc.integer({ min: 1, max: 2 }),
    D: fc.constantFrom(4, 6),
    separate: fc.boolean(),
    per: fc.constantFrom("head" as const, "layer" as const),
    tie: fc.boolean(),
    window: fc.integer({ min: 2, max: 4 }),
    offset: fc.constantFrom(0, 0.5),
    scale: fc.constantFrom(1, 3),
    tau: fc.constantFrom(0.3, 1),
    seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  });

/** Inputs of one step: ids [B, S] (some equal to eos), logistic noise [L, B, Hkv, S]. */
function makeInputs(
  spec: Spec,
  B: number,
  S: number,
): { ids: number[][]; noise: Float64Array; eos: number } {
  const rand = normal(spec.seed ^ 0x5bd1e995);
  const u = () => 0.5 + 0.5 * Math.tanh(rand());
  const eos = 1;
  const ids = Array.from(
    { length: B },
    () => Array.from({ length: S }, () => (u() < 0.15 ? eos : Math.floor(u() * V) % V)),
  );
  ids[0][0] = 2; // at least one position carries a KL term
  const noise = Float64Array.from({ length: spec.L * B * spec.Hkv * S }, () => {
    const x = Math.min(Math.max(u(), 1e-6), 1 - 1e-6);
    return Math.log(x / (1 - x));
  });
  return { ids, noise, eos };
}

/**
 * The function whose derivative the step's gradient is, written with the independent
 * forward reference: KL(student(w) ‖ teacher(w0)) over non-EOS positions, plus
 * α* − mean_b frac_soft[b] (α* = 2 > any closed fraction keeps the one-sided gate open, and the straight-through
 * decision's gradient is the gradient of the soft p). Teacher logits fixed: no_grad.
 */
function surrogateLoss(
  model: ReferenceModel,
  ids: number[][],
  noise: Float64Array,
  eos: number,
  teacher: Float64Array,
): number {
  const tr = trainForward(model, ids, noise, 2);
  const V = model.config.vocabSize, B = ids.length, S = ids[0].length;
  let count = 0, kl = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < S; t++) {
      if (ids[b][t] === eos) continue;
      const at = (b * S + t) * V;
      kl += klForwardBackward(tr.logits.subarray(at, at + V), teacher.subarray(at, at + V)).kl;
      count++;
    }
  }
  const meanP = tr.decisionProbs.reduce((a, x) => a + x, 0) / tr.decisionProbs.length;
  return kl / count + 2 - meanP;
}

Deno.test("every weight's gradient matches central finite differences of the forward reference", () => {
  fc.assert(
    fc.property(
      specArb(),
      fc.integer({ min: 1, max: 2 }),
      fc.integer({ min: 4, max: 9 }),
      (spec, B, S) => {
        const { model } = makeModel(spec);
        const { ids, noise, eos } = makeInputs(spec, B, S);
        const teacher = teacherForward(model, ids).logits;
        const step = referenceTrainStep(model, ids, noise, {
          targetFracToClose: 2,
          eosTokenId: eos,
        });
        const params = referenceParams(model);
        assert.deepEqual([...step.grads.keys()], [...params.keys()]);
        const pick = normal(spec.seed + 7);
        const h = 1e-5;
        for (const [name, w] of params) {
          const g = step.grads.get(name)!;
          assert.equal(g.length, w.length, name);
          // the entry with the largest gradient (exercises the path) and two random ones
          let big = 0;
          for (let i = 1; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[big])) big = i;
          for (
            const i of [big, ...[0, 1].map(() => Math.floor(Math.abs(pick() * 1e6)) % w.length)]
          ) {
            const w0 = w[i];
            w[i] = w0 + h;
            const up = surrogateLoss(model, ids, noise, eos, teacher);
            w[i] = w0 - h;
            const down = surrogateLoss(model, ids, noise, eos, teacher);
            w[i] = w0;
            const fd = (up - down) / (2 * h);
            const err = Math.abs(fd - g[i]);
            assert.ok(
              err <= 1e-7 + 1e-5 * Math.abs(fd),
              `${name}[${i}]: analytic ${g[i]}, finite difference ${fd} (err ${err}), spec ${
                JSON.stringify(spec)
              } B=${B} S=${S}`,
            );
          }
        }
      },
    ),
    fcParams(6),
  );
});

function assertAllClose(a: Float64Array, b: Float64Array, tol: number, what: string): void {
  assert.equal(a.length, b.length, what);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  assert.ok(max <= tol, `${what}: max error ${max} > ${tol}`);
}

Deno.test("the step's logits, losses and closed fraction equal the forward reference's (straight-through value = hard)", () => {
  const spec: Spec = {
    modelType: "qwen3",
    L: 2,
    Hkv: 2,
    G: 2,
    D: 4,
    separate: false,
    per: "layer",
    tie: false,
    window: 2,
    offset: 0.5,
    scale: 2,
    tau: 0.3,
    seed: 11,
  };
  const { model } = makeModel(spec);
  const { ids, noise, eos } = makeInputs(spec, 2, 7);
  for (const target of [0, 0.4, 0.9]) {
    const step = referenceTrainStep(model, ids, noise, {
      targetFracToClose: target,
      eosTokenId: eos,
    });
    const tr = trainForward(model, ids, noise, target);
    assertAllClose(step.logits, tr.logits, 1e-12, "logits");
    assertAllClose(step.logitsTeacher, teacherForward(model, ids).logits, 0, "teacher");
    assert.ok(Math.abs(step.dmsFracClosed - tr.dmsFracClosed) < 1e-15);
    assert.ok(Math.abs(step.lossCr - tr.dmsLoss) < 1e-15, `${step.lossCr} vs ${tr.dmsLoss}`);
    assert.equal(step.lossTotal, step.lossDistill + step.lossCr);
  }
});

Deno.test("the distillation loss reaches the decision parameters through the soft mask (the eager flex-attention trap)", () => {
  for (const separate of [true, false]) {
    const spec: Spec = {
      modelType: "qwen3",
      L: 1,
      Hkv: 1,
      G: 2,
      D: 4,
      separate,
      per: "head",
      tie: false,
      window: 2,
      offset: 0,
      scale: 1,
      tau: 1,
      seed: 5,
    };
    const { model } = makeModel(spec);
    const { ids, noise, eos } = makeInputs(spec, 1, 8);
    // alpha* = 0: the compression loss is 0 with a zero gradient, only the KL remains
    const step = referenceTrainStep(model, ids, noise, { targetFracToClose: 0, eosTokenId: eos });
    assert.equal(step.lossCr, 0);
    const name = separate
      ? "model.layers.0.self_attn.dms_proj_alpha.weight"
      : "model.layers.0.self_attn.q_proj.weight";
    const g = step.grads.get(name)!;
    // borrowed neuron: row D−1 of q_proj (head 0, last channel) gets only the logit's gradient
    const rows = separate ? [0] : [spec.D - 1];
    const H = model.config.hiddenSize;
    const norm = Math.hypot(...rows.flatMap((r) => [...g.subarray(r * H, (r + 1) * H)]));
    assert.ok(norm > 1e-6, `${name}: no gradient from the soft mask (norm ${norm})`);
  }
});

Deno.test("window covering the whole sequence: no soft mask, the decision parameters get only the compression gradient", () => {
  const spec: Spec = {
    modelType: "llama",
    L: 1,
    Hkv: 1,
    G: 1,
    D: 4,
    separate: true,
    per: "head",
    tie: true,
    window: 9,
    offset: 0,
    scale: 1,
    tau: 1,
    seed: 3,
  };
  const { model } = makeModel(spec);
  const { ids, noise, eos } = makeInputs(spec, 1, 8);
  const step = referenceTrainStep(model, ids, noise, { targetFracToClose: 0, eosTokenId: eos });
  for (
    const n of [
      "model.layers.0.self_attn.dms_proj_alpha.weight",
      "model.layers.0.self_attn.dms_proj_alpha_norm.weight",
    ]
  ) {
    assert.ok(step.grads.get(n)!.every((x) => x === 0), n);
  }
  assert.ok(
    !step.grads.has("lm_head.weight"),
    "tied: one gradient, under model.embed_tokens.weight",
  );
});

Deno.test("clip_grad_norm_ and two torch AdamW steps match hand-computed values", () => {
  const grads = new Map([["a", new Float64Array([3, 0])], ["b", new Float64Array([4])]]);
  const { totalNorm, grads: clipped } = clipGradNormReference(grads, 1);
  assert.equal(totalNorm, 5);
  const coef = 1 / (5 + 1e-6);
  assert.deepEqual([...clipped.get("a")!], [3 * coef, 0]);
  assert.deepEqual([...grads.get("a")!], [3, 0], "inputs untouched");
  // below the max norm: unchanged
  assert.deepEqual([...clipGradNormReference(grads, 10).grads.get("b")!], [4]);
  const w = new Map([["a", new Float64Array([1, -2])], ["b", new Float64Array([0.5])]]);
  const state = newAdamwState(w);
  const o = { lr: 0.1, betas: [0.9, 0.95] as const, eps: 1e-8, weightDecay: 0.1 };
  adamwReferenceStep(w, clipped, state, o);
  // step 1: m̂ = g, v̂ = g²: w = w·(1 − lr·wd) − lr·g/(|g| + eps)
  const g = 4 * coef;
  assert.ok(Math.abs(w.get("b")![0] - (0.5 * 0.99 - 0.1 * g / (g + 1e-8))) < 1e-15);
  assert.equal(w.get("a")![1], -2 * 0.99, "zero gradient: only the decay");
  adamwReferenceStep(w, clipped, state, o);
  // step 2 with the same g: m = (1 − β1²)·g, v = (1 − β2²)·g², bias-corrected back to g and g²
  const m = 0.9 * 0.1 * g + 0.1 * g, v = 0.95 * 0.05 * g * g + 0.05 * g * g;
  const expect = (0.5 * 0.99 - 0.1 * g / (g + 1e-8)) * 0.99 -
    (0.1 / (1 - 0.81)) * m / (Math.sqrt(v) / Math.sqrt(1 - 0.9025) + 1e-8);
  assert.ok(Math.abs(w.get("b")![0] - expect) < 1e-15, `${w.get("b")![0]} vs ${expect}`);
  assert.equal(state.step, 2);
});

Deno.test("bad inputs are RangeErrors naming ids or noise", () => {
  const spec: Spec = {
    modelType: "qwen3",
    L: 1,
    Hkv: 1,
    G: 1,
    D: 4,
    separate: true,
    per: "head",
    tie: false,
    window: 2,
    offset: 0,
    scale: 1,
    tau: 1,
    seed: 1,
  };
  const { model } = makeModel(spec);
  const o = { targetFracToClose: 0.5, eosTokenId: 1 };
  assert.throws(
    () => referenceTrainStep(model, [[1, 2]], new Float64Array(3), o),
    /noise: expected \[1, 1, 1, 2\]/,
  );
  assert.throws(
    () => referenceTrainStep(model, [[1, V]], new Float64Array(2), o),
    /ids\[0\]\[1\] = 37/,
  );
  assert.throws(
    () => referenceTrainStep(model, [[1, 2], [3]], new Float64Array(4), o),
    /ids row 1/,
  );
});
