// Skinny matmul for a decode batch (parallel chains): y = x·wᵀ for a few to ~100 rows of x
// (Linear layout), every weight word read once per block of 16 rows and used for all of them.
// Launcher, CPU reference and documentation: src/ops/skinny.ts.
//
//   skinny:        x:[M, K]  w:[N, K]  bias:[N]  res:[M, N]  -> y[offY + m*ldy + n]
//                  y = res + x·wᵀ + bias        (bias when hasBias, res when hasRes)
//   skinny_swiglu: x:[M, K]  w = gate:[N, K]  w2 = up:[N, K]  bias:[N]  bias2:[N]  -> y:[M, N]
//                  y = silu(x·gateᵀ + bias) * (x·upᵀ + bias2)
//   skinny_qkv:    x:[M, K]  w = wq:[N, K]  w2 = wk:[N2, K]  w3 = wv:[N3, K]
//                  -> y = x·wqᵀ [M, N] (rows ldy apart), y2 = x·wkᵀ [M, N2], y3 = x·wvᵀ [M, N3]
//   skinny_qkv_bias: the same + bias:[N], bias2:[N2], bias3:[N3] (each when hasBias*); binds 10
//                  storage buffers (more than WebGPU's default 8: the launcher checks the limit)
//   (K a multiple of EPV; workgroup_id.y = block of MT rows)
//
// Why not gemv16 in blocks: gemv16 reads x as f16 words from global memory for every weight word
// and converts each of them to f32 (four unpack2x16float a word and row): at M = 16 that is 16
// conversions of x per weight element, and they, not the weight bytes, set its time (H200:
// q/k/v 46 µs at M = 16 against 7 at M = 1). Here each workgroup converts its chunk of x to f32
// once, into workgroup memory, every weight word is unpacked once for its MT rows, and every x
// value read from workgroup memory feeds 4 columns: a first version with one column a thread was
// bound by those reads (a 128-bit load of workgroup memory is 4 quarter-warp phases; with 4
// multiply-adds per value it fed a quarter of the FMA rate).
//
// Layout: a workgroup of WG threads owns SLOTS = WG / KL slots of 4 adjacent output columns; KL
// lanes per slot split the K words (lane l takes word l of each chunk of CW = KL words, for the
// 4 rows of w of its slot: a warp reads KL consecutive 16-byte words of each of those rows). For
// each chunk:
// 1. the workgroup stores x[block rows, chunk] (loaded into registers during the previous chunk)
//    as f32 into xf, layout [row][half][word] (half: the low and high four elements of an f16
//    word), so that the KL lanes read consecutive vec4s; a barrier;
// 2. the next chunk's 4 weight words and x words are requested into registers;
// 3. every lane adds, for each of the MT rows, the dot products of the row's staged word with its
//    4 weight words into a named vec4 accumulator of the row (one component a column: an indexed
//    array of accumulators would live in local memory, see gemv.wgsl); a barrier.
// After the last chunk the accumulators go to xf as [row][thread] vec4s, and the thread of
// (slot, row) adds the KL partial sums of its slot in lane order and stores 4 columns of its row.

