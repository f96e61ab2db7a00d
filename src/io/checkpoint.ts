/**
 * Sharded checkpoints: the weights of a Hugging Face model folder, either one
 * `model.safetensors` or the shards listed by `model.safetensors.index.json`
 * (`weight_map`: tensor name → shard file), behind the same per-tensor API as one file.
 *
 * ```
 * folder/model.safetensors.index.json   { "metadata": {...}, "weight_map": { "<tensor>": "<shard>" } }
 * folder/model-00001-of-00002.safetensors
 * folder/model-00002-of-00002.safetensors
 * ```
 *
 * Shard paths must be plain relative paths inside the folder ({@link isSafeRelativePath}).
 * Every error names the index file, the shard and the tensor.
 *
 * @module
 */

import { z } from "zod";
import {
  type RawTensor,
  type TensorData,
  type TensorInfo,
  zodMessage,
} from "./safetensors_codec.ts";
import {
  type OpenOptions,
  openSafetensors,
  type RowRange,
  type SafetensorsFile,
  type TensorReader,
} from "./safetensors_reader.ts";

const indexSchema = z.object({
  metadata: z.record(z.string(), z.unknown()).nullish(),
  weight_map: z.record(z.string(), z.string(), {
    error: "expected an object mapping tensor names to shard file names",
  }),
});

/** Name of a single-file checkpoint inside a model folder. */
export const SINGLE_FILE = "model.safetensors";
/** Name of the shard index inside a model folder. */
export const INDEX_FILE = "model.safetensors.index.json";

function join(dir: string, file: string): string {
  return dir.endsWith("/") ? dir + file : `${dir}/${file}`;
}

/**
 * A plain relative path inside the folder: no absolute path, no `..`, no backslash.
 *
 * @param p a path from an index or a repository listing, e.g. `model-00001-of-00002.safetensors`
 * @returns true if joining it to a folder stays inside that folder
 */
export function isSafeRelativePath(p: string): boolean {
  return p.length > 0 && !p.startsWith("/") && !p.includes("\\") &&
    p.split("/").every((s) => s !== "" && s !== "." && s !== "..");
}

/**
 * The weights of a model folder: one `model.safetensors`, or the shards listed by
 * `model.safetensors.index.json` (`weight_map`: tensor name → shard file). Same per-tensor API
 * as {@link SafetensorsFile}; `tensors.get(name).file` says which shard holds a tensor.
 */
export class Checkpoint implements TensorReader {
  /** The folder (or file) the checkpoint was opened from. */
  readonly path: string;
  /** Open shard files (one for a single-file checkpoint). */
  readonly files: readonly SafetensorsFile[];
  /** Every tensor, by name (from the index for a sharded checkpoint). */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  #owner: Map<string, SafetensorsFile>;

  /** Use {@link openCheckpoint}. @internal */
  constructor(path: string, files: SafetensorsFile[], owner: Map<string, SafetensorsFile>) {
    this.path = path;
    this.files = files;
    this.#owner = owner;
    const tensors = new Map<string, TensorInfo>();
    for (const [name, f] of owner) tensors.set(name, f.info(name));
    this.tensors = tensors;
  }

  #file(name: string): SafetensorsFile {
    const f = this.#owner.get(name);
    if (!f) throw new Error(`Tensor "${name}" not found in checkpoint ${this.path}`);
    return f;
  }

  /** Reads rows of a tensor, converted; see {@link SafetensorsFile.read}. */
  async read(name: string, range?: RowRange): Promise<TensorData> {
    return await this.#file(name).read(name, range);
  }

  /** Reads rows of a tensor as stored bytes; see {@link SafetensorsFile.readRaw}. */
  async readRaw(name: string, range?: RowRange): Promise<RawTensor> {
    return await this.#file(name).readRaw(name, range);
  }

  /** Closes every shard. */
  close(): void {
    for (const f of this.files) f.close();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Opens the shards an index lists; closes those already open if one fails. */
async function openSharded(indexPath: string, options?: OpenOptions): Promise<Checkpoint> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (e) {
    if (e instanceof SyntaxError) throw new SyntaxError(`${indexPath}: ${e.message}`);
    throw e;
  }
  const r = indexSchema.safeParse(json);
  if (!r.success) throw new SyntaxError(`${indexPath}: ${zodMessage(r.error)}`);
  const dir = indexPath.includes("/") ? indexPath.slice(0, indexPath.lastIndexOf("/")) : ".";
  const byShard = new Map<string, string[]>();
  for (const [tensor, shard] of Object.entries(r.data.weight_map)) {
    if (!isSafeRelativePath(shard)) {
      throw new SyntaxError(`${indexPath}: tensor "${tensor}" maps to unsafe path "${shard}"`);
    }
    byShard.set(shard, [...(byShard.get(shard) ?? []), tensor]);
  }
  const files: SafetensorsFile[] = [];
  const owner = new Map<string, SafetensorsFile>();
  try {
    for (const [shard, names] of byShard) {
      const path = join(dir, shard);
      if (!(await isFile(path))) {
        throw new Error(
          `${indexPath}: shard ${path} (holding tensor "${names[0]}") not found`,
        );
      }
      const f = await openSafetensors(path, options);
      files.push(f);
      for (const name of names) {
        if (!f.tensors.has(name)) {
          throw new Error(
            `${indexPath}: tensor "${name}" is mapped to ${path}, which does not contain it`,
          );
        }
        owner.set(name, f);
      }
    }
  } catch (e) {
    for (const f of files) f.close();
    throw e;
  }
  return new Checkpoint(indexPath, files, owner);
}

/**
 * Opens the weights of a model: a folder holding `model.safetensors` or
 * `model.safetensors.index.json` plus its shards, or a path to either file.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "./checkpoint.ts";
 * using ckpt = await openCheckpoint("testdata/conformance/B1_infer_qneuron_head/weights.safetensors");
 * const emb = await ckpt.read("model.embed_tokens.weight", { rowStart: 0, rowEnd: 2 }); // [2, 64]
 * ```
 *
 * @param path folder, `*.safetensors` file or `*.index.json` file
 * @param options chunk size for reads
 * @returns the checkpoint; close it when done
 * @throws Error naming the file (and tensor) if the folder holds no weights, a shard is missing,
 *   or the index maps a tensor to a shard that lacks it; header errors as in {@link openSafetensors}
 */
export async function openCheckpoint(path: string, options?: OpenOptions): Promise<Checkpoint> {
  const stat = await Deno.stat(path);
  if (stat.isFile) {
    if (path.endsWith(".json")) return openSharded(path, options);
    const f = await openSafetensors(path, options);
    return new Checkpoint(path, [f], new Map([...f.tensors.keys()].map((n) => [n, f] as const)));
  }
  const single = join(path, SINGLE_FILE), index = join(path, INDEX_FILE);
  if (await isFile(single)) return openCheckpoint(single, options);
  if (await isFile(index)) return openSharded(index, options);
  throw new Error(`No weights in ${path}: expected ${SINGLE_FILE} or ${INDEX_FILE}`);
}
