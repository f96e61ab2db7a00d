// Paged attention over per-(sequence b, KV head h) pages with the exact SPEC §5.1 rule.
// Launcher and CPU-side documentation: src/cache/paged_attention.ts.
//
// A page p = b*Hkv + h holds `lens[p]` live entries in slots 0..len-1; slot s lives in block
// table[p, s / bs] at offset s % bs of this layer's pool. Every slot carries its absolute
// position and its eviction mark in `meta` (pos, mark), so the visibility rule is applied
// exactly, whatever the eviction policy has or has not removed yet:
//   query at position qp sees key (pos, mark) iff pos <= qp, mark != 2 (padding) and
//   (mark == 0 or qp - pos <= window).
// In prefill the chunk's own keys (kc, vc, marks cm) are appended virtually after the page's
// `len` entries: key index i < len reads the pool, len <= i < len + nc reads the chunk.
//
//   q:[B, Hq, n, D]  kc, vc:[B, Hkv, nc, D]  cm:[B*Hkv, nc]  -> out:[B, Hq, n, D]
//   part:[pages, nqb, np, R, D + 2] (running max m, sum l, unnormalised output o[D])
//
// Kernels
//   partial  one workgroup per (page, query block, key partition): R = qb*G query rows (the
//            G query heads of the page times qb queries) against the partition's keys in tiles
//            of KT, online softmax (flash-decoding when np > 1). When np == 1 (`direct`) it
//            writes the normalised output itself and `merge` is skipped.
//   decode   the fast decode path (n = 1, no chunk keys; 16-byte rows: D % 8 == 0 in f16,
//            D % 4 == 0 in f32; G <= 8): split-K flash-decoding, one workgroup of WG threads
//            per (page, split of <= PSMAX keys); np splits are chosen on the CPU from the
//            length bound, and with p.ps = 0 each split takes max(KMIN, ceil(len / np)) of the
//            true length (the splits a loose bound adds stay empty and exit at once). All G
//            query heads of the page share each K/V word, read once, coalesced, as vec4<u32>
//            (8 f16 or 4 f32 per load), f32 math. 1) scores in blocks of KB keys: LN lanes per
//            key, each with its channels of the G scaled queries in registers and J * VPL
//            independent loads in flight, partial dots reduced through workgroup memory (two
//            barriers per block); 2) per-head max and exp over the split (two barriers);
//            3) P·V with L lanes per key (one word each), JV loads in flight; 4) per-head sums
//            of the passes, HR heads a round, written to po/pml (or, with one split, the
//            normalised output). v2; src/cache/paged_attention.ts says what v1 was and why.
//   merge_split  one workgroup per (page, head, CW output vec4 columns): max-subtracted merge
//            of the decode splits, threads over partitions; l = 0 weighs 0 (SPEC §9.7).
//   merge    one workgroup per output row: max-subtracted merge of the partitions; a partition
//            that saw no visible key (l = 0) has weight 0 (SPEC §9.7), a row with no visible
//            key at all (a padded query) outputs 0.
//   probs    (decode, when a policy asks: TOVA, H2O) one workgroup per page: the scaled logits
//            that `decode` / `partial` wrote to lg[page, g, slot] (p.lgs > 0) become attention
//            probabilities, per head normalised by its log-sum-exp over the page's slots (a
//            pass over len * G floats, not over K/V), averaged over the G query heads of the
//            page: pout[pbase + page * lgs + slot] = (or +=, p.pacc) mean_g exp(lg - m_g) / l_g.
//
// Chunk selection (decode, when a policy asks: Quest): with p.csz > 0 a slot s of page pg is
// attended only when csel[pg * cst + s / csz] != 0; unselected keys are neither read nor
// weighted (as if invisible).

