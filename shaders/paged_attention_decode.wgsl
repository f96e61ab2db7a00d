// paged_attention.wgsl's v2 decode kernels (`decode`, `merge_split`), the readable twin of
// paged_decode.wgsl's flash-decoding. Included by paged_attention.wgsl; it uses that file's
// bindings, constants and helpers.

// ---- decode / merge_split: the fast decode path -------------------------------------------
//
// K and V rows are read as vec4<u32> words: 8 f16 (EPV = 8, unpack2x16float) or 4 f32
// (EPV = 4, bitcast) per 16-byte load. A row of D channels is L = D / EPV words.
//
//   po:[pages, np, G, D/4] vec4 unnormalised outputs   pml:[pages, np, G, 2] (max m, sum l)
//
// Per split (v2): locate the keys (one barrier); scores in blocks of KB = RPI·J keys, each
// thread issuing J·VPL independent 16-byte loads before using them (2 barriers per block);
// softmax over the split (2 barriers); P·V with JV independent loads per thread in flight and
// no barrier; per-head sums of the partial outputs, HR heads per round (2 barriers a round).

override GQ: u32 = 4u;     // query heads per KV head (G <= 8)
override PSMAX: u32 = 512u; // keys per split, at most
override KMIN: u32 = 128u; // keys per split, at least, when the split size adapts (p.ps = 0)
override EPV: u32 = 8u;    // elements per 16-byte word: 8 (f16) or 4 (f32)
override NV: u32 = 2u;     // vec4<f32> per word: EPV / 4
override DD: u32 = 128u;   // head dim D
override L: u32 = 16u;     // words per row: D / EPV
override LN: u32 = 8u;     // score phase: lanes per key (a power of two <= 8 dividing L)
override VPL: u32 = 2u;    // score phase: words per lane per key, L / LN
override RPI: u32 = 32u;   // score phase: keys per pass of the workgroup, WG / LN
override J: u32 = 4u;      // score phase: passes per block (J * VPL loads in flight)
override KB: u32 = 128u;   // score phase: keys per block, RPI * J
override RPV: u32 = 16u;   // value phase: keys per pass, floor(WG / L)
override JV: u32 = 8u;     // value phase: loads in flight per thread
override D4: u32 = 32u;    // D / 4
override GV: u32 = 1u;     // ceil(G / 4): vec4 of scores per key
override SPN: u32 = 512u;  // PSMAX * GV
override HR: u32 = 2u;     // output reduction: heads per round
override SCR: u32 = 1152u; // max(KB * (LN + 1) * GV, HR * RPV * D4)
override CW: u32 = 8u;     // merge_split: vec4 columns per workgroup (divides D4)
const QMAX: u32 = 16u;     // q words per thread: G * VPL * NV <= QMAX
const XMAX: u32 = 8u;      // loads in flight per thread: J * VPL, JV <= XMAX
const AMAX: u32 = 16u;     // value accumulators per thread: G * NV <= AMAX
const NOKEY: u32 = 0xffffffffu;

var<workgroup> kph: array<u32, PSMAX>;        // physical entry of each key, NOKEY if invisible
var<workgroup> sp: array<vec4<f32>, SPN>;     // scores, then probabilities [key, G/4] (4 heads)
var<workgroup> scr: array<vec4<f32>, SCR>;    // score partials [KB, LN + 1, GV], then outputs
var<workgroup> red2: array<f32, WG>;          // per-thread max (merge_split: max, sum)
var<workgroup> red3: array<f32, WG>;          // per-thread sum
var<workgroup> gstat: array<f32, 16>;         // m[g] at 0..7, l[g] at 8..15

fn lo4(x: vec4<u32>) -> vec4<f32> {
  if (EPV == 8u) { return vec4<f32>(unpack2x16float(x.x), unpack2x16float(x.y)); }
  return bitcast<vec4<f32>>(x);
}

fn hi4(x: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(x.z), unpack2x16float(x.w));
}

