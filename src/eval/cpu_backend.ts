/**
 * The CPU conformance backend: every case kind computed by the float64
 * reference in `src/model/reference.ts`, the cache observables (cache lengths,
 * −1 rows, `get_cr`) by `observables.ts`, a training step (`train_step`) by
 * `src/train/reference_step.ts` (losses, gradients) and
 * `src/train/reference_adamw.ts` (clipping, AdamW). It is the independent oracle that
 * shows our reading of SPEC.md matches NVIDIA's reference on the golden
 * vectors; GPU backends are checked by the same runner.
 *
 * @example Run one vendored case on the CPU reference
 * ```ts
 * import { loadCase } from "./case.ts";
 * import { cpuBackend } from "./cpu_backend.ts";
 * const c = await loadCase("testdata/conformance/C1_attn_single_chunk");
 * if (c.kind === "attention_only") console.log(Object.keys(await cpuBackend.attentionOnly(c.case)));
 * ```
 *
 * @module
 */

import {
  attentionOnlyReference,
  inferenceForward,
  loadReferenceModel,
  teacherForward,
  trainForward,
} from "../model/reference.ts";
import { referenceParams, referenceTrainStep } from "../train/reference_step.ts";
import {
  adamwReferenceStep,
  clipGradNormReference,
  newAdamwState,
} from "../train/reference_adamw.ts";
import type {
  AttentionOnlyCase,
  BackendOutputs,
  ConformanceBackend,
  InferenceCase,
  TrainForwardCase,
  TrainStepCase,
} from "./case.ts";
import type { CaseTensor } from "./compare.ts";
import {
  hideUnobservable,
  inferenceObservables,
  observableRows,
  retainedCounts,
} from "./observables.ts";

function tensor(shape: number[], data: CaseTensor["data"]): CaseTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (data.length !== n) {
    throw new RangeError(
      `cpu backend: [${shape.join(", ")}] needs ${n} values, got ${data.length}`,
    );
  }
  return { shape, data };
}

function rows(ids: CaseTensor, name: string): Int32Array[] {
  if (ids.shape.length !== 2) {
    throw new RangeError(`${name}: expected [B, S], got [${ids.shape.join(", ")}]`);
  }
  const [B, S] = ids.shape;
  return Array.from(
    { length: B },
    (_, b) => Int32Array.from(ids.data.subarray(b * S, (b + 1) * S)),
  );
}

/** A: train-mode forward with the case's noise, plus the teacher forward. */
function trainCase(c: TrainForwardCase): BackendOutputs {
  const model = loadReferenceModel(c.config, c.weights);
  const cfg = c.config;
  const ids = rows(c.inputs.input_ids, "input_ids");
  const B = ids.length, S = ids[0].length, L = cfg.numLayers, Hkv = cfg.numKvHeads;
  const H = cfg.hiddenSize, V = cfg.vocabSize;
  const tr = trainForward(model, ids, c.inputs.noise.data, c.params.targetFracToClose);
  const teacher = teacherForward(model, ids);
  const d = [L, B, Hkv, S];
  return {
    logits: tensor([B, S, V], tr.logits),
    layer_out: tensor([L, B, S, H], tr.layerOut),
    decision_logits_raw: tensor(d, tr.decisionLogitsRaw),
    decision_logits_noisy: tensor(d, tr.decisionLogitsNoisy),
    decision_probs: tensor(d, tr.decisionProbs),
    decisions_hard: tensor(d, tr.decisionsHard),
    decisions_straight_through: tensor(d, tr.decisionsStraightThrough),
    logits_teacher: tensor([B, S, V], teacher.logits),
    dms_frac_closed: tensor([1], new Float64Array([tr.dmsFracClosed])),
    dms_loss: tensor([1], new Float64Array([tr.dmsLoss])),
    "model_reported.cr": tensor([1], new Float64Array([tr.cr])),
    "model_reported.dms_frac_closed": tensor([1], new Float64Array([tr.dmsFracClosed])),
    "model_reported.dms_loss": tensor([1], new Float64Array([tr.dmsLoss])),
  };
}

/** B: prefill + decode, as one dense pass (SPEC §5.3 equivalence). */
function inferenceCase(c: InferenceCase): BackendOutputs {
  const model = loadReferenceModel(c.config, c.weights);
  const cfg = c.config;
  const ids = rows(c.inputs.input_ids, "input_ids");
  if (ids.length !== 1) {
    throw new RangeError(`input_ids: inference cases have batch 1, got ${ids.length}`);
  }
  const T = ids[0].length, L = cfg.numLayers, Hkv = cfg.numKvHeads, Hq = cfg.numHeads;
  const D = cfg.headDim, H = cfg.hiddenSize, V = cfg.vocabSize, P = c.params.promptLen;
  const out = inferenceForward(model, ids[0], P);
  const cache = inferenceObservables(
    retainedCounts(out.retainedMask, T), // [T, L, Hkv]
    { T, L, Hkv },
    P,
    cfg.dms.window + 1,
  );
  const cacheRetainedMask = hideUnobservable(out.retainedMask, observableRows(T, { promptLen: P }));
  return {
    logits: tensor([T, V], out.logits),
    decision_logits: tensor([L, Hkv, T], out.decisionLogits),
    decisions: tensor([L, Hkv, T], out.decisions),
    cache_len: tensor([T, L, Hkv], cache.cacheLen),
    retained_mask: tensor([T, L, Hkv, T], out.retainedMask),
    cache_retained_mask: tensor([T, L, Hkv, T], cacheRetainedMask),
    cr_model: tensor([T], cache.crModel),
    cr_cache: tensor([T], cache.crCache),
    cr_cache_per_layer: tensor([T, L], cache.crCachePerLayer),
    q: tensor([L, Hq, T, D], out.q),
    k: tensor([L, Hkv, T, D], out.k),
    v: tensor([L, Hkv, T, D], out.v),
    layer_out: tensor([L, T, H], out.layerOut),
  };
}

