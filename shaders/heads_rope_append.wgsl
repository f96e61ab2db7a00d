// The q/k preparation of a decode step with the cache's append fused in (issue #10: one dispatch
// a layer fewer). Launcher and documentation: src/dms/heads_rope_append.ts. The q/k functions,
// the uniform struct (lbase, bs, mb, t0, wc) and bindings 0-11 come from heads_rope.wgsl:
// #include-d below, so that both paths run the same WGSL.
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

// #include "heads_rope"

// _append (decode, T = 1, a cache that appends in place): page pg = b * Hkv + h = the k row.
@group(0) @binding(12) var<storage, read> v_in: array<T>;            // [B, 1, Hkv, D]
@group(0) @binding(13) var<storage, read_write> lens: array<i32>;   // [layers, pages]
@group(0) @binding(14) var<storage, read> table: array<i32>;        // [layers, pages, mb]
@group(0) @binding(15) var<storage, read_write> kmeta: array<i32>;  // [blocks * bs, 2]
@group(0) @binding(16) var<storage, read_write> kpool: array<T>;    // [blocks * bs, D]
@group(0) @binding(17) var<storage, read_write> vpool: array<T>;    // [blocks * bs, D]
@group(0) @binding(18) var<storage, read_write> ring: array<i32>;   // _dms: [layers, pages, Wc, 2]
@group(0) @binding(19) var<storage, read> slots: array<i32>;        // _dms: [layers, pages]

var<workgroup> sh_entry: u32;             // _append: the new entry's row in the pool
var<workgroup> partial2: array<vec2<f32>, 128>; // _dms: the q and k trees together
var<workgroup> sh_logit: T;                     // _dms: the neuron of the page's first q head

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
  // the first two elements of each row requested together (see stage_x)
  let last = p.d - 1u;
  let a0 = x[qrow * p.d + min(li, last)];
  let a1 = x[qrow * p.d + min(li + WG, last)];
  let b0 = xk[pg * p.d + min(li, last)];
  let b1 = xk[pg * p.d + min(li + WG, last)];
  if (li < p.d) {
    ss.x += f32(a0) * f32(a0);
    vals[li] = b0;
    ss.y += f32(b0) * f32(b0);
  }
  if (li + WG < p.d) {
    ss.x += f32(a1) * f32(a1);
    vals[li + WG] = b1;
    ss.y += f32(b1) * f32(b1);
  }
  for (var i = li + 2u * WG; i < p.d; i += WG) {
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
  let ga = f32(wk[min(li, p.d - 1u)]);
  let gb = f32(wk[min(li + WG, p.d - 1u)]);
  let r = rms_scales(ss, li);
  norm_vals(li, ga, gb, r.y);
  for (var i = li + 2u * WG; i < p.d; i += WG) {
    vals[i] = T(f32(wk[i]) * (f32(vals[i]) * r.y));
  }
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
  let va = v_in[pg * p.d + min(li, p.d - 1u)];
  let vb = v_in[pg * p.d + min(li + WG, p.d - 1u)];
  if (li < p.d) { vpool[e * p.d + li] = va; }
  if (li + WG < p.d) { vpool[e * p.d + li + WG] = vb; }
  for (var i = li + 2u * WG; i < p.d; i += WG) { vpool[e * p.d + i] = v_in[pg * p.d + i]; }
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