@compute @workgroup_size(WG)
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * p.np) { return; }
  let pi = w % p.np;
  let pg = w / p.np;
  let b = pg / p.hkv;
  let h = pg % p.hkv;
  if (tid == 0u) { sh_len = lens[p.lbase + pg]; }
  let len = u32(workgroupUniformLoad(&sh_len));
  // Keys per split: fixed (p.ps), or the live length spread over the np splits but at least
  // KMIN, so that a loose bound (which chose np) leaves the surplus splits empty, not all thin.
  var ps = p.ps;
  if (ps == 0u) { ps = max(KMIN, (len + p.np - 1u) / p.np); }
  let ks = min(pi * ps, len);
  let cnt = min(ps, len - ks);
  let hq = p.hkv * GQ;
  let pbase = (pg * p.np + pi) * GQ;  // this split's rows of po and pml
  if (cnt == 0u) {
    // Nothing to read: weight 0 in the merge (SPEC §9.7), or a zero output when direct.
    if (p.direct == 1u) {
      for (var i = tid; i < GQ * DD; i += WG) { out[(b * hq + h * GQ) * DD + i] = T(0.0); }
    } else if (tid < GQ) {
      pml[(pbase + tid) * 2u] = NEG;
      pml[(pbase + tid) * 2u + 1u] = 0.0;
    }
    return;
  }
  for (var i = tid; i < cnt; i += WG) {
    let e = phys(pg, ks + i);
    let vis = visible(p.t0, kmeta[2u * e], kmeta[2u * e + 1u]) && chosen(pg, ks + i);
    kph[i] = select(NOKEY, e, vis);
  }
  // Score phase layout: lane c of LN reads words c, c + LN, ... of key r0 (coalesced rows).
  let c = tid % LN;
  let r0 = tid / LN;
  var qr: array<vec4<f32>, QMAX>;  // this lane's channels of the G scaled queries
  let qbase = (b * hq + h * GQ) * DD;
  for (var g = 0u; g < GQ; g++) {
    for (var v = 0u; v < VPL; v++) {
      for (var hh = 0u; hh < NV; hh++) {
        let o = qbase + g * DD + (c + v * LN) * EPV + 4u * hh;
        let x = vec4<f32>(f32(q[o]), f32(q[o + 1u]), f32(q[o + 2u]), f32(q[o + 3u]));
        qr[(g * VPL + v) * NV + hh] = x * p.scale;
      }
    }
  }
  workgroupBarrier();

  // 1. Scores s[key, g] = q_g . k_key in blocks of KB keys: all J * VPL loads of a thread are
  //    issued before any is used; per-lane partial dots (4 heads per vec4) reduced through
  //    `scr`; NEG where not visible. Two barriers per block.
  for (var k0 = 0u; k0 < cnt; k0 += KB) {
    var kx: array<vec4<u32>, XMAX>;
    for (var j = 0u; j < J; j++) {
      let kk = k0 + j * RPI + r0;
      var e = NOKEY;
      if (kk < cnt) { e = kph[kk]; }
      for (var v = 0u; v < VPL; v++) {
        var x = vec4<u32>(0u);
        if (e != NOKEY) { x = kw[e * L + c + v * LN]; }
        kx[j * VPL + v] = x;
      }
    }
    for (var j = 0u; j < J; j++) {
      var s0 = vec4<f32>(0.0);
      var s1 = vec4<f32>(0.0);
      for (var v = 0u; v < VPL; v++) {
        let lo = lo4(kx[j * VPL + v]);
        let hi = hi4(kx[j * VPL + v]);
        for (var g = 0u; g < GQ; g++) {
          var d = dot(qr[(g * VPL + v) * NV], lo);
          if (EPV == 8u) { d += dot(qr[(g * VPL + v) * NV + 1u], hi); }
          if (g < 4u) { s0[g] += d; } else { s1[g - 4u] += d; }
        }
      }
      let o = ((j * RPI + r0) * (LN + 1u) + c) * GV;
      scr[o] = s0;
      if (GV == 2u) { scr[o + 1u] = s1; }
    }
    workgroupBarrier();
    for (var i = tid; i < KB * GV; i += WG) {
      let kb = i / GV;
      let gv = i % GV;
      let kk = k0 + kb;
      if (kk < cnt) {
        var s = vec4<f32>(0.0);
        for (var l = 0u; l < LN; l++) { s += scr[(kb * (LN + 1u) + l) * GV + gv]; }
        sp[kk * GV + gv] = select(vec4<f32>(NEG), s, kph[kk] != NOKEY);
      }
    }
    workgroupBarrier();
  }

  // 2. Per head: max over the split (every thread folds the partial maxima of its head: no
  //    second barrier), probabilities p = exp(s - m) in place, their sum.
  let RG = WG / GQ;
  let g2 = tid % GQ;
  let r2 = tid / GQ;
  var mx = NEG;
  if (r2 < RG) {
    for (var kk = r2; kk < cnt; kk += RG) { mx = max(mx, sp[kk * GV + g2 / 4u][g2 % 4u]); }
  }
  red2[tid] = mx;
  workgroupBarrier();
  var mg = NEG;
  for (var r = 0u; r < RG; r++) { mg = max(mg, red2[r * GQ + g2]); }
  var lsum = 0.0;
  if (r2 < RG) {
    for (var kk = r2; kk < cnt; kk += RG) {
      let s = sp[kk * GV + g2 / 4u][g2 % 4u];
      if (p.lgs > 0u && ks + kk < p.lgs) { lg[(pg * GQ + g2) * p.lgs + ks + kk] = s; }
      let e = select(0.0, exp(s - mg), s > NEG);
      sp[kk * GV + g2 / 4u][g2 % 4u] = e;
      lsum += e;
    }
  }
  red3[tid] = lsum;
  workgroupBarrier();
  if (tid < GQ) {
    var l = 0.0;
    for (var r = 0u; r < RG; r++) { l += red3[r * GQ + tid]; }
    gstat[tid] = mg;
    gstat[8u + tid] = l;
  }

  // 3. o[g, :] = Σ p[key, g] v[key, :]: thread (c3, r3) owns word c3 of keys r3, r3 + RPV, ...
  //    (each V word read once, coalesced), JV loads in flight; invisible keys are not read.
  let c3 = tid % L;
  let r3 = tid / L;
  var acc: array<vec4<f32>, AMAX>;  // [g, NV]
  if (r3 < RPV) {
    for (var k0 = 0u; k0 < cnt; k0 += RPV * JV) {
      var vx: array<vec4<u32>, XMAX>;
      for (var j = 0u; j < JV; j++) {
        let kk = k0 + j * RPV + r3;
        var x = vec4<u32>(0u);
        if (kk < cnt) {
          let e = kph[kk];
          if (e != NOKEY) { x = vw[e * L + c3]; }
        }
        vx[j] = x;
      }
      for (var j = 0u; j < JV; j++) {
        let kk = k0 + j * RPV + r3;
        if (kk < cnt) {
          let lo = lo4(vx[j]);
          let hi = hi4(vx[j]);
          for (var gv = 0u; gv < GV; gv++) {
            let pv = sp[kk * GV + gv];
            for (var gi = 0u; gi < 4u; gi++) {
              let g = gv * 4u + gi;
              if (g < GQ) {
                acc[g * NV] += pv[gi] * lo;
                if (EPV == 8u) { acc[g * NV + 1u] += pv[gi] * hi; }
              }
            }
          }
        }
      }
    }
  }

  // 4. Sum the RPV passes per head through `scr`, HR heads a round; write the partial (or,
  //    direct, the normalised output).
  for (var g0 = 0u; g0 < GQ; g0 += HR) {
    workgroupBarrier();
    if (r3 < RPV) {
      for (var gi = 0u; gi < HR; gi++) {
        let g = g0 + gi;
        if (g < GQ) {
          for (var hh = 0u; hh < NV; hh++) {
            scr[(gi * RPV + r3) * D4 + c3 * NV + hh] = acc[g * NV + hh];
          }
        }
      }
    }
    workgroupBarrier();
    for (var o = tid; o < HR * D4; o += WG) {
      let gi = o / D4;
      let col = o % D4;
      let g = g0 + gi;
      if (g < GQ) {
        var sum = vec4<f32>(0.0);
        for (var r = 0u; r < RPV; r++) { sum += scr[(gi * RPV + r) * D4 + col]; }
        if (p.direct == 1u) {
          let l = gstat[8u + g];
          let y = select(vec4<f32>(0.0), sum / l, l > 0.0);
          let dst = (b * hq + h * GQ + g) * DD + 4u * col;
          out[dst] = T(y.x);
          out[dst + 1u] = T(y.y);
          out[dst + 2u] = T(y.z);
          out[dst + 3u] = T(y.w);
        } else {
          po[(pbase + g) * D4 + col] = sum;
        }
      }
    }
  }
  if (p.direct == 0u && tid < GQ) {
    pml[(pbase + tid) * 2u] = gstat[tid];
    pml[(pbase + tid) * 2u + 1u] = gstat[8u + tid];
  }
}