struct Params {
  m: u32,        // rows of x
  n: u32,        // output columns (rows of w)
  kw: u32,       // K / EPV: 16-byte words per row
  offX: u32,     // word offset of x[0, 0] in its bound window
  offY: u32,     // element offset of y[0, 0] in its bound window (includes a column offset)
  ldy: u32,      // elements between rows of y (>= n)
  offR: u32,     // element offset of res[0, 0] in its bound window (row stride n)
  hasBias: u32,  // 1: add bias[n]
  hasRes: u32,   // skinny: 1: add res[m, n]
  hasBias2: u32, // skinny_swiglu, skinny_qkv_bias: 1: add bias2[n]
  hasBias3: u32, // skinny_qkv_bias: 1: add bias3[n]
  n2: u32,       // skinny_qkv: rows of w2 (columns of y2)
  n3: u32,       // skinny_qkv: rows of w3 (columns of y3)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<u32>>;  // [M, K / EPV] words
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;  // [N, K / EPV] words (gate, wq)
@group(0) @binding(3) var<storage, read> w2: array<vec4<u32>>; // [N, ..] (up); [N2, ..] (wk)
@group(0) @binding(4) var<storage, read> w3: array<vec4<u32>>; // [N3, K / EPV] words (wv)
@group(0) @binding(5) var<storage, read> bias: array<T>;       // [N]
@group(0) @binding(6) var<storage, read> bias2: array<T>;      // [N] (up); [N2] (k)
@group(0) @binding(7) var<storage, read> bias3: array<T>;      // [N3] (v)
@group(0) @binding(8) var<storage, read> res: array<T>;        // [M, N]
@group(0) @binding(9) var<storage, read_write> y: array<T>;
@group(0) @binding(10) var<storage, read_write> y2: array<T>;  // [M, N2] (qkv)
@group(0) @binding(11) var<storage, read_write> y3: array<T>;  // [M, N3] (qkv)

override EPV: u32 = 8u; // elements per 16-byte word: 8 (f16) or 4 (f32)
override MT: u32 = 16u; // rows of a block (a workgroup's rows): 4, 8, 12 or 16
override WG: u32 = 128u; // threads per workgroup
override KL: u32 = 16u; // lanes per slot of 4 columns = words of a chunk (power of two <= 32)
// Words of x a thread stages a chunk: ceil(MT * KL / WG), 1..4 (the launcher sets it).
override SPT: u32 = 2u;
// vec4 slots of xf: max(MT * H * KL, MT * WG), H = 2 (f16) or 1 (the launcher sets it).
override XF: u32 = 2048u;

var<workgroup> xf: array<vec4<f32>, XF>;

// vec4s per staged word: 2 for f16 (low and high halves), 1 for f32.
fn halves() -> u32 {
  return select(1u, 2u, EPV == 8u);
}

// One vec4 accumulator a row of the block (components: the slot's 4 columns).
struct Acc16 {
  r0: vec4<f32>,
  r1: vec4<f32>,
  r2: vec4<f32>,
  r3: vec4<f32>,
  r4: vec4<f32>,
  r5: vec4<f32>,
  r6: vec4<f32>,
  r7: vec4<f32>,
  r8: vec4<f32>,
  r9: vec4<f32>,
  r10: vec4<f32>,
  r11: vec4<f32>,
  r12: vec4<f32>,
  r13: vec4<f32>,
  r14: vec4<f32>,
  r15: vec4<f32>,
}

// A column of a slot: the matrix it reads (0: w, 1: w2, 2: w3) and its row there.
struct Col {
  src: u32,
  col: u32,
  valid: bool,
}

// The 4 weight words of a slot at one K word, unpacked to f32 (l: elements 0..3, h: 4..7).
struct Words {
  l0: vec4<f32>,
  h0: vec4<f32>,
  l1: vec4<f32>,
  h1: vec4<f32>,
  l2: vec4<f32>,
  h2: vec4<f32>,
  l3: vec4<f32>,
  h3: vec4<f32>,
}

fn lo4(v: vec4<u32>) -> vec4<f32> {
  if (EPV == 8u) { return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)); }
  return bitcast<vec4<f32>>(v);
}

fn hi4(v: vec4<u32>) -> vec4<f32> {
  if (EPV == 8u) { return vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)); }
  return vec4<f32>(0.0);
}

// Word i of column c's weight row; zero past K or for a column past the matrices.
fn wword(c: Col, i: u32) -> vec4<u32> {
  if (!c.valid || i >= p.kw) { return vec4<u32>(0u); }
  let at = c.col * p.kw + i;
  if (c.src == 1u) { return w2[at]; }
  if (c.src == 2u) { return w3[at]; }
  return w[at];
}

// Word j = r * KL + i of this block's chunk at c0: x[row0 + r, c0 + i] (zero past M and K).
fn xload(row0: u32, c0: u32, j: u32) -> vec4<u32> {
  let r = j / KL;
  let i = j % KL;
  if (j >= MT * KL || row0 + r >= p.m || c0 + i >= p.kw) { return vec4<u32>(0u); }
  return x[p.offX + (row0 + r) * p.kw + c0 + i];
}

// Stores word j = r * KL + i of the chunk as f32 into xf ([row][half][word]).
fn xput(j: u32, v: vec4<u32>) {
  if (j >= MT * KL) { return; }
  let b = (j / KL) * halves() * KL + j % KL;
  xf[b] = lo4(v);
  if (EPV == 8u) { xf[b + KL] = hi4(v); }
}

