// Flash-style prefill attention through the paged KV cache, with the exact SPEC §5.1 rule.
// Launcher, readable CPU twin and documentation: src/cache/paged_prefill.ts.
//
// A page p = b*Hkv + h holds `lens[p]` live entries (slot s in block table[p, s / bs] at offset
// s % bs of this layer's pool, with (pos, mark) in kmeta); the chunk's own n keys are appended
// virtually after them (key index len + i reads kc/vc row i, position t0 + i, mark cm[p, i]).
// Query at position qp sees key (pos, mark) iff pos <= qp, mark != 2 and
// (mark == 0 or qp - pos <= window).
//
//   q:[B, Hq, n, D]  kc, vc:[B, Hkv, n, D]  cm:[B*Hkv, n]  -> out:[B, Hq, n, D]
//
// `flash`: one workgroup of 256 threads per (page, tile of BQ queries). Its R = 64 query rows
// (row r: query j0 + r / G of head h*G + r % G; BQ = 64 / G, rows past BQ*G idle) sweep the
// page's keys in tiles of BK (32, or 16 when D > 128), keys of the chunk past the tile's last
// query skipped (causal). Per tile, all in workgroup memory, f32:
//   1) S[R, BK] = Q·Kᵀ as a register-blocked product: thread (rg, kg) owns rows 4rg..4rg+3 and
//      keys kg + 16k (KPT of them), over D in chunks of DK = 32 staged channel-major (one vec4
//      of four rows per channel);
//   2) online softmax: one thread per row (max, rescale α = e^(m_old - m_new), p = e^(s - m)),
//      invisible keys contribute 0 (no e^0 for an empty row, SPEC §9.7);
//   3) O[R, D] = α·O + P·V: thread (rg, cg) owns rows 4rg..+3 × channels cg + 16i (DC of them)
//      as vec4 accumulators in registers, V tile staged row-major.
// At the end O / l (0 for a row with no visible key) is written in the storage dtype T.

