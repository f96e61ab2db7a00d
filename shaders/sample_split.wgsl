// Split-row sampling for greedy and temperature-only rows (no top-k, no top-p) of
// logits:[rows, V] (T = f32 or f16): many workgroups per row, then one per row. Same Params
// semantics, outputs and draw as sample.wgsl and the CPU reference sampleReference() in
// src/ops/sample.ts; w_i = exp((x_i - m) / temperature), m = the row max.
//
// P1. `partials`, one workgroup per (row, chunk c), chunk c = [c * CHUNK, min((c + 1) * CHUNK, V)),
//     CHUNK = PER * WG: every thread loads its PER logits once (strided: coalesced) and keeps
//     them in registers; part[row, c] = (m_c = the chunk max, i_c = its first index,
//     z_c = sum of exp((x - m_c) / temperature) over the chunk, temperature only).
// P2. `finish` / `finish_log`, one workgroup per row:
//     a. m and the token of greedy: the max over the chunks by (value desc, index asc), i.e. the
//        first index of the row's maximum.
//     b. Temperature: chunk masses w_c = z_c * exp((m_c - m) / temperature), Z = sum of w_c,
//        goal = u * Z, u = hash(seed, step, row) in [0, 1). The chunk holding the goal: each
//        thread sums a contiguous run of chunks, an inclusive scan over the threads, the first
//        thread whose prefix exceeds the goal walks its run in order (first chunk whose running
//        mass exceeds the goal).
//     c. Inside that chunk, the same with the logits (PER contiguous ones per thread): the token
//        is the first index whose running mass exceeds the goal. If float rounding leaves the
//        goal past a run or a chunk, its last index of positive weight is taken (as sample.wgsl).
// Logits of -inf weigh 0 (also when a whole chunk is -inf).

struct Params {
  rows: u32,
  vocab: u32,
  chunks: u32,          // ceil(vocab / CHUNK): part is [rows, chunks]
  out_offset: u32,      // token of row r goes to out[out_offset + r]
  log_cols: u32,        // finish_log: log is [rows, log_cols] ...
  log_col: u32,         // ... and column log_col mod log_cols receives the tokens
  inv_temp: f32,        // 1 / temperature; 0: greedy
  seed: u32,
  step: u32,            // added to step_buf[0] when step_from_buffer != 0
  step_from_buffer: u32,
}

// One chunk's summary.
struct Partial {
  m: f32,  // max of the chunk
  i: u32,  // its first index in the row
  z: f32,  // sum of exp((x - m) * inv_temp) over the chunk (0 when greedy)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<T>;
@group(0) @binding(2) var<storage, read> step_buf: array<u32>;
@group(0) @binding(3) var<storage, read_write> part: array<Partial>;
@group(0) @binding(4) var<storage, read_write> out: array<i32>;
@group(0) @binding(5) var<storage, read_write> log: array<i32>;

const WG: u32 = 256u;
const PER: u32 = 8u;       // logits per thread and chunk
const CHUNK: u32 = 2048u;  // PER * WG (src/ops/sample.ts: SPLIT_CHUNK)
const LOWEST: f32 = -3.40282346e38;
const NONE: u32 = 0xffffffffu;

var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> red_w: array<f32, WG>;
var<workgroup> s_first: atomic<u32>;
var<workgroup> s_last: atomic<u32>;
var<workgroup> s_owner: u32;
var<workgroup> s_pos: u32;
var<workgroup> s_before: f32;

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

// exp((x - m) * inv_temp); 0 for x = -inf (also when m is -inf: no NaN).
fn weight(x: f32, m: f32) -> f32 {
  return select(exp((x - m) * p.inv_temp), 0.0, x < LOWEST);
}

// Whether (v, i) comes before (bv, bi) in the order (value desc, index asc); NONE = empty.
fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
  return i != NONE && (bi == NONE || v > bv || (v == bv && i < bi));
}

// Max and first index over the workgroup: afterwards red_v[0], red_i[0].
fn reduce_argmax(v: f32, i: u32, lid: u32) {
  red_v[lid] = v;
  red_i[lid] = i;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k && better(red_v[lid + k], red_i[lid + k], red_v[lid], red_i[lid])) {
      red_v[lid] = red_v[lid + k];
      red_i[lid] = red_i[lid + k];
    }
    workgroupBarrier();
  }
}

// Inclusive prefix sums of s over the threads into red_w; returns the total.
fn scan(s: f32, lid: u32) -> f32 {
  red_w[lid] = s;
  workgroupBarrier();
  for (var k = 1u; k < WG; k <<= 1u) {
    var add = 0.0;
    if (lid >= k) { add = red_w[lid - k]; }
    workgroupBarrier();
    red_w[lid] += add;
    workgroupBarrier();
  }
  return workgroupUniformLoad(&red_w[WG - 1u]);
}

// After scan(): the first thread of positive s whose prefix exceeds goal, else the last one of
// positive s, else NONE; s_before = the prefix before it.
fn first_past(s: f32, goal: f32, lid: u32) -> u32 {
  if (lid == 0u) {
    atomicStore(&s_first, NONE);
    atomicStore(&s_last, 0u);
  }
  workgroupBarrier();
  if (s > 0.0) {
    if (red_w[lid] > goal) { atomicMin(&s_first, lid); }
    atomicMax(&s_last, lid + 1u);
  }
  workgroupBarrier();
  if (lid == 0u) {
    var t = atomicLoad(&s_first);
    if (t == NONE) { t = atomicLoad(&s_last) - 1u; }  // 0 - 1 = NONE
    s_owner = t;
    s_before = 0.0;
    if (t != NONE && t > 0u) { s_before = red_w[t - 1u]; }
  }
  return workgroupUniformLoad(&s_owner);
}

