/**
 * Float64 forward pieces of the DMS decoder with their hand-written
 * vector-Jacobian products (reverse mode), one pair per layer piece: linear,
 * RMSNorm, rotate-half RoPE, SiLU·up (SwiGLU), train-mode DMS attention over
 * one KV page (SPEC §3 soft mask), Gumbel-sigmoid with straight-through
 * (SPEC §4) and the distillation KL (SPEC §6). Row-major `Float64Array`s,
 * plain loops, a shape comment on every array: the readable spec of the
 * backward pass that `reference_step.ts` chains and the GPU backward kernels
 * are checked against.
 *
 * Convention: `fooBackward(saved..., dy, grads...)` returns the gradient of
 * the input(s) and ACCUMULATES (`+=`) into the parameter gradient arrays it
 * is given, so that a weight used twice (tied embeddings) sums both uses.
 *
 * @example The VJP of a linear layer
 * ```ts
 * import { linearBackward, linearForward } from "./reference_vjp.ts";
 * const w = new Float64Array([1, 2, 3, 4]); // [out=2, in=2]
 * const x = new Float64Array([1, 1]); // [N=1, in=2]
 * const y = linearForward(x, 1, w, null, 2, 2); // [3, 7]
 * const dw = new Float64Array(4);
 * const dx = linearBackward(x, 1, w, 2, 2, new Float64Array([1, 0]), dw, null); // [1, 2]
 * console.log(y, dx, dw); // dw = [1, 1, 0, 0]
 * ```
 *
 * @module
 */

/** `y = x @ W^T + b`. x:[N, in] w:[out, in] b:[out]|null -> y:[N, out] */
export function linearForward(
  x: Float64Array,
  N: number,
  w: Float64Array,
  b: Float64Array | null,
  out: number,
  inp: number,
): Float64Array {
  const y = new Float64Array(N * out); // [N, out]
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < out; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inp; i++) s += x[n * inp + i] * w[o * inp + i];
      y[n * out + o] = s;
    }
  }
  return y;
}

/**
 * VJP of {@linkcode linearForward}: `dx = dy @ W`, `dW += dy^T @ x`, `db += Σ_n dy`.
 * x:[N, in] w:[out, in] dy:[N, out] dw:[out, in] db:[out]|null -> dx:[N, in]
 */
export function linearBackward(
  x: Float64Array,
  N: number,
  w: Float64Array,
  out: number,
  inp: number,
  dy: Float64Array,
  dw: Float64Array,
  db: Float64Array | null,
): Float64Array {
  const dx = new Float64Array(N * inp); // [N, in]
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < out; o++) {
      const g = dy[n * out + o];
      if (g === 0) continue;
      if (db) db[o] += g;
      for (let i = 0; i < inp; i++) {
        dx[n * inp + i] += g * w[o * inp + i];
        dw[o * inp + i] += g * x[n * inp + i];
      }
    }
  }
  return dx;
}

/** RMSNorm forward and what its backward needs. */
export interface RmsNormSaved {
  /** `[N, C]` output `w · x · r` */
  y: Float64Array;
  /** `[N]` `r = 1 / sqrt(mean(x²) + eps)` per row */
  r: Float64Array;
}

/** `y = w · x · r`, `r = (mean_c x² + eps)^−½` over the last dim. x:[N, C] w:[C] -> y:[N, C] */
export function rmsNormForward(
  x: Float64Array,
  N: number,
  C: number,
  w: Float64Array,
  eps: number,
): RmsNormSaved {
  const y = new Float64Array(N * C); // [N, C]
  const r = new Float64Array(N); // [N]
  for (let n = 0; n < N; n++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[n * C + c] ** 2;
    r[n] = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) y[n * C + c] = w[c] * x[n * C + c] * r[n];
  }
  return { y, r };
}

/**
 * VJP of {@linkcode rmsNormForward}:
 * `dw += Σ_n dy·x·r`, `dx = r·(w·dy) − x·r³·(Σ_c w·dy·x)/C`.
 * x:[N, C] r:[N] w:[C] dy:[N, C] dw:[C] -> dx:[N, C]
 */
