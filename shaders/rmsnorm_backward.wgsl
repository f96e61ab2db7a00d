// Backward of RMSNorm (shaders/rmsnorm.wgsl), f32 storage and math:
//   forward  y = g * x * r,   r = inverseSqrt(mean(x^2) + eps)          x:[rows, D]  g:[D]
//   dx[i]    = r * g[i] * dy[i] - x[i] * r^3 / D * sum_j g[j] * dy[j] * x[j]
//   dgain[i] = sum_rows dy[i] * x[i] * r
//
// Entry points (2-D grids linearised as wid.y * nwg.x + wid.x):
//   rmsnorm_dx     one workgroup per row (WG a power of two <= 256, as the forward): strided
//                  partial sums of x^2 and g*dy*x, one tree reduction for both, then dx; also
//                  stores the row's r in rstd[row] for the gain gradient.
//   dgain_partial  one thread per (row block, column): partial[b, i] = sum over the BLOCK rows
//                  of block b, in row order, of dy * x * r (coalesced along i).
//   dgain_sum      one thread per column: dgain[i] = sum over blocks, in order, of partial[b, i].
// Two passes instead of one thread per column over all rows, so a per-head norm (D = 128 over
// thousands of rows) still has rows / BLOCK * D threads; the order of every sum is fixed, so
// results are deterministic (no atomics).

struct Params {
  rows: u32,    // product of x's leading dims
  d: u32,       // row length D
  eps: f32,     // added to mean(x^2)
  blocks: u32,  // ceil(rows / BLOCK)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xin: array<f32>;  // x (named xin: the loader would read `.x` as a use of x)
@group(0) @binding(2) var<storage, read> gain: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;      // [rows]
@group(0) @binding(6) var<storage, read_write> partial: array<f32>;   // [blocks, D]
@group(0) @binding(7) var<storage, read_write> dgain: array<f32>;     // [D]

override WG: u32 = 256u;
override BLOCK: u32 = 64u;  // rows per partial sum of the gain gradient

var<workgroup> ss_part: array<f32, 256>;
var<workgroup> dot_part: array<f32, 256>;

@compute @workgroup_size(WG)
fn rmsnorm_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }  // uniform: the whole workgroup leaves
  let base = row * p.d;
  var ss = 0.0;
  var dt = 0.0;
  for (var i = li; i < p.d; i += WG) {
    let v = xin[base + i];
    ss += v * v;
    dt += gain[i] * dy[base + i] * v;
  }
  ss_part[li] = ss;
  dot_part[li] = dt;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) {
      ss_part[li] += ss_part[li + s];
      dot_part[li] += dot_part[li + s];
    }
    workgroupBarrier();
  }
  let r = inverseSqrt(ss_part[0] / f32(p.d) + p.eps);
  let c = dot_part[0] * r * r * r / f32(p.d);
  for (var i = li; i < p.d; i += WG) {
    dx[base + i] = r * gain[i] * dy[base + i] - xin[base + i] * c;
  }
  if (li == 0u) { rstd[row] = r; }
}

@compute @workgroup_size(WG)
fn dgain_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
  let e = (wid.y * nwg.x + wid.x) * WG + li;
  if (e >= p.blocks * p.d) { return; }
  let b = e / p.d;
  let i = e % p.d;
  let end = min(p.rows, (b + 1u) * BLOCK);
  var acc = 0.0;
  for (var row = b * BLOCK; row < end; row++) {
    acc += dy[row * p.d + i] * xin[row * p.d + i] * rstd[row];
  }
  partial[e] = acc;
}

@compute @workgroup_size(WG)
fn dgain_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + li;
  if (i >= p.d) { return; }
  var acc = 0.0;
  for (var b = 0u; b < p.blocks; b++) { acc += partial[b * p.d + i]; }
  dgain[i] = acc;
}
