// Paged attention without workgroup memory or barriers: one invocation per query row, a plain
// loop over the page's live entries (then, in prefill, the chunk's own keys) with an online
// softmax. The readable kernel, and the one OpenGL CPU adapters run: Mesa's llvmpipe GL driver
// compiles each workgroup barrier into a coroutine and took minutes for the flash kernels
// (paged_prefill.wgsl's flash 182 s, paged_decode.wgsl's decode_fast, since replaced, 146 s on two cores).
// Launcher: src/cache/paged_simple.ts; the rule is paged_attention.wgsl's (SPEC §5.1):
//   query at position qp sees key (pos, mark) iff pos <= qp, mark != 2 (padding) and
//   (mark == 0 or qp - pos <= window).
//
//   q:[B, Hq, n, D]  kc, vc:[B, Hkv, nc, D]  cm:[B*Hkv, nc]  -> out:[B, Hq, n, D]
//   (D <= 256; rows with no visible key are 0)

struct Params {
  pages: u32,   // B * Hkv
  hkv: u32,     // KV heads
  g: u32,       // query heads per KV head
  d: u32,       // head dim
  n: u32,       // queries per page
  nc: u32,      // chunk keys after the page's entries (0 in decode)
  bs: u32,      // block size
  mb: u32,      // block-table width
  lbase: u32,   // layer * pages
  t0: i32,      // position of query 0 (and of chunk key 0)
  window: i32,  // W
  scale: f32,   // softmax scale
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> lens: array<i32>;   // [layers, pages]
@group(0) @binding(2) var<storage, read> table: array<i32>;  // [layers, pages, mb]
@group(0) @binding(3) var<storage, read> kmeta: array<i32>;  // [blocks*bs, 2] (pos, mark)
@group(0) @binding(4) var<storage, read> kpool: array<T>;    // [blocks*bs, D]
@group(0) @binding(5) var<storage, read> vpool: array<T>;    // [blocks*bs, D]
@group(0) @binding(6) var<storage, read> q: array<T>;        // [B, Hq, n, D]
@group(0) @binding(7) var<storage, read> kc: array<T>;       // [B, Hkv, nc, D]
@group(0) @binding(8) var<storage, read> vc: array<T>;       // [B, Hkv, nc, D]
@group(0) @binding(9) var<storage, read> cm: array<i32>;     // [pages, nc]
@group(0) @binding(10) var<storage, read_write> out: array<T>; // [B, Hq, n, D]

override WG: u32 = 64u;
const DMAX: u32 = 256u;
const NEG: f32 = -3.40282346e38;

// Channel dd of the key / value row `row` of the pool (pooled) or of the chunk.
fn key(row: u32, dd: u32, pooled: bool) -> f32 {
  if (pooled) { return f32(kpool[row + dd]); }
  return f32(kc[row + dd]);
}

fn value(row: u32, dd: u32, pooled: bool) -> f32 {
  if (pooled) { return f32(vpool[row + dd]); }
  return f32(vc[row + dd]);
}

fn visible(qp: i32, kp: i32, mark: i32) -> bool {
  return kp <= qp && mark != 2 && (mark == 0 || qp - kp <= p.window);
}

@compute @workgroup_size(WG)
fn simple(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
  let idx = (wid.y * nwg.x + wid.x) * WG + tid;
  if (idx >= p.pages * p.g * p.n) { return; }
  let i = idx % p.n;
  let g = (idx / p.n) % p.g;
  let pg = idx / (p.n * p.g);
  // query head h*G + g of sequence b is row pg*G + g of [B*Hq]
  let qrow = ((pg * p.g + g) * p.n + i) * p.d;
  let qp = p.t0 + i32(i);
  var m = NEG;
  var l = 0.0;
  var acc: array<f32, DMAX>;
  for (var dd = 0u; dd < p.d; dd++) { acc[dd] = 0.0; }
  let len = u32(max(lens[p.lbase + pg], 0));
  for (var j = 0u; j < len + p.nc; j++) {
    var kp: i32;
    var mark: i32;
    var row: u32;
    let pooled = j < len;
    if (pooled) {
      let ph = u32(table[(p.lbase + pg) * p.mb + j / p.bs]) * p.bs + j % p.bs;
      kp = kmeta[2u * ph];
      mark = kmeta[2u * ph + 1u];
      row = ph * p.d;
    } else {
      let c = j - len;
      kp = p.t0 + i32(c);
      mark = cm[pg * p.nc + c];
      row = (pg * p.nc + c) * p.d;
    }
    if (!visible(qp, kp, mark)) { continue; }
    var s = 0.0;
    for (var dd = 0u; dd < p.d; dd++) {
      s += f32(q[qrow + dd]) * key(row, dd, pooled);
    }
    s *= p.scale;
    var c = 1.0;
    var e = 1.0;
    if (s > m) {
      c = exp(m - s);
      m = s;
    } else {
      e = exp(s - m);
    }
    l = l * c + e;
    for (var dd = 0u; dd < p.d; dd++) {
      acc[dd] = acc[dd] * c + e * value(row, dd, pooled);
    }
  }
  for (var dd = 0u; dd < p.d; dd++) {
    out[qrow + dd] = T(select(0.0, acc[dd] / l, l > 0.0));
  }
}
