// Training losses over logits (SPEC §6), f32 storage and math.
//   s, t, x:[rows, v] logits (a window of the full [N, V] tensor: element (r, j) of the chunk is
//   at off + r * v + j; global row = row0 + r)   w:[N] weights (1 counted, 0 masked)
//   targets:[N] i32   stats:[N * 4 + 4]   g: gradient window, same layout as the logits
// Entry points:
//   kl_rows    one workgroup per row: stats[4R] = lse(s), stats[4R+1] = lse(t),
//              stats[4R+2] = KL_R = sum_j p_s (log p_s - log p_t), streamed over the row with an
//              online logsumexp (the row is never materialised as probabilities)
//   ce_rows    one workgroup per row: stats[4R] = lse(x), stats[4R+2] = lse(x) - x[target]
//   total      one workgroup: loss[0] = sum_R w_R stats[4R+2] / max(sum_R w_R, 1) (a fixed-order
//              tree reduction: deterministic); stats[4N] = 1 / max(sum_R w_R, 1)
//   kl_grad    one thread per element: g = p_s ((log p_s - log p_t) - KL_R) w_R / count
//   ce_grad    one thread per element: g = (p - 1[j = target]) w_R / count
// Compression loss (SPEC §6), per layer l an ST tensor s:[B, Hkv*T] (rows = B, v = Hkv*T):
//   cr_partial one workgroup per b: stats[l * B + b] = sum_i s[b, i]           (layer = l)
//   cr_total   one workgroup: frac[b] = sum_l stats[l * B + b] / (L v) (n = L layers);
//              loss[0] = mean_b max(0, alpha - frac[b]);
//              coef[b] = -1 / (B L v) where alpha - frac[b] >= 0 (torch clamp's gradient), else 0
//   cr_grad    one thread per element: g[b, i] = coef[b]

struct Params {
  rows: u32,  // rows in this chunk (elementwise entries: elements = rows * v)
  v: u32,     // vocabulary size (row length)
  row0: u32,  // global index of the chunk's first row
  off: u32,   // element offset of the chunk's first row inside the bound window
  n: u32,     // total rows N (total); layers L (cr_total)
  layer: u32, // layer index (cr_partial)
  alpha: f32, // target closed fraction alpha* (cr_total)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read> t: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> targets: array<i32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> loss: array<f32>;
@group(0) @binding(7) var<storage, read_write> g: array<f32>;
@group(0) @binding(8) var<storage, read_write> frac: array<f32>;
@group(0) @binding(9) var<storage, read_write> coef: array<f32>;

override WG: u32 = 256u;
const LOWEST: f32 = -3.40282346e38;  // no -inf literal in WGSL

var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;

fn linear(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.y * nwg.x + wid.x;
}

// Combines (m1, s1) and (m2, s2), each a running max and sum of exp(x - max).
fn lse_merge(m1: f32, s1: f32, m2: f32, s2: f32) -> vec2<f32> {
  let m = max(m1, m2);
  return vec2<f32>(m, s1 * exp(m1 - m) + s2 * exp(m2 - m));
}

// Tree-combines every thread's (m, s) into red_m[0], red_s[0]; returns the row's logsumexp.
fn lse_reduce(lid: u32, m: f32, sum: f32) -> f32 {
  red_m[lid] = m;
  red_s[lid] = sum;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) {
      let r = lse_merge(red_m[lid], red_s[lid], red_m[lid + k], red_s[lid + k]);
      red_m[lid] = r.x;
      red_s[lid] = r.y;
    }
    workgroupBarrier();
  }
  let out = red_m[0] + log(red_s[0]);
  workgroupBarrier();
  return out;
}

// Tree sum of one value per thread (result for all threads).
fn sum_reduce(lid: u32, x: f32) -> f32 {
  red_s[lid] = x;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) { red_s[lid] += red_s[lid + k]; }
    workgroupBarrier();
  }
  let out = red_s[0];
  workgroupBarrier();
  return out;
}

