/**
 * Model weights on the GPU: names, expected shapes, loading from a
 * Hugging Face checkpoint (any `TensorReader`), random initialisation, and
 * the row-chunked matrices used for tensors bigger than one storage binding
 * (the embedding and LM head of real models exceed lavapipe's 128 MiB).
 *
 * Names follow Hugging Face: `model.layers.{l}.self_attn.q_proj.weight`, ...
 * Linear weights are `[out, in]` (`y = x·Wᵀ`).
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { bytesPer } from "../tensor/dtype.ts";
import { fmtShape, Tensor } from "../tensor/tensor.ts";
import { randomTensor } from "../tensor/random.ts";
import type { TensorReader } from "../io/safetensors.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import type { ModelConfig } from "./config.ts";

/** A matrix `[rows, cols]` stored as row blocks, each small enough for one storage binding. */
export interface ChunkedMatrix {
  /** Total rows (e.g. vocabulary size). */
  rows: number;
  /** Columns (e.g. hidden size). */
  cols: number;
  /** Row blocks in order: rows `rowStart .. rowStart + tensor.shape[0] − 1`. */
  chunks: { rowStart: number; tensor: Tensor<FloatDType> }[];
}

/** One decoder layer's weights. */
export interface LayerWeights {
  /** `input_layernorm.weight [H]`. */
  inputNorm: Tensor<FloatDType>;
  /** `self_attn.q_proj.weight [Hq·D, H]`. */
  qProj: Tensor<FloatDType>;
  /** `self_attn.k_proj.weight [Hkv·D, H]`. */
  kProj: Tensor<FloatDType>;
  /** `self_attn.v_proj.weight [Hkv·D, H]`. */
  vProj: Tensor<FloatDType>;
  /** `self_attn.o_proj.weight [H, Hq·D]`. */
  oProj: Tensor<FloatDType>;
  /** Biases of q/k/v/o when `attention_bias`. */
  qBias?: Tensor<FloatDType>;
  /** `k_proj.bias`. */
  kBias?: Tensor<FloatDType>;
  /** `v_proj.bias`. */
  vBias?: Tensor<FloatDType>;
  /** `o_proj.bias`. */
  oBias?: Tensor<FloatDType>;
  /** Qwen3 `self_attn.q_norm.weight [D]`. */
  qNorm?: Tensor<FloatDType>;
  /** Qwen3 `self_attn.k_norm.weight [D]`. */
  kNorm?: Tensor<FloatDType>;
  /** DMS adapter `self_attn.dms_proj_alpha.weight [Hkv, H]` (SPEC §1b). */
  alphaProj?: Tensor<FloatDType>;
  /** DMS adapter `self_attn.dms_proj_alpha_norm.weight [H]`. */
  alphaNorm?: Tensor<FloatDType>;
  /** DMS adapter bias `[Hkv]` when `attention_bias`. */
  alphaBias?: Tensor<FloatDType>;
  /** MLP biases when `mlp_bias` (Llama). */
  gateBias?: Tensor<FloatDType>;
  /** `mlp.up_proj.bias`. */
  upBias?: Tensor<FloatDType>;
  /** `mlp.down_proj.bias`. */
  downBias?: Tensor<FloatDType>;
  /** `post_attention_layernorm.weight [H]`. */
  postNorm: Tensor<FloatDType>;
  /** `mlp.gate_proj.weight [I, H]`. */
  gateProj: Tensor<FloatDType>;
  /** `mlp.up_proj.weight [I, H]`. */
  upProj: Tensor<FloatDType>;
  /** `mlp.down_proj.weight [H, I]`. */
  downProj: Tensor<FloatDType>;
}

/** All weights of a decoder model. */
export interface ModelWeights {
  /** `model.embed_tokens.weight [V, H]`, row-chunked. */
  embed: ChunkedMatrix;
  /** Decoder layers. */
  layers: LayerWeights[];
  /** `model.norm.weight [H]`. */
  finalNorm: Tensor<FloatDType>;
  /** `lm_head.weight [V, H]`, row-chunked; the same object as `embed` when tied. */
  lmHead: ChunkedMatrix;
}

type LayerKey = keyof LayerWeights;

