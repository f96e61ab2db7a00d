// Backward of SiLU and SwiGLU, one thread per element, 256 per workgroup, f32 storage.
//   silu_backward:   x:[n] dy:[n]           -> dx:[n]      dx = dy * silu'(x)
//   swiglu_backward: gate:[n] up:[n] dy:[n] -> dgate:[n], dup:[n]
//                    dgate = dy * up * silu'(gate),  dup = dy * silu(gate)
// with silu(x) = x*s, silu'(x) = s * (1 + x * (1 - s)), s = sigmoid(x) evaluated through
// e = exp(-|x|) <= 1 as in the forward (nothing overflows for finite x).

struct Params {
  n: u32,  // elements
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;   // x (silu) or gate (swiglu)
@group(0) @binding(2) var<storage, read> b: array<f32>;   // up (swiglu only)
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> da: array<f32>;  // dx or dgate
@group(0) @binding(5) var<storage, read_write> db: array<f32>;  // dup (swiglu only)

override WG: u32 = 256u;

fn sigmoid(x: f32) -> f32 {
  let e = exp(-abs(x));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

fn dsilu(x: f32) -> f32 {
  let s = sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn silu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  da[i] = dy[i] * dsilu(a[i]);
}

@compute @workgroup_size(WG)
fn swiglu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let g = a[i];
  let g_dy = dy[i];
  da[i] = g_dy * b[i] * dsilu(g);
  db[i] = g_dy * g * sigmoid(g);
}
