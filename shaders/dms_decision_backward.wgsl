// Backward of the DMS training decisions (SPEC §1, §3, §4), f32. The forward is
// shaders/dms_decision.wgsl (finalize_train, neuron_take, neuron_zero).
//
// decisions_backward: one thread per raw logit (b, t, hr), raw:[B, T, Hkv] -> d_raw:[B, T, Hkv].
//   z[b, h, t] = (scale·raw[b, t, hs] - offset + noise[b, hs, t]) / tau, hs = per_layer ? 0 : h
//   p = σ(z); straight-through = hard - stopgrad(p) + p      -> dz += d_st[b, h, t] · p (1 - p)
//   far_bias[b, h, t - 1] = log σ(-z[b, h, t])  (t >= 1)      -> dz -= d_fb[b, h, t - 1] · p
//   d_raw[b, t, hr] = scale / tau · Σ_{h with hs = hr} dz[b, h, t]   (per_layer: all h into 0)
// The far bias of the last key is the constant log σ(0): no gradient.
//
// neuron_take_backward: one thread per element of dq:[B, T, Hq, D] (q after q_norm): copies dq,
//   except channel D-1 of the first head of each group, which gets d_raw[b, t, h] (the forward
//   read the raw logit there and zeroed the channel, so the attention passes nothing into it).
// neuron_zero_backward: one thread per element of dq:[B, Hq, T, D] (after RoPE): copies dq with
//   channel D-1 of the first head of each group zeroed (the forward zeroed it after RoPE).

struct Params {
  b: u32,         // batch
  t: u32,         // tokens
  hq: u32,        // query heads
  hkv: u32,       // KV heads
  d: u32,         // head dim
  per_layer: u32, // alpha_per == "layer"
  scale: f32,     // alpha_scale
  offset: f32,    // initial_alpha_offset
  inv_tau: f32,   // 1 / tau
  flags: u32,     // HAS_D_FAR_BIAS | HAS_D_ST
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> raw: array<f32>;        // [B, T, Hkv]
@group(0) @binding(2) var<storage, read> noise: array<f32>;      // [B, Hkv, T]
@group(0) @binding(3) var<storage, read> d_fb: array<f32>;       // [B, Hkv, T]
@group(0) @binding(4) var<storage, read> d_st: array<f32>;       // [B, Hkv, T]
@group(0) @binding(5) var<storage, read> d_raw_in: array<f32>;   // [B, T, Hkv] (neuron_take_backward)
@group(0) @binding(6) var<storage, read> dq_in: array<f32>;      // neuron_*_backward
@group(0) @binding(7) var<storage, read_write> d_raw: array<f32>; // [B, T, Hkv]
@group(0) @binding(8) var<storage, read_write> dq_out: array<f32>;

const HAS_D_FAR_BIAS: u32 = 1u;
const HAS_D_ST: u32 = 2u;

override WG: u32 = 64u;

fn lin(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

fn sigmoid(x: f32) -> f32 {  // stable for large |x|
  let e = exp(-abs(x));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

@compute @workgroup_size(WG)
fn decisions_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = lin(wid, nwg, lid);  // (b * T + t) * Hkv + hr
  if (i >= p.b * p.t * p.hkv) { return; }
  let hr = i % p.hkv;
  let t = (i / p.hkv) % p.t;
  let b = i / (p.hkv * p.t);
  if (p.per_layer == 1u && hr != 0u) {  // per-layer: only head 0's logit is ever read
    d_raw[i] = 0.0;
    return;
  }
  let z = (raw[i] * p.scale - p.offset + noise[(b * p.hkv + hr) * p.t + t]) * p.inv_tau;
  let pr = sigmoid(z);
  let dst_dz = pr * sigmoid(-z);  // dp/dz = p (1 - p)
  var h0 = hr;
  var h1 = hr + 1u;
  if (p.per_layer == 1u) {  // head 0's z is broadcast to every KV head: sum their gradients
    h0 = 0u;
    h1 = p.hkv;
  }
  var dz = 0.0;
  for (var h = h0; h < h1; h++) {  // fixed order: deterministic
    let e = (b * p.hkv + h) * p.t + t;
    if ((p.flags & HAS_D_ST) != 0u) { dz += d_st[e] * dst_dz; }
    // far_bias[t - 1] = log σ(-z[t]); d/dz log σ(-z) = -σ(z)
    if ((p.flags & HAS_D_FAR_BIAS) != 0u && t >= 1u) { dz -= d_fb[e - 1u] * pr; }
  }
  d_raw[i] = dz * p.scale * p.inv_tau;
}

// dq:[B, T, Hq, D] -> dq with channel D-1 of head h·G set to d_raw[b, t, h].
@compute @workgroup_size(WG)
fn neuron_take_backward(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = lin(wid, nwg, lid);
  if (i >= p.b * p.t * p.hq * p.d) { return; }
  let c = i % p.d;
  let h = (i / p.d) % p.hq;
  let bt = i / (p.d * p.hq);
  let g = p.hq / p.hkv;
  var x = dq_in[i];
  if (c == p.d - 1u && h % g == 0u) { x = d_raw_in[bt * p.hkv + h / g]; }
  dq_out[i] = x;
}

// dq:[B, Hq, T, D] -> dq with channel D-1 of head h·G zeroed.
@compute @workgroup_size(WG)
fn neuron_zero_backward(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = lin(wid, nwg, lid);
  if (i >= p.b * p.hq * p.t * p.d) { return; }
  let c = i % p.d;
  let h = (i / (p.d * p.t)) % p.hq;
  let g = p.hq / p.hkv;
  dq_out[i] = select(dq_in[i], 0.0, c == p.d - 1u && h % g == 0u);
}
