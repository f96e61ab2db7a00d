// Embedding gather: out[n, :] = table[ids[n] - row_offset, :] for ids inside this
// table chunk [row_offset, row_offset + rows). Rows whose id lies outside the chunk
// are written as zeros when zero_missing = 1, and left untouched when 0 (chunked
// lookups: one launch per chunk into the same preallocated out).
//   ids:[N] i32   table:[rows, H] T   -> out:[N, H] T        T = f32 or f16
// One thread per output element, 256 per workgroup, 2-D grid when large.

struct Params {
  n: u32,             // N * H output elements
  h: u32,             // hidden size H
  rows: u32,          // vocab rows held by this table chunk
  row_offset: i32,    // vocab id of the chunk's first row
  zero_missing: u32,  // 1: zero rows whose id is outside the chunk; 0: leave them
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> table: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn embedding(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
  if (i >= p.n) { return; }
  let token = i / p.h;
  let c = i % p.h;
  let id = ids[token];
  // id >= row_offset first, so the subtraction cannot overflow.
  if (id >= p.row_offset && u32(id - p.row_offset) < p.rows) {
    out[i] = table[u32(id - p.row_offset) * p.h + c];
  } else if (p.zero_missing == 1u) {
    out[i] = T(0.0);
  }
}