fn unpack_words(a: vec4<u32>, b: vec4<u32>, c: vec4<u32>, d: vec4<u32>) -> Words {
  return Words(lo4(a), hi4(a), lo4(b), hi4(b), lo4(c), hi4(c), lo4(d), hi4(d));
}

// Row r of the staged chunk at word i dotted with the 4 columns' words.
fn rowdots(w4: Words, r: u32, i: u32) -> vec4<f32> {
  let b = r * halves() * KL + i;
  let xl = xf[b];
  if (EPV == 8u) {
    let xh = xf[b + KL];
    return vec4<f32>(
      dot(w4.l0, xl) + dot(w4.h0, xh),
      dot(w4.l1, xl) + dot(w4.h1, xh),
      dot(w4.l2, xl) + dot(w4.h2, xh),
      dot(w4.l3, xl) + dot(w4.h3, xh),
    );
  }
  return vec4<f32>(dot(w4.l0, xl), dot(w4.l1, xl), dot(w4.l2, xl), dot(w4.l3, xl));
}

// acc + every row's dot products with the slot's words at chunk word i (constant guards).
fn acc_words(acc: Acc16, w4: Words, i: u32) -> Acc16 {
  var o = acc;
  o.r0 += rowdots(w4, 0u, i);
  if (MT > 1u) { o.r1 += rowdots(w4, 1u, i); }
  if (MT > 2u) { o.r2 += rowdots(w4, 2u, i); }
  if (MT > 3u) { o.r3 += rowdots(w4, 3u, i); }
  if (MT > 4u) { o.r4 += rowdots(w4, 4u, i); }
  if (MT > 5u) { o.r5 += rowdots(w4, 5u, i); }
  if (MT > 6u) { o.r6 += rowdots(w4, 6u, i); }
  if (MT > 7u) { o.r7 += rowdots(w4, 7u, i); }
  if (MT > 8u) { o.r8 += rowdots(w4, 8u, i); }
  if (MT > 9u) { o.r9 += rowdots(w4, 9u, i); }
  if (MT > 10u) { o.r10 += rowdots(w4, 10u, i); }
  if (MT > 11u) { o.r11 += rowdots(w4, 11u, i); }
  if (MT > 12u) { o.r12 += rowdots(w4, 12u, i); }
  if (MT > 13u) { o.r13 += rowdots(w4, 13u, i); }
  if (MT > 14u) { o.r14 += rowdots(w4, 14u, i); }
  if (MT > 15u) { o.r15 += rowdots(w4, 15u, i); }
  return o;
}

// The accumulators -> xf[r * WG + tid] (after the caller's barrier).
fn acc_store(a: Acc16, tid: u32) {
  xf[tid] = a.r0;
  if (MT > 1u) { xf[WG + tid] = a.r1; }
  if (MT > 2u) { xf[2u * WG + tid] = a.r2; }
  if (MT > 3u) { xf[3u * WG + tid] = a.r3; }
  if (MT > 4u) { xf[4u * WG + tid] = a.r4; }
  if (MT > 5u) { xf[5u * WG + tid] = a.r5; }
  if (MT > 6u) { xf[6u * WG + tid] = a.r6; }
  if (MT > 7u) { xf[7u * WG + tid] = a.r7; }
  if (MT > 8u) { xf[8u * WG + tid] = a.r8; }
  if (MT > 9u) { xf[9u * WG + tid] = a.r9; }
  if (MT > 10u) { xf[10u * WG + tid] = a.r10; }
  if (MT > 11u) { xf[11u * WG + tid] = a.r11; }
  if (MT > 12u) { xf[12u * WG + tid] = a.r12; }
  if (MT > 13u) { xf[13u * WG + tid] = a.r13; }
  if (MT > 14u) { xf[14u * WG + tid] = a.r14; }
  if (MT > 15u) { xf[15u * WG + tid] = a.r15; }
}

