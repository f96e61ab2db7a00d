// Flash-decoding over the paged KV cache: the fast decode attention (one query per sequence,
// SPEC §5.1 visibility). Launcher, CPU twin and version notes: src/cache/paged_decode.ts. The
// readable kernels (`partial`, and the v2 `decode`) stay in shaders/paged_attention.wgsl.
//
// A page pg = b*Hkv + h holds lens[pg] live entries; slot s lives at entry
// table[pg, s / bs] * bs + s % bs of this layer's pool, with (position, mark) in kmeta.
//
//   q:[B, Hq, 1, D]  pools kw, vw:[entries, D/EPV] 16-byte words  -> out:[B, Hq, 1, D]
//   po:[pages, np, G, D/4] unnormalised split outputs   pml:[pages, np, G] (max m, sum l)
//
// decode_fast: one workgroup of WG threads per (page, split); all G query heads of the page
//   share every K/V word, read once as vec4<u32> (8 f16 or 4 f32), f32 math.
//   Lane layout (both phases): lane c = tid % L owns word c of a row, key row r = tid / L, so
//   the L lanes of a row read L consecutive 16-byte words (coalesced) and KP = WG / L keys are
//   read per pass; every lane keeps J loads in flight and the next block's loads are issued
//   before the barriers of the current one.
//   No loops over registers: WGSL has no unroll, and naga bounds every loop (a 64-bit counter)
//   so drivers do not unroll them either; an array indexed in a loop would live in local
//   memory. The per-thread state is therefore matrices (column g = head g), used with
//   constant indices only: q·k for 4 heads is `lo * qa + hi * qb` (vec4 × mat4x4), and the
//   P·V update adds mat4x4(lo * p.x, lo * p.y, ...). Heads 4..7 use the second set.
//   1) scores: partial dots per lane -> scr, one thread per (key, head quad) sums the L lanes
//      into sp (NEG where invisible) and keeps its running max; 2) max over the split (tree in
//      scr), p = exp(s - m) in place; 3) P·V, no barriers; 4) per head pair, the KP row
//      partials summed through scr -> po, and the sums l -> pml.
// combine: one workgroup per (page, head, CW output vec4 columns): every thread merges its
//   splits online (max-subtracted), then a tree merges the threads' states. A split with
//   l = 0 weighs 0 (SPEC §9.7); a row with no visible key is 0.

