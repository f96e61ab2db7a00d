/**
 * The block table of the paged KV storage ({@linkcode ./paged_storage.ts}): which pool block
 * holds each slot of each page (SPEC §5.2 "Paging"). The CPU owns it (a mirror
 * `[rows, width]` i32, −1 = no block) and uploads it to the GPU lazily, when a kernel asks for
 * {@linkcode BlockTable.buffer} after a change.
 *
 * Row r = ℓ·pages + p is page p of layer ℓ. Slot s of a row lives in block
 * `table[r, s / blockSize]` at offset `s % blockSize`, i.e. at physical entry
 * `block · blockSize + s % blockSize` of the layer's pool. Rows only grow: a block is appended
 * with {@linkcode BlockTable.push}, never freed within a sequence. When a row needs more
 * columns than the width, the table widens geometrically (`ceil(1.5 · width)`, repeated),
 * copying every row, and the GPU buffer is reallocated.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { BlockTable } from "./block_table.ts";
 * const gpu = await getGpu();
 * using t = new BlockTable(gpu, 2, 16);
 * t.push(1, 7);
 * console.log(t.physical(1, 3), t.blocks[1]); // 115 1
 * ```
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";

/** Block table `[rows, width]` i32 with a CPU mirror and a lazily uploaded GPU copy. */
export class BlockTable {
  /** Rows: layers · pages. */
  readonly rows: number;
  /** Entries per block. */
  readonly blockSize: number;
  /** `[rows]` blocks each row holds (CPU). */
  readonly blocks: Int32Array;

  readonly #gpu: Gpu;
  #table: Int32Array;
  #width: number;
  #buf: GPUBuffer;
  #dirty = true;

  /**
   * An empty table (every entry −1) of `rows` rows, `width` columns to start with.
   *
   * @throws {RangeError} For sizes that are not integers ≥ 1.
   */
  constructor(gpu: Gpu, rows: number, blockSize: number, width = 4) {
    for (const [name, x] of [["rows", rows], ["blockSize", blockSize], ["width", width]] as const) {
      if (!Number.isInteger(x) || x < 1) {
        throw new RangeError(`BlockTable: ${name} must be an integer >= 1, got ${x}`);
      }
    }
    this.#gpu = gpu;
    this.rows = rows;
    this.blockSize = blockSize;
    this.blocks = new Int32Array(rows);
    this.#width = width;
    this.#table = new Int32Array(rows * width).fill(-1);
    this.#buf = gpu.alloc(this.#table.byteLength, "kv block table");
  }

  /** Columns (blocks per row) the table holds now. */
  get width(): number {
    return this.#width;
  }

  /** The table `[rows, width]` i32 on the GPU, uploaded first if it changed. */
  get buffer(): GPUBuffer {
    if (this.#dirty) {
      this.#gpu.write(this.#buf, this.#table);
      this.#dirty = false;
    }
    return this.#buf;
  }

  /** Appends pool block `block` to row `row` (widening the table when the row is full). */
  push(row: number, block: number): void {
    const nb = this.blocks[row];
    if (nb >= this.#width) this.#widen(nb + 1);
    this.#table[row * this.#width + nb] = block;
    this.blocks[row] = nb + 1;
    this.#dirty = true;
  }

  /**
   * Physical entry index of slot `slot` of row `row` in its layer's pool (CPU mirror).
   *
   * @throws {RangeError} When the row has no block for that slot.
   */
  physical(row: number, slot: number): number {
    const bs = this.blockSize;
    const blk = this.#table[row * this.#width + Math.floor(slot / bs)];
    if (blk === undefined || blk < 0) {
      throw new RangeError(`block table row ${row} has no block for slot ${slot}`);
    }
    return blk * bs + (slot % bs);
  }

  /** Frees the GPU buffer. */
  dispose(): void {
    this.#gpu.release(this.#buf);
  }

  /** `using table = ...` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  #widen(min: number): void {
    let w = this.#width;
    while (w < min) w = Math.ceil(1.5 * w);
    const t = new Int32Array(this.rows * w).fill(-1);
    for (let r = 0; r < this.rows; r++) {
      t.set(this.#table.subarray(r * this.#width, (r + 1) * this.#width), r * w);
    }
    this.#table = t;
    this.#width = w;
    this.#gpu.release(this.#buf);
    this.#buf = this.#gpu.alloc(t.byteLength, "kv block table");
    this.#dirty = true;
  }
}
