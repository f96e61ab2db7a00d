// Flash-decoding over the paged KV cache (SPEC §5.1 visibility): `decode_online`, then
// `combine` (paged_decode_combine.wgsl, which includes this file). This file includes
// paged_decode_keys.wgsl (a split's keys located and their words loaded, EARLY too),
// paged_decode_out.wgsl (a split's epilogue) and paged_decode_merge.wgsl (the FUSED merge).
// Launcher, CPU twin and version notes: src/cache/paged_decode.ts. The readable kernels
// (`partial`, and the v2 `decode`) stay in shaders/paged_attention.wgsl.
//
// A KV page kp = b*Hkv + h holds lens[kp] live entries; slot s lives at entry
// table[kp, s / bs] * bs + s % bs of this layer's pool, with (position, mark) in kmeta.
// Below, a page pg is a (KV page, head group) pair: pg = kp * SH + group, its GQ = G / SH query
// heads (SH = 1: pg = kp, GQ = G); p.pages counts them, p.lbase counts KV pages.
//
//   q:[B, Hq, 1, D]  pools kw, vw:[entries, D/EPV] 16-byte words  -> out:[B, Hq, 1, D]
//   po:[pages, np, GQ, D/4] unnormalised split outputs   pml:[pages, np, GQ] (max m, sum l)
//
// decode_online: one workgroup of WG threads per (page, split); all G query heads of the page
//   share every K/V word, read once as vec4<u32> (8 f16 or 4 f32), f32 math. Lane c = tid % L
//   owns word c of a row, key row r = tid / L (the L lanes of a row read L consecutive 16-byte
//   words: coalesced), KP = WG / L rows per pass, J passes per block (KB = J·KP keys). Every
//   block of keys is read once, K and V together. Per block:
//   1) every lane's partial q·k of its J words for every head -> scr; the next block's K words
//      are requested; barrier;
//   2) KB·GV reducers sum a key's L partials -> sp (NEG where invisible or past the split);
//      barrier;
//   3) every thread reads the scores of its J keys, raises its own running max m (per head),
//      rescales its accumulators by exp(m_old − m), adds p·v with the V words requested a
//      block earlier, then requests the next block's V words.
//   At the end, the rows' maxima meet in workgroup memory (M = max over rows), each thread
//   scales its state by exp(m − M), and the KP rows' partial outputs are summed -> po, pml.
//   No loops over registers: WGSL has no unroll, and naga bounds every loop (a 64-bit counter)
//   so drivers do not unroll them either; an array indexed in a loop would live in local
//   memory. The per-thread state is therefore matrices (column g = head g), used with
//   constant indices only: q·k for 4 heads is `lo * qa + hi * qb` (vec4 × mat4x4), and the
//   P·V update adds mat4x4(lo * p.x, lo * p.y, ...). Heads 4..7 use the second set.
// combine: one workgroup per (page, head, CW output vec4 columns): every thread merges its
//   splits online (max-subtracted), then a tree merges the threads' states. A split with
//   l = 0 weighs 0 (SPEC §9.7); a row with no visible key is 0.
// DIRECT = 1 (one split a page): decode_online divides its sums by l and stores out itself (0
//   where l = 0), and no combine runs: one dispatch a layer fewer for short pages.
// EARLY = 1: each thread reads its first-block rows' entries from the table itself and requests
//   their K and V words at once, beside the (pos, mark) reads, instead of after the barrier that
//   publishes kph: the chain before the first dot loses one dependent global load. Rows found
//   invisible or past the split are masked as `word` would have zeroed them: same results.