struct Params {
  pages: u32,   // B * Hkv
  hkv: u32,     // KV heads
  g: u32,       // query heads per KV head (GQA group)
  d: u32,       // head dim
  n: u32,       // queries per page
  nc: u32,      // chunk keys appended after the page's entries (0 in decode)
  qb: u32,      // queries per workgroup
  nqb: u32,     // ceil(n / qb)
  np: u32,      // key partitions
  ps: u32,      // keys per partition (multiple of KT)
  rows: u32,    // R = qb * g
  bs: u32,      // block size
  mb: u32,      // block-table width (blocks per page)
  lbase: u32,   // layer * pages: offset of this layer in lens and the block table
  direct: u32,  // 1: np == 1, partial writes out directly
  t0: i32,      // position of query 0 (and of chunk key 0)
  window: i32,  // W: a marked key is visible for distances 0..W
  scale: f32,   // softmax scale (D^-0.5)
  lgs: u32,     // decode: slots per page of lg and pout (0: no logits written)
  csz: u32,     // decode: keys per selection chunk (0: no selection)
  cst: u32,     // decode: selection chunks per page row of csel
  pbase: u32,   // probs: offset of this layer's rows in pout
  pacc: u32,    // probs: 1 accumulates into pout, 0 overwrites
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> lens: array<i32>;     // [layers, pages]
@group(0) @binding(2) var<storage, read> table: array<i32>;    // [layers, pages, mb]
@group(0) @binding(3) var<storage, read> kmeta: array<i32>;     // [blocks*bs, 2] (pos, mark)
@group(0) @binding(4) var<storage, read> kpool: array<T>;      // [blocks*bs, D]
@group(0) @binding(5) var<storage, read> vpool: array<T>;      // [blocks*bs, D]
@group(0) @binding(6) var<storage, read> q: array<T>;          // [B, Hq, n, D]
@group(0) @binding(7) var<storage, read> kc: array<T>;         // [B, Hkv, nc, D]
@group(0) @binding(8) var<storage, read> vc: array<T>;         // [B, Hkv, nc, D]
@group(0) @binding(9) var<storage, read> cm: array<i32>;       // [pages, nc] marks 0/1/2
@group(0) @binding(10) var<storage, read_write> part: array<f32>;
@group(0) @binding(11) var<storage, read_write> out: array<T>; // [B, Hq, n, D]

// decode / merge_split: the pools as 16-byte words; the splits' outputs and statistics.
@group(0) @binding(12) var<storage, read> kw: array<vec4<u32>>;    // K pool [blocks*bs, D/EPV]
@group(0) @binding(13) var<storage, read> vw: array<vec4<u32>>;    // V pool [blocks*bs, D/EPV]
@group(0) @binding(14) var<storage, read_write> po: array<vec4<f32>>; // [pages, np, G, D/4]
@group(0) @binding(15) var<storage, read_write> pml: array<f32>;   // [pages, np, G, 2] (m, l)

// Policy extras (decode): logits out, probabilities out, chunk selection in.
@group(0) @binding(16) var<storage, read_write> lg: array<f32>;    // [pages, G, lgs] scaled logits
@group(0) @binding(17) var<storage, read> csel: array<u32>;        // [pages, cst] 1 = attend
@group(0) @binding(18) var<storage, read_write> pout: array<f32>;  // [.., pages, lgs] probabilities

override WG: u32 = 128u;
override R: u32 = 4u;      // query rows per workgroup (= p.rows)
override KT: u32 = 32u;    // keys per tile
override RD: u32 = 512u;   // R * D
override RKT: u32 = 128u;  // R * KT
const ACC: u32 = 16u;      // accumulators per thread: R * D <= ACC * WG
const NEG: f32 = -3.40282346e38;

var<workgroup> sh_len: i32;
var<workgroup> qs: array<f32, RD>;     // scaled queries of the R rows
var<workgroup> sc: array<f32, RKT>;    // scores, then probabilities, of the current tile
var<workgroup> ksrc: array<u32, KT>;   // 0 none, 1 pool, 2 chunk
var<workgroup> koff: array<u32, KT>;   // element offset of the key/value row in its source
var<workgroup> kpos: array<i32, KT>;
var<workgroup> kmark: array<i32, KT>;
var<workgroup> rpos: array<i32, R>;    // query position of each row (-1: beyond n)
var<workgroup> rm: array<f32, R>;      // running max
var<workgroup> rl: array<f32, R>;      // running sum
var<workgroup> ra: array<f32, R>;      // rescale of the accumulators for this tile

@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * p.nqb * p.np) { return; }
  let pi = w % p.np;
  let qb = (w / p.np) % p.nqb;
  let pg = w / (p.np * p.nqb);
  let b = pg / p.hkv;
  let h = pg % p.hkv;
  let hq = p.hkv * p.g;
  let D = p.d;
  if (tid == 0u) { sh_len = lens[p.lbase + pg]; }
  let len = u32(workgroupUniformLoad(&sh_len));
  let ks = pi * p.ps;
  let ke = min(ks + p.ps, len + p.nc);

  for (var r = tid; r < R; r += WG) {
    let j = qb * p.qb + r / p.g;
    rpos[r] = select(-1, p.t0 + i32(j), j < p.n);
    rm[r] = NEG;
    rl[r] = 0.0;
  }
  for (var i = tid; i < R * D; i += WG) {
    let r = i / D;
    let j = qb * p.qb + r / p.g;
    var x = 0.0;
    if (j < p.n) {
      x = f32(q[((b * hq + h * p.g + r % p.g) * p.n + j) * D + i % D]) * p.scale;
    }
    qs[i] = x;
  }
  var acc: array<f32, ACC>;
  workgroupBarrier();

  for (var k0 = ks; k0 < ke; k0 += KT) {
    // Locate the tile's keys.
    if (tid < KT) {
      let i = k0 + tid;
      var src = 0u;
      var off = 0u;
      var pos = 0;
      var mark = 2;
      if (i < len) {
        let e = phys(pg, i);
        src = select(0u, 1u, chosen(pg, i));
        off = e * D;
        pos = kmeta[2u * e];
        mark = kmeta[2u * e + 1u];
      } else if (i < ke) {
        let jj = i - len;
        src = 2u;
        off = (pg * p.nc + jj) * D;
        pos = p.t0 + i32(jj);
        mark = cm[pg * p.nc + jj];
      }
      ksrc[tid] = src;
      koff[tid] = off;
      kpos[tid] = pos;
      kmark[tid] = mark;
    }
    workgroupBarrier();
    // Scores s[r, t] = q_r . k_t (q pre-scaled), NEG where not visible.
    for (var i = tid; i < R * KT; i += WG) {
      let r = i / KT;
      let t = i % KT;
      var s = NEG;
      if (ksrc[t] != 0u && visible(rpos[r], kpos[t], kmark[t])) {
        let o = koff[t];
        let qo = r * D;
        var dot = 0.0;
        if (ksrc[t] == 1u) {
          for (var dd = 0u; dd < D; dd++) { dot += qs[qo + dd] * f32(kpool[o + dd]); }
        } else {
          for (var dd = 0u; dd < D; dd++) { dot += qs[qo + dd] * f32(kc[o + dd]); }
        }
        s = dot;
      }
      sc[i] = s;
      // Decode (qb = 1, row r = head g): the logit of pool slot k0 + t for the probs pass.
      if (p.lgs > 0u && k0 + t < min(len, p.lgs)) { lg[(pg * p.g + r) * p.lgs + k0 + t] = s; }
    }
    workgroupBarrier();
    // Online softmax statistics per row.
    for (var r = tid; r < R; r += WG) {
      var mt = NEG;
      for (var t = 0u; t < KT; t++) { mt = max(mt, sc[r * KT + t]); }
      let mold = rm[r];
      let mnew = max(mold, mt);
      let a = select(1.0, exp(mold - mnew), mold > NEG);
      var sum = 0.0;
      for (var t = 0u; t < KT; t++) {
        let s = sc[r * KT + t];
        var e = 0.0;
        if (s > NEG) { e = exp(s - mnew); }
        sc[r * KT + t] = e;
        sum += e;
      }
      rl[r] = rl[r] * a + sum;
      rm[r] = mnew;
      ra[r] = a;
    }
    workgroupBarrier();
    // o[r, d] = a * o[r, d] + sum_t p[r, t] v[t, d]
    for (var k = 0u; k < ACC; k++) {
      let i = tid + k * WG;
      if (i < R * D) {
        let r = i / D;
        let dd = i % D;
        var s = acc[k] * ra[r];
        for (var t = 0u; t < KT; t++) {
          let pr = sc[r * KT + t];
          if (pr != 0.0) {
            if (ksrc[t] == 1u) {
              s += pr * f32(vpool[koff[t] + dd]);
            } else {
              s += pr * f32(vc[koff[t] + dd]);
            }
          }
        }
        acc[k] = s;
      }
    }
    workgroupBarrier();
  }

  if (p.direct == 1u) {
    for (var k = 0u; k < ACC; k++) {
      let i = tid + k * WG;
      if (i < R * D) {
        let r = i / D;
        let j = qb * p.qb + r / p.g;
        if (j < p.n) {
          let l = rl[r];
          out[((b * hq + h * p.g + r % p.g) * p.n + j) * D + i % D] = T(select(0.0, acc[k] / l, l > 0.0));
        }
      }
    }
    return;
  }
  let base = ((pg * p.nqb + qb) * p.np + pi) * R;
  for (var r = tid; r < R; r += WG) {
    part[(base + r) * (D + 2u)] = rm[r];
    part[(base + r) * (D + 2u) + 1u] = rl[r];
  }
  for (var k = 0u; k < ACC; k++) {
    let i = tid + k * WG;
    if (i < R * D) {
      part[(base + i / D) * (D + 2u) + 2u + i % D] = acc[k];
    }
  }
}

