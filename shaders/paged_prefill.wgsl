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

// ---------------------------------------------------------------------------------------------
// `wide`: the same workgroup of 256 threads and 64 query rows, over tiles of WK = 64 keys, laid
// out like the tiled matmul: thread (ty, tx) = (tid / 16, tid % 16) owns the 4 × 4 block of S
// (rows 4ty..4ty+3, keys 4tx..4tx+3) in four vec4 registers, and the 4 rows × channels
// 4(tx + 16i)..+3 (i < DC4) of O in named vec4 registers (D <= 128). Per tile:
//   1) S = Q·Kᵀ over D in chunks of SDK channels, Q and K staged channel-major as vec4 rows
//      (two 16-byte reads per 16 FMAs);
//   2) the visibility rule; each row's tile max through `wred` (16 partial maxima per row); the
//      exponentials, the rescale α and the running sums are computed by every thread for its own
//      4 × 4 block (the sums stay per thread and are reduced once at the end);
//   3) P goes to `wps` as [key][row group] vec4s; V is staged VH keys at a time and
//      O = α·O + P·V accumulates 4 rows × 4 channels per 16-byte read of V.
// SDK and VH are 32 where the device has ~39 KB of workgroup memory, else 16 (~30 KB).

const WK: u32 = 64u;        // keys per tile
const WRS: u32 = 17u;       // vec4s per staged channel row of Q or K (16 + 1 pad)
override SDK: u32 = 32u;    // channels per staged chunk of Q and K
override VH: u32 = 32u;     // keys per staged slice of V
override DC4: u32 = 2u;     // vec4 channel groups per thread in O: ceil(D / 64), 1 or 2
override WSTAGE: u32 = 1088u; // max(2 * SDK * WRS, VH * D / 4) vec4s

var<workgroup> wst: array<vec4<f32>, WSTAGE>; // Q chunk [SDK][WRS], K chunk [SDK][WRS]; or V [VH][D/4]
var<workgroup> wps: array<vec4<f32>, 1024>;   // P [WK][16 row groups]
var<workgroup> wred: array<vec4<f32>, 256>;   // per (key group, row group): partial max, then sum
var<workgroup> wsrc: array<u32, WK>;
var<workgroup> woff: array<u32, WK>;
var<workgroup> wpos: array<i32, WK>;
var<workgroup> wmark: array<i32, WK>;
var<workgroup> wrpos: array<i32, R>;
var<workgroup> wlen: i32;

// S block of one row (4 keys of this thread) with invisible keys set to NEG.
fn wide_mask(sv: vec4<f32>, qp: i32, tx: u32) -> vec4<f32> {
  var o = sv;
  for (var k = 0u; k < 4u; k++) {
    let t = 4u * tx + k;
    if (wsrc[t] == 0u || !visible(qp, wpos[t], wmark[t])) { o[k] = NEG; }
  }
  return o;
}

fn hmax(v: vec4<f32>) -> f32 {
  return max(max(v.x, v.y), max(v.z, v.w));
}

fn wide_exp(sv: vec4<f32>, m: f32) -> vec4<f32> {
  return select(vec4<f32>(0.0), exp(sv - vec4<f32>(m)), sv > vec4<f32>(NEG));
}

