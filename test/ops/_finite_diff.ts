/**
 * Central finite differences for the backward ops' gradient checks.
 *
 * The forward CPU references (`*Reference` in src/ops/) take f64 inputs but
 * round their outputs to f32, so the step cannot be ~1e-6: each output carries
 * a rounding error of at most |y|·2^-24, which a difference quotient divides by
 * 2h. {@linkcode finiteDiffGrad} therefore also returns that bound per entry,
 * `Σ|c·y|·2^-24 / h`, and checks use it (plus a small truncation allowance) as
 * their absolute tolerance.
 */

import assert from "node:assert/strict";

/** Numeric gradient of `L(v) = Σ_i c_i f(v)_i` and the f32 output-rounding error bound. */
export function finiteDiffGrad(
  f: (v: Float64Array) => ArrayLike<number>,
  v: ArrayLike<number>,
  c: ArrayLike<number>,
  h = 1e-3,
): { grad: Float64Array; roundBound: number } {
  const p = Float64Array.from(v);
  const loss = (y: ArrayLike<number>) => {
    let s = 0, mag = 0;
    for (let i = 0; i < y.length; i++) {
      s += c[i] * y[i];
      mag += Math.abs(c[i] * y[i]);
    }
    return [s, mag];
  };
  const grad = new Float64Array(p.length);
  let roundBound = 0;
  for (let i = 0; i < p.length; i++) {
    const old = p[i];
    p[i] = old + h;
    const [lp, mp] = loss(f(p));
    p[i] = old - h;
    const [lm, mm] = loss(f(p));
    p[i] = old;
    grad[i] = (lp - lm) / (2 * h);
    roundBound = Math.max(roundBound, ((mp + mm) * 2 ** -24) / (2 * h));
  }
  return { grad, roundBound };
}

/** Asserts `|analytic - numeric| <= atol + rtol·|numeric|` everywhere, naming the worst entry. */
export function assertGradClose(
  analytic: ArrayLike<number>,
  numeric: ArrayLike<number>,
  atol: number,
  label: string,
  rtol = 1e-5,
): void {
  assert.equal(analytic.length, numeric.length, `${label}: lengths differ`);
  let worst = -1, worstExcess = 0;
  for (let i = 0; i < analytic.length; i++) {
    const d = Math.abs(analytic[i] - numeric[i]);
    const excess = d - (atol + rtol * Math.abs(numeric[i]));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(d))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${label}: analytic ${analytic[worst]} vs finite difference ${numeric[worst]} at index ` +
        `${worst} (|diff| ${Math.abs(analytic[worst] - numeric[worst]).toExponential(3)}, atol ${
          atol.toExponential(2)
        }, rtol ${rtol})`,
    );
  }
}
