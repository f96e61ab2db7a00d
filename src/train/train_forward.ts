/**
 * The training-mode forward of the Qwen3/Llama decoder recorded on a {@linkcode Tape}: the same
 * sequence of ops as `Transformer.forward` (src/model/transformer.ts `#layer`), each with its
 * backward, so that `tape.backward()` yields the gradient of every weight (SPEC §1, §3, §4).
 *
 * One layer (shapes for B rows of T tokens, N = B·T):
 * ```
 * x:[N, H] → RMSNorm → q:[N, Hq·D] k, v:[N, Hkv·D] → [B, T, h, D] → q_norm/k_norm (Qwen3)
 *   → decision logit raw:[B, T, Hkv] (borrowed neuron: takeQueryNeuron, SPEC §1a;
 *     adapter: Wα·RMSNormα(x), SPEC §1b)
 *   → [B, h, T, D] → RoPE → zeroQueryNeuron → trainDecisions (noise, SPEC §4)
 *   → attention(q, k, v, { window, farBias }) (SPEC §3) → [N, Hq·D] → o_proj → + x
 *   → RMSNorm → down(silu(gate)·up) → + x
 * ```
 * Without decisions (a plain model, or the "lm" objective) attention is ordinary causal
 * attention; the borrowed neuron of a DMS model is still zeroed (teacher mode does the same).
 *
 * @module
 */

import { embedding } from "../ops/embedding.ts";
import { embeddingBackward } from "../ops/embedding_backward.ts";
import { linear, matmul } from "../ops/matmul.ts";
import { linearBackward } from "../ops/matmul_backward.ts";
import { takeQueryNeuron, trainDecisions, zeroQueryNeuron } from "../dms/decisions.ts";
import {
  takeQueryNeuronBackward,
  trainDecisionsBackward,
  zeroQueryNeuronBackward,
} from "../dms/decisions_backward.ts";
import { Tensor } from "../tensor/tensor.ts";
import type { ModelConfig } from "../model/config.ts";
import type { ChunkedMatrix, LayerWeights } from "../model/weights.ts";
import type { Tape } from "./tape.ts";
import {
  addT,
  attentionT,
  type F32,
  give,
  keep,
  linearT,
  rmsNormT,
  ropeT,
  swapT,
  swigluT,
  viewT,
} from "./tape_ops.ts";

/** What one training layer needs besides its weights. */
export interface LayerContext {
  /** The model's configuration. */
  config: ModelConfig;
  /** Batch rows. */
  batch: number;
  /** Tokens per row. */
  seqLen: number;
  /** `[B, T]` i32 positions. */
  positions: Tensor<"i32">;
  /** `[D/2]` f32 RoPE inverse frequencies (`invFreqFor(config)`). */
  invFreq: F32;
  /** This layer's logistic noise `[B, Hkv, T]`; absent: no decisions (causal attention). */
  noise?: F32;
}

/** Output of {@linkcode trainLayer}, owned by the caller. */
export interface LayerOutput {
  /** `[N, H]` the layer's output (residual stream). */
  out: F32;
  /** `[B, Hkv, T]` straight-through decisions (SPEC §4), when the layer decided. */
  straightThrough?: F32;
}

/**
 * One decoder layer in training mode over `x:[N, H]` (not disposed), recorded on `tape`.
 *
 * @param tape Where the backward goes (a disabled tape records nothing).
 * @param l Layer index (record names).
 * @param w The layer's weights (f32).
 * @param x `[B·T, H]` f32 input.
 * @param ctx Shapes, positions, RoPE table and noise.
 */
