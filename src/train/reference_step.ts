/**
 * The float64 CPU reference of one DMS training step (SPEC §1, §3, §4, §6;
 * `testdata/conformance-train/README.md`): the train-mode forward with given
 * noise, the teacher forward (constant), `loss_distill` = KL(student ‖
 * teacher) over positions whose input id is not EOS, `loss_cr` = mean_b
 * max(0, α* − frac_closed[b]) from the straight-through decisions, and the
 * gradient of `loss_total = loss_distill + loss_cr` with respect to every
 * weight, by hand-written reverse mode over the float64 arrays
 * (`reference_vjp.ts` holds one VJP per layer piece).
 *
 * Where the gradient goes (the parts that are easy to get wrong):
 * - the soft mask `log σ(−z[j+1])` of keys beyond the window passes its
 *   gradient to z (d/dz log σ(−z) = −σ(z)), hence to the decision logits;
 * - the straight-through decision `hard − stopgrad(p) + p` passes the
 *   compression loss's gradient to z as `dp·σ'(z)`;
 * - the decision logit reaches its source: the adapter (`dms_proj_alpha`,
 *   `dms_proj_alpha_norm`, SPEC §1b) or the borrowed query channel after
 *   `q_norm` (SPEC §1a), which is zeroed before and after RoPE: attention
 *   sends no gradient through that channel, the logit does;
 * - "layer" granularity broadcasts head 0's z: every head's gradient sums
 *   into head 0's logit;
 * - tied embeddings: one gradient summing the embedding and `lm_head` uses.
 *
 * @example Loss and gradients of one step on a conformance model
 * ```ts
 * import { loadConfig } from "../model/config.ts";
 * import { openSafetensors } from "../io/safetensors.ts";
 * import { loadReferenceModel, type WeightTensor } from "../model/reference.ts";
 * import { referenceTrainStep } from "./reference_step.ts";
 * const dir = "testdata/conformance-train/D1_grad_adapter_head";
 * using file = await openSafetensors(`${dir}/weights.safetensors`);
 * const weights = new Map<string, WeightTensor>();
 * for (const n of file.tensors.keys()) {
 *   const t = await file.read(n);
 *   weights.set(n, { shape: t.shape, data: t.data as Float32Array });
 * }
 * const model = loadReferenceModel(await loadConfig(dir), weights);
 * const S = 8, L = 2, Hkv = 2;
 * const step = referenceTrainStep(model, [[5, 6, 1, 7, 8, 9, 10, 11]], new Float64Array(L * Hkv * S), {
 *   targetFracToClose: 0.5,
 *   eosTokenId: 1,
 * });
 * console.log(step.lossTotal, step.grads.get("model.norm.weight")); // scalar, [H]
 * ```
 *
 * @module
 */

import type { ReferenceModel } from "../model/reference.ts";
import { teacherForward } from "../model/reference.ts";
import {
  klForwardBackward,
  linearBackward,
  linearForward,
  rmsNormBackward,
  rmsNormForward,
  type RmsNormSaved,
  ropeTable,
} from "./reference_vjp.ts";
import {
  dimsOf,
  type LayerArrays,
  layerBackward,
  layerForward,
  type LayerSaved,
  type LinArrays,
} from "./reference_layer.ts";

/** Options of {@linkcode referenceTrainStep}. */
export interface ReferenceStepOptions {
  /** α*, the target fraction of closed decisions (SPEC §6). */
  targetFracToClose: number;
  /** Positions whose input id equals this carry no KL term; null: every position counts. */
  eosTokenId: number | null;
}

/** Output of {@linkcode referenceTrainStep}. */
export interface ReferenceStepResult {
  /** `[B, S, V]` train-mode (student) logits */
  logits: Float64Array;
  /** `[B, S, V]` teacher-mode logits (a constant of the step) */
  logitsTeacher: Float64Array;
  /** KL(student ‖ teacher) averaged over the non-EOS positions */
  lossDistill: number;
  /** mean_b max(0, α* − fracClosed[b]) */
  lossCr: number;
  /** lossDistill + lossCr */
  lossTotal: number;
  /** `[B]` mean over layers of the mean over (KV heads, positions) of the ST decisions */
  fracClosed: Float64Array;
  /** mean_b fracClosed */
  dmsFracClosed: number;
  /** ∂lossTotal/∂weight by HF name (every weight of {@linkcode referenceParams}, same order) */
  grads: Map<string, Float64Array>;
}

/** Weight-shaped arrays of a whole model (the weights themselves, or their gradients). */
interface ModelArrays {
  readonly embed: Float64Array;
  readonly layers: readonly LayerArrays[];
  readonly norm: Float64Array;
  readonly lmHead: LinArrays;
}

