// Flash-decoding in two dispatches a layer before the merge (the tuning `kernel: "staged"` of
// src/cache/paged_decode.ts): `decode_scores` then `decode_values`, then `combine` as for
// `decode_online` (paged_decode.wgsl, included below: the same bindings, splits, po / pml layout
// and epilogue). SPEC §5.1 visibility as there.
//
// decode_online holds every head's query (q·k) and output sums (P·V) in each thread at once and
// has two barriers a block; on the H200 that is 168 registers a thread at G 4 (3 workgroups an SM)
// and 2.3 TB/s. Staged, each dispatch holds half of that and streams one pool:
//   decode_scores, one workgroup per (page, split): locate the split's keys (block table, then
//     position and mark), then for each block of KB keys the lanes' partial dots -> scr, barrier,
//     KB·GV reducers sum a key's L partials -> sg (NEG: invisible), barrier; at the end the
//     split's maximum M per head -> sg's tail.
//   decode_values, the same workgroups: the split's scores from sg -> sc, p = exp(s − M), then
//     every thread adds p·v over its key rows (J2 = 8 rows a block, each half's next words
//     requested as soon as it is added), no barrier in the loop; `outputs` as decode_online.
// sg: [pages · np, PSMAX, GV] scores (vec4: 4 heads), then [pages · np, GV] maxima.
// H200 (README, session 12): 113 + 127 registers at G 4; dense 32K B = 4 237 -> 167 µs alone, but
// slower end to end (Qwen3-0.6B 2K 682 -> 625 tok/s): not the default.

// #include "paged_decode"

@group(0) @binding(11) var<storage, read_write> sg: array<vec4<f32>>;

override PSC: u32 = 512u;  // PSMAX * GV
override J2: u32 = 8u;     // decode_values: key rows a thread per block, 4 or 8

var<workgroup> sc: array<vec4<f32>, PSC>;  // [PSMAX, GV] this split's p

// This split's rows of sg and its maxima's index.
fn sg_base(w: u32) -> u32 {
  return w * PSC;
}

fn sg_max(w: u32, gv: u32) -> u32 {
  return p.pages * p.np * PSC + w * GV + gv;
}

// The maximum over n (4..64, a multiple of 4) vec4s scr[base + i * st].
fn strided_max(base: u32, st: u32, n: u32) -> vec4<f32> {
  var m = vec4<f32>(NEG);
  for (var i = 0u; i < n; i += 4u) {
    let x = quad(base, st, i);
    m = max(m, max(max(x[0], x[1]), max(x[2], x[3])));
  }
  return m;
}

// The split's page, split index, key count and first slot (as decode_online), or cnt = 0.
struct Split {
  pg: u32,
  pi: u32,
  ks: u32,
  cnt: u32,
}

fn split_of(w: u32, tid: u32) -> Split {
  var s: Split;
  s.pi = w % p.np;
  s.pg = w / p.np;
  if (tid == 0u) { sh_len = lens[p.lbase + s.pg]; }
  let len = u32(workgroupUniformLoad(&sh_len));
  var ps = p.ps;
  if (ps == 0u) { ps = max(KMIN, (len + p.np - 1u) / p.np); }
  ps = min(ps, PSMAX);
  s.ks = min(s.pi * ps, len);
  s.cnt = min(ps, len - s.ks);
  return s;
}

@compute @workgroup_size(WG)
fn decode_scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) tid: u32) {
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * p.np) { return; }
  let sl = split_of(w, tid);
  let cnt = sl.cnt;
  if (cnt == 0u) { return; }  // decode_values reads no score of an empty split
  let e0 = entry(sl.pg, sl.ks, cnt, tid);
  let e1 = entry(sl.pg, sl.ks, cnt, tid + WG);
  let c = tid % L;
  let r = tid / L;
  let qbase = sl.pg * GQ * DD;
  load_q(qbase, c);
  let v0 = seen(e0);
  let v1 = seen(e1);
  if (tid < cnt) { kph[tid] = select(NOKEY, e0, v0); }
  if (tid + WG < cnt) { kph[tid + WG] = select(NOKEY, e1, v1); }
  workgroupBarrier();

  let base = sg_base(w);
  var xa = words4(0u, 0u, r, cnt, c);
  var xb: W4;
  if (J > 4u) { xb = words4(0u, 4u, r, cnt, c); }
  for (var k0 = 0u; k0 < cnt; k0 += KB) {
    spart4(0u, r, c, xa);
    if (J > 4u) { spart4(4u, r, c, xb); }
    let n1 = k0 + KB + r;
    xa = words4(0u, 0u, n1, cnt, c);
    if (J > 4u) { xb = words4(0u, 4u, n1, cnt, c); }
    workgroupBarrier();
    if (tid < KB * GV) {
      let kk = k0 + tid / GV;
      if (kk < cnt) {
        let sum = strided_sum((tid / GV) * (L + 1u) * GV + tid % GV, GV, L);
        sg[base + kk * GV + tid % GV] = select(vec4<f32>(NEG), sum, kph[kk] != NOKEY);
      }
    }
    workgroupBarrier();
  }
  // The split's maximum per head: each reducer re-reads the scores it wrote (this thread's own
  // writes), then the KB·GV maxima meet in scr.
  if (tid < KB * GV) {
    var mx = vec4<f32>(NEG);
    for (var kk = tid / GV; kk < cnt; kk += KB) { mx = max(mx, sg[base + kk * GV + tid % GV]); }
    scr[tid] = mx;
  }
  workgroupBarrier();
  if (tid < GV) { sg[sg_max(w, tid)] = strided_max(tid, GV, KB); }
}

