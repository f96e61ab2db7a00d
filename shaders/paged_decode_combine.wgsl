// `combine`, the merge of flash-decoding's splits (see paged_decode.wgsl, included below, for
// the layout of po and pml). Launcher and CPU twin: src/cache/paged_decode.ts.

// #include "paged_decode"

var<workgroup> cm: array<f32, WG>;
var<workgroup> cl: array<f32, WG>;
var<workgroup> ca: array<vec4<f32>, WG>;

// Merges state j into state i of the tree: max-subtracted, l = 0 weighs 0.
fn merge_into(i: u32, j: u32) {
  let li = cl[i];
  let lj = cl[j];
  if (lj > 0.0) {
    if (li > 0.0) {
      let m = max(cm[i], cm[j]);
      let wi = exp(cm[i] - m);
      let wj = exp(cm[j] - m);
      ca[i] = ca[i] * wi + ca[j] * wj;
      cl[i] = li * wi + lj * wj;
      cm[i] = m;
    } else {
      ca[i] = ca[j];
      cl[i] = lj;
      cm[i] = cm[j];
    }
  }
}

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
  let nch = D4 / CW;
  let w = wid.y * nwg.x + wid.x;
  if (w >= p.pages * GQ * nch) { return; }
  let ch = w % nch;
  let g = (w / nch) % GQ;
  let pg = w / (nch * GQ);
  let col = ch * CW + tid % CW;
  // Online merge of this thread's splits i = tid / CW, + WG / CW, ...: each split's (m, l) and
  // output requested together (the output read whatever l; an empty split's is not used), and
  // the next split's while this one merges (a loop's loads go out one iteration at a time).
  var m = NEG;
  var l = 0.0;
  var a = vec4<f32>(0.0);
  let stride = WG / CW;
  let base = pg * p.np * GQ + g;  // row of split 0
  var i = tid / CW;
  var nml = vec2<f32>(NEG, 0.0);
  var nx = vec4<f32>(0.0);
  if (i < p.np) {
    nml = get_pml(base + i * GQ);
    nx = get_po((base + i * GQ) * D4 + col);
  }
  for (; i < p.np; i += stride) {
    let ml = nml;
    let x = nx;
    if (i + stride < p.np) {
      nml = get_pml(base + (i + stride) * GQ);
      nx = get_po((base + (i + stride) * GQ) * D4 + col);
    }
    if (ml.y > 0.0) {
      if (l > 0.0) {
        let mn = max(m, ml.x);
        let wa = exp(m - mn);
        let wb = exp(ml.x - mn);
        a = a * wa + x * wb;
        l = l * wa + ml.y * wb;
        m = mn;
      } else {
        a = x;
        l = ml.y;
        m = ml.x;
      }
    }
  }
  cm[tid] = m;
  cl[tid] = l;
  ca[tid] = a;
  workgroupBarrier();
  for (var st = WG / 2u; st >= CW; st = st / 2u) {
    if (tid < st) { merge_into(tid, tid + st); }
    workgroupBarrier();
  }
  if (tid < CW) {
    let lt = cl[tid];
    let y = select(vec4<f32>(0.0), ca[tid] / lt, lt > 0.0);
    let dst = (pg * GQ + g) * DD + 4u * col;
    out[dst] = T(y.x);
    out[dst + 1u] = T(y.y);
    out[dst + 2u] = T(y.z);
    out[dst + 3u] = T(y.w);
  }
}
