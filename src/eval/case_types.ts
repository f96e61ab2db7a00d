/**
 * What a conformance case is: its kinds, the inputs each kind hands a backend, the
 * {@linkcode LoadedCase} that `loadCase` (in `case.ts`) reads from a case folder, and the
 * {@linkcode ConformanceBackend} contract an implementation under test fulfils.
 *
 * Kinds (`case.json` → `kind`; format: `testdata/conformance/README.md`):
 * - `train_forward` (A): train-mode forward with given noise, plus teacher logits;
 * - `inference` (B): prefill of `prompt_len` tokens, then one decode step per token;
 * - `attention_only` (C): one DMS attention layer with given q/k/v/decisions,
 *   prefill chunks then decode steps;
 * - `train_step` (D, `testdata/conformance-train/README.md`): one training
 *   step: losses, the gradient of every weight, two AdamW steps with clipping.
 *
 * @example The inputs a kind expects
 * ```ts
 * import { CASE_INPUTS, CASE_KINDS } from "./case_types.ts";
 * for (const k of CASE_KINDS) console.log(k, CASE_INPUTS[k].join(", "));
 * ```
 *
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import type { WeightMap } from "../model/reference.ts";
import type { CaseTensor } from "./compare.ts";

/** The case kinds this runner knows, as `case.json` names them. */
export const CASE_KINDS: readonly CaseKind[] = Object.freeze([
  "train_forward",
  "inference",
  "attention_only",
  "train_step",
]);

/** `train_forward` (A), `inference` (B), `attention_only` (C) or `train_step` (D). */
export type CaseKind = "train_forward" | "inference" | "attention_only" | "train_step";

/** The input tensors of each kind (everything else in `case.safetensors` is expected output). */
export const CASE_INPUTS: Readonly<Record<CaseKind, readonly string[]>> = Object.freeze({
  train_forward: ["input_ids", "noise"],
  inference: ["input_ids"],
  attention_only: ["q", "k", "v", "decisions", "attn_mask"],
  train_step: ["input_ids", "noise"],
});

/** Expected tensors whose value −1 means "not observable" (skipped when comparing). */
export const NOT_OBSERVABLE: Readonly<Record<string, number>> = Object.freeze({
  cache_len: -1,
  cache_retained_mask: -1,
});

/** The parts of `case.json` the runner reads; other fields are kept as they are. */
export interface CaseJson {
  /** Case name (informational; the folder name is used). */
  readonly case?: string;
  /** One of {@linkcode CASE_KINDS}. */
  readonly kind: string;
  /** Every tensor of `case.safetensors`: name → dtype and shape. */
  readonly tensors: Readonly<
    Record<string, { readonly dtype: string; readonly shape: readonly number[] }>
  >;
  /** Tolerance table (see `parseTolerances`). */
  readonly recommended_tolerance?: unknown;
  /** Scalars the reference model returned (A: cr, dms_frac_closed, dms_loss). */
  readonly model_reported?: Readonly<Record<string, unknown>>;
  /** Kind-specific parameters (`prompt_len`, `cache_window`, ...) and provenance. */
  readonly [key: string]: unknown;
}

/** What every case hands to a backend. */
export interface CaseBase {
  /** Case name (folder path relative to the conformance folder). */
  readonly name: string;
  /** The case folder (local path or http(s) URL). */
  readonly dir: string;
  /** The whole `case.json`. */
  readonly json: CaseJson;
}

/** A model case (A, B): config and weights from the case folder. */
export interface ModelCase extends CaseBase {
  /** `config.json`, normalised. */
  readonly config: ModelConfig;
  /** `weights.safetensors`, HF names, float32. */
  readonly weights: WeightMap;
}

/** A `train_forward` case (A). */
export interface TrainForwardCase extends ModelCase {
  /** Scalars from `case.json`. */
  readonly params: {
    /** B */
    readonly batch: number;
    /** S */
    readonly seqLen: number;
    /** α* for `dms_loss` (SPEC §6). */
    readonly targetFracToClose: number;
  };
  /** Input tensors from `case.safetensors`. */
  readonly inputs: {
    /** `[B, S]` int32 */
    readonly input_ids: CaseTensor;
    /** `[L, B, Hkv, S]` float32 logistic noise */
    readonly noise: CaseTensor;
  };
}

/** `torch.optim.AdamW` settings of a `train_step` case (`case.json` → `adamw`). */
export interface AdamwSettings {
  /** Learning rate. */
  readonly lr: number;
  /** (β1, β2). */
  readonly betas: readonly [number, number];
  /** Added to √v̂. */
  readonly eps: number;
  /** Decoupled weight decay. */
  readonly weightDecay: number;
  /** `clip_grad_norm_` max norm applied before the steps. */
  readonly clipGradNorm: number;
}

/**
 * A `train_step` case (D): one step of the DMS objective (SPEC §6) on the case's
 * weights: losses, every weight's gradient, the weights after two AdamW steps.
 */
