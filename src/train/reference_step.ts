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

import { type ReferenceLayer, type ReferenceModel, teacherForward } from "../model/reference.ts";
import {
  type AttentionSaved,
  klForwardBackward,
  linearBackward,
  linearForward,
  rmsNormBackward,
  rmsNormForward,
  type RmsNormSaved,
  ropeBackward,
  ropeForward,
  type RopeTable,
  ropeTable,
  sigmoid,
  swigluBackward,
  swigluForward,
  trainAttentionBackward,
  trainAttentionForward,
} from "./reference_vjp.ts";
import { logSigmoid } from "../dms/oracle.ts";

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

/** A linear layer's arrays (weights or gradients). */
interface LinArrays {
  readonly w: Float64Array;
  readonly b: Float64Array | null;
}
/** One decoder layer's arrays (weights or gradients), shaped like {@linkcode ReferenceLayer}. */
interface LayerArrays {
  readonly inputNorm: Float64Array;
  readonly qProj: LinArrays;
  readonly kProj: LinArrays;
  readonly vProj: LinArrays;
  readonly oProj: LinArrays;
  readonly qNorm: Float64Array | null;
  readonly kNorm: Float64Array | null;
  readonly postNorm: Float64Array;
  readonly gate: LinArrays;
  readonly up: LinArrays;
  readonly down: LinArrays;
  readonly alphaNorm: Float64Array | null;
  readonly alphaProj: LinArrays | null;
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
// One decoder layer over one sequence, train mode

/** Everything one layer's backward needs. */
interface LayerSaved {
  h: Float64Array; // [S, H] layer input (residual stream)
  xa: RmsNormSaved | null; // adapter: RMSNorm(h; dms_proj_alpha_norm) [S, H]
  x: RmsNormSaved; // RMSNorm(h; input_layernorm) [S, H]
  q: Float64Array; // [Hq, S, D] q_proj, heads first, before q_norm
  k: Float64Array; // [Hkv, S, D]
  v: Float64Array; // [Hkv, S, D]
  qn: RmsNormSaved | null; // q_norm over D, rows Hq·S
  kn: RmsNormSaved | null;
  qr: Float64Array; // [Hq, S, D] query fed to attention (after RoPE and zeroing)
  kr: Float64Array; // [Hkv, S, D] key after RoPE
  p: Float64Array; // [Hkv, S] σ(z) after the "layer" broadcast
  hard: Float64Array; // [Hkv, S] 1[z > 0]
  att: AttentionSaved[]; // per KV head
  attCat: Float64Array; // [S, Hq·D]
  h1: Float64Array; // [S, H] after the attention residual
  x2: RmsNormSaved; // RMSNorm(h1; post_attention_layernorm)
  gate: Float64Array; // [S, I]
  up: Float64Array; // [S, I]
  m: Float64Array; // [S, I] silu(gate)·up
  out: Float64Array; // [S, H] layer output
}

interface Dims {
  S: number;
  H: number;
  Hq: number;
  Hkv: number;
  D: number;
  G: number;
  I: number;
}

function dimsOf(model: ReferenceModel, S: number): Dims {
  const c = model.config;
  return {
    S,
    H: c.hiddenSize,
    Hq: c.numHeads,
    Hkv: c.numKvHeads,
    D: c.headDim,
    G: c.numHeads / c.numKvHeads,
    I: c.intermediateSize,
  };
}

/** `[S, nh·D]` -> `[nh, S, D]`, or back with `inverse`. */
function heads(x: Float64Array, S: number, nh: number, D: number, inverse = false): Float64Array {
  const y = new Float64Array(nh * S * D);
  for (let h = 0; h < nh; h++) {
    for (let t = 0; t < S; t++) {
      for (let d = 0; d < D; d++) {
        const a = t * nh * D + h * D + d, b = (h * S + t) * D + d;
        if (inverse) y[a] = x[b];
        else y[b] = x[a];
      }
    }
  }
  return y;
}

/** Does the decision logit depend on the weights? (No for teacher-like configs: constant −1000.) */
function learnsDecisions(model: ReferenceModel): boolean {
  return model.config.isDms && !model.config.dms.disableEviction;
}

/** The borrowed channel `(head g·G, t, D−1)` of q:[Hq, S, D]. */
function borrowedIndex(g: number, t: number, d: Dims): number {
  return ((g * d.G) * d.S + t) * d.D + d.D - 1;
}

/** Train-mode forward of one layer (SPEC §1, §3, §4). h:[S, H] noise:[Hkv, S] */
function layerForward(
  model: ReferenceModel,
  lw: ReferenceLayer,
  h: Float64Array,
  noise: ArrayLike<number>,
  d: Dims,
  rope: RopeTable,
): LayerSaved {
  const c = model.config, eps = c.rmsNormEps, { S, H, Hq, Hkv, D, G, I } = d;
  const { window: W, alphaScale, alphaOffset, tau } = c.dms;
  const borrow = c.isDms && !c.dms.separateAlpha;
  const x = rmsNormForward(h, S, H, lw.inputNorm, eps); // [S, H]
  const lin = (inp: Float64Array, l: ReferenceLayer["qProj"]) =>
    linearForward(inp, S, l.w, l.b, l.out, l.in);
  const q = heads(lin(x.y, lw.qProj), S, Hq, D); // [Hq, S, D]
  const k = heads(lin(x.y, lw.kProj), S, Hkv, D); // [Hkv, S, D]
  const v = heads(lin(x.y, lw.vProj), S, Hkv, D); // [Hkv, S, D]
  const qn = lw.qNorm ? rmsNormForward(q, Hq * S, D, lw.qNorm, eps) : null;
  const kn = lw.kNorm ? rmsNormForward(k, Hkv * S, D, lw.kNorm, eps) : null;
  const qPre = Float64Array.from(qn ? qn.y : q); // [Hq, S, D] copy: zeroed below

  // SPEC §1: decision logits alphaRaw:[Hkv, S]
  const alphaRaw = new Float64Array(Hkv * S);
  let xa: RmsNormSaved | null = null;
  if (lw.alphaProj && lw.alphaNorm) {
    xa = rmsNormForward(h, S, H, lw.alphaNorm, eps); // [S, H] before input_layernorm
    const a = lin(xa.y, lw.alphaProj); // [S, Hkv]
    for (let g = 0; g < Hkv; g++) {
      for (let t = 0; t < S; t++) alphaRaw[g * S + t] = a[t * Hkv + g] * alphaScale - alphaOffset;
    }
  } else if (borrow) {
    for (let g = 0; g < Hkv; g++) {
      for (let t = 0; t < S; t++) {
        const i = borrowedIndex(g, t, d);
        alphaRaw[g * S + t] = qPre[i] * alphaScale - alphaOffset;
        qPre[i] = 0; // zeroed before RoPE ...
      }
    }
  }
  if (!learnsDecisions(model)) alphaRaw.fill(-1000);
  const qr = ropeForward(qPre, Hq, S, D, rope); // [Hq, S, D]
  if (borrow) {
    for (let g = 0; g < Hkv; g++) {
      for (let t = 0; t < S; t++) qr[borrowedIndex(g, t, d)] = 0; // ... and after
    }
  }
  const kr = ropeForward(kn ? kn.y : k, Hkv, S, D, rope); // [Hkv, S, D]

  // SPEC §4 Gumbel-sigmoid, "layer": head 0's logit and noise for every head
  const p = new Float64Array(Hkv * S), hard = new Float64Array(Hkv * S); // [Hkv, S]
  const att: AttentionSaved[] = [];
  const attHeads = new Float64Array(Hq * S * D); // [Hq, S, D]
  for (let g = 0; g < Hkv; g++) {
    const src = c.dms.alphaPer === "layer" ? 0 : g;
    const far = new Float64Array(S); // [S] SPEC §3: log σ(−z[j+1]), z padded with 0
    for (let t = 0; t < S; t++) {
      const z = (alphaRaw[src * S + t] + noise[src * S + t]) / tau;
      p[g * S + t] = sigmoid(z);
      hard[g * S + t] = z > 0 ? 1 : 0;
      if (t > 0) far[t - 1] = logSigmoid(-z);
    }
    far[S - 1] = logSigmoid(0);
    const sv = trainAttentionForward(
      qr.subarray(g * G * S * D, (g + 1) * G * S * D),
      kr.subarray(g * S * D, (g + 1) * S * D),
      v.subarray(g * S * D, (g + 1) * S * D),
      far,
      G,
      S,
      D,
      1 / Math.sqrt(D),
      W,
    );
    att.push(sv);
    attHeads.set(sv.out, g * G * S * D);
  }
  const attCat = heads(attHeads, S, Hq, D, true); // [S, Hq·D]
  const o = lin(attCat, lw.oProj); // [S, H]
  const h1 = h.map((a, i) => a + o[i]); // [S, H]
  const x2 = rmsNormForward(h1, S, H, lw.postNorm, eps); // [S, H]
  const gate = lin(x2.y, lw.gate), up = lin(x2.y, lw.up); // [S, I]
  const m = swigluForward(gate, up); // [S, I]
  const dn = linearForward(m, S, lw.down.w, lw.down.b, H, I); // [S, H]
  const out = h1.map((a, i) => a + dn[i]); // [S, H]
  return { h, xa, x, q, k, v, qn, kn, qr, kr, p, hard, att, attCat, h1, x2, gate, up, m, out };
}

/**
 * Backward of one layer. dOut:[S, H] is ∂L/∂(layer output); `dHard` is ∂L/∂(each
 * straight-through decision of this layer) (the compression loss's share, the same for
 * every (head, position)). Accumulates into `gw`; returns ∂L/∂h:[S, H].
 */
function layerBackward(
  model: ReferenceModel,
  lw: ReferenceLayer,
  gw: LayerArrays,
  sv: LayerSaved,
  dOut: Float64Array,
  dHard: number,
  d: Dims,
  rope: RopeTable,
): Float64Array {
  const c = model.config, { S, H, Hq, Hkv, D, G, I } = d;
  const { window: W, alphaScale, tau } = c.dms;
  const borrow = c.isDms && !c.dms.separateAlpha;
  const linB = (x: Float64Array, l: ReferenceLayer["qProj"], g: LinArrays, dy: Float64Array) =>
    linearBackward(x, S, l.w, l.out, l.in, dy, g.w, g.b);

  // MLP: out = h1 + down(silu(gate)·up)
  const dm = linearBackward(sv.m, S, lw.down.w, H, I, dOut, gw.down.w, gw.down.b); // [S, I]
  const { dgate, dup } = swigluBackward(sv.gate, sv.up, dm); // [S, I]
  const dx2 = linB(sv.x2.y, lw.gate, gw.gate, dgate); // [S, H]
  const dx2u = linB(sv.x2.y, lw.up, gw.up, dup);
  for (let i = 0; i < dx2.length; i++) dx2[i] += dx2u[i];
  const dh1 = rmsNormBackward(sv.h1, sv.x2.r, S, H, lw.postNorm, dx2, gw.postNorm); // [S, H]
  for (let i = 0; i < dh1.length; i++) dh1[i] += dOut[i];

  // attention: h1 = h + o_proj(attCat)
  const dAtt = heads(linB(sv.attCat, lw.oProj, gw.oProj, dh1), S, Hq, D); // [Hq, S, D]
  const dqr = new Float64Array(Hq * S * D); // [Hq, S, D]
  const dkr = new Float64Array(Hkv * S * D), dv = new Float64Array(Hkv * S * D); // [Hkv, S, D]
  const dAlpha = new Float64Array(Hkv * S); // [Hkv, S] ∂L/∂alphaRaw
  for (let g = 0; g < Hkv; g++) {
    const qs = g * G * S * D, ks = g * S * D;
    const r = trainAttentionBackward(
      sv.qr.subarray(qs, qs + G * S * D),
      sv.kr.subarray(ks, ks + S * D),
      sv.v.subarray(ks, ks + S * D),
      sv.att[g].prob,
      dAtt.subarray(qs, qs + G * S * D),
      G,
      S,
      D,
      1 / Math.sqrt(D),
      W,
    );
    dqr.set(r.dq, qs);
    dkr.set(r.dk, ks);
    dv.set(r.dv, ks);
    // z[t]: soft mask far[t−1] = log σ(−z[t]) (d/dz = −σ(z)) and the ST decision (dp/dz = p(1−p))
    const src = c.dms.alphaPer === "layer" ? 0 : g;
    for (let t = 0; t < S; t++) {
      const p = sv.p[g * S + t];
      let dz = dHard * p * (1 - p);
      if (t > 0) dz += -p * r.dfar[t - 1];
      dAlpha[src * S + t] += dz / tau;
    }
  }
  if (!learnsDecisions(model)) dAlpha.fill(0);

  // q: zeroing after RoPE blocks the channel, RoPE^T, zeroing before RoPE blocks it again,
  // then the decision logit's gradient enters the borrowed channel (read before the zeroing)
  if (borrow) {
    for (let g = 0; g < Hkv; g++) for (let t = 0; t < S; t++) dqr[borrowedIndex(g, t, d)] = 0;
  }
  const dqPre = ropeBackward(dqr, Hq, S, D, rope); // [Hq, S, D]
  if (borrow) {
    for (let g = 0; g < Hkv; g++) {
      for (let t = 0; t < S; t++) dqPre[borrowedIndex(g, t, d)] = dAlpha[g * S + t] * alphaScale;
    }
  }
  const dkPre = ropeBackward(dkr, Hkv, S, D, rope); // [Hkv, S, D]
  const dq = sv.qn ? rmsNormBackward(sv.q, sv.qn.r, Hq * S, D, lw.qNorm!, dqPre, gw.qNorm!) : dqPre;
  const dk = sv.kn
    ? rmsNormBackward(sv.k, sv.kn.r, Hkv * S, D, lw.kNorm!, dkPre, gw.kNorm!)
    : dkPre;
  const dx = linB(sv.x.y, lw.qProj, gw.qProj, heads(dq, S, Hq, D, true)); // [S, H]
  const dxk = linB(sv.x.y, lw.kProj, gw.kProj, heads(dk, S, Hkv, D, true));
  const dxv = linB(sv.x.y, lw.vProj, gw.vProj, heads(dv, S, Hkv, D, true));
  for (let i = 0; i < dx.length; i++) dx[i] += dxk[i] + dxv[i];
  const dh = rmsNormBackward(sv.h, sv.x.r, S, H, lw.inputNorm, dx, gw.inputNorm); // [S, H]
  for (let i = 0; i < dh.length; i++) dh[i] += dh1[i];

  // adapter: alphaRaw[g, t] = (RMSNorm(h; alpha_norm) @ Wα^T)[t, g]·scale − offset
  if (sv.xa && lw.alphaProj && lw.alphaNorm) {
    const da = new Float64Array(S * Hkv); // [S, Hkv]
    for (let g = 0; g < Hkv; g++) {
      for (let t = 0; t < S; t++) da[t * Hkv + g] = dAlpha[g * S + t] * alphaScale;
    }
    const dxa = linB(sv.xa.y, lw.alphaProj, gw.alphaProj!, da); // [S, H]
    const dha = rmsNormBackward(sv.h, sv.xa.r, S, H, lw.alphaNorm, dxa, gw.alphaNorm!);
    for (let i = 0; i < dh.length; i++) dh[i] += dha[i];
  }
  return dh;
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
