// Decode-time GEMV with 16-byte loads: y = x·wᵀ for a few rows of x (Linear layout), with the
// bias and residual epilogue, an optional RMSNorm prologue, the fused SwiGLU MLP input projection
// and the fused q/k/v projection.
// Launchers, CPU references and documentation: src/ops/gemv.ts, src/ops/linear_swiglu.ts,
// src/ops/linear_qkv.ts. gemv_rn.wgsl includes this file (gemv16 with the norm of its output);
// this file includes gemv_norm.wgsl (the norm of x) and gemv_acc.wgsl (accumulators, reductions).
//
//   gemv16:        x:[M, K]  w:[N, K]  bias:[N]  res:[M, N]  -> y[offY + m*ldy + n]
//                  y = res + x·wᵀ + bias        (bias when hasBias, res when hasRes)
//   gemv16_swiglu: x:[M, K]  w = gate:[N, K]  w2 = up:[N, K]  bias:[N]  bias2:[N]  -> y:[M, N]
//                  y = silu(x·gateᵀ + bias) * (x·upᵀ + bias2)   (biases when hasBias / hasBias2)
//   gemv16_qkv:    x:[M, K]  w = wq:[N, K]  w2 = wk:[N2, K]  w3 = wv:[N3, K]
//                  -> y = x·wqᵀ [M, N] (rows ldy apart), y2 = x·wkᵀ [M, N2], y3 = x·wvᵀ [M, N3]
//   gemv16_qkv_bias: the same + bias:[N], bias2:[N2], bias3:[N3] (each when hasBias*)
//   (M <= MR <= 16; K a multiple of EPV)
//
// NORM = 1 (every entry): x is replaced by rmsNorm(x, gain, eps) before the product, as the
// rmsnorm kernel computes it: each workgroup first sums the squares of its MR rows of x (256
// threads over the words, a tree reduction; K <= ~16K elements is a cheap re-read of cached
// data), keeps rn[r] = inverseSqrt(mean + eps), then every x word read by the main loop becomes
// gain * (x * rn[r]) rounded to the storage type (f16: through pack2x16float, which NVIDIA's
// compiler does not fold away as it folds f32(f16(v))), exactly the values the unfused rmsNorm
// would store. gain:[K] has the storage type of x. When the MR normed rows fit in workgroup
// memory (XS >= MR * K / EPV words, set by the launcher), the prologue stores them there once (xs)
// and the main loop reads them from it (H200, f16, M = 1: q/k/v 13.3 -> 11.5 µs, SwiGLU 17.3 ->
// 14.2); otherwise every lane renormalises the words it reads (same values either way).
// NORM = 2 (deferred; M <= 4): no prologue. The norm's row scale is applied to the sums instead of
// to x: y = rn[r] · ((x ⊙ gain)·wᵀ) (+ bias, + res), rn[r] = inverseSqrt(mean(x[r]^2) + eps). The
// gain multiplies each weight word once, and the squares of x accumulate beside the product in
// the same lanes (`Acc16.s`), reduced with it: every slot of a workgroup reads the whole row of
// x in the same order, so every slot sums the same squares in the same order and finds the same
// rn, and no slot waits for another. The normed x is never rounded to the storage type (NORM = 1
// and the rmsnorm op round it), so f16 results differ from NORM = 1 by that rounding.
//
// `gemv16`: one workgroup of 256 threads per 4 output columns n; 64 lanes per column read the
// weight row w[n, :] as vec4<u32> words (8 f16 or 4 f32 per 16-byte load), lane l taking words
// l, l + 64, ... (each warp reads 512 contiguous bytes per load), two words in flight per step;
// x is read the same way (it stays in cache: every column reuses it). f32 accumulators for the
// MR rows in registers, then a tree reduction over the 64 lanes in workgroup memory.
// `gemv16_wide`: LW lanes per column instead of 64 (see the entry point).
// `gemv16_swiglu`: the same loop, but the 4 slots of a workgroup are 2 columns of gate and the
// same 2 columns of up; after the reduction the gate slot's lane 0 reads its up partner's sum
// and stores silu(g) * u (one dispatch instead of gate, up and swiglu).
// `gemv16_qkv`: the same loop over the rows of [wq; wk; wv] as if concatenated (4 per
// workgroup, each slot picking its matrix), each sum stored into its own output: one dispatch
// instead of three. The bias entry binds 11 storage buffers (more than WebGPU's default 8): the
// launcher checks the device's limit.

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
  hasBias2: u32, // gemv16_swiglu, gemv16_qkv_bias: 1: add bias2[n]
  hasBias3: u32, // gemv16_qkv_bias: 1: add bias3[n]
  n2: u32,       // gemv16_qkv: rows of w2 (columns of y2)
  n3: u32,       // gemv16_qkv: rows of w3 (columns of y3)
  eps: f32,      // NORM: added to mean(x^2)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<u32>>;    // [M, K / EPV] words
