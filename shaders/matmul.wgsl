// Batched matrix multiply, f32 accumulation on f32 or f16 storage (alias T, set by the loader).
//
//   a:[batch, M, K]                       (row stride K; batch stride p.strideA, 0 = broadcast)
//   b:[batch, K, N]  or, TRANS_B, [batch, N, K]   (batch stride p.strideB, 0 = broadcast)
//   bias:[N]         (read only when p.hasBias == 1)
//   res:[M, N]       (read only when p.hasRes == 1; batch 1: the residual epilogue of linear)
//   out[batch, M, ldc] at column offset folded into p.offC:
//     out[offC + bt*strideC + m*ldc + n] = sum_k a[bt, m, k] * b[bt, k, n] + bias[n] + res[m, n]
//
// p.offA / p.offB / p.offC are element offsets inside the bound windows: the launcher binds
// 256-byte-aligned windows of large buffers (row blocks) and passes the remainder here.
//
// Entry points (all index workgroups linearly, `wid.y * nwg.x + wid.x`, so a 2-D grid can
// carry more than 65535 workgroups):
//   naive   one thread per output element; the readable definition.
//   tiled   64x64 output tile per workgroup of 16x16 threads, 4x4 outputs per thread in vec4
//           registers, K in steps of 16 staged in workgroup memory as vec4 rows.
//   gemv_t  small M, TRANS_B layout (Linear weights w:[N, K]): 8 output columns per workgroup,
//           32 threads per column read 4 consecutive k each (coalesced rows of w), ROWS (<= 8)
//           rows of a at once, then a workgroup-memory tree reduction over the 32 lanes.
//   gemv    small M, b:[K, N]: 8 columns x 32 k-slices per workgroup (a warp reads 4 rows x 8
//           consecutive columns), tree reduction over the 32 slices.
//
// Accumulators live in vec4 registers (tiled) or in arrays indexed only by loops with a constant
// trip count (gemv: ROWS is a pipeline constant), which the driver unrolls into registers. A first
// tiled kernel with an array<f32, 16> accumulator indexed in loops ran at 0.45 TFLOP/s on an H100
// (Vulkan); the vec4 version runs at 13.5.

