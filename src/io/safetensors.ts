/**
 * safetensors: reader and writer for the Hugging Face tensor file format, in one import.
 *
 * This module only re-exports; each concept has its own module:
 *
 * - `safetensors_codec.ts`: dtype table, header schema and validation, element conversions
 *   (F16/BF16 ↔ f32, I64 → int32), {@link decodeSafetensors} for a file held in memory.
 * - `safetensors_reader.ts`: {@link openSafetensors} / {@link SafetensorsFile}, one file read
 *   row range by row range in chunks, never whole.
 * - `checkpoint.ts`: {@link openCheckpoint} / {@link Checkpoint}, a model folder's
 *   `model.safetensors` or `model.safetensors.index.json` plus shards.
 * - `safetensors_writer.ts`: {@link writeSafetensors} (atomic: temporary file, then rename) and
 *   {@link encodeSafetensors}.
 *
 * @example Write, open, read rows
 * ```ts
 * import { openSafetensors, writeSafetensors } from "./safetensors.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensors(path, {
 *   w: { dtype: "BF16", shape: [3, 2], data: [1, 2, 3, 4, 5, 6] },
 * });
 * using file = await openSafetensors(path);
 * const rows = await file.read("w", { rowStart: 1, rowEnd: 3 });
 * console.log(rows.shape, rows.data); // [2, 2] Float32Array(4) [3, 4, 5, 6]
 * ```
 *
 * @module
 */

export {
  decodeSafetensors,
  dtypeBytes,
  f32ToBf16Bits,
  MAX_HEADER_BYTES,
  type RawTensor,
  SAFETENSORS_DTYPES,
  type SafetensorsDtype,
  type TensorData,
  type TensorInfo,
} from "./safetensors_codec.ts";
export {
  DEFAULT_CHUNK_BYTES,
  type OpenOptions,
  openSafetensors,
  type RowRange,
  SafetensorsFile,
  type TensorReader,
} from "./safetensors_reader.ts";
export {
  Checkpoint,
  INDEX_FILE,
  isSafeRelativePath,
  openCheckpoint,
  SINGLE_FILE,
} from "./checkpoint.ts";
export { encodeSafetensors, type TensorInput, writeSafetensors } from "./safetensors_writer.ts";
