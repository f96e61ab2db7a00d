// Paged KV storage maintenance: the plain append, writing entries at slots chosen by a policy,
// and accounting. Launchers: src/cache/paged_kv.ts (the append's CPU twin:
// test/cache/paged_kv_test.ts).
//
//   append_marks  the plain append (no eviction), before attention: one thread per (page, j):
//                 cm[p, j] = 2 for left padding (j < fr[b], b = p / hkv), else 0.
//   append_slots  the plain append, slots (one workgroup per page): dest[p, j] = len + j - f for
//                 j >= f, -1 for padding (not stored); lens[p] = len + n - f. f = fr[b], or 0
//                 in decode (no padding; fr not read).
//                 fr:[B]  cm, dest:[pages, n]
//   scatter  one thread per (page, chunk entry j, channel d): when dest[p, j] >= 0, copies
//            k/v row j of the chunk into slot dest[p, j] of page p (through the block table)
//            and writes meta = (t0 + j, cm[p, j]).
//            kc, vc:[B, Hkv, n, D]  dest, cm:[pages, n]
//   append_scatter  the plain append in decode fused with the scatter (one workgroup per page):
//            slot = len, lens = len + 1, dest[p] = slot, K and V row p copied into the slot, meta
//            = (t0, 0) — exactly append_slots (decode) followed by scatter with mark 0.
//   account  one workgroup: sums the live lengths of all layers and pages, updates the live and
//            peak token counts and, in decode, adds them to the 64-bit KV-read counter.
//            stats: u32[8] = reads_lo, reads_hi, live, peak, decode_steps, prefill_chunks, -, -

struct Params {
  pages: u32,   // B * Hkv
  hkv: u32,     // KV heads (page p is row p / hkv)
  n: u32,       // entries per page in this call
  d: u32,       // head dim
  bs: u32,      // block size
  mb: u32,      // block-table width
  lbase: u32,   // layer * pages
  t0: i32,      // position of entry 0
  count: u32,   // account: layers * pages
  decode: u32,  // account: 1 in a decode step (count reads); append_slots: no padding
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> lens: array<i32>;    // [layers, pages]
@group(0) @binding(2) var<storage, read> table: array<i32>;         // [layers, pages, mb]
@group(0) @binding(3) var<storage, read_write> dest: array<i32>;    // [pages, n]
@group(0) @binding(4) var<storage, read_write> cm: array<i32>;      // [pages, n]
@group(0) @binding(5) var<storage, read> kc: array<T>;              // [B, Hkv, n, D]
@group(0) @binding(6) var<storage, read> vc: array<T>;              // [B, Hkv, n, D]
@group(0) @binding(7) var<storage, read_write> kmeta: array<i32>;    // [blocks*bs, 2]
@group(0) @binding(8) var<storage, read_write> kpool: array<T>;     // [blocks*bs, D]
@group(0) @binding(9) var<storage, read_write> vpool: array<T>;     // [blocks*bs, D]
@group(0) @binding(10) var<storage, read_write> stats: array<u32>;  // [8]
@group(0) @binding(11) var<storage, read> fr: array<i32>;           // [B]

override WG: u32 = 256u;

var<workgroup> red: array<u32, WG>;
var<workgroup> sh_len: i32;

@compute @workgroup_size(WG)
fn append_marks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + tid;
  if (i >= p.pages * p.n) { return; }
  let j = i % p.n;
  let f = fr[(i / p.n) / p.hkv];
  cm[i] = select(0, 2, i32(j) < f);
}

@compute @workgroup_size(WG)
fn append_slots(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
  let pg = wid.y * nwg.x + wid.x;
  if (pg >= p.pages) { return; }
  let li = p.lbase + pg;
  if (tid == 0u) { sh_len = lens[li]; }
  let len = workgroupUniformLoad(&sh_len);
  var f = 0;
  if (p.decode == 0u) { f = min(fr[pg / p.hkv], i32(p.n)); }
  for (var j = tid; j < p.n; j += WG) {
    dest[pg * p.n + j] = select(-1, len + i32(j) - f, i32(j) >= f);
  }
  if (tid == 0u) { lens[li] = len + i32(p.n) - f; }
}

@compute @workgroup_size(WG)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + tid;
  if (i >= p.pages * p.n * p.d) { return; }
  let dd = i % p.d;
  let e = i / p.d;  // pg * n + j
  let s = dest[e];
  if (s < 0) { return; }
  let pg = e / p.n;
  let j = e % p.n;
  let blk = table[(p.lbase + pg) * p.mb + u32(s) / p.bs];
  let ph = u32(blk) * p.bs + u32(s) % p.bs;
  kpool[ph * p.d + dd] = kc[i];
  vpool[ph * p.d + dd] = vc[i];
  if (dd == 0u) {
    kmeta[2u * ph] = p.t0 + i32(j);
    kmeta[2u * ph + 1u] = cm[e];
  }
}

@compute @workgroup_size(WG)
fn append_scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) tid: u32) {
  let pg = wid.y * nwg.x + wid.x;  // one workgroup per page (uniform: the early return is too)
  if (pg >= p.pages) { return; }
  let li = p.lbase + pg;
  if (tid == 0u) { sh_len = lens[li]; }
  let s = workgroupUniformLoad(&sh_len);
  let blk = table[li * p.mb + u32(s) / p.bs];
  let ph = u32(blk) * p.bs + u32(s) % p.bs;
  for (var dd = tid; dd < p.d; dd += WG) {
    kpool[ph * p.d + dd] = kc[pg * p.d + dd];
    vpool[ph * p.d + dd] = vc[pg * p.d + dd];
  }
  if (tid == 0u) {
    lens[li] = s + 1;
    dest[pg] = s;
    kmeta[2u * ph] = p.t0;
    kmeta[2u * ph + 1u] = 0;
  }
}

@compute @workgroup_size(WG)
fn account(@builtin(local_invocation_index) tid: u32) {
  var s = 0u;
  for (var i = tid; i < p.count; i += WG) { s += u32(max(lens[i], 0)); }
  red[tid] = s;
  workgroupBarrier();
  for (var o = WG / 2u; o > 0u; o = o / 2u) {
    if (tid < o) { red[tid] += red[tid + o]; }
    workgroupBarrier();
  }
  if (tid == 0u) {
    let total = red[0];
    stats[2] = total;
    stats[3] = max(stats[3], total);
    if (p.decode == 1u) {
      let lo = stats[0];
      let nlo = lo + total;
      stats[0] = nlo;
      if (nlo < lo) { stats[1] += 1u; }
      stats[4] += 1u;
    } else {
      stats[5] += 1u;
    }
  }
}
