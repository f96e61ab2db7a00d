/**
 * Small random models for the float64 reference tests (test/model/reference_test.ts,
 * test/train/reference_step_test.ts): the golden vectors' weight scheme over a DMS config.
 */

import { type ModelConfig, parseConfig } from "../src/model/config.ts";
import {
  loadReferenceModel,
  type ReferenceModel,
  type WeightTensor,
} from "../src/model/reference.ts";

/** Seeded standard normal generator (mulberry32 + Box-Muller). */
export function normal(seed: number): () => number {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

export interface Spec {
  modelType: "qwen3" | "llama";
  L: number;
  Hkv: number;
  G: number;
  D: number;
  separate: boolean;
  per: "head" | "layer";
  tie: boolean;
  window: number;
  offset: number;
  scale: number;
  tau: number;
  seed: number;
}

export const H = 24, I = 40, V = 37;

/** A random model like the golden vectors' (embeddings std 1, linears std 1/√fan_in, norms 1 + 0.1·N). */
export function makeModel(
  spec: Spec,
): { config: ModelConfig; model: ReferenceModel; weights: Map<string, WeightTensor> } {
  const { L, Hkv, G, D } = spec, Hq = Hkv * G;
  const config = parseConfig({
    model_type: spec.modelType,
    hidden_size: H,
    num_hidden_layers: L,
    num_attention_heads: Hq,
    num_key_value_heads: Hkv,
    head_dim: D,
    intermediate_size: I,
    vocab_size: V,
    max_position_embeddings: 128,
    rope_theta: 10000,
    rms_norm_eps: 1e-6,
    tie_word_embeddings: spec.tie,
    dms_window_size: spec.window,
    dms_paged_attention_block_size: 1,
    dms_separate_alpha: spec.separate,
    dms_alpha_per: spec.per,
    dms_alpha_scale: spec.scale,
    dms_initial_alpha_offset: spec.offset,
    dms_tau: spec.tau,
  });
  const rand = normal(spec.seed);
  const weights = new Map<string, WeightTensor>();
  const add = (name: string, shape: number[], f: () => number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    weights.set(name, { shape, data: Float32Array.from({ length: n }, f) });
  };
  const lin = (name: string, out: number, inp: number) =>
    add(`${name}.weight`, [out, inp], () => rand() / Math.sqrt(inp));
  const norm = (name: string, n: number) => add(`${name}.weight`, [n], () => 1 + 0.1 * rand());
  add("model.embed_tokens.weight", [V, H], rand);
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    norm(`${p}.input_layernorm`, H);
    lin(`${p}.self_attn.q_proj`, Hq * D, H);
    lin(`${p}.self_attn.k_proj`, Hkv * D, H);
    lin(`${p}.self_attn.v_proj`, Hkv * D, H);
    lin(`${p}.self_attn.o_proj`, H, Hq * D);
    if (spec.modelType === "qwen3") {
      norm(`${p}.self_attn.q_norm`, D);
      norm(`${p}.self_attn.k_norm`, D);
    }
    if (spec.separate) {
      lin(`${p}.self_attn.dms_proj_alpha`, Hkv, H);
      norm(`${p}.self_attn.dms_proj_alpha_norm`, H);
    }
    norm(`${p}.post_attention_layernorm`, H);
    lin(`${p}.mlp.gate_proj`, I, H);
    lin(`${p}.mlp.up_proj`, I, H);
    lin(`${p}.mlp.down_proj`, H, I);
  }
  norm("model.norm", H);
  if (!spec.tie) lin("lm_head", V, H);
  return { config, model: loadReferenceModel(config, weights), weights };
}