struct Params {
  pages: u32,  // B * Hkv
  hkv: u32,    // KV heads
  np: u32,     // splits per page
  ps: u32,     // keys per split; 0: max(KMIN, ceil(len / np)) of each page's own length
  bs: u32,     // block size
  mb: u32,     // block-table width (blocks per page)
  lbase: u32,  // layer * pages: this layer's rows of lens and table
  t0: i32,     // query position
  window: i32, // W: a marked key is visible for distances 0..W
  scale: f32,  // softmax scale
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> lens: array<i32>;            // [layers, pages]
@group(0) @binding(2) var<storage, read> table: array<i32>;           // [layers, pages, mb]
@group(0) @binding(3) var<storage, read> kmeta: array<i32>;           // [entries, 2] (pos, mark)
@group(0) @binding(4) var<storage, read> kw: array<vec4<u32>>;        // K [entries, L]
@group(0) @binding(5) var<storage, read> vw: array<vec4<u32>>;        // V [entries, L]
@group(0) @binding(6) var<storage, read> q: array<T>;                 // [B, Hq, 1, D]
@group(0) @binding(7) var<storage, read_write> po: array<vec4<f32>>;  // [pages, np, G, D4]
@group(0) @binding(8) var<storage, read_write> pml: array<vec2<f32>>; // [pages, np, G]
@group(0) @binding(9) var<storage, read_write> out: array<T>;         // [B, Hq, 1, D]

override WG: u32 = 256u;    // threads per workgroup
override GQ: u32 = 4u;      // query heads per KV head, 1..8
override GV: u32 = 1u;      // ceil(GQ / 4): head quads
override EPV: u32 = 8u;     // elements per 16-byte word: 8 (f16) or 4 (f32)
override NV: u32 = 2u;      // vec4<f32> per word: EPV / 4
override DD: u32 = 128u;    // head dim D
override D4: u32 = 32u;     // D / 4
override L: u32 = 16u;      // words per row, D / EPV (divides WG)
override KP: u32 = 16u;     // keys per pass, WG / L
override J: u32 = 4u;       // loads in flight per lane: 1, 2 or 4
override KB: u32 = 64u;     // keys per block, J * KP
override PSMAX: u32 = 512u; // keys per split, at most (a multiple of KB)
override KMIN: u32 = 128u;  // keys per split, at least, when the split size adapts
override SPN: u32 = 512u;   // PSMAX * GV
override SCR: u32 = 1088u;  // max(KB * (L + 1) * GV, 2 * KP * D4 + KP * GV, WG)
override CW: u32 = 8u;      // combine: vec4 columns per workgroup (divides D4)
const NEG: f32 = -3.40282346e38;
const NOKEY: u32 = 0xffffffffu;

var<workgroup> sh_len: i32;
var<workgroup> kph: array<u32, PSMAX>;      // entry of each key of the split, NOKEY: invisible
var<workgroup> sp: array<vec4<f32>, SPN>;   // [key, GV] scores, then probabilities
var<workgroup> scr: array<vec4<f32>, SCR>;  // partial dots / max tree / output partials

// Per-thread state (registers): scaled q of this lane's word, column g = head g (qb: the word's
// upper 4 channels in f16; *1: heads 4..7), and the P·V accumulators in the same layout.
var<private> qa0: mat4x4<f32>;
var<private> qb0: mat4x4<f32>;
var<private> qa1: mat4x4<f32>;
var<private> qb1: mat4x4<f32>;
var<private> aa0: mat4x4<f32>;
var<private> ab0: mat4x4<f32>;
var<private> aa1: mat4x4<f32>;
var<private> ab1: mat4x4<f32>;
var<private> ls0: vec4<f32>;  // Σ p per head (heads 0..3)
var<private> ls1: vec4<f32>;  // heads 4..7

fn lo4(x: vec4<u32>) -> vec4<f32> {
  if (EPV == 8u) { return vec4<f32>(unpack2x16float(x.x), unpack2x16float(x.y)); }
  return bitcast<vec4<f32>>(x);
}

fn hi4(x: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(x.z), unpack2x16float(x.w));
}

// Channels 4h..4h+3 of word c of head g's query, scaled (0 for g >= GQ).
fn qv(base: u32, g: u32, c: u32, h: u32) -> vec4<f32> {
  if (g >= GQ) { return vec4<f32>(0.0); }
  let o = base + g * DD + c * EPV + 4u * h;
  return vec4<f32>(f32(q[o]), f32(q[o + 1u]), f32(q[o + 2u]), f32(q[o + 3u])) * p.scale;
}

// Word c of key kk of the split (zero past the split or for an invisible key: not read).
fn kword(kk: u32, cnt: u32, c: u32) -> vec4<u32> {
  var x = vec4<u32>(0u);
  if (kk < cnt) {
    let e = kph[kk];
    if (e != NOKEY) { x = kw[e * L + c]; }
  }
  return x;
}

fn vword(kk: u32, cnt: u32, c: u32) -> vec4<u32> {
  var x = vec4<u32>(0u);
  if (kk < cnt) {
    let e = kph[kk];
    if (e != NOKEY) { x = vw[e * L + c]; }
  }
  return x;
}

// Entry of key i of the split that starts at slot ks (clamped into the split: cnt >= 1).
fn entry(pg: u32, ks: u32, cnt: u32, i: u32) -> u32 {
  let s = ks + min(i, cnt - 1u);
  return u32(table[(p.lbase + pg) * p.mb + s / p.bs]) * p.bs + s % p.bs;
}

// Whether entry e is visible to the query (SPEC §5.1).
fn seen(e: u32) -> bool {
  let kp = kmeta[2u * e];
  let mk = kmeta[2u * e + 1u];
  return p.t0 >= 0 && kp <= p.t0 && mk != 2 && (mk == 0 || p.t0 - kp <= p.window);
}

// Lane c's partial dots of key row (jj, r) of the block with every head -> scr.
fn spart(jj: u32, r: u32, c: u32, x: vec4<u32>) {
  let lo = lo4(x);
  var s = lo * qa0;
  if (EPV == 8u) { s += hi4(x) * qb0; }
  let o = ((jj * KP + r) * (L + 1u) + c) * GV;
  scr[o] = s;
  if (GV == 2u) {
    var t = lo * qa1;
    if (EPV == 8u) { t += hi4(x) * qb1; }
    scr[o + 1u] = t;
  }
}

