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
//   decode   decode only (n = 1, no chunk keys), D % 4 == 0, G <= 8: one workgroup per (page,
//            partition of WG keys), one key per thread. Each thread loads its key once as vec4s
//            and scores it against all G heads of the group; per-head max and sum by tree
//            reductions over the workgroup; then o[g, d] = Σ p v with threads over (g, d/4) pairs
//            (keys split over the spare threads), V read coalesced. Same partial layout as
//            `partial` (qb = 1, R = G), so `merge` is shared. On an H100 (f16, Hkv = 8, G = 4,
//            D = 128, 32K context) a whole decode step of one layer takes 489 us against 1657 us
//            with `partial` (~275 GB/s of K+V, still ~10x under the memory ceiling: the K rows are
//            read one per thread, not staged coalesced); test/cache/_bench.ts. `partial` stays as
//            the readable variant and the fallback, with an agreement test.
//   merge    one workgroup per output row: max-subtracted merge of the partitions; a partition
//            that saw no visible key (l = 0) has weight 0 (SPEC §9.7), a row with no visible
//            key at all (a padded query) outputs 0.

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

@group(0) @binding(12) var<storage, read> kpool4: array<vec4<T>>; // kpool as vec4 (decode)
@group(0) @binding(13) var<storage, read> vpool4: array<vec4<T>>; // vpool as vec4 (decode)

override WG: u32 = 128u;
override R: u32 = 4u;      // query rows per workgroup (= p.rows)
override KT: u32 = 32u;    // keys per tile
override RD: u32 = 512u;   // R * D
override RKT: u32 = 128u;  // R * KT
const ACC: u32 = 16u;      // accumulators per thread: R * D <= ACC * WG
const NEG: f32 = -3.4028235e38;

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

override GD4: u32 = 32u;   // decode: G * D / 4
override GW: u32 = 512u;   // decode: G * WG
const GMAX: u32 = 8u;      // decode: query heads per KV head
const ACC4: u32 = 4u;      // decode: vec4 accumulators per thread, G * D / 4 <= ACC4 * WG

var<workgroup> qs4: array<vec4<f32>, GD4>;
var<workgroup> dsc: array<f32, GW>;         // probabilities [G, WG]
var<workgroup> dred: array<f32, GW>;        // reduction scratch [G, WG]
var<workgroup> kph: array<u32, WG>;         // physical entry of each key
var<workgroup> vacc: array<vec4<f32>, WG>;  // partial PV sums of the key splits
var<workgroup> gstat: array<f32, 16>;       // m[g] at 0..7, l[g] at 8..15

fn phys(pg: u32, s: u32) -> u32 {
  let blk = table[(p.lbase + pg) * p.mb + s / p.bs];
  return u32(blk) * p.bs + s % p.bs;
}

fn visible(qp: i32, kp: i32, mark: i32) -> bool {
  return qp >= 0 && kp <= qp && mark != 2 && (mark == 0 || qp - kp <= p.window);
}

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
        src = 1u;
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

