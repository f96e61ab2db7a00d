// Dense attention (prefill / training forward): causal GQA with key padding and the DMS window
// terms of SPEC §3 (training: far keys get + log σ(−z[i+1])) and §5.1 (inference: marked far
// keys are invisible). T is the storage type (f32 or f16, chosen by the launcher); math is f32.
//
//   q:[B, Hq, T, D]  k, v:[B, Hkv, S, D]  key_mask:[B, S] i32  far_bias:[B, Hkv, S] f32
//   far_mask:[B, Hkv, S] i32  ->  out:[B, Hq, T, D]  lse:[B, Hq, T] f32
//
// Query head h reads KV head h / G (HF repeat_kv order). Query t sits at position qoff + t, key i
// at position i. A key is visible to the query at position qpos iff (see masked_score):
//   i <= qpos, key_mask[b, i] != 0, and, when qpos - i > window: far_mask[b, hkv, i] == 0 and
//   far_bias[b, hkv, i] > -3.40282346e38 (the "masked" sentinel); such far keys add far_bias.
// A row without visible keys writes zeros and lse = -3.40282346e38 (our finite "minus infinity").
//
// Entry points (the TS launcher's module header describes them):
//   naive: one thread per query row, two passes over all keys (max, then exp-sum and P·V).
//   flash: one workgroup per (b, KV head, tile of R rows (t, g)); the G query heads of the KV
//          head share each K/V tile in workgroup memory (vec4 tiles, kept small: on the GL
//          backend wgpu's zero-fill of workgroup memory compiles slowly); online softmax,
//          TD threads per row.

