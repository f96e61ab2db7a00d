// Prefill attention through the paged KV cache, the fast kernel (`wide`), with the exact SPEC §5.1
// rule. Launcher, readable CPU twin and documentation: src/cache/paged_prefill.ts; the readable
// 32-key flash kernel it grew from is shaders/paged_prefill.wgsl (same bindings and rule).
//
// A page pg = b*Hkv + h holds `lens[pg]` live entries (slot s in block table[pg, s / bs] at offset
// s % bs of this layer's pool, with (pos, mark) in kmeta); the chunk's own n keys follow them
// virtually (key len + i reads kc/vc row i, position t0 + i, mark cm[pg, i]). The query at
// position qp sees key (pos, mark) iff pos <= qp, mark != 2 and (mark == 0 or qp - pos <= window).
//
//   q:[B, Hq, n, D]  kc, vc:[B, Hkv, n, D]  cm:[B*Hkv, n]  -> out:[B, Hq, n, D]
//
// K, V and q are read as 16-byte words (8 f16 or 4 f32: EPV), a row being L = D / EPV words.
// One workgroup of 256 threads per (page, tile of 64 / G queries): R = 64 query rows (row r:
// query j0 + r / G of head h*G + r % G) over tiles of WK = 64 keys, laid out like the tiled
// matmul: thread (ty, tx) = (tid / 16, tid % 16) owns the 4 × 4 block of S (rows 4ty..4ty+3, keys
// 4tx..4tx+3) in four vec4 registers and the 4 rows × channels 4(tx + 16i)..+3 (i < DC4) of O
// in named vec4 registers (D <= 128). Per tile:
//   1) S = Q·Kᵀ over D in chunks of SDK channels, Q and K staged channel-major as vec4 rows
//      (two 16-byte reads of workgroup memory per 16 FMAs);
//   2) the visibility rule; each row's tile max through `wred` (16 partial maxima per row); the
//      exponentials, the rescale α and the running sums are computed by every thread for its own
//      4 × 4 block (the sums stay per thread and are reduced once at the end);
//   3) P goes to `wps` as [key][row group] vec4s; V is staged VH keys at a time and
//      O = α·O + P·V accumulates 4 rows × 4 channels per 16-byte read of V.
// Chunk keys past the tile's last query are never loaded (causal). SDK and VH are 32 where the
// device has ~39 KB of workgroup memory, else 16 (~30 KB). All math in f32.

