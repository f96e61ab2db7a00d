// Backward of dense causal GQA attention with the DMS training soft mask (SPEC §3), f32.
//
//   q:[B, Hq, T, D]  k, v:[B, Hkv, S, D]  out, dout:[B, Hq, T, D]  lse:[B, Hq, T]
//   far_bias:[B, Hkv, S]  ->  dq:[B, Hq, T, D]  dk, dv:[B, Hkv, S, D]  dfb:[B, Hkv, S]
//
// The forward (shaders/attention.wgsl) scores key i for the query at position qpos as
// s = scale·q·k (+ far_bias[i] when qpos - i > window), keys with i > qpos or a masked
// far_bias sentinel are invisible, P = exp(s - lse). FlashAttention-2 backward:
//   Δ = rowsum(dout ∘ out)                 (pass `delta`)
//   dP = dout·v,  dS = P ∘ (dP - Δ)
//   dq = scale · Σ_i dS k_i                (one row's keys: `naive_dq` / `flash_dq`)
//   dk = scale · Σ_rows dS q,  dv = Σ_rows P dout,  dfb[i] = Σ_{rows with qpos - i > W} dS
//                                          (one key's rows: `naive_dkv` / `flash_dkv`)
// dk, dv and dfb sum over the G query heads of the KV head and all queries in a fixed order
// inside one thread, so the result is deterministic (no atomics, no racy scatter).
//
// aux (written by `delta`, read by the others) keeps the main passes within 8 storage
// bindings: aux[2 row] = lse, aux[2 row + 1] = Δ for row = (b·Hq + h)·T + t, then
// aux[2·rows + f] = far_bias[f] (0 without far bias) for f = (b·Hkv + hkv)·S + i.
//
// Entry points (the TS launcher's module header describes them):
//   delta:     one thread per row (Δ, lse) or per key (far bias copy).
//   naive_dq:  one thread per query row, a loop over all keys.   (readable reference kernels)
//   naive_dkv: one thread per key, a loop over the G heads' queries.
//   flash_dq:  workgroup = (b, KV head, R rows t·G + g); K/V tiles of BK keys in workgroup
//              memory shared by the rows; TD threads per row split the head dim.
//   flash_dkv: workgroup = (b, KV head, BK keys); Q/dout tiles of R rows in workgroup memory
//              shared by the keys; TD threads per key split the head dim.

