// Row reductions over the last dim, one workgroup per row.
//   x:[rows, n] (T = f32 or f16 storage, f32 math) -> out:[rows] (T) or idx:[rows] (i32)
// Each thread folds a strided slice of the row (j = lid, lid + WG, ...: coalesced), loading
// UNROLL elements before using them (one workgroup per row is memory-latency bound), then a
// tree reduction in workgroup memory combines the WG partials. WG must be a power of two.
// Entry points:
//   reduce_sum     out[r] = scale * sum_j x[r, j]     (scale = 1 for sum, 1/n for mean)
//   reduce_max     out[r] = max_j x[r, j]
//   reduce_argmax  idx[r] = first j with x[r, j] == max_j x[r, j] (ties -> smallest index)
// Rows beyond 65535 come as a 2-D grid: row = wid.y * nwg.x + wid.x.

struct Params {
  rows: u32,   // number of rows
  n: u32,      // row length (last dim)
  scale: f32,  // reduce_sum: factor applied to the sum
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<storage, read_write> idx: array<i32>;

override WG: u32 = 256u;
const UNROLL: u32 = 8u;

const LOWEST: f32 = -3.40282346e38;  // no -inf literal in WGSL
const NONE: u32 = 0xffffffffu;      // "no index yet"

var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.y * nwg.x + wid.x;
}

// UNROLL elements of this thread's slice from j on (clamped to the row; callers skip the rest).
fn load(base: u32, j: u32) -> array<f32, UNROLL> {
  var xs: array<f32, UNROLL>;
  for (var u = 0u; u < UNROLL; u++) { xs[u] = f32(x[base + min(j + u * WG, p.n - 1u)]); }
  return xs;
}

@compute @workgroup_size(WG)
fn reduce_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid3: vec3<u32>) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  let lid = lid3.x;
  let base = row * p.n;
  var s = 0.0;
  for (var j = lid; j < p.n; j += UNROLL * WG) {
    let xs = load(base, j);
    for (var u = 0u; u < UNROLL; u++) {
      if (j + u * WG < p.n) { s += xs[u]; }
    }
  }
  red_v[lid] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) { red_v[lid] += red_v[lid + k]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[row] = T(red_v[0] * p.scale); }
}

@compute @workgroup_size(WG)
fn reduce_max(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid3: vec3<u32>) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  let lid = lid3.x;
  let base = row * p.n;
  var m = LOWEST;
  for (var j = lid; j < p.n; j += UNROLL * WG) {
    let xs = load(base, j);
    for (var u = 0u; u < UNROLL; u++) {
      if (j + u * WG < p.n) { m = max(m, xs[u]); }
    }
  }
  red_v[lid] = m;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) { red_v[lid] = max(red_v[lid], red_v[lid + k]); }
    workgroupBarrier();
  }
  if (lid == 0u) { out[row] = T(red_v[0]); }
}

// (value, index) pairs: a beats b when its value is larger, or equal with a smaller index.
// NONE marks "no element" (a thread with no j < n), which loses to any element.
fn better(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
  return bi == NONE || (ai != NONE && (av > bv || (av == bv && ai < bi)));
}

@compute @workgroup_size(WG)
fn reduce_argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid3: vec3<u32>) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  let lid = lid3.x;
  let base = row * p.n;
  var bv = LOWEST;
  var bi = NONE;
  // j increases, so a strict '>' keeps the first index of this thread's maximum
  for (var j = lid; j < p.n; j += UNROLL * WG) {
    let xs = load(base, j);
    for (var u = 0u; u < UNROLL; u++) {
      let jj = j + u * WG;
      if (jj < p.n && (bi == NONE || xs[u] > bv)) {
        bv = xs[u];
        bi = jj;
      }
    }
  }
  red_v[lid] = bv;
  red_i[lid] = bi;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k && better(red_v[lid + k], red_i[lid + k], red_v[lid], red_i[lid])) {
      red_v[lid] = red_v[lid + k];
      red_i[lid] = red_i[lid + k];
    }
    workgroupBarrier();
  }
  if (lid == 0u) { idx[row] = i32(red_i[0]); }
}
