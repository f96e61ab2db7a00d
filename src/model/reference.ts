/**
 * A readable CPU reference of the DMS decoder (Qwen3 / Llama), float64, plain
 * loops: the model-level oracle that the GPU model and the conformance runner
 * are checked against. nanoGPT style: one small helper per step, a shape
 * comment on every tensor line, no tricks.
 *
 * Three modes, all over whole sequences (positions 0..S−1):
 * - {@linkcode teacherForward}: plain causal attention (SPEC §3 teacher mode:
 *   DMS logits forced off). The borrowed query neuron is still zeroed, as (R)
 *   does (SPEC §1a).
 * - {@linkcode trainForward}: SPEC §1 decision logits (borrowed query neuron or
 *   separate adapter; "head"/"layer" granularity), §4 Gumbel-sigmoid with given
 *   noise `[L,B,Hkv,S]`, §3 soft mask, §6 frac_closed / dms_loss, model cr
 *   ({@linkcode compressionScalars}).
 * - {@linkcode inferenceForward}: hard decisions and the §5.1 visibility rule
 *   for a whole token sequence at once. Because prefill + decode is equivalent
 *   to the dense rule (SPEC §5.3), this is the oracle for a prefill of
 *   `promptLen` tokens followed by one decode step per remaining token. What a
 *   cache would report along the way (cache lengths, `get_cr`) is derived from
 *   its retained mask in `src/eval/observables.ts`.
 *
 * The weights and their loader live in `reference_weights.ts`, the attention
 * (and {@linkcode attentionOnlyReference}) in `reference_attention.ts`; both are
 * re-exported here. Index conventions come from `src/dms/oracle.ts` (shift by
 * one, visibility, gumbel-sigmoid); this file does not re-derive them.
 *
 * @example Teacher and DMS inference logits of a conformance model
 * ```ts
 * import { loadConfig } from "./config.ts";
 * import { openSafetensors } from "../io/safetensors.ts";
 * import { inferenceForward, loadReferenceModel, teacherForward, type WeightTensor } from "./reference.ts";
 * const dir = "testdata/conformance/B1_infer_qneuron_head";
 * const config = await loadConfig(dir);
 * using file = await openSafetensors(`${dir}/weights.safetensors`);
 * const weights = new Map<string, WeightTensor>();
 * for (const name of file.tensors.keys()) {
 *   const t = await file.read(name);
 *   weights.set(name, { shape: t.shape, data: t.data as Float32Array });
 * }
 * const model = loadReferenceModel(config, weights);
 * const { logits } = teacherForward(model, [[1, 2, 3]]); // [1, 3, V]
 * const dms = inferenceForward(model, [1, 2, 3, 4, 5, 6, 7, 8], 5); // prefill 5, decode 3
 * console.log(dms.decisions, dms.retainedMask); // [L, Hkv, 8], [8, L, Hkv, 8]
 * ```
 *
 * @module
 */

import {
  alphaFromQueryNeuron,
  gumbelSigmoid,
  hardDecision,
  trainFarBias,
  visibilityMask,
} from "../dms/oracle.ts";
import { applyRope, head, headsFirst, headsLast, linear, rmsNorm, silu } from "./_reference_ops.ts";
import { attendPage } from "./reference_attention.ts";
import type { ReferenceModel } from "./reference_weights.ts";
import { type CompressionScalars, compressionScalars } from "./reference_compression.ts";

export {
  type Linear,
  type LoadOptions,
  loadReferenceModel,
  type ReferenceLayer,
  type ReferenceModel,
  ropeInvFreq,
  type WeightMap,
  type WeightTensor,
} from "./reference_weights.ts";
export { type CompressionScalars, compressionScalars } from "./reference_compression.ts";
export {
  attendPage,
  type AttentionOnlyOutput,
  attentionOnlyReference,
} from "./reference_attention.ts";

// ---------------------------------------------------------------------------
// The decoder over one sequence

type Mode = "teacher" | "train" | "inference";