struct Params {
  B: u32,
  Hq: u32,
  Hkv: u32,
  G: u32,       // Hq / Hkv
  T: u32,       // queries
  S: u32,       // keys
  qoff: i32,    // absolute position of query 0
  window: i32,  // W: distances 0..W never get far terms
  scale: f32,   // score scale
  flags: u32,   // HAS_FAR_BIAS
  tiles: u32,   // flash: row tiles (dq) or key tiles (dkv) per (b, KV head)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> out: array<f32>;        // delta only
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read> lse: array<f32>;        // delta only
@group(0) @binding(7) var<storage, read> far_bias: array<f32>;   // delta only
@group(0) @binding(8) var<storage, read_write> aux: array<f32>;  // written by delta
@group(0) @binding(9) var<storage, read_write> dq: array<f32>;
@group(0) @binding(10) var<storage, read_write> dk: array<f32>;
@group(0) @binding(11) var<storage, read_write> dv: array<f32>;
@group(0) @binding(12) var<storage, read_write> dfb: array<f32>;

const NEG: f32 = -3.40282346e38;  // lowest f32, stands for -inf (no inf literals in WGSL)
const HAS_FAR_BIAS: u32 = 2u;    // the forward's flag value
const MAX_D: u32 = 256u;         // naive: private accumulator size
const MAX_DPT4: u32 = 8u;        // flash: accumulator vec4s per thread

override D: u32 = 64u;    // head dim
override WG: u32 = 64u;   // threads per workgroup (flash: R * TD = BK * TD)
override R: u32 = 8u;     // flash: rows per tile
override BK: u32 = 8u;    // flash: keys per tile
override TD: u32 = 8u;    // flash: threads per row (dq) or per key (dkv)
override D4: u32 = 16u;   // flash: ceil(D / 4)
override DPT4: u32 = 2u;  // flash: ceil(D4 / TD)

fn lin(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.y * nwg.x + wid.x;
}

fn rows_total() -> u32 {
  return p.B * p.Hq * p.T;
}

// Does key i get the far term for the query at qpos? (SPEC §3: q - i > W, with a far bias.)
fn is_far(qpos: i32, i: u32) -> bool {
  return (p.flags & HAS_FAR_BIAS) != 0u && qpos - i32(i) > p.window;
}

// The forward's masked score (attention.wgsl masked_score, training subset): NEG = invisible.
fn masked_score(b: u32, hkv: u32, qpos: i32, i: u32, qk: f32) -> f32 {
  if (i32(i) > qpos) { return NEG; }  // causal
  if (is_far(qpos, i)) {
    let fb = aux[2u * rows_total() + (b * p.Hkv + hkv) * p.S + i];
    if (fb <= NEG) { return NEG; }  // the masked sentinel
    return qk + fb;                 // soft mask + log σ(−z[i+1])
  }
  return qk;
}

// P = exp(s - lse) of a visible key, 0 for an invisible key or a row without keys.
fn prob(s: f32, l: f32) -> f32 {
  if (s <= NEG || l <= NEG) { return 0.0; }
  return exp(min(s - l, 80.0));
}

// ---------------------------------------------------------------------------------------------
// delta: aux rows (lse, Δ = Σ_d dout·out) and the far bias copy.

@compute @workgroup_size(WG)
fn delta(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = lin(wid, nwg) * WG + lid.x;
  let rows = rows_total();
  if (i < rows) {
    var acc = 0.0;
    for (var d = 0u; d < D; d++) {
      acc += dout[i * D + d] * out[i * D + d];
    }
    aux[2u * i] = lse[i];
    aux[2u * i + 1u] = acc;
  } else if (i < rows + p.B * p.Hkv * p.S) {
    let f = i - rows;
    aux[2u * rows + f] = select(0.0, far_bias[f], (p.flags & HAS_FAR_BIAS) != 0u);
  }
}

// ---------------------------------------------------------------------------------------------
// naive: readable reference kernels, one thread per row (dq) or per key (dk, dv, dfb).

fn dot_rows(a: u32, bk: u32) -> f32 {  // q[a..a+D] · k[bk..bk+D]
  var acc = 0.0;
  for (var d = 0u; d < D; d++) {
    acc += q[a + d] * k[bk + d];
  }
  return acc;
}

fn dot_dout_v(a: u32, bv: u32) -> f32 {  // dout[a..a+D] · v[bv..bv+D]
  var acc = 0.0;
  for (var d = 0u; d < D; d++) {
    acc += dout[a + d] * v[bv + d];
  }
  return acc;
}

@compute @workgroup_size(WG)
fn naive_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = lin(wid, nwg) * WG + lid.x;  // (b * Hq + h) * T + t
  if (row >= rows_total()) { return; }
  let t = row % p.T;
  let h = (row / p.T) % p.Hq;
  let b = row / (p.T * p.Hq);
  let hkv = h / p.G;
  let qpos = p.qoff + i32(t);
  let kvbase = (b * p.Hkv + hkv) * p.S * D;
  let l = aux[2u * row];
  let dl = aux[2u * row + 1u];
  var acc: array<f32, MAX_D>;
  for (var i = 0u; i < p.S; i++) {
    let s = masked_score(b, hkv, qpos, i, dot_rows(row * D, kvbase + i * D) * p.scale);
    let pr = prob(s, l);
    if (pr > 0.0) {
      let ds = pr * (dot_dout_v(row * D, kvbase + i * D) - dl);
      for (var d = 0u; d < D; d++) {
        acc[d] += ds * k[kvbase + i * D + d];
      }
    }
  }
  for (var d = 0u; d < D; d++) {
    dq[row * D + d] = acc[d] * p.scale;
  }
}

@compute @workgroup_size(WG)
fn naive_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
  let f = lin(wid, nwg) * WG + lid.x;  // (b * Hkv + hkv) * S + i
  if (f >= p.B * p.Hkv * p.S) { return; }
  let i = f % p.S;
  let hkv = (f / p.S) % p.Hkv;
  let b = f / (p.S * p.Hkv);
  var acc_k: array<f32, MAX_D>;
  var acc_v: array<f32, MAX_D>;
  var acc_f = 0.0;
  for (var g = 0u; g < p.G; g++) {  // the G query heads of this KV head, in order
    for (var t = 0u; t < p.T; t++) {
      let row = (b * p.Hq + hkv * p.G + g) * p.T + t;
      let qpos = p.qoff + i32(t);
      let s = masked_score(b, hkv, qpos, i, dot_rows(row * D, f * D) * p.scale);
      let pr = prob(s, aux[2u * row]);
      if (pr > 0.0) {
        let ds = pr * (dot_dout_v(row * D, f * D) - aux[2u * row + 1u]);
        for (var d = 0u; d < D; d++) {
          acc_v[d] += pr * dout[row * D + d];
          acc_k[d] += ds * q[row * D + d];
        }
        if (is_far(qpos, i)) { acc_f += ds; }
      }
    }
  }
  for (var d = 0u; d < D; d++) {
    dk[f * D + d] = acc_k[d] * p.scale;
    dv[f * D + d] = acc_v[d];
  }
  if ((p.flags & HAS_FAR_BIAS) != 0u) { dfb[f] = acc_f; }
}

