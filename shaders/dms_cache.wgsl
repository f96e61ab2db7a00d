// The DMS eviction policy on the paged KV storage (SPEC §2, §5.1, §5.2).
// Launcher and the proof sketches: src/dms/dms_cache.ts. Storage kernels: paged_kv.wgsl.
//
// Per page (b, h) the policy keeps a ring of the last Wc = W + 1 positions, indexed by
// position: ring[pos % Wc] = (slot, flag) of the entry at `pos`, slot -1 when that position has
// no entry (left padding, or not reached yet). flag = mark(pos) = d(pos + 1) once known.
// The storage's meta mark of the slot is kept equal to the ring flag.
//
//   decode_update    SPEC §5.2 steps 1-4 for token t (one thread per page): c = ring[t % Wc]
//                    (token t - Wc); recycle its slot if flagged, else append at len; mark
//                    token t - 1 with d_t; ring[t % Wc] = (slot, 0). dest[p] = slot.
//   decode_update_scatter  the same update (one workgroup per page, thread 0), then the
//                    workgroup writes the new entry at its slot: K and V rows copied as 32-bit
//                    words (rw per row; the dtype does not matter), meta = (t, 0) — exactly
//                    decode_update followed by paged_kv.wgsl's scatter, in one dispatch.
//                    kc, vc:[B, Hkv, 1, D] as words  kpool, vpool:[blocks*bs, D] as words
//   decode_slots     SPEC §5.2 steps 1, 2 and 4 for token t on every layer at once (one thread per
//                    (layer, page), before the step's first layer): recycle or append, ring[t % Wc]
//                    = (slot, 0), lens; dest:[layers, pages] = the slots. Step 3 (d_t marks t - 1)
//                    and the entry's K/V are then written by the model's q/k kernel
//                    (heads_rope.wgsl, `_dms` entries). Valid for Wc >= 2: the flag that step 1
//                    reads (of token t - Wc) was set by d_{t-Wc+1}, an earlier step's decision, and
//                    step 3 writes the entry of t - 1, which no step-1 read of this step touches.
//   prefill_marks    chunk marks cm[p, j] = d(j+1) (j < n-1), 0 (j = n-1), 2 (padding), and
//                    the carry: d(0) marks the previous newest entry (position t0 - 1).
//   prefill_compact  after attention (one workgroup per page): drops the ring entries that are
//                    flagged and leave the window (pos + Wc <= newest), picks the chunk's
//                    survivors (mark 0, or pos + Wc > newest), gives them the freed slots first
//                    (in position order) and then slots len, len+1, ...; writes dest[p, j]
//                    (-1: not stored), the new len and the ring of the last Wc positions.
//
//   decisions:[B, Hkv, n] i32 (unshifted d)  fr:[B] first real (non-padding) chunk index
//   cm, dest:[pages, n]  holes:[pages, Wc]  ring:[layers, pages, Wc, 2]  lens:[layers, pages]