struct Params {
  pages: u32,  // B * Hkv * SH: (KV page, head group) pairs
  hkv: u32,    // KV heads
  np: u32,     // splits per page
  ps: u32,     // keys per split; 0: max(KMIN, ceil(len / np)) of each page's own length
  bs: u32,     // block size
  mb: u32,     // block-table width (blocks per page)
  lbase: u32,  // layer * B * Hkv: this layer's rows of lens and table (KV pages)
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
// po and pml are exchanged between workgroups (the fused combine reads them in the same dispatch):
// as 32-bit words through atomics, past the SM's non-coherent L1 (see gemv.wgsl's gemv16_rn).
@group(0) @binding(7) var<storage, read_write> po: array<atomic<u32>>;  // [pages, np, GQ, D4] vec4s
@group(0) @binding(8) var<storage, read_write> pml: array<atomic<u32>>; // [pages, np, GQ] (m, l)
@group(0) @binding(9) var<storage, read_write> out: array<T>;         // [B, Hq, 1, D]
@group(0) @binding(10) var<storage, read_write> arrived: array<atomic<u32>>; // FUSED: [pages], 0 at rest

override WG: u32 = 256u;    // threads per workgroup
override GQ: u32 = 4u;      // query heads per KV head, 1..8
override GV: u32 = 1u;      // ceil(GQ / 4): head quads
override EPV: u32 = 8u;     // elements per 16-byte word: 8 (f16) or 4 (f32)
override NV: u32 = 2u;      // vec4<f32> per word: EPV / 4
override DD: u32 = 128u;    // head dim D
override D4: u32 = 32u;     // D / 4
override L: u32 = 16u;      // words per row, D / EPV (divides WG)
override KP: u32 = 16u;     // keys per pass, WG / L
override J: u32 = 4u;       // passes per block (loads of K and of V in flight per lane): 1, 2, 4, 8
override KB: u32 = 64u;     // keys per block, J * KP (KB * GV <= WG)
override PSMAX: u32 = 512u; // keys per split, at most: WG, 2·WG, 4·WG or 8·WG
override KMIN: u32 = 128u;  // keys per split, at least, when the split size adapts (launcher:
                            // flashDecodeMinKeys, 64 at GQ <= 2)
override SPB: u32 = 64u;    // KB * GV
override SCR: u32 = 1088u;  // max(KB * (L + 1) * GV, 2 * KP * D4 + KP * GV, WG)
override CW: u32 = 8u;      // combine: vec4 columns per workgroup (divides D4)
override DIRECT: u32 = 0u;  // 1: one split a page (np = 1): normalise and store out, no combine
override FUSED: u32 = 0u;   // 1: the last split of a page to finish merges the page's splits
override EARLY: u32 = 0u;   // 1: the first block's K/V words requested beside the (pos, mark) reads
override SH: u32 = 1u;      // workgroups a KV page's query heads are shared among (GQ heads each):
                            // p.pages counts (page, head group) pairs; K/V page = pg / SH
const NEG: f32 = -3.40282346e38;
const NOKEY: u32 = 0xffffffffu;

// H200 (docs/performance.md, sessions 11-13): ~10 KB of workgroup memory (4 KB more cost 23%);
// 168 registers at G 4, J 4 (3 workgroups an SM), 128 at G 2 or J 2 (4). Layouts with fewer
// registers (two passes, q in workgroup memory, 8-byte words; scores and values in two
// dispatches) lost.
var<workgroup> sh_len: i32;
var<workgroup> kph: array<u32, PSMAX>;      // entry of each key of the split, NOKEY: invisible
var<workgroup> sp: array<vec4<f32>, SPB>;   // [KB, GV] this block's scores
var<workgroup> scr: array<vec4<f32>, SCR>;  // partial dots / row maxima / output partials

var<private> qa0: mat4x4<f32>;
var<private> qb0: mat4x4<f32>;
var<private> qa1: mat4x4<f32>;
var<private> qb1: mat4x4<f32>;
var<private> aa0: mat4x4<f32>;
var<private> ab0: mat4x4<f32>;
var<private> aa1: mat4x4<f32>;
var<private> ab1: mat4x4<f32>;
var<private> ls0: vec4<f32>;  // Σ p per head (heads 0..3), relative to ms0
var<private> ls1: vec4<f32>;  // heads 4..7
var<private> ms0: vec4<f32>;  // this thread's running max per head (heads 0..3)
var<private> ms1: vec4<f32>;

// Split output vec4 i of po / the (m, l) pair i of pml, through atomics (see the bindings).
fn put_po(i: u32, v: vec4<f32>) {
  atomicStore(&po[4u * i], bitcast<u32>(v.x));
  atomicStore(&po[4u * i + 1u], bitcast<u32>(v.y));
  atomicStore(&po[4u * i + 2u], bitcast<u32>(v.z));
  atomicStore(&po[4u * i + 3u], bitcast<u32>(v.w));
}

fn get_po(i: u32) -> vec4<f32> {
  return vec4<f32>(
    bitcast<f32>(atomicLoad(&po[4u * i])),
    bitcast<f32>(atomicLoad(&po[4u * i + 1u])),
    bitcast<f32>(atomicLoad(&po[4u * i + 2u])),
    bitcast<f32>(atomicLoad(&po[4u * i + 3u])),
  );
}

fn put_pml(i: u32, v: vec2<f32>) {
  atomicStore(&pml[2u * i], bitcast<u32>(v.x));
  atomicStore(&pml[2u * i + 1u], bitcast<u32>(v.y));
}

fn get_pml(i: u32) -> vec2<f32> {
  return vec2<f32>(bitcast<f32>(atomicLoad(&pml[2u * i])), bitcast<f32>(atomicLoad(&pml[2u * i + 1u])));
}

fn lo4(x: vec4<u32>) -> vec4<f32> {
  if (EPV == 8u) { return vec4<f32>(unpack2x16float(x.x), unpack2x16float(x.y)); }
  return bitcast<vec4<f32>>(x);
}

fn hi4(x: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(x.z), unpack2x16float(x.w));
}

