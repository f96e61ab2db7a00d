// Next-token sampling on the GPU, one workgroup per row of logits:[B, V].
//
// Order as in Hugging Face: temperature, then top-k, then top-p, then a draw.
// 1. m = max logit (tree reduction); greedy (temperature 0) takes the first
//    index of the maximum, like torch.argmax.
// 2. x_i = (l_i - m) / temperature.
// 3. top-k: the threshold tk = the k-th largest x, found by bisection on the
//    value (count of x >= mid), 40 halvings of [min, 0]; ties at the threshold
//    are kept (HF keeps logits >= the k-th value).
// 4. top-p: the largest threshold tp >= tk whose kept mass sum(e^x, x >= tp)
//    is still >= p * Z (Z = mass above tk), by bisection again.
// 5. u = hash(seed, step, row) in [0, 1); goal = u * mass; each thread owns a
//    contiguous segment of indices, segment sums are prefix-summed in
//    workgroup memory, and the thread whose segment holds the goal scans it.
// The token goes to out[row] (the next step's input) and log[row, col].

struct Params {
  v: u32,          // vocabulary (row length)
  log_cols: u32,   // columns of log
  log_col: u32,    // column written this step
  top_k: u32,      // 0 = off
  temperature: f32,// 0 = greedy
  top_p: f32,      // 1 = off
  seed: u32,
  step: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<i32>;
@group(0) @binding(3) var<storage, read_write> log: array<i32>;

const WG: u32 = 256u;
const NEG: f32 = -3.4028235e38;

var<workgroup> red_f: array<f32, 256>;
var<workgroup> red_u: array<u32, 256>;
var<workgroup> chosen: atomic<u32>;

fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// Uniform in [0, 1) with 24 bits, depending only on (seed, step, row).
fn draw(row: u32) -> f32 {
  let h = pcg(pcg(pcg(p.seed) ^ p.step) ^ row);
  return f32(h >> 8u) * (1.0 / 16777216.0);
}

fn reduce_max(lid: u32, x: f32) -> f32 {
  red_f[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { red_f[lid] = max(red_f[lid], red_f[lid + s]); }
    workgroupBarrier();
  }
  let r = red_f[0];
  workgroupBarrier();
  return r;
}

fn reduce_sum(lid: u32, x: f32) -> f32 {
  red_f[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { red_f[lid] = red_f[lid] + red_f[lid + s]; }
    workgroupBarrier();
  }
  let r = red_f[0];
  workgroupBarrier();
  return r;
}

fn reduce_count(lid: u32, x: u32) -> u32 {
  red_u[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { red_u[lid] = red_u[lid] + red_u[lid + s]; }
    workgroupBarrier();
  }
  let r = red_u[0];
  workgroupBarrier();
  return r;
}

fn scaled(base: u32, i: u32, m: f32) -> f32 {
  return (logits[base + i] - m) / p.temperature;
}

fn emit(row: u32, token: u32) {
  out[row] = i32(token);
  log[row * p.log_cols + p.log_col] = i32(token);
}

@compute @workgroup_size(WG)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
  let row = wid.x;
  let lid = lid3.x;
  let base = row * p.v;

  // 1. max
  var m = NEG;
  for (var i = lid; i < p.v; i += WG) { m = max(m, logits[base + i]); }
  m = reduce_max(lid, m);

