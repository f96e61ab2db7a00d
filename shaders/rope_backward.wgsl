// Backward of rotary position embedding (HF rotate-half, shaders/rope.wgsl). The forward is a
// rotation of each pair (x[j], x[j + D/2]) by ang = f32(pos) * inv_freq[j]; its transpose rotates
// the upstream gradient by -ang:
//   dx[j]        = dy[j] * cos(ang) + dy[j + D/2] * sin(ang)
//   dx[j + D/2]  = dy[j + D/2] * cos(ang) - dy[j] * sin(ang)          j < D/2
//
//   dy:[B, H, T, D] (tokens_first 0) or [B, T, H, D] (tokens_first 1)   f32
//   pos:[B, T] (pos_batched 1) or [T] (pos_batched 0)      i32
//   inv_freq:[D/2] f32 (rope_scaling already applied, as for the forward)
//   -> dx: same shape and layout as dy
//
// One thread per rotation pair, 256 per workgroup, 2-D grid when large. The angle and sincos() are
// the forward's, byte for byte (WGSL has no includes): see shaders/rope.wgsl for why cos/sin are
// evaluated by an own range reduction and polynomials, and why the angle is kept in f32.

struct Params {
  n: u32,            // rotation pairs: B * H * T * D/2
  half: u32,         // D / 2
  heads: u32,        // H
  seq: u32,          // T
  tokens_first: u32, // 0: dy is [B, H, T, D]; 1: dy is [B, T, H, D]
  pos_batched: u32,  // 1: positions [B, T]; 0: positions [T], shared by the batch
  zero: u32,         // always 0 (see the angle below)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<i32>;
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

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
fn rope_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
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
  let g1 = dy[lo];
  let g2 = dy[hi];
  dx[lo] = g1 * cs.x + g2 * cs.y;
  dx[hi] = g2 * cs.x - g1 * cs.y;
}
