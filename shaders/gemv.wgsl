// Decode-time GEMV with 16-byte loads: y = x·wᵀ for a few rows of x (Linear layout).
// Launcher, CPU reference and documentation: src/ops/gemv.ts.
//
//   x:[M, K]  w:[N, K]  -> y:[M, N]     (M <= MR <= 8; K a multiple of EPV)
//
// `gemv16`: one workgroup of 256 threads per 4 output columns n; 64 lanes per column read the
// weight row w[n, :] as vec4<u32> words (8 f16 or 4 f32 per 16-byte load), lane l taking words
// l, l + 64, ... (each warp reads 512 contiguous bytes per load), two words in flight per step;
// x is read the same way (it stays in cache: every column reuses it). f32 accumulators for the
// MR rows in registers, then a tree reduction over the 64 lanes in workgroup memory.

struct Params {
  m: u32,   // rows of x
  n: u32,   // output columns (rows of w)
  kw: u32,  // K / EPV: 16-byte words per row
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<u32>>;  // [M, K / EPV] words
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;  // [N, K / EPV] words
@group(0) @binding(3) var<storage, read_write> y: array<T>;    // [M, N]

const LANES: u32 = 64u;
const COLS: u32 = 4u;
override EPV: u32 = 8u;  // elements per 16-byte word: 8 (f16) or 4 (f32)
override MR: u32 = 1u;   // rows of x this pipeline handles (p.m <= MR <= 8)

var<workgroup> red: array<f32, 2048>; // [MR][256] partial sums

// Dot of two 16-byte words as EPV elements each.
fn dotw(a: vec4<u32>, b: vec4<u32>) -> f32 {
  if (EPV == 8u) {
    var s = 0.0;
    for (var i = 0u; i < 4u; i++) {
      s += dot(unpack2x16float(a[i]), unpack2x16float(b[i]));
    }
    return s;
  }
  return dot(bitcast<vec4<f32>>(a), bitcast<vec4<f32>>(b));
}

@compute @workgroup_size(256)
fn gemv16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
  let wg = wid.y * nwg.x + wid.x;
  let lane = tid % LANES;
  let col = wg * COLS + tid / LANES;
  var acc: array<f32, 8>;
  for (var r = 0u; r < 8u; r++) { acc[r] = 0.0; }
  if (col < p.n) {
    let wrow = col * p.kw;
    var i = lane;
    for (; i + LANES < p.kw; i += 2u * LANES) {
      let w0 = w[wrow + i];
      let w1 = w[wrow + i + LANES];
      for (var r = 0u; r < MR; r++) {
        acc[r] += dotw(w0, x[r * p.kw + i]) + dotw(w1, x[r * p.kw + i + LANES]);
      }
    }
    if (i < p.kw) {
      let w0 = w[wrow + i];
      for (var r = 0u; r < MR; r++) { acc[r] += dotw(w0, x[r * p.kw + i]); }
    }
  }
  for (var r = 0u; r < MR; r++) { red[r * 256u + tid] = acc[r]; }
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      for (var r = 0u; r < MR; r++) { red[r * 256u + tid] += red[r * 256u + tid + s]; }
    }
    workgroupBarrier();
  }
  if (lane == 0u && col < p.n) {
    for (var r = 0u; r < MR; r++) {
      if (r < p.m) { y[r * p.n + col] = T(red[r * 256u + tid]); }
    }
  }
}
