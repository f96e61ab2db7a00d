// Next-token sampling, the readable twin of sample.wgsl: one workgroup per row of
// logits:[rows, V] (T = f32 or f16), every step a plain strided pass over the row followed by a
// tree reduction in workgroup memory. Same Params, bindings, entry points and semantics as
// sample.wgsl and the CPU reference sampleReference() in src/ops/sample.ts:
//
// 1. m = the row max and its first index (greedy, or top-k 1: that index is the token).
// 2. Thresholds are exact element values, compared through keys (the f32 bits mapped to a u32
//    that orders like the value; ties at a threshold are kept):
//    top-k: the largest key t with count(key >= t) >= k, by bisection on the key (32 halvings,
//    one pass each) between key(min) and key(m);
//    top-p: the largest key t >= that with mass(key >= t) >= top_p * Zk, mass = sum of
//    w = exp((x - m) / temperature), Zk = the top-k set's mass (32 halvings again).
// 3. The draw: goal = u * (kept mass), u = hash(seed, step, row) in [0, 1). Each thread sums the
//    kept mass of a contiguous segment of indices; an inclusive scan of the segment sums finds
//    the segment that holds the goal, and its thread scans it in index order: the token is the
//    first kept index whose running mass exceeds the goal.
// Passes over the row: 1 greedy, 2 temperature only, up to 1 + 32 + 1 + 32 + 1 with top-k and
// top-p (the fast kernel: 3 on the candidate path).

struct Params {
  rows: u32,
  vocab: u32,
  out_offset: u32,      // token of row r goes to out[out_offset + r]
  log_cols: u32,        // sample_log: log is [rows, log_cols] ...
  log_col: u32,         // ... and column log_col mod log_cols receives the tokens
  top_k: u32,           // 0 or >= vocab: off; 1: greedy
  inv_temp: f32,        // 1 / temperature; 0: greedy
  top_p: f32,           // >= 1: off
  seed: u32,
  step: u32,            // added to step_buf[0] when step_from_buffer != 0
  step_from_buffer: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<T>;
@group(0) @binding(2) var<storage, read> step_buf: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<i32>;
@group(0) @binding(4) var<storage, read_write> log: array<i32>;

override WG: u32 = 256u;  // power of two
const LOWEST: f32 = -3.40282346e38;
const HIGHEST: f32 = 3.40282346e38;
const NONE: u32 = 0xffffffffu;

var<workgroup> red_f: array<f32, WG>;
var<workgroup> red_u: array<u32, WG>;
var<workgroup> s_token: u32;

fn ld(base: u32, j: u32) -> f32 { return f32(logits[base + j]); }

fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// Uniform in [0, 1) with 24 bits, depending only on (seed, step, row).
fn draw(row: u32) -> f32 {
  var step = p.step;
  if (p.step_from_buffer != 0u) { step += step_buf[0]; }
  let h = pcg(pcg(pcg(p.seed) ^ step) ^ row);
  return f32(h >> 8u) * (1.0 / 16777216.0);
}

// Order-preserving u32 of an f32: flip the sign bit of positives, all bits of negatives.
fn key(x: f32) -> u32 {
  var b = bitcast<u32>(x);
  if (b == 0x80000000u) { b = 0u; }  // -0 == +0
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn weight(x: f32, m: f32) -> f32 {
  return exp((x - m) * p.inv_temp);
}

fn sum_f(lid: u32, x: f32) -> f32 {
  red_f[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red_f[lid] += red_f[lid + s]; }
    workgroupBarrier();
  }
  let r = red_f[0];
  workgroupBarrier();
  return r;
}

fn sum_u(lid: u32, x: u32) -> u32 {
  red_u[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red_u[lid] += red_u[lid + s]; }
    workgroupBarrier();
  }
  let r = red_u[0];
  workgroupBarrier();
  return r;
}

fn min_f(lid: u32, x: f32) -> f32 {
  red_f[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red_f[lid] = min(red_f[lid], red_f[lid + s]); }
    workgroupBarrier();
  }
  let r = red_f[0];
  workgroupBarrier();
  return r;
}

// Number of logits of the row with key >= t.
fn count_from(base: u32, t: u32, lid: u32) -> u32 {
  var c = 0u;
  for (var j = lid; j < p.vocab; j += WG) { c += select(0u, 1u, key(ld(base, j)) >= t); }
  return sum_u(lid, c);
}