@group(0) @binding(2) var<storage, read> gain: array<vec4<u32>>; // [K / EPV] words (NORM)
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;    // [N, K / EPV] words (gate, wq)
@group(0) @binding(4) var<storage, read> w2: array<vec4<u32>>;   // [N, K / EPV] (up); [N2, ..] (wk)
@group(0) @binding(5) var<storage, read> w3: array<vec4<u32>>;   // [N3, K / EPV] words (wv)
@group(0) @binding(6) var<storage, read> bias: array<T>;         // [N]
@group(0) @binding(7) var<storage, read> bias2: array<T>;        // [N] (up bias); [N2] (k bias)
@group(0) @binding(8) var<storage, read> bias3: array<T>;        // [N3] (v bias)
@group(0) @binding(9) var<storage, read> res: array<T>;          // [M, N]
@group(0) @binding(10) var<storage, read_write> y: array<T>;
@group(0) @binding(11) var<storage, read_write> y2: array<T>;    // [M, N2] (qkv)
@group(0) @binding(12) var<storage, read_write> y3: array<T>;    // [M, N3] (qkv)

const LANES: u32 = 64u;
const COLS: u32 = 4u;
override EPV: u32 = 8u;  // elements per 16-byte word: 8 (f16) or 4 (f32)
override MR: u32 = 1u;   // rows of x this pipeline handles (p.m <= MR <= 16)
override NORM: u32 = 0u; // 1: RMSNorm prologue (x -> gain * x * rn[r], rounded to T); 2: deferred

override RED: u32 = 4096u; // 256 * rows(): workgroup memory sized to the rows (the launcher sets it)
override LW: u32 = 8u; // gemv16_wide: lanes per column (divides 256; 256 / LW columns a workgroup)

var<workgroup> red: array<f32, RED>; // [rows()][256] partial sums (NORM = 2: then the squares)
var<workgroup> rn: array<f32, 16>;    // NORM: inverseSqrt(mean(x[r]^2) + eps) per row
// NORM: words of xs; the normed rows are staged there when XS >= MR * p.kw (else XS = 1, unused).
override XS: u32 = 1u;
var<workgroup> xs: array<vec4<u32>, XS>; // NORM, staged: the normed rows [MR, K / EPV] as words

// #include "gemv_norm"
// #include "gemv_acc"

@compute @workgroup_size(256)
fn gemv16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
  gemv16_body(wid, nwg, tid);
}

fn gemv16_body(wid: vec3<u32>, nwg: vec3<u32>, tid: u32) {
  norm_prologue(tid);
  let wg = wid.y * nwg.x + wid.x;
  let lane = tid % LANES;
  let col = wg * COLS + tid / LANES;
  var acc = acc0();
  if (col < p.n) {
    let wrow = col * p.kw;
    var i = lane;
    for (; i + LANES < p.kw; i += 2u * LANES) {
      let w0 = w[wrow + i];
      let w1 = w[wrow + i + LANES];
      acc = acc_word(acc, w0, i);
      acc = acc_word(acc, w1, i + LANES);
    }
    if (i < p.kw) { acc = acc_word(acc, w[wrow + i], i); }
  }
  acc_store(acc, tid);
  reduce_lanes(tid, lane);
  if (lane == 0u && col < p.n) {
    var b = 0.0;
    if (p.hasBias == 1u) { b = f32(bias[col]); }
    for (var r = 0u; r < MR; r++) {
      if (r < p.m) {
        var v = deferred(red[r * 256u + tid], squares_at(r, tid)) + b;
        if (p.hasRes == 1u) { v += f32(res[p.offR + r * p.n + col]); }
        y[p.offY + r * p.ldy + col] = T(v);
      }
    }
  }
}

