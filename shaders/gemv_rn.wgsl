// gemv16_rn: gemv16 (gemv.wgsl, included below) with the RMSNorm of its output rows.
// Launcher, CPU reference and documentation: src/ops/linear_norm_out.ts, src/ops/gemv.ts.

// #include "gemv"

@group(0) @binding(13) var<storage, read_write> cnt: array<atomic<u32>>; // [1], 0 at rest
@group(0) @binding(14) var<storage, read_write> yn: array<atomic<u32>>;  // [M, N] words

// gemv16_rn: gemv16, then the RMSNorm of the output rows, yn = rmsNorm(y, gain, eps) rounded to
// T as the rmsnorm kernel stores it (gain: the gain of the output, K = N; no prologue, NORM = 0),
// so that the next projection needs no norm prologue. The last workgroup to finish does it:
// 1. every workgroup also writes its outputs (the values stored in y) into yn, as 32-bit words
//    (two f16 columns, or one f32) through atomicStore: atomics are performed at device scope,
//    past the SM's non-coherent L1 (plain loads of y by another workgroup read stale lines on
//    the H200: the first version failed there under load);
// 2. storageBarrier, then thread 0 counts the workgroup in cnt[0];
// 3. the workgroup that counts last reads the rows back from yn with atomicLoad, sums their
//    squares (a tree), overwrites each word with the normed values, and sets cnt[0] back to 0
//    for the next dispatch. Nothing waits for another workgroup. f16 needs an even N.
var<workgroup> lastWg: u32;

// The value gemv16's epilogue stored for y[r, c], c a column of workgroup wg, read back as f32
// (its sums are still in red); 0 past N.
fn out_at(r: u32, c: u32, wg: u32) -> f32 {
  if (c >= p.n) { return 0.0; }
  var b = 0.0;
  if (p.hasBias == 1u) { b = f32(bias[c]); }
  var v = red[r * 256u + (c - wg * COLS) * LANES] + b;
  if (p.hasRes == 1u) { v += f32(res[p.offR + r * p.n + c]); }
  return f32(T(v));
}

@compute @workgroup_size(256)
fn gemv16_rn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) tid: u32) {
  gemv16_body(wid, nwg, tid);
  let wg = wid.y * nwg.x + wid.x;
  let wpr = select(p.n, p.n / 2u, EPV == 8u); // words a row: N / 2 (f16), N (f32)
  if (EPV == 8u) {
    if (tid < 2u * MR) {
      let r = tid / 2u;
      let c = wg * COLS + 2u * (tid % 2u);
      if (r < p.m && c < p.n) {
        let v = vec2<f32>(out_at(r, c, wg), out_at(r, c + 1u, wg));
        atomicStore(&yn[r * wpr + c / 2u], pack2x16float(v));
      }
    }
  } else if (tid < COLS * MR) {
    let r = tid / COLS;
    let c = wg * COLS + tid % COLS;
    if (r < p.m && c < p.n) { atomicStore(&yn[r * wpr + c], bitcast<u32>(out_at(r, c, wg))); }
  }
  storageBarrier();
  if (tid == 0u) { lastWg = u32(atomicAdd(&cnt[0], 1u) + 1u == nwg.x * nwg.y); }
  if (workgroupUniformLoad(&lastWg) == 0u) { return; }
  storageBarrier();
  for (var r = 0u; r < MR; r++) {
    var ss = 0.0;
    if (r < p.m) {
      for (var j = tid; j < wpr; j += 256u) {
        let v = word_values(atomicLoad(&yn[r * wpr + j]));
        ss += dot(v, v);
      }
    }
    red[r * 256u + tid] = ss;
  }
  row_scales(tid, p.n);
  for (var r = 0u; r < p.m; r++) {
    for (var j = tid; j < wpr; j += 256u) {
      let v = word_values(atomicLoad(&yn[r * wpr + j]));
      if (EPV == 8u) {
        let o = vec2<f32>(gain_at(2u * j) * (v.x * rn[r]), gain_at(2u * j + 1u) * (v.y * rn[r]));
        atomicStore(&yn[r * wpr + j], pack2x16float(o));
      } else {
        atomicStore(&yn[r * wpr + j], bitcast<u32>(gain_at(j) * (v.x * rn[r])));
      }
    }
  }
  if (tid == 0u) { atomicStore(&cnt[0], 0u); }
}

// The values of an exchange word of yn: two f16 (f16 storage), or one f32 and a 0.
fn word_values(u: u32) -> vec2<f32> {
  if (EPV == 8u) { return unpack2x16float(u); }
  return vec2<f32>(bitcast<f32>(u), 0.0);
}

// Element i of the gain (words of T).
fn gain_at(i: u32) -> f32 {
  let g = gain[i / EPV];
  if (EPV == 8u) { return unpack2x16float(g[(i % 8u) / 2u])[i % 2u]; }
  return bitcast<f32>(g[i % 4u]);
}