struct Params {
  pages: u32,   // B * Hkv
  hkv: u32,     // KV heads
  n: u32,       // tokens in this call
  wc: u32,      // cache window W + 1
  evict: u32,   // 0: evict false (every decision read as 0; Wc = 1)
  bs: u32,      // block size
  mb: u32,      // block-table width
  lbase: u32,   // layer * pages
  t0: i32,      // position of the first token of this call
  rw: u32,      // decode_update_scatter: 32-bit words per K/V row (D * element bytes / 4)
  layers: u32,  // decode_slots: layers of the storage
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> lens: array<i32>;   // [layers, pages]
@group(0) @binding(2) var<storage, read_write> ring: array<i32>;   // [layers, pages, wc, 2]
@group(0) @binding(3) var<storage, read> table: array<i32>;        // [layers, pages, mb]
@group(0) @binding(4) var<storage, read_write> kmeta: array<i32>;   // [blocks*bs, 2]
@group(0) @binding(5) var<storage, read> decisions: array<i32>;    // [pages, n]
@group(0) @binding(6) var<storage, read> fr: array<i32>;           // [B]
@group(0) @binding(7) var<storage, read_write> cm: array<i32>;     // [pages, n]
@group(0) @binding(8) var<storage, read_write> dest: array<i32>;   // [pages, n]
@group(0) @binding(9) var<storage, read_write> holes: array<i32>;  // [pages, wc]
@group(0) @binding(10) var<storage, read> kc: array<u32>;          // [pages, rw] new K rows
@group(0) @binding(11) var<storage, read> vc: array<u32>;          // [pages, rw] new V rows
@group(0) @binding(12) var<storage, read_write> kpool: array<u32>; // [blocks*bs, rw]
@group(0) @binding(13) var<storage, read_write> vpool: array<u32>; // [blocks*bs, rw]

override WG: u32 = 64u;

var<workgroup> scan: array<u32, WG>;
var<workgroup> sh_len: i32;
var<workgroup> sh_slot: i32;

fn phys(pg: u32, s: i32) -> u32 {
  let blk = table[(p.lbase + pg) * p.mb + u32(s) / p.bs];
  return u32(blk) * p.bs + u32(s) % p.bs;
}

fn decision(i: u32) -> i32 {
  if (p.evict == 0u) { return 0; }
  return select(0, 1, decisions[i] != 0);
}

// Ring entry index (in i32 pairs) of position `pos` of page `pg`.
fn ring_at(pg: u32, pos: i32) -> u32 {
  return ((p.lbase + pg) * p.wc + u32(pos) % p.wc) * 2u;
}

// Sets the mark of the entry at position `pos` (if it has one) in the ring and in meta.
fn mark_position(pg: u32, pos: i32, d: i32) {
  let e = ring_at(pg, pos);
  let slot = ring[e];
  if (slot >= 0) {
    ring[e + 1u] = d;
    kmeta[2u * phys(pg, slot) + 1u] = d;
  }
}

// Steps 1, 2 and 4 for token t = p.t0 on row li = layer * pages + page of lens and the ring
// (its entry of position t at `c`); returns the slot. `update_page` runs step 3 in between.
fn choose_slot(li: u32, c: u32) -> i32 {
  let len = lens[li];
  var slot = len;  // 2. append
  if (ring[c] >= 0 && ring[c + 1u] == 1) {
    slot = ring[c];  // 2. recycle: the flagged token t - Wc leaves the cache
  } else {
    lens[li] = len + 1;
  }
  return slot;
}

// SPEC §5.2 steps 1-4 for token t = p.t0 on page pg; returns the new entry's slot.
fn update_page(pg: u32) -> i32 {
  let li = p.lbase + pg;
  let t = p.t0;
  let before = lens[li];
  // 1. c = the entry of token t - Wc (empty ring entries have slot -1, flag 0); 2.
  let c = ring_at(pg, t);
  let slot = choose_slot(li, c);
  // 3. d_t marks token t - 1.
  if (before > 0 && t > 0) { mark_position(pg, t - 1, decision(pg)); }
  // 4. ring[t % Wc] = (slot, 0).
  ring[c] = slot;
  ring[c + 1u] = 0;
  return slot;
}

@compute @workgroup_size(WG)
fn decode_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) tid: u32) {
  let pg = (wid.y * nwg.x + wid.x) * WG + tid;
  if (pg >= p.pages) { return; }
  dest[pg] = update_page(pg);
}

@compute @workgroup_size(WG)
fn decode_slots(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
  let li = (wid.y * nwg.x + wid.x) * WG + tid;  // layer * pages + page
  if (li >= p.layers * p.pages) { return; }
  let c = (li * p.wc + u32(p.t0) % p.wc) * 2u;  // 1. the entry of token t - Wc
  let slot = choose_slot(li, c);
  ring[c] = slot;  // 4. ring[t % Wc] = (slot, 0)
  ring[c + 1u] = 0;
  dest[li] = slot;
}

