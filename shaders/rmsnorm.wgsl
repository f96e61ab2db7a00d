// RMSNorm over the last dimension, HF/Qwen3 semantics, math in f32:
//   out = w * x * inverseSqrt(mean(x^2) + eps)
//   x:[rows, D]  w:[D]  -> out:[rows, D]
// T is the storage type of x and out, G that of the gain w (each f32 or f16).
//
// One workgroup per row (2-D grid beyond 65535 rows: row = wid.y * nwg.x + wid.x).
// Each thread sums squares over a WG-strided slice of the row, then a tree
// reduction in workgroup memory gives the row's sum; every thread then writes
// its slice. Any D works (threads past the end contribute 0). WG must be a
// power of two <= 256; the launcher picks 32..256 from D.

struct Params {
  rows: u32,  // number of rows (product of x's leading dims)
  d: u32,     // row length D
  eps: f32,   // added to mean(x^2)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> w: array<G>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

override WG: u32 = 256u;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(WG)
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }  // uniform: the whole workgroup leaves
  let base = row * p.d;

  var ss = 0.0;
  for (var i = li; i < p.d; i += WG) {
    let v = f32(x[base + i]);
    ss += v * v;
  }
  partial[li] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { partial[li] += partial[li + s]; }
    workgroupBarrier();
  }
  let r = inverseSqrt(partial[0] / f32(p.d) + p.eps);

  for (var i = li; i < p.d; i += WG) {
    out[base + i] = T(f32(w[i]) * (f32(x[base + i]) * r));
  }
}
