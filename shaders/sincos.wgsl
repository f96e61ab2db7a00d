// cos and sin of an f32 angle, to ~1 ulp on any device: included by rope.wgsl (the rotary
// embedding and its backward) and heads_rope.wgsl (the fused q/k kernels), so that every path
// rotates by the same numbers. Helpers only: no bindings, no entry point.
//
// WGSL only bounds the builtins' error on [-pi, pi] (2^-11 absolute) and says nothing outside
// it, and angles reach ~1e5 rad at long positions. So sincos() reduces by pi/2 itself
// (Cody-Waite, three-part constant: exact for |ang| < ~1e5) and evaluates minimax polynomials on
// [-pi/4, pi/4] (Cephes sinf/cosf, ~1 ulp). The result matches cos/sin of the f32 angle to
// ~1.5e-7 on any device (measured on lavapipe and an H100, whose builtin cos/sin were off by up
// to 4.6e-3 at angles in [1e3, 4e4) and 1.7e-2 beyond). CPU twin: src/ops/rope.ts.
//
// A caller computes the angle as f32(position) * inv_freq[j] behind a select on an always-false
// uniform (`p.zero`): that keeps a compiler from contracting the product into the first
// reduction step (fma(pos, inv_freq, -q * PIO2_1)), which would use the unrounded product: up to
// half an f32 ulp of the angle away (~2e-3 rad near position 40000).

// pi/2 = PIO2_1 + PIO2_2 + PIO2_3; the first two have 8 significant bits, so
// q * PIO2_1 and q * PIO2_2 are exact for |q| < 2^16.
const PIO2_1: f32 = 1.5703125;
const PIO2_2: f32 = 4.825592041015625e-4;
const PIO2_3: f32 = 1.2675907950567313e-6;
const TWO_OVER_PI: f32 = 0.6366197723675814;

// Returns (cos(a), sin(a)) for an f32 angle a.
fn sincos(a: f32) -> vec2<f32> {
  let q = round(a * TWO_OVER_PI);
  let r = ((a - q * PIO2_1) - q * PIO2_2) - q * PIO2_3;  // r in ~[-pi/4, pi/4]
  let z = r * r;
  let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
  let c = 1.0 - 0.5 * z +
    z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
  // a = r + k*pi/2 with k = q mod 4: rotate (c, s) by k quarter turns.
  let k = i32(q) & 3;
  if (k == 0) { return vec2<f32>(c, s); }
  if (k == 1) { return vec2<f32>(-s, c); }
  if (k == 2) { return vec2<f32>(-c, -s); }
  return vec2<f32>(s, -c);
}
