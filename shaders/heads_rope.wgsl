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
//   3. RoPE rotate-half exactly as rope.wgsl (sincos.wgsl): ang = f32(pos) * inv_freq[j],
//      out[j] = v[j] cos - v[j+D/2] sin, out[j+D/2] = v[j+D/2] cos + v[j] sin;
//   4. neuron heads: out[D-1] = 0 again (removes the v[D/2-1] sin term, SPEC §1a).
//
// One workgroup per row (2-D grid beyond 65535 rows: row = wid.y * nwg.x + wid.x), rows in
// x's memory order [B, T, H]. The row is staged in workgroup memory (so D <= MAX_D); each of
// the WG threads (a power of two, 32..128, covering D/2) handles the pairs j, j + WG, ...
// Four entry points (heads_rope[_norm][_neuron]) so each binds only the buffers it uses.
//
// heads_rope_qk[_norm][_neuron[_decide]]: queries and keys of one layer in one dispatch.
//   x:[B, T, Hq, D] (binding x), xk:[B, T, Hkv, D], w:[D] and wk:[D] (GK), pos, inv_freq
//   -> out:[B, Hq, T, D], out_k:[B, Hkv, T, D], raw:[B, T, Hkv] f32 (_neuron),
//   -> alpha:[B, Hkv, T] f32 and decisions:[B, Hkv, T] i32 (_decide, per-head alpha):
//      alpha = raw * scale - offset, decisions = 1[alpha > 0], exactly finalize_infer's f32
//      expression in dms_decision.wgsl (SPEC §1).
//   The grid covers the q rows [B, T, Hq] (rows 0..q_rows-1) then the k rows [B, T, Hkv];
//   each workgroup runs the same steps as heads_rope[_norm][_neuron] on its row (the same
//   functions below), so the result equals two heads_rope dispatches bit for bit.
//
// heads_rope_append.wgsl includes this file: the same q/k preparation for a decode step with the
// cache's append fused in (its own bindings are 12 and up).

// #include "sincos"

struct Params {
  rows: u32,         // B * T * H (heads_rope_qk: B * T * (Hq + Hkv))
  q_rows: u32,       // heads_rope_qk: B * T * Hq, the first k row
  d: u32,            // head dim D (even, <= MAX_D)
  heads: u32,        // H (heads_rope_qk: Hq)
  seq: u32,          // T
  group: u32,        // G = H / Hkv (neuron entries)
  kv_heads: u32,     // Hkv (neuron and qk entries)
  pos_batched: u32,  // 1: positions [B, T]; 0: positions [T], shared by the batch
  eps: f32,          // RMSNorm eps (norm entries; heads_rope_qk: of q)
  eps_k: f32,        // heads_rope_qk_norm*: RMSNorm eps of k
  scale: f32,        // _decide: alpha_scale
  offset: f32,       // _decide: initial_alpha_offset
  zero: u32,         // always 0 (keeps the angle rounded to f32, see sincos.wgsl)
  // heads_rope_append.wgsl's entries (this file's entries take them as 0):
  lbase: u32,        // layer * pages, this layer's rows of lens and table
  bs: u32,           // block size
  mb: u32,           // block-table width
  t0: i32,           // the new entry's position
  wc: u32,           // _dms: the ring's size Wc = W + 1
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> xk: array<T>;
@group(0) @binding(3) var<storage, read> w: array<G>;
@group(0) @binding(4) var<storage, read> wk: array<GK>;
@group(0) @binding(5) var<storage, read> pos: array<i32>;
@group(0) @binding(6) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<T>;
@group(0) @binding(8) var<storage, read_write> out_k: array<T>;
@group(0) @binding(9) var<storage, read_write> raw: array<f32>;
@group(0) @binding(10) var<storage, read_write> alpha: array<f32>;
@group(0) @binding(11) var<storage, read_write> decisions: array<i32>;

override WG: u32 = 64u;
const MAX_D: u32 = 256u;

// the row after step 1 (and 2), in the storage type: storing it rounds to T (an f32 array with
// f32(T(v)) did not: NVIDIA's compiler folds that round trip away, measured on the H200)
var<workgroup> vals: array<T, MAX_D>;
var<workgroup> partial: array<f32, 128>;  // sum-of-squares tree (WG <= 128)

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.y * nwg.x + wid.x;
}