// ---------------------------------------------------------------------------------------------
// flash: tiles in workgroup memory (vec4s, dims 4c..4c+3, zeros past D), kept small (see the
// launcher's BACKWARD_TILE_BYTES). Rows r = t·G + g of one KV head, as in the forward.

var<workgroup> qs: array<vec4<f32>, R * D4>;   // q rows of the row tile
var<workgroup> dos: array<vec4<f32>, R * D4>;  // dout rows of the row tile
var<workgroup> ks: array<vec4<f32>, BK * D4>;  // K of the key tile
var<workgroup> vs: array<vec4<f32>, BK * D4>;  // V of the key tile
var<workgroup> ps: array<f32, R * BK>;         // P[r, j] (dkv only)
var<workgroup> dss: array<f32, R * BK>;        // dS[r, j]

fn load4(which: u32, base: u32, c4: u32) -> vec4<f32> {  // 0 q, 1 dout, 2 k, 3 v
  var x = vec4<f32>();
  for (var c = 0u; c < 4u; c++) {
    let d = 4u * c4 + c;
    if (d < D) {
      switch which {
        case 0u: { x[c] = q[base + d]; }
        case 1u: { x[c] = dout[base + d]; }
        case 2u: { x[c] = k[base + d]; }
        default: { x[c] = v[base + d]; }
      }
    }
  }
  return x;
}

// Global row index (b, h, t) of tile row r of KV head hkv.
fn row_of(b: u32, hkv: u32, r: u32) -> u32 {
  return (b * p.Hq + hkv * p.G + r % p.G) * p.T + r / p.G;
}

// Loads q and dout of rows r0 .. r0 + R - 1 (zeros past `rows`).
fn load_rows(b: u32, hkv: u32, r0: u32, rows: u32, tid: u32) {
  for (var e = tid; e < R * D4; e += WG) {
    let r = r0 + e / D4;
    var x = vec4<f32>();
    var y = vec4<f32>();
    if (r < rows) {
      let base = row_of(b, hkv, r) * D;
      x = load4(0u, base, e % D4);
      y = load4(1u, base, e % D4);
    }
    qs[e] = x;
    dos[e] = y;
  }
}

// Loads K and V of keys k0 .. k0 + nk - 1 (zeros past nk).
fn load_keys(kvbase: u32, k0: u32, nk: u32, tid: u32) {
  for (var e = tid; e < BK * D4; e += WG) {
    var x = vec4<f32>();
    var y = vec4<f32>();
    if (e / D4 < nk) {
      x = load4(2u, kvbase + (k0 + e / D4) * D, e % D4);
      y = load4(3u, kvbase + (k0 + e / D4) * D, e % D4);
    }
    ks[e] = x;
    vs[e] = y;
  }
}

// P and dS of every (tile row r, tile key j) pair into ps / dss.
fn tile_grads(b: u32, hkv: u32, r0: u32, rows: u32, k0: u32, nk: u32, tid: u32) {
  for (var e = tid; e < R * BK; e += WG) {
    let r = e / BK;
    let j = e % BK;
    var pr = 0.0;
    var ds = 0.0;
    if (r0 + r < rows && j < nk) {
      let row = row_of(b, hkv, r0 + r);
      var qk = 0.0;
      var dp = 0.0;
      for (var d4 = 0u; d4 < D4; d4++) {
        qk += dot(qs[r * D4 + d4], ks[j * D4 + d4]);
        dp += dot(dos[r * D4 + d4], vs[j * D4 + d4]);
      }
      let qpos = p.qoff + i32((r0 + r) / p.G);
      pr = prob(masked_score(b, hkv, qpos, k0 + j, qk * p.scale), aux[2u * row]);
      ds = pr * (dp - aux[2u * row + 1u]);
    }
    ps[e] = pr;
    dss[e] = ds;
  }
}

