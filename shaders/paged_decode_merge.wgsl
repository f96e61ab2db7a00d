// paged_decode.wgsl's FUSED merge of a page's splits by the split that finishes last (merge_if_last). Included by paged_decode.wgsl; it uses that file's bindings, constants,
// workgroup arrays and helpers.

// FUSED: the page's splits meet in the workgroup that finishes last (an arrival count per page,
// set back to 0 by that workgroup; nothing waits for another workgroup), as `combine` merges them:
// 1. every (split, head) pair's (m, l) -> scr[i * GQ + g] (one load each, in parallel);
// 2. per head g, M = max m over the splits with l > 0 and L = sum of e^{m - M} l -> hml[g]: each
//    of the R = WG / GQ lanes of head g folds its splits (lane, lane + R, ...) online, then the
//    lanes' (m, l) meet in a tree through scr (log2 R steps, not a loop over every split);
// 3. weights w = e^{m - M} / L (0 where l = 0) -> scr[..].z;
// 4. output vec4 (head g, column col): the sum of w · o over the splits, split among H = WG / (G
//    · D4) threads (at least 1), eight splits' loads in flight at a time, the H partial sums added
//    in order -> out (0 for a head with no visible key). The launcher takes FUSED only where
//    np · GQ + max(GQ · D4 · H, WG) vec4s fit in scr (step 4's partial sums, step 2's lanes).
var<workgroup> lastSplit: u32;
var<workgroup> hml: array<vec2<f32>, 8>;  // per head: (M, L)

fn merge_if_last(pg: u32, tid: u32) {
  workgroupBarrier();  // the last reads of scr by `outputs`
  storageBarrier();
  if (tid == 0u) { lastSplit = u32(atomicAdd(&arrived[pg], 1u) + 1u == p.np); }
  if (workgroupUniformLoad(&lastSplit) == 0u) { return; }
  storageBarrier();
  let np = p.np;
  let rows = pg * np * GQ;  // the page's first row of pml (and of po, times D4)
  for (var t = tid; t < np * GQ; t += WG) {
    let ml = get_pml(rows + t);
    scr[t] = vec4<f32>(ml.x, ml.y, 0.0, 0.0);
  }
  workgroupBarrier();
  // Step 2: lane r of head g folds splits r, r + R, ... online into (m, l) -> scr[part + tid].
  let part = np * GQ;  // past the splits' (m, l, w); later the partial sums of step 4
  let R = WG / GQ;                                     // >= 8 (WG >= 64, GQ <= 8)
  let R_POW = 1u << (32u - countLeadingZeros(R - 1u));  // the power of two >= R
  let g2 = tid % GQ;
  let r2 = tid / GQ;
  var ml = vec2<f32>(NEG, 0.0);
  if (r2 < R) {
    for (var i = r2; i < np; i += R) { ml = ml_merge(ml, scr[i * GQ + g2].xy); }
  }
  scr[part + tid] = vec4<f32>(ml, 0.0, 0.0);
  workgroupBarrier();
  for (var st = R_POW / 2u; st > 0u; st /= 2u) {
    if (r2 < st && r2 + st < R) {
      let j = part + (r2 + st) * GQ + g2;
      scr[part + tid] = vec4<f32>(ml_merge(scr[part + tid].xy, scr[j].xy), 0.0, 0.0);
    }
    workgroupBarrier();
  }
  if (tid < GQ) { hml[tid] = scr[part + tid].xy; }
  workgroupBarrier();
  for (var t = tid; t < np * GQ; t += WG) {
    let x = scr[t];
    let h = hml[t % GQ];
    scr[t].z = select(0.0, exp(x.x - h.x) / h.y, x.y > 0.0);
  }
  workgroupBarrier();
  let tasks = GQ * D4;
  let H = max(1u, WG / tasks);
  for (var u = tid; u < tasks * H; u += WG) {
    let task = u % tasks;
    let h = u / tasks;
    let g = task / D4;
    let col = task % D4;
    var acc = vec4<f32>(0.0);
    var i = h;
    for (; i + 7u * H < np; i += 8u * H) {
      let o0 = get_po((rows + i * GQ + g) * D4 + col);
      let o1 = get_po((rows + (i + H) * GQ + g) * D4 + col);
      let o2 = get_po((rows + (i + 2u * H) * GQ + g) * D4 + col);
      let o3 = get_po((rows + (i + 3u * H) * GQ + g) * D4 + col);
      let o4 = get_po((rows + (i + 4u * H) * GQ + g) * D4 + col);
      let o5 = get_po((rows + (i + 5u * H) * GQ + g) * D4 + col);
      let o6 = get_po((rows + (i + 6u * H) * GQ + g) * D4 + col);
      let o7 = get_po((rows + (i + 7u * H) * GQ + g) * D4 + col);
      acc += term(o0, i, g) + term(o1, i + H, g);
      acc += term(o2, i + 2u * H, g) + term(o3, i + 3u * H, g);
      acc += term(o4, i + 4u * H, g) + term(o5, i + 5u * H, g);
      acc += term(o6, i + 6u * H, g) + term(o7, i + 7u * H, g);
    }
    for (; i < np; i += H) { acc += term(get_po((rows + i * GQ + g) * D4 + col), i, g); }
    scr[part + h * tasks + task] = acc;
  }
  workgroupBarrier();
  for (var task = tid; task < tasks; task += WG) {
    var y = vec4<f32>(0.0);
    for (var h = 0u; h < H; h++) { y += scr[part + h * tasks + task]; }
    let g = task / D4;
    store_row(pg * GQ + g, task % D4, y, select(0.0, 1.0, hml[g].y > 0.0));
  }
  if (tid == 0u) { atomicStore(&arrived[pg], 0u); }
}

// Split i's weighted output o · w for head g (step 4 of merge_if_last); 0 for a split with no
// visible key, whatever its po holds (an empty split writes none: a select, not a product).
fn term(o: vec4<f32>, i: u32, g: u32) -> vec4<f32> {
  let x = scr[i * GQ + g];
  return select(vec4<f32>(0.0), o * x.z, x.y > 0.0);
}

// Two (max, sum) states of the softmax over disjoint splits merged: M = max, L = sum of e^{m - M}
// l; a state with l = 0 (no visible key) weighs nothing.
fn ml_merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  if (b.y <= 0.0) { return a; }
  if (a.y <= 0.0) { return b; }
  let m = max(a.x, b.x);
  return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}
