/**
 * Embedding gather `out[n] = table[ids[n]]`, with chunked tables for
 * vocabularies bigger than one storage binding (e.g. 151936 × 4096 f16 is
 * 1.2 GB, over many devices' 128 MiB–1 GiB `maxStorageBufferBindingSize`).
 *
 * Chunked use: split the table by rows into chunks `[rows_k, H]` starting at
 * vocab row `rowOffset_k`, allocate `out` once, and launch once per chunk with
 * `{ rowOffset: rowOffset_k, out }`; each launch fills only the tokens whose id
 * falls in its chunk and leaves the others untouched.
 *
 * Out-of-range ids: without `opts.out`, tokens whose id is outside
 * `[rowOffset, rowOffset + V)` (negative or ≥ the vocab for a whole table) get
 * a row of zeros. With `opts.out`, they are left untouched, so ids that no
 * chunk holds keep whatever `out` held (allocate it with `Tensor.zeros` to get
 * zeros). No error is raised on the GPU: the CPU side of a model validates ids.
 *
 * Kernels (`shaders/embedding.wgsl`):
 * - `embedding`: naive, one thread per output element (coalesced along H),
 *   256 per workgroup, 2-D grid when large. A pure copy; no faster variant needed.
 *
 * @example Two chunks of a 6-row vocab
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { embedding } from "./embedding.ts";
 * const gpu = await getGpu();
 * using ids = Tensor.fromArray(gpu, [5, 0, 3], [3], "i32");
 * using lo = Tensor.fromArray(gpu, [0, 0, 1, 1, 2, 2], [3, 2]); // vocab rows 0..2
 * using hi = Tensor.fromArray(gpu, [3, 3, 4, 4, 5, 5], [3, 2]); // vocab rows 3..5
 * using out = Tensor.zeros(gpu, [3, 2]);
 * embedding(ids, lo, { rowOffset: 0, out });
 * embedding(ids, hi, { rowOffset: 3, out });
 * console.log(await out.toArray()); // [5, 5, 0, 0, 3, 3]
 * ```
 *
 * @module
 */

import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { assertFloat, grid1d, output } from "./launch.ts";

const WG = 256;
const I32_MAX = 2 ** 31 - 1;

/** Options for {@linkcode embedding}. */
export interface EmbeddingOptions {
  /** Vocab id of the table's first row (chunked tables). Default 0. */
  rowOffset?: number;
  /**
   * Preallocated output `[...ids.shape, H]` of the table's dtype. When given,
   * tokens whose id is outside this chunk are left untouched (not zeroed) and
   * this tensor is returned.
   */
  out?: Tensor;
}

/**
 * Gathers table rows: `out[..., :] = table[ids[...] - rowOffset, :]`.
 *
 * @param ids i32 `[N]` (any shape `[...]` works: the output is `[..., H]`).
 * @param table `[V, H]` f32 or f16: the whole vocab, or the chunk of rows
 *   `[rowOffset, rowOffset + V)`.
 * @param opts `rowOffset` and `out` for chunked tables.
 * @returns `[N, H]` of the table's dtype (`opts.out` when given).
 * @throws {TypeError} When ids are not i32, the table is not float, or out's dtype differs.
 * @throws {RangeError} When table is not rank 2, out's shape is wrong or rowOffset is invalid.
 */
export function embedding(
  ids: Tensor,
  table: Tensor,
  opts: EmbeddingOptions = {},
): Tensor<FloatDType> {
  if (ids.dtype !== "i32") {
    throw new TypeError(
      `embedding() ids: expected an i32 tensor, got ${ids.dtype}${fmtShape(ids.shape)}`,
    );
  }
  assertFloat(table, "embedding() table");
  if (table.rank !== 2) {
    throw new RangeError(`embedding() table: expected shape [V, H], got ${fmtShape(table.shape)}`);
  }
  const [rows, h] = table.shape;
  const rowOffset = opts.rowOffset ?? 0;
  if (!(Number.isInteger(rowOffset) && rowOffset >= 0 && rowOffset + rows <= I32_MAX)) {
    throw new RangeError(
      `embedding() rowOffset: expected an integer >= 0 with rowOffset + V <= 2^31-1, got ${rowOffset} (V = ${rows})`,
    );
  }
  const shape = [...ids.shape, h];
  let out: Tensor<FloatDType>;
  if (opts.out) {
    const o = opts.out;
    if (o.dtype !== table.dtype) {
      throw new TypeError(
        `embedding() out: expected dtype ${table.dtype} like table ${
          fmtShape(table.shape)
        }, got ${o.dtype}`,
      );
    }
    if (o.rank !== shape.length || o.shape.some((d, i) => d !== shape[i])) {
      throw new RangeError(
        `embedding() out: expected shape ${fmtShape(shape)} for ids ${
          fmtShape(ids.shape)
        } and table ${fmtShape(table.shape)}, got ${fmtShape(o.shape)}`,
      );
    }
    out = o as Tensor<FloatDType>;
  } else {
    out = output(table.gpu, shape, table.dtype);
  }
  const n = ids.size * h;
  if (n === 0) return out;
  const gpu = table.gpu;
  const k = gpu.kernel({
    shader: "embedding",
    entry: "embedding",
    defines: { T: table.dtype },
    constants: { WG },
  });
  gpu.dispatch(
    k,
    [ids.buffer, table.buffer, out.buffer],
    grid1d(n, WG),
    { n, h, rows, row_offset: rowOffset, zero_missing: opts.out ? 0 : 1 },
  );
  return out;
}

/**
 * CPU reference for {@linkcode embedding}: a plain loop over tokens.
 *
 * @param ids Token ids `[N]`.
 * @param table Row-major `[V, H]` (a chunk starting at vocab row `rowOffset`).
 * @param h Hidden size H.
 * @param rowOffset Vocab id of the table's first row.
 * @param out Previous contents of `out` `[N, H]` (chunked mode: rows outside the
 *   chunk are kept); without it, such rows are zeros.
 * @returns `[N, H]`.
 */
export function embeddingReference(
  ids: ArrayLike<number>,
  table: ArrayLike<number>,
  h: number,
  rowOffset = 0,
  out?: ArrayLike<number>,
): Float32Array {
  const rows = h > 0 ? table.length / h : 0;
  const res = out ? Float32Array.from(out) : new Float32Array(ids.length * h);
  for (let n = 0; n < ids.length; n++) {
    const r = ids[n] - rowOffset;
    if (r >= 0 && r < rows) {
      for (let c = 0; c < h; c++) res[n * h + c] = table[r * h + c];
    } else if (!out) {
      res.fill(0, n * h, (n + 1) * h);
    }
  }
  return res;
}
