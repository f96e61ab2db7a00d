// Backward of the linear layer y = x·wᵀ + b (x:[N, K], w:[M, K], dy:[N, M]), f32 storage:
//   dx:[N, K] = dy·w          dw:[M, K] = dyᵀ·x          db:[M] = Σ_n dy[n, :]
//
// `naive` and `tiled` compute one strided product with an optional accumulate:
//   c[i, j] (+)= Σ_r A(i, r) · B(r, j)          i < I, j < J, r < R
//   A(i, r) = a[offA + i*sAi + r*sAr]      B(r, j) = b[offB + r*sBr + j*sBj]
//   c[offC + i*ldc + j]                    (accumulate 1: add to what c holds)
// so dx (A = dy, B = w) and dw (A = dyᵀ, B = x) are two launches of one kernel, and a column
// window of dy (an LM head chunk) is only an offset and a row stride (ldy). The sum over r runs in
// increasing r in both kernels; the launcher splits a long r (rows of dy and x that exceed a
// binding) into blocks launched in order with accumulate 1, so results are deterministic.
//
// Entry points (workgroups indexed linearly, wid.y * nwg.x + wid.x, for grids past 65535):
//   naive      one thread per c element; the readable definition.
//   tiled      the forward matmul's tiled kernel with strided operands: a 64x64 tile of c per
//              workgroup of 16x16 threads, 4x4 outputs per thread in vec4 registers, r in steps of
//              16 staged in workgroup memory; each tile load walks the operand's contiguous axis.
//   bias_grad  db[j] (+)= Σ_r a[offA + r*sAr + j*sAi], one thread per column j, r in order.

struct Params {
  I: u32,
  J: u32,
  R: u32,
  sAi: u32,         // stride of A along i (1 when A is a transposed row-major matrix)
  sAr: u32,         // stride of A along r
  sBr: u32,         // stride of B along r
  sBj: u32,         // stride of B along j
  ldc: u32,         // row stride of c
  offA: u32,        // element offsets inside the bound windows
  offB: u32,
  offC: u32,
  accumulate: u32,  // 1: c += product; 0: c = product
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

override WG: u32 = 256u;

fn linear_wg(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.y * nwg.x + wid.x;
}

fn a_at(i: u32, r: u32) -> f32 { return a[p.offA + i * p.sAi + r * p.sAr]; }
fn b_at(r: u32, j: u32) -> f32 { return b[p.offB + r * p.sBr + j * p.sBj]; }

fn store(i: u32, j: u32, v: f32) {
  let o = p.offC + i * p.ldc + j;
  if (p.accumulate == 1u) { c[o] = c[o] + v; } else { c[o] = v; }
}

// ---------------------------------------------------------------------------------------------
// naive: c[i, j] = Σ_r A(i, r) B(r, j)

@compute @workgroup_size(WG)
fn naive(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
  let e = linear_wg(wid, nwg) * WG + lid.x;
  if (e >= p.I * p.J) { return; }
  let i = e / p.J;
  let j = e % p.J;
  var acc = 0.0;
  for (var r = 0u; r < p.R; r++) { acc += a_at(i, r) * b_at(r, j); }
  store(i, j, acc);
}

// ---------------------------------------------------------------------------------------------
// tiled: as shaders/matmul.wgsl `tiled`. Thread (tx, ty) = (lid % 16, lid / 16) owns rows
// 4ty..4ty+3 and columns 4tx..4tx+3 of the workgroup's 64x64 tile.

const TS = 64u;  // tile edge
const BK = 16u;  // r per step
const RS = 17u;  // vec4s per staged row: 16 + 1 pad
var<workgroup> At: array<vec4<f32>, 272>;  // At[rr * RS + q][c] = A(i0 + 4q + c, r0 + rr)
var<workgroup> Bt: array<vec4<f32>, 272>;  // Bt[rr * RS + q][c] = B(r0 + rr, j0 + 4q + c)

@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let tilesJ = (p.J + TS - 1u) / TS;
  let tilesI = (p.I + TS - 1u) / TS;
  let wg = linear_wg(wid, nwg);
  if (wg >= tilesJ * tilesI) { return; }
  let j0 = (wg % tilesJ) * TS;
  let i0 = (wg / tilesJ) * TS;
  let tx = lid % 16u;
  let ty = lid / 16u;
  var c0 = vec4<f32>();
  var c1 = vec4<f32>();
  var c2 = vec4<f32>();
  var c3 = vec4<f32>();
  for (var r0 = 0u; r0 < p.R; r0 += BK) {
    // A tile [64 x 16]: consecutive threads walk A's contiguous axis (r if sAr == 1, else i).
    for (var s = 0u; s < 4u; s++) {
      let e = lid + 256u * s;
      var ii: u32;
      var rr: u32;
      if (p.sAr == 1u) {
        ii = e / BK;
        rr = e % BK;
      } else {
        rr = e / TS;
        ii = e % TS;
      }
      let i = i0 + ii;
      let r = r0 + rr;
      var v = 0.0;
      if (i < p.I && r < p.R) { v = a_at(i, r); }
      At[rr * RS + ii / 4u][ii % 4u] = v;
    }
    // B tile [16 x 64]: walk j if sBj == 1, else r.
    for (var s = 0u; s < 4u; s++) {
      let e = lid + 256u * s;
      var jj: u32;
      var rr: u32;
      if (p.sBj == 1u) {
        rr = e / TS;
        jj = e % TS;
      } else {
        jj = e / BK;
        rr = e % BK;
      }
      let j = j0 + jj;
      let r = r0 + rr;
      var v = 0.0;
      if (j < p.J && r < p.R) { v = b_at(r, j); }
      Bt[rr * RS + jj / 4u][jj % 4u] = v;
    }
    workgroupBarrier();
    for (var rr = 0u; rr < BK; rr++) {
      let av = At[rr * RS + ty];
      let bv = Bt[rr * RS + tx];
      c0 = fma(vec4<f32>(av.x), bv, c0);
      c1 = fma(vec4<f32>(av.y), bv, c1);
      c2 = fma(vec4<f32>(av.z), bv, c2);
      c3 = fma(vec4<f32>(av.w), bv, c3);
    }
    workgroupBarrier();
  }
  let i = i0 + 4u * ty;
  let jb = j0 + 4u * tx;
  for (var q = 0u; q < 4u; q++) {
    let j = jb + q;
    if (j < p.J) {
      if (i < p.I) { store(i, j, c0[q]); }
      if (i + 1u < p.I) { store(i + 1u, j, c1[q]); }
      if (i + 2u < p.I) { store(i + 2u, j, c2[q]); }
      if (i + 3u < p.I) { store(i + 3u, j, c3[q]); }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// bias_grad: db[j] = Σ_r dy[r, j], with dy read as a (sAr = ldy, sAi = 1) and db as c (I = 1).

@compute @workgroup_size(WG)
fn bias_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
  let j = linear_wg(wid, nwg) * WG + lid.x;
  if (j >= p.J) { return; }
  var acc = 0.0;
  for (var r = 0u; r < p.R; r++) { acc += a[p.offA + r * p.sAr + j * p.sAi]; }
  store(0u, j, acc);
}
