/**
 * The normalised model configuration ({@linkcode ModelConfig}, with its {@linkcode DmsConfig}
 * and {@linkcode RopeScaling}), the reference's DMS defaults, and what a config implies about
 * the weights: {@linkcode parameterCount} and {@linkcode assertWeightsFit}, which refuses an
 * absurd config before anything is allocated. Reading and writing the Hugging Face
 * `config.json` these fields come from is `config.ts`, which re-exports all of this.
 *
 * DMS defaults are the reference's (`Qwen3ConfigDMS`, SPEC §1, §5, §6, §11): window 512, alpha
 * scale 100, offset 5, query-neuron decisions (`separateAlpha` false), per-head decisions,
 * tau 0.1, block 256, prealloc 4096 tokens.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * import { parameterCount } from "./model_config.ts";
 * const cfg = parseConfig({
 *   model_type: "qwen3", hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
 *   num_key_value_heads: 2, intermediate_size: 128, vocab_size: 100, max_position_embeddings: 64,
 * });
 * console.log(parameterCount(cfg)); // 86912: embedding + LM head 12800, 2 layers × 37024, norm 64
 * ```
 *
 * @module
 */

/** RoPE frequency scaling (HF `rope_scaling` / `rope_parameters`). */
export type RopeScaling =
  | {
    /** Llama 3.1+ NTK-by-parts: `rope_type` "llama3". */
    type: "llama3";
    /** `factor`: wavelength stretch of the low-frequency band. */
    factor: number;
    /** `low_freq_factor`. */
    lowFreqFactor: number;
    /** `high_freq_factor`. */
    highFreqFactor: number;
    /** `original_max_position_embeddings`: context length of pre-training. */
    originalMaxPositionEmbeddings: number;
  }
  | {
    /** Position interpolation: positions divided by `factor` (`rope_type` "linear"). */
    type: "linear";
    /** `factor`. */
    factor: number;
  };

/** DMS settings (`dms_*` fields); names follow SPEC.md. */
export interface DmsConfig {
  /** `dms_window_size`: W. A flagged key stays visible for W more queries; the cache window is Wc = W + 1 (SPEC §5.1). */
  window: number;
  /** `dms_alpha_scale`: logit scale (a = scale·x − offset, SPEC §1). */
  alphaScale: number;
  /** `dms_initial_alpha_offset`: logit offset (SPEC §1). */
  alphaOffset: number;
  /** `dms_separate_alpha`: true = adapter projection, false = borrowed query neuron (SPEC §1). */
  separateAlpha: boolean;
  /** `dms_alpha_per`: one decision per KV head ("head") or head 0's for all ("layer"). */
  alphaPer: "head" | "layer";
  /** `dms_tau`: Gumbel-sigmoid temperature (training, SPEC §4). */
  tau: number;
  /** `dms_paged_attention_block_size`: tokens per paged-cache block (SPEC §5.2). */
  blockSize: number;
  /** `dms_cr`: target compression ratio the checkpoint was trained for, if given. */
  compressionRatio: number | null;
  /** `dms_disable_eviction`: run without evicting (dense cache). */
  disableEviction: boolean;
  /** `dms_chunked_prefill`: prefill chunk length in tokens, or null for one chunk (SPEC §5.3). */
  chunkedPrefill: number | null;
  /** `dms_preallocate_for_tokens`: initial paged pool size in tokens (SPEC §5.2). */
  preallocateForTokens: number;
  /** `dms_manual_inference_mode`: stay in prefill mode for multi-turn use (SPEC §5.3). */
  manualInferenceMode: boolean;
}

