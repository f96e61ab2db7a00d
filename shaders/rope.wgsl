// Rotary position embedding, Hugging Face rotate-half convention, and its backward:
//   ang = f32(pos) * inv_freq[j]           (f32 product, as PyTorch computes it)
//   rope:          out[j]       = x[j] * cos(ang) - x[j + D/2] * sin(ang)
//                  out[j + D/2] = x[j + D/2] * cos(ang) + x[j] * sin(ang)          j < D/2
//   i.e. x' = x*cos + rotate_half(x)*sin with cos/sin = cat(ang, ang);
//   rope_backward: the transpose, a rotation of the upstream gradient by -ang (launcher:
//                  src/ops/rope_backward.ts; x is dy, out is dx, T = f32):
//                  dx[j]        = dy[j] * cos(ang) + dy[j + D/2] * sin(ang)
//                  dx[j + D/2]  = dy[j + D/2] * cos(ang) - dy[j] * sin(ang)
//
//   x:[B, H, T, D] (tokens_first 0) or [B, T, H, D] (tokens_first 1)   T = storage type, f32 or f16
//   pos:[B, T] (pos_batched 1) or [T] (pos_batched 0)      i32, read from a buffer
//   inv_freq:[D/2] f32 (rope_scaling already applied)
//   -> out: same shape and layout as x
//
// One thread per rotation pair (j, j + D/2), 256 per workgroup, 2-D grid when large.
// The rows (B*H*T of them, D values each) are enumerated in memory order, so the
// layout only changes how a row index splits into (b, t). cos/sin: sincos.wgsl (why not the
// builtins, and why the angle is kept in f32).

// #include "sincos"

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

// Rotation pair i: its two elements (lo, hi = lo + D/2) and (cos, sin) of its angle.
struct Pair {
  lo: u32,
  hi: u32,
  cs: vec2<f32>,
}

fn pair(i: u32) -> Pair {
  let j = i % p.half;
  let row = i / p.half;  // index over [B, H, T] (tokens_first 0) or [B, T, H] (tokens_first 1)
  var t: u32;
  if (p.tokens_first == 0u) { t = row % p.seq; } else { t = (row / p.heads) % p.seq; }
  let b = row / (p.heads * p.seq);
  let position = pos[select(t, b * p.seq + t, p.pos_batched == 1u)];
  // The angle rounded to f32 like PyTorch's; the select on the always-false `p.zero` keeps it
  // out of an fma with sincos's first reduction step (sincos.wgsl).
  let ang = select(f32(position) * inv_freq[j], 0.0, p.zero != 0u);
  let lo = row * 2u * p.half + j;
  return Pair(lo, lo + p.half, sincos(ang));
}

@compute @workgroup_size(WG)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
  if (i >= p.n) { return; }
  let q = pair(i);
  let x1 = f32(x[q.lo]);
  let x2 = f32(x[q.hi]);
  out[q.lo] = T(x1 * q.cs.x - x2 * q.cs.y);
  out[q.hi] = T(x2 * q.cs.x + x1 * q.cs.y);
}

@compute @workgroup_size(WG)
fn rope_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
  if (i >= p.n) { return; }
  let q = pair(i);
  let g1 = f32(x[q.lo]);
  let g2 = f32(x[q.hi]);
  out[q.lo] = T(g1 * q.cs.x + g2 * q.cs.y);
  out[q.hi] = T(g2 * q.cs.x - g1 * q.cs.y);
}
