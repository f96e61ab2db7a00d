/**
 * Backward of the embedding gather (`embedding` in `./embedding.ts`):
 * `embeddingBackward` and its f64 CPU twin `embeddingBackwardReference`.
 *
 * ```
 * forward:  out[n, :] = table[ids[n], :]          ids:[N] i32, table:[V, H]
 * dW[v, :]  = Σ_{n : ids[n] = v} dy[n, :]          (summed in increasing n)
 * ```
 *
 * Chunked tables (as `ChunkedMatrix` in `../model/weights.ts`, for vocabularies
 * larger than one storage binding): call once per chunk with
 * `{ rowOffset: chunk.rowStart, rows: chunk.tensor.shape[0] }`; each call
 * returns that chunk's `[rows, H]` gradient and ignores tokens outside it. Tied
 * embeddings: pass the LM head's chunk gradient as `accumulate` to add the
 * embedding's contribution into it in place.
 *
 * Kernels (`shaders/embedding_backward.wgsl`), f32, no float atomics; both sum
 * each output in increasing token order, so they agree bit for bit:
 *
 * | variant | what it is | cost |
 * | ------- | ---------- | ---- |
 * | `naive` | one thread per `(v, h)` of the chunk scanning all N ids | O(V·H·N): the readable definition, fine for tiny vocabularies |
 * | `sorted` (default) | `rank`: a stable sort of the tokens by id (each token counts the ids before it); `segment`: one thread per (sorted token, h), the first token of each run of equal ids sums the run | O(N² + N·H), independent of the vocabulary |
 *
 * @example Two tokens with the same id add up
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { embeddingBackward } from "./embedding_backward.ts";
 * const gpu = await getGpu();
 * using ids = Tensor.fromArray(gpu, [2, 0, 2], [3], "i32");
 * using dy = Tensor.fromArray(gpu, [1, 1, 2, 2, 3, 3], [3, 2]); // dy:[N, H]
 * using dW = embeddingBackward(ids, dy, 4); // dW:[V=4, H=2]
 * console.log(await dW.toArray()); // [2, 2, 0, 0, 4, 4, 0, 0]
 * ```
 *
 * @module
 */

import { fmtShape, Tensor } from "../tensor/tensor.ts";
import { grid1d } from "./launch.ts";

const WG = 256;
const I32_MAX = 2 ** 31 - 1;

/** Kernel choice of {@linkcode embeddingBackward}. Default `sorted`. */
export type EmbeddingBackwardVariant = "naive" | "sorted";

/** Options of {@linkcode embeddingBackward}. */
export interface EmbeddingBackwardOptions {
  /** Vocab id of the chunk's first row (chunked tables). Default 0. */
  rowOffset?: number;
  /** Vocab rows of the chunk. Default `vocab - rowOffset`. */
  rows?: number;
  /** An existing f32 gradient `[rows, H]` to add into in place; it is returned. */
  accumulate?: Tensor;
  /** Force a kernel (tests, benchmarks). Default `sorted`. */
  variant?: EmbeddingBackwardVariant;
}

/**
 * Gradient of `embedding(ids, table)` with respect to the table (or one row chunk of it).
 *
 * @param ids i32 `[...]` token ids as given to the forward (ids outside the chunk are skipped).
 * @param dy Upstream gradient `[..., H]` (ids' shape plus H), f32.
 * @param vocab Vocabulary size V (rows of the whole table).
 * @param opts Chunk (`rowOffset`, `rows`), in-place accumulation, kernel.
 * @returns `dW:[rows, H]`, a new tensor or `opts.accumulate`.
 * @throws {TypeError} When ids are not i32 or dy / accumulate are not f32.
 * @throws {RangeError} When dy's shape does not match ids (naming both), the chunk does not fit
 *   in the vocabulary, or accumulate's shape is wrong.
 */
