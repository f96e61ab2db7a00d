/**
 * Copying one sequence of a paged storage into every sequence of another (kernel `copy_pages`,
 * `shaders/paged_copy.wgsl`): the storage half of `PagedKvCache.copySequenceFrom`,
 * which samples parallel chains from one prompt prefilled once instead of B times. Page p = b·Hkv
 * + h of the destination receives the live entries of source page row·Hkv + h slot for slot (K,
 * V, position, mark); the destination's lengths and CPU bounds become the source's. One
 * readback (the source lengths), one dispatch per layer.
 *
 * @example The storage copy under a cache (what `copySequenceFrom` does first)
 * ```ts ignore
 * const lens = await copySequence(prompt.storage, chains.storage, 0);
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { dispatchBound } from "./dispatch_bound.ts";
import type { PagedKvStorage, PageEntries } from "./paged_storage.ts";

/**
 * Copies sequence `row` of `src` into every sequence of `dst` (a fresh storage of the same
 * layers, KV heads, head dim, dtype and block size). Allocates the destination's blocks.
 *
 * @returns The source's lengths `[layers · srcPages]` (read back once).
 * @throws {RangeError} For a row outside the source's batch or a geometry that differs (naming
 *   the field).
 */
export async function copySequence(
  src: PagedKvStorage,
  dst: PagedKvStorage,
  row: number,
): Promise<Int32Array> {
  if (!Number.isInteger(row) || row < 0 || row >= src.batch) {
    throw new RangeError(`copySequence: row must be an integer in 0..${src.batch - 1}, got ${row}`);
  }
  for (const key of ["layers", "kvHeads", "headDim", "dtype", "blockSize"] as const) {
    if (src[key] !== dst[key]) {
      throw new RangeError(`copySequence: ${key} differs (source ${src[key]}, copy ${dst[key]})`);
    }
  }
  const rowBytes = src.headDim * (src.dtype === "f16" ? 2 : 4);
  if (rowBytes % 4 !== 0) {
    throw new RangeError(`copySequence: a K/V row of ${rowBytes} bytes is not whole 32-bit words`);
  }
  const gpu = src.gpu, hkv = src.kvHeads, base = row * hkv;
  const lens = await src.readLengths();
  const dstLens = new Int32Array(dst.layers * dst.pages);
  for (let l = 0; l < dst.layers; l++) {
    const of = (p: number) => lens[l * src.pages + base + (p % hkv)];
    dst.ensure(l, of);
    for (let p = 0; p < dst.pages; p++) dstLens[l * dst.pages + p] = of(p);
  }
  gpu.write(dst.lens, dstLens);
  const kernel = gpu.kernel({ shader: "paged_copy", entry: "copy_pages", constants: { WG: 256 } });
  for (let l = 0; l < dst.layers; l++) {
    let maxLen = 0;
    for (let h = 0; h < hkv; h++) maxLen = Math.max(maxLen, lens[l * src.pages + base + h]);
    if (maxLen === 0) continue;
    const a = src.pool(l), b = dst.pool(l), rw = rowBytes / 4;
    const bufs = [undefined, src.lens, src.table, a.k, a.v, a.meta, dst.table, b.k, b.v, b.meta];
    const threads = dst.pages * maxLen * rw;
    dispatchBound(gpu, kernel, bufs, Gpu.grid(Math.ceil(threads / 256)), {
      pages: dst.pages,
      hkv,
      src_base: base,
      rw,
      bs: src.blockSize,
      mb_src: src.tableWidth,
      mb_dst: dst.tableWidth,
      l_src: l * src.pages,
      l_dst: l * dst.pages,
      max_len: maxLen,
    });
  }
  return lens;
}

/**
 * CPU twin of {@linkcode copySequence} on one layer's entries: the destination's pages in slot
 * order, page b·Hkv + h a copy of source page row·Hkv + h.
 *
 * @param src One layer's source pages (`PagedKvStorage.snapshot`), `[srcBatch · Hkv]`.
 * @param batch Sequences of the destination.
 */
export function copySequenceReference(
  src: readonly PageEntries[],
  kvHeads: number,
  row: number,
  batch: number,
): PageEntries[] {
  return Array.from({ length: batch * kvHeads }, (_, p) => {
    const e = src[row * kvHeads + (p % kvHeads)];
    return { positions: [...e.positions], marks: [...e.marks] };
  });
}