export function rmsNormBackward(
  x: Float64Array,
  r: Float64Array,
  N: number,
  C: number,
  w: Float64Array,
  dy: Float64Array,
  dw: Float64Array,
): Float64Array {
  const dx = new Float64Array(N * C); // [N, C]
  for (let n = 0; n < N; n++) {
    const rn = r[n];
    let dot = 0; // Σ_c w·dy·x
    for (let c = 0; c < C; c++) {
      const i = n * C + c;
      dot += w[c] * dy[i] * x[i];
      dw[c] += dy[i] * x[i] * rn;
    }
    const k = (rn * rn * rn * dot) / C;
    for (let c = 0; c < C; c++) {
      const i = n * C + c;
      dx[i] = rn * w[c] * dy[i] - x[i] * k;
    }
  }
  return dx;
}

/** RoPE tables at positions 0..S−1. */
export interface RopeTable {
  /** `[S, D/2]` `cos(t·invFreq[i])·scaling` */
  cos: Float64Array;
  /** `[S, D/2]` `sin(t·invFreq[i])·scaling` */
  sin: Float64Array;
}

/** cos/sin tables for {@linkcode ropeForward}. invFreq:[D/2] -> cos, sin:[S, D/2] */
export function ropeTable(S: number, invFreq: Float64Array, scaling: number): RopeTable {
  const half = invFreq.length;
  const cos = new Float64Array(S * half), sin = new Float64Array(S * half); // [S, D/2]
  for (let t = 0; t < S; t++) {
    for (let i = 0; i < half; i++) {
      cos[t * half + i] = Math.cos(t * invFreq[i]) * scaling;
      sin[t * half + i] = Math.sin(t * invFreq[i]) * scaling;
    }
  }
  return { cos, sin };
}

/**
 * HF rotate-half RoPE (new array): `y[i] = a·cos − b·sin`, `y[i+D/2] = b·cos + a·sin`
 * with `a = x[i]`, `b = x[i+D/2]`. x:[nh, S, D] -> y:[nh, S, D]
 */
export function ropeForward(
  x: Float64Array,
  nh: number,
  S: number,
  D: number,
  tab: RopeTable,
): Float64Array {
  return rotate(x, nh, S, D, tab, 1);
}

/** VJP of {@linkcode ropeForward}: the transposed rotation (angle −θ). dy:[nh, S, D] -> dx */
export function ropeBackward(
  dy: Float64Array,
  nh: number,
  S: number,
  D: number,
  tab: RopeTable,
): Float64Array {
  return rotate(dy, nh, S, D, tab, -1);
}

function rotate(
  x: Float64Array,
  nh: number,
  S: number,
  D: number,
  tab: RopeTable,
  sign: 1 | -1,
): Float64Array {
  const half = D / 2;
  const y = new Float64Array(nh * S * D); // [nh, S, D]
  for (let h = 0; h < nh; h++) {
    for (let t = 0; t < S; t++) {
      const row = (h * S + t) * D;
      for (let i = 0; i < half; i++) {
        const c = tab.cos[t * half + i], s = sign * tab.sin[t * half + i];
        const a = x[row + i], b = x[row + i + half];
        y[row + i] = a * c - b * s;
        y[row + i + half] = b * c + a * s;
      }
    }
  }
  return y;
}

/** σ(x). */
export function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** SwiGLU: `m = silu(gate)·up`. gate, up:[N] -> m:[N] */
export function swigluForward(gate: Float64Array, up: Float64Array): Float64Array {
  return gate.map((g, i) => g * sigmoid(g) * up[i]);
}

/**
 * VJP of {@linkcode swigluForward}: `dup = dm·silu(g)`,
 * `dgate = dm·up·σ(g)·(1 + g·(1 − σ(g)))`. gate, up, dm:[N] -> dgate, dup:[N]
 */
export function swigluBackward(
  gate: Float64Array,
  up: Float64Array,
  dm: Float64Array,
): { dgate: Float64Array; dup: Float64Array } {
  const dgate = new Float64Array(gate.length), dup = new Float64Array(gate.length); // [N]
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i], s = sigmoid(g);
    dup[i] = dm[i] * g * s;
    dgate[i] = dm[i] * up[i] * s * (1 + g * (1 - s));
  }
  return { dgate, dup };
}

/** What {@linkcode trainAttentionBackward} needs from the forward. */
export interface AttentionSaved {
  /** `[G, S, D]` output */
  out: Float64Array;
  /** `[G, S, S]` softmax probabilities (0 above the diagonal) */
  prob: Float64Array;
}