/** Everything one sequence's forward produces (per layer arrays stacked). */
interface SequenceTrace {
  /** `[S, V]` */
  logits: Float64Array;
  /** `[L, S, H]` hidden state after each decoder layer */
  layerOut: Float64Array;
  /** `[L, Hkv, S]` alpha per head (not broadcast) */
  alphaRaw: Float64Array;
  /** `[L, Hkv, S]` alpha after the "layer" broadcast */
  alpha: Float64Array;
  /** `[L, Hkv, S]` train: z = (alpha + noise)/tau after broadcast */
  z: Float64Array;
  /** `[L, Hkv, S]` train: σ(z) */
  p: Float64Array;
  /** `[L, Hkv, S]` train: 1[z > 0]; inference: 1[alpha > 0] (after broadcast) */
  decisions: Int32Array;
  /** `[L, Hq, S, D]` query fed to attention (after norm, RoPE, zeroing) */
  q: Float64Array;
  /** `[L, Hkv, S, D]` key after norm and RoPE */
  k: Float64Array;
  /** `[L, Hkv, S, D]` value */
  v: Float64Array;
}

/**
 * Runs the decoder over one token sequence.
 * noise:[L, Hkv, S] (train mode only).
 */
function forwardSequence(
  model: ReferenceModel,
  ids: ArrayLike<number>,
  mode: Mode,
  noise?: Float64Array,
): SequenceTrace {
  const c = model.config;
  const S = ids.length, H = c.hiddenSize, V = c.vocabSize, L = c.numLayers;
  const Hq = c.numHeads, Hkv = c.numKvHeads, D = c.headDim, G = Hq / Hkv;
  const W = c.dms.window, eps = c.rmsNormEps, scale = 1 / Math.sqrt(D);
  // SPEC §1 (a): only a DMS model borrows (and zeroes) a query channel; a plain model keeps all
  const borrowNeuron = c.isDms && !c.dms.separateAlpha;
  const tr: SequenceTrace = {
    logits: new Float64Array(S * V), // [S, V]
    layerOut: new Float64Array(L * S * H), // [L, S, H]
    alphaRaw: new Float64Array(L * Hkv * S), // [L, Hkv, S]
    alpha: new Float64Array(L * Hkv * S), // [L, Hkv, S]
    z: new Float64Array(L * Hkv * S), // [L, Hkv, S]
    p: new Float64Array(L * Hkv * S), // [L, Hkv, S]
    decisions: new Int32Array(L * Hkv * S), // [L, Hkv, S]
    q: new Float64Array(L * Hq * S * D), // [L, Hq, S, D]
    k: new Float64Array(L * Hkv * S * D), // [L, Hkv, S, D]
    v: new Float64Array(L * Hkv * S * D), // [L, Hkv, S, D]
  };

  let h = new Float64Array(S * H); // [S, H] residual stream
  for (let t = 0; t < S; t++) {
    const id = ids[t];
    if (!Number.isInteger(id) || id < 0 || id >= V) {
      throw new RangeError(`reference: token id ${id} at position ${t} is outside [0, ${V})`);
    }
    h.set(model.embed.subarray(id * H, (id + 1) * H), t * H);
  }

  for (let l = 0; l < L; l++) {
    const lw = model.layers[l];
    const x = rmsNorm(h, S, H, lw.inputNorm, eps); // [S, H]
    const q = headsFirst(linear(x, S, lw.qProj), S, Hq, D); // [Hq, S, D]
    const k = headsFirst(linear(x, S, lw.kProj), S, Hkv, D); // [Hkv, S, D]
    const v = headsFirst(linear(x, S, lw.vProj), S, Hkv, D); // [Hkv, S, D]
    const qn = lw.qNorm ? rmsNorm(q, Hq * S, D, lw.qNorm, eps) : q; // [Hq, S, D]
    const kn = lw.kNorm ? rmsNorm(k, Hkv * S, D, lw.kNorm, eps) : k; // [Hkv, S, D]

    // SPEC §1: decision logits, one per (KV head, position)
    const alphaRaw = tr.alphaRaw.subarray(l * Hkv * S, (l + 1) * Hkv * S); // [Hkv, S]
    if (lw.alphaProj && lw.alphaNorm) {
      // (b) adapter on the residual stream *before* input_layernorm
      const xa = rmsNorm(h, S, H, lw.alphaNorm, eps); // [S, H]
      const a = linear(xa, S, lw.alphaProj); // [S, Hkv]
      for (let g = 0; g < Hkv; g++) {
        for (let t = 0; t < S; t++) {
          alphaRaw[g * S + t] = a[t * Hkv + g] * c.dms.alphaScale - c.dms.alphaOffset;
        }
      }
    } else if (borrowNeuron) {
      // (a) borrowed neuron: channel D−1 of the first query head of each group, after q_norm
      for (let g = 0; g < Hkv; g++) {
        for (let t = 0; t < S; t++) {
          const idx = ((g * G) * S + t) * D + D - 1;
          alphaRaw[g * S + t] = alphaFromQueryNeuron(qn[idx], c.dms.alphaScale, c.dms.alphaOffset);
          qn[idx] = 0; // zeroed before RoPE ...
        }
      }
    }
    // dms_disable_eviction forces the logits to −1000, like teacher mode in (R) (SPEC §3); a plain
    // (non-DMS) model has no decision logits at all: it never evicts
    if (c.dms.disableEviction || !c.isDms) alphaRaw.fill(-1000);
    applyRope(qn, Hq, S, D, model);
    applyRope(kn, Hkv, S, D, model);
    if (borrowNeuron) {
      for (let g = 0; g < Hkv; g++) {
        for (let t = 0; t < S; t++) qn[((g * G) * S + t) * D + D - 1] = 0; // ... and again after
      }
    }
    const alpha = tr.alpha.subarray(l * Hkv * S, (l + 1) * Hkv * S); // [Hkv, S]
    for (let g = 0; g < Hkv; g++) {
      const src = c.dms.alphaPer === "layer" ? 0 : g; // "layer": head 0's logit for every head
      alpha.set(alphaRaw.subarray(src * S, (src + 1) * S), g * S);
    }
    tr.q.set(qn, l * Hq * S * D);
    tr.k.set(kn, l * Hkv * S * D);
    tr.v.set(v, l * Hkv * S * D);

    // attention, one KV page at a time
    const att = new Float64Array(Hq * S * D); // [Hq, S, D]
    for (let g = 0; g < Hkv; g++) {
      let score: (t: number, j: number, s: number) => number;
      if (mode === "teacher") {
        score = (t, j, s) => (j <= t ? s : -Infinity);
      } else if (mode === "train") {
        // SPEC §4: z = (alpha + noise)/tau; "layer" uses head 0's logit and head 0's noise
        const src = c.dms.alphaPer === "layer" ? 0 : g;
        const z = tr.z.subarray((l * Hkv + g) * S, (l * Hkv + g + 1) * S); // [S]
        for (let t = 0; t < S; t++) {
          const n = noise![(l * Hkv + src) * S + t];
          const gs = gumbelSigmoid(alphaRaw[src * S + t], n, c.dms.tau);
          z[t] = gs.z;
          tr.p[(l * Hkv + g) * S + t] = gs.p;
          tr.decisions[(l * Hkv + g) * S + t] = gs.hard;
        }
        // SPEC §3: −50000 above the diagonal, s within W, s + log σ(−z[j+1]) beyond
        const far = trainFarBias(z); // [S]
        score = (t, j, s) => (j > t ? -50000 : t - j <= W ? s : s + far[j]);
      } else {
        // SPEC §5.1: hard decisions, dense visibility
        const d = tr.decisions.subarray((l * Hkv + g) * S, (l * Hkv + g + 1) * S); // [S]
        for (let t = 0; t < S; t++) d[t] = hardDecision(alpha[g * S + t]);
        const vis = visibilityMask(d, W); // [S, S]
        score = (t, j, s) => (vis[t * S + j] ? s : -Infinity);
      }
      const qg = qn.subarray(g * G * S * D, (g + 1) * G * S * D); // [G, S, D]
      const out = attendPage(qg, head(kn, g, S, D), head(v, g, S, D), G, S, D, scale, score); // [G, S, D]
      att.set(out, g * G * S * D);
    }
    const o = linear(headsLast(att, S, Hq, D), S, lw.oProj); // [S, H]
    const h1 = h.map((x, i) => x + o[i]); // [S, H]
    const x2 = rmsNorm(h1, S, H, lw.postNorm, eps); // [S, H]
    const gate = linear(x2, S, lw.gate); // [S, I]
    const up = linear(x2, S, lw.up); // [S, I]
    const m = linear(gate.map((a, i) => silu(a) * up[i]), S, lw.down); // [S, H]
    h = h1.map((x, i) => x + m[i]); // [S, H]
    tr.layerOut.set(h, l * S * H);
  }
  const hn = rmsNorm(h, S, H, model.norm, eps); // [S, H]
  tr.logits = linear(hn, S, model.lmHead); // [S, V]
  return tr;
}

