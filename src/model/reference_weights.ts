/**
 * The float64 reference model's parameters: HF-named float32 weights checked
 * against the config and converted to float64 ({@linkcode loadReferenceModel}),
 * and the RoPE inverse frequencies ({@linkcode ropeInvFreq}). The forward
 * passes live in `reference.ts`, the attention in `reference_attention.ts`.
 *
 * @example Load the weights of a conformance case
 * ```ts
 * import { loadConfig } from "./config.ts";
 * import { openSafetensors } from "../io/safetensors.ts";
 * import { loadReferenceModel, type WeightTensor } from "./reference_weights.ts";
 * const dir = "testdata/conformance/B1_infer_qneuron_head";
 * const config = await loadConfig(dir);
 * using file = await openSafetensors(`${dir}/weights.safetensors`);
 * const weights = new Map<string, WeightTensor>();
 * for (const name of file.tensors.keys()) {
 *   const t = await file.read(name);
 *   weights.set(name, { shape: t.shape, data: t.data as Float32Array });
 * }
 * const model = loadReferenceModel(config, weights);
 * console.log(model.layers.length, model.invFreq.length); // 2 8
 * ```
 *
 * @module
 */

import type { ModelConfig } from "./config.ts";

/** One weight tensor as read from safetensors: shape and float32 data. */
export interface WeightTensor {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Row-major values. */
  readonly data: Float32Array;
}

/** Weights by HF name (`model.layers.0.self_attn.q_proj.weight`, ...). */
export type WeightMap = ReadonlyMap<string, WeightTensor>;

/** A linear layer `y = x @ w^T + b`, float64. */
export interface Linear {
  /** `[out, in]` */
  readonly w: Float64Array;
  /** `[out]` or null */
  readonly b: Float64Array | null;
  /** Output features. */
  readonly out: number;
  /** Input features. */
  readonly in: number;
}

/** One decoder layer's parameters, float64. */
export interface ReferenceLayer {
  /** `[H]` */
  readonly inputNorm: Float64Array;
  /** `q_proj`: H → Hq·D */
  readonly qProj: Linear;
  /** `k_proj`: H → Hkv·D */
  readonly kProj: Linear;
  /** `v_proj`: H → Hkv·D */
  readonly vProj: Linear;
  /** `o_proj`: Hq·D → H */
  readonly oProj: Linear;
  /** `[D]`, Qwen3 only */
  readonly qNorm: Float64Array | null;
  /** `[D]`, Qwen3 only */
  readonly kNorm: Float64Array | null;
  /** `[H]` */
  readonly postNorm: Float64Array;
  /** `mlp.gate_proj`: H → I */
  readonly gate: Linear;
  /** `mlp.up_proj`: H → I */
  readonly up: Linear;
  /** `mlp.down_proj`: I → H */
  readonly down: Linear;
  /** `[H]`, adapter variant only (`dms_proj_alpha_norm`) */
  readonly alphaNorm: Float64Array | null;
  /** `[Hkv, H]`, adapter variant only (`dms_proj_alpha`) */
  readonly alphaProj: Linear | null;
}

/** A model ready for the reference: config plus float64 weights. */
export interface ReferenceModel {
  /** The normalised config the weights were checked against. */
  readonly config: ModelConfig;
  /** `[V, H]` */
  readonly embed: Float64Array;
  /** One entry per decoder layer. */
  readonly layers: readonly ReferenceLayer[];
  /** `[H]` */
  readonly norm: Float64Array;
  /** `[V, H]` (the embedding when tied) */
  readonly lmHead: Linear;
  /** `[D/2]` RoPE inverse frequencies (scaling applied). */
  readonly invFreq: Float64Array;
  /** HF `attention_scaling` multiplying cos/sin (1 for default/linear/llama3). */
  readonly ropeAttentionScaling: number;
}

/** Options of {@linkcode loadReferenceModel}. */
export interface LoadOptions {
  /** Overrides the computed RoPE inverse frequencies `[D/2]` (e.g. a scaling type not built in). */
  invFreq?: ArrayLike<number>;
  /** Overrides HF `attention_scaling` (default 1). */
  ropeAttentionScaling?: number;
}

/**
 * Converts HF-named float32 weights to a float64 {@linkcode ReferenceModel},
 * checking every name and shape.
 *
 * @throws {RangeError} naming the tensor, the expected and the actual shape.
 */