/**
 * The weights of a reference model by HF name, in checkpoint order, as views
 * of the model's own float64 arrays (writing into one changes the model).
 * Tied embeddings appear once, as `model.embed_tokens.weight`.
 */
export function referenceParams(model: ReferenceModel): Map<string, Float64Array> {
  return namedArrays(model, model.lmHead.w === model.embed);
}

function namedArrays(m: ModelArrays, tied: boolean): Map<string, Float64Array> {
  const out = new Map<string, Float64Array>();
  out.set("model.embed_tokens.weight", m.embed);
  const lin = (name: string, l: LinArrays | null): void => {
    if (!l) return;
    out.set(`${name}.weight`, l.w);
    if (l.b) out.set(`${name}.bias`, l.b);
  };
  m.layers.forEach((l, i) => {
    const p = `model.layers.${i}`;
    lin(`${p}.self_attn.q_proj`, l.qProj);
    lin(`${p}.self_attn.k_proj`, l.kProj);
    lin(`${p}.self_attn.v_proj`, l.vProj);
    lin(`${p}.self_attn.o_proj`, l.oProj);
    if (l.qNorm) out.set(`${p}.self_attn.q_norm.weight`, l.qNorm);
    if (l.kNorm) out.set(`${p}.self_attn.k_norm.weight`, l.kNorm);
    lin(`${p}.self_attn.dms_proj_alpha`, l.alphaProj);
    if (l.alphaNorm) out.set(`${p}.self_attn.dms_proj_alpha_norm.weight`, l.alphaNorm);
    lin(`${p}.mlp.gate_proj`, l.gate);
    lin(`${p}.mlp.up_proj`, l.up);
    lin(`${p}.mlp.down_proj`, l.down);
    out.set(`${p}.input_layernorm.weight`, l.inputNorm);
    out.set(`${p}.post_attention_layernorm.weight`, l.postNorm);
  });
  out.set("model.norm.weight", m.norm);
  if (!tied) lin("lm_head", m.lmHead);
  return out;
}

/** Zero arrays shaped like the model's weights; tied: lm_head's gradient IS the embedding's. */
function zeroGrads(model: ReferenceModel): ModelArrays {
  const z = (a: Float64Array | null): Float64Array | null => a && new Float64Array(a.length);
  const lin = (l: LinArrays | null): LinArrays | null => l && { w: z(l.w)!, b: z(l.b) };
  const embed = z(model.embed)!;
  return {
    embed,
    layers: model.layers.map((l) => ({
      inputNorm: z(l.inputNorm)!,
      qProj: lin(l.qProj)!,
      kProj: lin(l.kProj)!,
      vProj: lin(l.vProj)!,
      oProj: lin(l.oProj)!,
      qNorm: z(l.qNorm),
      kNorm: z(l.kNorm),
      postNorm: z(l.postNorm)!,
      gate: lin(l.gate)!,
      up: lin(l.up)!,
      down: lin(l.down)!,
      alphaNorm: z(l.alphaNorm),
      alphaProj: lin(l.alphaProj),
    })),
    norm: z(model.norm)!,
    lmHead: model.lmHead.w === model.embed ? { w: embed, b: null } : lin(model.lmHead)!,
  };
}

// ---------------------------------------------------------------------------------------------
// The whole step

function checkInputs(
  model: ReferenceModel,
  ids: readonly ArrayLike<number>[],
  noise: ArrayLike<number>,
): { B: number; S: number } {
  const B = ids.length, S = B > 0 ? ids[0].length : 0;
  const c = model.config, V = c.vocabSize, L = c.numLayers, Hkv = c.numKvHeads;
  if (B < 1 || S < 1) {
    throw new RangeError(`referenceTrainStep: ids: expected [B, S] with B, S >= 1, got ${B} rows`);
  }
  for (let b = 0; b < B; b++) {
    if (ids[b].length !== S) {
      throw new RangeError(
        `referenceTrainStep: ids row ${b} has length ${ids[b].length}, expected ${S}`,
      );
    }
    for (let t = 0; t < S; t++) {
      const id = ids[b][t];
      if (!Number.isInteger(id) || id < 0 || id >= V) {
        throw new RangeError(`referenceTrainStep: ids[${b}][${t}] = ${id} is outside [0, ${V})`);
      }
    }
  }
  if (noise.length !== L * B * Hkv * S) {
    throw new RangeError(
      `referenceTrainStep: noise: expected [${L}, ${B}, ${Hkv}, ${S}] (${
        L * B * Hkv * S
      } values), got ${noise.length}`,
    );
  }
  return { B, S };
}

