// Quest (query-aware chunk selection) on the paged KV storage: per-chunk key bounds and the
// decode step's selection of chunks. Launchers and CPU twins: src/policies/quest.ts.
//
//   bnd:[pages, cap, 2, D] f32 per chunk of `chunk` slots: channel-wise min (row 0) and max
//   (row 1) of its keys; done:[layers, pages] slots already folded into bnd
//
//   quest_bounds  decode, after the step's key is stored; one workgroup per page, a thread per
//                 channel: folds slots done..len-1 into their chunks' bounds (a chunk's first
//                 slot starts it), reading only those keys, then done = len.
//   quest_select  decode, before attention; one workgroup per page. ub[c] = sum over the G
//                 query heads and D channels of max(q*min, q*max), an upper bound of q.k for
//                 every key of chunk c (summed over the heads). The current chunk (holding slot
//                 len-1) is always selected; of the others the `topk` with the largest ub, ties
//                 to the lower chunk. sel[c] = 1 when selected. The keys of unselected chunks
//                 are not read by attention, so they leave the KV-read counter: the kernel
//                 subtracts them from stats (64-bit, lo/hi) before `account` adds the lengths.
//
//   q:[B, Hq, 1, D] = [pages, G, D]  lens:[layers, pages]  kpool:[blocks*bs, D]
//   ub, sel:[pages, cap]  stats: u32[8] (reads lo, reads hi, ...)

struct Params {
  pages: u32,   // B * Hkv
  d: u32,       // head dim
  g: u32,       // query heads per KV head
  bs: u32,      // block size
  mb: u32,      // block-table width
  lbase: u32,   // layer * pages
  chunk: u32,   // slots per chunk
  cap: u32,     // chunks per page row of bnd, ub, sel
  topk: u32,    // chunks selected besides the current one
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> lens: array<i32>;              // [layers, pages]
@group(0) @binding(2) var<storage, read> table: array<i32>;             // [layers, pages, mb]
@group(0) @binding(3) var<storage, read> kpool: array<T>;               // [blocks*bs, D]
@group(0) @binding(4) var<storage, read_write> bnd: array<f32>;         // [pages, cap, 2, D]
@group(0) @binding(5) var<storage, read_write> done: array<i32>;        // [layers, pages]
@group(0) @binding(6) var<storage, read> q: array<T>;                   // [pages, G, D]
@group(0) @binding(7) var<storage, read_write> ub: array<f32>;          // [pages, cap]
@group(0) @binding(8) var<storage, read_write> sel: array<u32>;         // [pages, cap]
@group(0) @binding(9) var<storage, read_write> stats: array<atomic<u32>>; // [8]

override WG: u32 = 64u;

var<workgroup> sh_len: i32;
var<workgroup> red: array<u32, WG>;

fn phys(pg: u32, s: u32) -> u32 {
  let blk = table[(p.lbase + pg) * p.mb + s / p.bs];
  return u32(blk) * p.bs + s % p.bs;
}

@compute @workgroup_size(WG)
fn quest_bounds(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
  let pg = wid.y * nwg.x + wid.x;
  if (pg >= p.pages) { return; }
  let len = u32(max(lens[p.lbase + pg], 0));
  let s0 = u32(max(done[p.lbase + pg], 0));
  for (var dd = tid; dd < p.d; dd += WG) {
    var mn = 0.0;
    var mx = 0.0;
    if (s0 % p.chunk != 0u && s0 < len) {
      let row = (pg * p.cap + s0 / p.chunk) * 2u * p.d;
      mn = bnd[row + dd];
      mx = bnd[row + p.d + dd];
    }
    for (var s = s0; s < len; s++) {
      let x = f32(kpool[phys(pg, s) * p.d + dd]);
      if (s % p.chunk == 0u) {
        mn = x;
        mx = x;
      } else {
        mn = min(mn, x);
        mx = max(mx, x);
      }
      if (s % p.chunk == p.chunk - 1u || s == len - 1u) {
        let row = (pg * p.cap + s / p.chunk) * 2u * p.d;
        bnd[row + dd] = mn;
        bnd[row + p.d + dd] = mx;
      }
    }
  }
  workgroupBarrier();
  if (tid == 0u) { done[p.lbase + pg] = i32(len); }
}

@compute @workgroup_size(WG)
fn quest_select(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
  let pg = wid.y * nwg.x + wid.x;
  if (pg >= p.pages) { return; }
  if (tid == 0u) { sh_len = lens[p.lbase + pg]; }
  let len = u32(max(workgroupUniformLoad(&sh_len), 0));
  let nch = (len + p.chunk - 1u) / p.chunk;
  // 1. Upper bound of q.k per chunk, summed over the page's query heads.
  for (var c = tid; c < nch; c += WG) {
    let row = (pg * p.cap + c) * 2u * p.d;
    var u = 0.0;
    for (var g = 0u; g < p.g; g++) {
      for (var dd = 0u; dd < p.d; dd++) {
        let qv = f32(q[(pg * p.g + g) * p.d + dd]);
        u += max(qv * bnd[row + dd], qv * bnd[row + p.d + dd]);
      }
    }
    ub[pg * p.cap + c] = u;
  }
  storageBarrier();
  workgroupBarrier();
  // 2. The current chunk, and the top-k of the others by rank (larger bound, then lower index).
  var keys = 0u;
  for (var c = tid; c < nch; c += WG) {
    var on = c + 1u == nch;
    if (!on) {
      let u = ub[pg * p.cap + c];
      var rank = 0u;
      for (var c2 = 0u; c2 + 1u < nch; c2++) {
        let u2 = ub[pg * p.cap + c2];
        rank += select(0u, 1u, u2 > u || (u2 == u && c2 < c));
      }
      on = rank < p.topk;
    }
    sel[pg * p.cap + c] = select(0u, 1u, on);
    if (on) { keys += min(p.chunk, len - c * p.chunk); }
  }
  red[tid] = keys;
  workgroupBarrier();
  for (var o = WG / 2u; o > 0u; o = o / 2u) {
    if (tid < o) { red[tid] += red[tid + o]; }
    workgroupBarrier();
  }
  if (tid == 0u) {
    let skipped = len - red[0];
    if (skipped > 0u) {
      let old = atomicSub(&stats[0], skipped);
      if (old < skipped) { atomicSub(&stats[1], 1u); }
    }
  }
}