// gemv16_wide: 256 / LW columns per workgroup, LW lanes per column, four words in flight per
// lane; after one barrier lane 0 of each column adds its LW partial sums in order. For a large
// N over a short K (the LM head, 151936 x 1024): gemv16's 4 columns a workgroup make ~38K
// short workgroups there. Same epilogue as gemv16.
@compute @workgroup_size(256)
fn gemv16_wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) tid: u32) {
  norm_prologue(tid);
  let wg = wid.y * nwg.x + wid.x;
  let lane = tid % LW;
  let col = wg * (256u / LW) + tid / LW;
  var acc = acc0();
  if (col < p.n) {
    let wrow = col * p.kw;
    var i = lane;
    for (; i + 3u * LW < p.kw; i += 4u * LW) {
      let a0 = w[wrow + i];
      let a1 = w[wrow + i + LW];
      let a2 = w[wrow + i + 2u * LW];
      let a3 = w[wrow + i + 3u * LW];
      acc = acc_word(acc, a0, i);
      acc = acc_word(acc, a1, i + LW);
      acc = acc_word(acc, a2, i + 2u * LW);
      acc = acc_word(acc, a3, i + 3u * LW);
    }
    for (; i < p.kw; i += LW) { acc = acc_word(acc, w[wrow + i], i); }
  }
  acc_store(acc, tid);
  workgroupBarrier();
  if (lane == 0u && col < p.n) {
    var b = 0.0;
    if (p.hasBias == 1u) { b = f32(bias[col]); }
    for (var r = 0u; r < MR; r++) {
      if (r < p.m) {
        var v = 0.0;
        var ss = 0.0;
        for (var j = 0u; j < LW; j++) {
          v += red[r * 256u + tid + j];
          ss += squares_at(r, tid + j);
        }
        v = deferred(v, ss) + b;
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
  norm_prologue(tid);
  let wg = wid.y * nwg.x + wid.x;
  let lane = tid % LANES;
  let slot = tid / LANES;
  let isUp = slot >= 2u;
  let col = wg * 2u + slot % 2u;
  var acc = acc0();
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
      acc = acc_word(acc, w0, i);
      acc = acc_word(acc, w1, i + LANES);
    }
    if (i < p.kw) {
      var w0: vec4<u32>;
      if (isUp) { w0 = w2[wrow + i]; } else { w0 = w[wrow + i]; }
      acc = acc_word(acc, w0, i);
    }
  }
  acc_store(acc, tid);
  reduce_lanes(tid, lane);
  if (lane == 0u && !isUp && col < p.n) {
    var bg = 0.0;
    var bu = 0.0;
    if (p.hasBias == 1u) { bg = f32(bias[col]); }
    if (p.hasBias2 == 1u) { bu = f32(bias2[col]); }
    for (var r = 0u; r < MR; r++) {
      if (r < p.m) {
        let ss = squares_at(r, tid);
        let g = deferred(red[r * 256u + tid], ss) + bg;
        let u = deferred(red[r * 256u + tid + 2u * LANES], ss) + bu;
        y[p.offY + r * p.ldy + col] = T(g * sigmoid(g) * u);
      }
    }
  }
}

// gemv16_qkv: which matrix (0: w, 1: w2, 2: w3) and row a slot of the concatenation takes.
struct QkvSlot {
  src: u32,
  col: u32,
  valid: bool,
}

fn qkv_word(src: u32, i: u32) -> vec4<u32> {
  if (src == 1u) { return w2[i]; }
  if (src == 2u) { return w3[i]; }
  return w[i];
}

// Prologue, main loop and reduction of gemv16_qkv / gemv16_qkv_bias: afterwards slot sums are
// in red[r * 256 + tid] for lane 0 of each slot.
fn qkv_sums(wg: u32, tid: u32) -> QkvSlot {
  norm_prologue(tid);
  let lane = tid % LANES;
  var c = wg * COLS + tid / LANES; // column of [y | y2 | y3]
  var src = 0u;
  if (c >= p.n) {
    c -= p.n;
    src = 1u;
    if (c >= p.n2) {
      c -= p.n2;
      src = 2u;
    }
  }
  let valid = src < 2u || c < p.n3;
  var acc = acc0();
  if (valid) {
    let wrow = c * p.kw;
    var i = lane;
    for (; i + LANES < p.kw; i += 2u * LANES) {
      let w0 = qkv_word(src, wrow + i);
      let w1 = qkv_word(src, wrow + i + LANES);
      acc = acc_word(acc, w0, i);
      acc = acc_word(acc, w1, i + LANES);
    }
    if (i < p.kw) { acc = acc_word(acc, qkv_word(src, wrow + i), i); }
  }
  acc_store(acc, tid);
  reduce_lanes(tid, lane);
  return QkvSlot(src, c, valid && lane == 0u);
}

// Stores v into row r, column s.col of the output s.src picks.
fn qkv_store(s: QkvSlot, r: u32, v: f32) {
  if (s.src == 0u) {
    y[p.offY + r * p.ldy + s.col] = T(v);
  } else if (s.src == 1u) {
    y2[r * p.n2 + s.col] = T(v);
  } else {
    y3[r * p.n3 + s.col] = T(v);
  }
}

@compute @workgroup_size(256)
fn gemv16_qkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) tid: u32) {
  let s = qkv_sums(wid.y * nwg.x + wid.x, tid);
  if (s.valid) {
    for (var r = 0u; r < MR; r++) {
      if (r < p.m) { qkv_store(s, r, deferred(red[r * 256u + tid], squares_at(r, tid))); }
    }
  }
}

@compute @workgroup_size(256)
fn gemv16_qkv_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) tid: u32) {
  let s = qkv_sums(wid.y * nwg.x + wid.x, tid);
  if (s.valid) {
    var b = 0.0;
    if (s.src == 0u && p.hasBias == 1u) { b = f32(bias[s.col]); }
    if (s.src == 1u && p.hasBias2 == 1u) { b = f32(bias2[s.col]); }
    if (s.src == 2u && p.hasBias3 == 1u) { b = f32(bias3[s.col]); }
    for (var r = 0u; r < MR; r++) {
      if (r < p.m) {
        qkv_store(s, r, deferred(red[r * 256u + tid], squares_at(r, tid)) + b);
      }
    }
  }
}
