// Fused per-head RMSNorm + borrowed neuron + [B,T,H,D] -> [B,H,T,D] + RoPE, one dispatch
// (replaces rmsnorm -> neuron_take -> swap12 -> rope -> neuron_zero of the unfused chain).
//
//   x:[B, T, H, D]  (projection layout)                 T = storage type, f32 or f16
//   w:[D]           gain (entries *_norm), G = its storage type
//   pos:[B, T] (pos_batched 1) or [T] (pos_batched 0)  i32
//   inv_freq:[D/2]  f32
//   -> out:[B, H, T, D]  (attention layout)
//   -> raw:[B, T, Hkv] f32 (entries *_neuron): raw[b, t, g] = normed x[b, t, g*G, D-1]
//
// Per row (b, t, h), in this order, all in f32:
//   1. v = x (plain) or w * x * inverseSqrt(mean(x^2) + eps) (as rmsnorm.wgsl), rounded to T
//      once, as the unfused chain stores the norm's output (and HF q_norm returns the dtype);
//   2. neuron (SPEC §1a), first head of each group (h % G == 0) only: raw = v[D-1], v[D-1] = 0;
//   3. RoPE rotate-half exactly as rope.wgsl: ang = f32(pos) * inv_freq[j],
//      out[j] = v[j] cos - v[j+D/2] sin, out[j+D/2] = v[j+D/2] cos + v[j] sin;
//   4. neuron heads: out[D-1] = 0 again (removes the v[D/2-1] sin term, SPEC §1a).
//
// One workgroup per row (2-D grid beyond 65535 rows: row = wid.y * nwg.x + wid.x), rows in
// x's memory order [B, T, H]. The row is staged in workgroup memory (so D <= MAX_D); each of
// the WG threads (a power of two, 32..128, covering D/2) handles the pairs j, j + WG, ...
// Four entry points (heads_rope[_norm][_neuron]) so each binds only the buffers it uses.

struct Params {
  rows: u32,         // B * T * H
  d: u32,            // head dim D (even, <= MAX_D)
  heads: u32,        // H
  seq: u32,          // T
  group: u32,        // G = H / Hkv (neuron entries)
  kv_heads: u32,     // Hkv (neuron entries)
  pos_batched: u32,  // 1: positions [B, T]; 0: positions [T], shared by the batch
  eps: f32,          // RMSNorm eps (norm entries)
  zero: u32,         // always 0 (keeps the angle rounded to f32, see rope.wgsl)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> w: array<G>;
@group(0) @binding(3) var<storage, read> pos: array<i32>;
@group(0) @binding(4) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<T>;
@group(0) @binding(6) var<storage, read_write> raw: array<f32>;

override WG: u32 = 64u;
const MAX_D: u32 = 256u;

// the row after step 1 (and 2), in the storage type: storing it rounds to T (an f32 array with
// f32(T(v)) did not: NVIDIA's compiler folds that round trip away, measured on the H200)
var<workgroup> vals: array<T, MAX_D>;
var<workgroup> partial: array<f32, 128>;  // sum-of-squares tree (WG <= 128)

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.y * nwg.x + wid.x;
}

// Step 1 without a norm: vals = x row.
fn load_plain(row: u32, li: u32) {
  let base = row * p.d;
  for (var i = li; i < p.d; i += WG) { vals[i] = x[base + i]; }
  workgroupBarrier();
}

// Step 1 with a norm: vals = T(w * x * inverseSqrt(mean(x^2) + eps)), f32 math.
fn load_norm(row: u32, li: u32) {
  let base = row * p.d;
  var ss = 0.0;
  for (var i = li; i < p.d; i += WG) {
    let xi = x[base + i];
    let v = f32(xi);
    vals[i] = xi;
    ss += v * v;
  }
  partial[li] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { partial[li] += partial[li + s]; }
    workgroupBarrier();
  }
  let r = inverseSqrt(partial[0] / f32(p.d) + p.eps);
  for (var i = li; i < p.d; i += WG) { vals[i] = T(f32(w[i]) * (f32(vals[i]) * r)); }
  workgroupBarrier();
}

// Step 2 (SPEC §1a): the first head of each group hands channel D-1 to raw and zeroes it.
fn take_neuron(row: u32, li: u32) {
  let h = row % p.heads;
  if (li == 0u && h % p.group == 0u) {
    raw[(row / p.heads) * p.kv_heads + h / p.group] = f32(vals[p.d - 1u]);
    vals[p.d - 1u] = T(0.0);
  }
  workgroupBarrier();
}

// pi/2 = PIO2_1 + PIO2_2 + PIO2_3 (rope.wgsl's Cody-Waite reduction and Cephes polynomials).
const PIO2_1: f32 = 1.5703125;
const PIO2_2: f32 = 4.825592041015625e-4;
const PIO2_3: f32 = 1.2675907950567313e-6;
const TWO_OVER_PI: f32 = 0.6366197723675814;

// Returns (cos(a), sin(a)) for an f32 angle a; identical to rope.wgsl's sincos.
fn sincos(a: f32) -> vec2<f32> {
  let q = round(a * TWO_OVER_PI);
  let r = ((a - q * PIO2_1) - q * PIO2_2) - q * PIO2_3;  // r in ~[-pi/4, pi/4]
  let z = r * r;
  let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
  let c = 1.0 - 0.5 * z +
    z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
  let k = i32(q) & 3;
  if (k == 0) { return vec2<f32>(c, s); }
  if (k == 1) { return vec2<f32>(-s, c); }
  if (k == 2) { return vec2<f32>(-c, -s); }
  return vec2<f32>(s, -c);
}

// Steps 3 and 4: rotate vals and store it at out[b, h, t, :]; zero_last zeroes out[.., D-1]
// of the first head of each group.
fn rotate_store(row: u32, li: u32, zero_last: bool) {
  let h = row % p.heads;
  let bt = row / p.heads;
  let t = bt % p.seq;
  let b = bt / p.seq;
  let position = pos[select(t, bt, p.pos_batched == 1u)];
  let half = p.d / 2u;
  let base = ((b * p.heads + h) * p.seq + t) * p.d;
  let neuron = zero_last && h % p.group == 0u;
  for (var j = li; j < half; j += WG) {
    // The select on the always-false p.zero stops contraction into an fma (see rope.wgsl).
    let ang = select(f32(position) * inv_freq[j], 0.0, p.zero != 0u);
    let cs = sincos(ang);
    let x1 = f32(vals[j]);
    let x2 = f32(vals[j + half]);
    out[base + j] = T(x1 * cs.x - x2 * cs.y);
    out[base + j + half] = select(T(x2 * cs.x + x1 * cs.y), T(0.0), neuron && j == half - 1u);
  }
}

@compute @workgroup_size(WG)
fn heads_rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }  // uniform: the whole workgroup leaves
  load_plain(row, li);
  rotate_store(row, li, false);
}

@compute @workgroup_size(WG)
fn heads_rope_neuron(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  load_plain(row, li);
  take_neuron(row, li);
  rotate_store(row, li, true);
}

@compute @workgroup_size(WG)
fn heads_rope_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  load_norm(row, li);
  rotate_store(row, li, false);
}

@compute @workgroup_size(WG)
fn heads_rope_norm_neuron(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  load_norm(row, li);
  take_neuron(row, li);
  rotate_store(row, li, true);
}