var<workgroup> macc: array<vec4<f32>, WG>;

@compute @workgroup_size(WG)
fn merge_split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) tid: u32) {
  // One workgroup per (page, head, CW output columns); WG / CW threads per column split the
  // partitions. Max-subtracted weights; a split with l = 0 weighs 0 (SPEC §9.7).
  let nch = D4 / CW;
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * GQ * nch) { return; }
  let ch = w % nch;
  let g = (w / nch) % GQ;
  let pg = w / (nch * GQ);
  let b = pg / p.hkv;
  let h = pg % p.hkv;
  var mx = NEG;
  for (var i = tid; i < p.np; i += WG) {
    let o = ((pg * p.np + i) * GQ + g) * 2u;
    if (pml[o + 1u] > 0.0) { mx = max(mx, pml[o]); }
  }
  red2[tid] = mx;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (tid < s) { red2[tid] = max(red2[tid], red2[tid + s]); }
    workgroupBarrier();
  }
  let m = red2[0];
  let cl = tid % CW;
  let ms = WG / CW;
  var a = vec4<f32>(0.0);
  var l = 0.0;
  for (var i = tid / CW; i < p.np; i += ms) {
    let r = (pg * p.np + i) * GQ + g;
    let li = pml[2u * r + 1u];
    if (li > 0.0) {
      let wt = exp(pml[2u * r] - m);
      a += wt * po[r * D4 + ch * CW + cl];
      l += wt * li;
    }
  }
  macc[tid] = a;
  workgroupBarrier();
  red2[tid] = l;
  workgroupBarrier();
  if (tid < CW) {
    var sa = vec4<f32>(0.0);
    var sl = 0.0;
    for (var s = 0u; s < ms; s++) {
      sa += macc[s * CW + tid];
      sl += red2[s * CW + tid];
    }
    let y = select(vec4<f32>(0.0), sa / sl, sl > 0.0);
    let dst = ((b * p.hkv + h) * GQ + g) * DD + 4u * (ch * CW + tid);
    out[dst] = T(y.x);
    out[dst + 1u] = T(y.y);
    out[dst + 2u] = T(y.z);
    out[dst + 3u] = T(y.w);
  }
}