  if (p.temperature <= 0.0) {
    // greedy: first index of the maximum
    var first = 0xffffffffu;
    for (var i = lid; i < p.v; i += WG) {
      if (logits[base + i] == m) { first = min(first, i); }
    }
    red_u[lid] = first;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
      if (lid < s) { red_u[lid] = min(red_u[lid], red_u[lid + s]); }
      workgroupBarrier();
    }
    if (lid == 0u) { emit(row, min(red_u[0], p.v - 1u)); }
    return;
  }

  // 2. range of scaled values: [lo_all, 0]
  var mn = 0.0;
  for (var i = lid; i < p.v; i += WG) { mn = min(mn, scaled(base, i, m)); }
  mn = -reduce_max(lid, -mn);

  // 3. top-k threshold: largest t with count(x >= t) >= k
  var tk = mn;
  if (p.top_k > 0u && p.top_k < p.v) {
    var lo = mn;   // count(x >= lo) = V >= k
    var hi = 0.0;  // the max has x = 0
    // find the largest lo with count >= k; hi keeps count < k unless hi is the max itself
    for (var it = 0u; it < 40u; it++) {
      let mid = lo + (hi - lo) * 0.5;
      var c = 0u;
      for (var i = lid; i < p.v; i += WG) { c += select(0u, 1u, scaled(base, i, m) >= mid); }
      let total = reduce_count(lid, c);
      if (total >= p.top_k) { lo = mid; } else { hi = mid; }
    }
    // snap to the largest element value <= ... that keeps >= k: the smallest x >= lo
    var snap = 1.0;
    for (var i = lid; i < p.v; i += WG) {
      let x = scaled(base, i, m);
      if (x >= lo) { snap = min(snap, x); }
    }
    tk = -reduce_max(lid, -snap);
  }

  // mass above tk
  var z = 0.0;
  for (var i = lid; i < p.v; i += WG) {
    let x = scaled(base, i, m);
    if (x >= tk) { z += exp(x); }
  }
  z = reduce_sum(lid, z);

  // 4. top-p threshold: largest t >= tk with mass(x >= t) >= top_p * z
  var t = tk;
  if (p.top_p < 1.0) {
    var lo = tk;
    var hi = 0.0;
    let need = p.top_p * z;
    for (var it = 0u; it < 40u; it++) {
      let mid = lo + (hi - lo) * 0.5;
      var s = 0.0;
      for (var i = lid; i < p.v; i += WG) {
        let x = scaled(base, i, m);
        if (x >= mid) { s += exp(x); }
      }
      let total = reduce_sum(lid, s);
      if (total >= need) { lo = mid; } else { hi = mid; }
    }
    var snap = 1.0;
    for (var i = lid; i < p.v; i += WG) {
      let x = scaled(base, i, m);
      if (x >= lo) { snap = min(snap, x); }
    }
    t = -reduce_max(lid, -snap);
  }

  // 5. draw: contiguous segments, prefix sums of segment masses
  let seg = (p.v + WG - 1u) / WG;
  let s0 = lid * seg;
  let s1 = min(p.v, s0 + seg);
  var mass = 0.0;
  for (var i = s0; i < s1; i++) {
    let x = scaled(base, i, m);
    if (x >= t) { mass += exp(x); }
  }
  red_f[lid] = mass;
  if (lid == 0u) { atomicStore(&chosen, 0xffffffffu); }
  workgroupBarrier();
  // inclusive Hillis-Steele scan over 256 segment masses
  for (var off = 1u; off < WG; off = off << 1u) {
    var add = 0.0;
    if (lid >= off) { add = red_f[lid - off]; }
    workgroupBarrier();
    red_f[lid] = red_f[lid] + add;
    workgroupBarrier();
  }
  let total = red_f[WG - 1u];
  let goal = draw(row) * total;
  let before = select(0.0, red_f[lid - 1u], lid > 0u);
  if (goal >= before && goal < red_f[lid] && s0 < s1) {
    var acc = before;
    var pick = 0xffffffffu;
    var last = 0xffffffffu;
    for (var i = s0; i < s1; i++) {
      let x = scaled(base, i, m);
      if (x >= t) {
        acc += exp(x);
        last = i;
        if (acc > goal && pick == 0xffffffffu) { pick = i; }
      }
    }
    if (pick == 0xffffffffu) { pick = last; }
    atomicMin(&chosen, pick);
  }
  workgroupBarrier();
  if (lid == 0u) {
    var c = atomicLoad(&chosen);
    if (c == 0xffffffffu) {
      // rounding left the goal past the last segment: take the last kept index
      var i = p.v;
      loop {
        if (i == 0u) { c = 0u; break; }
        i -= 1u;
        if (scaled(base, i, m) >= t) { c = i; break; }
      }
    }
    emit(row, c);
  }
}