@compute @workgroup_size(WG)
fn kl_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid3: vec3<u32>) {
  let r = linear(wid, nwg);
  if (r >= p.rows) { return; }  // uniform per workgroup: barriers stay in uniform control flow
  let lid = lid3.x;
  let base = p.off + r * p.v;
  var ms = LOWEST; var ss = 0.0; var mt = LOWEST; var st = 0.0;
  for (var j = lid; j < p.v; j += WG) {
    let xs = s[base + j];
    let xt = t[base + j];
    let a = lse_merge(ms, ss, xs, 1.0);
    ms = a.x; ss = a.y;
    let b = lse_merge(mt, st, xt, 1.0);
    mt = b.x; st = b.y;
  }
  let lse_s = lse_reduce(lid, ms, ss);
  let lse_t = lse_reduce(lid, mt, st);
  var kl = 0.0;
  for (var j = lid; j < p.v; j += WG) {
    let ls = s[base + j] - lse_s;
    let lt = t[base + j] - lse_t;
    kl += exp(ls) * (ls - lt);
  }
  kl = sum_reduce(lid, kl);
  if (lid == 0u) {
    let R = p.row0 + r;
    stats[4u * R] = lse_s;
    stats[4u * R + 1u] = lse_t;
    stats[4u * R + 2u] = kl;
  }
}

@compute @workgroup_size(WG)
fn ce_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid3: vec3<u32>) {
  let r = linear(wid, nwg);
  if (r >= p.rows) { return; }
  let lid = lid3.x;
  let base = p.off + r * p.v;
  var m = LOWEST; var sum = 0.0;
  for (var j = lid; j < p.v; j += WG) {
    let a = lse_merge(m, sum, s[base + j], 1.0);
    m = a.x; sum = a.y;
  }
  let lse = lse_reduce(lid, m, sum);
  if (lid == 0u) {
    let R = p.row0 + r;
    let tgt = u32(clamp(targets[R], 0, i32(p.v) - 1));  // masked rows may hold any target
    stats[4u * R] = lse;
    stats[4u * R + 2u] = lse - s[base + tgt];
  }
}

@compute @workgroup_size(WG)
fn total(@builtin(local_invocation_id) lid3: vec3<u32>) {
  let lid = lid3.x;
  var num = 0.0; var den = 0.0;
  for (var R = lid; R < p.n; R += WG) {
    num += w[R] * stats[4u * R + 2u];
    den += w[R];
  }
  num = sum_reduce(lid, num);
  den = sum_reduce(lid, den);
  if (lid == 0u) {
    let inv = 1.0 / max(den, 1.0);
    loss[0] = num * inv;
    stats[4u * p.n] = inv;
  }
}

@compute @workgroup_size(WG)
fn kl_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear(wid, nwg) * WG + lid.x;
  if (i >= p.rows * p.v) { return; }
  let R = p.row0 + i / p.v;
  let ls = s[p.off + i] - stats[4u * R];
  let lt = t[p.off + i] - stats[4u * R + 1u];
  let scale = w[R] * stats[4u * p.n];
  g[p.off + i] = exp(ls) * ((ls - lt) - stats[4u * R + 2u]) * scale;
}

@compute @workgroup_size(WG)
fn ce_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear(wid, nwg) * WG + lid.x;
  if (i >= p.rows * p.v) { return; }
  let R = p.row0 + i / p.v;
  let j = i % p.v;
  let prob = exp(s[p.off + i] - stats[4u * R]);
  let hot = select(0.0, 1.0, i32(j) == targets[R]);
  g[p.off + i] = (prob - hot) * w[R] * stats[4u * p.n];
}

@compute @workgroup_size(WG)
fn cr_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid3: vec3<u32>) {
  let b = linear(wid, nwg);
  if (b >= p.rows) { return; }
  let lid = lid3.x;
  var acc = 0.0;
  for (var j = lid; j < p.v; j += WG) { acc += s[p.off + b * p.v + j]; }
  acc = sum_reduce(lid, acc);
  if (lid == 0u) { stats[p.layer * p.rows + b] = acc; }
}

@compute @workgroup_size(WG)
fn cr_total(@builtin(local_invocation_id) lid3: vec3<u32>) {
  let lid = lid3.x;
  let per_layer = 1.0 / f32(p.v);
  let grad = -1.0 / (f32(p.rows) * f32(p.n) * f32(p.v));
  var hinge = 0.0;
  for (var b = lid; b < p.rows; b += WG) {
    var f = 0.0;
    for (var l = 0u; l < p.n; l++) { f += stats[l * p.rows + b] * per_layer; }
    f = f / f32(p.n);
    frac[b] = f;
    let gap = p.alpha - f;
    hinge += max(gap, 0.0);
    coef[b] = select(0.0, grad, gap >= 0.0);
  }
  hinge = sum_reduce(lid, hinge);
  if (lid == 0u) { loss[0] = hinge / f32(p.rows); }
}

@compute @workgroup_size(WG)
fn cr_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear(wid, nwg) * WG + lid.x;
  if (i >= p.rows * p.v) { return; }
  g[p.off + i] = coef[i / p.v];
}