@compute @workgroup_size(WG)
fn wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * p.nqt) { return; }
  let qt = w % p.nqt;
  let pg = w / p.nqt;
  let b = pg / p.hkv;
  let h = pg % p.hkv;
  let G = p.g;
  let D = p.d;
  let D4 = D / 4u;
  let hq = p.hkv * G;
  let j0 = qt * p.bq;
  if (tid == 0u) { wlen = lens[p.lbase + pg]; }
  let len = u32(workgroupUniformLoad(&wlen));
  let ke = len + min(p.n, j0 + p.bq);
  if (tid < R) {
    let j = j0 + tid / G;
    wrpos[tid] = select(-1, p.t0 + i32(j), tid < p.bq * G && j < p.n);
  }
  let ty = tid / 16u;
  let tx = tid % 16u;
  var m = vec4<f32>(NEG); // running max of rows 4ty..4ty+3 (the same in every thread of the group)
  var l = vec4<f32>(0.0); // this thread's share of the running sums
  var o00 = vec4<f32>(0.0); // o<row><channel group>
  var o10 = vec4<f32>(0.0);
  var o20 = vec4<f32>(0.0);
  var o30 = vec4<f32>(0.0);
  var o01 = vec4<f32>(0.0);
  var o11 = vec4<f32>(0.0);
  var o21 = vec4<f32>(0.0);
  var o31 = vec4<f32>(0.0);
  workgroupBarrier();
  let qp = vec4<i32>(wrpos[4u * ty], wrpos[4u * ty + 1u], wrpos[4u * ty + 2u], wrpos[4u * ty + 3u]);

  for (var k0 = 0u; k0 < ke; k0 += WK) {
    if (tid < WK) {
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
      wsrc[tid] = src;
      woff[tid] = off;
      wpos[tid] = pos;
      wmark[tid] = mark;
    }
    workgroupBarrier();

    // 1) S = Q·Kᵀ.
    var s0 = vec4<f32>(0.0); // row 4ty + 0, keys 4tx..4tx+3
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    var s3 = vec4<f32>(0.0);
    for (var d0 = 0u; d0 < D; d0 += SDK) {
      for (var e = tid; e < R * SDK; e += WG) {
        let r = e / SDK;
        let dd = e % SDK;
        var x = 0.0;
        if (wrpos[r] >= 0 && d0 + dd < D) {
          x = f32(q[((b * hq + h * G + r % G) * p.n + j0 + r / G) * D + d0 + dd]) * p.scale;
        }
        wst[dd * WRS + r / 4u][r % 4u] = x;
      }
      for (var e = tid; e < WK * SDK; e += WG) {
        let t = e / SDK;
        let dd = e % SDK;
        var x = 0.0;
        if (d0 + dd < D) {
          if (wsrc[t] == 1u) {
            x = f32(kpool[woff[t] + d0 + dd]);
          } else if (wsrc[t] == 2u) {
            x = f32(kc[woff[t] + d0 + dd]);
          }
        }
        wst[SDK * WRS + dd * WRS + t / 4u][t % 4u] = x;
      }
      workgroupBarrier();
      for (var dd = 0u; dd < SDK; dd++) {
        let a = wst[dd * WRS + ty];
        let kv = wst[SDK * WRS + dd * WRS + tx];
        s0 = fma(vec4<f32>(a.x), kv, s0);
        s1 = fma(vec4<f32>(a.y), kv, s1);
        s2 = fma(vec4<f32>(a.z), kv, s2);
        s3 = fma(vec4<f32>(a.w), kv, s3);
      }
      workgroupBarrier();
    }

    // 2) Visibility, the tile max per row, exponentials and the rescale.
    s0 = wide_mask(s0, qp.x, tx);
    s1 = wide_mask(s1, qp.y, tx);
    s2 = wide_mask(s2, qp.z, tx);
    s3 = wide_mask(s3, qp.w, tx);
    wred[tx * 16u + ty] = vec4<f32>(hmax(s0), hmax(s1), hmax(s2), hmax(s3));
    workgroupBarrier();
    var mt = vec4<f32>(NEG);
    for (var t = 0u; t < 16u; t++) { mt = max(mt, wred[t * 16u + ty]); }
    let mn = max(m, mt);
    let alpha = select(vec4<f32>(1.0), exp(m - mn), m > vec4<f32>(NEG));
    m = mn;
    let p0 = wide_exp(s0, mn.x);
    let p1 = wide_exp(s1, mn.y);
    let p2 = wide_exp(s2, mn.z);
    let p3 = wide_exp(s3, mn.w);
    l = l * alpha + vec4<f32>(dot(p0, vec4<f32>(1.0)), dot(p1, vec4<f32>(1.0)),
                              dot(p2, vec4<f32>(1.0)), dot(p3, vec4<f32>(1.0)));
    for (var k = 0u; k < 4u; k++) {
      wps[(4u * tx + k) * 16u + ty] = vec4<f32>(p0[k], p1[k], p2[k], p3[k]);
    }
    o00 *= alpha.x;
    o10 *= alpha.y;
    o20 *= alpha.z;
    o30 *= alpha.w;
    o01 *= alpha.x;
    o11 *= alpha.y;
    o21 *= alpha.z;
    o31 *= alpha.w;

    // 3) O += P·V, VH keys of V staged at a time (slices past the tile's last key skipped).
    for (var v0 = 0u; v0 < WK && k0 + v0 < ke; v0 += VH) {
      for (var e = tid; e < VH * D; e += WG) {
        let t = v0 + e / D;
        let c = e % D;
        var x = 0.0;
        if (wsrc[t] == 1u) {
          x = f32(vpool[woff[t] + c]);
        } else if (wsrc[t] == 2u) {
          x = f32(vc[woff[t] + c]);
        }
        wst[(e / D) * D4 + c / 4u][c % 4u] = x;
      }
      workgroupBarrier();
      let c0 = min(tx, D4 - 1u);
      let c1 = min(tx + 16u, D4 - 1u);
      for (var t = 0u; t < VH; t++) {
        let pv = wps[(v0 + t) * 16u + ty];
        let va = wst[t * D4 + c0];
        o00 = fma(vec4<f32>(pv.x), va, o00);
        o10 = fma(vec4<f32>(pv.y), va, o10);
        o20 = fma(vec4<f32>(pv.z), va, o20);
        o30 = fma(vec4<f32>(pv.w), va, o30);
        if (DC4 > 1u) {
          let vb = wst[t * D4 + c1];
          o01 = fma(vec4<f32>(pv.x), vb, o01);
          o11 = fma(vec4<f32>(pv.y), vb, o11);
          o21 = fma(vec4<f32>(pv.z), vb, o21);
          o31 = fma(vec4<f32>(pv.w), vb, o31);
        }
      }
      workgroupBarrier();
    }
  }

  // The running sums of each row, reduced over its 16 threads; O / l (0 for a row with no key).
  wred[tx * 16u + ty] = l;
  workgroupBarrier();
  var lt = vec4<f32>(0.0);
  for (var t = 0u; t < 16u; t++) { lt += wred[t * 16u + ty]; }
  let inv = select(vec4<f32>(0.0), vec4<f32>(1.0) / lt, lt > vec4<f32>(0.0));
  for (var rr = 0u; rr < 4u; rr++) {
    let r = 4u * ty + rr;
    if (qp[rr] < 0) { continue; }
    let dst = ((b * hq + h * G + r % G) * p.n + j0 + r / G) * D;
    var va = o00;
    var vb = o01;
    if (rr == 1u) { va = o10; vb = o11; }
    if (rr == 2u) { va = o20; vb = o21; }
    if (rr == 3u) { va = o30; vb = o31; }
    va *= inv[rr];
    vb *= inv[rr];
    for (var c = 0u; c < 4u; c++) {
      if (tx < D4) { out[dst + 4u * tx + c] = T(va[c]); }
      if (DC4 > 1u && tx + 16u < D4) { out[dst + 4u * (tx + 16u) + c] = T(vb[c]); }
    }
  }
}
