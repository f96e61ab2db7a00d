// Logistic(0, 1) noise for Gumbel-sigmoid (SPEC §4) from a counter-based RNG: element i of the
// tensor of (seed, step, layer) depends only on (k1, k2, i), where the launcher derives the keys
// k1, k2 from (seed, step, layer) with the same PCG hash (src/train/noise.ts has the CPU twin).
//   out:[n] f32 (n = B*Hkv*T of one layer)
// u = (2k + 1) / 2^24 with k a 23-bit random integer: strictly inside (0, 1), and both 2k + 1
// and 2^24 - (2k + 1) are exact in f32, so n = log(2k+1) - log(2^24 - 2k - 1) = log(u) - log(1-u)
// without cancellation; |n| <= 16.64.

struct Params {
  n: u32,   // elements
  k1: u32,  // first key
  k2: u32,  // second key
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

override WG: u32 = 256u;

// PCG hash (Jarzynski & Olano 2020), as in random.wgsl.
fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

@compute @workgroup_size(WG)
fn logistic(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
  if (i >= p.n) { return; }
  let bits = pcg(pcg(i ^ p.k1) ^ p.k2);
  let odd = f32(((bits >> 9u) << 1u) | 1u);  // 2k + 1, k in [0, 2^23)
  out[i] = log(odd) - log(16777216.0 - odd);
}