// The K loop of every entry for the 4 columns c0..c3 of this thread's slot and rows row0 ..
// row0 + MT: the partial sums, left in xf as [row][thread] vec4s (ends with a barrier). The next
// chunk's weight words and this thread's share of its x words are requested into registers
// before the current chunk's products, so that their latency overlaps them.
fn sums(c0: Col, c1: Col, c2: Col, c3: Col, row0: u32, tid: u32) {
  let lane = tid % KL;
  let z = vec4<f32>(0.0);
  var acc = Acc16(z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z);
  var x0 = xload(row0, 0u, tid);
  var x1 = vec4<u32>(0u);
  var x2 = vec4<u32>(0u);
  var x3 = vec4<u32>(0u);
  if (SPT > 1u) { x1 = xload(row0, 0u, tid + WG); }
  if (SPT > 2u) { x2 = xload(row0, 0u, tid + 2u * WG); }
  if (SPT > 3u) { x3 = xload(row0, 0u, tid + 3u * WG); }
  var wa = wword(c0, lane);
  var wb = wword(c1, lane);
  var wc = wword(c2, lane);
  var wd = wword(c3, lane);
  for (var k0 = 0u; k0 < p.kw; k0 += KL) {
    xput(tid, x0);
    if (SPT > 1u) { xput(tid + WG, x1); }
    if (SPT > 2u) { xput(tid + 2u * WG, x2); }
    if (SPT > 3u) { xput(tid + 3u * WG, x3); }
    workgroupBarrier();
    let nk = k0 + KL;
    x0 = xload(row0, nk, tid);
    if (SPT > 1u) { x1 = xload(row0, nk, tid + WG); }
    if (SPT > 2u) { x2 = xload(row0, nk, tid + 2u * WG); }
    if (SPT > 3u) { x3 = xload(row0, nk, tid + 3u * WG); }
    let na = wword(c0, nk + lane);
    let nb = wword(c1, nk + lane);
    let nc = wword(c2, nk + lane);
    let nd = wword(c3, nk + lane);
    acc = acc_words(acc, unpack_words(wa, wb, wc, wd), lane);
    workgroupBarrier();
    wa = na;
    wb = nb;
    wc = nc;
    wd = nd;
  }
  acc_store(acc, tid);
  workgroupBarrier();
}

// The sum over the KL lanes of slot `slot`, row r of the block, in lane order: written out in
// fours (naga bounds every loop, so drivers do not unroll them; see gemv.wgsl's sum8).
fn lane_sum(slot: u32, r: u32) -> vec4<f32> {
  let b = r * WG + slot * KL;
  var v = xf[b];
  v += xf[b + 1u];
  v += xf[b + 2u];
  v += xf[b + 3u];
  for (var j = 4u; j < KL; j += 4u) {
    v += xf[b + j];
    v += xf[b + j + 1u];
    v += xf[b + j + 2u];
    v += xf[b + j + 3u];
  }
  return v;
}

// Epilogue tasks: (slot, row) pairs, task t = slot * MT + row, spread over the threads.
fn tasks() -> u32 {
  return (WG / KL) * MT;
}

// Column j (0..3) of slot `slot` of workgroup wg for `skinny`.
fn plain_col(wg: u32, slot: u32, j: u32) -> Col {
  let col = (wg * (WG / KL) + slot) * 4u + j;
  return Col(0u, col, col < p.n);
}

@compute @workgroup_size(WG)
fn skinny(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let s = tid / KL;
  let row0 = wid.y * MT;
  let wg = wid.x;
  sums(plain_col(wg, s, 0u), plain_col(wg, s, 1u), plain_col(wg, s, 2u), plain_col(wg, s, 3u),
       row0, tid);
  for (var t = tid; t < tasks(); t += WG) {
    let slot = t / MT;
    let r = row0 + t % MT;
    if (r >= p.m) { continue; }
    let v = lane_sum(slot, t % MT);
    for (var j = 0u; j < 4u; j++) {
      let c = plain_col(wg, slot, j);
      if (!c.valid) { continue; }
      var o = v[j];
      if (p.hasBias == 1u) { o += f32(bias[c.col]); }
      if (p.hasRes == 1u) { o += f32(res[p.offR + r * p.n + c.col]); }
      y[p.offY + r * p.ldy + c.col] = T(o);
    }
  }
}

fn sigmoid(v: f32) -> f32 {
  let e = exp(-abs(v)); // <= 1: nothing overflows for any finite v
  return select(e / (1.0 + e), 1.0 / (1.0 + e), v >= 0.0);
}