/**
 * One training step of the DMS objective (SPEC §6) in float64: losses, logits and the
 * gradient of `lossTotal` w.r.t. every weight (HF names, {@linkcode referenceParams} order).
 *
 * @param ids B sequences of S token ids.
 * @param noise `[L, B, Hkv, S]` logistic noise (SPEC §4).
 * @throws {RangeError} naming `ids` or `noise` when a shape or id is wrong.
 */
export function referenceTrainStep(
  model: ReferenceModel,
  ids: readonly ArrayLike<number>[],
  noise: ArrayLike<number>,
  options: ReferenceStepOptions,
): ReferenceStepResult {
  const { B, S } = checkInputs(model, ids, noise);
  const c = model.config, L = c.numLayers, H = c.hiddenSize, V = c.vocabSize, Hkv = c.numKvHeads;
  const d = dimsOf(model, S), eps = c.rmsNormEps;
  const rope = ropeTable(S, model.invFreq, model.ropeAttentionScaling);
  const teacher = teacherForward(model, ids).logits; // [B, S, V], no gradient
  const logits = new Float64Array(B * S * V); // [B, S, V]
  const grads = zeroGrads(model);
  const lm = model.lmHead;

  // forward of every sequence, keeping what the backward needs
  const saved: { layers: LayerSaved[]; hn: RmsNormSaved; hL: Float64Array }[] = [];
  const fracClosed = new Float64Array(B); // [B]
  for (let b = 0; b < B; b++) {
    let h: Float64Array = new Float64Array(S * H); // [S, H]
    for (let t = 0; t < S; t++) {
      h.set(model.embed.subarray(ids[b][t] * H, (ids[b][t] + 1) * H), t * H);
    }
    const layers: LayerSaved[] = [];
    for (let l = 0; l < L; l++) {
      const nb = Float64Array.from({ length: Hkv * S }, (_, i) => noise[(l * B + b) * Hkv * S + i]); // [Hkv, S]
      const sv = layerForward(model, model.layers[l], h, nb, d, rope);
      layers.push(sv);
      fracClosed[b] += sv.hard.reduce((a, x) => a + x, 0) / (Hkv * S) / L;
      h = sv.out;
    }
    const hn = rmsNormForward(h, S, H, model.norm, eps); // [S, H]
    logits.set(linearForward(hn.y, S, lm.w, lm.b, V, H), b * S * V);
    saved.push({ layers, hn, hL: h });
  }

  // losses (SPEC §6) and their gradients w.r.t. the logits and the ST decisions
  let count = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < S; t++) if (ids[b][t] !== options.eosTokenId) count++;
  }
  const dLogits = new Float64Array(B * S * V); // [B, S, V]
  let lossDistill = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < S; t++) {
      if (ids[b][t] === options.eosTokenId) continue;
      const at = (b * S + t) * V;
      const { kl, dStudent } = klForwardBackward(
        logits.subarray(at, at + V),
        teacher.subarray(at, at + V),
      );
      lossDistill += kl / count;
      for (let v = 0; v < V; v++) dLogits[at + v] = dStudent[v] / count;
    }
  }
  let lossCr = 0;
  const dFrac = new Float64Array(B); // [B] ∂lossCr/∂fracClosed[b]
  for (let b = 0; b < B; b++) {
    const gap = options.targetFracToClose - fracClosed[b];
    if (gap > 0) {
      lossCr += gap / B;
      dFrac[b] = -1 / B;
    }
  }

  // backward, sequence by sequence
  for (let b = 0; b < B; b++) {
    const sv = saved[b];
    const dhn = linearBackward(
      sv.hn.y,
      S,
      lm.w,
      V,
      H,
      dLogits.subarray(b * S * V, (b + 1) * S * V),
      grads.lmHead.w,
      grads.lmHead.b,
    );
    let dh = rmsNormBackward(sv.hL, sv.hn.r, S, H, model.norm, dhn, grads.norm); // [S, H]
    const dHard = dFrac[b] / (L * Hkv * S);
    for (let l = L - 1; l >= 0; l--) {
      dh = layerBackward(model, model.layers[l], grads.layers[l], sv.layers[l], dh, dHard, d, rope);
    }
    for (let t = 0; t < S; t++) {
      const row = ids[b][t] * H;
      for (let i = 0; i < H; i++) grads.embed[row + i] += dh[t * H + i];
    }
  }
  const dmsFracClosed = fracClosed.reduce((a, x) => a + x, 0) / B;
  return {
    logits,
    logitsTeacher: teacher,
    lossDistill,
    lossCr,
    lossTotal: lossDistill + lossCr,
    fracClosed,
    dmsFracClosed,
    grads: namedArrays(grads, model.lmHead.w === model.embed),
  };
}