export interface TrainStepCase extends ModelCase {
  /** Scalars from `case.json`. */
  readonly params: {
    /** B */
    readonly batch: number;
    /** S */
    readonly seqLen: number;
    /** α* of the compression loss (SPEC §6). */
    readonly targetFracToClose: number;
    /** Positions whose input id equals this carry no distillation term. */
    readonly eosTokenId: number | null;
    /** Vocabulary chunk of the reference's KL (a numerical detail only). */
    readonly vocabChunk: number | null;
    /** Optimizer settings. */
    readonly adamw: AdamwSettings;
    /** Weights the reference gave no gradient (not stepped). */
    readonly paramsWithoutGrad: readonly string[];
  };
  /** Input tensors from `case.safetensors`. */
  readonly inputs: {
    /** `[B, S]` int32 */
    readonly input_ids: CaseTensor;
    /** `[L, B, Hkv, S]` float32 logistic noise */
    readonly noise: CaseTensor;
  };
  /**
   * The reference's own gradients (`grad.<weight>` of `case.safetensors`, by weight name): the
   * optimizer check clips and steps *these*, so `adamw1.*` / `adamw2.*` judge the optimizer
   * apart from gradient noise. (Near |g| ≈ eps an AdamW step turns a 1e-9 gradient difference,
   * far inside the `grad.*` tolerance, into a 1e-4 weight difference.) The backend's own
   * gradients are judged by `grad.*`.
   */
  readonly optimizerGradients: ReadonlyMap<string, CaseTensor>;
}

/** An `inference` case (B): prefill of `promptLen` tokens, then one decode step per token. */
export interface InferenceCase extends ModelCase {
  /** Scalars from `case.json`. */
  readonly params: {
    /** P */
    readonly promptLen: number;
    /** T − P */
    readonly numDecodeSteps: number;
    /** Prefill chunk length, or null for one chunk (changes memory layout only). */
    readonly chunkedPrefill: number | null;
  };
  /** Input tensors from `case.safetensors`. */
  readonly inputs: {
    /** `[1, T]` int32: prompt plus greedy continuation (teacher-forced) */
    readonly input_ids: CaseTensor;
  };
}

/** An `attention_only` case (C): one DMS attention layer called directly. */
export interface AttentionOnlyCase extends CaseBase {
  /** Scalars from `case.json`. */
  readonly params: {
    /** B */
    readonly batch: number;
    /** Hkv */
    readonly headsKv: number;
    /** G = Hq / Hkv */
    readonly gqaFactor: number;
    /** D */
    readonly headDim: number;
    /** Score scale (D^−1/2). */
    readonly attnScaling: number;
    /** Wc = W + 1: the cache window; keys at distance < Wc are always visible. */
    readonly cacheWindow: number;
    /** Paged block size (memory layout only). */
    readonly blockSize: number;
    /** S: prefill length. */
    readonly prefillLen: number;
    /** `[start, end)` of each prefill chunk, in order, covering `[0, S)`. */
    readonly prefillChunks: readonly (readonly [number, number])[];
    /** N: decode steps after the prefill (T = S + N). */
    readonly numDecodeSteps: number;
    /** Left padding per batch row. */
    readonly leftPad: readonly number[];
  };
  /** Input tensors from `case.safetensors`. */
  readonly inputs: {
    /** `[B*Hkv, T, G, D]` flash layout (row b·Hkv+h, query head h·G+i) */
    readonly q: CaseTensor;
    /** `[B, Hkv, T, D]` post-RoPE keys */
    readonly k: CaseTensor;
    /** `[B, Hkv, T, D]` */
    readonly v: CaseTensor;
    /** `[B, Hkv, T]` int32 hard decisions, unshifted */
    readonly decisions: CaseTensor;
    /** `[B, T]` int32: 1 = token, 0 = left padding */
    readonly attn_mask: CaseTensor;
  };
}

/** Named output tensors (names as in `case.json` → `tensors`; `model_reported.<key>` for scalars). */
export type BackendOutputs = Readonly<Record<string, CaseTensor>>;

/**
 * An implementation under test. Each method gets the parsed inputs of one case
 * and returns the tensors it computes, named as in `case.json`; tensors it
 * does not return are reported as not produced (not a failure by themselves).
 * Throwing fails the case with the error's message.
 */
export interface ConformanceBackend {
  /** Short name for reports (`cpu`, `gpu`). */
  readonly name: string;
  /** A: train-mode forward (logits, layer_out, decision_* tensors, dms_frac_closed, dms_loss, logits_teacher). */
  trainForward(c: TrainForwardCase): Promise<BackendOutputs>;
  /** B: prefill + decode (logits, decision_logits, decisions, cache_len, *_retained_mask, cr_*, q, k, v, layer_out). */
  inference(c: InferenceCase): Promise<BackendOutputs>;
  /** C: attention only (prefill_out, decode_out, cache_len, retained_mask, cache_retained_mask). */
  attentionOnly(c: AttentionOnlyCase): Promise<BackendOutputs>;
  /**
   * D: one training step (loss_*, dms_frac_closed, grad_total_norm, logits, logits_teacher,
   * grad.*, adamw1.*, adamw2.*). A backend without it reports these cases as not supported
   * (never as passed).
   */
  trainStep?(c: TrainStepCase): Promise<BackendOutputs>;
}

/** A case read from its folder: the parsed inputs for the backend and the expected tensors. */
export type LoadedCase =
  | {
    readonly kind: "train_forward";
    readonly case: TrainForwardCase;
    readonly expected: ReadonlyMap<string, CaseTensor>;
  }
  | {
    readonly kind: "inference";
    readonly case: InferenceCase;
    readonly expected: ReadonlyMap<string, CaseTensor>;
  }
  | {
    readonly kind: "attention_only";
    readonly case: AttentionOnlyCase;
    readonly expected: ReadonlyMap<string, CaseTensor>;
  }
  | {
    readonly kind: "train_step";
    readonly case: TrainStepCase;
    readonly expected: ReadonlyMap<string, CaseTensor>;
  };
