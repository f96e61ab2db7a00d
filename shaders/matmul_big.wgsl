// Large-tile batched matrix multiply for prefill-sized products: the same op, parameters, bindings
// and epilogue as `tiled` in matmul.wgsl (f32 accumulation on f32 or f16 storage, alias T):
//
//   a:[batch, M, K]                       (row stride K; batch stride p.strideA, 0 = broadcast)
//   b:[batch, K, N]  or, TRANS_B, [batch, N, K]   (batch stride p.strideB, 0 = broadcast)
//   bias:[N], res:[M, N] (read only when p.hasBias / p.hasRes == 1)
//   out[offC + bt*strideC + m*ldc + n] = sum_k a[bt, m, k] * b[bt, k, n] + bias[n] + res[m, n]
//
// The declarations from `struct Params` to `fn store` are copies of matmul.wgsl's (WGSL has no
// include; test/ops/matmul_big_test.ts checks that they stay identical).
//
// Entry points:
//   tiled128  a 128 x BN output tile per workgroup of 256 threads (BN = 128; BN = 64 with the
//             pipeline constant WIDE = 0), 8 x 8 (8 x 4) outputs per thread in 16 (8) named vec4
//             registers, K in steps of 16 staged k-major in workgroup memory, so each inner step
//             is 4 (3) 16-byte reads for 64 (32) FMAs (`tiled`: 2 reads for 16). The next K step
//             is read from global memory into registers while the current one is multiplied.
//             Workgroup memory: 16 KiB (the WebGPU default limit), whatever BN.
//   tiled128_split, splitk_sum  split K: KSPLIT workgroups a tile, each over its share of K into
//             f32 partials (binding 6), then one thread per 4 outputs adds them in split order
//             and runs the epilogue (see the section below).

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
// tiled128. Thread (tx, ty) = (lid % 16, lid / 16) owns rows 4ty..4ty+3 and 64+4ty..64+4ty+3 of
// the tile, and columns 4tx..4tx+3 (and 64+4tx..64+4tx+3 when WIDE), in `Acc` (c0, c1: the
// left columns of the two row groups; c2, c3: the right ones). Per step of BK = 16 along K the
// workgroup stages
//   As[kk][q][c] = a[row0 + 4q + c, k0 + kk]  (q < 32)
//   Bs[kk][q][c] = b[k0 + kk, col0 + 4q + c]  (q < BN / 4)
// as vec4 rows; the vec4 q of row kk sits at slot kk * rowlen + (q ^ (kk & 7)), a swizzle that
// spreads the transposing stores (16 threads, 16 kk, one q) over 8 bank groups without padding.

override WIDE: u32 = 1u;  // 1: 128 x 128 tiles; 0: 128 x 64
const BM = 128u;          // rows of a per workgroup
const BK = 16u;           // K per step
var<workgroup> As: array<vec4<f32>, 512>;  // [BK][32] swizzled, 8 KiB
var<workgroup> Bs: array<vec4<f32>, 512>;  // [BK][BN / 4] swizzled, 8 KiB (half used when !WIDE)

fn tile_n() -> u32 {
  return select(64u, 128u, WIDE == 1u);
}

fn slot(kk: u32, q: u32, rowlen: u32) -> u32 {
  return kk * rowlen + (q ^ (kk & 7u));
}

fn at_a(abase: u32, m: u32, k: u32) -> f32 {
  if (m < p.M && k < p.K) { return f32(a[abase + m * p.K + k]); }
  return 0.0;
}

fn at_b(bt: u32, k: u32, n: u32) -> f32 {
  if (n < p.N && k < p.K) { return f32(b[b_index(bt, k, n)]); }
  return 0.0;
}

