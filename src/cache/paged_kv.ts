/**
 * Launchers of the storage maintenance kernels (`shaders/paged_kv.wgsl`) on a
 * {@linkcode PagedKvStorage}: what every policy shares to write and count entries. All record
 * into the shared encoder; nothing reads back.
 *
 * - {@linkcode appendMarks} + {@linkcode appendSlots}: the plain append (no eviction), the
 *   dense policy's whole slot choice. Real tokens go to slots len, len+1, ... in order; left
 *   padding is marked 2 and never stored; nothing is ever marked 1. Its CPU twin is in
 *   `test/cache/paged_kv_test.ts`.
 * - {@linkcode scatterEntries}: writes chunk entry j of page p (K, V, position t0 + j and mark)
 *   at the slot a policy chose.
 * - {@linkcode appendScatter}: the plain append of a decode step and its scatter in one dispatch.
 * - {@linkcode accountStep}: after the last layer of a step, live = Σ lengths, peak, and in
 *   decode the 64-bit KV-read counter (SPEC §8).
 *
 * Uniforms are the kernel's `struct Params` by name; fields an entry does not use are 0.
 *
 * @example The dense policy's decode step on layer 0 (one new token per page)
 * ```ts ignore
 * appendSlots(storage, 0, 1, firstReal, dest, true); // dest[p] = len, lens += 1
 * scatterEntries(storage, 0, dest, marks, k, v, t0);   // k, v: [B, Hkv, 1, D]
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { dispatchBound } from "./dispatch_bound.ts";
import type { PagedKvStorage } from "./paged_storage.ts";

/**
 * The plain append, part 1 (prefill, before attention; kernel `append_marks`): the chunk's
 * marks, `marks[p, j] = 2` for left padding (j < firstReal[b], b = p / Hkv), else 0.
 *
 * @param n Tokens per page in the chunk.
 * @param firstReal `[B]` i32 first real token of each row in the chunk (n if none).
 * @param marks `[pages, n]` i32, written.
 */
export function appendMarks(
  s: PagedKvStorage,
  n: number,
  firstReal: GPUBuffer,
  marks: GPUBuffer,
): void {
  run(s, "append_marks", 64, { 4: marks, 11: firstReal }, Math.ceil((s.pages * n) / 64), { n });
}

/**
 * The plain append, part 2 (kernel `append_slots`; in prefill after attention): chunk entry j
 * of page p goes to slot `len + j − f` (f = firstReal[b], 0 in decode), padding to −1 (not
 * stored), and `lens[layer, p] += n − f`. Blocks for the new length must exist
 * (`PagedKvStorage.ensure`).
 *
 * @param firstReal `[B]` i32 first real token of each row (n if none); not read in decode.
 * @param dest `[pages, n]` i32 slots, written.
 * @param decode A decode step (n = 1, no padding).
 */
export function appendSlots(
  s: PagedKvStorage,
  layer: number,
  n: number,
  firstReal: GPUBuffer,
  dest: GPUBuffer,
  decode: boolean,
): void {
  s.checkLayer(layer);
  const fields = { n, lbase: layer * s.pages, decode: decode ? 1 : 0 };
  run(s, "append_slots", 64, { 1: s.lens, 3: dest, 11: firstReal }, s.pages, fields);
}

/**
 * Writes chunk entry j of page p at slot `dest[p, j]` (skipped when negative), with meta
 * (t0 + j, marks[p, j]) (kernel `scatter`). Slots must be below the page's allocated capacity.
 *
 * @param dest `[pages, n]` i32 slots chosen by a policy.
 * @param marks `[pages, n]` i32 marks to store.
 * @param k `[B, Hkv, n, D]`
 * @param v `[B, Hkv, n, D]`
 * @param t0 Position of chunk entry 0.
 */
export function scatterEntries(
  s: PagedKvStorage,
  layer: number,
  dest: GPUBuffer,
  marks: GPUBuffer,
  k: Tensor,
  v: Tensor,
  t0: number,
): void {
  s.checkLayer(layer);
  const n = k.shape[2];
  const pool = s.pool(layer);
  const bufs = {
    2: s.table,
    3: dest,
    4: marks,
    5: k.buffer,
    6: v.buffer,
    7: pool.meta,
    8: pool.k,
    9: pool.v,
  };
  const groups = Math.ceil((s.pages * n * s.headDim) / 256);
  run(s, "scatter", 256, bufs, groups, { n, lbase: layer * s.pages, t0 });
}

/**
 * The dense policy's decode append fused with the scatter (kernel `append_scatter`, one
 * workgroup per page): the new entry of page p goes to slot `len`, `lens += 1`, `dest[p] = len`,
 * its K and V rows are copied there with meta (t0, 0). Leaves the storage exactly as
 * {@linkcode appendSlots} (decode) then {@linkcode scatterEntries} with mark 0 do, in one
 * dispatch instead of two; their CPU twins are its twin.
 *
 * @param k `[B, Hkv, 1, D]`
 * @param v `[B, Hkv, 1, D]`
 * @param t0 Position of the new token.
 * @param dest `[pages]` i32 slots, written.
 */
export function appendScatter(
  s: PagedKvStorage,
  layer: number,
  k: Tensor,
  v: Tensor,
  t0: number,
  dest: GPUBuffer,
): void {
  s.checkLayer(layer);
  const pool = s.pool(layer);
  const bufs = {
    1: s.lens,
    2: s.table,
    3: dest,
    5: k.buffer,
    6: v.buffer,
    7: pool.meta,
    8: pool.k,
    9: pool.v,
  };
  run(s, "append_scatter", 64, bufs, s.pages, { n: 1, lbase: layer * s.pages, t0 });
}

/**
 * Ends a step on the GPU (kernel `account`): live = Σ lengths over all layers and pages,
 * peak = max(peak, live), and in decode reads += live and one more decode step; else one more
 * prefill chunk.
 */
export function accountStep(s: PagedKvStorage, decode: boolean): void {
  const fields = { count: s.layers * s.pages, decode: decode ? 1 : 0 };
  run(s, "account", 256, { 1: s.lens, 10: s.counters }, 1, fields);
}

type Field = "n" | "lbase" | "t0" | "count" | "decode";

/** Records entry point `entry` of `shaders/paged_kv.wgsl` over `groups` workgroups. */
function run(
  s: PagedKvStorage,
  entry: string,
  wg: number,
  byBinding: Record<number, GPUBuffer>,
  groups: number,
  fields: Partial<Record<Field, number>>,
): void {
  const kern = s.gpu.kernel({
    shader: "paged_kv",
    entry,
    defines: { T: s.dtype },
    constants: { WG: wg },
  });
  const bufs: (GPUBuffer | undefined)[] = [];
  for (const [b, buf] of Object.entries(byBinding)) bufs[Number(b)] = buf;
  dispatchBound(s.gpu, kern, bufs, Gpu.grid(groups), {
    pages: s.pages,
    hkv: s.kvHeads,
    n: 0,
    d: s.headDim,
    bs: s.blockSize,
    mb: s.tableWidth,
    lbase: 0,
    t0: 0,
    count: 0,
    decode: 0,
    ...fields,
  });
}
