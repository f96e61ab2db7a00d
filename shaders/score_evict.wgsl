// Score-based eviction on the paged KV storage, shared by TOVA and H2O (a fixed budget of
// entries per page, each entry's score from the decode attention kernel's `probs` output).
// Launchers and CPU twins: src/policies/score_evict.ts (TOVA: src/policies/tova.ts, H2O:
// src/policies/h2o.ts).
//
//   scores:[layers, pages, budget] f32 per slot (TOVA: the last query's probabilities, averaged
//   over the page's query heads; H2O: their sum over the decode steps)
//
//   evict_decode  decode, before attention; one workgroup per group of `gsz` pages that decide
//                 together (TOVA: the Hkv pages of a sequence, scores summed over them; H2O: one
//                 page). len < budget: the token is appended at len. Else the victim is the slot
//                 with the lowest score among entries older than the recent window
//                 (pos <= t - recent; recent = 0: any entry), ties to the oldest position; the
//                 token overwrites it in every page of the group. The new slot's score is 0.
//   keep_newest   prefill, after attention; one workgroup per page: of the page's len entries
//                 and the chunk's real tokens, the newest `budget` positions stay. The oldest
//                 old entries leave (rank by position), the chunk's survivors take their slots
//                 (in slot order) then len, len + 1, ...; new slots score 0, and with
//                 p.keep = 0 (TOVA) every score is reset to 0.
//
//   fr:[B]  dest:[pages, n]  lens:[layers, pages]  meta:[blocks*bs, 2] (pos, mark)

struct Params {
  pages: u32,   // B * Hkv
  hkv: u32,     // KV heads
  n: u32,       // tokens in this call
  bs: u32,      // block size
  mb: u32,      // block-table width
  lbase: u32,   // layer * pages
  t0: i32,      // position of the call's first token
  budget: u32,  // entries per page at most
  recent: u32,  // evict_decode: protected recent window (counts the incoming token), 0 none
  gsz: u32,     // evict_decode: pages per group (consecutive)
  keep: u32,    // keep_newest: 1 keeps the old entries' scores (H2O), 0 resets them (TOVA)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> lens: array<i32>;     // [layers, pages]
@group(0) @binding(2) var<storage, read> table: array<i32>;          // [layers, pages, mb]
@group(0) @binding(3) var<storage, read> kmeta: array<i32>;          // [blocks*bs, 2]
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;   // [layers, pages, budget]
@group(0) @binding(5) var<storage, read> fr: array<i32>;             // [B]
@group(0) @binding(6) var<storage, read_write> dest: array<i32>;     // [pages, n]
@group(0) @binding(7) var<storage, read_write> holes: array<i32>;    // [pages, budget]

override WG: u32 = 64u;
const BIG: f32 = 3.40282346e38;

var<workgroup> sh_len: i32;
var<workgroup> rs: array<f32, WG>;   // best score per thread
var<workgroup> rp: array<i32, WG>;   // its position
var<workgroup> rsl: array<i32, WG>;  // its slot
var<workgroup> scan: array<u32, WG>;

fn pos_of(pg: u32, s: u32) -> i32 {
  let blk = table[(p.lbase + pg) * p.mb + s / p.bs];
  return kmeta[2u * (u32(blk) * p.bs + s % p.bs)];
}

// (score a, position pa) ranks before (b, pb): lower score, then older position.
fn better(a: f32, pa: i32, b: f32, pb: i32) -> bool {
  return a < b || (a == b && pa < pb);
}

@compute @workgroup_size(WG)
fn evict_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
  let grp = wid.y * nwg.x + wid.x;
  if (grp * p.gsz >= p.pages) { return; }
  let pg0 = grp * p.gsz;
  if (tid == 0u) { sh_len = lens[p.lbase + pg0]; }
  let len = u32(workgroupUniformLoad(&sh_len));
  if (len < p.budget) {
    for (var i = tid; i < p.gsz; i += WG) {
      let pg = pg0 + i;
      dest[pg] = i32(len);
      lens[p.lbase + pg] = i32(len) + 1;
      scores[(p.lbase + pg) * p.budget + len] = 0.0;
    }
    return;
  }
  // The victim: lowest group score among entries outside the recent window, oldest first.
  var bs = BIG;
  var bp = 2147483647;
  var bsl = -1;
  for (var s = tid; s < len; s += WG) {
    let pos = pos_of(pg0, s);
    if (p.recent == 0u || pos + i32(p.recent) <= p.t0) {
      var sc = 0.0;
      for (var i = 0u; i < p.gsz; i++) { sc += scores[(p.lbase + pg0 + i) * p.budget + s]; }
      if (bsl < 0 || better(sc, pos, bs, bp)) {
        bs = sc;
        bp = pos;
        bsl = i32(s);
      }
    }
  }
  rs[tid] = bs;
  rp[tid] = bp;
  rsl[tid] = bsl;
  workgroupBarrier();
  for (var o = WG / 2u; o > 0u; o = o / 2u) {
    if (tid < o && rsl[tid + o] >= 0 &&
        (rsl[tid] < 0 || better(rs[tid + o], rp[tid + o], rs[tid], rp[tid]))) {
      rs[tid] = rs[tid + o];
      rp[tid] = rp[tid + o];
      rsl[tid] = rsl[tid + o];
    }
    workgroupBarrier();
  }
  let victim = rsl[0];
  for (var i = tid; i < p.gsz; i += WG) {
    let pg = pg0 + i;
    dest[pg] = victim;
    scores[(p.lbase + pg) * p.budget + u32(victim)] = 0.0;
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
fn keep_newest(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) tid: u32) {
  let pg = wid.y * nwg.x + wid.x;
  if (pg >= p.pages) { return; }
  let li = p.lbase + pg;
  if (tid == 0u) { sh_len = lens[li]; }
  let len = u32(workgroupUniformLoad(&sh_len));
  let f = u32(min(fr[pg / p.hkv], i32(p.n)));
  let m = p.n - f;                                  // real tokens in the chunk
  let total = len + m;
  let drop = select(0u, total - p.budget, total > p.budget);
  let dropOld = min(drop, len);
  // 1. Old entries whose rank by position is below dropOld leave; their slots become holes.
  var nh = 0u;
  for (var c = 0u; c < len; c += WG) {
    let s = c + tid;
    var gone = 0u;
    if (s < len) {
      let ps = pos_of(pg, s);
      var rank = 0u;
      for (var s2 = 0u; s2 < len; s2++) { rank += select(0u, 1u, pos_of(pg, s2) < ps); }
      gone = select(0u, 1u, rank < dropOld);
      if (p.keep == 0u) { scores[li * p.budget + s] = 0.0; }
    }
    let inc = wg_scan(tid, gone);
    if (gone == 1u) { holes[pg * p.budget + nh + inc - 1u] = i32(s); }
    nh += scan[WG - 1u];
    workgroupBarrier();
  }
  storageBarrier();
  workgroupBarrier();
  // 2. The chunk's survivors (real index >= drop - dropOld) take the holes, then len, len + 1...
  let skip = drop - dropOld;
  for (var j = tid; j < p.n; j += WG) {
    var slot = -1;
    if (j >= f && j - f >= skip) {
      let rank = j - f - skip;
      if (rank < nh) { slot = holes[pg * p.budget + rank]; } else { slot = i32(len + rank - nh); }
      scores[li * p.budget + u32(slot)] = 0.0;
    }
    dest[pg * p.n + j] = slot;
  }
  if (tid == 0u) { lens[li] = i32(len - nh + (m - skip)); }
}
