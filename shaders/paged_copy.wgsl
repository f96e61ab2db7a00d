// Copies one sequence's pages into every sequence of another paged storage (parallel chains from
// one prefilled prompt). Launcher and CPU twin: src/cache/fork.ts.
//
//   copy_pages  one thread per (destination page p, slot s, 32-bit word w of a K/V row): page p
//               (sequence b, head h = p % hkv) takes the entries of source page src_base + h, slot
//               for slot (s < the source length): K and V words, and meta (position, mark) from
//               the thread of word 0. Both sides go through their own block tables; the rows are
//               copied as words, so the dtype does not matter.
//               src_lens:[src layers·pages]  tables:[layers, pages, mb]  pools:[blocks·bs, rw]

struct Params {
  pages: u32,      // destination pages B·Hkv
  hkv: u32,        // KV heads
  src_base: u32,   // source page of head 0 (row · hkv)
  rw: u32,         // 32-bit words per K/V row
  bs: u32,         // block size (both sides)
  mb_src: u32,     // source block-table width
  mb_dst: u32,     // destination block-table width
  l_src: u32,      // layer · source pages
  l_dst: u32,      // layer · destination pages
  max_len: u32,    // longest source page (the grid's slot range)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_lens: array<i32>;
@group(0) @binding(2) var<storage, read> src_table: array<i32>;
@group(0) @binding(3) var<storage, read> src_k: array<u32>;
@group(0) @binding(4) var<storage, read> src_v: array<u32>;
@group(0) @binding(5) var<storage, read> src_meta: array<i32>;
@group(0) @binding(6) var<storage, read> dst_table: array<i32>;
@group(0) @binding(7) var<storage, read_write> dst_k: array<u32>;
@group(0) @binding(8) var<storage, read_write> dst_v: array<u32>;
@group(0) @binding(9) var<storage, read_write> dst_meta: array<i32>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn copy_pages(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + tid;
  if (i >= p.pages * p.max_len * p.rw) { return; }
  let w = i % p.rw;
  let s = (i / p.rw) % p.max_len;
  let pg = i / (p.rw * p.max_len);
  let sp = p.src_base + pg % p.hkv;
  if (i32(s) >= src_lens[p.l_src + sp]) { return; }
  let sph = u32(src_table[(p.l_src + sp) * p.mb_src + s / p.bs]) * p.bs + s % p.bs;
  let dph = u32(dst_table[(p.l_dst + pg) * p.mb_dst + s / p.bs]) * p.bs + s % p.bs;
  dst_k[dph * p.rw + w] = src_k[sph * p.rw + w];
  dst_v[dph * p.rw + w] = src_v[sph * p.rw + w];
  if (w == 0u) {
    dst_meta[2u * dph] = src_meta[2u * sph];
    dst_meta[2u * dph + 1u] = src_meta[2u * sph + 1u];
  }
}