// ---------------------------------------------------------------------------
// Public modes

/** Output of {@linkcode teacherForward}. */
export interface TeacherOutput {
  /** `[B, S, V]` */
  logits: Float64Array;
  /** `[L, B, S, H]` hidden state after each decoder layer (before the final norm) */
  layerOut: Float64Array;
}

/**
 * Teacher mode: plain causal attention, no DMS decisions (SPEC §3, §6).
 *
 * @param ids B sequences of equal length S.
 */
export function teacherForward(
  model: ReferenceModel,
  ids: readonly ArrayLike<number>[],
): TeacherOutput {
  const { B, S } = batchShape(ids);
  const c = model.config, L = c.numLayers, H = c.hiddenSize, V = c.vocabSize;
  const logits = new Float64Array(B * S * V); // [B, S, V]
  const layerOut = new Float64Array(L * B * S * H); // [L, B, S, H]
  for (let b = 0; b < B; b++) {
    const tr = forwardSequence(model, ids[b], "teacher");
    logits.set(tr.logits, b * S * V);
    for (let l = 0; l < L; l++) {
      layerOut.set(tr.layerOut.subarray(l * S * H, (l + 1) * S * H), (l * B + b) * S * H);
    }
  }
  return { logits, layerOut };
}

/** Output of {@linkcode trainForward}; names follow the conformance tensors. */
export interface TrainOutput extends CompressionScalars {
  /** `[B, S, V]` train-mode logits */
  logits: Float64Array;
  /** `[L, B, S, H]` */
  layerOut: Float64Array;
  /** `[L, B, Hkv, S]` alpha per head (not broadcast) */
  decisionLogitsRaw: Float64Array;
  /** `[L, B, Hkv, S]` z = (alpha + noise)/tau (after the "layer" broadcast) */
  decisionLogitsNoisy: Float64Array;
  /** `[L, B, Hkv, S]` σ(z) */
  decisionProbs: Float64Array;
  /** `[L, B, Hkv, S]` 1[z > 0] */
  decisionsHard: Int32Array;
  /** `[L, B, Hkv, S]` forward value of `hard − stopgrad(p) + p` (= hard) */
  decisionsStraightThrough: Float64Array;
}