@compute @workgroup_size(WG)
fn flash_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
  let tile = lin(wid, nwg);  // (b * Hkv + hkv) * tiles + rt
  if (tile >= p.B * p.Hkv * p.tiles) { return; }
  let rt = tile % p.tiles;
  let hkv = (tile / p.tiles) % p.Hkv;
  let b = tile / (p.tiles * p.Hkv);
  let rows = p.T * p.G;
  let r0 = rt * R;
  let kvbase = (b * p.Hkv + hkv) * p.S * D;
  load_rows(b, hkv, r0, rows, lid.x);
  // Keys past the tile's last row position are never visible (workgroup-uniform bound).
  let t_last = (min(r0 + R, rows) - 1u) / p.G;
  let nkeys = u32(clamp(p.qoff + i32(t_last) + 1, 0, i32(p.S)));
  let my = lid.x / TD;
  let lane = lid.x % TD;
  var acc: array<vec4<f32>, MAX_DPT4>;
  for (var k0 = 0u; k0 < nkeys; k0 += BK) {
    workgroupBarrier();  // rows loaded; the previous tile consumed
    let nk = min(BK, nkeys - k0);
    load_keys(kvbase, k0, nk, lid.x);
    workgroupBarrier();
    tile_grads(b, hkv, r0, rows, k0, nk, lid.x);
    workgroupBarrier();
    for (var j = 0u; j < nk; j++) {  // dq[row] += dS[row, j] k_j
      let ds = dss[my * BK + j];
      for (var c = 0u; c < DPT4; c++) {
        let d4 = lane + c * TD;
        if (d4 < D4) { acc[c] += ds * ks[j * D4 + d4]; }
      }
    }
  }
  let r = r0 + my;
  if (r >= rows) { return; }
  let row = row_of(b, hkv, r);
  for (var c = 0u; c < DPT4; c++) {
    let d4 = lane + c * TD;
    for (var e = 0u; e < 4u; e++) {
      let d = 4u * d4 + e;
      if (d4 < D4 && d < D) { dq[row * D + d] = acc[c][e] * p.scale; }
    }
  }
}

@compute @workgroup_size(WG)
fn flash_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
  let tile = lin(wid, nwg);  // (b * Hkv + hkv) * tiles + kt
  if (tile >= p.B * p.Hkv * p.tiles) { return; }
  let kt = tile % p.tiles;
  let hkv = (tile / p.tiles) % p.Hkv;
  let b = tile / (p.tiles * p.Hkv);
  let rows = p.T * p.G;
  let k0 = kt * BK;
  let nk = min(BK, p.S - k0);
  let kvbase = (b * p.Hkv + hkv) * p.S * D;
  load_keys(kvbase, k0, nk, lid.x);
  // Rows before the first query that sees key k0 (qpos < k0) never contribute.
  let t_first = u32(clamp(i32(k0) - p.qoff, 0, i32(p.T)));
  let my = lid.x / TD;  // this thread's key in the tile
  let lane = lid.x % TD;
  var acc_k: array<vec4<f32>, MAX_DPT4>;
  var acc_v: array<vec4<f32>, MAX_DPT4>;
  var acc_f = 0.0;
  for (var r0 = t_first * p.G; r0 < rows; r0 += R) {
    workgroupBarrier();  // keys loaded; the previous row tile consumed
    load_rows(b, hkv, r0, rows, lid.x);
    workgroupBarrier();
    tile_grads(b, hkv, r0, rows, k0, nk, lid.x);
    workgroupBarrier();
    let nr = min(R, rows - r0);
    for (var r = 0u; r < nr; r++) {  // fixed order over rows (t, g): deterministic sums
      let pr = ps[r * BK + my];
      let ds = dss[r * BK + my];
      for (var c = 0u; c < DPT4; c++) {
        let d4 = lane + c * TD;
        if (d4 < D4) {
          acc_v[c] += pr * dos[r * D4 + d4];
          acc_k[c] += ds * qs[r * D4 + d4];
        }
      }
      if (is_far(p.qoff + i32((r0 + r) / p.G), k0 + my)) { acc_f += ds; }
    }
  }
  if (my >= nk) { return; }
  let f = (b * p.Hkv + hkv) * p.S + k0 + my;
  for (var c = 0u; c < DPT4; c++) {
    let d4 = lane + c * TD;
    for (var e = 0u; e < 4u; e++) {
      let d = 4u * d4 + e;
      if (d4 < D4 && d < D) {
        dk[f * D + d] = acc_k[c][e] * p.scale;
        dv[f * D + d] = acc_v[c][e];
      }
    }
  }
  if (lane == 0u && (p.flags & HAS_FAR_BIAS) != 0u) { dfb[f] = acc_f; }
}
