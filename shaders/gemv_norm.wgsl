// gemv.wgsl's RMSNorm of x (the NORM pipeline constant): the prologue (NORM = 1: the rows'
// scales, the normed words, staged in xs where they fit), the deferred norm's pieces (NORM = 2),
// and how the product reads a word of x. Included by gemv.wgsl (see its header for the modes);
// it uses gemv.wgsl's bindings, constants and workgroup arrays.

// Whether the normed rows live in xs (uniform: the same for every thread).
fn staged() -> bool {
  return NORM == 1u && XS >= MR * p.kw;
}

// Rows of partial sums in red: the MR products, and with NORM = 2 the MR sums of squares.
fn rows() -> u32 {
  if (NORM == 2u) { return 2u * MR; }
  return MR;
}

// NORM = 2: a product sum v scaled by its row's rn, from the row's sum of squares ss (the slot's
// own, `squares_at`); v itself otherwise.
fn deferred(v: f32, ss: f32) -> f32 {
  if (NORM != 2u) { return v; }
  return v * inverseSqrt(ss / f32(p.kw * EPV) + p.eps);
}

// NORM = 2: the reduced sum of squares of row r at red index t (lane 0 of a slot after
// reduce_lanes); 0 otherwise.
fn squares_at(r: u32, t: u32) -> f32 {
  if (NORM != 2u) { return 0.0; }
  return red[(MR + r) * 256u + t];
}

// Sum of squares of the EPV elements of a word.
fn sqw(a: vec4<u32>) -> f32 {
  if (EPV == 8u) {
    var s = 0.0;
    for (var i = 0u; i < 4u; i++) {
      let v = unpack2x16float(a[i]);
      s += dot(v, v);
    }
    return s;
  }
  let v = bitcast<vec4<f32>>(a);
  return dot(v, v);
}

// NORM: fills rn[r] for the MR rows of x (every thread calls it, in uniform control flow).
fn norm_prologue(tid: u32) {
  if (NORM != 1u) { return; }
  for (var r = 0u; r < MR; r++) {
    var ss = 0.0;
    for (var i = tid; i < p.kw; i += 256u) { ss += sqw(x[p.offX + r * p.kw + i]); }
    red[r * 256u + tid] = ss;
  }
  row_scales(tid, p.kw * EPV);
  if (staged()) {
    for (var j = tid; j < MR * p.kw; j += 256u) { xs[j] = xnormed(j / p.kw, j % p.kw); }
    workgroupBarrier();
  }
}

// The RMSNorm scales of the MR rows from their partial sums of squares red[r * 256 + tid]: a tree
// over the 256 threads, then rn[r] = inverseSqrt(mean + eps) over `count` elements (all threads
// call it; it starts and ends with a barrier).
fn row_scales(tid: u32, count: u32) {
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (tid < s) {
      for (var r = 0u; r < MR; r++) { red[r * 256u + tid] += red[r * 256u + tid + s]; }
    }
    workgroupBarrier();
  }
  if (tid < MR) { rn[tid] = inverseSqrt(red[tid * 256u] / f32(count) + p.eps); }
  workgroupBarrier();
}

// Word i of row r of x as the product reads it: with NORM = 1, the normed word (from xs if staged).
fn xword(r: u32, i: u32) -> vec4<u32> {
  if (NORM != 1u) { return x[p.offX + r * p.kw + i]; }
  if (staged()) { return xs[r * p.kw + i]; }
  return xnormed(r, i);
}

// NORM: word i of row r of x normed, gain * (x * rn[r]) rounded to T (the rmsnorm kernel's
// expression and rounding), repacked as a word.
fn xnormed(r: u32, i: u32) -> vec4<u32> {
  let a = x[p.offX + r * p.kw + i];
  let g = gain[i];
  let s = rn[r];
  if (EPV == 8u) {
    var o: vec4<u32>;
    for (var j = 0u; j < 4u; j++) {
      o[j] = pack2x16float(unpack2x16float(g[j]) * (unpack2x16float(a[j]) * s));
    }
    return o;
  }
  return bitcast<vec4<u32>>(bitcast<vec4<f32>>(g) * (bitcast<vec4<f32>>(a) * s));
}