/**
 * Train mode (SPEC §1, §3, §4, §6): Gumbel-sigmoid decisions from the given
 * noise, soft far-window mask, compression loss ({@linkcode compressionScalars}).
 *
 * @param ids B sequences of equal length S.
 * @param noise `[L, B, Hkv, S]` logistic noise.
 * @param targetFracToClose α* of the schedule (SPEC §6).
 */
export function trainForward(
  model: ReferenceModel,
  ids: readonly ArrayLike<number>[],
  noise: ArrayLike<number>,
  targetFracToClose: number,
): TrainOutput {
  const { B, S } = batchShape(ids);
  const c = model.config, L = c.numLayers, H = c.hiddenSize, V = c.vocabSize;
  const Hkv = c.numKvHeads;
  if (noise.length !== L * B * Hkv * S) {
    throw new RangeError(
      `trainForward: noise: expected [${L}, ${B}, ${Hkv}, ${S}] (${
        L * B * Hkv * S
      } values), got ${noise.length}`,
    );
  }
  const n = L * B * Hkv * S;
  const out: Omit<TrainOutput, keyof CompressionScalars> = {
    logits: new Float64Array(B * S * V), // [B, S, V]
    layerOut: new Float64Array(L * B * S * H), // [L, B, S, H]
    decisionLogitsRaw: new Float64Array(n), // [L, B, Hkv, S]
    decisionLogitsNoisy: new Float64Array(n), // [L, B, Hkv, S]
    decisionProbs: new Float64Array(n), // [L, B, Hkv, S]
    decisionsHard: new Int32Array(n), // [L, B, Hkv, S]
    decisionsStraightThrough: new Float64Array(n), // [L, B, Hkv, S]
  };
  for (let b = 0; b < B; b++) {
    const nb = new Float64Array(L * Hkv * S); // [L, Hkv, S] this sequence's noise
    for (let l = 0; l < L; l++) {
      for (let i = 0; i < Hkv * S; i++) nb[l * Hkv * S + i] = noise[(l * B + b) * Hkv * S + i];
    }
    const tr = forwardSequence(model, ids[b], "train", nb);
    out.logits.set(tr.logits, b * S * V);
    for (let l = 0; l < L; l++) {
      out.layerOut.set(tr.layerOut.subarray(l * S * H, (l + 1) * S * H), (l * B + b) * S * H);
      const src = l * Hkv * S, dst = (l * B + b) * Hkv * S, len = Hkv * S;
      out.decisionLogitsRaw.set(tr.alphaRaw.subarray(src, src + len), dst);
      out.decisionLogitsNoisy.set(tr.z.subarray(src, src + len), dst);
      out.decisionProbs.set(tr.p.subarray(src, src + len), dst);
      out.decisionsHard.set(tr.decisions.subarray(src, src + len), dst);
      for (let i = 0; i < len; i++) {
        // straight-through forward value: hard − p + p (SPEC §4)
        out.decisionsStraightThrough[dst + i] = tr.decisions[src + i] - tr.p[src + i] +
          tr.p[src + i];
      }
    }
  }
  const sc = compressionScalars(out.decisionsStraightThrough, L, B, targetFracToClose);
  return { ...out, ...sc };
}