// Stages row `row` of x (q) or xk (k) in vals; returns this thread's part of sum(x^2). The
// first two elements of a thread (D <= 2·WG: all of them) are requested before either is used:
// naga bounds every loop, so drivers do not unroll them, and a loop's loads go out one
// iteration at a time.
fn stage_x(row: u32, li: u32) -> f32 {
  let a = x[min(row * p.d + li, row * p.d + p.d - 1u)];
  let b = x[min(row * p.d + li + WG, row * p.d + p.d - 1u)];
  var ss = 0.0;
  if (li < p.d) {
    vals[li] = a;
    ss += f32(a) * f32(a);
  }
  if (li + WG < p.d) {
    vals[li + WG] = b;
    ss += f32(b) * f32(b);
  }
  for (var i = li + 2u * WG; i < p.d; i += WG) {
    let xi = x[row * p.d + i];
    vals[i] = xi;
    ss += f32(xi) * f32(xi);
  }
  return ss;
}

fn stage_xk(row: u32, li: u32) -> f32 {
  let a = xk[min(row * p.d + li, row * p.d + p.d - 1u)];
  let b = xk[min(row * p.d + li + WG, row * p.d + p.d - 1u)];
  var ss = 0.0;
  if (li < p.d) {
    vals[li] = a;
    ss += f32(a) * f32(a);
  }
  if (li + WG < p.d) {
    vals[li + WG] = b;
    ss += f32(b) * f32(b);
  }
  for (var i = li + 2u * WG; i < p.d; i += WG) {
    let xi = xk[row * p.d + i];
    vals[i] = xi;
    ss += f32(xi) * f32(xi);
  }
  return ss;
}

// vals[i] = T(g_i · (vals[i] · r)) for this thread's i, g_i = ga, gb for its first two (given).
fn norm_vals(li: u32, ga: f32, gb: f32, r: f32) {
  if (li < p.d) { vals[li] = T(ga * (f32(vals[li]) * r)); }
  if (li + WG < p.d) { vals[li + WG] = T(gb * (f32(vals[li + WG]) * r)); }
}

// inverseSqrt(mean(x^2) + eps) from each thread's partial sum (tree over the workgroup).
fn rms_scale(ss: f32, li: u32, eps: f32) -> f32 {
  partial[li] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { partial[li] += partial[li + s]; }
    workgroupBarrier();
  }
  return inverseSqrt(partial[0] / f32(p.d) + eps);
}

// Step 1 without a norm: vals = x row.
fn load_plain(row: u32, li: u32) {
  _ = stage_x(row, li);
  workgroupBarrier();
}

// Step 1 with a norm: vals = T(w * x * inverseSqrt(mean(x^2) + eps)), f32 math.
fn load_norm(row: u32, li: u32) {
  let ga = f32(w[min(li, p.d - 1u)]);
  let gb = f32(w[min(li + WG, p.d - 1u)]);
  let r = rms_scale(stage_x(row, li), li, p.eps);
  norm_vals(li, ga, gb, r);
  for (var i = li + 2u * WG; i < p.d; i += WG) { vals[i] = T(f32(w[i]) * (f32(vals[i]) * r)); }
  workgroupBarrier();
}

// The same two for a k row (xk, wk, eps_k).
fn load_plain_k(row: u32, li: u32) {
  _ = stage_xk(row, li);
  workgroupBarrier();
}

