// paged_decode.wgsl's keys: a split's keys located through the block table (entry, entries4),
// their visibility (seen, keep4 -> kph), and their K/V words loaded (word, words4; EARLY: rows4,
// pool4, visible4). Included by paged_decode.wgsl; it uses that file's bindings, constants,
// workgroup arrays and helpers.

// Word c of key kk of the split from pool `which` (0: K, 1: V); zero past the split or for an
// invisible key (not read).
fn word(which: u32, kk: u32, cnt: u32, c: u32) -> vec4<u32> {
  var x = vec4<u32>(0u);
  if (kk < cnt) {
    let e = kph[kk];
    if (e != NOKEY) {
      if (which == 0u) { x = kw[e * L + c]; } else { x = vw[e * L + c]; }
    }
  }
  return x;
}

// Four word rows of one pool: rows kk0 + (jb + i)·KP of the split, i = 0..3 (zero for
// jb + i >= J).
struct W4 {
  w0: vec4<u32>,
  w1: vec4<u32>,
  w2: vec4<u32>,
  w3: vec4<u32>,
}

fn words4(which: u32, jb: u32, kk0: u32, cnt: u32, c: u32) -> W4 {
  var x: W4;
  x.w0 = word(which, kk0 + jb * KP, cnt, c);
  if (jb + 1u < J) { x.w1 = word(which, kk0 + (jb + 1u) * KP, cnt, c); }
  if (jb + 2u < J) {
    x.w2 = word(which, kk0 + (jb + 2u) * KP, cnt, c);
    x.w3 = word(which, kk0 + (jb + 3u) * KP, cnt, c);
  }
  return x;
}

// Entry of key i of KV page kp's split that starts at slot ks (clamped into the split: cnt >= 1).
fn entry(kp: u32, ks: u32, cnt: u32, i: u32) -> u32 {
  let s = ks + min(i, cnt - 1u);
  return u32(table[(p.lbase + kp) * p.mb + s / p.bs]) * p.bs + s % p.bs;
}

// Entries of keys i + j·WG, j = 0..3, of the split, all four table reads requested together (a
// loop would issue them one iteration at a time). The first two are read whatever the split's
// length (`entry` clamps into it), the other two only under it (0 past it).
fn entries4(kp: u32, ks: u32, cnt: u32, i: u32) -> vec4<u32> {
  var e = vec4<u32>(entry(kp, ks, cnt, i), entry(kp, ks, cnt, i + WG), 0u, 0u);
  if (i + 2u * WG < cnt) { e.z = entry(kp, ks, cnt, i + 2u * WG); }
  if (i + 3u * WG < cnt) { e.w = entry(kp, ks, cnt, i + 3u * WG); }
  return e;
}

// Whether entry e of key i is visible, false past the split (its (pos, mark) not read).
fn seen_in(e: u32, i: u32, cnt: u32) -> bool {
  return i < cnt && seen(e);
}

// kph of keys i + j·WG under cnt: the entry, or NOKEY where it is invisible (the four (pos,
// mark) reads requested together).
fn keep4(e: vec4<u32>, i: u32, cnt: u32) {
  let v = vec4<bool>(seen(e.x), seen(e.y), seen_in(e.z, i + 2u * WG, cnt),
                     seen_in(e.w, i + 3u * WG, cnt));
  if (i < cnt) { kph[i] = select(NOKEY, e.x, v.x); }
  if (i + WG < cnt) { kph[i + WG] = select(NOKEY, e.y, v.y); }
  if (i + 2u * WG < cnt) { kph[i + 2u * WG] = select(NOKEY, e.z, v.z); }
  if (i + 3u * WG < cnt) { kph[i + 3u * WG] = select(NOKEY, e.w, v.w); }
}

// Whether entry e is visible to the query (SPEC §5.1).
fn seen(e: u32) -> bool {
  let kp = kmeta[2u * e];
  let mk = kmeta[2u * e + 1u];
  return p.t0 >= 0 && kp <= p.t0 && mk != 2 && (mk == 0 || p.t0 - kp <= p.window);
}

// EARLY: the entries of this thread's first-block rows r + j·KP, j < min(J, 4), read from the
// table (clamped into the split, so every one is a stored entry), and their words of pool
// `which`, requested before the split's visibility is known. Rows past the split or invisible
// are masked afterwards: their scores by step 2, their value words by `visible4`.
fn rows4(kp: u32, ks: u32, cnt: u32, r: u32) -> vec4<u32> {
  var e = vec4<u32>(entry(kp, ks, cnt, r), 0u, 0u, 0u);
  if (J > 1u) { e.y = entry(kp, ks, cnt, r + KP); }
  if (J > 2u) {
    e.z = entry(kp, ks, cnt, r + 2u * KP);
    e.w = entry(kp, ks, cnt, r + 3u * KP);
  }
  return e;
}

fn pool_word(which: u32, e: u32, c: u32) -> vec4<u32> {
  if (which == 0u) { return kw[e * L + c]; }
  return vw[e * L + c];
}

fn pool4(which: u32, e: vec4<u32>, c: u32) -> W4 {
  var x: W4;
  x.w0 = pool_word(which, e.x, c);
  if (J > 1u) { x.w1 = pool_word(which, e.y, c); }
  if (J > 2u) {
    x.w2 = pool_word(which, e.z, c);
    x.w3 = pool_word(which, e.w, c);
  }
  return x;
}

// Word row kk of the split as `word` returns it: zero past the split or where invisible.
fn keep_word(x: vec4<u32>, kk: u32, cnt: u32) -> vec4<u32> {
  var v = false;
  if (kk < cnt) { v = kph[kk] != NOKEY; }
  return select(vec4<u32>(0u), x, v);
}

// The first block's early words y of rows r + j·KP as `words4` would have read them.
fn visible4(y: W4, r: u32, cnt: u32) -> W4 {
  var x: W4;
  x.w0 = keep_word(y.w0, r, cnt);
  x.w1 = keep_word(y.w1, r + KP, cnt);
  x.w2 = keep_word(y.w2, r + 2u * KP, cnt);
  x.w3 = keep_word(y.w3, r + 3u * KP, cnt);
  return x;
}