/**
 * C: dense §5.1 attention with key padding (W = cache_window − 1), split into
 * the prefill and decode outputs. Cache observables exist at the last row of
 * each prefill chunk and at every decode row; other rows are −1.
 */
function attentionCase(c: AttentionOnlyCase): BackendOutputs {
  const p = c.params;
  const B = p.batch, Hkv = p.headsKv, G = p.gqaFactor, D = p.headDim;
  const S = p.prefillLen, N = p.numDecodeSteps, T = S + N;
  const { q, k, v, decisions, attn_mask } = c.inputs;
  const ref = attentionOnlyReference(
    q.data,
    k.data,
    v.data,
    decisions.data,
    attn_mask.data,
    { B, Hkv, G, T, D },
    p.cacheWindow - 1,
    p.attnScaling,
  );
  // out:[B, Hkv, T, G, D] -> prefill [B, Hkv, S, G, D] and decode [B, Hkv, N, G, D]
  const row = G * D;
  const prefill = new Float64Array(B * Hkv * S * row); // [B, Hkv, S, G, D]
  const decode = new Float64Array(B * Hkv * N * row); // [B, Hkv, N, G, D]
  for (let page = 0; page < B * Hkv; page++) {
    const src = ref.out.subarray(page * T * row, (page + 1) * T * row); // [T, G, D]
    prefill.set(src.subarray(0, S * row), page * S * row);
    decode.set(src.subarray(S * row), page * N * row);
  }
  const observable = observableRows(T, p); // [T]
  return {
    prefill_out: tensor([B, Hkv, S, G, D], prefill),
    decode_out: tensor([B, Hkv, N, G, D], decode),
    cache_len: tensor([T, B, Hkv], hideUnobservable(ref.retainedCount, observable)),
    retained_mask: tensor([T, B, Hkv, T], ref.retainedMask),
    cache_retained_mask: tensor([T, B, Hkv, T], hideUnobservable(ref.retainedMask, observable)),
  };
}

/**
 * D: one training step (SPEC §6): losses and every weight's gradient (and their norm), then
 * `clip_grad_norm_` and two AdamW steps with the same clipped gradients — of the reference's
 * own gradients, so the optimizer is judged apart from gradient noise.
 */
function trainStepCase(c: TrainStepCase): BackendOutputs {
  const model = loadReferenceModel(c.config, c.weights);
  const cfg = c.config, p = c.params;
  const ids = rows(c.inputs.input_ids, "input_ids");
  const B = ids.length, S = ids[0].length, V = cfg.vocabSize;
  const step = referenceTrainStep(model, ids, c.inputs.noise.data, {
    targetFracToClose: p.targetFracToClose,
    eosTokenId: p.eosTokenId,
  });
  const frozen = new Set(p.paramsWithoutGrad);
  const grads = new Map([...step.grads].filter(([name]) => !frozen.has(name)));
  const { totalNorm } = clipGradNormReference(grads, p.adamw.clipGradNorm);
  // the optimizer steps the reference's own gradients (see TrainStepCase.optimizerGradients)
  const given = new Map(
    [...c.optimizerGradients].filter(([name]) => !frozen.has(name)).map((
      [name, t],
    ) => [name, Float64Array.from(t.data)]),
  );
  const { grads: clipped } = clipGradNormReference(given, p.adamw.clipGradNorm);
  const weights = new Map([...referenceParams(model)].map(([n, w]) => [n, Float64Array.from(w)]));
  const state = newAdamwState(weights);
  const shapeOf = (name: string): number[] => {
    const w = c.weights.get(name);
    if (!w) throw new RangeError(`cpu backend: no weight "${name}" in weights.safetensors`);
    return [...w.shape];
  };
  const out: Record<string, ReturnType<typeof tensor>> = {
    loss_total: tensor([1], new Float64Array([step.lossTotal])),
    loss_distill: tensor([1], new Float64Array([step.lossDistill])),
    loss_cr: tensor([1], new Float64Array([step.lossCr])),
    dms_frac_closed: tensor([1], new Float64Array([step.dmsFracClosed])),
    grad_total_norm: tensor([1], new Float64Array([totalNorm])),
    logits: tensor([B, S, V], step.logits),
    logits_teacher: tensor([B, S, V], step.logitsTeacher),
  };
  for (const [name, g] of grads) out[`grad.${name}`] = tensor(shapeOf(name), g);
  const opts = {
    lr: p.adamw.lr,
    betas: p.adamw.betas,
    eps: p.adamw.eps,
    weightDecay: p.adamw.weightDecay,
  };
  for (const k of [1, 2]) {
    adamwReferenceStep(weights, clipped, state, opts);
    for (const [name, w] of weights) out[`adamw${k}.${name}`] = tensor(shapeOf(name), w.slice());
  }
  return out;
}

/** The float64 CPU reference as a {@linkcode ConformanceBackend}. */
export const cpuBackend: ConformanceBackend = {
  name: "cpu",
  trainForward: (c) => Promise.resolve().then(() => trainCase(c)),
  inference: (c) => Promise.resolve().then(() => inferenceCase(c)),
  attentionOnly: (c) => Promise.resolve().then(() => attentionCase(c)),
  trainStep: (c) => Promise.resolve().then(() => trainStepCase(c)),
};
