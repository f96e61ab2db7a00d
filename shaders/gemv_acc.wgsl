// gemv.wgsl's accumulators and reductions: the MR rows' sums in named registers (Acc16), one
// weight word into them (acc_word; NORM = 2: acc_word_deferred), and the sum over a slot's 64
// lanes in workgroup memory (reduce_lanes). Included by gemv.wgsl; it uses gemv.wgsl's bindings,
// constants and workgroup arrays, and gemv_norm.wgsl's xword.

// Accumulators of the MR (<= 16) rows in four named vec4 registers (rows 0..3, 4..7, ...): an
// array<f32, 8> indexed in the row loops lived in local memory (naga bounds every loop, so the
// driver did not unroll them) and made M = 8 five times slower than M = 1 per weight byte.
// NORM = 2: s holds the sums of squares of rows 0..3 of x.
struct Acc16 {
  a: vec4<f32>,
  b: vec4<f32>,
  c: vec4<f32>,
  d: vec4<f32>,
  s: vec4<f32>,
}

fn acc0() -> Acc16 {
  let z = vec4<f32>(0.0);
  return Acc16(z, z, z, z, z);
}

fn lo4(x: vec4<u32>) -> vec4<f32> {
  if (EPV == 8u) { return vec4<f32>(unpack2x16float(x.x), unpack2x16float(x.y)); }
  return bitcast<vec4<f32>>(x);
}

fn hi4(x: vec4<u32>) -> vec4<f32> {
  if (EPV == 8u) { return vec4<f32>(unpack2x16float(x.z), unpack2x16float(x.w)); }
  return vec4<f32>(0.0);
}

// Row r of x (word i) dotted with a weight word unpacked once into wl, wh.
fn xdot(wl: vec4<f32>, wh: vec4<f32>, r: u32, i: u32) -> f32 {
  let xv = xword(r, i);
  if (EPV == 8u) { return dot(wl, lo4(xv)) + dot(wh, hi4(xv)); }
  return dot(wl, lo4(xv));
}

// NORM = 2, row r (< 4): (x·(w ⊙ g), x·x) over word i of row r, the word of x read once.
fn dot_sq(wl: vec4<f32>, wh: vec4<f32>, r: u32, i: u32) -> vec2<f32> {
  let v = xword(r, i);
  let l = lo4(v);
  let h = hi4(v);
  return vec2<f32>(dot(wl, l) + dot(wh, h), dot(l, l) + dot(h, h));
}

// NORM = 2: acc + x[r, word i] · (wv ⊙ gain word i) and acc.s + the squares of x's word, rows
// 0..MR-1 (MR <= 4).
fn acc_word_deferred(acc: Acc16, wv: vec4<u32>, i: u32) -> Acc16 {
  let g = gain[i];
  let wl = lo4(wv) * lo4(g);
  let wh = hi4(wv) * hi4(g);
  var o = acc;
  let d0 = dot_sq(wl, wh, 0u, i);
  o.a.x += d0.x;
  o.s.x += d0.y;
  if (MR > 1u) {
    let d = dot_sq(wl, wh, 1u, i);
    o.a.y += d.x;
    o.s.y += d.y;
  }
  if (MR > 2u) {
    let d = dot_sq(wl, wh, 2u, i);
    o.a.z += d.x;
    o.s.z += d.y;
  }
  if (MR > 3u) {
    let d = dot_sq(wl, wh, 3u, i);
    o.a.w += d.x;
    o.s.w += d.y;
  }
  return o;
}

// acc + x[r, word i] · wv for each of the MR rows (constant guards: no loop, no array); NORM = 2:
// acc_word_deferred.
fn acc_word(acc: Acc16, wv: vec4<u32>, i: u32) -> Acc16 {
  if (NORM == 2u) { return acc_word_deferred(acc, wv, i); }
  let wl = lo4(wv);
  let wh = hi4(wv);
  var o = acc;
  o.a.x += xdot(wl, wh, 0u, i);
  if (MR > 1u) { o.a.y += xdot(wl, wh, 1u, i); }
  if (MR > 2u) { o.a.z += xdot(wl, wh, 2u, i); }
  if (MR > 3u) { o.a.w += xdot(wl, wh, 3u, i); }
  if (MR > 4u) { o.b.x += xdot(wl, wh, 4u, i); }
  if (MR > 5u) { o.b.y += xdot(wl, wh, 5u, i); }
  if (MR > 6u) { o.b.z += xdot(wl, wh, 6u, i); }
  if (MR > 7u) { o.b.w += xdot(wl, wh, 7u, i); }
  if (MR > 8u) { o.c.x += xdot(wl, wh, 8u, i); }
  if (MR > 9u) { o.c.y += xdot(wl, wh, 9u, i); }
  if (MR > 10u) { o.c.z += xdot(wl, wh, 10u, i); }
  if (MR > 11u) { o.c.w += xdot(wl, wh, 11u, i); }
  if (MR > 12u) { o.d.x += xdot(wl, wh, 12u, i); }
  if (MR > 13u) { o.d.y += xdot(wl, wh, 13u, i); }
  if (MR > 14u) { o.d.z += xdot(wl, wh, 14u, i); }
  if (MR > 15u) { o.d.w += xdot(wl, wh, 15u, i); }
  return o;
}

