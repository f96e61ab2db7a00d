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
// heads_rope_qk[_norm][_neuron]_append: a decode step (T = 1) into a cache whose policy appends
//   in place (the dense cache), the append fused in: the k row of page pg = b * Hkv + h takes
//   slot s = lens[pg] (lens[pg] = s + 1; the block was allocated by the host), stores its rotated
//   row into kpool, copies row pg of v_in into vpool and sets meta = (t0, 0) — what
//   paged_kv.wgsl's append_scatter does with the rows out_k and v — instead of writing out_k.
//   The neuron channel of q is zeroed without recording raw (the dense cache takes no
//   decisions). One dispatch a layer fewer.
// heads_rope_qk[_norm]_neuron_dms: the same for the DMS cache, whose decode_slots (dms_cache.wgsl)
//   chose every layer's slot before the step (SPEC §5.2 steps 1, 2, 4): the k row of page pg
//   stores its entry at slot slots[lbase + pg] (lens already counted), and runs step 3 first:
//   it computes its KV head's decision d_t from query head h * G as the q row's workgroup of
//   heads_rope_qk*_decide does (the same sums in the same order) and marks the entry of
//   position t0 - 1 with it (ring flag and meta mark, mark_position of dms_cache.wgsl).

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
  zero: u32,         // always 0 (keeps the angle rounded to f32, see rope.wgsl)
  lbase: u32,        // _append: layer * pages, this layer's rows of lens and table
  bs: u32,           // _append: block size
  mb: u32,           // _append: block-table width
  t0: i32,           // _append: the new entry's position
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
// _append (decode, T = 1, a cache that appends in place): page pg = b * Hkv + h = the k row.
@group(0) @binding(12) var<storage, read> v_in: array<T>;            // [B, 1, Hkv, D]
@group(0) @binding(13) var<storage, read_write> lens: array<i32>;   // [layers, pages]
@group(0) @binding(14) var<storage, read> table: array<i32>;        // [layers, pages, mb]
@group(0) @binding(15) var<storage, read_write> kmeta: array<i32>;  // [blocks * bs, 2]
@group(0) @binding(16) var<storage, read_write> kpool: array<T>;    // [blocks * bs, D]
@group(0) @binding(17) var<storage, read_write> vpool: array<T>;    // [blocks * bs, D]
@group(0) @binding(18) var<storage, read_write> ring: array<i32>;   // _dms: [layers, pages, Wc, 2]
@group(0) @binding(19) var<storage, read> slots: array<i32>;        // _dms: [layers, pages]

override WG: u32 = 64u;
const MAX_D: u32 = 256u;

// the row after step 1 (and 2), in the storage type: storing it rounds to T (an f32 array with
// f32(T(v)) did not: NVIDIA's compiler folds that round trip away, measured on the H200)
var<workgroup> vals: array<T, MAX_D>;
var<workgroup> partial: array<f32, 128>;  // sum-of-squares tree (WG <= 128)
var<workgroup> sh_entry: u32;             // _append: the new entry's row in the pool
var<workgroup> partial2: array<vec2<f32>, 128>; // _dms: the q and k trees together
var<workgroup> sh_logit: T;                     // _dms: the neuron of the page's first q head

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.y * nwg.x + wid.x;
}

// Stages row `row` of x (q) or xk (k) in vals; returns this thread's part of sum(x^2).
fn stage_x(row: u32, li: u32) -> f32 {
  var ss = 0.0;
  for (var i = li; i < p.d; i += WG) {
    let xi = x[row * p.d + i];
    vals[i] = xi;
    ss += f32(xi) * f32(xi);
  }
  return ss;
}

fn stage_xk(row: u32, li: u32) -> f32 {
  var ss = 0.0;
  for (var i = li; i < p.d; i += WG) {
    let xi = xk[row * p.d + i];
    vals[i] = xi;
    ss += f32(xi) * f32(xi);
  }
  return ss;
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
  let r = rms_scale(stage_x(row, li), li, p.eps);
  for (var i = li; i < p.d; i += WG) { vals[i] = T(f32(w[i]) * (f32(vals[i]) * r)); }
  workgroupBarrier();
}

// The same two for a k row (xk, wk, eps_k).
fn load_plain_k(row: u32, li: u32) {
  _ = stage_xk(row, li);
  workgroupBarrier();
}

