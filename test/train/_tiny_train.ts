/**
 * Tiny random models and inputs for the training-step tests (train_step_test.ts,
 * train_step_lm_test.ts): a `Spec` of the geometry, its Hugging Face config, token rows with
 * Gumbel-like noise, per-tensor tolerances against the f64 reference.
 */

import { type ModelConfig, parseConfig } from "../../src/model/config.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { gpu, randomArray } from "../_util.ts";

/** A tiny model's geometry and DMS options (`dms: false`: a plain model). */
export interface Spec {
  modelType: "qwen3" | "llama";
  layers: number;
  kv: number;
  group: number;
  headDim: number;
  separateAlpha: boolean;
  perLayer: boolean;
  tied: boolean;
  bias: boolean;
  window: number;
  dms?: boolean;
}

/** Vocabulary size of every tiny model. */
export const V = 37;

/** The parsed config of a tiny model (hidden 24, MLP 40, vocab {@link V}). */
export function configOf(s: Spec): ModelConfig {
  const dms = s.dms === false ? {} : {
    dms_window_size: s.window,
    dms_paged_attention_block_size: 1,
    dms_separate_alpha: s.separateAlpha,
    dms_alpha_per: s.perLayer ? "layer" : "head",
    dms_alpha_scale: 3,
    dms_initial_alpha_offset: 0,
    dms_tau: 0.5,
  };
  return parseConfig({
    model_type: s.modelType,
    hidden_size: 24,
    num_hidden_layers: s.layers,
    num_attention_heads: s.kv * s.group,
    num_key_value_heads: s.kv,
    head_dim: s.headDim,
    intermediate_size: 40,
    vocab_size: V,
    max_position_embeddings: 256,
    rope_theta: 10000,
    rms_norm_eps: 1e-6,
    tie_word_embeddings: s.tied,
    attention_bias: s.bias,
    ...dms,
  }, "tiny");
}

/** Random token rows and logistic-like noise `[L, B, Hkv, T]` (CPU), uploaded per layer. */
export function inputs(cfg: ModelConfig, B: number, T: number, seed: number) {
  const ids = Int32Array.from(randomArray(B * T, seed, 0, V), Math.floor);
  const L = cfg.numLayers, per = B * cfg.numKvHeads * T;
  const noise = randomArray(L * per, seed + 7, -4, 4);
  const rows = Array.from({ length: B }, (_, b) => ids.subarray(b * T, (b + 1) * T));
  return { ids, rows, noise, per };
}

/** The noise of {@link inputs} as one `[B, Hkv, T]` tensor a layer. */
export function noiseTensors(cfg: ModelConfig, noise: Float32Array, B: number, T: number) {
  const per = B * cfg.numKvHeads * T;
  return Array.from(
    { length: cfg.numLayers },
    (_, l) =>
      Tensor.fromArray(gpu, noise.subarray(l * per, (l + 1) * per), [
        B,
        cfg.numKvHeads,
        T,
      ]) as Tensor<"f32">,
  );
}

/** Per-tensor tolerance: f32 GPU vs f64, relative to the tensor's scale. */
export function tolFor(expected: ArrayLike<number>): { atol: number; rtol: number } {
  let m = 0;
  for (let i = 0; i < expected.length; i++) m = Math.max(m, Math.abs(expected[i]));
  return { atol: 2e-4 * Math.max(m, 1e-2), rtol: 2e-3 };
}

/** Reads every gradient tensor to the CPU. */
export async function readGrads(g: Map<string, Tensor<"f32">>): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [k, t] of g) out.set(k, await t.toArray());
  return out;
}