fn load_norm_k(row: u32, li: u32) {
  let ga = f32(wk[min(li, p.d - 1u)]);
  let gb = f32(wk[min(li + WG, p.d - 1u)]);
  let r = rms_scale(stage_xk(row, li), li, p.eps_k);
  norm_vals(li, ga, gb, r);
  for (var i = li + 2u * WG; i < p.d; i += WG) { vals[i] = T(f32(wk[i]) * (f32(vals[i]) * r)); }
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

// Step 2 and the inference decision of KV head h / G at (b, t) (SPEC §1, per-head alpha):
// alpha[b, g, t] = raw * scale - offset and decisions = 1[alpha > 0], finalize_infer's math.
fn take_neuron_decide(row: u32, li: u32) {
  let h = row % p.heads;
  if (li == 0u && h % p.group == 0u) {
    let bt = row / p.heads;
    let g = h / p.group;
    let r = f32(vals[p.d - 1u]);
    raw[bt * p.kv_heads + g] = r;
    vals[p.d - 1u] = T(0.0);
    // The select on the always-false p.zero keeps the product rounded before the subtraction
    // (no fma), as finalize_infer and the reference compute alpha: on the H200 a contracted
    // alpha missed the threshold case alpha = 0 (test heads_rope_qk, "alpha = 0 keeps").
    let a = select(r * p.scale, 0.0, p.zero != 0u) - p.offset;
    let i = ((bt / p.seq) * p.kv_heads + g) * p.seq + bt % p.seq;  // [B, Hkv, T]
    alpha[i] = a;
    decisions[i] = select(0, 1, a > 0.0);
  }
  workgroupBarrier();
}

// Where row `row` of a [B, T, heads, D] input goes in [B, heads, T, D], and its position.
struct RowAt {
  base: u32,
  position: i32,
  h: u32,
}

fn row_at(row: u32, heads: u32) -> RowAt {
  let h = row % heads;
  let bt = row / heads;
  let t = bt % p.seq;
  let b = bt / p.seq;
  return RowAt(((b * heads + h) * p.seq + t) * p.d, pos[select(t, bt, p.pos_batched == 1u)], h);
}

// Step 3 for pair j of vals: (v[j] cos - v[j + D/2] sin, v[j + D/2] cos + v[j] sin).
fn rope_pair(position: i32, j: u32, half: u32) -> vec2<f32> {
  // The select on the always-false p.zero stops contraction into an fma (see sincos.wgsl).
  let ang = select(f32(position) * inv_freq[j], 0.0, p.zero != 0u);
  let cs = sincos(ang);
  let x1 = f32(vals[j]);
  let x2 = f32(vals[j + half]);
  return vec2<f32>(x1 * cs.x - x2 * cs.y, x2 * cs.x + x1 * cs.y);
}

// Steps 3 and 4: rotate vals and store it at out[b, h, t, :]; zero_last zeroes out[.., D-1]
// of the first head of each group.
fn rotate_store(row: u32, li: u32, zero_last: bool) {
  let at = row_at(row, p.heads);
  let half = p.d / 2u;
  let neuron = zero_last && at.h % p.group == 0u;
  for (var j = li; j < half; j += WG) {
    let v = rope_pair(at.position, j, half);
    out[at.base + j] = T(v.x);
    out[at.base + j + half] = select(T(v.y), T(0.0), neuron && j == half - 1u);
  }
}

// Step 3 for a k row: rotate vals and store it at out_k[b, h, t, :].
fn rotate_store_k(row: u32, li: u32) {
  let at = row_at(row, p.kv_heads);
  let half = p.d / 2u;
  for (var j = li; j < half; j += WG) {
    let v = rope_pair(at.position, j, half);
    out_k[at.base + j] = T(v.x);
    out_k[at.base + j + half] = T(v.y);
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

// heads_rope_qk*: rows < q_rows are q rows (as heads_rope*), the rest k rows (row - q_rows).
// The branch is on the workgroup's row, uniform, so the barriers inside are too.

@compute @workgroup_size(WG)
fn heads_rope_qk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (row < p.q_rows) {
    load_plain(row, li);
    rotate_store(row, li, false);
  } else {
    load_plain_k(row - p.q_rows, li);
    rotate_store_k(row - p.q_rows, li);
  }
}

@compute @workgroup_size(WG)
fn heads_rope_qk_neuron(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (row < p.q_rows) {
    load_plain(row, li);
    take_neuron(row, li);
    rotate_store(row, li, true);
  } else {
    load_plain_k(row - p.q_rows, li);
    rotate_store_k(row - p.q_rows, li);
  }
}

@compute @workgroup_size(WG)
fn heads_rope_qk_neuron_decide(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (row < p.q_rows) {
    load_plain(row, li);
    take_neuron_decide(row, li);
    rotate_store(row, li, true);
  } else {
    load_plain_k(row - p.q_rows, li);
    rotate_store_k(row - p.q_rows, li);
  }
}

@compute @workgroup_size(WG)
fn heads_rope_qk_norm(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (row < p.q_rows) {
    load_norm(row, li);
    rotate_store(row, li, false);
  } else {
    load_norm_k(row - p.q_rows, li);
    rotate_store_k(row - p.q_rows, li);
  }
}

@compute @workgroup_size(WG)
fn heads_rope_qk_norm_neuron(@builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (row < p.q_rows) {
    load_norm(row, li);
    take_neuron(row, li);
    rotate_store(row, li, true);
  } else {
    load_norm_k(row - p.q_rows, li);
    rotate_store_k(row - p.q_rows, li);
  }
}

@compute @workgroup_size(WG)
fn heads_rope_qk_norm_neuron_decide(@builtin(workgroup_id) wid: vec3<u32>,
                                    @builtin(num_workgroups) nwg: vec3<u32>,
                                    @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (row < p.q_rows) {
    load_norm(row, li);
    take_neuron_decide(row, li);
    rotate_store(row, li, true);
  } else {
    load_norm_k(row - p.q_rows, li);
    rotate_store_k(row - p.q_rows, li);
  }
}