/** The HF name and shape of every weight a config needs, in load order. */
export function weightSpecs(
  cfg: ModelConfig,
): { name: string; shape: number[]; layer?: number; key?: LayerKey }[] {
  const H = cfg.hiddenSize,
    D = cfg.headDim,
    Hq = cfg.numHeads,
    Hkv = cfg.numKvHeads,
    I = cfg.intermediateSize;
  const out: { name: string; shape: number[]; layer?: number; key?: LayerKey }[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const add = (key: LayerKey, name: string, shape: number[]) =>
      out.push({ name: p + name, shape, layer: l, key });
    add("inputNorm", "input_layernorm.weight", [H]);
    add("qProj", "self_attn.q_proj.weight", [Hq * D, H]);
    add("kProj", "self_attn.k_proj.weight", [Hkv * D, H]);
    add("vProj", "self_attn.v_proj.weight", [Hkv * D, H]);
    add("oProj", "self_attn.o_proj.weight", [H, Hq * D]);
    if (cfg.attentionBias) {
      add("qBias", "self_attn.q_proj.bias", [Hq * D]);
      add("kBias", "self_attn.k_proj.bias", [Hkv * D]);
      add("vBias", "self_attn.v_proj.bias", [Hkv * D]);
      add("oBias", "self_attn.o_proj.bias", [H]);
    }
    if (cfg.modelType === "qwen3") {
      add("qNorm", "self_attn.q_norm.weight", [D]);
      add("kNorm", "self_attn.k_norm.weight", [D]);
    }
    if (cfg.dms.separateAlpha) {
      add("alphaProj", "self_attn.dms_proj_alpha.weight", [Hkv, H]);
      add("alphaNorm", "self_attn.dms_proj_alpha_norm.weight", [H]);
      if (cfg.attentionBias) add("alphaBias", "self_attn.dms_proj_alpha.bias", [Hkv]);
    }
    add("postNorm", "post_attention_layernorm.weight", [H]);
    add("gateProj", "mlp.gate_proj.weight", [I, H]);
    add("upProj", "mlp.up_proj.weight", [I, H]);
    add("downProj", "mlp.down_proj.weight", [H, I]);
    if (cfg.mlpBias) {
      add("gateBias", "mlp.gate_proj.bias", [I]);
      add("upBias", "mlp.up_proj.bias", [I]);
      add("downBias", "mlp.down_proj.bias", [H]);
    }
  }
  return out;
}

/** Rows per chunk so that one chunk fits a storage binding. */
export function rowsPerChunk(
  gpu: Gpu,
  cols: number,
  dtype: FloatDType,
  maxBindingBytes?: number,
): number {
  const limit = Math.min(maxBindingBytes ?? Infinity, gpu.limits.maxStorageBufferBindingSize);
  return Math.max(1, Math.floor(limit / (cols * bytesPer(dtype))));
}

/** Options of {@linkcode loadWeights} / {@linkcode randomWeights}. */
export interface WeightOptions {
  /** Compute dtype of the weights (default f32; f16 needs `shader-f16`). */
  dtype?: FloatDType;
  /** Cap on bytes per chunk of the embedding/LM head (default: the device limit). Lower it to test chunking. */
  maxBindingBytes?: number;
}

/**
 * Loads every weight of `cfg` from a checkpoint onto the GPU, converting
 * BF16/F16/F32 to the compute dtype and validating each shape.
 *
 * @param source Where the tensors come from (e.g. `openCheckpoint(folder)`); its name is used in errors.
 * @throws {Error} Naming the tensor and the file when one is missing.
 * @throws {RangeError} Naming the layer, the tensor, the expected and actual shapes and the file.
 */