/** Output of {@linkcode inferenceForward}; names follow the conformance tensors. */
export interface InferenceOutput {
  /** `[T, V]` row t = logits after token t */
  logits: Float64Array;
  /** `[L, T, H]` */
  layerOut: Float64Array;
  /** `[L, Hkv, T]` alpha (after the "layer" broadcast) */
  decisionLogits: Float64Array;
  /** `[L, Hkv, T]` `1[alpha > 0]`, unshifted: d[t] marks key t−1 */
  decisions: Int32Array;
  /** `[L, Hq, T, D]` query fed to attention (after q_norm, RoPE, zeroing) */
  q: Float64Array;
  /** `[L, Hkv, T, D]` key after k_norm and RoPE */
  k: Float64Array;
  /** `[L, Hkv, T, D]` */
  v: Float64Array;
  /** `[T, L, Hkv, T]` keys visible to query t (SPEC §5.1) */
  retainedMask: Int32Array;
}

/**
 * Inference (SPEC §5): hard decisions and the dense §5.1 visibility rule over
 * the whole sequence, standing for a prefill of `promptLen` tokens followed by
 * one decode step per further token (teacher-forced).
 *
 * `promptLen` (P) is only validated: the dense rule gives the same numbers
 * for every split into prefill and decode (SPEC §5.3). What a cache reports
 * after each step (lengths, `get_cr`, the −1 rows before P−1) is derived from
 * `retainedMask` by `src/eval/observables.ts`.
 */
export function inferenceForward(
  model: ReferenceModel,
  ids: ArrayLike<number>,
  promptLen: number,
): InferenceOutput {
  const T = ids.length, P = promptLen;
  if (!Number.isInteger(P) || P < 1 || P > T) {
    throw new RangeError(`inferenceForward: promptLen must be an integer in [1, ${T}], got ${P}`);
  }
  const c = model.config, L = c.numLayers, Hkv = c.numKvHeads, W = c.dms.window;
  const tr = forwardSequence(model, ids, "inference");

  const retainedMask = new Int32Array(T * L * Hkv * T); // [T, L, Hkv, T]
  for (let l = 0; l < L; l++) {
    for (let g = 0; g < Hkv; g++) {
      const d = tr.decisions.subarray((l * Hkv + g) * T, (l * Hkv + g + 1) * T); // [T]
      const vis = visibilityMask(d, W); // [T, T]
      for (let t = 0; t < T; t++) {
        for (let j = 0; j <= t; j++) retainedMask[((t * L + l) * Hkv + g) * T + j] = vis[t * T + j];
      }
    }
  }
  return {
    logits: tr.logits,
    layerOut: tr.layerOut,
    decisionLogits: tr.alpha,
    decisions: tr.decisions,
    q: tr.q,
    k: tr.k,
    v: tr.v,
    retainedMask,
  };
}

function batchShape(ids: readonly ArrayLike<number>[]): { B: number; S: number } {
  const B = ids.length;
  if (B < 1) throw new RangeError("reference: need at least one sequence (B >= 1)");
  const S = ids[0].length;
  for (let b = 0; b < B; b++) {
    if (ids[b].length !== S) {
      throw new RangeError(
        `reference: sequence ${b} has length ${ids[b].length}, expected ${S} like sequence 0`,
      );
    }
  }
  if (S < 1) throw new RangeError("reference: sequences must hold at least one token");
  return { B, S };
}