// skinny_swiglu: the first half of a workgroup's slots read gate rows, the second half the up
// rows of the same columns.
fn swiglu_col(wg: u32, slot: u32, j: u32) -> Col {
  let half = WG / KL / 2u;
  let col = (wg * half + slot % half) * 4u + j;
  return Col(select(0u, 1u, slot >= half), col, col < p.n);
}

@compute @workgroup_size(WG)
fn skinny_swiglu(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) tid: u32) {
  let s = tid / KL;
  let row0 = wid.y * MT;
  let wg = wid.x;
  sums(swiglu_col(wg, s, 0u), swiglu_col(wg, s, 1u), swiglu_col(wg, s, 2u),
       swiglu_col(wg, s, 3u), row0, tid);
  let half = WG / KL / 2u;
  for (var t = tid; t < half * MT; t += WG) {
    let slot = t / MT;
    let r = row0 + t % MT;
    if (r >= p.m) { continue; }
    let g4 = lane_sum(slot, t % MT);
    let u4 = lane_sum(slot + half, t % MT);
    for (var j = 0u; j < 4u; j++) {
      let c = swiglu_col(wg, slot, j);
      if (!c.valid) { continue; }
      var g = g4[j];
      var u = u4[j];
      if (p.hasBias == 1u) { g += f32(bias[c.col]); }
      if (p.hasBias2 == 1u) { u += f32(bias2[c.col]); }
      y[p.offY + r * p.ldy + c.col] = T(g * sigmoid(g) * u);
    }
  }
}

// skinny_qkv / skinny_qkv_bias: the columns walk the rows of [wq; wk; wv] as if concatenated.
fn qkv_col(wg: u32, slot: u32, j: u32) -> Col {
  var c = (wg * (WG / KL) + slot) * 4u + j;
  var src = 0u;
  if (c >= p.n) {
    c -= p.n;
    src = 1u;
    if (c >= p.n2) {
      c -= p.n2;
      src = 2u;
    }
  }
  return Col(src, c, src < 2u || c < p.n3);
}

// Stores row r of column c into the output c.src picks.
fn qkv_store(c: Col, r: u32, v: f32) {
  if (c.src == 0u) {
    y[p.offY + r * p.ldy + c.col] = T(v);
  } else if (c.src == 1u) {
    y2[r * p.n2 + c.col] = T(v);
  } else {
    y3[r * p.n3 + c.col] = T(v);
  }
}

fn qkv_sums(wg: u32, row0: u32, tid: u32) {
  let s = tid / KL;
  sums(qkv_col(wg, s, 0u), qkv_col(wg, s, 1u), qkv_col(wg, s, 2u), qkv_col(wg, s, 3u), row0,
       tid);
}

@compute @workgroup_size(WG)
fn skinny_qkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row0 = wid.y * MT;
  qkv_sums(wid.x, row0, tid);
  for (var t = tid; t < tasks(); t += WG) {
    let r = row0 + t % MT;
    if (r >= p.m) { continue; }
    let v = lane_sum(t / MT, t % MT);
    for (var j = 0u; j < 4u; j++) {
      let c = qkv_col(wid.x, t / MT, j);
      if (c.valid) { qkv_store(c, r, v[j]); }
    }
  }
}

// The bias of column c (bias, bias2 or bias3 as c.src picks; 0 where absent).
fn qkv_bias(c: Col) -> f32 {
  if (c.src == 0u && p.hasBias == 1u) { return f32(bias[c.col]); }
  if (c.src == 1u && p.hasBias2 == 1u) { return f32(bias2[c.col]); }
  if (c.src == 2u && p.hasBias3 == 1u) { return f32(bias3[c.col]); }
  return 0.0;
}

@compute @workgroup_size(WG)
fn skinny_qkv_bias(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_index) tid: u32) {
  let row0 = wid.y * MT;
  qkv_sums(wid.x, row0, tid);
  for (var t = tid; t < tasks(); t += WG) {
    let r = row0 + t % MT;
    if (r >= p.m) { continue; }
    let v = lane_sum(t / MT, t % MT);
    for (var j = 0u; j < 4u; j++) {
      let c = qkv_col(wid.x, t / MT, j);
      if (c.valid) { qkv_store(c, r, v[j] + qkv_bias(c)); }
    }
  }
}