// Lane c's scaled query words of the page's heads -> qa0, qb0 (heads 0..3), qa1, qb1 (4..7).
fn load_q(qbase: u32, c: u32) {
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
}

// Channels 4h..4h+3 of word c of head g's query, scaled (0 for g >= GQ).
fn qv(base: u32, g: u32, c: u32, h: u32) -> vec4<f32> {
  if (g >= GQ) { return vec4<f32>(0.0); }
  let o = base + g * DD + c * EPV + 4u * h;
  return vec4<f32>(f32(q[o]), f32(q[o + 1u]), f32(q[o + 2u]), f32(q[o + 3u])) * p.scale;
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

// spart of the (up to) four rows jb..jb+3.
fn spart4(jb: u32, r: u32, c: u32, x: W4) {
  spart(jb, r, c, x.w0);
  if (jb + 1u < J) { spart(jb + 1u, r, c, x.w1); }
  if (jb + 2u < J) {
    spart(jb + 2u, r, c, x.w2);
    spart(jb + 3u, r, c, x.w3);
  }
}

// Scores of this thread's key rows jj = 0..J-1 of the block for head quad gv.
fn srow(jj: u32, r: u32, gv: u32) -> vec4<f32> {
  if (jj >= J) { return vec4<f32>(NEG); }
  return sp[(jj * KP + r) * GV + gv];
}

fn pexp(s: vec4<f32>, m: vec4<f32>) -> vec4<f32> {
  return select(vec4<f32>(0.0), exp(s - m), s > vec4<f32>(NEG));
}

fn scale_cols(a: mat4x4<f32>, f: vec4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(a[0] * f.x, a[1] * f.y, a[2] * f.z, a[3] * f.w);
}

// Heads 0..3: online softmax update with the block's scores of this thread's rows jb..jb+3
// and their value words y.
fn update0(r: u32, jb: u32, y: W4) {
  let s0 = srow(jb, r, 0u);
  let s1 = srow(jb + 1u, r, 0u);
  let s2 = srow(jb + 2u, r, 0u);
  let s3 = srow(jb + 3u, r, 0u);
  let m = max(max(ms0, max(s0, s1)), max(s2, s3));
  let al = exp(ms0 - m);
  ms0 = m;
  let p0 = pexp(s0, m);
  let p1 = pexp(s1, m);
  let p2 = pexp(s2, m);
  let p3 = pexp(s3, m);
  ls0 = ls0 * al + ((p0 + p1) + (p2 + p3));
  let l0 = lo4(y.w0);
  let l1 = lo4(y.w1);
  let l2 = lo4(y.w2);
  let l3 = lo4(y.w3);
  aa0 = scale_cols(aa0, al) + mat4x4<f32>(l0 * p0.x, l0 * p0.y, l0 * p0.z, l0 * p0.w);
  if (jb + 1u < J) { aa0 += mat4x4<f32>(l1 * p1.x, l1 * p1.y, l1 * p1.z, l1 * p1.w); }
  if (jb + 2u < J) {
    aa0 += mat4x4<f32>(l2 * p2.x, l2 * p2.y, l2 * p2.z, l2 * p2.w);
    aa0 += mat4x4<f32>(l3 * p3.x, l3 * p3.y, l3 * p3.z, l3 * p3.w);
  }
  if (EPV == 8u) {
    let h0 = hi4(y.w0);
    let h1 = hi4(y.w1);
    let h2 = hi4(y.w2);
    let h3 = hi4(y.w3);
    ab0 = scale_cols(ab0, al) + mat4x4<f32>(h0 * p0.x, h0 * p0.y, h0 * p0.z, h0 * p0.w);
    if (jb + 1u < J) { ab0 += mat4x4<f32>(h1 * p1.x, h1 * p1.y, h1 * p1.z, h1 * p1.w); }
    if (jb + 2u < J) {
      ab0 += mat4x4<f32>(h2 * p2.x, h2 * p2.y, h2 * p2.z, h2 * p2.w);
      ab0 += mat4x4<f32>(h3 * p3.x, h3 * p3.y, h3 * p3.z, h3 * p3.w);
    }
  }
}

// Heads 4..7 (GV = 2, J <= 2).
fn update1(r: u32, y: W4) {
  let y0 = y.w0;
  let y1 = y.w1;
  let s0 = srow(0u, r, 1u);
  let s1 = srow(1u, r, 1u);
  let m = max(ms1, max(s0, s1));
  let al = exp(ms1 - m);
  ms1 = m;
  let p0 = pexp(s0, m);
  let p1 = pexp(s1, m);
  ls1 = ls1 * al + (p0 + p1);
  let l0 = lo4(y0);
  let l1 = lo4(y1);
  aa1 = scale_cols(aa1, al) + mat4x4<f32>(l0 * p0.x, l0 * p0.y, l0 * p0.z, l0 * p0.w);
  if (J > 1u) { aa1 += mat4x4<f32>(l1 * p1.x, l1 * p1.y, l1 * p1.z, l1 * p1.w); }
  if (EPV == 8u) {
    let h0 = hi4(y0);
    let h1 = hi4(y1);
    ab1 = scale_cols(ab1, al) + mat4x4<f32>(h0 * p0.x, h0 * p0.y, h0 * p0.z, h0 * p0.w);
    if (J > 1u) { ab1 += mat4x4<f32>(h1 * p1.x, h1 * p1.y, h1 * p1.z, h1 * p1.w); }
  }
}

// #include "paged_decode_out"
// #include "paged_decode_merge"
// #include "paged_decode_keys"

@compute @workgroup_size(WG)
fn decode_online(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) tid: u32) {
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * p.np) { return; }
  // SH > 1: the head groups of one split are neighbours (w = (kp·np + pi)·SH + group), so they
  // read the same K/V words at about the same time (the second from the L2).
  let pi = (w / SH) % p.np;
  let kp = w / (SH * p.np);       // the KV page: its length, block table and entries
  let pg = kp * SH + w % SH;      // (KV page, head group): its query rows and outputs
  if (tid == 0u) { sh_len = lens[p.lbase + kp]; }
  let len = u32(workgroupUniformLoad(&sh_len));
  var ps = p.ps;
  if (ps == 0u) { ps = max(KMIN, (len + p.np - 1u) / p.np); }
  ps = min(ps, PSMAX);
  let ks = min(pi * ps, len);
  let cnt = min(ps, len - ks);
  let rbase = (pg * p.np + pi) * GQ;  // this split's rows of po and pml
  if (cnt == 0u) {
    empty_split(rbase, pg, tid);
    return;
  }
  // The split's entries (table reads) requested before the query words, then their visibility:
  // two a thread (up to PSMAX = 2·WG, the default), else up to eight (entries4, keep4).
  let e0 = entry(kp, ks, cnt, tid);
  let e1 = entry(kp, ks, cnt, tid + WG);
  var ea = vec4<u32>(0u);
  var eb = vec4<u32>(0u);
  if (PSMAX > 2u * WG) {
    ea = entries4(kp, ks, cnt, tid);
    if (PSMAX > 4u * WG && cnt > 4u * WG) { eb = entries4(kp, ks, cnt, tid + 4u * WG); }
  }
  let c = tid % L;
  let r = tid / L;
  var fe = vec4<u32>(0u);
  if (EARLY == 1u) { fe = rows4(kp, ks, cnt, r); }
  let qbase = pg * GQ * DD;  // (b * Hq + h * G) * D
  load_q(qbase, c);
  var xa: W4;
  var ya: W4;
  if (EARLY == 1u) {
    xa = pool4(0u, fe, c);
    ya = pool4(1u, fe, c);
  }
  ms0 = vec4<f32>(NEG);
  ms1 = vec4<f32>(NEG);
  // Locate the split's keys; invisible ones (SPEC §5.1) become NOKEY and are never read (EARLY:
  // the first block's are, and are masked before use).
  if (PSMAX > 2u * WG) {
    keep4(ea, tid, cnt);
    if (PSMAX > 4u * WG && cnt > 4u * WG) { keep4(eb, tid + 4u * WG, cnt); }
  } else {
    let v0 = seen(e0);
    let v1 = seen(e1);
    if (tid < cnt) { kph[tid] = select(NOKEY, e0, v0); }
    if (tid + WG < cnt) { kph[tid + WG] = select(NOKEY, e1, v1); }
  }
  workgroupBarrier();

  if (EARLY == 0u) {
    xa = words4(0u, 0u, r, cnt, c);
    ya = words4(1u, 0u, r, cnt, c);
  }
  var xb: W4;
  var yb: W4;
  if (J > 4u) {
    xb = words4(0u, 4u, r, cnt, c);
    yb = words4(1u, 4u, r, cnt, c);
  }
  for (var k0 = 0u; k0 < cnt; k0 += KB) {
    // 1. Partial dots, then the next block's K words.
    spart4(0u, r, c, xa);
    if (J > 4u) { spart4(4u, r, c, xb); }
    let n1 = k0 + KB + r;
    xa = words4(0u, 0u, n1, cnt, c);
    if (J > 4u) { xb = words4(0u, 4u, n1, cnt, c); }
    workgroupBarrier();
    // 2. A key's L partials -> its scores (NEG: invisible or past the split).
    if (tid < KB * GV) {
      let kb = tid / GV;
      let kk = k0 + kb;
      let sum = strided_sum(kb * (L + 1u) * GV + tid % GV, GV, L);
      var vis = false;
      if (kk < cnt) { vis = kph[kk] != NOKEY; }
      sp[tid] = select(vec4<f32>(NEG), sum, vis);
    }
    workgroupBarrier();
    // 3. Online softmax and P·V with the value words in flight since the last block.
    if (EARLY == 1u && k0 == 0u) { ya = visible4(ya, r, cnt); }
    update0(r, 0u, ya);
    if (J > 4u) { update0(r, 4u, yb); }
    if (GV == 2u) { update1(r, ya); }
    ya = words4(1u, 0u, n1, cnt, c);
    if (J > 4u) { yb = words4(1u, 4u, n1, cnt, c); }
  }

  // 4. The rows' maxima -> M per head; every thread's state rescaled to M.
  if (c == 0u) {
    scr[r * GV] = ms0;
    if (GV == 2u) { scr[r * GV + 1u] = ms1; }
  }
  workgroupBarrier();
  let mA = rows_max(0u);
  var mB = vec4<f32>(NEG);
  if (GV == 2u) { mB = rows_max(1u); }
  let f0 = exp(ms0 - mA);
  aa0 = scale_cols(aa0, f0);
  ab0 = scale_cols(ab0, f0);
  ls0 *= f0;
  if (GV == 2u) {
    let f1 = exp(ms1 - mB);
    aa1 = scale_cols(aa1, f1);
    ab1 = scale_cols(ab1, f1);
    ls1 *= f1;
  }
  outputs(0u, tid, c, r, aa0[0], ab0[0], aa0[1], ab0[1], rbase, mA, mB);
  if (GQ > 2u) { outputs(2u, tid, c, r, aa0[2], ab0[2], aa0[3], ab0[3], rbase, mA, mB); }
  if (GQ > 4u) { outputs(4u, tid, c, r, aa1[0], ab1[0], aa1[1], ab1[1], rbase, mA, mB); }
  if (GQ > 6u) { outputs(6u, tid, c, r, aa1[2], ab1[2], aa1[3], ab1[3], rbase, mA, mB); }
  if (FUSED == 1u) { merge_if_last(pg, tid); }
}
