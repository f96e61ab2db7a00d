// Elementwise binary ops with suffix broadcasting, and scale.
// T is the storage type (f32 or f16), chosen by the launcher; math is f32.
//   a:[n]  b:[m] with n % m == 0 (b repeats over the leading dims)  -> out:[n]

struct Params {
  n: u32,      // elements of a and out
  m: u32,      // elements of b
  alpha: f32,  // scale factor (scale entry point)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

override WG: u32 = 256u;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  out[i] = T(f32(a[i]) + f32(b[i % p.m]));
}

@compute @workgroup_size(WG)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  out[i] = T(f32(a[i]) * f32(b[i % p.m]));
}

// out = alpha * a + b  (b may be broadcast; axpy-style fused residual add)
@compute @workgroup_size(WG)
fn axpy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  out[i] = T(p.alpha * f32(a[i]) + f32(b[i % p.m]));
}

@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  out[i] = T(p.alpha * f32(a[i]));
}