// o[g, word c] += p[kk, g] * v[kk, word c] for every head; l[g] += p[kk, g].
fn vacc(kk: u32, cnt: u32, x: vec4<u32>) {
  let ok = kk < cnt;
  let i = min(kk, PSMAX - 1u) * GV;
  let pv = select(vec4<f32>(0.0), sp[i], ok);
  let lo = lo4(x);
  aa0 += mat4x4<f32>(lo * pv.x, lo * pv.y, lo * pv.z, lo * pv.w);
  ls0 += pv;
  if (EPV == 8u) {
    let hi = hi4(x);
    ab0 += mat4x4<f32>(hi * pv.x, hi * pv.y, hi * pv.z, hi * pv.w);
  }
  if (GV == 2u) {
    let pw = select(vec4<f32>(0.0), sp[i + 1u], ok);
    aa1 += mat4x4<f32>(lo * pw.x, lo * pw.y, lo * pw.z, lo * pw.w);
    ls1 += pw;
    if (EPV == 8u) {
      let hi = hi4(x);
      ab1 += mat4x4<f32>(hi * pw.x, hi * pw.y, hi * pw.z, hi * pw.w);
    }
  }
}

// Heads g0 and g0 + 1: sum the KP key rows' partial outputs through scr -> po (and, with
// g0 = 0, the sums l of every head -> pml, with the split maxima m).
fn outputs(g0: u32, tid: u32, c: u32, r: u32, a0: vec4<f32>, b0: vec4<f32>, a1: vec4<f32>,
           b1: vec4<f32>, rbase: u32, mA: vec4<f32>, mB: vec4<f32>) {
  workgroupBarrier();
  let o = r * D4 + c * NV;
  let hs = KP * D4;  // one head's partials
  scr[o] = a0;
  if (EPV == 8u) { scr[o + 1u] = b0; }
  if (g0 + 1u < GQ) {
    scr[hs + o] = a1;
    if (EPV == 8u) { scr[hs + o + 1u] = b1; }
  }
  if (g0 == 0u && c == 0u) {
    scr[2u * hs + r * GV] = ls0;
    if (GV == 2u) { scr[2u * hs + r * GV + 1u] = ls1; }
  }
  workgroupBarrier();
  // 2·D4 column sums and GQ head sums, WG threads at a time.
  for (var t = tid; t < 2u * D4 + GQ; t += WG) {
    if (t < 2u * D4) {
      let gi = t / D4;
      let col = t % D4;
      let g = g0 + gi;
      if (g < GQ) {
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
        let base = gi * hs + col;
        for (var rr = 0u; rr < KP; rr += 4u) {
          s0 += scr[base + rr * D4];
          s1 += scr[base + (rr + 1u) * D4];
          s2 += scr[base + (rr + 2u) * D4];
          s3 += scr[base + (rr + 3u) * D4];
        }
        po[(rbase + g) * D4 + col] = (s0 + s1) + (s2 + s3);
      }
    } else if (g0 == 0u) {
      let g = t - 2u * D4;
      var l = 0.0;
      for (var rr = 0u; rr < KP; rr++) { l += scr[2u * hs + rr * GV + g / 4u][g % 4u]; }
      let m = select(mA, mB, g >= 4u)[g % 4u];
      pml[rbase + g] = vec2<f32>(m, l);
    }
  }
}