fn load_norm_k(row: u32, li: u32) {
  let r = rms_scale(stage_xk(row, li), li, p.eps_k);
  for (var i = li; i < p.d; i += WG) { vals[i] = T(f32(wk[i]) * (f32(vals[i]) * r)); }
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
  // The select on the always-false p.zero stops contraction into an fma (see rope.wgsl).
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

// _append, step 2 without raw: the first head of each group zeroes channel D-1 (SPEC §1a).
fn drop_neuron(row: u32, li: u32) {
  if (li == 0u && (row % p.heads) % p.group == 0u) { vals[p.d - 1u] = T(0.0); }
  workgroupBarrier();
}

// _append, the k row pg (T = 1: the row is the page): thread 0 takes slot s = lens[pg] of this
// layer (lens + 1, meta = (t0, 0)) before the row is staged, so that its loads overlap the norm
// (the entry point then stages the row and calls `store_kv` with the entry in sh_entry).
fn append_slot(pg: u32, li: u32) {
  if (li == 0u) {
    let r = p.lbase + pg;
    let s = lens[r];
    lens[r] = s + 1;
    let e = u32(table[r * p.mb + u32(s) / p.bs]) * p.bs + u32(s) % p.bs;
    kmeta[2u * e] = p.t0;
    kmeta[2u * e + 1u] = 0;
    sh_entry = e;
  }
}

// _dms: the entry e of slot `slot` of page pg of this layer.
fn entry_of(pg: u32, slot: i32) -> u32 {
  let r = p.lbase + pg;
  return u32(table[r * p.mb + u32(slot) / p.bs]) * p.bs + u32(slot) % p.bs;
}

// _dms, the k row of page pg, in three parts around its staging (the `_dms` entry points):
// `dms_book` (thread 0 first requests what the bookkeeping reads: the ring entry of t0 - 1, the
// step's slot and their blocks, so that those loads overlap the norms), `dms_stage` (the k row
// into vals and the sums of squares of it and of the page's first query head, in load_norm's
// per-thread order), and `dms_finish`: d_t from that head's neuron (sh_logit: channel D-1 as
// load_norm stores it; through workgroup memory and a barrier, since NVIDIA's compiler folds an
// f32(T(v)) round trip away, see `vals`), alpha and the threshold as take_neuron_decide computes
// them, SPEC §5.2 step 3 (d_t marks t0 - 1: ring flag and meta) and the new entry's meta.
struct DmsBook {
  prev: i32,  // slot of position t0 - 1, or -1
  prevE: u32, // its entry
  newE: u32,  // the new entry
}

fn dms_ring_of_prev(pg: u32) -> u32 {
  return ((p.lbase + pg) * p.wc + u32(p.t0 - 1) % p.wc) * 2u;
}

fn dms_book(pg: u32, li: u32) -> DmsBook {
  var b = DmsBook(-1, 0u, 0u);
  if (li == 0u) {
    if (p.t0 > 0) {
      b.prev = ring[dms_ring_of_prev(pg)];
      if (b.prev >= 0) { b.prevE = entry_of(pg, b.prev); }
    }
    b.newE = entry_of(pg, slots[p.lbase + pg]);
  }
  return b;
}

fn dms_stage(pg: u32, li: u32) -> vec2<f32> {
  let qrow = lead_q_row(pg);
  var ss = vec2<f32>(0.0);
  for (var i = li; i < p.d; i += WG) {
    let a = x[qrow * p.d + i];
    ss.x += f32(a) * f32(a);
    let b = xk[pg * p.d + i];
    vals[i] = b;
    ss.y += f32(b) * f32(b);
  }
  return ss;
}

// _dms without norms: the neuron as it is.
fn dms_plain(pg: u32, li: u32) {
  let last = p.d - 1u;
  if (li == last % WG) { sh_logit = x[lead_q_row(pg) * p.d + last]; }
}

// _dms with norms: the k row normed in vals (load_norm_k's expression), the neuron normed.
fn dms_norm(pg: u32, li: u32, ss: vec2<f32>) {
  let r = rms_scales(ss, li);
  for (var i = li; i < p.d; i += WG) { vals[i] = T(f32(wk[i]) * (f32(vals[i]) * r.y)); }
  let last = p.d - 1u;
  if (li == last % WG) {
    sh_logit = T(f32(w[last]) * (f32(x[lead_q_row(pg) * p.d + last]) * r.x));
  }
}

fn dms_finish(pg: u32, li: u32, b: DmsBook) -> u32 {
  workgroupBarrier();
  if (li == 0u) {
    let logit = f32(sh_logit);
    let a = select(logit * p.scale, 0.0, p.zero != 0u) - p.offset;  // take_neuron_decide's alpha
    let d = select(0, 1, a > 0.0);
    if (b.prev >= 0) {
      ring[dms_ring_of_prev(pg) + 1u] = d;
      kmeta[2u * b.prevE + 1u] = d;
    }
    kmeta[2u * b.newE] = p.t0;
    kmeta[2u * b.newE + 1u] = 0;
    sh_entry = b.newE;
  }
  return workgroupUniformLoad(&sh_entry);
}

// rms_scale of two rows at once (x: q, y: k; eps and eps_k): the same tree per component.
fn rms_scales(ss: vec2<f32>, li: u32) -> vec2<f32> {
  partial2[li] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { partial2[li] += partial2[li + s]; }
    workgroupBarrier();
  }
  let m = partial2[0] / f32(p.d);
  return vec2<f32>(inverseSqrt(m.x + p.eps), inverseSqrt(m.y + p.eps_k));
}

