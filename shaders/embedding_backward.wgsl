// Backward of the embedding gather (shaders/embedding.wgsl): for every vocab row v of this table
// chunk [row_offset, row_offset + rows),
//   dw[v - row_offset, c] (+)= sum over tokens n with ids[n] == v, in increasing n, of dy[n, c]
//   ids:[N] i32   dy:[N, H] f32   -> dw:[rows, H] f32
// Tokens whose id lies outside the chunk contribute nothing. No float atomics: every output is
// summed by one thread in increasing n, so both variants give bit-identical results.
//
// Entry points (2-D grids linearised as wid.y * nwg.x + wid.x):
//   naive    one thread per (row, column) of dw, scanning all N ids: O(rows * H * N). The readable
//            definition; fine for small vocabularies.
//   rank     sorted variant, pass 1: one thread per token computes its place in a stable sort by
//            id, #{n' : ids[n'] < ids[n] or (ids[n'] == ids[n] and n' < n)}, and writes
//            order[place] = n: O(N^2) integer compares, independent of H and the vocabulary.
//   segment  sorted variant, pass 2: one thread per (sorted place, column); the first place of
//            each run of equal ids sums the run's dy rows in order and writes its dw row: O(N * H).
//            Rows no token hit are not written (the launcher clears dw first, or accumulates).

struct Params {
  n: u32,            // tokens N
  h: u32,            // hidden size H
  rows: u32,         // vocab rows of this chunk
  row_offset: i32,   // vocab id of the chunk's first row
  accumulate: u32,   // 1: dw += sum; 0: dw = sum
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> order: array<u32>;  // [N] token ids sorted by id
@group(0) @binding(4) var<storage, read_write> dw: array<f32>;

override WG: u32 = 256u;

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

fn in_chunk(id: i32) -> bool {
  // id >= row_offset first, so the subtraction cannot overflow.
  return id >= p.row_offset && u32(id - p.row_offset) < p.rows;
}

fn put(o: u32, v: f32) {
  if (p.accumulate == 1u) { dw[o] = dw[o] + v; } else { dw[o] = v; }
}

@compute @workgroup_size(WG)
fn naive(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
  let e = flat(wid, nwg, lid);
  if (e >= p.rows * p.h) { return; }
  let id = p.row_offset + i32(e / p.h);
  let c = e % p.h;
  var acc = 0.0;
  for (var t = 0u; t < p.n; t++) {
    if (ids[t] == id) { acc += dy[t * p.h + c]; }
  }
  put(e, acc);
}

@compute @workgroup_size(WG)
fn rank(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = flat(wid, nwg, lid);
  if (t >= p.n) { return; }
  let key = ids[t];
  var place = 0u;
  for (var s = 0u; s < p.n; s++) {
    let other = ids[s];
    if (other < key || (other == key && s < t)) { place++; }
  }
  order[place] = t;
}

@compute @workgroup_size(WG)
fn segment(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let e = flat(wid, nwg, lid);
  if (e >= p.n * p.h) { return; }
  let place = e / p.h;
  let c = e % p.h;
  let id = ids[order[place]];
  if (!in_chunk(id) || (place > 0u && ids[order[place - 1u]] == id)) { return; }
  var acc = 0.0;
  for (var s = place; s < p.n; s++) {
    let t = order[s];
    if (ids[t] != id) { break; }
    acc += dy[t * p.h + c];
  }
  put(u32(id - p.row_offset) * p.h + c, acc);
}