@compute @workgroup_size(WG)
fn merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) tid: u32) {
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * p.g * p.n) { return; }
  let j = w % p.n;
  let gg = (w / p.n) % p.g;
  let pg = w / (p.n * p.g);
  let b = pg / p.hkv;
  let h = pg % p.hkv;
  let D = p.d;
  let qb = j / p.qb;
  let r = (j % p.qb) * p.g + gg;
  let stride = p.rows * (D + 2u);
  let base = (((pg * p.nqb + qb) * p.np) * p.rows + r) * (D + 2u);
  // Max over partitions that saw a visible key; empty partitions (l = 0) get weight 0.
  var mx = NEG;
  for (var i = 0u; i < p.np; i++) {
    let o = base + i * stride;
    if (part[o + 1u] > 0.0) { mx = max(mx, part[o]); }
  }
  var l = 0.0;
  for (var i = 0u; i < p.np; i++) {
    let o = base + i * stride;
    let li = part[o + 1u];
    if (li > 0.0) { l += li * exp(part[o] - mx); }
  }
  let dst = ((b * p.hkv * p.g + h * p.g + gg) * p.n + j) * D;
  for (var dd = tid; dd < D; dd += WG) {
    var s = 0.0;
    for (var i = 0u; i < p.np; i++) {
      let o = base + i * stride;
      if (part[o + 1u] > 0.0) { s += part[o + 2u + dd] * exp(part[o] - mx); }
    }
    out[dst + dd] = T(select(0.0, s / l, l > 0.0));
  }
}