struct Params {
  pages: u32,   // B * Hkv
  hkv: u32,     // KV heads
  g: u32,       // query heads per KV head (GQA group)
  d: u32,       // head dim
  n: u32,       // queries (= chunk keys) per page
  bq: u32,      // queries per workgroup (64 / G)
  nqt: u32,     // ceil(n / bq)
  bs: u32,      // block size
  mb: u32,      // block-table width
  lbase: u32,   // layer * pages
  t0: i32,      // position of query 0 and of chunk key 0
  window: i32,  // W
  scale: f32,   // softmax scale
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> lens: array<i32>;     // [layers, pages]
@group(0) @binding(2) var<storage, read> table: array<i32>;    // [layers, pages, mb]
@group(0) @binding(3) var<storage, read> kmeta: array<i32>;    // [blocks*bs, 2] (pos, mark)
@group(0) @binding(4) var<storage, read> kpool: array<T>;      // [blocks*bs, D]
@group(0) @binding(5) var<storage, read> vpool: array<T>;      // [blocks*bs, D]
@group(0) @binding(6) var<storage, read> q: array<T>;          // [B, Hq, n, D]
@group(0) @binding(7) var<storage, read> kc: array<T>;         // [B, Hkv, n, D]
@group(0) @binding(8) var<storage, read> vc: array<T>;         // [B, Hkv, n, D]
@group(0) @binding(9) var<storage, read> cm: array<i32>;       // [pages, n] marks 0/1/2
@group(0) @binding(10) var<storage, read_write> out: array<T>; // [B, Hq, n, D]

const WG: u32 = 256u;
const R: u32 = 64u;        // query rows per workgroup: 16 row groups of 4
const DK: u32 = 32u;       // channels per staged chunk of Q and K
const MAXDC: u32 = 16u;    // D <= 16 * MAXDC
const NEG: f32 = -3.40282346e38;
override BK: u32 = 32u;    // keys per tile (16 * KPT)
override KPT: u32 = 2u;    // keys per thread in S
override DC: u32 = 8u;     // output channels per thread: ceil(D / 16)
override STAGE: u32 = 4096u; // max(R * DK + BK * DK, BK * D)
override PS: u32 = 2048u;  // BK * R

var<workgroup> stage: array<f32, STAGE>; // Q chunk [DK][R] + K chunk [DK][BK], or V tile [BK][D]
var<workgroup> ps: array<f32, PS>;       // scores, then probabilities [BK][R]
var<workgroup> ksrc: array<u32, BK>;     // 0 none, 1 pool, 2 chunk
var<workgroup> koff: array<u32, BK>;     // element offset of the key's row in its source
var<workgroup> kpos: array<i32, BK>;
var<workgroup> kmark: array<i32, BK>;
var<workgroup> rpos: array<i32, R>;      // query position of each row (-1: idle row)
var<workgroup> rm: array<f32, R>;        // running max
var<workgroup> rl: array<f32, R>;        // running sum
var<workgroup> ra: array<f32, R>;        // rescale of the accumulators for this tile
var<workgroup> sh_len: i32;

// #include "paged_prefill_seen"

fn phys(pg: u32, s: u32) -> u32 {
  let blk = table[(p.lbase + pg) * p.mb + s / p.bs];
  return u32(blk) * p.bs + s % p.bs;
}

fn visible(qp: i32, kp: i32, mark: i32) -> bool {
  return qp >= 0 && kp <= qp && mark != 2 && (mark == 0 || qp - kp <= p.window);
}

@compute @workgroup_size(WG)
fn flash(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) tid: u32) {
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * p.nqt) { return; }
  let qt = w % p.nqt;
  let pg = w / p.nqt;
  let b = pg / p.hkv;
  let h = pg % p.hkv;
  let G = p.g;
  let D = p.d;
  let hq = p.hkv * G;
  let j0 = qt * p.bq;
  if (tid == 0u) { sh_len = lens[p.lbase + pg]; }
  let len = u32(workgroupUniformLoad(&sh_len));
  // Keys: the page's entries, then chunk keys up to the tile's last query (causal).
  let ke = len + min(p.n, j0 + p.bq);

  if (tid < R) {
    let j = j0 + tid / G;
    rpos[tid] = select(-1, p.t0 + i32(j), tid < p.bq * G && j < p.n);
    rm[tid] = NEG;
    rl[tid] = 0.0;
  }
  let rg = tid / 16u;  // row group: rows 4rg..4rg+3
  let cg = tid % 16u;  // key group in S, channel group in O
  var acc: array<vec4<f32>, MAXDC>;
  for (var i = 0u; i < DC; i++) { acc[i] = vec4<f32>(0.0); }
  workgroupBarrier();

  // The tile's first and last query positions: keys none of them sees are not read.
  let qlo = p.t0 + i32(j0);
  let qhi = p.t0 + i32(min(p.n, j0 + p.bq)) - 1;
  for (var k0 = 0u; k0 < ke; k0 += BK) {
    // Locate the tile's keys.
    if (tid < BK) {
      let i = k0 + tid;
      var src = 0u;
      var off = 0u;
      var pos = 0;
      var mark = 2;
      if (i < len) {
        let e = phys(pg, i);
        src = 1u;
        off = e * D;
        pos = kmeta[2u * e];
        mark = kmeta[2u * e + 1u];
      } else if (i < ke) {
        let jj = i - len;
        src = 2u;
        off = (pg * p.n + jj) * D;
        pos = p.t0 + i32(jj);
        mark = cm[pg * p.n + jj];
      }
      if (src != 0u && !seen_by_tile(pos, mark, qlo, qhi)) { src = 0u; }
      ksrc[tid] = src;
      koff[tid] = off;
      kpos[tid] = pos;
      kmark[tid] = mark;
    }
    workgroupBarrier();

    // 1) S = Q·Kᵀ over D in chunks of DK.
    var s: array<vec4<f32>, 2>; // s[kk][rr]: row 4rg+rr, key cg + 16kk
    s[0] = vec4<f32>(0.0);
    s[1] = vec4<f32>(0.0);
    for (var d0 = 0u; d0 < D; d0 += DK) {
      for (var e = tid; e < R * DK; e += WG) {
        let r = e / DK;
        let dd = e % DK;
        let j = j0 + r / G;
        var x = 0.0;
        if (rpos[r] >= 0 && d0 + dd < D) {
          x = f32(q[((b * hq + h * G + r % G) * p.n + j) * D + d0 + dd]) * p.scale;
        }
        stage[dd * R + r] = x;
      }
      for (var e = tid; e < BK * DK; e += WG) {
        let t = e / DK;
        let dd = e % DK;
        var x = 0.0;
        if (d0 + dd < D) {
          if (ksrc[t] == 1u) {
            x = f32(kpool[koff[t] + d0 + dd]);
          } else if (ksrc[t] == 2u) {
            x = f32(kc[koff[t] + d0 + dd]);
          }
        }
        stage[R * DK + dd * BK + t] = x;
      }
      workgroupBarrier();
      for (var dd = 0u; dd < DK; dd++) {
        let qv = vec4<f32>(stage[dd * R + 4u * rg], stage[dd * R + 4u * rg + 1u],
                           stage[dd * R + 4u * rg + 2u], stage[dd * R + 4u * rg + 3u]);
        for (var kk = 0u; kk < KPT; kk++) {
          s[kk] += qv * stage[R * DK + dd * BK + cg + 16u * kk];
        }
      }
      workgroupBarrier();
    }
    for (var kk = 0u; kk < KPT; kk++) {
      let t = cg + 16u * kk;
      for (var rr = 0u; rr < 4u; rr++) {
        let r = 4u * rg + rr;
        let vis = ksrc[t] != 0u && visible(rpos[r], kpos[t], kmark[t]);
        ps[t * R + r] = select(NEG, s[kk][rr], vis);
      }
    }
    workgroupBarrier();

    // 2) Online softmax, one thread per row.
    if (tid < R) {
      let r = tid;
      var mt = NEG;
      for (var t = 0u; t < BK; t++) { mt = max(mt, ps[t * R + r]); }
      let mold = rm[r];
      let mnew = max(mold, mt);
      let a = select(1.0, exp(mold - mnew), mold > NEG);
      var sum = 0.0;
      for (var t = 0u; t < BK; t++) {
        let x = ps[t * R + r];
        var e = 0.0;
        if (x > NEG) { e = exp(x - mnew); }
        ps[t * R + r] = e;
        sum += e;
      }
      rl[r] = rl[r] * a + sum;
      rm[r] = mnew;
      ra[r] = a;
    }
    // Stage the V tile [BK][D] (the Q/K chunk is no longer needed).
    for (var e = tid; e < BK * D; e += WG) {
      let t = e / D;
      let c = e % D;
      var x = 0.0;
      if (ksrc[t] == 1u) {
        x = f32(vpool[koff[t] + c]);
      } else if (ksrc[t] == 2u) {
        x = f32(vc[koff[t] + c]);
      }
      stage[t * D + c] = x;
    }
    workgroupBarrier();

    // 3) O = α·O + P·V.
    let alpha = vec4<f32>(ra[4u * rg], ra[4u * rg + 1u], ra[4u * rg + 2u], ra[4u * rg + 3u]);
    for (var i = 0u; i < DC; i++) { acc[i] *= alpha; }
    for (var t = 0u; t < BK; t++) {
      let pv = vec4<f32>(ps[t * R + 4u * rg], ps[t * R + 4u * rg + 1u],
                         ps[t * R + 4u * rg + 2u], ps[t * R + 4u * rg + 3u]);
      for (var i = 0u; i < DC; i++) {
        let c = cg + 16u * i;
        if (c < D) { acc[i] += pv * stage[t * D + c]; }
      }
    }
    workgroupBarrier();
  }

  for (var rr = 0u; rr < 4u; rr++) {
    let r = 4u * rg + rr;
    if (rpos[r] < 0) { continue; }
    let j = j0 + r / G;
    let l = rl[r];
    let dst = ((b * hq + h * G + r % G) * p.n + j) * D;
    for (var i = 0u; i < DC; i++) {
      let c = cg + 16u * i;
      if (c < D) { out[dst + c] = T(select(0.0, acc[i][rr] / l, l > 0.0)); }
    }
  }
}
