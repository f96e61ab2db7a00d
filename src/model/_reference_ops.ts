/**
 * Small float64 building blocks of the reference decoder (row-major, plain
 * loops): linear layers, RMSNorm, head layout changes, HF rotate-half RoPE,
 * SiLU. Private to `src/model/`.
 *
 * @module
 */

import type { Linear, ReferenceModel } from "./reference_weights.ts";

/** `y = x @ W^T + b`. x:[N, in] -> y:[N, out] */
export function linear(x: Float64Array, N: number, lin: Linear): Float64Array {
  const y = new Float64Array(N * lin.out); // [N, out]
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < lin.out; o++) {
      let s = lin.b ? lin.b[o] : 0;
      const xr = n * lin.in, wr = o * lin.in;
      for (let i = 0; i < lin.in; i++) s += x[xr + i] * lin.w[wr + i];
      y[n * lin.out + o] = s;
    }
  }
  return y;
}

/** `w * x / sqrt(mean(x²) + eps)` over the last dim. x:[N, C] -> [N, C] */
export function rmsNorm(
  x: Float64Array,
  N: number,
  C: number,
  w: Float64Array,
  eps: number,
): Float64Array {
  const y = new Float64Array(N * C); // [N, C]
  for (let n = 0; n < N; n++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[n * C + c] ** 2;
    const r = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) y[n * C + c] = w[c] * x[n * C + c] * r;
  }
  return y;
}

/** `[S, nh*D]` -> `[nh, S, D]` (heads first). */
export function headsFirst(x: Float64Array, S: number, nh: number, D: number): Float64Array {
  const y = new Float64Array(nh * S * D); // [nh, S, D]
  for (let t = 0; t < S; t++) {
    for (let h = 0; h < nh; h++) {
      for (let d = 0; d < D; d++) y[(h * S + t) * D + d] = x[t * nh * D + h * D + d];
    }
  }
  return y;
}

/** `[nh, S, D]` -> `[S, nh*D]` (concatenated heads, HF order). */
export function headsLast(x: Float64Array, S: number, nh: number, D: number): Float64Array {
  const y = new Float64Array(S * nh * D); // [S, nh*D]
  for (let h = 0; h < nh; h++) {
    for (let t = 0; t < S; t++) {
      for (let d = 0; d < D; d++) y[t * nh * D + h * D + d] = x[(h * S + t) * D + d];
    }
  }
  return y;
}

/**
 * HF rotate-half RoPE in place at positions 0..S−1:
 * `x' = x·cos + rotate_half(x)·sin`, `rotate_half(x) = cat(−x[D/2:], x[:D/2])`.
 * x:[nh, S, D]
 */
export function applyRope(
  x: Float64Array,
  nh: number,
  S: number,
  D: number,
  model: ReferenceModel,
): void {
  const half = D / 2, sc = model.ropeAttentionScaling;
  for (let h = 0; h < nh; h++) {
    for (let t = 0; t < S; t++) {
      const r = (h * S + t) * D;
      for (let i = 0; i < half; i++) {
        const ang = t * model.invFreq[i];
        const cos = Math.cos(ang) * sc, sin = Math.sin(ang) * sc;
        const a = x[r + i], b = x[r + i + half];
        x[r + i] = a * cos - b * sin;
        x[r + i + half] = b * cos + a * sin;
      }
    }
  }
}

/** SiLU: `x·σ(x)`. */
export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** View of head h of x:[nh, S, C] -> [S, C]. */
export function head(x: Float64Array, h: number, S: number, C: number): Float64Array {
  return x.subarray(h * S * C, (h + 1) * S * C);
}