// _dms: the rotated k row (vals) and v_in's row of page pg into entry e.
fn store_kv(pg: u32, e: u32, li: u32) {
  let at = row_at(pg, p.kv_heads);
  let half = p.d / 2u;
  for (var j = li; j < half; j += WG) {
    let v = rope_pair(at.position, j, half);
    kpool[e * p.d + j] = T(v.x);
    kpool[e * p.d + j + half] = T(v.y);
  }
  for (var i = li; i < p.d; i += WG) { vpool[e * p.d + i] = v_in[pg * p.d + i]; }
}

// _dms: q row of page pg's first query head (T = 1: b * Hq + h * G).
fn lead_q_row(pg: u32) -> u32 {
  return (pg / p.kv_heads) * p.heads + (pg % p.kv_heads) * p.group;
}

@compute @workgroup_size(WG)
fn heads_rope_qk_neuron_dms(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (row < p.q_rows) {
    load_plain(row, li);
    drop_neuron(row, li);
    rotate_store(row, li, true);
  } else {
    let pg = row - p.q_rows;
    let b = dms_book(pg, li);
    _ = dms_stage(pg, li);
    dms_plain(pg, li);
    store_kv(pg, dms_finish(pg, li, b), li);
  }
}

@compute @workgroup_size(WG)
fn heads_rope_qk_norm_neuron_dms(@builtin(workgroup_id) wid: vec3<u32>,
                                 @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (row < p.q_rows) {
    load_norm(row, li);
    drop_neuron(row, li);
    rotate_store(row, li, true);
  } else {
    let pg = row - p.q_rows;
    let b = dms_book(pg, li);
    dms_norm(pg, li, dms_stage(pg, li));
    store_kv(pg, dms_finish(pg, li, b), li);
  }
}

@compute @workgroup_size(WG)
fn heads_rope_qk_append(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (row < p.q_rows) {
    load_plain(row, li);
    rotate_store(row, li, false);
  } else {
    let pg = row - p.q_rows;
    append_slot(pg, li);
    load_plain_k(pg, li);
    store_kv(pg, workgroupUniformLoad(&sh_entry), li);
  }
}

@compute @workgroup_size(WG)
fn heads_rope_qk_neuron_append(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (row < p.q_rows) {
    load_plain(row, li);
    drop_neuron(row, li);
    rotate_store(row, li, true);
  } else {
    let pg = row - p.q_rows;
    append_slot(pg, li);
    load_plain_k(pg, li);
    store_kv(pg, workgroupUniformLoad(&sh_entry), li);
  }
}

@compute @workgroup_size(WG)
fn heads_rope_qk_norm_append(@builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (row < p.q_rows) {
    load_norm(row, li);
    rotate_store(row, li, false);
  } else {
    let pg = row - p.q_rows;
    append_slot(pg, li);
    load_norm_k(pg, li);
    store_kv(pg, workgroupUniformLoad(&sh_entry), li);
  }
}

@compute @workgroup_size(WG)
fn heads_rope_qk_norm_neuron_append(@builtin(workgroup_id) wid: vec3<u32>,
                                    @builtin(num_workgroups) nwg: vec3<u32>,
                                    @builtin(local_invocation_index) li: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (row < p.q_rows) {
    load_norm(row, li);
    drop_neuron(row, li);
    rotate_store(row, li, true);
  } else {
    let pg = row - p.q_rows;
    append_slot(pg, li);
    load_norm_k(pg, li);
    store_kv(pg, workgroupUniformLoad(&sh_entry), li);
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