// p of head quad gv for key kk of the split (0 past it).
fn pv(kk: u32, cnt: u32, gv: u32) -> vec4<f32> {
  if (kk >= cnt) { return vec4<f32>(0.0); }
  return sc[kk * GV + gv];
}

// Output sums of head quads 0 and 1 += v ⊗ p for one key row (and the sums l).
fn add_pv(x: vec4<u32>, kk: u32, cnt: u32) {
  let p0 = pv(kk, cnt, 0u);
  let lo = lo4(x);
  ls0 += p0;
  aa0 += mat4x4<f32>(lo * p0.x, lo * p0.y, lo * p0.z, lo * p0.w);
  var hi = vec4<f32>(0.0);
  if (EPV == 8u) {
    hi = hi4(x);
    ab0 += mat4x4<f32>(hi * p0.x, hi * p0.y, hi * p0.z, hi * p0.w);
  }
  if (GV == 2u) {
    let p1 = pv(kk, cnt, 1u);
    ls1 += p1;
    aa1 += mat4x4<f32>(lo * p1.x, lo * p1.y, lo * p1.z, lo * p1.w);
    if (EPV == 8u) { ab1 += mat4x4<f32>(hi * p1.x, hi * p1.y, hi * p1.z, hi * p1.w); }
  }
}

// V words of rows kk0 + i·KP, i = 0..3.
fn vwords4(kk0: u32, cnt: u32, c: u32) -> W4 {
  var x: W4;
  x.w0 = word(1u, kk0, cnt, c);
  x.w1 = word(1u, kk0 + KP, cnt, c);
  x.w2 = word(1u, kk0 + 2u * KP, cnt, c);
  x.w3 = word(1u, kk0 + 3u * KP, cnt, c);
  return x;
}

fn add_pv4(x: W4, kk0: u32, cnt: u32) {
  add_pv(x.w0, kk0, cnt);
  add_pv(x.w1, kk0 + KP, cnt);
  add_pv(x.w2, kk0 + 2u * KP, cnt);
  add_pv(x.w3, kk0 + 3u * KP, cnt);
}

@compute @workgroup_size(WG)
fn decode_values(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) tid: u32) {
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * p.np) { return; }
  let sl = split_of(w, tid);
  let cnt = sl.cnt;
  let rbase = (sl.pg * p.np + sl.pi) * GQ;
  if (cnt == 0u) {
    empty_split(rbase, sl.pg, tid);
    return;
  }
  let e0 = entry(sl.pg, sl.ks, cnt, tid);
  let e1 = entry(sl.pg, sl.ks, cnt, tid + WG);
  let mA = sg[sg_max(w, 0u)];
  var mB = vec4<f32>(NEG);
  if (GV == 2u) { mB = sg[sg_max(w, 1u)]; }
  // p = exp(s − M) of the split's keys -> sc; an invisible key (NEG) is not read (NOKEY).
  let base = sg_base(w);
  for (var i = tid; i < cnt * GV; i += WG) {
    sc[i] = pexp(sg[base + i], select(mA, mB, i % GV == 1u));
  }
  if (tid < cnt) { kph[tid] = select(NOKEY, e0, sg[base + tid * GV].x > NEG); }
  if (tid + WG < cnt) { kph[tid + WG] = select(NOKEY, e1, sg[base + (tid + WG) * GV].x > NEG); }
  workgroupBarrier();

  let c = tid % L;
  let r = tid / L;
  var ya = vwords4(r, cnt, c);
  var yb: W4;
  if (J2 > 4u) { yb = vwords4(r + 4u * KP, cnt, c); }
  let KB2 = J2 * KP;
  for (var k0 = 0u; k0 < cnt; k0 += KB2) {
    let n1 = k0 + KB2 + r;
    add_pv4(ya, k0 + r, cnt);
    ya = vwords4(n1, cnt, c);
    if (J2 > 4u) {
      add_pv4(yb, k0 + r + 4u * KP, cnt);
      yb = vwords4(n1 + 4u * KP, cnt, c);
    }
  }
  outputs(0u, tid, c, r, aa0[0], ab0[0], aa0[1], ab0[1], rbase, mA, mB);
  if (GQ > 2u) { outputs(2u, tid, c, r, aa0[2], ab0[2], aa0[3], ab0[3], rbase, mA, mB); }
  if (GQ > 4u) { outputs(4u, tid, c, r, aa1[0], ab1[0], aa1[1], ab1[1], rbase, mA, mB); }
  if (GQ > 6u) { outputs(6u, tid, c, r, aa1[2], ab1[2], aa1[3], ab1[3], rbase, mA, mB); }
  if (FUSED == 1u) { merge_if_last(sl.pg, tid); }
}