@compute @workgroup_size(WG)
fn decode_fast(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) tid: u32) {
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * p.np) { return; }
  let pi = w % p.np;
  let pg = w / p.np;
  if (tid == 0u) { sh_len = lens[p.lbase + pg]; }
  let len = u32(workgroupUniformLoad(&sh_len));
  var ps = p.ps;
  if (ps == 0u) { ps = max(KMIN, (len + p.np - 1u) / p.np); }
  ps = min(ps, PSMAX);
  let ks = min(pi * ps, len);
  let cnt = min(ps, len - ks);
  let rbase = (pg * p.np + pi) * GQ;  // this split's rows of po and pml
  if (cnt == 0u) {
    if (tid < GQ) { pml[rbase + tid] = vec2<f32>(NEG, 0.0); }
    return;
  }
  let e0 = entry(pg, ks, cnt, tid);
  let e1 = entry(pg, ks, cnt, tid + WG);
  let c = tid % L;
  let r = tid / L;
  let qbase = pg * GQ * DD;  // (b * Hq + h * G) * D
  qa0 = mat4x4<f32>(qv(qbase, 0u, c, 0u), qv(qbase, 1u, c, 0u), qv(qbase, 2u, c, 0u),
                    qv(qbase, 3u, c, 0u));
  if (EPV == 8u) {
    qb0 = mat4x4<f32>(qv(qbase, 0u, c, 1u), qv(qbase, 1u, c, 1u), qv(qbase, 2u, c, 1u),
                      qv(qbase, 3u, c, 1u));
  }
  if (GV == 2u) {
    qa1 = mat4x4<f32>(qv(qbase, 4u, c, 0u), qv(qbase, 5u, c, 0u), qv(qbase, 6u, c, 0u),
                      qv(qbase, 7u, c, 0u));
    if (EPV == 8u) {
      qb1 = mat4x4<f32>(qv(qbase, 4u, c, 1u), qv(qbase, 5u, c, 1u), qv(qbase, 6u, c, 1u),
                        qv(qbase, 7u, c, 1u));
    }
  }
  // Locate the split's keys (PSMAX <= 2 * WG: two per thread, every lookup in flight with
  // the q loads); invisible ones (SPEC §5.1) become NOKEY and are never read.
  let v0 = seen(e0);
  let v1 = seen(e1);
  if (tid < cnt) { kph[tid] = select(NOKEY, e0, v0); }
  if (tid + WG < cnt) { kph[tid + WG] = select(NOKEY, e1, v1); }
  workgroupBarrier();

  // 1. Scores in blocks of KB keys (two barriers each); the next block's loads fly meanwhile.
  var x0 = kword(r, cnt, c);
  var x1 = vec4<u32>(0u);
  var x2 = vec4<u32>(0u);
  var x3 = vec4<u32>(0u);
  if (J > 1u) { x1 = kword(KP + r, cnt, c); }
  if (J > 2u) {
    x2 = kword(2u * KP + r, cnt, c);
    x3 = kword(3u * KP + r, cnt, c);
  }
  var mloc = vec4<f32>(NEG);
  for (var k0 = 0u; k0 < cnt; k0 += KB) {
    spart(0u, r, c, x0);
    if (J > 1u) { spart(1u, r, c, x1); }
    if (J > 2u) {
      spart(2u, r, c, x2);
      spart(3u, r, c, x3);
    }
    let n0 = k0 + KB + r;
    x0 = kword(n0, cnt, c);
    if (J > 1u) { x1 = kword(n0 + KP, cnt, c); }
    if (J > 2u) {
      x2 = kword(n0 + 2u * KP, cnt, c);
      x3 = kword(n0 + 3u * KP, cnt, c);
    }
    workgroupBarrier();
    if (tid < KB * GV) {
      let kb = tid / GV;
      let kk = k0 + kb;
      let base = kb * (L + 1u) * GV + tid % GV;
      var s0 = vec4<f32>(0.0);
      var s1 = vec4<f32>(0.0);
      var s2 = vec4<f32>(0.0);
      var s3 = vec4<f32>(0.0);
      for (var l = 0u; l < L; l += 4u) {
        s0 += scr[base + l * GV];
        s1 += scr[base + (l + 1u) * GV];
        s2 += scr[base + (l + 2u) * GV];
        s3 += scr[base + (l + 3u) * GV];
      }
      let s = (s0 + s1) + (s2 + s3);
      if (kk < cnt) {
        let vis = kph[kk] != NOKEY;
        sp[kk * GV + tid % GV] = select(vec4<f32>(NEG), s, vis);
        if (vis) { mloc = max(mloc, s); }
      }
    }
    workgroupBarrier();
  }

  // 2. Max per head over the split (tree over the KB * GV reducers), p = exp(s - m) in place.
  if (tid < KB * GV) { scr[tid] = mloc; }
  workgroupBarrier();
  for (var st = KB * GV / 2u; st >= GV; st = st / 2u) {
    if (tid < st) { scr[tid] = max(scr[tid], scr[tid + st]); }
    workgroupBarrier();
  }
  let mA = scr[0];
  var mB = vec4<f32>(NEG);
  if (GV == 2u) { mB = scr[1]; }
  for (var i = tid; i < cnt * GV; i += WG) {
    let s = sp[i];
    let m = select(mA, mB, i % GV == 1u);
    sp[i] = select(vec4<f32>(0.0), exp(s - m), s > vec4<f32>(NEG));
  }
  workgroupBarrier();

  // 3. P·V: same lanes, J value loads in flight, no barriers.
  var y0 = vword(r, cnt, c);
  var y1 = vec4<u32>(0u);
  var y2 = vec4<u32>(0u);
  var y3 = vec4<u32>(0u);
  if (J > 1u) { y1 = vword(KP + r, cnt, c); }
  if (J > 2u) {
    y2 = vword(2u * KP + r, cnt, c);
    y3 = vword(3u * KP + r, cnt, c);
  }
  for (var k0 = 0u; k0 < cnt; k0 += KB) {
    let n0 = k0 + r;
    vacc(n0, cnt, y0);
    if (J > 1u) { vacc(n0 + KP, cnt, y1); }
    if (J > 2u) {
      vacc(n0 + 2u * KP, cnt, y2);
      vacc(n0 + 3u * KP, cnt, y3);
    }
    let n1 = n0 + KB;
    y0 = vword(n1, cnt, c);
    if (J > 1u) { y1 = vword(n1 + KP, cnt, c); }
    if (J > 2u) {
      y2 = vword(n1 + 2u * KP, cnt, c);
      y3 = vword(n1 + 3u * KP, cnt, c);
    }
  }

  // 4. Per head pair: the KP rows' partials summed -> po; l and m -> pml.
  outputs(0u, tid, c, r, aa0[0], ab0[0], aa0[1], ab0[1], rbase, mA, mB);
  if (GQ > 2u) { outputs(2u, tid, c, r, aa0[2], ab0[2], aa0[3], ab0[3], rbase, mA, mB); }
  if (GQ > 4u) { outputs(4u, tid, c, r, aa1[0], ab1[0], aa1[1], ab1[1], rbase, mA, mB); }
  if (GQ > 6u) { outputs(6u, tid, c, r, aa1[2], ab1[2], aa1[3], ab1[3], rbase, mA, mB); }
}