// The a elements thread lid loads per step: (kk, mm) = (lid % 16, lid / 16 + 16r), r = 0..7,
// so 16 consecutive threads read 16 consecutive k of one row. Half h holds r = 4h..4h+3.
fn fetch_a(abase: u32, row0: u32, k0: u32, lid: u32, h: u32) -> vec4<f32> {
  let k = k0 + lid % 16u;
  let m = row0 + lid / 16u + 64u * h;
  return vec4<f32>(at_a(abase, m, k), at_a(abase, m + 16u, k), at_a(abase, m + 32u, k),
                   at_a(abase, m + 48u, k));
}

fn stash_a(lid: u32, h: u32, v: vec4<f32>) {
  let kk = lid % 16u;
  let q = lid / 64u + 16u * h;  // (lid / 16 + 64h + 16j) / 4 = q + 4j
  let c = (lid / 16u) % 4u;
  As[slot(kk, q, 32u)][c] = v.x;
  As[slot(kk, q + 4u, 32u)][c] = v.y;
  As[slot(kk, q + 8u, 32u)][c] = v.z;
  As[slot(kk, q + 12u, 32u)][c] = v.w;
}

// (kk, nn) of the r-th b element thread lid loads per step, along b's contiguous dimension:
// TRANS_B: (lid % 16, lid / 16 + 16r) like a; else (lid / BN + (256 / BN) r, lid % BN).
fn b_kn(lid: u32, r: u32) -> vec2<u32> {
  if (TRANS_B == 1u) { return vec2<u32>(lid % 16u, lid / 16u + 16u * r); }
  let bn = tile_n();
  return vec2<u32>(lid / bn + (256u / bn) * r, lid % bn);
}

fn fetch_b(bt: u32, col0: u32, k0: u32, lid: u32, h: u32) -> vec4<f32> {
  let e0 = b_kn(lid, 4u * h);
  let e1 = b_kn(lid, 4u * h + 1u);
  let e2 = b_kn(lid, 4u * h + 2u);
  let e3 = b_kn(lid, 4u * h + 3u);
  return vec4<f32>(at_b(bt, k0 + e0.x, col0 + e0.y), at_b(bt, k0 + e1.x, col0 + e1.y),
                   at_b(bt, k0 + e2.x, col0 + e2.y), at_b(bt, k0 + e3.x, col0 + e3.y));
}

fn put_b(e: vec2<u32>, v: f32) {
  Bs[slot(e.x, e.y / 4u, tile_n() / 4u)][e.y % 4u] = v;
}

fn stash_b(lid: u32, h: u32, v: vec4<f32>) {
  put_b(b_kn(lid, 4u * h), v.x);
  put_b(b_kn(lid, 4u * h + 1u), v.y);
  put_b(b_kn(lid, 4u * h + 2u), v.z);
  put_b(b_kn(lid, 4u * h + 3u), v.w);
}

// Row m, columns n0..n0+3 of out through the shared epilogue, bounds-checked.
fn put4(bt: u32, m: u32, n0: u32, v: vec4<f32>) {
  if (m >= p.M) { return; }
  for (var j = 0u; j < 4u; j++) {
    if (n0 + j < p.N) { store(bt, m, n0 + j, v[j]); }
  }
}

// Rows m0..m0+3, columns n0..n0+3 of out: column j of c is row m0 + j.
fn put_rows(bt: u32, m0: u32, n0: u32, c: mat4x4<f32>) {
  put4(bt, m0, n0, c[0]);
  put4(bt, m0 + 1u, n0, c[1]);
  put4(bt, m0 + 2u, n0, c[2]);
  put4(bt, m0 + 3u, n0, c[3]);
}

// A thread's 128 outputs as four matrices, column j a row's vec4 of 4 columns: c0 rows 4ty+j,
// columns 4tx..; c1 rows 64+4ty+j; c2 and c3 the same rows at columns 64+4tx.. (WIDE).
struct Acc {
  c0: mat4x4<f32>,
  c1: mat4x4<f32>,
  c2: mat4x4<f32>,
  c3: mat4x4<f32>,
}

