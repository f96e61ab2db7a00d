// Optimizer kernels (f32): global gradient norm, clipping, and the torch.optim.AdamW update.
// Large tensors are processed in windows (each bound window <= the binding limit, starting at a
// multiple of BLOCK elements); n is the window's element count.
//   g:[n] gradient window   partials:[P]   norm:[1]   prm, m, v:[n] windows of the same layout
// Entry points:
//   sumsq_partial  workgroup k of the window: partials[base + k] = sum of g[i]^2 over its BLOCK
//                  elements (fixed-order tree: deterministic)
//   norm_total     one workgroup: norm[0] = sqrt(sum_k partials[k]), k < n
//   clip           g[i] *= min(1, max_norm / (norm[0] + 1e-6))  (torch clip_grad_norm_)
//   adamw          prm *= decay; m = lerp(m, g, w1); v = v * beta2 + (1 - beta2) g^2;
//                  prm += neg_step * m / (sqrt(v) / bc2_sqrt + eps)   (torch's AdamW, foreach)

struct Params {
  n: u32,           // elements in this window (norm_total: partials)
  base: u32,        // sumsq_partial: index of the window's first partial
  max_norm: f32,    // clip
  decay: f32,       // adamw: 1 - lr * weight_decay
  w1: f32,          // adamw: 1 - beta1 (the lerp weight)
  beta2: f32,       // adamw
  one_minus_beta2: f32,
  bc2_sqrt: f32,    // adamw: sqrt(1 - beta2^step)
  eps: f32,         // adamw
  neg_step: f32,    // adamw: -lr / (1 - beta1^step)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> norm: array<f32>;
@group(0) @binding(4) var<storage, read_write> prm: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;

override WG: u32 = 256u;
const PER_THREAD: u32 = 16u;  // BLOCK = WG * PER_THREAD elements per workgroup (sumsq_partial)

var<workgroup> red: array<f32, WG>;

fn linear(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.y * nwg.x + wid.x;
}

fn tree_sum(lid: u32, x: f32) -> f32 {
  red[lid] = x;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) { red[lid] += red[lid + k]; }
    workgroupBarrier();
  }
  return red[0];
}

@compute @workgroup_size(WG)
fn sumsq_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid3: vec3<u32>) {
  let k = linear(wid, nwg);
  let lid = lid3.x;
  let start = k * WG * PER_THREAD;
  var s = 0.0;
  for (var u = 0u; u < PER_THREAD; u++) {
    let i = start + u * WG + lid;
    if (i < p.n) { let x = g[i]; s += x * x; }
  }
  let total = tree_sum(lid, s);
  if (lid == 0u && start < p.n) { partials[p.base + k] = total; }
}

@compute @workgroup_size(WG)
fn norm_total(@builtin(local_invocation_id) lid3: vec3<u32>) {
  let lid = lid3.x;
  var s = 0.0;
  for (var k = lid; k < p.n; k += WG) { s += partials[k]; }
  let total = tree_sum(lid, s);
  if (lid == 0u) { norm[0] = sqrt(total); }
}

@compute @workgroup_size(WG)
fn clip(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear(wid, nwg) * WG + lid.x;
  if (i >= p.n) { return; }
  g[i] = g[i] * min(1.0, p.max_norm / (norm[0] + 1e-6));
}

@compute @workgroup_size(WG)
fn adamw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear(wid, nwg) * WG + lid.x;
  if (i >= p.n) { return; }
  let grad = g[i];
  let w = prm[i] * p.decay;
  // torch.lerp(m, g, w1): two formulas, chosen by the weight, as ATen does.
  let d = grad - m[i];
  let mi = select(grad - d * (1.0 - p.w1), m[i] + p.w1 * d, p.w1 < 0.5);
  let vi = v[i] * p.beta2 + p.one_minus_beta2 * grad * grad;
  m[i] = mi;
  v[i] = vi;
  prm[i] = w + p.neg_step * (mi / (sqrt(vi) / p.bc2_sqrt + p.eps));
}