@compute @workgroup_size(WG)
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * p.np) { return; }
  let pi = w % p.np;
  let pg = w / p.np;
  let b = pg / p.hkv;
  let h = pg % p.hkv;
  let G = p.g;
  let D = p.d;
  let D4 = D / 4u;
  if (tid == 0u) { sh_len = lens[p.lbase + pg]; }
  let len = u32(workgroupUniformLoad(&sh_len));
  let ks = pi * WG;
  let cnt = min(WG, max(len, ks) - ks);  // keys of this partition
  let qbase = (b * p.hkv + h) * G * D;   // q:[B, Hq, 1, D], heads h*G .. h*G+G-1
  for (var i = tid; i < G * D4; i += WG) {
    let o = qbase + 4u * i;
    qs4[i] = vec4<f32>(f32(q[o]), f32(q[o + 1u]), f32(q[o + 2u]), f32(q[o + 3u])) * p.scale;
  }
  workgroupBarrier();
  // Scores of this thread's key against the G heads.
  var s: array<f32, GMAX>;
  var vis = false;
  if (tid < cnt) {
    let e = phys(pg, ks + tid);
    kph[tid] = e;
    vis = visible(p.t0, kmeta[2u * e], kmeta[2u * e + 1u]);
    if (vis) {
      for (var c = 0u; c < D4; c++) {
        let kv = vec4<f32>(kpool4[e * D4 + c]);
        for (var g = 0u; g < G; g++) { s[g] += dot(kv, qs4[g * D4 + c]); }
      }
    }
  }
  for (var g = 0u; g < G; g++) { dred[g * WG + tid] = select(NEG, s[g], vis); }
  workgroupBarrier();
  for (var o = WG / 2u; o > 0u; o = o / 2u) {
    if (tid < o) {
      for (var g = 0u; g < G; g++) { dred[g * WG + tid] = max(dred[g * WG + tid], dred[g * WG + tid + o]); }
    }
    workgroupBarrier();
  }
  if (tid < G) { gstat[tid] = dred[tid * WG]; }
  workgroupBarrier();
  for (var g = 0u; g < G; g++) {
    let e = select(0.0, exp(s[g] - gstat[g]), vis);
    dsc[g * WG + tid] = e;
    dred[g * WG + tid] = e;
  }
  workgroupBarrier();
  for (var o = WG / 2u; o > 0u; o = o / 2u) {
    if (tid < o) {
      for (var g = 0u; g < G; g++) { dred[g * WG + tid] += dred[g * WG + tid + o]; }
    }
    workgroupBarrier();
  }
  if (tid < G) { gstat[8u + tid] = dred[tid * WG]; }
  workgroupBarrier();
  // o[g, 4c..4c+3] = Σ_i p[g, i] v[i, 4c..4c+3] over the P = G * D/4 pairs (g, c).
  let P = G * D4;
  var acc: array<vec4<f32>, ACC4>;
  if (P >= WG) {
    for (var k = 0u; k < ACC4; k++) {
      let pr = tid + k * WG;
      if (pr < P) {
        let g = pr / D4;
        let c = pr % D4;
        var a = vec4<f32>(0.0);
        for (var i = 0u; i < cnt; i++) {
          a += dsc[g * WG + i] * vec4<f32>(vpool4[kph[i] * D4 + c]);  // p = 0 if not visible
        }
        acc[k] = a;
      }
    }
  } else {
    // Spare threads split the keys: thread tid takes pair tid % P and keys tid / P + spl * j.
    let spl = WG / P;
    let pr = tid % P;
    let part = tid / P;
    var a = vec4<f32>(0.0);
    if (part < spl) {
      let g = pr / D4;
      let c = pr % D4;
      for (var i = part; i < cnt; i += spl) {
        a += dsc[g * WG + i] * vec4<f32>(vpool4[kph[i] * D4 + c]);
      }
    }
    vacc[tid] = a;
    workgroupBarrier();
    if (tid < P) {
      var t = vec4<f32>(0.0);
      for (var j = 0u; j < spl; j++) { t += vacc[j * P + tid]; }
      acc[0] = t;
    }
  }
  // Write the partial (or, with one partition, the output).
  let hq = p.hkv * G;
  for (var k = 0u; k < ACC4; k++) {
    let pr = tid + k * WG;
    if (pr < P && (P >= WG || k == 0u)) {
      let g = pr / D4;
      let c = pr % D4;
      if (p.direct == 1u) {
        let l = gstat[8u + g];
        let o = select(vec4<f32>(0.0), acc[k] / l, l > 0.0);
        let dst = (b * hq + h * G + g) * D + 4u * c;
        out[dst] = T(o.x);
        out[dst + 1u] = T(o.y);
        out[dst + 2u] = T(o.z);
        out[dst + 3u] = T(o.w);
      } else {
        let base = ((pg * p.np + pi) * G + g) * (D + 2u);
        if (c == 0u) {
          part[base] = gstat[g];
          part[base + 1u] = gstat[8u + g];
        }
        part[base + 2u + 4u * c] = acc[k].x;
        part[base + 3u + 4u * c] = acc[k].y;
        part[base + 4u + 4u * c] = acc[k].z;
        part[base + 5u + 4u * c] = acc[k].w;
      }
    }
  }
}
