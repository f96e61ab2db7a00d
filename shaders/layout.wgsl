// Data movement kernels.
//   swap12: in:[A, B, C, D] -> out:[A, C, B, D]  (e.g. [B, T, H, D] <-> [B, H, T, D])

struct Params {
  a: u32,
  b: u32,
  c: u32,
  d: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn swap12(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid.x;     // index into out
  let n = p.a * p.b * p.c * p.d;
  if (i >= n) { return; }
  let dd = i % p.d;
  let r = i / p.d;
  let bb = r % p.b;            // out dim 2 is the input's dim 1
  let r2 = r / p.b;
  let cc = r2 % p.c;           // out dim 1 is the input's dim 2
  let aa = r2 / p.c;
  out[i] = x[((aa * p.b + bb) * p.c + cc) * p.d + dd];
}
