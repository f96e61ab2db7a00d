// sample.wgsl's candidate path (C1-C4 in its header): the histogram's top range, the gathered
// candidates sorted in workgroup memory, the top-k / top-p thresholds over them. Included by
// sample.wgsl; it uses that file's bindings, constants, workgroup arrays and helpers.

// ---- candidate path (C1-C4) ------------------------------------------------------------------

// Whether candidate a comes before candidate b: by key descending, then index ascending
// (by_index: index ascending only).
fn precedes(a: u32, b: u32, by_index: bool) -> bool {
  let ka = bins[a];
  let kb = bins[b];
  let ia = bins[cap() + a];
  let ib = bins[cap() + b];
  return select(ka > kb || (ka == kb && ia < ib), ia < ib, by_index);
}

// Bitonic sort of candidates [0, n2) (n2 a power of two, workgroup-uniform).
fn sort_candidates(n2: u32, by_index: bool, lid: u32) {
  for (var kk = 2u; kk <= n2; kk <<= 1u) {
    for (var jj = kk >> 1u; jj > 0u; jj >>= 1u) {
      for (var i = lid; i < n2; i += WG) {
        let l = i ^ jj;
        if (l > i) {
          let up = (i & kk) == 0u;
          if ((up && precedes(l, i, by_index)) || (!up && precedes(i, l, by_index))) {
            let k = bins[i];
            bins[i] = bins[l];
            bins[l] = k;
            let ix = bins[cap() + i];
            bins[cap() + i] = bins[cap() + l];
            bins[cap() + l] = ix;
          }
        }
      }
      workgroupBarrier();
    }
  }
}

fn pow2_at_least(n: u32) -> u32 {
  return select(2u, 1u << (firstLeadingBit(n - 1u) + 1u), n > 2u);
}

// First candidate position in [0, n), in the current order, whose running weight passes
// goal = frac * z (z = zfix when > 0, else the weight of [0, n)): '>' when strict, else '>='.
// Candidates of weight 0 are skipped. Returns n when the running weight never passes (not
// strict), or the last candidate of positive weight (strict). Workgroup-uniform result.
fn scan_find(n: u32, m: f32, frac: f32, zfix: f32, strict: bool, lid: u32) -> u32 {
  let per = (cap() + WG - 1u) / WG;
  let i0 = min(lid * per, n);
  let i1 = min(i0 + per, n);
  var s = 0.0;
  for (var i = i0; i < i1; i++) { s += weight(unkey(bins[i]), m); }
  red_w[lid] = s;
  workgroupBarrier();
  if (lid == 0u) {
    var total = 0.0;
    for (var t = 0u; t < WG; t++) { total += red_w[t]; }
    let goal = frac * select(total, zfix, zfix > 0.0);
    var acc = 0.0;
    var owner = NONE;
    var before = 0.0;
    var found = false;
    for (var t = 0u; t < WG; t++) {
      let w = red_w[t];
      if (w > 0.0) {
        owner = t;
        before = acc;
        if (acc + w > goal || (!strict && acc + w >= goal)) {
          found = true;
          break;
        }
      }
      acc += w;
    }
    if (!strict && !found) { owner = NONE; }
    s_owner = owner;
    s_before = before;
    s_goal = goal;
    s_pos = n;
  }
  workgroupBarrier();
  if (lid == s_owner) {
    var acc = s_before;
    var pos = n;
    var found = false;
    for (var i = i0; i < i1; i++) {
      let w = weight(unkey(bins[i]), m);
      if (w > 0.0) {
        acc += w;
        pos = i;
        if (acc > s_goal || (!strict && acc >= s_goal)) {
          found = true;
          break;
        }
      }
    }
    if (!strict && !found) { pos = n; }
    s_pos = pos;
  }
  return workgroupUniformLoad(&s_pos);
}

