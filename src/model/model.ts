/**
 * Model entry points: {@linkcode createModel} (random weights from a config
 * and a seed), {@linkcode loadModel} (a Hugging Face folder: `config.json` +
 * `model.safetensors` or a sharded index) and {@linkcode saveModel}.
 *
 * @example A tiny random Qwen3 model, saved and loaded back
 * ```ts ignore
 * import { getGpu } from "../gpu/device.ts";
 * import { parseConfig } from "./config.ts";
 * import { createModel, loadModel, saveModel } from "./model.ts";
 * const gpu = await getGpu();
 * const config = parseConfig({ model_type: "qwen3", hidden_size: 64, num_hidden_layers: 2,
 *   num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 128,
 *   vocab_size: 256, max_position_embeddings: 512 });
 * const model = createModel(gpu, config, { seed: 1 });
 * await saveModel(model, "/tmp/tiny");
 * const again = await loadModel(gpu, "/tmp/tiny");
 * ```
 *
 * @module
 */

import { type Gpu, hostMemoryBytes } from "../gpu/device.ts";
import { writeTextFileAtomic } from "../io/atomic.ts";
import { openCheckpoint, type TensorInput, writeSafetensors } from "../io/safetensors.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { readTensors, type Tensor } from "../tensor/tensor.ts";
import {
  assertWeightsFit,
  configToJson,
  loadConfig,
  type ModelConfig,
  parseConfig,
} from "./config.ts";
import { Transformer } from "./transformer.ts";
import {
  disposeWeights,
  loadWeights,
  randomWeights,
  type WeightOptions,
  weightSpecs,
} from "./weights.ts";

/** Options of {@linkcode createModel} and {@linkcode loadModel}. */
export interface ModelOptions extends WeightOptions {
  /** Compute dtype; default f16 when the device has `shader-f16` and the checkpoint is not f32, else f32. */
  dtype?: FloatDType;
}

/** A decoder model on the GPU (see {@linkcode Transformer.forward}). */
export class Model extends Transformer {
  /** Frees the weights and buffers. */
  override dispose(): void {
    disposeWeights(this.weights);
    super.dispose();
  }
}

/** Bytes a model's weights may take: the device's memory limit, and at most the host's memory. */
/**
 * What a model's weights may take: the GPU's memory limit and the host's memory. Without
 * `--allow-sys` the host's memory is unknown; then 1 TiB, more than any single device holds,
 * still refuses an absurd config before anything is allocated.
 */
function weightBudget(gpu: Gpu): number {
  const host = hostMemoryBytes();
  return Math.min(gpu.memoryLimitBytes, Number.isFinite(host) ? host : 2 ** 40);
}

/** A model with random weights (seeded, generated on the GPU). */
export function createModel(
  gpu: Gpu,
  config: ModelConfig,
  opts: ModelOptions & { seed: number },
): Model {
  const dtype = opts.dtype ?? "f32";
  assertWeightsFit(config, dtype === "f16" ? 2 : 4, weightBudget(gpu));
  return new Model(gpu, config, randomWeights(gpu, config, opts.seed, { ...opts, dtype }), dtype);
}

/**
 * Loads a Hugging Face model folder (`config.json` and `model.safetensors` or
 * `model.safetensors.index.json` with shards).
 *
 * @throws {Error} Naming the file and the field or tensor that is missing or wrong.
 */
export async function loadModel(gpu: Gpu, folder: string, opts: ModelOptions = {}): Promise<Model> {
  const config = await loadConfig(folder);
  const dtype = opts.dtype ??
    (gpu.hasF16 && config.torchDtype && config.torchDtype !== "float32" ? "f16" : "f32");
  assertWeightsFit(config, dtype === "f16" ? 2 : 4, weightBudget(gpu), `${folder}/config.json`);
  using ckpt = await openCheckpoint(folder);
  const weights = await loadWeights(gpu, config, ckpt, folder, { ...opts, dtype });
  return new Model(gpu, config, weights, dtype);
}

/**
 * Reads every weight back to the CPU under its Hugging Face name (f32 values;
 * `lm_head.weight` omitted when tied).
 */
export async function exportWeights(
  model: Transformer,
): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const cfg = model.config, w = model.weights;
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  const specs = weightSpecs(cfg);
  const layerTensors: Tensor[] = specs.map((s) =>
    (w.layers[s.layer!] as unknown as Record<string, Tensor>)[s.key!]
  );
  const data = await readTensors(layerTensors);
  specs.forEach((s, i) => out.set(s.name, { shape: s.shape, data: data[i] as Float32Array }));
  const matrix = async (m: typeof w.embed) => {
    const parts = await readTensors(m.chunks.map((c) => c.tensor));
    const all = new Float32Array(m.rows * m.cols);
    m.chunks.forEach((c, i) => all.set(parts[i], c.rowStart * m.cols));
    return all;
  };
  const VH = [cfg.vocabSize, cfg.hiddenSize];
  out.set("model.embed_tokens.weight", { shape: VH, data: await matrix(w.embed) });
  if (!cfg.tieWordEmbeddings) {
    out.set("lm_head.weight", { shape: VH, data: await matrix(w.lmHead) });
  }
  out.set("model.norm.weight", {
    shape: [cfg.hiddenSize],
    data: (await readTensors([w.finalNorm]))[0] as Float32Array,
  });
  return out;
}

/**
 * Saves a model as a Hugging Face folder: `config.json` and `model.safetensors`
 * (F32, or F16 for an f16 model; `lm_head.weight` omitted when tied).
 */
export async function saveModel(model: Transformer, folder: string): Promise<void> {
  // A folder loadModel would refuse is not written (e.g. an ablation with dms_window_size 1:
  // the reference's config requires the window to exceed the paged block size, SPEC §5.2).
  const json = configToJson({
    ...model.config,
    torchDtype: model.dtype === "f16" ? "float16" : "float32",
  });
  try {
    parseConfig(json);
  } catch (e) {
    throw new RangeError(
      `saveModel: ${folder}/config.json would not load back: ${(e as Error).message}`,
    );
  }
  await Deno.mkdir(folder, { recursive: true });
  const st = model.dtype === "f16" ? "F16" : "F32";
  const tensors: Record<string, TensorInput> = {};
  for (const [name, t] of await exportWeights(model)) {
    tensors[name] = { dtype: st, shape: t.shape, data: t.data };
  }
  await writeSafetensors(`${folder}/model.safetensors`, tensors, { format: "pt" });
  await writeTextFileAtomic(`${folder}/config.json`, JSON.stringify(json, null, 2) + "\n");
}
