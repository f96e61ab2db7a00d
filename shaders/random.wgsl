// Seeded counter-based random fill: element i of a tensor gets a value that
// depends only on (seed, i), so the CPU twin (src/tensor/random.ts) can
// reproduce it bit for bit (uniform) or to f32 rounding (normal).
//   out:[n]

struct Params {
  n: u32,
  seed: u32,
  dist: u32,   // 0 uniform [lo, hi), 1 normal(mean = lo, std = hi)
  lo: f32,
  hi: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<T>;

override WG: u32 = 256u;

// PCG hash (Jarzynski & Olano 2020).
fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// Uniform in [0, 1) with 24 random bits.
fn unit(i: u32) -> f32 {
  return f32(pcg(i ^ pcg(p.seed)) >> 8u) * (1.0 / 16777216.0);
}

@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
  if (i >= p.n) { return; }
  if (p.dist == 0u) {
    out[i] = T(p.lo + (p.hi - p.lo) * unit(i));
  } else {
    let u1 = 1.0 - unit(2u * i);          // (0, 1]
    let u2 = unit(2u * i + 1u);
    let r = sqrt(-2.0 * log(u1));
    out[i] = T(p.lo + p.hi * r * cos(6.283185307179586 * u2));
  }
}
