/**
 * The forward ops of the decoder, each recording its backward on a {@linkcode Tape} (llm.c's
 * `op_forward` / `op_backward` pairs): `linear` (+bias), `rmsNorm`, `add`, views, `swapAxes12`,
 * `rope`, `swiglu`, and the dense training-mode attention with the DMS soft mask (SPEC §3).
 *
 * Ownership: each op returns a new tensor owned by the caller (the forward code disposes it when
 * it no longer needs it); what the backward reads is a `reshape` view saved by the record, so
 * the tape frees it as it unwinds, whoever else holds the tensor. Gradients are keyed by tensor
 * identity, which outlives `dispose()`.
 *
 * Frozen weights (not `tape.needsGrad(w)`): `linear` computes no dW (dx = dy·W by `matmul`); an
 * RMSNorm gain's dgain is computed by the fused launcher and dropped. All math is f32.
 *
 * @module
 */

import { add } from "../ops/elementwise.ts";
import { linear, matmul } from "../ops/matmul.ts";
import { linearBackward } from "../ops/matmul_backward.ts";
import { rmsNorm } from "../ops/rmsnorm.ts";
import { rmsNormBackward } from "../ops/rmsnorm_backward.ts";
import { swapAxes12 } from "../ops/layout.ts";
import { rope } from "../ops/rope.ts";
import { ropeBackward } from "../ops/rope_backward.ts";
import { swiglu } from "../ops/silu.ts";
import { swigluBackward } from "../ops/silu_backward.ts";
import { attention } from "../ops/attention.ts";
import { attentionBackward } from "../ops/attention_backward.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { Tape } from "./tape.ts";

/** An f32 tensor (the training dtype). */
export type F32 = Tensor<"f32">;

/** Another reference to `t`'s buffer (a view the tape may dispose independently). */
export function keep<T extends Tensor>(t: T): T {
  return t.reshape(t.shape) as T;
}

/** Adds `g` (taken over) to `t`'s gradient when `t` needs one, else disposes `g`. */
export function give(tape: Tape, t: Tensor, g: Tensor): void {
  if (tape.needsGrad(t)) tape.accumulate(t, g);
  else g.dispose();
}

/** `y = x·wᵀ (+ b)`, `x:[N, K] w:[M, K] → [N, M]`. */
export function linearT(tape: Tape, name: string, x: F32, w: Tensor, b?: Tensor): F32 {
  const y = linear(x, w, { bias: b }) as F32;
  const needW = tape.needsGrad(w), needB = b !== undefined && tape.needsGrad(b);
  const xs = needW || needB ? [keep(x)] : [];
  tape.record(name, () => {
    const dy = tape.grad(y);
    if (!dy) return;
    if (needW || needB) {
      const g = linearBackward(xs[0], w, dy, { bias: needB });
      give(tape, x, g.dx);
      give(tape, w, g.dw);
      if (g.db) give(tape, b!, g.db);
    } else if (tape.needsGrad(x)) {
      tape.accumulate(x, matmul(dy, w)); // dx = dy·W, W frozen: no dW
    }
  }, { outputs: [y], saves: xs });
  return y;
}

/** `rmsNorm(x, gain, eps)` over the last axis (shape of x). */
export function rmsNormT(tape: Tape, name: string, x: F32, gain: Tensor, eps: number): F32 {
  const y = rmsNorm(x, gain, eps) as F32;
  const xs = keep(x);
  tape.record(name, () => {
    const dy = tape.grad(y);
    if (!dy) return;
    const g = rmsNormBackward(xs, gain, dy, eps);
    give(tape, x, g.dx);
    give(tape, gain, g.dgain);
  }, { outputs: [y], saves: [xs] });
  return y;
}

/** `a + b` (same shapes). */
export function addT(tape: Tape, name: string, a: F32, b: F32): F32 {
  const y = add(a, b) as F32;
  tape.record(name, () => {
    const dy = tape.grad(y);
    if (!dy) return;
    if (tape.needsGrad(a)) tape.accumulate(a, keep(dy));
    if (tape.needsGrad(b)) tape.accumulate(b, keep(dy));
  }, { outputs: [y] });
  return y;
}

/** `t` viewed with another shape (a new tensor object: its gradient moves back to `t`). */
export function viewT(tape: Tape, name: string, t: F32, shape: readonly number[]): F32 {
  const v = t.reshape(shape);
  tape.record(name, () => {
    const g = tape.grad(v);
    if (g && tape.needsGrad(t)) tape.accumulate(t, g.reshape(t.shape));
  }, { outputs: [v] });
  return v;
}

/** `x:[A, B, C, D] → [A, C, B, D]` (its own backward). */
export function swapT(tape: Tape, name: string, x: F32): F32 {
  const y = swapAxes12(x);
  tape.record(name, () => {
    const g = tape.grad(y);
    if (g && tape.needsGrad(x)) tape.accumulate(x, swapAxes12(g));
  }, { outputs: [y] });
  return y;
}

/** RoPE of `x:[B, H, T, D]` at `positions:[B, T]` (i32) with `invFreq:[D/2]`. */
export function ropeT(
  tape: Tape,
  name: string,
  x: F32,
  positions: Tensor<"i32">,
  invFreq: F32,
): F32 {
  const y = rope(x, positions, invFreq) as F32;
  tape.record(name, () => {
    const g = tape.grad(y);
    if (g && tape.needsGrad(x)) tape.accumulate(x, ropeBackward(g, positions, invFreq));
  }, { outputs: [y] });
  return y;
}

/** `silu(gate)·up`, elementwise. */
export function swigluT(tape: Tape, name: string, gate: F32, up: F32): F32 {
  const y = swiglu(gate, up) as F32;
  const gs = keep(gate), us = keep(up);
  tape.record(name, () => {
    const dy = tape.grad(y);
    if (!dy) return;
    const g = swigluBackward(gs, us, dy);
    give(tape, gate, g.dgate);
    give(tape, up, g.dup);
  }, { outputs: [y], saves: [gs, us] });
  return y;
}

/** Window terms of the training-mode attention (SPEC §3). */
export interface SoftMask {
  /** DMS window W. */
  window: number;
  /** `farBias:[B, Hkv, S]` f32 (`log σ(−z[i+1])`); its gradient flows. */
  farBias: F32;
}

/**
 * Dense causal GQA attention `q:[B, Hq, T, D] k, v:[B, Hkv, T, D] → [B, Hq, T, D]`, with the
 * DMS soft mask when `mask` is given (SPEC §3); FlashAttention-2 backward from the saved lse.
 */
export function attentionT(
  tape: Tape,
  name: string,
  q: F32,
  k: F32,
  v: F32,
  mask?: SoftMask,
): F32 {
  const opts = mask ? { window: mask.window, farBias: mask.farBias } : {};
  const { out, lse } = attention(q, k, v, { ...opts, returnLse: true });
  const o = out as F32;
  if (!tape.enabled) {
    lse.dispose();
    return o;
  }
  const sq = keep(q), sk = keep(k), sv = keep(v), so = keep(o);
  const sf = mask ? [keep(mask.farBias)] : [];
  tape.record(name, () => {
    const dOut = tape.grad(o);
    if (!dOut) return;
    const g = attentionBackward(sq, sk, sv, so, lse, dOut, {
      ...(mask ? { window: mask.window, farBias: sf[0] } : {}),
    });
    give(tape, q, g.dq);
    give(tape, k, g.dk);
    give(tape, v, g.dv);
    if (g.dFarBias) give(tape, mask!.farBias, g.dFarBias);
  }, { outputs: [o], saves: [sq, sk, sv, so, lse, ...sf] });
  return o;
}