export function loadReferenceModel(
  config: ModelConfig,
  weights: WeightMap,
  options: LoadOptions = {},
): ReferenceModel {
  const c = config;
  const H = c.hiddenSize, D = c.headDim, Hq = c.numHeads, Hkv = c.numKvHeads;
  const I = c.intermediateSize, V = c.vocabSize;
  if (c.modelType !== "qwen3" && c.modelType !== "llama") {
    throw new RangeError(`reference: model_type must be "qwen3" or "llama", got "${c.modelType}"`);
  }
  if (c.hiddenAct !== "silu") {
    throw new RangeError(`reference: hidden_act must be "silu", got "${c.hiddenAct}"`);
  }
  if (Hq % Hkv !== 0) {
    throw new RangeError(
      `reference: num_attention_heads ${Hq} is not a multiple of num_key_value_heads ${Hkv}`,
    );
  }
  if (D % 2 !== 0) throw new RangeError(`reference: head_dim must be even, got ${D}`);
  const qkNorm = c.modelType === "qwen3";

  const get = (name: string, shape: number[]): Float64Array => {
    const t = weights.get(name);
    if (!t) {
      throw new RangeError(`reference: missing weight ${name} (expected [${shape.join(", ")}])`);
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new RangeError(
        `reference: ${name}: expected [${shape.join(", ")}], got [${t.shape.join(", ")}]`,
      );
    }
    return Float64Array.from(t.data);
  };
  // biases exist iff the config says so: attention_bias (q/k/v/o and the DMS adapter, SPEC §1b),
  // mlp_bias (Llama MLP)
  const linear = (prefix: string, out: number, inp: number, bias: boolean): Linear => ({
    w: get(`${prefix}.weight`, [out, inp]),
    b: bias ? get(`${prefix}.bias`, [out]) : null,
    out,
    in: inp,
  });
  const ab = c.attentionBias, mb = c.mlpBias;

  const layers: ReferenceLayer[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    layers.push({
      inputNorm: get(`${p}.input_layernorm.weight`, [H]),
      qProj: linear(`${p}.self_attn.q_proj`, Hq * D, H, ab),
      kProj: linear(`${p}.self_attn.k_proj`, Hkv * D, H, ab),
      vProj: linear(`${p}.self_attn.v_proj`, Hkv * D, H, ab),
      oProj: linear(`${p}.self_attn.o_proj`, H, Hq * D, ab),
      qNorm: qkNorm ? get(`${p}.self_attn.q_norm.weight`, [D]) : null,
      kNorm: qkNorm ? get(`${p}.self_attn.k_norm.weight`, [D]) : null,
      postNorm: get(`${p}.post_attention_layernorm.weight`, [H]),
      gate: linear(`${p}.mlp.gate_proj`, I, H, mb),
      up: linear(`${p}.mlp.up_proj`, I, H, mb),
      down: linear(`${p}.mlp.down_proj`, H, I, mb),
      alphaNorm: c.dms.separateAlpha ? get(`${p}.self_attn.dms_proj_alpha_norm.weight`, [H]) : null,
      alphaProj: c.dms.separateAlpha ? linear(`${p}.self_attn.dms_proj_alpha`, Hkv, H, ab) : null,
    });
  }
  const embed = get("model.embed_tokens.weight", [V, H]);
  let lmHead: Linear;
  if (weights.has("lm_head.weight")) lmHead = linear("lm_head", V, H, false);
  else if (c.tieWordEmbeddings) lmHead = { w: embed, b: null, out: V, in: H };
  else {throw new RangeError(
      "reference: missing weight lm_head.weight (tie_word_embeddings is false)",
    );}

  let invFreq: Float64Array;
  if (options.invFreq) {
    if (options.invFreq.length !== D / 2) {
      throw new RangeError(
        `reference: invFreq: expected [${D / 2}], got [${options.invFreq.length}]`,
      );
    }
    invFreq = Float64Array.from(options.invFreq);
  } else {
    invFreq = ropeInvFreq(c);
  }
  return {
    config: c,
    embed,
    layers,
    norm: get("model.norm.weight", [H]),
    lmHead,
    invFreq,
    ropeAttentionScaling: options.ropeAttentionScaling ?? 1,
  };
}

/**
 * HF RoPE inverse frequencies `[D/2]`: `theta^(−2i/D)`, then the rope scaling
 * (`linear`: ÷factor; `llama3`: the wavelength-banded rule of
 * `_compute_llama3_parameters`).
 *
 * Other scalings: pass `LoadOptions.invFreq`.
 */
export function ropeInvFreq(config: ModelConfig): Float64Array {
  const D = config.headDim;
  const inv = new Float64Array(D / 2); // [D/2]
  for (let i = 0; i < D / 2; i++) inv[i] = 1 / Math.pow(config.ropeTheta, (2 * i) / D);
  const rs = config.ropeScaling;
  if (!rs) return inv;
  if (rs.type === "linear") return inv.map((f) => f / rs.factor);
  const { factor, lowFreqFactor: low, highFreqFactor: high } = rs; // llama3
  const oldCtx = rs.originalMaxPositionEmbeddings;
  const lowWavelen = oldCtx / low, highWavelen = oldCtx / high;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f; // high frequency: unchanged
    if (wavelen > lowWavelen) return f / factor; // low frequency: scaled
    const smooth = (oldCtx / wavelen - low) / (high - low);
    return (1 - smooth) * (f / factor) + smooth * f; // medium: interpolated
  });
}
