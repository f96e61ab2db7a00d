// Softmax and log-softmax over the last dim, one workgroup per row.
//   x:[rows, n] (T)  mask: additive, broadcast over x's leading dims (M)  ->  out:[rows, n] (T)
// T and M are f32 or f16 storage (chosen by the launcher); math is f32.
//
// Logit of key j: s = x[j] + mask[j]. Key j is *masked* (probability exactly 0) when
// x[j] <= MASKED or mask[j] <= MASKED (-1e9, -inf, -3.4e38 ...) or, in causal mode,
// j > query_offset + t for the row's query t. Masked keys carry the sentinel LOWEST, compared
// for equality only (no inf literals, no NaN tests the compiler could drop).
//
// One pass folds (max, sum of exp) online per thread, strided over j (coalesced, UNROLL scores
// loaded before they are used: one workgroup per row is memory-latency bound); a tree
// merge of the (m, d) pairs gives the row's max and normaliser; a second pass writes
//   softmax:     exp(s - m) / d           (0 for masked keys)
//   log_softmax: s - m - log(d)           (p.lowest, the lowest finite T, for masked keys)
// A row with every key masked has m = LOWEST, d = 0, and writes zeros (lowest): never NaN.
// Rows beyond 65535 come as a 2-D grid: row = wid.y * nwg.x + wid.x.

struct Params {
  rows: u32,
  n: u32,            // row length (last dim)
  has_mask: u32,     // 0: no mask (the mask binding is a dummy)
  mask_inner: u32,   // mask stride along the last dim: 1, or 0 when broadcast
  d0: u32,           // x's leading dims, collapsed into at most 4 groups, innermost first
  d1: u32,
  d2: u32,
  d3: u32,
  s0: u32,           // mask strides of those groups (0 = broadcast)
  s1: u32,
  s2: u32,
  s3: u32,
  causal: u32,       // 1: causal mask over [..., t, n] scores
  t: u32,            // causal: query rows per block (x's second-to-last dim)
  query_offset: i32, // causal: key j is masked for query q when j > query_offset + q
  lowest: f32,       // log_softmax value of a masked key (lowest finite T)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> mask: array<M>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

override WG: u32 = 256u;
const UNROLL: u32 = 8u;

const LOWEST: f32 = -3.40282346e38;  // sentinel of a masked logit
const MASKED: f32 = -1e9;           // logits / mask values at or below this are masked

var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_d: array<f32, WG>;

// Offset of this row's mask values: the row index decomposed over the collapsed leading dims.
fn mask_offset(row: u32) -> u32 {
  var r = row;
  var off = (r % p.d0) * p.s0;
  r /= p.d0;
  off += (r % p.d1) * p.s1;
  r /= p.d1;
  off += (r % p.d2) * p.s2;
  r /= p.d2;
  off += (r % p.d3) * p.s3;
  return off;
}

// The masked logit of key j, or LOWEST when the key is masked.
fn score(base: u32, moff: u32, q: u32, j: u32) -> f32 {
  let v = f32(x[base + j]);
  var m = 0.0;
  if (p.has_mask != 0u) { m = f32(mask[moff + j * p.mask_inner]); }
  let hidden = p.causal != 0u && i32(j) > p.query_offset + i32(q);
  return select(v + m, LOWEST, v <= MASKED || m <= MASKED || hidden);
}

// The scores of keys j, j + WG, ... (UNROLL of them); keys past the row read as masked.
fn scores(base: u32, moff: u32, q: u32, j: u32) -> array<f32, UNROLL> {
  var ss: array<f32, UNROLL>;
  for (var u = 0u; u < UNROLL; u++) {
    let jj = j + u * WG;
    ss[u] = select(LOWEST, score(base, moff, q, min(jj, p.n - 1u)), jj < p.n);
  }
  return ss;
}

fn run(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, want_log: bool) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;
  let moff = mask_offset(row);
  let q = row % max(p.t, 1u);

  // online (max, sum of exp) over this thread's slice
  var m = LOWEST;
  var d = 0.0;
  for (var j = lid; j < p.n; j += UNROLL * WG) {
    let ss = scores(base, moff, q, j);
    for (var u = 0u; u < UNROLL; u++) {
      let s = ss[u];
      if (s != LOWEST) {
        if (s > m) {
          d = d * exp(m - s) + 1.0;
          m = s;
        } else {
          d += exp(s - m);
        }
      }
    }
  }
  red_m[lid] = m;
  red_d[lid] = d;
  workgroupBarrier();
  // tree merge: (m1, d1) + (m2, d2) = (M, d1 e^(m1-M) + d2 e^(m2-M)); LOWEST - LOWEST = 0 is fine
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) {
      let m1 = red_m[lid];
      let m2 = red_m[lid + k];
      let mm = max(m1, m2);
      red_d[lid] = red_d[lid] * exp(m1 - mm) + red_d[lid + k] * exp(m2 - mm);
      red_m[lid] = mm;
    }
    workgroupBarrier();
  }
  let gm = red_m[0];
  let gd = red_d[0];

  if (want_log) {
    let log_d = log(gd);
    for (var j = lid; j < p.n; j += UNROLL * WG) {
      let ss = scores(base, moff, q, j);
      for (var u = 0u; u < UNROLL; u++) {
        let s = ss[u];
        if (j + u * WG < p.n) {
          out[base + j + u * WG] = T(select(max((s - gm) - log_d, p.lowest), p.lowest, s == LOWEST));
        }
      }
    }
  } else {
    for (var j = lid; j < p.n; j += UNROLL * WG) {
      let ss = scores(base, moff, q, j);
      for (var u = 0u; u < UNROLL; u++) {
        let s = ss[u];
        if (j + u * WG < p.n) {
          out[base + j + u * WG] = T(select(exp(s - gm) / gd, 0.0, s == LOWEST));
        }
      }
    }
  }
}

@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  run(wid, nwg, lid.x, false);
}

@compute @workgroup_size(WG)
fn log_softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
  run(wid, nwg, lid.x, true);
}
