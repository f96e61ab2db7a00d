// DMS decision logits (SPEC §1, §4).
//
// Borrowed query neuron (SPEC §1a): the decision of KV head h comes from
// channel D-1 of query head h*G (first head of its group), after q_norm and
// before RoPE; that channel is zeroed before RoPE (neuron_take) and again
// after RoPE (neuron_zero), so it never enters q·k.
//
// finalize_*: raw:[B, T, Hkv] (the neuron's value, or the adapter's
// Wα·RMSNormα(x)) -> alpha = scale*raw - offset in [B, Hkv, T]; with
// per_layer = 1 head 0's logit (and, in training, head 0's noise) serves
// every KV head of the layer.

struct Params {
  b: u32,         // batch
  t: u32,         // tokens
  hq: u32,        // query heads
  hkv: u32,       // KV heads
  d: u32,         // head dim
  per_layer: u32, // alpha_per == "layer"
  scale: f32,     // alpha_scale
  offset: f32,    // initial_alpha_offset
  inv_tau: f32,   // 1 / tau (training)
  zero: u32,      // always 0 (keeps alpha's product rounded, see alpha_of)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> q: array<T>;           // neuron_take: [B, T, Hq, D]; neuron_zero: [B, Hq, T, D]
@group(0) @binding(2) var<storage, read_write> raw_out: array<f32>;   // [B, T, Hkv]
@group(0) @binding(3) var<storage, read> raw: array<f32>;             // [B, T, Hkv]
@group(0) @binding(4) var<storage, read_write> alpha_head: array<f32>; // [B, Hkv, T] infer: broadcast alpha; train: per head
@group(0) @binding(5) var<storage, read_write> decisions: array<i32>; // [B, Hkv, T] hard decisions
@group(0) @binding(6) var<storage, read> noise: array<f32>;           // [B, Hkv, T] logistic noise
@group(0) @binding(7) var<storage, read_write> z_out: array<f32>;     // [B, Hkv, T] (alpha + noise)/tau
@group(0) @binding(8) var<storage, read_write> p_out: array<f32>;     // [B, Hkv, T] sigmoid(z)
@group(0) @binding(9) var<storage, read_write> st_out: array<f32>;    // [B, Hkv, T] hard - p + p
@group(0) @binding(10) var<storage, read_write> far_bias: array<f32>; // [B, Hkv, T] log sigmoid(-z[t+1]), 0 -> log sigmoid(0) at T-1

override WG: u32 = 64u;

fn lin(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// Linear index over [B, Hkv, T] -> (b, h, t).
fn split_bht(i: u32) -> vec3<u32> {
  let bh = i / p.t;
  return vec3<u32>(bh / p.hkv, bh % p.hkv, i % p.t);
}

// One thread per (b, t, h): raw_out[b, t, h] = q[b, t, h*G, D-1]; then zero it.
@compute @workgroup_size(WG)
fn neuron_take(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = lin(wid, nwg, lid);
  if (i >= p.b * p.t * p.hkv) { return; }
  let h = i % p.hkv;
  let bt = i / p.hkv;
  let g = p.hq / p.hkv;
  let qi = (bt * p.hq + h * g) * p.d + p.d - 1u;
  raw_out[i] = f32(q[qi]);
  q[qi] = T(0.0);
}

// One thread per (b, h, t): q[b, h*G, t, D-1] = 0 (after RoPE, attention layout).
@compute @workgroup_size(WG)
fn neuron_zero(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = lin(wid, nwg, lid);
  if (i >= p.b * p.hkv * p.t) { return; }
  let bht = split_bht(i);
  let b = bht.x;
  let h = bht.y;
  let t = bht.z;
  let g = p.hq / p.hkv;
  q[((b * p.hq + h * g) * p.t + t) * p.d + p.d - 1u] = T(0.0);
}

// alpha = scale*raw - offset with the product rounded to f32 before the subtraction, as the
// reference computes it: the select on the always-false p.zero stops the driver contracting the
// two into an fma (the H200's Vulkan driver does, and a contracted alpha differs by one ulp,
// which flips the decision at alpha = 0; heads_rope.wgsl's fused decision computes it the same
// way, and test/dms/heads_rope_qk_test.ts compares the two bit for bit).
fn alpha_of(b: u32, t: u32, h: u32) -> f32 {
  return select(raw[(b * p.t + t) * p.hkv + h] * p.scale, 0.0, p.zero != 0u) - p.offset;
}

fn src_head(h: u32) -> u32 {
  return select(h, 0u, p.per_layer == 1u);
}

// Inference: hard decisions d = 1[alpha > 0] (strict), one thread per (b, h, t).
@compute @workgroup_size(WG)
fn finalize_infer(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = lin(wid, nwg, lid);
  if (i >= p.b * p.hkv * p.t) { return; }
  let bht = split_bht(i);
  let b = bht.x;
  let h = bht.y;
  let t = bht.z;
  let a = alpha_of(b, t, src_head(h));
  alpha_head[i] = a;  // after the per-layer broadcast, as the decisions use it
  decisions[i] = select(0, 1, a > 0.0);
}

fn sigmoid(x: f32) -> f32 {
  return 1.0 / (1.0 + exp(-x));
}

// log sigmoid(x), stable for large |x|.
fn log_sigmoid(x: f32) -> f32 {
  return min(x, 0.0) - log(1.0 + exp(-abs(x)));
}

fn noisy_z(b: u32, h: u32, t: u32) -> f32 {
  let hs = src_head(h);
  let a = alpha_of(b, t, hs);
  return (a + noise[(b * p.hkv + hs) * p.t + t]) * p.inv_tau;
}

// Training (SPEC §4): z = (alpha + n)/tau, p = sigmoid(z), hard = 1[p > 0.5],
// st = hard - p + p (forward value), far_bias[t] = log sigmoid(-z[t+1]) (SPEC §3).
@compute @workgroup_size(WG)
fn finalize_train(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = lin(wid, nwg, lid);
  if (i >= p.b * p.hkv * p.t) { return; }
  let bht = split_bht(i);
  let b = bht.x;
  let h = bht.y;
  let t = bht.z;
  let z = noisy_z(b, h, t);
  let prob = sigmoid(z);
  let hard = select(0.0, 1.0, prob > 0.5);
  alpha_head[i] = alpha_of(b, t, h);
  z_out[i] = z;
  p_out[i] = prob;
  decisions[i] = select(0, 1, prob > 0.5);
  st_out[i] = (hard - prob) + prob;
  var m = 0.0;
  if (t + 1u < p.t) { m = noisy_z(b, h, t + 1u); }
  far_bias[i] = log_sigmoid(-m);
}