struct Params {
  B: u32,
  Hq: u32,
  Hkv: u32,
  G: u32,       // Hq / Hkv
  T: u32,       // queries
  S: u32,       // keys
  qoff: i32,    // absolute position of query 0
  window: i32,  // W: distances 0..W never get far terms
  scale: f32,   // score scale (D^-0.5 by default)
  flags: u32,   // HAS_KEY_MASK | HAS_FAR_BIAS | HAS_FAR_MASK
  tiles: u32,   // flash: row tiles per (b, KV head) = ceil(T * G / R)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> k: array<T>;
@group(0) @binding(3) var<storage, read> v: array<T>;
@group(0) @binding(4) var<storage, read> key_mask: array<i32>;
@group(0) @binding(5) var<storage, read> far_bias: array<f32>;
@group(0) @binding(6) var<storage, read> far_mask: array<i32>;
@group(0) @binding(7) var<storage, read_write> out: array<T>;
@group(0) @binding(8) var<storage, read_write> lse: array<f32>;

const NEG: f32 = -3.40282346e38;  // lowest f32, stands for -inf (no inf literals in WGSL)
const HAS_KEY_MASK: u32 = 1u;
const HAS_FAR_BIAS: u32 = 2u;
const HAS_FAR_MASK: u32 = 4u;
const MAX_D: u32 = 256u;  // naive: private accumulator size
const MAX_DPT4: u32 = 8u; // flash: output vec4s per thread (launcher keeps ceil(D4 / TD) <= 8)

override D: u32 = 64u;    // head dim
override WG: u32 = 64u;   // naive: threads per workgroup; flash: R * TD
override R: u32 = 16u;    // flash: rows (t, g) per workgroup
override BK: u32 = 16u;   // flash: keys per tile, a multiple of 4
override TD: u32 = 4u;    // flash: threads per row; thread `lane` owns dim vec4s lane, lane + TD, ...
override D4: u32 = 16u;   // flash: ceil(D / 4), vec4s per row in workgroup memory
override BK4: u32 = 4u;   // flash: BK / 4
override DPT4: u32 = 4u;  // flash: ceil(D4 / TD)

// The masked score of key i (page b, hkv) for the query at position qpos, given the scaled q·k.
// Returns NEG when the key is invisible. This function is the masking rule of both kernels.
fn masked_score(b: u32, hkv: u32, qpos: i32, i: u32, qk: f32) -> f32 {
  if (i32(i) > qpos) { return NEG; }  // causal: later keys never count (SPEC §3, §5.1)
  if ((p.flags & HAS_KEY_MASK) != 0u && key_mask[b * p.S + i] == 0) { return NEG; }  // padding
  var s = qk;
  if (qpos - i32(i) > p.window) {  // beyond the window (SPEC §3: q - i > W)
    let f = (b * p.Hkv + hkv) * p.S + i;
    if ((p.flags & HAS_FAR_MASK) != 0u && far_mask[f] != 0) { return NEG; }  // evicted (§5.1)
    if ((p.flags & HAS_FAR_BIAS) != 0u) {
      let fb = far_bias[f];
      if (fb <= NEG) { return NEG; }  // the masked sentinel (or -inf)
      s = s + fb;  // training soft mask: + log σ(−z[i+1]) (§3)
    }
  }
  return s;
}

// exp of a non-positive difference; the clamp keeps -inf (an overflowed difference) out of exp.
fn exp_neg(x: f32) -> f32 {
  return exp(max(x, -150.0));
}

// ---------------------------------------------------------------------------------------------
// naive: one thread per row (b, h, t). Pass 1 finds the max visible score, pass 2 sums
// exp(s - max) and the weighted values. Readable reference kernel; O(S·D) private work per row.

fn qk_naive(qbase: u32, kbase: u32) -> f32 {
  var acc = 0.0;
  for (var d = 0u; d < D; d++) {
    acc += f32(q[qbase + d]) * f32(k[kbase + d]);
  }
  return acc * p.scale;
}

@compute @workgroup_size(WG)
fn naive(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = (wid.y * nwg.x + wid.x) * WG + lid.x;  // row = (b * Hq + h) * T + t
  if (row >= p.B * p.Hq * p.T) { return; }
  let t = row % p.T;
  let h = (row / p.T) % p.Hq;
  let b = row / (p.T * p.Hq);
  let hkv = h / p.G;                        // HF repeat_kv: KV head of query head h
  let qpos = p.qoff + i32(t);
  let qbase = row * D;                      // q[b, h, t, :]
  let kvbase = (b * p.Hkv + hkv) * p.S * D; // k[b, hkv, 0, :]

  var m = NEG;  // pass 1: max over visible keys
  for (var i = 0u; i < p.S; i++) {
    m = max(m, masked_score(b, hkv, qpos, i, qk_naive(qbase, kvbase + i * D)));
  }

  var l = 0.0;  // pass 2: softmax denominator and numerator
  var acc: array<f32, MAX_D>;
  if (m > NEG) {
    for (var i = 0u; i < p.S; i++) {
      let s = masked_score(b, hkv, qpos, i, qk_naive(qbase, kvbase + i * D));
      if (s > NEG) {
        let w = exp_neg(s - m);
        l += w;
        for (var d = 0u; d < D; d++) {
          acc[d] += w * f32(v[kvbase + i * D + d]);
        }
      }
    }
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);  // no visible key: zeros
  for (var d = 0u; d < D; d++) {
    out[qbase + d] = T(acc[d] * inv);
  }
  lse[row] = select(NEG, m + log(l), l > 0.0);
}

// ---------------------------------------------------------------------------------------------
// flash: workgroup = (b, hkv, tile of R consecutive rows r = t * G + g of that KV head).
// Workgroup tiles hold vec4s (dims 4c..4c+3, zero-padded past D). Per key tile of BK keys:
// load K -> scores of all R rows (4 keys per work item) -> load V into the same buffer -> each
// row's TD threads update the running max m, sum l and their DPT4 output vec4s.

var<workgroup> qs: array<vec4<f32>, R * D4>;   // scaled queries of the tile's rows
var<workgroup> kv: array<vec4<f32>, BK * D4>;  // K tile, then V tile
var<workgroup> ss: array<vec4<f32>, R * BK4>;  // masked scores, keys 4j..4j+3 (NEG = invisible)

// 4 consecutive elements of x starting at `base + 4 * c4`, zeros at and past dim D.
fn load4_q(base: u32, c4: u32) -> vec4<f32> {
  var x = vec4<f32>();
  for (var c = 0u; c < 4u; c++) {
    let d = 4u * c4 + c;
    if (d < D) { x[c] = f32(q[base + d]); }
  }
  return x;
}

fn load4_k(base: u32, c4: u32) -> vec4<f32> {
  var x = vec4<f32>();
  for (var c = 0u; c < 4u; c++) {
    let d = 4u * c4 + c;
    if (d < D) { x[c] = f32(k[base + d]); }
  }
  return x;
}

fn load4_v(base: u32, c4: u32) -> vec4<f32> {
  var x = vec4<f32>();
  for (var c = 0u; c < 4u; c++) {
    let d = 4u * c4 + c;
    if (d < D) { x[c] = f32(v[base + d]); }
  }
  return x;
}

@compute @workgroup_size(WG)
fn flash(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
  let tile = wid.y * nwg.x + wid.x;  // ((b * Hkv + hkv) * tiles + rt)
  if (tile >= p.B * p.Hkv * p.tiles) { return; }
  let rt = tile % p.tiles;
  let hkv = (tile / p.tiles) % p.Hkv;
  let b = tile / (p.tiles * p.Hkv);
  let rows = p.T * p.G;                     // rows of this KV head, r = t * G + g
  let r0 = rt * R;
  let kvbase = (b * p.Hkv + hkv) * p.S * D; // k[b, hkv, 0, :]

  // Scaled queries of rows r0 .. r0 + R - 1 (zeros past the end).
  for (var e = lid.x; e < R * D4; e += WG) {
    let r = r0 + e / D4;
    var x = vec4<f32>();
    if (r < rows) {
      let h = hkv * p.G + r % p.G;
      x = load4_q(((b * p.Hq + h) * p.T + r / p.G) * D, e % D4) * p.scale;
    }
    qs[e] = x;
  }

  // Keys past the last row's position are never visible: stop there (workgroup-uniform).
  let t_last = (min(r0 + R, rows) - 1u) / p.G;
  let nkeys = u32(clamp(p.qoff + i32(t_last) + 1, 0, i32(p.S)));

  let my = lid.x / TD;    // this thread's row in the tile
  let lane = lid.x % TD;  // and its lane: dim vec4s lane + c * TD
  var m = NEG;
  var l = 0.0;
  var acc: array<vec4<f32>, MAX_DPT4>;

  for (var k0 = 0u; k0 < nkeys; k0 += BK) {
    workgroupBarrier();  // qs ready; previous tile's kv and ss consumed
    let nk = min(BK, nkeys - k0);
    for (var e = lid.x; e < BK * D4; e += WG) {
      var x = vec4<f32>();
      if (e / D4 < nk) { x = load4_k(kvbase + (k0 + e / D4) * D, e % D4); }
      kv[e] = x;
    }
    workgroupBarrier();
    for (var e = lid.x; e < R * BK4; e += WG) {
      let r = e / BK4;
      let j0 = (e % BK4) * 4u;
      var s = vec4<f32>(NEG);
      if (r0 + r < rows) {
        let qpos = p.qoff + i32((r0 + r) / p.G);
        for (var c = 0u; c < 4u; c++) {
          let j = j0 + c;
          if (j < nk) {
            var qk = 0.0;
            for (var d4 = 0u; d4 < D4; d4++) {
              qk += dot(qs[r * D4 + d4], kv[j * D4 + d4]);
            }
            s[c] = masked_score(b, hkv, qpos, k0 + j, qk);
          }
        }
      }
      ss[e] = s;
    }
    workgroupBarrier();
    for (var e = lid.x; e < BK * D4; e += WG) {
      var x = vec4<f32>();
      if (e / D4 < nk) { x = load4_v(kvbase + (k0 + e / D4) * D, e % D4); }
      kv[e] = x;
    }
    workgroupBarrier();
    // Online softmax update of this thread's row (every lane of the row computes the same m, l).
    var mt = NEG;
    for (var j4 = 0u; j4 < BK4; j4++) {
      let s4 = ss[my * BK4 + j4];
      mt = max(mt, max(max(s4.x, s4.y), max(s4.z, s4.w)));
    }
    if (mt > NEG) {
      let m_new = max(m, mt);
      let corr = select(0.0, exp_neg(m - m_new), m > NEG);
      l *= corr;
      for (var c = 0u; c < DPT4; c++) {
        acc[c] *= corr;
      }
      for (var j = 0u; j < nk; j++) {
        let s = ss[my * BK4 + j / 4u][j % 4u];
        if (s > NEG) {
          let w = exp_neg(s - m_new);
          l += w;
          for (var c = 0u; c < DPT4; c++) {
            let d4 = lane + c * TD;
            if (d4 < D4) { acc[c] += w * kv[j * D4 + d4]; }
          }
        }
      }
      m = m_new;
    }
  }

  let r = r0 + my;
  if (r >= rows) { return; }
  let row = (b * p.Hq + hkv * p.G + r % p.G) * p.T + r / p.G;  // (b, h, t)
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var c = 0u; c < DPT4; c++) {
    let d4 = lane + c * TD;
    for (var e = 0u; e < 4u; e++) {
      let d = 4u * d4 + e;
      if (d4 < D4 && d < D) { out[row * D + d] = T(acc[c][e] * inv); }
    }
  }
  if (lane == 0u) { lse[row] = select(NEG, m + log(l), l > 0.0); }
}