// The candidate path; returns the token, or NONE when it does not apply (then the general path
// runs). Called with top-k (1 < k < V) or top-p (< 1) active.
fn candidates(base: u32, m: f32, lid: u32, row: u32) -> u32 {
  let v = p.vocab;
  let topk = p.top_k > 1u && p.top_k < v;
  // C1. histogram: count and mass per bucket
  var hc: array<f32, BINS>;
  var hm: array<f32, BINS>;
  for (var j = lid; j < v; j += UNROLL * WG) {
    var xs: array<f32, UNROLL>;
    for (var u = 0u; u < UNROLL; u++) { xs[u] = ld(base, min(j + u * WG, v - 1u)); }
    for (var u = 0u; u < UNROLL; u++) {
      if (j + u * WG < v) {
        let b = bucket(xs[u], m);
        hc[b] += 1.0;
        hm[b] += weight(xs[u], m);
      }
    }
  }
  for (var b = 0u; b < BINS; b++) { bset(b * WG + lid, hc[b]); }
  reduce_bins(lid);
  if (lid < BINS) { hist_c[lid] = bget(lid * WG); }
  workgroupBarrier();
  for (var b = 0u; b < BINS; b++) { bset(b * WG + lid, hm[b]); }
  reduce_bins(lid);
  if (lid < BINS) { hist_m[lid] = bget(lid * WG); }
  workgroupBarrier();
  if (lid == 0u) {
    var zall = 0.0;
    for (var b = 0u; b < BINS; b++) { zall += hist_m[b]; }
    // the top buckets [0, cut] that hold every token that can be kept
    let goal = select(p.top_p * zall, f32(p.top_k), topk);
    var cut = BINS - 1u;
    var acc = 0.0;
    var n = 0.0;
    for (var b = 0u; b < BINS; b++) {
      acc += select(hist_m[b], hist_c[b], topk);
      n += hist_c[b];
      if (acc >= goal) {
        cut = b;
        break;
      }
    }
    if (cut == BINS - 1u) { n = f32(v); }
    s_cut = cut;
    s_zall = zall;
    s_ok = select(0u, 1u, n <= f32(cap()));
    atomicStore(&s_count, 0u);
  }
  if (workgroupUniformLoad(&s_ok) == 0u) { return NONE; }

  // C2. gather the candidates (any order)
  let cut = s_cut;
  for (var j = lid; j < v; j += UNROLL * WG) {
    var xs: array<f32, UNROLL>;
    for (var u = 0u; u < UNROLL; u++) { xs[u] = ld(base, min(j + u * WG, v - 1u)); }
    for (var u = 0u; u < UNROLL; u++) {
      if (j + u * WG < v && bucket(xs[u], m) <= cut) {
        let slot = atomicAdd(&s_count, 1u);
        if (slot < cap()) {
          bins[slot] = key(xs[u]);
          bins[cap() + slot] = j + u * WG;
        }
      }
    }
  }
  workgroupBarrier();
  if (lid == 0u) { s_n = atomicLoad(&s_count); }
  let n = workgroupUniformLoad(&s_n);
  if (n > cap() || (topk && n < p.top_k)) { return NONE; }  // buckets disagreed (float): general path

  // C3. sort by key, thresholds
  let n2 = pow2_at_least(n);
  for (var i = n + lid; i < n2; i += WG) {
    bins[i] = 0u;  // below every real key
    bins[cap() + i] = NONE;
  }
  workgroupBarrier();
  sort_candidates(n2, false, lid);
  if (lid == 0u) {
    var nk = n;
    if (topk) {
      nk = p.top_k;
      let tk = bins[nk - 1u];
      while (nk < n && bins[nk] == tk) { nk++; }
    }
    s_n = nk;
  }
  var nkeep = workgroupUniformLoad(&s_n);
  if (p.top_p < 1.0) {
    // top-k: fraction p of the top-k set's mass; top-p alone: of the whole row's mass
    let pos = scan_find(nkeep, m, p.top_p, select(s_zall, 0.0, topk), false, lid);
    if (pos >= nkeep) { return NONE; }  // the candidates fell short of p * Z (float): general path
    if (lid == 0u) {
      var nk = pos + 1u;
      let tp = bins[pos];
      while (nk < nkeep && bins[nk] == tp) { nk++; }
      s_n = nk;
    }
    nkeep = workgroupUniformLoad(&s_n);
  }

  // C4. the kept candidates in index order, then the draw
  let m2 = pow2_at_least(nkeep);
  for (var i = nkeep + lid; i < m2; i += WG) {
    bins[i] = 0u;
    bins[cap() + i] = NONE;
  }
  workgroupBarrier();
  sort_candidates(m2, true, lid);
  let pos = scan_find(nkeep, m, draw(row), 0.0, true, lid);
  if (lid == 0u) { s_token = select(NONE, bins[cap() + pos], pos < nkeep); }
  return workgroupUniformLoad(&s_token);
}
