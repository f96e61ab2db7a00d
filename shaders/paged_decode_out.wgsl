// paged_decode.wgsl's epilogue: an empty split's (empty_split); a split's partial outputs and sums summed over its key rows (outputs), into po and pml
// or, DIRECT, normalised into out; the short sums written out (strided_sum, rows_max, head_sum). Included by paged_decode.wgsl; it uses that file's bindings, constants,
// workgroup arrays and helpers.

// A split with no key: its rows of out are 0 (DIRECT), or it weighs 0 in the merge (pml).
fn empty_split(rbase: u32, pg: u32, tid: u32) {
  if (DIRECT == 1u) {
    for (var i = tid; i < GQ * D4; i += WG) {
      store_row(rbase + i / D4, i % D4, vec4<f32>(0.0), 0.0);
    }
  } else {
    if (tid < GQ) { put_pml(rbase + tid, vec2<f32>(NEG, 0.0)); }
    if (FUSED == 1u) { merge_if_last(pg, tid); }
  }
}

// Heads g0 and g0 + 1: sum the KP key rows' partial outputs through scr -> po (and, with
// g0 = 0, the sums l of every head -> pml, with the split maxima).
fn outputs(g0: u32, tid: u32, c: u32, r: u32, a0: vec4<f32>, b0: vec4<f32>, a1: vec4<f32>,
           b1: vec4<f32>, rbase: u32, mA: vec4<f32>, mB: vec4<f32>) {
  workgroupBarrier();
  let o = r * D4 + c * NV;
  let hs = KP * D4;  // one head's partials
  scr[o] = a0;
  if (EPV == 8u) { scr[o + 1u] = b0; }
  if (g0 + 1u < GQ) {
    scr[hs + o] = a1;
    if (EPV == 8u) { scr[hs + o + 1u] = b1; }
  }
  if (g0 == 0u && c == 0u) {
    scr[2u * hs + r * GV] = ls0;
    if (GV == 2u) { scr[2u * hs + r * GV + 1u] = ls1; }
  }
  workgroupBarrier();
  // 2·D4 column sums and GQ head sums, WG threads at a time.
  for (var t = tid; t < 2u * D4 + GQ; t += WG) {
    if (t < 2u * D4) {
      let gi = t / D4;
      let col = t % D4;
      let g = g0 + gi;
      if (g < GQ) {
        let sum = strided_sum(gi * hs + col, D4, KP);
        if (DIRECT == 1u) {
          store_row(rbase + g, col, sum, head_sum(hs, g));
        } else {
          put_po((rbase + g) * D4 + col, sum);
        }
      }
    } else if (g0 == 0u && DIRECT == 0u) {
      let g = t - 2u * D4;
      let m = select(mA, mB, g >= 4u)[g % 4u];
      put_pml(rbase + g, vec2<f32>(m, head_sum(hs, g)));
    }
  }
}

// Head g's sum l over the KP rows (in scr since the g0 = 0 call of `outputs`), added in row
// order (for pml, and DIRECT's division); 0 when no key of the page is visible.
fn head_sum(hs: u32, g: u32) -> f32 {
  let b = 2u * hs + g / 4u;
  let c = g % 4u;
  var l = scr[b][c] + scr[b + GV][c];
  l += scr[b + 2u * GV][c];
  l += scr[b + 3u * GV][c];
  if (KP > 4u) {
    l += scr[b + 4u * GV][c];
    l += scr[b + 5u * GV][c];
    l += scr[b + 6u * GV][c];
    l += scr[b + 7u * GV][c];
  }
  for (var rr = 8u; rr < KP; rr++) { l += scr[b + rr * GV][c]; }
  return l;
}

// Sums and maxima over rows of scr written out where short: naga bounds every loop, so drivers
// do not unroll them and a loop's loads go out one iteration at a time (in gemv.wgsl, writing
// such sums out took 1.3-2 µs off a dispatch on the H200). n (L or KP: 4..128, a multiple of 4)
// vec4s scr[base + i * st], i < n, summed as four accumulators (i % 4) in increasing i, then
// (s0 + s1) + (s2 + s3); terms past 32 in a loop.
fn strided_sum(base: u32, st: u32, n: u32) -> vec4<f32> {
  var s = quad(base, st, 0u);
  if (n > 4u) { s += quad(base, st, 4u); }
  if (n > 8u) {
    s += quad(base, st, 8u);
    s += quad(base, st, 12u);
  }
  if (n > 16u) {
    s += quad(base, st, 16u);
    s += quad(base, st, 20u);
    s += quad(base, st, 24u);
    s += quad(base, st, 28u);
  }
  for (var i = 32u; i < n; i += 4u) { s += quad(base, st, i); }
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// scr[base + (i + j) * st], j = 0..3, as the columns of a matrix (added column by column).
fn quad(base: u32, st: u32, i: u32) -> mat4x4<f32> {
  let b = base + i * st;
  return mat4x4<f32>(scr[b], scr[b + st], scr[b + 2u * st], scr[b + 3u * st]);
}

// Step 4: the maximum over the KP rows of scr[rr * GV + gv] (a row's running maxima).
fn rows_max(gv: u32) -> vec4<f32> {
  let q = quad(gv, GV, 0u);
  var m = max(max(q[0], q[1]), max(q[2], q[3]));
  if (KP > 4u) {
    let r = quad(gv, GV, 4u);
    m = max(m, max(max(r[0], r[1]), max(r[2], r[3])));
  }
  for (var rr = 8u; rr < KP; rr++) { m = max(m, scr[gv + rr * GV]); }
  return m;
}

// DIRECT: output vec4 column col of query row `row` (= b * Hq + head, the rows of po): o / l,
// or 0 where l = 0 (no visible key), as `combine` stores it.
fn store_row(row: u32, col: u32, o: vec4<f32>, l: f32) {
  let y = select(vec4<f32>(0.0), o / l, l > 0.0);
  let dst = row * DD + 4u * col;
  out[dst] = T(y.x);
  out[dst + 1u] = T(y.y);
  out[dst + 2u] = T(y.z);
  out[dst + 3u] = T(y.w);
}