struct Params {
  pages: u32,   // B * Hkv
  hkv: u32,     // KV heads
  g: u32,       // query heads per KV head (GQA group; the kernel uses the constant WGQ)
  d: u32,       // head dim (the kernel uses the constant WD)
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
@group(0) @binding(1) var<storage, read> lens: array<i32>;         // [layers, pages]
@group(0) @binding(2) var<storage, read> table: array<i32>;        // [layers, pages, mb]
@group(0) @binding(3) var<storage, read> kmeta: array<i32>;        // [blocks*bs, 2] (pos, mark)
@group(0) @binding(4) var<storage, read> kpool: array<vec4<u32>>;  // [blocks*bs, L]
@group(0) @binding(5) var<storage, read> vpool: array<vec4<u32>>;  // [blocks*bs, L]
@group(0) @binding(6) var<storage, read> q: array<vec4<u32>>;      // [B, Hq, n, L]
@group(0) @binding(7) var<storage, read> kc: array<vec4<u32>>;     // [B, Hkv, n, L]
@group(0) @binding(8) var<storage, read> vc: array<vec4<u32>>;     // [B, Hkv, n, L]
@group(0) @binding(9) var<storage, read> cm: array<i32>;           // [pages, n] marks 0/1/2
@group(0) @binding(10) var<storage, read_write> out: array<T>;     // [B, Hq, n, D]

const WG: u32 = 256u;
const R: u32 = 64u;         // query rows per workgroup: 16 row groups of 4
const WK: u32 = 64u;        // keys per tile
const WRS: u32 = 17u;       // vec4s per staged channel row of Q or K (16 + 1 pad)
const NEG: f32 = -3.40282346e38;
override SDK: u32 = 32u;    // channels per staged chunk of Q and K (a multiple of EPV)
override VH: u32 = 32u;     // keys per staged slice of V
override DC4: u32 = 2u;     // vec4 channel groups per thread in O: ceil(D / 64), 1 or 2
override WSTAGE: u32 = 1088u; // max(2 * SDK * WRS, VH * D / 4) vec4s
override WD: u32 = 128u;    // head dim D (a constant, so that / and % by it are cheap)
override WGQ: u32 = 4u;     // query heads per KV head G, likewise
override EPV: u32 = 8u;     // elements per 16-byte word: 8 (f16) or 4 (f32)

var<workgroup> wst: array<vec4<f32>, WSTAGE>; // Q chunk [SDK][WRS], K chunk [SDK][WRS]; or V [VH][D/4]
var<workgroup> wps: array<vec4<f32>, 1024>;   // P [WK][16 row groups]
var<workgroup> wred: array<vec4<f32>, 256>;   // per (key group, row group): partial max, then sum
var<workgroup> wsrc: array<u32, WK>;          // 0 none, 1 pool, 2 chunk
var<workgroup> woff: array<u32, WK>;          // word offset of the key's row in its source
var<workgroup> wpos: array<i32, WK>;
var<workgroup> wmark: array<i32, WK>;
var<workgroup> wrpos: array<i32, R>;          // query position of each row (-1: idle row)
var<workgroup> wqoff: array<u32, R>;          // word offset of each row's query in q
var<workgroup> wlen: i32;

// #include "paged_prefill_seen"

fn phys(pg: u32, s: u32) -> u32 {
  let blk = table[(p.lbase + pg) * p.mb + s / p.bs];
  return u32(blk) * p.bs + s % p.bs;
}

fn lo4(x: vec4<u32>) -> vec4<f32> {
  if (EPV == 8u) { return vec4<f32>(unpack2x16float(x.x), unpack2x16float(x.y)); }
  return bitcast<vec4<f32>>(x);
}

fn hi4(x: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(x.z), unpack2x16float(x.w));
}

// Word w of key t of the tile (0 when the tile has no such key).
fn kword(t: u32, w: u32) -> vec4<u32> {
  let src = wsrc[t];
  if (src == 1u) { return kpool[woff[t] + w]; }
  if (src == 2u) { return kc[woff[t] + w]; }
  return vec4<u32>(0u);
}

fn vword(t: u32, w: u32) -> vec4<u32> {
  let src = wsrc[t];
  if (src == 1u) { return vpool[woff[t] + w]; }
  if (src == 2u) { return vc[woff[t] + w]; }
  return vec4<u32>(0u);
}

// Staging of one word's EPV channels dd0.. of row or key `i` into the channel-major block at
// vec4 `base` of wst (element i % 4 of vec4 (dd * WRS + i / 4)).
fn stage_word(base: u32, dd0: u32, i: u32, x: vec4<u32>, scale: f32) {
  let lo = lo4(x) * scale;
  let o = base + dd0 * WRS + i / 4u;
  let c = i % 4u;
  wst[o][c] = lo.x;
  wst[o + WRS][c] = lo.y;
  wst[o + 2u * WRS][c] = lo.z;
  wst[o + 3u * WRS][c] = lo.w;
  if (EPV == 8u) {
    let hi = hi4(x) * scale;
    wst[o + 4u * WRS][c] = hi.x;
    wst[o + 5u * WRS][c] = hi.y;
    wst[o + 6u * WRS][c] = hi.z;
    wst[o + 7u * WRS][c] = hi.w;
  }
}