/** A normalised model configuration. Each field names its HF `config.json` key. */
export interface ModelConfig {
  /** `model_type`. */
  modelType: "qwen3" | "llama";
  /** `hidden_size`: model width H. */
  hiddenSize: number;
  /** `num_hidden_layers`: L. */
  numLayers: number;
  /** `num_attention_heads`: query heads Hq. */
  numHeads: number;
  /** `num_key_value_heads` (default Hq): KV heads Hkv; Hq / Hkv query heads share one. */
  numKvHeads: number;
  /** `head_dim` (default H / Hq): D. */
  headDim: number;
  /** `intermediate_size`: MLP width. */
  intermediateSize: number;
  /** `vocab_size`: rows of the embedding and LM head. */
  vocabSize: number;
  /** `max_position_embeddings`. */
  maxPositionEmbeddings: number;
  /** `rope_theta` or `rope_parameters.rope_theta` (default 10000): RoPE base. */
  ropeTheta: number;
  /** `rope_scaling` (or a non-default `rope_parameters`); null for plain RoPE. */
  ropeScaling: RopeScaling | null;
  /** `rms_norm_eps` (default 1e-6). */
  rmsNormEps: number;
  /** `tie_word_embeddings` (default false): LM head = embedding matrix. */
  tieWordEmbeddings: boolean;
  /** `attention_bias` (default false): biases on q/k/v/o projections. */
  attentionBias: boolean;
  /** `mlp_bias` (default false; Llama only): biases on the MLP projections. */
  mlpBias: boolean;
  /** `hidden_act`: must be "silu" (SwiGLU MLP). */
  hiddenAct: "silu";
  /** `bos_token_id` (number, array or null) as a list. */
  bosTokenIds: number[];
  /** `eos_token_id` (number, array or null) as a list. */
  eosTokenIds: number[];
  /** `torch_dtype` (or `dtype`, transformers 5.x): storage dtype of the weights, if given. */
  torchDtype: "float32" | "float16" | "bfloat16" | null;
  /** Whether the file has any `dms_*` field (a DMS checkpoint); `dms` holds defaults otherwise. */
  isDms: boolean;
  /** DMS settings (`dms_*` fields). */
  dms: DmsConfig;
  /** Every other field of the file, verbatim (written back by {@link configToJson}). */
  extra: Record<string, unknown>;
}

/** The reference's DMS defaults (`Qwen3ConfigDMS`). */
export const DMS_DEFAULTS: Readonly<DmsConfig> = Object.freeze({
  window: 512,
  alphaScale: 100,
  alphaOffset: 5,
  separateAlpha: false,
  alphaPer: "head",
  tau: 0.1,
  blockSize: 256,
  compressionRatio: null,
  disableEviction: false,
  chunkedPrefill: null,
  preallocateForTokens: 4096,
  manualInferenceMode: false,
});

/**
 * Number of weights of the model a config describes: embedding `[V, H]`, LM head `[V, H]`
 * unless tied, per layer the q/k/v/o projections, the MLP `3·I·H`, norms, biases and the DMS
 * adapter when present, and the final norm.
 *
 * @param cfg a normalised config
 * @returns the parameter count (a float when it exceeds 2^53: only a size check needs it then)
 */
export function parameterCount(cfg: ModelConfig): number {
  const { hiddenSize: H, numHeads: Hq, numKvHeads: Hkv, headDim: D, intermediateSize: I } = cfg;
  const attention = (Hq + 2 * Hkv) * D * H + H * Hq * D +
    (cfg.attentionBias ? (Hq + 2 * Hkv) * D + H : 0) +
    (cfg.modelType === "qwen3" ? 2 * D : 0) +
    (cfg.isDms && cfg.dms.separateAlpha ? Hkv * H + H : 0);
  const mlp = 3 * I * H + (cfg.mlpBias ? 2 * I + H : 0);
  const layer = attention + mlp + 2 * H;
  const V = cfg.vocabSize;
  return V * H * (cfg.tieWordEmbeddings ? 1 : 2) + cfg.numLayers * layer + H;
}

/**
 * Refuses a config whose weights cannot fit before anything is allocated: `config.json` is a
 * few hundred bytes, and an absurd `vocab_size` × `hidden_size` must not make the loader try
 * to allocate terabytes.
 *
 * @param cfg a normalised config
 * @param bytesPerWeight 4 for f32, 2 for f16
 * @param budgetBytes what the weights may take (e.g. `Gpu.memoryLimitBytes`)
 * @param fileName used in the message
 * @throws RangeError naming the file, the sizes that make the weights large, and both byte counts
 */
export function assertWeightsFit(
  cfg: ModelConfig,
  bytesPerWeight: number,
  budgetBytes: number,
  fileName = "config.json",
): void {
  const bytes = parameterCount(cfg) * bytesPerWeight;
  if (bytes <= budgetBytes) return;
  const gib = (n: number) => `${(n / 2 ** 30).toPrecision(4)} GiB`;
  throw new RangeError(
    `${fileName}: the weights need ${gib(bytes)} (vocab_size ${cfg.vocabSize}, hidden_size ` +
      `${cfg.hiddenSize}, num_hidden_layers ${cfg.numLayers}, intermediate_size ` +
      `${cfg.intermediateSize}, ${bytesPerWeight} bytes per weight), more than the ` +
      `${gib(budgetBytes)} available`,
  );
}
