// StreamingLLM on the paged KV storage: attention sinks + a recent window.
// Launcher and CPU twin: src/policies/streaming_llm.ts.
//
// Per page the policy counts the real tokens it has stored, seen[l, p]. The token with real
// index r (0-based, left padding not counted) takes slot
//   slot(r) = r                               r < budget
//           = sinks + (r - sinks) % recent    otherwise (the recent window as a ring)
// so after `total` tokens the page holds the first `sinks` tokens and the last `recent` ones,
// len = min(total, budget), and a new token overwrites exactly the one leaving the window.
// Marks: a sink is 0 (always visible), every other entry 1, with W = recent - 1, so the SPEC
// §5.1 rule in attention shows a query exactly the sinks and its last `recent` keys, also
// inside a prefill chunk.
//
//   stream_marks  prefill, before attention (one thread per (page, j)): cm[p, j] = 2 for left
//                 padding, else 1 if r >= sinks, 0 for a sink (r = seen + j - f).
//   stream_slots  decode and prefill after attention (one workgroup per page): dest[p, j] =
//                 slot(r) for the chunk's survivors (r < sinks or r >= total - recent), -1 for
//                 the others and padding; seen += real tokens; len = min(seen, budget). In
//                 decode it also writes the new entry's mark cm[p].
//
//   fr:[B]  cm, dest:[pages, n]  seen, lens:[layers, pages]

struct Params {
  pages: u32,   // B * Hkv
  hkv: u32,     // KV heads
  n: u32,       // tokens in this call
  lbase: u32,   // layer * pages
  sinks: u32,   // attention sinks kept forever
  recent: u32,  // recent window (>= 1, includes the newest token)
  decode: u32,  // 1: decode (n = 1, no padding; fr not read)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> lens: array<i32>;  // [layers, pages]
@group(0) @binding(2) var<storage, read_write> seen: array<u32>;  // [layers, pages]
@group(0) @binding(3) var<storage, read> fr: array<i32>;          // [B]
@group(0) @binding(4) var<storage, read_write> cm: array<i32>;    // [pages, n]
@group(0) @binding(5) var<storage, read_write> dest: array<i32>;  // [pages, n]

override WG: u32 = 64u;

var<workgroup> sh_seen: u32;

fn first_real(pg: u32) -> u32 {
  if (p.decode == 1u) { return 0u; }
  return u32(min(fr[pg / p.hkv], i32(p.n)));
}

fn slot_of(r: u32) -> i32 {
  if (r < p.sinks + p.recent) { return i32(r); }
  return i32(p.sinks + (r - p.sinks) % p.recent);
}

@compute @workgroup_size(WG)
fn stream_marks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + tid;
  if (i >= p.pages * p.n) { return; }
  let pg = i / p.n;
  let j = i % p.n;
  let f = first_real(pg);
  if (j < f) {
    cm[i] = 2;
    return;
  }
  let r = seen[p.lbase + pg] + j - f;
  cm[i] = select(0, 1, r >= p.sinks);
}

@compute @workgroup_size(WG)
fn stream_slots(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
  let pg = wid.y * nwg.x + wid.x;
  if (pg >= p.pages) { return; }
  let li = p.lbase + pg;
  if (tid == 0u) { sh_seen = seen[li]; }
  let s0 = workgroupUniformLoad(&sh_seen);
  let f = first_real(pg);
  let total = s0 + p.n - f;
  for (var j = tid; j < p.n; j += WG) {
    var slot = -1;
    if (j >= f) {
      let r = s0 + j - f;
      if (r < p.sinks || r + p.recent >= total) { slot = slot_of(r); }
      if (p.decode == 1u) { cm[pg] = select(0, 1, r >= p.sinks); }
    }
    dest[pg * p.n + j] = slot;
  }
  if (tid == 0u) {
    seen[li] = total;
    lens[li] = i32(min(total, p.sinks + p.recent));
  }
}
