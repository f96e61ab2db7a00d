// SiLU and SwiGLU, one thread per element, 256 per workgroup.
// T is the storage type (f32 or f16), chosen by the launcher; math is f32.
//   silu:   x:[n]                -> out:[n]   out = x * sigmoid(x)
//   swiglu: gate:[n]  up:[n]     -> out:[n]   out = silu(gate) * up
//
// sigmoid is evaluated as e/(1+e) or 1/(1+e) with e = exp(-|x|) <= 1, so no
// intermediate overflows for any finite x (x / (1 + exp(-x)) would form
// exp(88.8) = inf for x < -88.7 and rely on x / inf = -0).

struct Params {
  n: u32,  // elements
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;    // x (silu) or gate (swiglu)
@group(0) @binding(2) var<storage, read> b: array<T>;    // up (swiglu only)
@group(0) @binding(3) var<storage, read_write> out: array<T>;

override WG: u32 = 256u;

fn sigmoid(x: f32) -> f32 {
  let e = exp(-abs(x));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn silu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let x = f32(a[i]);
  out[i] = T(x * sigmoid(x));
}

@compute @workgroup_size(WG)
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let g = f32(a[i]);
  out[i] = T(g * sigmoid(g) * f32(b[i]));
}
