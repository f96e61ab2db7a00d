// Decode-time GEMV with 16-byte loads: y = x·wᵀ for a few rows of x (Linear layout), with the
// bias and residual epilogue, and the fused SwiGLU MLP input projection.
// Launchers, CPU references and documentation: src/ops/gemv.ts, src/ops/linear_swiglu.ts.
//
//   gemv16:        x:[M, K]  w:[N, K]  bias:[N]  res:[M, N]  -> y[offY + m*ldy + n]
//                  y = res + x·wᵀ + bias        (bias when hasBias, res when hasRes)
//   gemv16_swiglu: x:[M, K]  w = gate:[N, K]  w2 = up:[N, K]  bias:[N]  bias2:[N]  -> y:[M, N]
//                  y = silu(x·gateᵀ + bias) * (x·upᵀ + bias2)   (biases when hasBias / hasBias2)
//   (M <= MR <= 8; K a multiple of EPV)
//
// `gemv16`: one workgroup of 256 threads per 4 output columns n; 64 lanes per column read the
// weight row w[n, :] as vec4<u32> words (8 f16 or 4 f32 per 16-byte load), lane l taking words
// l, l + 64, ... (each warp reads 512 contiguous bytes per load), two words in flight per step;
// x is read the same way (it stays in cache: every column reuses it). f32 accumulators for the
// MR rows in registers, then a tree reduction over the 64 lanes in workgroup memory.
// `gemv16_swiglu`: the same loop, but the 4 slots of a workgroup are 2 columns of gate and the
// same 2 columns of up; after the reduction the gate slot's lane 0 reads its up partner's sum
// and stores silu(g) * u (one dispatch instead of gate, up and swiglu).

struct Params {
  m: u32,        // rows of x
  n: u32,        // output columns (rows of w)
  kw: u32,       // K / EPV: 16-byte words per row
  offX: u32,     // word offset of x[0, 0] in its bound window
  offY: u32,     // element offset of y[0, 0] in its bound window (includes a column offset)
  ldy: u32,      // elements between rows of y (>= n)
  offR: u32,     // element offset of res[0, 0] in its bound window (row stride n)
  hasBias: u32,  // 1: add bias[n]
  hasRes: u32,   // gemv16: 1: add res[m, n]
  hasBias2: u32, // gemv16_swiglu: 1: add bias2[n] to the up sum
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<u32>>;   // [M, K / EPV] words
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;   // [N, K / EPV] words (gate)
@group(0) @binding(3) var<storage, read> w2: array<vec4<u32>>;  // [N, K / EPV] words (up)
@group(0) @binding(4) var<storage, read> bias: array<T>;        // [N]
@group(0) @binding(5) var<storage, read> bias2: array<T>;       // [N] (up bias)
@group(0) @binding(6) var<storage, read> res: array<T>;         // [M, N]
@group(0) @binding(7) var<storage, read_write> y: array<T>;

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

// Tree reduction of red[r * 256 + tid] over the 64 lanes of each slot (all threads call it).
fn reduce_lanes(tid: u32, lane: u32) {
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      for (var r = 0u; r < MR; r++) { red[r * 256u + tid] += red[r * 256u + tid + s]; }
    }
    workgroupBarrier();
  }
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
        let xr = p.offX + r * p.kw + i;
        acc[r] += dotw(w0, x[xr]) + dotw(w1, x[xr + LANES]);
      }
    }
    if (i < p.kw) {
      let w0 = w[wrow + i];
      for (var r = 0u; r < MR; r++) { acc[r] += dotw(w0, x[p.offX + r * p.kw + i]); }
    }
  }
  for (var r = 0u; r < MR; r++) { red[r * 256u + tid] = acc[r]; }
  reduce_lanes(tid, lane);
  if (lane == 0u && col < p.n) {
    var b = 0.0;
    if (p.hasBias == 1u) { b = f32(bias[col]); }
    for (var r = 0u; r < MR; r++) {
      if (r < p.m) {
        var v = red[r * 256u + tid] + b;
        if (p.hasRes == 1u) { v += f32(res[p.offR + r * p.n + col]); }
        y[p.offY + r * p.ldy + col] = T(v);
      }
    }
  }
}

fn sigmoid(v: f32) -> f32 {
  let e = exp(-abs(v));  // <= 1: nothing overflows for any finite v
  return select(e / (1.0 + e), 1.0 / (1.0 + e), v >= 0.0);
}

// Slots 0, 1: gate rows col0, col0 + 1; slots 2, 3: up rows col0, col0 + 1 (same x words).
@compute @workgroup_size(256)
fn gemv16_swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) tid: u32) {
  let wg = wid.y * nwg.x + wid.x;
  let lane = tid % LANES;
  let slot = tid / LANES;
  let isUp = slot >= 2u;
  let col = wg * 2u + slot % 2u;
  var acc: array<f32, 8>;
  for (var r = 0u; r < 8u; r++) { acc[r] = 0.0; }
  if (col < p.n) {
    let wrow = col * p.kw;
    var i = lane;
    for (; i + LANES < p.kw; i += 2u * LANES) {
      var w0: vec4<u32>;
      var w1: vec4<u32>;
      if (isUp) {
        w0 = w2[wrow + i];
        w1 = w2[wrow + i + LANES];
      } else {
        w0 = w[wrow + i];
        w1 = w[wrow + i + LANES];
      }
      for (var r = 0u; r < MR; r++) {
        let xr = p.offX + r * p.kw + i;
        acc[r] += dotw(w0, x[xr]) + dotw(w1, x[xr + LANES]);
      }
    }
    if (i < p.kw) {
      var w0: vec4<u32>;
      if (isUp) { w0 = w2[wrow + i]; } else { w0 = w[wrow + i]; }
      for (var r = 0u; r < MR; r++) { acc[r] += dotw(w0, x[p.offX + r * p.kw + i]); }
    }
  }
  for (var r = 0u; r < MR; r++) { red[r * 256u + tid] = acc[r]; }
  reduce_lanes(tid, lane);
  if (lane == 0u && !isUp && col < p.n) {
    var bg = 0.0;
    var bu = 0.0;
    if (p.hasBias == 1u) { bg = f32(bias[col]); }
    if (p.hasBias2 == 1u) { bu = f32(bias2[col]); }
    for (var r = 0u; r < MR; r++) {
      if (r < p.m) {
        let g = red[r * 256u + tid] + bg;
        let u = red[r * 256u + tid + 2u * LANES] + bu;
        y[p.offY + r * p.ldy + col] = T(g * sigmoid(g) * u);
      }
    }
  }
}