// Mass of the logits of the row with key >= t.
fn mass_from(base: u32, m: f32, t: u32, lid: u32) -> f32 {
  var s = 0.0;
  for (var j = lid; j < p.vocab; j += WG) {
    let x = ld(base, j);
    if (key(x) >= t) { s += weight(x, m); }
  }
  return sum_f(lid, s);
}

// The token of this row (every thread gets it).
fn run(row: u32, lid: u32) -> u32 {
  let v = p.vocab;
  let base = row * v;

  // 1. max (first index) and min
  var bv = LOWEST;
  var bi = NONE;
  var mn = HIGHEST;
  for (var j = lid; j < v; j += WG) {
    let x = ld(base, j);
    if (bi == NONE || x > bv) {
      bv = x;
      bi = j;
    }
    mn = min(mn, x);
  }
  red_f[lid] = bv;
  red_u[lid] = bi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let ov = red_f[lid + s];
      let oi = red_u[lid + s];
      let cv = red_f[lid];
      let ci = red_u[lid];
      if (ci == NONE || (oi != NONE && (ov > cv || (ov == cv && oi < ci)))) {
        red_f[lid] = ov;
        red_u[lid] = oi;
      }
    }
    workgroupBarrier();
  }
  let m = red_f[0];
  let argmax = red_u[0];
  workgroupBarrier();
  let xmin = min_f(lid, mn);
  if (p.inv_temp == 0.0 || p.top_k == 1u) { return argmax; }

  // 2. thresholds: largest key t in [lo, hi] that still keeps enough (bisection on the key)
  var tau = key(xmin);
  if (p.top_k > 1u && p.top_k < v) {
    var lo = tau;
    var hi = key(m);
    for (var it = 0u; it < 32u; it++) {
      let mid = lo + (hi - lo + 1u) / 2u;
      if (count_from(base, mid, lid) >= p.top_k) { lo = mid; } else { hi = mid - 1u; }
    }
    tau = lo;
  }
  if (p.top_p < 1.0) {
    let need = p.top_p * mass_from(base, m, tau, lid);
    var lo = tau;
    var hi = key(m);
    for (var it = 0u; it < 32u; it++) {
      let mid = lo + (hi - lo + 1u) / 2u;
      if (mass_from(base, m, mid, lid) >= need) { lo = mid; } else { hi = mid - 1u; }
    }
    tau = lo;
  }

  // 3. draw: segment masses, inclusive scan, the owner of the goal scans its segment
  let seg = (v + WG - 1u) / WG;
  let j0 = min(lid * seg, v);
  let j1 = min(j0 + seg, v);
  var mass = 0.0;
  var last = NONE;  // last kept index of this segment
  for (var j = j0; j < j1; j++) {
    let x = ld(base, j);
    if (key(x) >= tau) {
      mass += weight(x, m);
      last = j;
    }
  }
  red_f[lid] = mass;
  red_u[lid] = last;
  if (lid == 0u) { s_token = NONE; }
  workgroupBarrier();
  for (var off = 1u; off < WG; off <<= 1u) {
    var add = 0.0;
    if (lid >= off) { add = red_f[lid - off]; }
    workgroupBarrier();
    red_f[lid] += add;
    workgroupBarrier();
  }
  let goal = draw(row) * red_f[WG - 1u];
  let before = select(0.0, red_f[max(lid, 1u) - 1u], lid > 0u);
  if (goal >= before && goal < red_f[lid]) {
    var acc = before;
    var pick = last;
    for (var j = j0; j < j1; j++) {
      let x = ld(base, j);
      if (key(x) >= tau) {
        acc += weight(x, m);
        if (acc > goal) {
          pick = j;
          break;
        }
      }
    }
    s_token = pick;
  }
  workgroupBarrier();
  if (lid == 0u && s_token == NONE) {
    // rounding put the goal past the last segment: the last kept index of the row
    var t = 0u;
    for (var i = 0u; i < WG; i++) {
      if (red_u[i] != NONE) { t = red_u[i]; }
    }
    s_token = t;
  }
  return workgroupUniformLoad(&s_token);
}

@compute @workgroup_size(WG)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let token = run(row, lid.x);
  if (lid.x == 0u) { out[p.out_offset + row] = i32(token); }
}

// As sample, and also log[row, log_col] = token.
@compute @workgroup_size(WG)
fn sample_log(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let token = run(row, lid.x);
  if (lid.x == 0u) {
    out[p.out_offset + row] = i32(token);
    log[row * p.log_cols + p.log_col % p.log_cols] = i32(token);
  }
}