export function trainLayer(
  tape: Tape,
  l: number,
  w: LayerWeights,
  x: F32,
  ctx: LayerContext,
): LayerOutput {
  const cfg = ctx.config, B = ctx.batch, T = ctx.seqLen;
  const Hq = cfg.numHeads, Hkv = cfg.numKvHeads, D = cfg.headDim, eps = cfg.rmsNormEps;
  const dms = cfg.dms, p = `layer ${l} `;
  const useNeuron = cfg.isDms && !dms.separateAlpha;
  const decide = ctx.noise !== undefined && cfg.isDms;
  const trash: Tensor[] = []; // forward intermediates this function disposes at the end
  const t = <X extends Tensor>(x: X): X => (trash.push(x), x);

  // --- projections q:[B, T, Hq, D], k, v:[B, T, Hkv, D]
  const h = t(rmsNormT(tape, p + "input_layernorm", x, w.inputNorm, eps));
  let q = t(linearT(tape, p + "q_proj", h, w.qProj, w.qBias));
  let k = t(linearT(tape, p + "k_proj", h, w.kProj, w.kBias));
  let v = t(linearT(tape, p + "v_proj", h, w.vProj, w.vBias));
  q = t(viewT(tape, p + "q view", q, [B, T, Hq, D]));
  k = t(viewT(tape, p + "k view", k, [B, T, Hkv, D]));
  v = t(viewT(tape, p + "v view", v, [B, T, Hkv, D]));
  if (w.qNorm && w.kNorm) {
    q = t(rmsNormT(tape, p + "q_norm", q, w.qNorm, eps));
    k = t(rmsNormT(tape, p + "k_norm", k, w.kNorm, eps));
  }

  // --- decision logit raw:[B, T, Hkv] (SPEC §1)
  let raw: F32 | undefined;
  if (useNeuron) {
    const before = q;
    const r = t(takeQueryNeuron(before, Hkv)); // zeroes channel D−1 of each group's head 0
    q = t(keep(before)); // "q after the take": a new identity for the gradient
    const after = q;
    tape.record(p + "take_query_neuron", () => {
      const dq = tape.grad(after), dr = tape.grad(r);
      if (!tape.needsGrad(before) || (!dq && !dr)) return;
      using zq = dq ? undefined : Tensor.zeros(after.gpu, after.shape, "f32");
      using zr = dr ? undefined : Tensor.zeros(r.gpu, r.shape, "f32");
      tape.accumulate(before, takeQueryNeuronBackward(dq ?? zq!, dr ?? zr!, Hkv));
    }, { outputs: [after, r] });
    if (decide) raw = r;
  } else if (decide && w.alphaProj && w.alphaNorm) {
    const an = t(rmsNormT(tape, p + "dms_proj_alpha_norm", x, w.alphaNorm, eps)); // pre-norm residual
    const r = t(linearT(tape, p + "dms_proj_alpha", an, w.alphaProj, w.alphaBias)); // [N, Hkv]
    raw = t(viewT(tape, p + "alpha view", r, [B, T, Hkv]));
  }

  // --- attention layout [B, h, T, D], RoPE, neuron zeroed again
  const qh = t(swapT(tape, p + "q swap", q)), kh = t(swapT(tape, p + "k swap", k));
  const vh = t(swapT(tape, p + "v swap", v));
  let qr = t(ropeT(tape, p + "q rope", qh, ctx.positions, ctx.invFreq));
  const kr = t(ropeT(tape, p + "k rope", kh, ctx.positions, ctx.invFreq));
  if (useNeuron) {
    const before = qr;
    zeroQueryNeuron(before, Hkv);
    qr = t(keep(before));
    const after = qr;
    tape.record(p + "zero_query_neuron", () => {
      const dq = tape.grad(after);
      if (dq && tape.needsGrad(before)) tape.accumulate(before, zeroQueryNeuronBackward(dq, Hkv));
    }, { outputs: [after] });
  }

  // --- decisions (SPEC §4) and attention (SPEC §3)
  let att: F32, st: F32 | undefined;
  if (raw) {
    const opts = {
      alphaScale: dms.alphaScale,
      alphaOffset: dms.alphaOffset,
      perLayer: dms.alphaPer === "layer",
      tau: dms.tau,
    };
    const noise = ctx.noise!;
    const dec = trainDecisions(raw, noise, opts);
    for (const u of [dec.alpha, dec.z, dec.prob, dec.hard]) u.dispose();
    const farBias = t(dec.farBias);
    st = dec.straightThrough;
    const sr = keep(raw), sn = keep(noise), rawIn = raw, stOut = st;
    tape.record(p + "decisions", () => {
      const dFarBias = tape.grad(farBias), dStraightThrough = tape.grad(stOut);
      if (!tape.needsGrad(rawIn) || (!dFarBias && !dStraightThrough)) return;
      tape.accumulate(rawIn, trainDecisionsBackward(sr, sn, opts, { dFarBias, dStraightThrough }));
    }, { outputs: [farBias, stOut], saves: [sr, sn] });
    att = t(attentionT(tape, p + "attention", qr, kr, vh, { window: dms.window, farBias }));
  } else {
    att = t(attentionT(tape, p + "attention", qr, kr, vh));
  }

  // --- output projection, residual, MLP, residual
  const ao = t(swapT(tape, p + "att swap", att)); // [B, T, Hq, D]
  const aoFlat = t(viewT(tape, p + "att view", ao, [B * T, Hq * D]));
  const o = t(linearT(tape, p + "o_proj", aoFlat, w.oProj, w.oBias));
  const x1 = t(addT(tape, p + "attention residual", x, o));
  const h2 = t(rmsNormT(tape, p + "post_attention_layernorm", x1, w.postNorm, eps));
  const g = t(linearT(tape, p + "gate_proj", h2, w.gateProj, w.gateBias));
  const u = t(linearT(tape, p + "up_proj", h2, w.upProj, w.upBias));
  const a = t(swigluT(tape, p + "swiglu", g, u));
  const m = t(linearT(tape, p + "down_proj", a, w.downProj, w.downBias));
  const out = addT(tape, p + "mlp residual", x1, m);
  for (const d of trash) d.dispose();
  return st ? { out, straightThrough: st } : { out };
}