// The partial sums of the MR rows -> red[r * 256 + tid].
fn acc_store(acc: Acc16, tid: u32) {
  red[tid] = acc.a.x;
  if (MR > 1u) { red[256u + tid] = acc.a.y; }
  if (MR > 2u) { red[512u + tid] = acc.a.z; }
  if (MR > 3u) { red[768u + tid] = acc.a.w; }
  if (MR > 4u) { red[1024u + tid] = acc.b.x; }
  if (MR > 5u) { red[1280u + tid] = acc.b.y; }
  if (MR > 6u) { red[1536u + tid] = acc.b.z; }
  if (MR > 7u) { red[1792u + tid] = acc.b.w; }
  if (MR > 8u) { red[2048u + tid] = acc.c.x; }
  if (MR > 9u) { red[2304u + tid] = acc.c.y; }
  if (MR > 10u) { red[2560u + tid] = acc.c.z; }
  if (MR > 11u) { red[2816u + tid] = acc.c.w; }
  if (MR > 12u) { red[3072u + tid] = acc.d.x; }
  if (MR > 13u) { red[3328u + tid] = acc.d.y; }
  if (MR > 14u) { red[3584u + tid] = acc.d.z; }
  if (MR > 15u) { red[3840u + tid] = acc.d.w; }
  if (NORM == 2u) {
    red[MR * 256u + tid] = acc.s.x;
    if (MR > 1u) { red[(MR + 1u) * 256u + tid] = acc.s.y; }
    if (MR > 2u) { red[(MR + 2u) * 256u + tid] = acc.s.z; }
    if (MR > 3u) { red[(MR + 3u) * 256u + tid] = acc.s.w; }
  }
}

// red[b] + red[b + st] + ... + red[b + 7·st], added in that order, written out: naga bounds every
// loop, so a loop here stays a loop in the driver, its loads one after another (a second row of
// sums in such loops cost ~2 µs a dispatch on the H200; written out, the loads go out together).
fn sum8(b: u32, st: u32) -> f32 {
  var s = red[b];
  s += red[b + st];
  s += red[b + 2u * st];
  s += red[b + 3u * st];
  s += red[b + 4u * st];
  s += red[b + 5u * st];
  s += red[b + 6u * st];
  s += red[b + 7u * st];
  return s;
}

// sum8(r * 256 + tid, st) -> red[r * 256 + tid] for each of the rows() (<= 16) rows.
fn sum8_rows(tid: u32, st: u32) {
  let n = rows();
  red[tid] = sum8(tid, st);
  if (n > 1u) { red[256u + tid] = sum8(256u + tid, st); }
  if (n > 2u) { red[512u + tid] = sum8(512u + tid, st); }
  if (n > 3u) { red[768u + tid] = sum8(768u + tid, st); }
  if (n > 4u) { red[1024u + tid] = sum8(1024u + tid, st); }
  if (n > 5u) { red[1280u + tid] = sum8(1280u + tid, st); }
  if (n > 6u) { red[1536u + tid] = sum8(1536u + tid, st); }
  if (n > 7u) { red[1792u + tid] = sum8(1792u + tid, st); }
  if (n > 8u) { red[2048u + tid] = sum8(2048u + tid, st); }
  if (n > 9u) { red[2304u + tid] = sum8(2304u + tid, st); }
  if (n > 10u) { red[2560u + tid] = sum8(2560u + tid, st); }
  if (n > 11u) { red[2816u + tid] = sum8(2816u + tid, st); }
  if (n > 12u) { red[3072u + tid] = sum8(3072u + tid, st); }
  if (n > 13u) { red[3328u + tid] = sum8(3328u + tid, st); }
  if (n > 14u) { red[3584u + tid] = sum8(3584u + tid, st); }
  if (n > 15u) { red[3840u + tid] = sum8(3840u + tid, st); }
}

// Sum of red[r * 256 + tid] over the 64 lanes of each slot, into lane 0's element: lanes 0..7
// each add 8 lanes (l, l + 8, ..., l + 56), then lane 0 adds those 8 (two barriers instead of a
// tree's six; all threads call it).
fn reduce_lanes(tid: u32, lane: u32) {
  workgroupBarrier();
  if (lane < 8u) { sum8_rows(tid, 8u); }
  workgroupBarrier();
  if (lane == 0u) { sum8_rows(tid, 1u); }
  workgroupBarrier();
}