// a's column j (4 rows) times the row vector b, added to the matrix c column by column.
fn fma4(a: vec4<f32>, b: vec4<f32>, c: mat4x4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(fma(vec4<f32>(a.x), b, c[0]), fma(vec4<f32>(a.y), b, c[1]),
                     fma(vec4<f32>(a.z), b, c[2]), fma(vec4<f32>(a.w), b, c[3]));
}

// K step kk of the staged tiles (XOR-swizzled rows) into acc. The loop over kk runs two steps an
// iteration: naga bounds every loop and the driver does not unroll it.
fn k_step(acc: Acc, kk: u32, ty: u32, tx: u32, nq: u32) -> Acc {
  let s = kk & 7u;
  let a0 = As[kk * 32u + (ty ^ s)];        // rows 4ty..4ty+3
  let a1 = As[kk * 32u + 16u + (ty ^ s)];  // rows 64+4ty..64+4ty+3
  let b0 = Bs[kk * nq + (tx ^ s)];         // columns 4tx..4tx+3
  var o = acc;
  o.c0 = fma4(a0, b0, acc.c0);
  o.c1 = fma4(a1, b0, acc.c1);
  if (WIDE == 1u) {
    let b1 = Bs[kk * nq + 16u + (tx ^ s)];  // columns 64+4tx..64+4tx+3
    o.c2 = fma4(a0, b1, acc.c2);
    o.c3 = fma4(a1, b1, acc.c3);
  }
  return o;
}

// The product of one output tile over K range [kb, ke) (kb a multiple of BK), in registers.
fn product(bt: u32, row0: u32, col0: u32, kb: u32, ke: u32, lid: u32) -> Acc {
  let nq = tile_n() / 4u;  // vec4s per staged row of b
  let abase = p.offA + bt * p.strideA;
  let tx = lid % 16u;
  let ty = lid / 16u;
  var acc = Acc(mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>());
  // This thread's share of the first K step, in registers.
  var pa0 = fetch_a(abase, row0, kb, lid, 0u);
  var pa1 = fetch_a(abase, row0, kb, lid, 1u);
  var pb0 = fetch_b(bt, col0, kb, lid, 0u);
  var pb1 = vec4<f32>();
  if (WIDE == 1u) { pb1 = fetch_b(bt, col0, kb, lid, 1u); }
  for (var k0 = kb; k0 < ke; k0 += BK) {
    workgroupBarrier();  // the previous step's reads of As / Bs are done
    stash_a(lid, 0u, pa0);
    stash_a(lid, 1u, pa1);
    stash_b(lid, 0u, pb0);
    if (WIDE == 1u) { stash_b(lid, 1u, pb1); }
    workgroupBarrier();
    let k1 = k0 + BK;
    if (k1 < ke) {  // the next step's loads, in flight during the FMAs below
      pa0 = fetch_a(abase, row0, k1, lid, 0u);
      pa1 = fetch_a(abase, row0, k1, lid, 1u);
      pb0 = fetch_b(bt, col0, k1, lid, 0u);
      if (WIDE == 1u) { pb1 = fetch_b(bt, col0, k1, lid, 1u); }
    }
    for (var kk = 0u; kk < BK; kk += 2u) {
      acc = k_step(acc, kk, ty, tx, nq);
      acc = k_step(acc, kk + 1u, ty, tx, nq);
    }
  }
  return acc;
}

// The tile of workgroup wg: (batch, first row, first column), or x = batch past the end.
fn tile_of(wg: u32) -> vec3<u32> {
  let bn = tile_n();
  let tilesN = (p.N + bn - 1u) / bn;
  let tilesM = (p.M + BM - 1u) / BM;
  return vec3<u32>(wg / (tilesN * tilesM), ((wg / tilesN) % tilesM) * BM, (wg % tilesN) * bn);
}