// S block of one row (this thread's 4 keys: in a tile, source kv != 0, positions kp, marks km)
// with the keys invisible to the query at qp (SPEC §5.1) set to NEG.
fn mask(sv: vec4<f32>, qp: i32, kv: vec4<bool>, kp: vec4<i32>, km: vec4<i32>) -> vec4<f32> {
  let q4 = vec4<i32>(qp);
  let vis = kv & (kp <= q4) & (km != vec4<i32>(2)) &
    ((km == vec4<i32>(0)) | (q4 - kp <= vec4<i32>(p.window)));
  return select(vec4<f32>(NEG), sv, vis & vec4<bool>(qp >= 0));
}

// The maximum of wred[(t0 + i) * 16 + ty], i < 4 (row group ty's partial maxima).
fn max4(ty: u32, t0: u32) -> vec4<f32> {
  return max(max(wred[t0 * 16u + ty], wred[(t0 + 1u) * 16u + ty]),
             max(wred[(t0 + 2u) * 16u + ty], wred[(t0 + 3u) * 16u + ty]));
}

fn hmax(v: vec4<f32>) -> f32 {
  return max(max(v.x, v.y), max(v.z, v.w));
}

fn pexp(sv: vec4<f32>, m: f32) -> vec4<f32> {
  return select(vec4<f32>(0.0), exp(sv - vec4<f32>(m)), sv > vec4<f32>(NEG));
}

// The inner loops below advance four steps an iteration, each step a function of matrices (the
// columns are the named registers' rows): naga bounds every loop, so drivers do not unroll them,
// and a one-step body paid the loop's own instructions for 16 or 32 FMAs.

// Step dd of S = Q·Kᵀ: column i (row 4ty + i, keys 4tx..4tx+3) += q[row, dd] · k[keys, dd].
fn qk_step(S: mat4x4<f32>, dd: u32, ty: u32, tx: u32) -> mat4x4<f32> {
  let a = wst[dd * WRS + ty];
  let kv = wst[SDK * WRS + dd * WRS + tx];
  return mat4x4<f32>(fma(vec4<f32>(a.x), kv, S[0]), fma(vec4<f32>(a.y), kv, S[1]),
                     fma(vec4<f32>(a.z), kv, S[2]), fma(vec4<f32>(a.w), kv, S[3]));
}

// One key of O += P·V: column i (row 4ty + i, 4 channels) += p[row, key] · v[key, channels].
fn pv_step(O: mat4x4<f32>, pv: vec4<f32>, v: vec4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(fma(vec4<f32>(pv.x), v, O[0]), fma(vec4<f32>(pv.y), v, O[1]),
                     fma(vec4<f32>(pv.z), v, O[2]), fma(vec4<f32>(pv.w), v, O[3]));
}

// The thread's block of O: rows 4ty..4ty+3 (columns) × channels 4c0.. (a) and, DC4 > 1, 4c1.. (b).
struct O2 {
  a: mat4x4<f32>,
  b: mat4x4<f32>,
}

