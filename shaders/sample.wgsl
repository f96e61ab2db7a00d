// Next-token sampling on the GPU, one workgroup per row of logits:[rows, V] (T = f32 or f16).
//
// Order as in Hugging Face: temperature, then top-k, then top-p, then one seeded draw.
// w_i = exp((x_i - m) / temperature), m = the row max. Thresholds are exact element values,
// compared through *keys*: the f32 bits mapped to a u32 that orders like the value
// (key(a) < key(b) <=> a < b, -0 folded onto +0); ties at a threshold are kept.
//
// A. One pass: m, its first index (greedy and top-k 1 return it here), and the min.
// With top-k or top-p, first the candidate path (C1-C4), else or when it does not apply the
// general path (G1-G2); then the draw.
// C1. Histogram pass: count and mass of the row in 16 buckets of d = (m - x) / temperature,
//     geometric in d (edges (2^(b/2) - 1) / 4: 0, 0.10, 0.25, 0.46, 0.75, ... 45 nats).
//     The smallest top bucket range [0, cut] that holds k elements (top-k), or else the mass
//     p * Z (top-p alone; Z = mass of the row), contains every token that can be kept.
// C2. If it holds at most CAP = 8 * WG elements: a gather pass appends them (key, index) to
//     workgroup memory (an atomic counter; order does not matter).
// C3. In workgroup memory: bitonic sort by (key desc, index asc); top-k threshold = the k-th
//     key (then its ties); top-p threshold = the first position whose running mass from the
//     top reaches p * Zk (Zk = mass of the top-k set, or Z); the kept prefix is re-sorted by
//     index.
// C4. The draw over the kept candidates in index order (below). So a typical decode step
//     (top-k <= ~1000, or a peaked distribution under top-p) reads the row 3 times.
// G1. General path (any k, any p, e.g. a flat distribution under top-p 0.95): 16-way
//     radix-style select over the key range: one pass sums the count (top-k) or the mass (top-p)
//     of the keys in 16 equal sub-ranges of the current range (per-thread bins in workgroup
//     memory, then a tree reduction; no atomics), and keeps the highest sub-range whose lower
//     edge still keeps enough: 4 bits per pass, at most 8 passes per threshold.
// G2. Draw over the row: goal = u * (kept mass), u = hash(seed, step, row) in [0, 1) (PCG; CPU
//     twin sampleUniform). Each thread owns a contiguous segment of indices; thread 0 walks the
//     segment masses in order, and the owner of the goal scans its segment: the token is the
//     first kept index whose running mass exceeds the goal (index order, as the CPU reference).
// Global passes load UNROLL elements per thread before using them (memory-latency bound with
// one workgroup per row). The candidate path lives in sample_candidates.wgsl (included).

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

override WG: u32 = 256u;     // power of two; workgroup memory ~ 76 * WG bytes
const BINS: u32 = 16u;
const PASSES: u32 = 8u;      // 32-bit keys, 4 bits per pass
const UNROLL: u32 = 8u;
const LOWEST: f32 = -3.40282346e38;
const HIGHEST: f32 = 3.40282346e38;
const NONE: u32 = 0xffffffffu;

// Radix bins and histogram (f32 bits, bins[b * WG + thread]); in the candidate path,
// candidate keys in [0, CAP) and their indices in [CAP, 2 * CAP), CAP = 8 * WG.
var<workgroup> bins: array<u32, BINS * WG>;
var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_w: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> hist_c: array<f32, BINS>;
var<workgroup> hist_m: array<f32, BINS>;
var<workgroup> s_count: atomic<u32>;
var<workgroup> s_n: u32;
var<workgroup> s_ok: u32;
var<workgroup> s_cut: u32;
var<workgroup> s_zall: f32;
var<workgroup> s_lo: u32;
var<workgroup> s_hi: u32;
var<workgroup> s_above: f32;  // weight of the keys above the current range
var<workgroup> s_owner: u32;
var<workgroup> s_before: f32;
var<workgroup> s_goal: f32;
var<workgroup> s_pos: u32;
var<workgroup> s_token: u32;

