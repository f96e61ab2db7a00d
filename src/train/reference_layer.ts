/**
 * One decoder layer of the float64 reference training step (`reference_step.ts`) over one
 * sequence, train mode (SPEC §1, §3, §4): the forward keeping what the backward needs, and the
 * hand-written backward accumulating every weight's gradient (VJPs in `reference_vjp.ts`).
 *
 * @module
 */

import type { ReferenceLayer, ReferenceModel } from "../model/reference.ts";
import {
  type AttentionSaved,
  linearBackward,
  linearForward,
  rmsNormBackward,
  rmsNormForward,
  type RmsNormSaved,
  ropeBackward,
  ropeForward,
  type RopeTable,
  sigmoid,
  swigluBackward,
  swigluForward,
  trainAttentionBackward,
  trainAttentionForward,
} from "./reference_vjp.ts";
import { logSigmoid } from "../dms/oracle.ts";

/** A linear layer's arrays (weights or gradients). */
export interface LinArrays {
  /** `[out, in]` */
  readonly w: Float64Array;
  /** `[out]` or null */
  readonly b: Float64Array | null;
}
/** One decoder layer's arrays (weights or gradients), shaped like {@linkcode ReferenceLayer}. */
export interface LayerArrays {
  /** inputNorm */
  readonly inputNorm: Float64Array;
  /** qProj */
  readonly qProj: LinArrays;
  /** kProj */
  readonly kProj: LinArrays;
  /** vProj */
  readonly vProj: LinArrays;
  /** oProj */
  readonly oProj: LinArrays;
  /** qNorm */
  readonly qNorm: Float64Array | null;
  /** kNorm */
  readonly kNorm: Float64Array | null;
  /** postNorm */
  readonly postNorm: Float64Array;
  /** gate */
  readonly gate: LinArrays;
  /** up */
  readonly up: LinArrays;
  /** down */
  readonly down: LinArrays;
  /** alphaNorm */
  readonly alphaNorm: Float64Array | null;
  /** alphaProj */
  readonly alphaProj: LinArrays | null;
}

/** Everything one layer's backward needs. */
export interface LayerSaved {
  /** [S, H] layer input (residual stream) */
  h: Float64Array;
  /** adapter: RMSNorm(h; dms_proj_alpha_norm) [S, H] */
  xa: RmsNormSaved | null;
  /** RMSNorm(h; input_layernorm) [S, H] */
  x: RmsNormSaved;
  /** [Hq, S, D] q_proj, heads first, before q_norm */
  q: Float64Array;
  /** [Hkv, S, D] */
  k: Float64Array;
  /** [Hkv, S, D] */
  v: Float64Array;
  /** q_norm over D, rows Hq·S */
  qn: RmsNormSaved | null;
  /** kn */
  kn: RmsNormSaved | null;
  /** [Hq, S, D] query fed to attention (after RoPE and zeroing) */
  qr: Float64Array;
  /** [Hkv, S, D] key after RoPE */
  kr: Float64Array;
  /** [Hkv, S] σ(z) after the "layer" broadcast */
  p: Float64Array;
  /** [Hkv, S] 1[z > 0] */
  hard: Float64Array;
  /** per KV head */
  att: AttentionSaved[];
  /** [S, Hq·D] */
  attCat: Float64Array;
  /** [S, H] after the attention residual */
  h1: Float64Array;
  /** RMSNorm(h1; post_attention_layernorm) */
  x2: RmsNormSaved;
  /** [S, I] */
  gate: Float64Array;
  /** [S, I] */
  up: Float64Array;
  /** [S, I] silu(gate)·up */
  m: Float64Array;
  /** [S, H] layer output */
  out: Float64Array;
}

/** Sizes of one layer over one sequence. */
export interface Dims {
  /** S */
  S: number;
  /** H */
  H: number;
  /** Hq */
  Hq: number;
  /** Hkv */
  Hkv: number;
  /** D */
  D: number;
  /** G */
  G: number;
  /** I */
  I: number;
}

/** {@linkcode Dims} of a model for sequences of S tokens. */
export function dimsOf(model: ReferenceModel, S: number): Dims {
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
export function layerForward(
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
export function layerBackward(
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
