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
//            (`decode` and `merge_split` live in paged_attention_decode.wgsl, included below.)
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

// #include "paged_attention_decode"

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
