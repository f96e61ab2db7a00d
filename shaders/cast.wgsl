// Float conversions f32 <-> f16 done on the bit patterns, so every device gives the
// same bits: WGSL leaves the rounding of f16(x) to the implementation (nearest or
// toward zero, and overflow to inf or to the largest finite), while PyTorch's
// .half() rounds to nearest even and overflows to inf. No shader-f16 is needed:
// f16 data is read and written as packed u32 pairs (element 2i in the low half).
//   f32_to_f16: x:[n] f32 bits (u32)          -> out:[ceil(n/2)] packed f16 pairs
//   f16_to_f32: x:[ceil(n/2)] packed f16 pairs -> out:[n] f32 bits (u32)
// One thread per pair of elements, 256 per workgroup, 2-D grid when large.
// (Same-dtype copies need no kernel: the launcher copies buffers.)

struct Params {
  n: u32,  // elements
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

override WG: u32 = 256u;

// f32 bits -> f16 bits, round to nearest even; overflow -> inf, NaN -> quiet NaN,
// results below half the smallest subnormal (2^-25) -> signed zero.
fn to_half(b: u32) -> u32 {
  let sign = (b >> 16u) & 0x8000u;
  let e = i32((b >> 23u) & 0xffu);
  var m = b & 0x7fffffu;
  if (e == 255) { return sign | 0x7c00u | select(0u, 0x200u, m != 0u); }
  let he = e - 112;  // f16 biased exponent: e - 127 + 15
  if (he >= 31) { return sign | 0x7c00u; }
  if (he <= 0) {  // f16 subnormal (or zero)
    if (he < -10) { return sign; }
    m = m | 0x800000u;
    let shift = u32(14 - he);  // 14..24
    var h = m >> shift;
    let rem = m & ((1u << shift) - 1u);
    let mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (h & 1u) == 1u)) { h += 1u; }
    return sign | h;
  }
  var h = (u32(he) << 10u) | (m >> 13u);
  let rem = m & 0x1fffu;
  // A carry out of the mantissa bumps the exponent, and 0x7bff rounds up to inf: both right.
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) == 1u)) { h += 1u; }
  return sign | h;
}

// f16 bits -> f32 bits, exact (f16 subnormals become f32 normals).
fn to_single(h: u32) -> u32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 31u) { return sign | 0x7f800000u | (m << 13u); }
  if (e != 0u) { return sign | ((e + 112u) << 23u) | (m << 13u); }
  if (m == 0u) { return sign; }
  let k = firstLeadingBit(m);  // value = m * 2^-24 = 1.f * 2^(k - 24)
  return sign | ((k + 103u) << 23u) | ((m << (23u - k)) & 0x7fffffu);
}

@compute @workgroup_size(WG)
fn f32_to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid.x;  // pair index
  if (2u * i >= p.n) { return; }
  let lo = to_half(x[2u * i]);
  var hi = 0u;
  if (2u * i + 1u < p.n) { hi = to_half(x[2u * i + 1u]); }
  out[i] = lo | (hi << 16u);
}

@compute @workgroup_size(WG)
fn f16_to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid.x;  // pair index
  if (2u * i >= p.n) { return; }
  let pair = x[i];
  out[2u * i] = to_single(pair & 0xffffu);
  if (2u * i + 1u < p.n) { out[2u * i + 1u] = to_single(pair >> 16u); }
}