export function embeddingBackward(
  ids: Tensor,
  dy: Tensor,
  vocab: number,
  opts: EmbeddingBackwardOptions = {},
): Tensor<"f32"> {
  const op = "embeddingBackward()";
  if (ids.dtype !== "i32") {
    throw new TypeError(
      `${op} ids: expected an i32 tensor, got ${ids.dtype}${fmtShape(ids.shape)}`,
    );
  }
  if (dy.dtype !== "f32") {
    throw new TypeError(`${op} dy: expected an f32 tensor, got ${dy.dtype}${fmtShape(dy.shape)}`);
  }
  const h = dy.shape[dy.rank - 1];
  if (dy.rank !== ids.rank + 1 || ids.shape.some((d, i) => d !== dy.shape[i])) {
    throw new RangeError(
      `${op} dy: expected shape [${[...ids.shape, "H"].join(", ")}] for ids ${
        fmtShape(ids.shape)
      }, got ${fmtShape(dy.shape)}`,
    );
  }
  if (!(Number.isInteger(vocab) && vocab >= 0 && vocab <= I32_MAX)) {
    throw new RangeError(`${op} vocab: expected an integer in 0..2^31-1, got ${vocab}`);
  }
  const rowOffset = opts.rowOffset ?? 0;
  const rows = opts.rows ?? vocab - rowOffset;
  if (
    !(Number.isInteger(rowOffset) && Number.isInteger(rows) && rowOffset >= 0 && rows >= 0 &&
      rowOffset + rows <= vocab)
  ) {
    throw new RangeError(
      `${op} rowOffset/rows: chunk rows ${rowOffset}..${rowOffset + rows - 1} do not fit in ` +
        `vocab ${vocab}`,
    );
  }
  const variant = opts.variant ?? "sorted";
  if (variant !== "naive" && variant !== "sorted") {
    throw new RangeError(`${op} variant: expected "naive" or "sorted", got "${variant}"`);
  }
  const gpu = dy.gpu;
  const acc = opts.accumulate;
  if (acc) {
    if (acc.dtype !== "f32") {
      throw new TypeError(`${op} accumulate: expected an f32 tensor, got ${acc.dtype}`);
    }
    if (acc.rank !== 2 || acc.shape[0] !== rows || acc.shape[1] !== h) {
      throw new RangeError(
        `${op} accumulate: expected shape [${rows}, ${h}], got ${fmtShape(acc.shape)}`,
      );
    }
  }
  const limit = gpu.limits.maxStorageBufferBindingSize;
  for (const [what, bytes] of [["dy", dy.size * 4], ["dW", rows * h * 4]] as const) {
    if (bytes > limit) {
      throw new RangeError(
        `${op} ${what}: ${bytes} bytes exceed the ${limit}-byte binding limit; ` +
          (what === "dy" ? "split the tokens" : "use smaller row chunks (rowOffset, rows)"),
      );
    }
  }
  // sorted writes only the rows some token hit: start from zeros unless accumulating.
  const dw =
    (acc ?? (variant === "sorted" ? Tensor.zeros : Tensor.empty)(gpu, [rows, h], "f32")) as Tensor<
      "f32"
    >;
  const n = ids.size;
  if (rows * h === 0 || (variant === "sorted" && n === 0)) return dw;
  const params = { n, h, rows, row_offset: rowOffset, accumulate: acc ? 1 : 0 };
  const kernel = (entry: string) =>
    gpu.kernel({ shader: "embedding_backward", entry, constants: { WG } });
  if (variant === "naive") {
    gpu.dispatch(kernel("naive"), [ids.buffer, dy.buffer, dw.buffer], grid1d(rows * h, WG), params);
    return dw;
  }
  using order = Tensor.empty(gpu, [n], "u32");
  gpu.dispatch(kernel("rank"), [ids.buffer, order.buffer], grid1d(n, WG), params);
  gpu.dispatch(
    kernel("segment"),
    [ids.buffer, dy.buffer, order.buffer, dw.buffer],
    grid1d(n * h, WG),
    params,
  );
  return dw;
}

/**
 * CPU twin of {@linkcode embeddingBackward}: a plain loop over tokens in f64.
 *
 * @param ids Token ids `[N]`.
 * @param dy Row-major `[N, H]`.
 * @param h Hidden size H.
 * @param rows Vocab rows of the chunk.
 * @param rowOffset Vocab id of the chunk's first row.
 * @returns `dW:[rows, H]` in f64.
 */
export function embeddingBackwardReference(
  ids: ArrayLike<number>,
  dy: ArrayLike<number>,
  h: number,
  rows: number,
  rowOffset = 0,
): Float64Array {
  if (dy.length !== ids.length * h) {
    throw new RangeError(
      `embeddingBackwardReference(): dy has ${dy.length} values, expected ${ids.length} × ${h}`,
    );
  }
  const dw = new Float64Array(rows * h);
  for (let n = 0; n < ids.length; n++) {
    const r = ids[n] - rowOffset;
    if (r < 0 || r >= rows) continue;
    for (let c = 0; c < h; c++) dw[r * h + c] += dy[n * h + c];
  }
  return dw;
}