fn phys(pg: u32, s: u32) -> u32 {
  let blk = table[(p.lbase + pg) * p.mb + s / p.bs];
  return u32(blk) * p.bs + s % p.bs;
}

fn visible(qp: i32, kp: i32, mark: i32) -> bool {
  return qp >= 0 && kp <= qp && mark != 2 && (mark == 0 || qp - kp <= p.window);
}

// Whether slot s of page pg is in a selected chunk (always, without a selection).
fn chosen(pg: u32, s: u32) -> bool {
  if (p.csz == 0u) { return true; }
  return csel[pg * p.cst + s / p.csz] != 0u;
}

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

// ---- probs: attention probabilities per slot for score-based policies ---------------------

var<workgroup> pstat: array<f32, 64>;  // m[g] at 0..31, l[g] at 32..63 (G <= 32)

@compute @workgroup_size(WG)
fn probs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) tid: u32) {
  let pg = wid.y * nwg.x + wid.x;
  if (pg >= p.pages) { return; }
  if (tid == 0u) { sh_len = lens[p.lbase + pg]; }
  let len = min(u32(workgroupUniformLoad(&sh_len)), p.lgs);
  for (var g = 0u; g < p.g; g++) {
    let row = (pg * p.g + g) * p.lgs;
    var mx = NEG;
    for (var s = tid; s < len; s += WG) { mx = max(mx, lg[row + s]); }
    red2[tid] = mx;
    workgroupBarrier();
    for (var o = WG / 2u; o > 0u; o = o / 2u) {
      if (tid < o) { red2[tid] = max(red2[tid], red2[tid + o]); }
      workgroupBarrier();
    }
    let m = red2[0];
    var l = 0.0;
    for (var s = tid; s < len; s += WG) {
      let x = lg[row + s];
      if (x > NEG) { l += exp(x - m); }
    }
    workgroupBarrier();
    red2[tid] = l;
    workgroupBarrier();
    for (var o = WG / 2u; o > 0u; o = o / 2u) {
      if (tid < o) { red2[tid] += red2[tid + o]; }
      workgroupBarrier();
    }
    if (tid == 0u) {
      pstat[g] = m;
      pstat[32u + g] = red2[0];
    }
    workgroupBarrier();
  }
  for (var s = tid; s < len; s += WG) {
    var w = 0.0;
    for (var g = 0u; g < p.g; g++) {
      let x = lg[(pg * p.g + g) * p.lgs + s];
      let l = pstat[32u + g];
      if (x > NEG && l > 0.0) { w += exp(x - pstat[g]) / l; }
    }
    w = w / f32(p.g);
    let o = p.pbase + pg * p.lgs + s;
    if (p.pacc == 1u) { pout[o] += w; } else { pout[o] = w; }
  }
}