export async function loadWeights(
  gpu: Gpu,
  cfg: ModelConfig,
  reader: TensorReader,
  source: string,
  opts: WeightOptions = {},
): Promise<ModelWeights> {
  const dtype = opts.dtype ?? "f32";
  const loaded: Tensor[] = [];
  try {
    const layers: Partial<LayerWeights>[] = Array.from({ length: cfg.numLayers }, () => ({}));
    for (const spec of weightSpecs(cfg)) {
      const t = await loadTensor(gpu, reader, source, spec.name, spec.shape, dtype);
      loaded.push(t);
      (layers[spec.layer!] as Record<string, Tensor>)[spec.key!] = t;
    }
    const V = cfg.vocabSize, H = cfg.hiddenSize;
    const embed = await loadChunked(
      gpu,
      reader,
      source,
      "model.embed_tokens.weight",
      V,
      H,
      dtype,
      opts,
    );
    loaded.push(...embed.chunks.map((c) => c.tensor));
    let lmHead = embed;
    if (!cfg.tieWordEmbeddings) {
      lmHead = await loadChunked(gpu, reader, source, "lm_head.weight", V, H, dtype, opts);
      loaded.push(...lmHead.chunks.map((c) => c.tensor));
    }
    const finalNorm = await loadTensor(gpu, reader, source, "model.norm.weight", [H], dtype);
    return { embed, layers: layers as LayerWeights[], finalNorm, lmHead };
  } catch (e) {
    for (const t of loaded) t.dispose();
    throw e;
  }
}

function info(reader: TensorReader, source: string, name: string, shape: number[]) {
  const i = reader.tensors.get(name);
  if (!i) throw new Error(`${source}: tensor "${name}" ${fmtShape(shape)} is missing`);
  if (i.shape.length !== shape.length || i.shape.some((d, k) => d !== shape[k])) {
    const layer = /layers\.(\d+)\./.exec(name);
    throw new RangeError(
      `${layer ? `layer ${layer[1]} ` : ""}${name}: expected ${fmtShape(shape)}, got ${
        fmtShape(i.shape)
      } in ${i.file}`,
    );
  }
  if (!["F32", "F16", "BF16"].includes(i.dtype)) {
    throw new TypeError(
      `${name}: expected a float tensor (F32, F16 or BF16), got ${i.dtype} in ${i.file}`,
    );
  }
  return i;
}

async function loadTensor(
  gpu: Gpu,
  reader: TensorReader,
  source: string,
  name: string,
  shape: number[],
  dtype: FloatDType,
): Promise<Tensor<FloatDType>> {
  info(reader, source, name, shape);
  const t = await reader.read(name);
  return Tensor.fromArray(gpu, t.data as Float32Array, shape, dtype);
}

async function loadChunked(
  gpu: Gpu,
  reader: TensorReader,
  source: string,
  name: string,
  rows: number,
  cols: number,
  dtype: FloatDType,
  opts: WeightOptions,
): Promise<ChunkedMatrix> {
  info(reader, source, name, [rows, cols]);
  const per = rowsPerChunk(gpu, cols, dtype, opts.maxBindingBytes);
  const chunks: ChunkedMatrix["chunks"] = [];
  try {
    for (let r = 0; r < rows; r += per) {
      const n = Math.min(per, rows - r);
      const t = Tensor.empty(gpu, [n, cols], dtype);
      chunks.push({ rowStart: r, tensor: t });
      // read in slices of at most ~16 MiB of f32 so a huge matrix is never held whole on the CPU
      const slice = Math.max(1, Math.floor((16 << 20) / (cols * 4)));
      for (let s = 0; s < n; s += slice) {
        const m = Math.min(slice, n - s);
        const part = await reader.read(name, { rowStart: r + s, rowEnd: r + s + m });
        const tmp = Tensor.fromArray(gpu, part.data as Float32Array, [m, cols], dtype);
        gpu.encoder().copyBufferToBuffer(
          tmp.buffer,
          0,
          t.buffer,
          s * cols * bytesPer(dtype),
          alignUp(m * cols * bytesPer(dtype)),
        );
        gpu.flush();
        tmp.dispose();
      }
    }
  } catch (e) {
    for (const c of chunks) c.tensor.dispose();
    throw e;
  }
  return { rows, cols, chunks };
}

function alignUp(n: number): number {
  return Math.ceil(n / 4) * 4;
}

/**
 * Random weights for a config, generated on the GPU with a seed (the
 * conformance generator's scheme): embeddings N(0, 1), linear weights
 * N(0, 1/fan_in), norm gains 1 + 0.1·N(0, 1), biases N(0, 0.1²).
 */