var<workgroup> cm: array<f32, WG>;
var<workgroup> cl: array<f32, WG>;
var<workgroup> ca: array<vec4<f32>, WG>;

// Merges state j into state i of the tree: max-subtracted, l = 0 weighs 0.
fn merge_into(i: u32, j: u32) {
  let li = cl[i];
  let lj = cl[j];
  if (lj > 0.0) {
    if (li > 0.0) {
      let m = max(cm[i], cm[j]);
      let wi = exp(cm[i] - m);
      let wj = exp(cm[j] - m);
      ca[i] = ca[i] * wi + ca[j] * wj;
      cl[i] = li * wi + lj * wj;
      cm[i] = m;
    } else {
      ca[i] = ca[j];
      cl[i] = lj;
      cm[i] = cm[j];
    }
  }
}

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
  let nch = D4 / CW;
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * GQ * nch) { return; }
  let ch = w % nch;
  let g = (w / nch) % GQ;
  let pg = w / (nch * GQ);
  let col = ch * CW + tid % CW;
  // Online merge of this thread's splits i = tid / CW, + WG / CW, ...
  var m = NEG;
  var l = 0.0;
  var a = vec4<f32>(0.0);
  for (var i = tid / CW; i < p.np; i += WG / CW) {
    let r = (pg * p.np + i) * GQ + g;
    let ml = pml[r];
    if (ml.y > 0.0) {
      let x = po[r * D4 + col];
      if (l > 0.0) {
        let mn = max(m, ml.x);
        let wa = exp(m - mn);
        let wb = exp(ml.x - mn);
        a = a * wa + x * wb;
        l = l * wa + ml.y * wb;
        m = mn;
      } else {
        a = x;
        l = ml.y;
        m = ml.x;
      }
    }
  }
  cm[tid] = m;
  cl[tid] = l;
  ca[tid] = a;
  workgroupBarrier();
  for (var st = WG / 2u; st >= CW; st = st / 2u) {
    if (tid < st) { merge_into(tid, tid + st); }
    workgroupBarrier();
  }
  if (tid < CW) {
    let lt = cl[tid];
    let y = select(vec4<f32>(0.0), ca[tid] / lt, lt > 0.0);
    let dst = (pg * GQ + g) * DD + 4u * col;
    out[dst] = T(y.x);
    out[dst + 1u] = T(y.y);
    out[dst + 2u] = T(y.z);
    out[dst + 3u] = T(y.w);
  }
}