/**
 * `embedding(ids, W)` over a row-chunked table: `ids:[N]` i32 → `[N, H]`; backward: dW per chunk
 * (deterministic sorted segments), accumulated into each chunk that needs it.
 */
export function embedT(tape: Tape, ids: Tensor<"i32">, table: ChunkedMatrix): F32 {
  const gpu = ids.gpu;
  const x = Tensor.zeros(gpu, [ids.size, table.cols], "f32");
  for (const c of table.chunks) embedding(ids, c.tensor, { rowOffset: c.rowStart, out: x });
  const sids = keep(ids);
  tape.record("embed_tokens", () => {
    const dx = tape.grad(x);
    if (!dx) return;
    for (const c of table.chunks) {
      if (!tape.needsGrad(c.tensor)) continue;
      tape.accumulate(
        c.tensor,
        embeddingBackward(sids, dx, table.rows, {
          rowOffset: c.rowStart,
          rows: c.tensor.shape[0],
        }),
      );
    }
  }, { outputs: [x], saves: [sids] });
  return x;
}

/**
 * The LM head over a row-chunked matrix: `h:[N, H]` → logits `[N, V]`; backward: dh summed over
 * the chunks, dW of each chunk that needs it (a frozen single-chunk head: dh = dy·W only).
 */
export function lmHeadT(tape: Tape, h: F32, m: ChunkedMatrix): F32 {
  const gpu = h.gpu, N = h.shape[0];
  const logits = Tensor.empty(gpu, [N, m.rows], "f32");
  for (const c of m.chunks) linear(h, c.tensor, { out: logits, outColumnOffset: c.rowStart });
  const needAny = m.chunks.some((c) => tape.needsGrad(c.tensor));
  const sh = needAny || m.chunks.length > 1 ? [keep(h)] : [];
  tape.record("lm_head", () => {
    const dy = tape.grad(logits);
    if (!dy) return;
    const needX = tape.needsGrad(h);
    if (!needAny && m.chunks.length === 1) {
      if (needX) tape.accumulate(h, matmul(dy, m.chunks[0].tensor));
      return;
    }
    let dx: F32 | undefined;
    for (const c of m.chunks) {
      const g = linearBackward(sh[0], c.tensor, dy, {
        dyColumnOffset: c.rowStart,
        ...(dx ? { accumulate: { dx } } : {}),
      });
      dx = g.dx;
      give(tape, c.tensor, g.dw);
    }
    if (dx) give(tape, h, dx);
  }, { outputs: [logits], saves: sh });
  return logits;
}

/** Disposes a list of tensors (helper for callers). */
export function disposeAll(ts: Iterable<Tensor | undefined>): void {
  for (const x of ts) x?.dispose();
}