fn cap() -> u32 { return 8u * WG; }
fn bget(i: u32) -> f32 { return bitcast<f32>(bins[i]); }
fn bset(i: u32, v: f32) { bins[i] = bitcast<u32>(v); }
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

fn unkey(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

fn weight(x: f32, m: f32) -> f32 {
  return exp((x - m) * p.inv_temp);
}

// Histogram bucket of a logit: geometric in d = (m - x) / temperature.
fn bucket(x: f32, m: f32) -> u32 {
  let d = (m - x) * p.inv_temp;
  return u32(min(2.0 * log2(1.0 + 4.0 * d), 15.0));
}

// Tree reduction of the 16 per-thread columns of bins: afterwards bins[b * WG] is bin b's sum.
fn reduce_bins(lid: u32) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    for (var q = lid; q < BINS * s; q += WG) {
      let b = q / s;
      let t = q - b * s;
      bset(b * WG + t, bget(b * WG + t) + bget(b * WG + t + s));
    }
    workgroupBarrier();
  }
}

// ---- general path (G1) -----------------------------------------------------------------------

// Largest key t in [lo0, hi0] with f(t) = sum of w over keys in [t, hi0] >= goal, assuming
// f(lo0) >= goal; w = 1 (count) or weight(x, m). Exact after PASSES 16-way passes.
fn search(base: u32, m: f32, lo0: u32, hi0: u32, goal: f32, count: bool, lid: u32) -> u32 {
  if (lid == 0u) {
    s_lo = lo0;
    s_hi = hi0;
    s_above = 0.0;
  }
  for (var it = 0u; it < PASSES; it++) {
    workgroupBarrier();
    let lo = s_lo;
    let hi = s_hi;
    let span = hi - lo;
    let shift = select(0u, firstLeadingBit(span) - 3u, span >= BINS);  // (span >> shift) < 16
    for (var b = 0u; b < BINS; b++) { bins[b * WG + lid] = 0u; }
    if (lo < hi) {
      for (var j = lid; j < p.vocab; j += UNROLL * WG) {
        var xs: array<f32, UNROLL>;
        for (var u = 0u; u < UNROLL; u++) { xs[u] = ld(base, min(j + u * WG, p.vocab - 1u)); }
        for (var u = 0u; u < UNROLL; u++) {
          let k = key(xs[u]);
          if (j + u * WG < p.vocab && k >= lo && k <= hi) {
            let i = ((k - lo) >> shift) * WG + lid;
            bset(i, bget(i) + select(weight(xs[u], m), 1.0, count));
          }
        }
      }
    }
    reduce_bins(lid);
    if (lid == 0u && lo < hi) {
      // walk the sub-ranges from the top: f(edge_b) = above + bins[b] + ... + bins[nb - 1]
      var acc = s_above;
      var b = span >> shift;
      loop {
        let f = acc + bget(b * WG);
        if (f >= goal || b == 0u) { break; }
        acc = f;
        b -= 1u;
      }
      let e = lo + (b << shift);
      s_above = acc;
      s_lo = e;
      s_hi = e + min(hi - e, (1u << shift) - 1u);
    }
  }
  return workgroupUniformLoad(&s_lo);
}

// Sum of w over keys >= tau.
fn mass_from(base: u32, m: f32, tau: u32, lid: u32) -> f32 {
  var s = 0.0;
  for (var j = lid; j < p.vocab; j += UNROLL * WG) {
    var xs: array<f32, UNROLL>;
    for (var u = 0u; u < UNROLL; u++) { xs[u] = ld(base, min(j + u * WG, p.vocab - 1u)); }
    for (var u = 0u; u < UNROLL; u++) {
      if (j + u * WG < p.vocab && key(xs[u]) >= tau) { s += weight(xs[u], m); }
    }
  }
  red_w[lid] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) { red_w[lid] += red_w[lid + k]; }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&red_w[0]);
}

// #include "sample_candidates"

// ---- the row ---------------------------------------------------------------------------------