// Mass of a chunk relative to the row max m: z_c * exp((m_c - m) * inv_temp).
fn chunk_mass(q: Partial, m: f32) -> f32 {
  return select(q.z * exp((q.m - m) * p.inv_temp), 0.0, q.m < LOWEST);
}

// P1: part[row, c] for the chunk of this workgroup.
@compute @workgroup_size(WG)
fn partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid3: vec3<u32>) {
  let g = wid.y * nwg.x + wid.x;  // row * chunks + c
  if (g >= p.rows * p.chunks) { return; }
  let lid = lid3.x;
  let row = g / p.chunks;
  let c = g - row * p.chunks;
  let base = row * p.vocab;
  var xs: array<f32, PER>;
  for (var u = 0u; u < PER; u++) { xs[u] = ld(base, min(c * CHUNK + u * WG + lid, p.vocab - 1u)); }
  var bv = LOWEST;
  var bi = NONE;
  for (var u = 0u; u < PER; u++) {
    let j = c * CHUNK + u * WG + lid;  // increasing in u: '>' keeps the first index
    if (j < p.vocab && (bi == NONE || xs[u] > bv)) {
      bv = xs[u];
      bi = j;
    }
  }
  reduce_argmax(bv, bi, lid);
  let m = workgroupUniformLoad(&red_v[0]);
  let i = workgroupUniformLoad(&red_i[0]);
  var z = 0.0;
  if (p.inv_temp != 0.0) {
    var s = 0.0;
    for (var u = 0u; u < PER; u++) {
      if (c * CHUNK + u * WG + lid < p.vocab) { s += weight(xs[u], m); }
    }
    red_w[lid] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
      if (lid < k) { red_w[lid] += red_w[lid + k]; }
      workgroupBarrier();
    }
    z = red_w[0];
  }
  if (lid == 0u) { part[g] = Partial(m, i, z); }
}

// P2: the token of this row (every thread gets it).
fn finish_row(row: u32, lid: u32) -> u32 {
  let nc = p.chunks;
  let pbase = row * nc;
  // a. the first index of the row max
  var bv = LOWEST;
  var bi = NONE;
  for (var c = lid; c < nc; c += WG) {
    let q = part[pbase + c];
    if (better(q.m, q.i, bv, bi)) {
      bv = q.m;
      bi = q.i;
    }
  }
  reduce_argmax(bv, bi, lid);
  let m = workgroupUniformLoad(&red_v[0]);
  let argmax = workgroupUniformLoad(&red_i[0]);
  if (p.inv_temp == 0.0) { return argmax; }

  // b. the chunk holding the goal: thread t owns chunks [c0, c1)
  let per = (nc + WG - 1u) / WG;
  let c0 = min(lid * per, nc);
  let c1 = min(c0 + per, nc);
  var s = 0.0;
  for (var c = c0; c < c1; c++) { s += chunk_mass(part[pbase + c], m); }
  let total = scan(s, lid);
  let goal = draw(row) * total;
  let owner = first_past(s, goal, lid);
  if (owner == NONE) { return argmax; }  // no mass at all (cannot happen: w(argmax) = 1)
  if (lid == owner) {
    var acc = s_before;
    var pick = NONE;
    var before = 0.0;
    for (var c = c0; c < c1; c++) {
      let w = chunk_mass(part[pbase + c], m);
      if (w > 0.0) {
        pick = c;
        before = acc;
        acc += w;
        if (acc > goal) { break; }
      }
    }
    s_pos = pick;
    s_before = before;
  }
  let chunk = workgroupUniformLoad(&s_pos);
  let goal_in = goal - workgroupUniformLoad(&s_before);

  // c. inside the chunk: thread t owns logits [j0, j1)
  let base = row * p.vocab;
  let j0 = min(chunk * CHUNK + lid * PER, p.vocab);
  let j1 = min(j0 + PER, p.vocab);
  var xs: array<f32, PER>;
  for (var u = 0u; u < PER; u++) { xs[u] = ld(base, min(j0 + u, p.vocab - 1u)); }
  var s2 = 0.0;
  for (var u = 0u; u < PER; u++) {
    if (j0 + u < j1) { s2 += weight(xs[u], m); }
  }
  _ = scan(s2, lid);
  let owner2 = first_past(s2, goal_in, lid);
  if (owner2 == NONE) { return argmax; }  // the chunk's weights underflowed (float)
  if (lid == owner2) {
    var acc = s_before;
    var pick = j0;
    for (var u = 0u; u < PER; u++) {
      if (j0 + u < j1) {
        let w = weight(xs[u], m);
        if (w > 0.0) {
          pick = j0 + u;
          acc += w;
          if (acc > goal_in) { break; }
        }
      }
    }
    s_pos = pick;
  }
  return workgroupUniformLoad(&s_pos);
}

@compute @workgroup_size(WG)
fn finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let token = finish_row(row, lid.x);
  if (lid.x == 0u) { out[p.out_offset + row] = i32(token); }
}

// As finish, and also log[row, log_col] = token (a token log read back every N steps).
@compute @workgroup_size(WG)
fn finish_log(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let token = finish_row(row, lid.x);
  if (lid.x == 0u) {
    out[p.out_offset + row] = i32(token);
    log[row * p.log_cols + p.log_col % p.log_cols] = i32(token);
  }
}
