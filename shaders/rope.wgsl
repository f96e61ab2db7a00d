// Rotary position embedding, Hugging Face rotate-half convention:
//   ang = f32(pos) * inv_freq[j]           (f32 product, as PyTorch computes it)
//   out[j]        = x[j] * cos(ang) - x[j + D/2] * sin(ang)
//   out[j + D/2]  = x[j + D/2] * cos(ang) + x[j] * sin(ang)          j < D/2
// i.e. x' = x*cos + rotate_half(x)*sin with cos/sin = cat(ang, ang).
//
//   x:[B, H, T, D] (tokens_first 0) or [B, T, H, D] (tokens_first 1)   T = storage type, f32 or f16
//   pos:[B, T] (pos_batched 1) or [T] (pos_batched 0)      i32, read from a buffer
//   inv_freq:[D/2] f32
//   -> out: same shape and layout as x
//
// One thread per rotation pair (j, j + D/2), 256 per workgroup, 2-D grid when large.
// The rows (B*H*T of them, D values each) are enumerated in memory order, so the
// layout only changes how a row index splits into (b, t).
//
// cos/sin: WGSL only bounds the builtins' error on [-pi, pi] (2^-11 absolute) and
// says nothing outside it, and angles reach ~1e5 rad at long positions. So
// sincos() below reduces by pi/2 itself (Cody-Waite, three-part constant: exact
// for |ang| < ~1e5) and evaluates minimax polynomials on [-pi/4, pi/4] (Cephes
// sinf/cosf, ~1 ulp). The result matches cos/sin of the f32 angle to ~1.5e-7 on any
// device (measured on lavapipe and an H100, whose builtin cos/sin were off by up to
// 4.6e-3 at angles in [1e3, 4e4) and 1.7e-2 beyond).

struct Params {
  n: u32,            // rotation pairs: B * H * T * D/2
  half: u32,         // D / 2
  heads: u32,        // H
  seq: u32,          // T
  tokens_first: u32, // 0: x is [B, H, T, D]; 1: x is [B, T, H, D]
  pos_batched: u32,  // 1: positions [B, T]; 0: positions [T], shared by the batch
  zero: u32,         // always 0 (see the angle below)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> pos: array<i32>;
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;

override WG: u32 = 256u;

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

@compute @workgroup_size(WG)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
  if (i >= p.n) { return; }
  let j = i % p.half;
  let row = i / p.half;  // index over [B, H, T] (tokens_first 0) or [B, T, H] (tokens_first 1)
  var t: u32;
  if (p.tokens_first == 0u) { t = row % p.seq; } else { t = (row / p.heads) % p.seq; }
  let b = row / (p.heads * p.seq);
  let position = pos[select(t, b * p.seq + t, p.pos_batched == 1u)];

  // The angle is rounded to f32 like PyTorch's. The select on the always-false `p.zero` keeps
  // a compiler from contracting the product into sincos's first reduction step
  // (fma(pos, inv_freq, -q * PIO2_1)), which would use the unrounded product: up to half an
  // f32 ulp of the angle away (~2e-3 rad near position 40000).
  let ang = select(f32(position) * inv_freq[j], 0.0, p.zero != 0u);
  let cs = sincos(ang);
  let lo = row * 2u * p.half + j;
  let hi = lo + p.half;
  let x1 = f32(x[lo]);
  let x2 = f32(x[hi]);
  out[lo] = T(x1 * cs.x - x2 * cs.y);
  out[hi] = T(x2 * cs.x + x1 * cs.y);
}