// The token of this row (every thread gets it).
fn run(row: u32, lid: u32) -> u32 {
  let v = p.vocab;
  let base = row * v;

  // A. max (first index) and min
  var bv = LOWEST;
  var bi = NONE;
  var mn = HIGHEST;
  for (var j = lid; j < v; j += UNROLL * WG) {
    var xs: array<f32, UNROLL>;
    for (var u = 0u; u < UNROLL; u++) { xs[u] = ld(base, min(j + u * WG, v - 1u)); }
    for (var u = 0u; u < UNROLL; u++) {
      let jj = j + u * WG;
      if (jj < v) {
        if (bi == NONE || xs[u] > bv) {
          bv = xs[u];
          bi = jj;
        }
        mn = min(mn, xs[u]);
      }
    }
  }
  red_v[lid] = bv;
  red_i[lid] = bi;
  red_w[lid] = mn;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) {
      let ov = red_v[lid + k];
      let oi = red_i[lid + k];
      let cv = red_v[lid];
      let ci = red_i[lid];
      if (ci == NONE || (oi != NONE && (ov > cv || (ov == cv && oi < ci)))) {
        red_v[lid] = ov;
        red_i[lid] = oi;
      }
      red_w[lid] = min(red_w[lid], red_w[lid + k]);
    }
    workgroupBarrier();
  }
  let m = red_v[0];
  let argmax = red_i[0];
  let xmin = red_w[0];
  workgroupBarrier();
  if (p.inv_temp == 0.0 || p.top_k == 1u) { return argmax; }

  var tau = key(xmin);
  let topk = p.top_k > 1u && p.top_k < v;
  if (topk || p.top_p < 1.0) {
    let token = candidates(base, m, lid, row);
    if (token != NONE) { return token; }
    // G1. thresholds by radix select
    let hi = key(m);
    if (topk) {
      tau = search(base, m, tau, hi, f32(p.top_k), true, lid);
    }
    if (p.top_p < 1.0) {
      let zk = mass_from(base, m, tau, lid);
      tau = search(base, m, tau, hi, p.top_p * zk, false, lid);
    }
  }

  // G2. draw over contiguous segments, in index order
  let seg = (v + WG - 1u) / WG;
  let j0 = min(lid * seg, v);
  let j1 = min(j0 + seg, v);
  var s = 0.0;
  for (var j = j0; j < j1; j += UNROLL) {
    var xs: array<f32, UNROLL>;
    for (var u = 0u; u < UNROLL; u++) { xs[u] = ld(base, min(j + u, j1 - 1u)); }
    for (var u = 0u; u < UNROLL; u++) {
      if (j + u < j1 && key(xs[u]) >= tau) { s += weight(xs[u], m); }
    }
  }
  red_w[lid] = s;
  workgroupBarrier();
  if (lid == 0u) {
    var total = 0.0;
    for (var t = 0u; t < WG; t++) { total += red_w[t]; }
    let goal = draw(row) * total;
    // first segment whose running mass passes the goal (else the last non-empty one)
    var acc = 0.0;
    var owner = 0u;
    var before = 0.0;
    for (var t = 0u; t < WG; t++) {
      let w = red_w[t];
      if (w > 0.0) {
        owner = t;
        before = acc;
        if (acc + w > goal) { break; }
      }
      acc += w;
    }
    s_owner = owner;
    s_before = before;
    s_goal = goal;
  }
  workgroupBarrier();
  if (lid == s_owner) {
    var acc = s_before;
    var pick = j0;
    var done = false;
    for (var j = j0; j < j1 && !done; j += UNROLL) {
      var xs: array<f32, UNROLL>;
      for (var u = 0u; u < UNROLL; u++) { xs[u] = ld(base, min(j + u, j1 - 1u)); }
      for (var u = 0u; u < UNROLL; u++) {
        if (!done && j + u < j1 && key(xs[u]) >= tau) {
          let w = weight(xs[u], m);
          if (w > 0.0) {
            acc += w;
            pick = j + u;
            done = acc > s_goal;
          }
        }
      }
    }
    s_pos = pick;
  }
  return workgroupUniformLoad(&s_pos);
}

@compute @workgroup_size(WG)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let token = run(row, lid.x);
  if (lid.x == 0u) { out[p.out_offset + row] = i32(token); }
}

// As sample, and also log[row, log_col] = token (a token log read back every N steps).
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
