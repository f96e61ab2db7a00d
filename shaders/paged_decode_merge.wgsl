// paged_decode.wgsl's FUSED merge of a page's splits by the split that finishes last (merge_if_last). Included by paged_decode.wgsl; it uses that file's bindings, constants,
// workgroup arrays and helpers.

// FUSED: the page's splits meet in the workgroup that finishes last (an arrival count per page,
// set back to 0 by that workgroup; nothing waits for another workgroup), as `combine` merges them:
// 1. every (split, head) pair's (m, l) -> scr[i * GQ + g] (one load each, in parallel);
// 2. thread g < GQ: M = max m over the splits with l > 0, L = sum of e^{m - M} l -> hml[g];
// 3. weights w = e^{m - M} / L (0 where l = 0) -> scr[..].z;
// 4. output vec4 (head g, column col): the sum of w · o over the splits, split among H = WG / (G
//    · D4) threads (at least 1), four splits' loads in flight at a time, the H partial sums added
//    in order -> out (0 for a head with no visible key). The launcher takes FUSED only where
//    np · GQ + G · D4 · H vec4s fit in scr.
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
  if (tid < GQ) {
    var m = NEG;
    for (var i = 0u; i < np; i++) {
      let x = scr[i * GQ + tid];
      if (x.y > 0.0) { m = max(m, x.x); }
    }
    var l = 0.0;
    for (var i = 0u; i < np; i++) {
      let x = scr[i * GQ + tid];
      if (x.y > 0.0) { l += exp(x.x - m) * x.y; }
    }
    hml[tid] = vec2<f32>(m, l);
  }
  workgroupBarrier();
  for (var t = tid; t < np * GQ; t += WG) {
    let x = scr[t];
    let h = hml[t % GQ];
    scr[t].z = select(0.0, exp(x.x - h.x) / h.y, x.y > 0.0);
  }
  workgroupBarrier();
  let tasks = GQ * D4;
  let H = max(1u, WG / tasks);
  let part = np * GQ;  // partial sums after the weights
  for (var u = tid; u < tasks * H; u += WG) {
    let task = u % tasks;
    let h = u / tasks;
    let g = task / D4;
    let col = task % D4;
    var acc = vec4<f32>(0.0);
    var i = h;
    for (; i + 3u * H < np; i += 4u * H) {
      let o0 = get_po((rows + i * GQ + g) * D4 + col);
      let o1 = get_po((rows + (i + H) * GQ + g) * D4 + col);
      let o2 = get_po((rows + (i + 2u * H) * GQ + g) * D4 + col);
      let o3 = get_po((rows + (i + 3u * H) * GQ + g) * D4 + col);
      acc += term(o0, i, g) + term(o1, i + H, g);
      acc += term(o2, i + 2u * H, g) + term(o3, i + 3u * H, g);
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