@compute @workgroup_size(WG)
fn decode_update_scatter(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) tid: u32) {
  let pg = wid.y * nwg.x + wid.x;  // one workgroup per page (uniform: the early return is too)
  if (pg >= p.pages) { return; }
  if (tid == 0u) { sh_slot = update_page(pg); }
  let slot = workgroupUniformLoad(&sh_slot);
  let ph = phys(pg, slot);
  for (var i = tid; i < p.rw; i += WG) {
    kpool[ph * p.rw + i] = kc[pg * p.rw + i];
    vpool[ph * p.rw + i] = vc[pg * p.rw + i];
  }
  if (tid == 0u) {
    kmeta[2u * ph] = p.t0;
    kmeta[2u * ph + 1u] = 0;
  }
}

@compute @workgroup_size(WG)
fn prefill_marks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + tid;
  if (i >= p.pages * p.n) { return; }
  let pg = i / p.n;
  let j = i % p.n;
  let f = fr[pg / p.hkv];
  var m = 0;
  if (i32(j) < f) {
    m = 2;
  } else if (j + 1u < p.n) {
    m = decision(i + 1u);
  }
  cm[i] = m;
  // Carry: the chunk's first decision marks the previous newest entry (SPEC §2, prefill).
  if (j == 0u && f == 0 && p.t0 > 0 && lens[p.lbase + pg] > 0) {
    mark_position(pg, p.t0 - 1, decision(i));
  }
}

// Inclusive prefix sum of v over the workgroup; the total is scan[WG - 1] afterwards.
fn wg_scan(tid: u32, v: u32) -> u32 {
  scan[tid] = v;
  workgroupBarrier();
  for (var o = 1u; o < WG; o = o << 1u) {
    var x = 0u;
    if (tid >= o) { x = scan[tid - o]; }
    workgroupBarrier();
    scan[tid] += x;
    workgroupBarrier();
  }
  return scan[tid];
}

@compute @workgroup_size(WG)
fn prefill_compact(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) tid: u32) {
  let pg = wid.y * nwg.x + wid.x;
  if (pg >= p.pages) { return; }
  let li = p.lbase + pg;
  if (tid == 0u) { sh_len = lens[li]; }
  let len = workgroupUniformLoad(&sh_len);
  let f = fr[pg / p.hkv];
  let n = i32(p.n);
  let wc = i32(p.wc);
  let newest = p.t0 + n - 1;
  // 1. Old entries that leave: ring positions lo..hi that are flagged.
  let lo = max(0, p.t0 - wc);
  let hi = min(p.t0 - 1, newest - wc);
  let nold = u32(max(0, hi - lo + 1));
  var nh = 0u;
  for (var c = 0u; c < nold; c += WG) {
    let i = c + tid;
    var drop = 0u;
    var slot = -1;
    if (i < nold) {
      let e = ring_at(pg, lo + i32(i));
      slot = ring[e];
      if (slot >= 0 && ring[e + 1u] == 1) { drop = 1u; }
    }
    let inc = wg_scan(tid, drop);
    if (drop == 1u) { holes[pg * p.wc + nh + inc - 1u] = slot; }
    nh += scan[WG - 1u];
    workgroupBarrier();
  }
  storageBarrier();
  workgroupBarrier();
  // 2. The chunk's survivors, in position order: freed slots first, then len, len + 1, ...
  var ns = 0u;
  for (var c = 0u; c < p.n; c += WG) {
    let j = c + tid;
    var surv = 0u;
    var m = 0;
    if (j < p.n && i32(j) >= f) {
      m = cm[pg * p.n + j];
      if (m == 0 || i32(j) + wc >= n) { surv = 1u; }
    }
    let inc = wg_scan(tid, surv);
    if (j < p.n) {
      var slot = -1;
      if (surv == 1u) {
        let rank = ns + inc - 1u;
        if (rank < nh) {
          slot = holes[pg * p.wc + rank];
        } else {
          slot = len + i32(rank - nh);
        }
      }
      dest[pg * p.n + j] = slot;
      if (i32(j) + wc >= n) {  // one of the last Wc positions: it enters the ring
        let e = ring_at(pg, p.t0 + i32(j));
        ring[e] = slot;
        ring[e + 1u] = select(m, 0, slot < 0);
      }
    }
    ns += scan[WG - 1u];
    workgroupBarrier();
  }
  if (tid == 0u) { lens[li] = len - i32(nh) + i32(ns); }
}