// Key v0 + t of the tile (row t of the staged V slice) into o.
fn pv_key(o: O2, v0: u32, t: u32, ty: u32, c0: u32, c1: u32) -> O2 {
  let pv = wps[(v0 + t) * 16u + ty];
  var r = o;
  r.a = pv_step(o.a, pv, wst[t * (WD / 4u) + c0]);
  if (DC4 > 1u) { r.b = pv_step(o.b, pv, wst[t * (WD / 4u) + c1]); }
  return r;
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
  let G = WGQ;
  let D = WD;
  let D4 = D / 4u;
  let L = D / EPV;        // words per row
  let SW = SDK / EPV;     // words per row in a staged chunk
  let hq = p.hkv * G;
  let j0 = qt * p.bq;
  if (tid == 0u) { wlen = lens[p.lbase + pg]; }
  let len = u32(workgroupUniformLoad(&wlen));
  let ke = len + min(p.n, j0 + p.bq);
  if (tid < R) {
    let j = j0 + tid / G;
    wrpos[tid] = select(-1, p.t0 + i32(j), tid < p.bq * G && j < p.n);
    wqoff[tid] = ((b * hq + h * G + tid % G) * p.n + j) * L;
  }
  let ty = tid / 16u;
  let tx = tid % 16u;
  var m = vec4<f32>(NEG); // running max of rows 4ty..4ty+3 (the same in every thread of the group)
  var l = vec4<f32>(0.0); // this thread's share of the running sums
  var o = O2(mat4x4<f32>(), mat4x4<f32>()); // column i: row 4ty + i, channel groups tx, tx + 16
  workgroupBarrier();
  let qp = vec4<i32>(wrpos[4u * ty], wrpos[4u * ty + 1u], wrpos[4u * ty + 2u], wrpos[4u * ty + 3u]);

  // The tile's first and last query positions: keys none of them sees are not read.
  let qlo = p.t0 + i32(j0);
  let qhi = p.t0 + i32(min(p.n, j0 + p.bq)) - 1;
  for (var k0 = 0u; k0 < ke; k0 += WK) {
    // Locate the tile's keys.
    if (tid < WK) {
      let i = k0 + tid;
      var src = 0u;
      var off = 0u;
      var pos = 0;
      var mark = 2;
      if (i < len) {
        let e = phys(pg, i);
        src = 1u;
        off = e * L;
        pos = kmeta[2u * e];
        mark = kmeta[2u * e + 1u];
      } else if (i < ke) {
        let jj = i - len;
        src = 2u;
        off = (pg * p.n + jj) * L;
        pos = p.t0 + i32(jj);
        mark = cm[pg * p.n + jj];
      }
      if (src != 0u && !seen_by_tile(pos, mark, qlo, qhi)) { src = 0u; }
      wsrc[tid] = src;
      woff[tid] = off;
      wpos[tid] = pos;
      wmark[tid] = mark;
    }
    workgroupBarrier();

    // 1) S = Q·Kᵀ, SDK channels at a time (one word per thread and chunk in f16 with SDK = 32).
    var sm = mat4x4<f32>(); // column i: row 4ty + i, keys 4tx..4tx+3
    for (var d0 = 0u; d0 < D; d0 += SDK) {
      let w0 = d0 / EPV;
      for (var e = tid; e < R * SW; e += WG) {
        let r = e / SW;
        let ww = e % SW;
        var x = vec4<u32>(0u);
        if (wrpos[r] >= 0 && w0 + ww < L) { x = q[wqoff[r] + w0 + ww]; }
        stage_word(0u, ww * EPV, r, x, p.scale);
      }
      for (var e = tid; e < WK * SW; e += WG) {
        let t = e / SW;
        let ww = e % SW;
        var x = vec4<u32>(0u);
        if (w0 + ww < L) { x = kword(t, w0 + ww); }
        stage_word(SDK * WRS, ww * EPV, t, x, 1.0);
      }
      workgroupBarrier();
      for (var dd = 0u; dd < SDK; dd += 4u) {
        sm = qk_step(sm, dd, ty, tx);
        sm = qk_step(sm, dd + 1u, ty, tx);
        sm = qk_step(sm, dd + 2u, ty, tx);
        sm = qk_step(sm, dd + 3u, ty, tx);
      }
      workgroupBarrier();
    }

    // 2) Visibility, the tile max per row, exponentials and the rescale.
    let t4 = 4u * tx;
    let kv = vec4<bool>(wsrc[t4] != 0u, wsrc[t4 + 1u] != 0u, wsrc[t4 + 2u] != 0u,
                        wsrc[t4 + 3u] != 0u);
    let kp = vec4<i32>(wpos[t4], wpos[t4 + 1u], wpos[t4 + 2u], wpos[t4 + 3u]);
    let km = vec4<i32>(wmark[t4], wmark[t4 + 1u], wmark[t4 + 2u], wmark[t4 + 3u]);
    let s0 = mask(sm[0], qp.x, kv, kp, km);
    let s1 = mask(sm[1], qp.y, kv, kp, km);
    let s2 = mask(sm[2], qp.z, kv, kp, km);
    let s3 = mask(sm[3], qp.w, kv, kp, km);
    wred[tx * 16u + ty] = vec4<f32>(hmax(s0), hmax(s1), hmax(s2), hmax(s3));
    workgroupBarrier();
    let mt = max(max4(ty, 0u), max(max4(ty, 4u), max(max4(ty, 8u), max4(ty, 12u))));
    let mn = max(m, mt);
    let alpha = select(vec4<f32>(1.0), exp(m - mn), m > vec4<f32>(NEG));
    m = mn;
    let p0 = pexp(s0, mn.x);
    let p1 = pexp(s1, mn.y);
    let p2 = pexp(s2, mn.z);
    let p3 = pexp(s3, mn.w);
    let one = vec4<f32>(1.0);
    l = l * alpha + vec4<f32>(dot(p0, one), dot(p1, one), dot(p2, one), dot(p3, one));
    wps[t4 * 16u + ty] = vec4<f32>(p0.x, p1.x, p2.x, p3.x);
    wps[(t4 + 1u) * 16u + ty] = vec4<f32>(p0.y, p1.y, p2.y, p3.y);
    wps[(t4 + 2u) * 16u + ty] = vec4<f32>(p0.z, p1.z, p2.z, p3.z);
    wps[(t4 + 3u) * 16u + ty] = vec4<f32>(p0.w, p1.w, p2.w, p3.w);
    o.a = mat4x4<f32>(o.a[0] * alpha.x, o.a[1] * alpha.y, o.a[2] * alpha.z, o.a[3] * alpha.w);
    o.b = mat4x4<f32>(o.b[0] * alpha.x, o.b[1] * alpha.y, o.b[2] * alpha.z, o.b[3] * alpha.w);

    // 3) O += P·V, VH keys of V staged at a time (slices past the tile's last key skipped).
    for (var v0 = 0u; v0 < WK && k0 + v0 < ke; v0 += VH) {
      for (var e = tid; e < VH * L; e += WG) {
        let t = e / L;
        let ww = e % L;
        let x = vword(v0 + t, ww);
        let ix = t * D4 + ww * (EPV / 4u);
        wst[ix] = lo4(x);
        if (EPV == 8u) { wst[ix + 1u] = hi4(x); }
      }
      workgroupBarrier();
      let c0 = min(tx, D4 - 1u);
      let c1 = min(tx + 16u, D4 - 1u);
      for (var t = 0u; t < VH; t += 4u) {
        o = pv_key(o, v0, t, ty, c0, c1);
        o = pv_key(o, v0, t + 1u, ty, c0, c1);
        o = pv_key(o, v0, t + 2u, ty, c0, c1);
        o = pv_key(o, v0, t + 3u, ty, c0, c1);
      }
      workgroupBarrier();
    }
  }

  // The running sums of each row, reduced over its 16 threads; O / l (0 for a row with no key).
  wred[tx * 16u + ty] = l;
  workgroupBarrier();
  var lt = wred[ty];
  for (var t = 1u; t < 16u; t++) { lt += wred[t * 16u + ty]; }
  let inv = select(vec4<f32>(0.0), vec4<f32>(1.0) / lt, lt > vec4<f32>(0.0));
  for (var rr = 0u; rr < 4u; rr++) {
    if (qp[rr] < 0) { continue; }
    let dst = (wqoff[4u * ty + rr] / L) * D;
    var va = o.a[0];
    var vb = o.b[0];
    if (rr == 1u) { va = o.a[1]; vb = o.b[1]; }
    if (rr == 2u) { va = o.a[2]; vb = o.b[2]; }
    if (rr == 3u) { va = o.a[3]; vb = o.b[3]; }
    va *= inv[rr];
    vb *= inv[rr];
    for (var c = 0u; c < 4u; c++) {
      if (tx < D4) { out[dst + 4u * tx + c] = T(va[c]); }
      if (DC4 > 1u && tx + 16u < D4) { out[dst + 4u * (tx + 16u) + c] = T(vb[c]); }
    }
  }
}