@compute @workgroup_size(256)
fn tiled128(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let t = tile_of(linear_wg(wid, nwg));
  let bt = t.x;
  if (bt >= p.batch) { return; }
  let acc = product(bt, t.y, t.z, 0u, p.K, lid);
  let m0 = t.y + 4u * (lid / 16u);
  let n0 = t.z + 4u * (lid % 16u);
  put_rows(bt, m0, n0, acc.c0);
  put_rows(bt, m0 + 64u, n0, acc.c1);
  if (WIDE == 1u) {
    put_rows(bt, m0, n0 + 64u, acc.c2);
    put_rows(bt, m0 + 64u, n0 + 64u, acc.c3);
  }
}

// ---------------------------------------------------------------------------------------------
// Split K (tiled128_split, then splitk_sum): for products with too few tiles to fill the GPU
// (512×4096 in 128×128 tiles: 128 workgroups on 132 SMs), KSPLIT workgroups share each tile,
// split s taking K steps [s·KC, (s+1)·KC) (KC = BK·ceil(K / (BK·KSPLIT))), and write their f32
// sums unrounded to part:[KSPLIT, batch, M, LDP] (LDP = N rounded up to 4). splitk_sum adds the
// KSPLIT partials of each output in split order, then the shared epilogue (bias, residual, one
// rounding to T).
override KSPLIT: u32 = 1u;
@group(0) @binding(6) var<storage, read_write> part: array<vec4<f32>>;

fn ldp() -> u32 {
  return (p.N + 3u) / 4u;  // vec4s per row of part
}

// Row m, columns n0..n0+3 (n0 % 4 = 0) of split s's partial sums.
fn put_part(s: u32, bt: u32, m: u32, n0: u32, v: vec4<f32>) {
  if (m < p.M && n0 < p.N) { part[((s * p.batch + bt) * p.M + m) * ldp() + n0 / 4u] = v; }
}

// put_rows into split s's partial sums.
fn part_rows(s: u32, bt: u32, m0: u32, n0: u32, c: mat4x4<f32>) {
  put_part(s, bt, m0, n0, c[0]);
  put_part(s, bt, m0 + 1u, n0, c[1]);
  put_part(s, bt, m0 + 2u, n0, c[2]);
  put_part(s, bt, m0 + 3u, n0, c[3]);
}

@compute @workgroup_size(256)
fn tiled128_split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
  let bn = tile_n();
  let tiles = ((p.N + bn - 1u) / bn) * ((p.M + BM - 1u) / BM) * p.batch;
  let wg = linear_wg(wid, nwg);
  let s = wg / tiles;
  if (s >= KSPLIT) { return; }
  let t = tile_of(wg % tiles);
  let bt = t.x;
  let kc = BK * ((p.K + BK * KSPLIT - 1u) / (BK * KSPLIT));
  let acc = product(bt, t.y, t.z, min(s * kc, p.K), min((s + 1u) * kc, p.K), lid);
  let m0 = t.y + 4u * (lid / 16u);
  let n0 = t.z + 4u * (lid % 16u);
  part_rows(s, bt, m0, n0, acc.c0);
  part_rows(s, bt, m0 + 64u, n0, acc.c1);
  if (WIDE == 1u) {
    part_rows(s, bt, m0, n0 + 64u, acc.c2);
    part_rows(s, bt, m0 + 64u, n0 + 64u, acc.c3);
  }
}

// One thread per 4 consecutive outputs of a row: the KSPLIT partials summed in split order (two
// requested at a time), then the epilogue.
@compute @workgroup_size(256)
fn splitk_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let i = linear_wg(wid, nwg) * 256u + lid;  // vec4 index into one split's [batch, M, LDP]
  let per = p.batch * p.M * ldp();
  if (i >= per) { return; }
  var acc = part[i] + part[per + i];  // KSPLIT >= 2
  var s = 2u;
  for (; s + 1u < KSPLIT; s += 2u) {
    let x = part[s * per + i];
    let y = part[(s + 1u) * per + i];
    acc = (acc + x) + y;
  }
  if (s < KSPLIT) { acc += part[s * per + i]; }
  let bt = i / (p.M * ldp());
  let m = (i / ldp()) % p.M;
  put4(bt, m, 4u * (i % ldp()), acc);
}