struct Params {
  M: u32,
  N: u32,
  K: u32,
  batch: u32,
  strideA: u32,  // elements between batches of a (0: a is shared by all batches)
  strideB: u32,  // elements between batches of b (0: b is shared by all batches)
  strideC: u32,  // elements between batches of out
  ldc: u32,      // elements between rows of out (>= N)
  offA: u32,     // element offset of a[0, 0, 0] in the bound window
  offB: u32,
  offC: u32,     // element offset of out[0, 0, 0] (includes the column offset)
  hasBias: u32,  // 1: add bias[n]
  offR: u32,     // element offset of res[0, 0] in the bound window (row stride N)
  hasRes: u32,   // 1: add res[m, n] (the residual stream; the launcher sets it only for batch 1)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read> res: array<T>;
@group(0) @binding(5) var<storage, read_write> out: array<T>;

override TRANS_B: u32 = 0u;  // 1: b is [batch, N, K]
override WG: u32 = 256u;     // naive: threads per workgroup

fn linear_wg(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.y * nwg.x + wid.x;
}

// Element index of b[bt, k, n] in either layout.
fn b_index(bt: u32, k: u32, n: u32) -> u32 {
  if (TRANS_B == 1u) {
    return p.offB + bt * p.strideB + n * p.K + k;
  }
  return p.offB + bt * p.strideB + k * p.N + n;
}

fn bias_at(n: u32) -> f32 {
  if (p.hasBias == 1u) {
    return f32(bias[n]);
  }
  return 0.0;
}

// The epilogue of every entry point: + bias[n] + res[m, n], rounded once to T.
fn store(bt: u32, m: u32, n: u32, v: f32) {
  var r = v + bias_at(n);
  if (p.hasRes == 1u) {
    r += f32(res[p.offR + m * p.N + n]);
  }
  out[p.offC + bt * p.strideC + m * p.ldc + n] = T(r);
}

// ---------------------------------------------------------------------------------------------
// naive: out[bt, m, n] = sum_k a[bt, m, k] * b[bt, k, n]

@compute @workgroup_size(WG)
fn naive(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear_wg(wid, nwg) * WG + lid.x;
  let mn = p.M * p.N;
  if (i >= mn * p.batch) { return; }
  let bt = i / mn;
  let m = (i / p.N) % p.M;
  let n = i % p.N;
  let arow = p.offA + bt * p.strideA + m * p.K;
  var acc = 0.0;
  for (var k = 0u; k < p.K; k++) {
    acc += f32(a[arow + k]) * f32(b[b_index(bt, k, n)]);
  }
  store(bt, m, n, acc);
}

// ---------------------------------------------------------------------------------------------
// tiled: one 64x64 tile of out per workgroup. Thread (tx, ty) = (lid % 16, lid / 16) owns rows
// 4ty..4ty+3 and columns 4tx..4tx+3, held in four vec4 accumulators (registers, no arrays). Per
// step of BK = 16 along K, the workgroup stages a[64 x 16] and b[16 x 64] in workgroup memory as
// vec4 rows, so each inner step is two 16-byte reads and 16 FMAs per thread.

const TS = 64u;  // tile edge (rows of a and columns of b per workgroup)
const BK = 16u;  // K per step
const RS = 17u;  // vec4s per staged row: 16 + 1 pad, so the transposing stores spread over banks
var<workgroup> At: array<vec4<f32>, 272>;  // [BK][RS]: At[kk * RS + q][c] = a[row0 + 4q + c, k0 + kk]
var<workgroup> Bt: array<vec4<f32>, 272>;  // [BK][RS]: Bt[kk * RS + q][c] = b[k0 + kk, col0 + 4q + c]

// tiled: element e (< 1024) of the a tile [64 x 16] (row e / BK, k e % BK), 0 outside a.
fn a_elem(abase: u32, row0: u32, k0: u32, e: u32) -> f32 {
  let m = row0 + e / BK;
  let k = k0 + e % BK;
  if (m < p.M && k < p.K) { return f32(a[abase + m * p.K + k]); }
  return 0.0;
}

// tiled: stores element e of the a tile into At (k-major rows of vec4s).
fn put_at(e: u32, v: f32) {
  let mm = e / BK;
  At[(e % BK) * RS + mm / 4u][mm % 4u] = v;
}

// tiled: the (k, n) of element e of the b tile [16 x 64], read along b's contiguous dimension.
fn b_kn(e: u32) -> vec2<u32> {
  if (TRANS_B == 1u) { return vec2<u32>(e % BK, e / BK); }
  return vec2<u32>(e / TS, e % TS);
}

// tiled: element e of the b tile, 0 outside b.
fn b_elem(bt: u32, col0: u32, k0: u32, e: u32) -> f32 {
  let kn = b_kn(e);
  let n = col0 + kn.y;
  let k = k0 + kn.x;
  if (n < p.N && k < p.K) { return f32(b[b_index(bt, k, n)]); }
  return 0.0;
}

fn put_bt(e: u32, v: f32) {
  let kn = b_kn(e);
  Bt[kn.x * RS + kn.y / 4u][kn.y % 4u] = v;
}

// tiled: step kk of the staged tiles into c (column i: row 4ty + i, columns 4tx..4tx+3).
fn tile_step(c: mat4x4<f32>, kk: u32, ty: u32, tx: u32) -> mat4x4<f32> {
  let av = At[kk * RS + ty];
  let bv = Bt[kk * RS + tx];
  return mat4x4<f32>(fma(vec4<f32>(av.x), bv, c[0]), fma(vec4<f32>(av.y), bv, c[1]),
                     fma(vec4<f32>(av.z), bv, c[2]), fma(vec4<f32>(av.w), bv, c[3]));
}

@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let tilesN = (p.N + TS - 1u) / TS;
  let tilesM = (p.M + TS - 1u) / TS;
  let wg = linear_wg(wid, nwg);
  if (wg >= tilesN * tilesM * p.batch) { return; }
  let col0 = (wg % tilesN) * TS;
  let row0 = ((wg / tilesN) % tilesM) * TS;
  let bt = wg / (tilesN * tilesM);
  let abase = p.offA + bt * p.strideA;
  let tx = lid % 16u;
  let ty = lid / 16u;
  var c = mat4x4<f32>(); // column i: row 4ty + i, columns 4tx..4tx+3
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    // a tile [64 x 16] (consecutive threads read consecutive k of one row: coalesced) and b tile
    // [16 x 64] (along b's contiguous dimension, n or k when TRANS_B): a thread's four elements
    // of each requested before any is stored (naga bounds every loop and the driver does not
    // unroll it, so loads in a loop go out one iteration at a time).
    let a0 = a_elem(abase, row0, k0, lid);
    let a1 = a_elem(abase, row0, k0, lid + 256u);
    let a2 = a_elem(abase, row0, k0, lid + 512u);
    let a3 = a_elem(abase, row0, k0, lid + 768u);
    let b0 = b_elem(bt, col0, k0, lid);
    let b1 = b_elem(bt, col0, k0, lid + 256u);
    let b2 = b_elem(bt, col0, k0, lid + 512u);
    let b3 = b_elem(bt, col0, k0, lid + 768u);
    put_at(lid, a0);
    put_at(lid + 256u, a1);
    put_at(lid + 512u, a2);
    put_at(lid + 768u, a3);
    put_bt(lid, b0);
    put_bt(lid + 256u, b1);
    put_bt(lid + 512u, b2);
    put_bt(lid + 768u, b3);
    workgroupBarrier();
    // four k steps an iteration, the same FMAs in the same order
    for (var kk = 0u; kk < BK; kk += 4u) {
      c = tile_step(c, kk, ty, tx);
      c = tile_step(c, kk + 1u, ty, tx);
      c = tile_step(c, kk + 2u, ty, tx);
      c = tile_step(c, kk + 3u, ty, tx);
    }
    workgroupBarrier();
  }
  let m0 = row0 + 4u * ty;
  let n0 = col0 + 4u * tx;
  for (var j = 0u; j < 4u; j++) {
    let n = n0 + j;
    if (n < p.N) {
      if (m0 < p.M) { store(bt, m0, n, c[0][j]); }
      if (m0 + 1u < p.M) { store(bt, m0 + 1u, n, c[1][j]); }
      if (m0 + 2u < p.M) { store(bt, m0 + 2u, n, c[2][j]); }
      if (m0 + 3u < p.M) { store(bt, m0 + 3u, n, c[3][j]); }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GEMV (small M). Each workgroup handles ROWS rows of a (row block mb) and a few columns. ROWS is a
// pipeline constant (1..8, the launcher passes min(M, 8)), so the per-row loops have a constant
// trip count and the accumulators stay in registers. Rows past M in the last block read the last
// valid row (no branch) and are not stored.

override ROWS: u32 = 8u;
var<workgroup> red: array<f32, 2048>;  // [8][256]: red[r * 256 + lid] = thread lid's sum for row r

// gemv_t: b is [N, K] (TRANS_B). Workgroup = 8 columns x 32 lanes; lane l reads k = 128t + 4l + 0..3.
@compute @workgroup_size(256)
fn gemv_t(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let colGroups = (p.N + 7u) / 8u;
  let mBlocks = (p.M + ROWS - 1u) / ROWS;
  let wg = linear_wg(wid, nwg);
  if (wg >= colGroups * mBlocks * p.batch) { return; }
  let n = (wg % colGroups) * 8u + lid / 32u;
  let m0 = ((wg / colGroups) % mBlocks) * ROWS;
  let bt = wg / (colGroups * mBlocks);
  let last = p.M - 1u - m0;  // last valid row of this block
  let lane = lid % 32u;
  let abase = p.offA + bt * p.strideA + m0 * p.K;

  var acc: array<f32, 8>;
  if (n < p.N) {
    let wrow = p.offB + bt * p.strideB + n * p.K;
    var k = lane * 4u;
    for (; k + 4u <= p.K; k += 128u) {
      let w = vec4<f32>(f32(b[wrow + k]), f32(b[wrow + k + 1u]), f32(b[wrow + k + 2u]),
                        f32(b[wrow + k + 3u]));
      for (var r = 0u; r < ROWS; r++) {
        let x = abase + min(r, last) * p.K + k;
        acc[r] += dot(vec4<f32>(f32(a[x]), f32(a[x + 1u]), f32(a[x + 2u]), f32(a[x + 3u])), w);
      }
    }
    for (; k < p.K; k++) {  // this lane's last, partial group of 4 (k + 4 > K here)
      let w = f32(b[wrow + k]);
      for (var r = 0u; r < ROWS; r++) { acc[r] += f32(a[abase + min(r, last) * p.K + k]) * w; }
    }
  }
  for (var r = 0u; r < ROWS; r++) { red[r * 256u + lid] = acc[r]; }
  workgroupBarrier();
  for (var s = 16u; s > 0u; s >>= 1u) {
    if (lane < s) {
      for (var r = 0u; r < ROWS; r++) { red[r * 256u + lid] += red[r * 256u + lid + s]; }
    }
    workgroupBarrier();
  }
  if (lane == 0u && n < p.N) {
    for (var r = 0u; r <= min(last, ROWS - 1u); r++) {
      store(bt, m0 + r, n, red[r * 256u + lid]);
    }
  }
}

// gemv: b is [K, N]. Workgroup = 8 columns x 32 k-slices (lid % 8 = column, lid / 8 = slice);
// slice s reads k = s, s + 32, ... so a warp reads 4 rows x 8 consecutive columns of b per step.
@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let colGroups = (p.N + 7u) / 8u;
  let mBlocks = (p.M + ROWS - 1u) / ROWS;
  let wg = linear_wg(wid, nwg);
  if (wg >= colGroups * mBlocks * p.batch) { return; }
  let n = (wg % colGroups) * 8u + lid % 8u;
  let m0 = ((wg / colGroups) % mBlocks) * ROWS;
  let bt = wg / (colGroups * mBlocks);
  let last = p.M - 1u - m0;
  let slice = lid / 8u;
  let abase = p.offA + bt * p.strideA + m0 * p.K;

  var acc: array<f32, 8>;
  if (n < p.N) {
    let bbase = p.offB + bt * p.strideB + n;
    for (var k = slice; k < p.K; k += 32u) {
      let w = f32(b[bbase + k * p.N]);
      for (var r = 0u; r < ROWS; r++) { acc[r] += f32(a[abase + min(r, last) * p.K + k]) * w; }
    }
  }
  for (var r = 0u; r < ROWS; r++) { red[r * 256u + lid] = acc[r]; }
  workgroupBarrier();
  for (var s = 16u; s > 0u; s >>= 1u) {
    if (slice < s) {
      for (var r = 0u; r < ROWS; r++) { red[r * 256u + lid] += red[r * 256u + lid + s * 8u]; }
    }
    workgroupBarrier();
  }
  if (slice == 0u && n < p.N) {
    for (var r = 0u; r <= min(last, ROWS - 1u); r++) {
      store(bt, m0 + r, n, red[r * 256u + lid]);
    }
  }
}