export function randomWeights(
  gpu: Gpu,
  cfg: ModelConfig,
  seed: number,
  opts: WeightOptions = {},
): ModelWeights {
  const dtype = opts.dtype ?? "f32";
  let s = seed >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  const gen = (shape: number[], kind: "norm" | "linear" | "embed" | "bias"): Tensor<FloatDType> => {
    if (kind === "bias") {
      return randomTensor(gpu, shape, { seed: next(), dist: "normal", std: 0.1, dtype });
    }
    if (kind === "norm") {
      return randomTensor(gpu, shape, { seed: next(), dist: "normal", mean: 1, std: 0.1, dtype });
    }
    const std = kind === "embed" ? 1 : 1 / Math.sqrt(shape[shape.length - 1]);
    return randomTensor(gpu, shape, { seed: next(), dist: "normal", std, dtype });
  };
  const layers: LayerWeights[] = Array.from({ length: cfg.numLayers }, () => ({}) as LayerWeights);
  for (const spec of weightSpecs(cfg)) {
    const kind = spec.key!.endsWith("Norm")
      ? "norm"
      : spec.key!.endsWith("Bias")
      ? "bias"
      : "linear";
    (layers[spec.layer!] as unknown as Record<string, Tensor>)[spec.key!] = gen(spec.shape, kind);
  }
  const chunked = (kind: "embed" | "linear"): ChunkedMatrix => {
    const per = rowsPerChunk(gpu, cfg.hiddenSize, dtype, opts.maxBindingBytes);
    const chunks: ChunkedMatrix["chunks"] = [];
    for (let r = 0; r < cfg.vocabSize; r += per) {
      chunks.push({
        rowStart: r,
        tensor: gen([Math.min(per, cfg.vocabSize - r), cfg.hiddenSize], kind),
      });
    }
    return { rows: cfg.vocabSize, cols: cfg.hiddenSize, chunks };
  };
  const embed = chunked("embed");
  // An untied LM head is a linear layer: N(0, 1/H).
  const lmHead = cfg.tieWordEmbeddings ? embed : chunked("linear");
  return { embed, layers, finalNorm: gen([cfg.hiddenSize], "norm"), lmHead };
}

/** Every tensor of a weight set once (tied matrices counted once). */
export function allWeightTensors(w: ModelWeights): Tensor[] {
  const out: Tensor[] = [];
  for (const l of w.layers) for (const t of Object.values(l)) if (t) out.push(t as Tensor);
  out.push(...w.embed.chunks.map((c) => c.tensor), w.finalNorm);
  if (w.lmHead !== w.embed) out.push(...w.lmHead.chunks.map((c) => c.tensor));
  return out;
}

/** Frees all weights. */
export function disposeWeights(w: ModelWeights): void {
  for (const t of allWeightTensors(w)) t.dispose();
}

/**
 * A {@linkcode TensorReader} over float32 tensors held in memory (HF names →
 * shape and data), e.g. weights built by a test or read from a conformance case.
 */
export function memoryReader(
  map: ReadonlyMap<string, { readonly shape: readonly number[]; readonly data: Float32Array }>,
  label = "<memory>",
): TensorReader {
  const tensors = new Map(
    [...map].map(([name, t]) => [name, {
      dtype: "F32" as const,
      shape: [...t.shape],
      byteOffset: 0,
      byteLength: t.data.byteLength,
      file: label,
    }]),
  );
  const slice = (name: string, range?: { rowStart?: number; rowEnd?: number }) => {
    const t = map.get(name);
    if (!t) throw new Error(`${label}: tensor "${name}" is missing`);
    const rows = t.shape[0] ?? 1, per = rows ? t.data.length / rows : 0;
    const r0 = range?.rowStart ?? 0, r1 = range?.rowEnd ?? rows;
    return { shape: [r1 - r0, ...t.shape.slice(1)], data: t.data.subarray(r0 * per, r1 * per) };
  };
  return {
    tensors,
    read: (name, range) => Promise.resolve({ dtype: "F32" as const, ...slice(name, range) }),
    readRaw: (name, range) => {
      const s = slice(name, range);
      return Promise.resolve({
        dtype: "F32" as const,
        shape: s.shape,
        bytes: new Uint8Array(s.data.buffer, s.data.byteOffset, s.data.byteLength),
      });
    },
    close: () => {},
  };
}
