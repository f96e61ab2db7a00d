/**
 * `@hyperscale/dms/io`: file formats only — safetensors (single file and sharded checkpoints,
 * chunked reads, atomic writes), Hugging Face `tokenizer.json` with the chat template, and hub
 * downloads into the Hugging Face hub cache (the layout Python fills). Nothing here knows about
 * transformers.
 *
 * @example List the tensors of a checkpoint
 * ```ts ignore
 * import { openCheckpoint } from "@hyperscale/dms/io";
 * using ckpt = await openCheckpoint("path/to/hf-folder");
 * for (const [name, t] of ckpt.tensors) console.log(name, t.dtype, t.shape);
 * ```
 *
 * @module
 */

export {
  type ChatMessage,
  type ChatTemplateOptions,
  checkTokenizerMatchesConfig,
  loadTokenizer,
  type Tokenizer,
} from "./tokenizer.ts";
export { downloadModel, type DownloadOptions, findCachedModel, hubCacheDir } from "./hub.ts";
export {
  Checkpoint,
  openCheckpoint,
  type OpenOptions,
  openSafetensors,
  type RawTensor,
  type RowRange,
  type SafetensorsDtype,
  SafetensorsFile,
  type TensorData,
  type TensorInfo,
  type TensorInput,
  type TensorReader,
  writeSafetensors,
} from "./safetensors.ts";