/**
 * Train-mode DMS attention of G query heads over one KV page (SPEC §3):
 * `score(t, j) = q_t·k_j·scale` for `t − j ≤ W`, plus `far[j]` for `t − j > W`;
 * keys `j > t` get −50000 in the reference, whose exp is exactly 0 in float64,
 * so they are left out. q:[G, S, D] k, v:[S, D] far:[S] -> out:[G, S, D]
 */
export function trainAttentionForward(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  far: Float64Array,
  G: number,
  S: number,
  D: number,
  scale: number,
  W: number,
): AttentionSaved {
  const out = new Float64Array(G * S * D); // [G, S, D]
  const prob = new Float64Array(G * S * S); // [G, S, S]
  for (let g = 0; g < G; g++) {
    for (let t = 0; t < S; t++) {
      const qr = (g * S + t) * D, pr = (g * S + t) * S;
      let max = -Infinity;
      for (let j = 0; j <= t; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[qr + d] * k[j * D + d];
        s *= scale;
        if (t - j > W) s += far[j];
        prob[pr + j] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = 0; j <= t; j++) sum += prob[pr + j] = Math.exp(prob[pr + j] - max);
      for (let j = 0; j <= t; j++) {
        const p = prob[pr + j] /= sum;
        for (let d = 0; d < D; d++) out[qr + d] += p * v[j * D + d];
      }
    }
  }
  return { out, prob };
}

/**
 * VJP of {@linkcode trainAttentionForward}. With `dP[t,j] = dout_t·v_j` and
 * `dS = P ⊙ (dP − Σ_j P·dP)`: `dq_t = scale·Σ_j dS·k_j`, `dk_j = scale·Σ_t dS·q_t`,
 * `dv_j = Σ_t P·dout_t`, and the soft mask's gradient `dfar[j] = Σ_{g, t − j > W} dS[t,j]`
 * (the term eager flex attention drops; conformance-train README).
 * q:[G, S, D] k, v:[S, D] prob:[G, S, S] dout:[G, S, D] -> dq:[G, S, D] dk, dv:[S, D] dfar:[S]
 */
export function trainAttentionBackward(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  prob: Float64Array,
  dout: Float64Array,
  G: number,
  S: number,
  D: number,
  scale: number,
  W: number,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array; dfar: Float64Array } {
  const dq = new Float64Array(G * S * D); // [G, S, D]
  const dk = new Float64Array(S * D), dv = new Float64Array(S * D); // [S, D]
  const dfar = new Float64Array(S); // [S]
  const dP = new Float64Array(S); // [S] one query row
  for (let g = 0; g < G; g++) {
    for (let t = 0; t < S; t++) {
      const qr = (g * S + t) * D, pr = (g * S + t) * S;
      let rowDot = 0; // Σ_j P·dP
      for (let j = 0; j <= t; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += dout[qr + d] * v[j * D + d];
        dP[j] = s;
        rowDot += prob[pr + j] * s;
      }
      for (let j = 0; j <= t; j++) {
        const p = prob[pr + j];
        const dS = p * (dP[j] - rowDot);
        if (t - j > W) dfar[j] += dS;
        for (let d = 0; d < D; d++) {
          dq[qr + d] += dS * scale * k[j * D + d];
          dk[j * D + d] += dS * scale * q[qr + d];
          dv[j * D + d] += p * dout[qr + d];
        }
      }
    }
  }
  return { dq, dk, dv, dfar };
}

/**
 * Distillation loss of one position, KL(student ‖ teacher) = Σ_v p_s·(log p_s − log p_t),
 * and its gradient w.r.t. the student logits: `p_s ⊙ (log p_s − log p_t − KL)`.
 * The teacher is a constant. student, teacher:[V] -> kl, dStudent:[V]
 */
export function klForwardBackward(
  student: ArrayLike<number>,
  teacher: ArrayLike<number>,
): { kl: number; dStudent: Float64Array } {
  const V = student.length;
  const ls = logSoftmax(student), lt = logSoftmax(teacher); // [V]
  let kl = 0;
  for (let v = 0; v < V; v++) kl += Math.exp(ls[v]) * (ls[v] - lt[v]);
  const dStudent = new Float64Array(V); // [V]
  for (let v = 0; v < V; v++) dStudent[v] = Math.exp(ls[v]) * (ls[v] - lt[v] - kl);
  return { kl, dStudent };
}

/** Numerically stable log-softmax. x:[V] -> [V] */
export function logSoftmax(x: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += Math.exp(x[i] - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(x, (v) => v - lse);
}
