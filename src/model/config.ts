/**
 * The Hugging Face `config.json` of a Qwen3 or Llama model (optionally with the DMS fields of
 * NVIDIA's `Qwen3ConfigDMS`): validated with zod and normalised to a camelCase
 * {@link ModelConfig} ({@link parseConfig}, {@link loadConfig}), and written back with HF names
 * ({@link configToJson}). The normalised types, the DMS defaults and the size checks live in
 * `model_config.ts` and are re-exported here.
 *
 * Validation errors name the file, the field path, what was expected and what was found:
 * `config.json: field "num_key_value_heads": expected a positive integer, got "x"` (TypeError).
 * Semantic checks are RangeErrors naming both values: heads divisible by KV heads, head_dim even,
 * `dms_window_size >= 0` and `dms_window_size > dms_paged_attention_block_size` (SPEC §5.2).
 * Unknown fields are kept verbatim in `extra` (HF configs carry many).
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config.ts";
 * const cfg = await loadConfig("testdata/conformance/B1_infer_qneuron_head");
 * console.log(cfg.numHeads, cfg.numKvHeads, cfg.headDim, cfg.dms.window); // 4 2 16 4
 * ```
 *
 * @module
 */

import { ropeInvFreq, type RopeScaling as HfRopeScaling } from "../ops/rope.ts";
import { z } from "zod";
import {
  DMS_DEFAULTS,
  type DmsConfig,
  type ModelConfig,
  type RopeScaling,
} from "./model_config.ts";

export {
  assertWeightsFit,
  DMS_DEFAULTS,
  type DmsConfig,
  type ModelConfig,
  parameterCount,
  type RopeScaling,
} from "./model_config.ts";

// ---------------------------------------------------------------------------------------------
// Schema

const POS_INT = "expected a positive integer";
const POS_NUM = "expected a positive number";
const posInt = () => z.int({ error: POS_INT }).positive({ error: POS_INT });
const posNum = () => z.number({ error: POS_NUM }).positive({ error: POS_NUM });
const num = () => z.number({ error: "expected a number" });
const bool = () => z.boolean({ error: "expected true or false" });
const tokenIds = () =>
  z.union([z.int().nonnegative(), z.array(z.int().nonnegative())], {
    error: "expected a token id, an array of token ids or null",
  }).nullish();

const ropeParametersSchema = z.looseObject({
  rope_theta: posNum().nullish(),
  rope_type: z.string({ error: "expected a string" }).nullish(),
  type: z.string({ error: "expected a string" }).nullish(),
}, { error: "expected an object" });

const schema = z.looseObject({
  model_type: z.enum(["qwen3", "llama"], { error: 'expected "qwen3" or "llama"' }),
  hidden_size: posInt(),
  num_hidden_layers: posInt(),
  num_attention_heads: posInt(),
  num_key_value_heads: posInt().nullish(),
  head_dim: posInt().nullish(),
  intermediate_size: posInt(),
  vocab_size: posInt(),
  max_position_embeddings: posInt(),
  rope_theta: posNum().nullish(),
  rope_parameters: ropeParametersSchema.nullish(),
  rope_scaling: ropeParametersSchema.nullish(),
  rms_norm_eps: posNum().nullish(),
  tie_word_embeddings: bool().nullish(),
  attention_bias: bool().nullish(),
  mlp_bias: bool().nullish(),
  hidden_act: z.literal("silu", { error: 'expected "silu" (the only supported activation)' })
    .nullish(),
  bos_token_id: tokenIds(),
  eos_token_id: tokenIds(),
  torch_dtype: z.enum(["float32", "float16", "bfloat16"], {
    error: 'expected "float32", "float16" or "bfloat16"',
  }).nullish(),
  dtype: z.enum(["float32", "float16", "bfloat16"], {
    error: 'expected "float32", "float16" or "bfloat16"',
  }).nullish(),
  use_sliding_window: bool().nullish(),
  dms_window_size: z.int({ error: "expected an integer" }).nullish(),
  dms_alpha_scale: num().nullish(),
  dms_initial_alpha_offset: num().nullish(),
  dms_separate_alpha: bool().nullish(),
  dms_alpha_per: z.enum(["head", "layer"], { error: 'expected "head" or "layer"' }).nullish(),
  dms_tau: posNum().nullish(),
  dms_paged_attention_block_size: posInt().nullish(),
  dms_cr: posNum().nullish(),
  dms_disable_eviction: bool().nullish(),
  dms_chunked_prefill: posInt().nullish(),
  dms_preallocate_for_tokens: posInt().nullish(),
  dms_manual_inference_mode: bool().nullish(),
}, { error: "expected a JSON object" });

const llama3Schema = z.object({
  factor: posNum(),
  low_freq_factor: posNum(),
  high_freq_factor: posNum(),
  original_max_position_embeddings: posInt(),
});
const linearSchema = z.object({ factor: posNum() });

/** Keys consumed into typed fields (everything else goes to `extra`). */
const KNOWN = new Set(Object.keys(schema.shape));
// `use_sliding_window` is only checked; keep it in `extra` so it round-trips.
KNOWN.delete("use_sliding_window");

// ---------------------------------------------------------------------------------------------
// Errors

function show(v: unknown): string {
  if (v === undefined) return "nothing (missing)";
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 60 ? s.slice(0, 57) + "..." : s;
}

function at(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const k of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

/** Turns zod issues into one TypeError: `file: field "a.b": expected ..., got ...`. */
function issuesError(
  err: z.ZodError,
  root: unknown,
  fileName: string,
  prefix: readonly PropertyKey[] = [],
): TypeError {
  const lines = err.issues.map((i) => {
    const path = [...prefix, ...i.path];
    const field = path.length ? `field "${path.map(String).join(".")}": ` : "";
    return `${fileName}: ${field}${i.message}, got ${show(at(root, path))}`;
  });
  return new TypeError(lines.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Parsing

function idList(v: number | number[] | null | undefined): number[] {
  return v == null ? [] : Array.isArray(v) ? [...v] : [v];
}

type RopeObject = z.infer<typeof ropeParametersSchema>;

function parseScaling(
  obj: RopeObject,
  field: "rope_scaling" | "rope_parameters",
  root: unknown,
  fileName: string,
): RopeScaling | null {
  const type = obj.rope_type ?? obj.type ?? "default";
  if (type === "default") return null;
  if (type === "llama3") {
    const r = llama3Schema.safeParse(obj);
    if (!r.success) throw issuesError(r.error, root, fileName, [field]);
    return {
      type: "llama3",
      factor: r.data.factor,
      lowFreqFactor: r.data.low_freq_factor,
      highFreqFactor: r.data.high_freq_factor,
      originalMaxPositionEmbeddings: r.data.original_max_position_embeddings,
    };
  }
  if (type === "linear") {
    const r = linearSchema.safeParse(obj);
    if (!r.success) throw issuesError(r.error, root, fileName, [field]);
    return { type: "linear", factor: r.data.factor };
  }
  throw new TypeError(
    `${fileName}: field "${field}.rope_type": expected "default", "llama3" or "linear", ` +
      `got ${show(type)}`,
  );
}

/**
 * Validates and normalises a parsed `config.json`.
 *
 * @param json the parsed JSON object
 * @param fileName used in error messages (default "config.json")
 * @returns the normalised config
 * @throws TypeError naming the file and field for a wrong type or a missing field,
 *   RangeError for inconsistent values (heads vs KV heads, DMS window vs block size)
 */
export function parseConfig(json: unknown, fileName = "config.json"): ModelConfig {
  const r = schema.safeParse(json);
  if (!r.success) throw issuesError(r.error, json, fileName);
  const c = r.data;
  const raw = json as Record<string, unknown>;

  const numHeads = c.num_attention_heads;
  const numKvHeads = c.num_key_value_heads ?? numHeads;
  if (numHeads % numKvHeads !== 0) {
    throw new RangeError(
      `${fileName}: num_attention_heads (${numHeads}) must be a multiple of ` +
        `num_key_value_heads (${numKvHeads})`,
    );
  }
  if (c.head_dim == null && c.hidden_size % numHeads !== 0) {
    throw new RangeError(
      `${fileName}: hidden_size (${c.hidden_size}) is not divisible by num_attention_heads ` +
        `(${numHeads}); set head_dim`,
    );
  }
  const headDim = c.head_dim ?? c.hidden_size / numHeads;
  if (headDim % 2 !== 0) {
    throw new RangeError(`${fileName}: head_dim (${headDim}) must be even for RoPE`);
  }
  if (c.use_sliding_window === true) {
    throw new RangeError(
      `${fileName}: use_sliding_window is true; sliding-window layers are not supported`,
    );
  }

  let ropeScaling: RopeScaling | null = null;
  if (c.rope_scaling) ropeScaling = parseScaling(c.rope_scaling, "rope_scaling", json, fileName);
  else if (c.rope_parameters) {
    ropeScaling = parseScaling(c.rope_parameters, "rope_parameters", json, fileName);
  }

  const dms: DmsConfig = {
    window: c.dms_window_size ?? DMS_DEFAULTS.window,
    alphaScale: c.dms_alpha_scale ?? DMS_DEFAULTS.alphaScale,
    alphaOffset: c.dms_initial_alpha_offset ?? DMS_DEFAULTS.alphaOffset,
    separateAlpha: c.dms_separate_alpha ?? DMS_DEFAULTS.separateAlpha,
    alphaPer: c.dms_alpha_per ?? DMS_DEFAULTS.alphaPer,
    tau: c.dms_tau ?? DMS_DEFAULTS.tau,
    blockSize: c.dms_paged_attention_block_size ?? DMS_DEFAULTS.blockSize,
    compressionRatio: c.dms_cr ?? null,
    disableEviction: c.dms_disable_eviction ?? DMS_DEFAULTS.disableEviction,
    chunkedPrefill: c.dms_chunked_prefill ?? null,
    preallocateForTokens: c.dms_preallocate_for_tokens ?? DMS_DEFAULTS.preallocateForTokens,
    manualInferenceMode: c.dms_manual_inference_mode ?? DMS_DEFAULTS.manualInferenceMode,
  };
  if (dms.window < 0) {
    throw new RangeError(`${fileName}: dms_window_size must be >= 0, got ${dms.window}`);
  }
  if (dms.window <= dms.blockSize) {
    throw new RangeError(
      `${fileName}: dms_window_size (${dms.window}) must be greater than ` +
        `dms_paged_attention_block_size (${dms.blockSize}) (SPEC §5.2)`,
    );
  }

  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (!KNOWN.has(k)) extra[k] = v;

  return {
    modelType: c.model_type,
    hiddenSize: c.hidden_size,
    numLayers: c.num_hidden_layers,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: c.intermediate_size,
    vocabSize: c.vocab_size,
    maxPositionEmbeddings: c.max_position_embeddings,
    ropeTheta: c.rope_theta ?? c.rope_parameters?.rope_theta ?? c.rope_scaling?.rope_theta ??
      10000,
    ropeScaling,
    rmsNormEps: c.rms_norm_eps ?? 1e-6,
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
    attentionBias: c.attention_bias ?? false,
    mlpBias: c.mlp_bias ?? false,
    hiddenAct: "silu",
    bosTokenIds: idList(c.bos_token_id),
    eosTokenIds: idList(c.eos_token_id),
    torchDtype: c.torch_dtype ?? c.dtype ?? null,
    isDms: Object.keys(raw).some((k) => k.startsWith("dms_")),
    dms,
    extra,
  };
}

/** Largest `config.json` read (real ones are a few kilobytes). */
const MAX_CONFIG_BYTES = 16 << 20;

/**
 * Reads and validates a `config.json`.
 *
 * @param path a model folder (reads `config.json` in it) or the file itself
 * @returns the normalised config
 * @throws SyntaxError naming the file if it is not JSON; TypeError if it is not a regular file;
 *   RangeError if it is over 16 MiB; else as {@link parseConfig}
 */
export async function loadConfig(path: string): Promise<ModelConfig> {
  const file = (await Deno.stat(path)).isDirectory
    ? (path.endsWith("/") ? path : path + "/") + "config.json"
    : path;
  // a config is a few kilobytes: refuse a device (/dev/zero never ends) or a huge file unread
  const st = await Deno.stat(file);
  if (!st.isFile) throw new TypeError(`${file}: not a regular file`);
  if (st.size > MAX_CONFIG_BYTES) {
    throw new RangeError(
      `${file}: ${st.size} bytes is too large for a config (${MAX_CONFIG_BYTES} at most)`,
    );
  }
  const text = await Deno.readTextFile(file);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return parseConfig(json, file);
}

function ids(v: number[]): number | number[] | null {
  return v.length === 0 ? null : v.length === 1 ? v[0] : [...v];
}

function scalingJson(s: RopeScaling): Record<string, unknown> {
  return s.type === "linear" ? { rope_type: "linear", factor: s.factor } : {
    rope_type: "llama3",
    factor: s.factor,
    low_freq_factor: s.lowFreqFactor,
    high_freq_factor: s.highFreqFactor,
    original_max_position_embeddings: s.originalMaxPositionEmbeddings,
  };
}

/**
 * Converts a config back to HF `config.json` fields (`extra` first, then the typed fields).
 * RoPE is written in both spellings (`rope_theta` + `rope_scaling` for transformers 4.x,
 * `rope_parameters` for 5.x); `dms_*` fields only when `isDms`.
 * `parseConfig(configToJson(cfg))` deep-equals `cfg`.
 *
 * @param cfg a normalised config
 * @returns a JSON-serialisable object
 */
export function configToJson(cfg: ModelConfig): Record<string, unknown> {
  const scaling = cfg.ropeScaling ? scalingJson(cfg.ropeScaling) : null;
  const out: Record<string, unknown> = {
    ...cfg.extra,
    model_type: cfg.modelType,
    hidden_size: cfg.hiddenSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
    head_dim: cfg.headDim,
    intermediate_size: cfg.intermediateSize,
    vocab_size: cfg.vocabSize,
    max_position_embeddings: cfg.maxPositionEmbeddings,
    rope_theta: cfg.ropeTheta,
    rope_scaling: scaling,
    rope_parameters: { rope_type: "default", ...scaling, rope_theta: cfg.ropeTheta },
    rms_norm_eps: cfg.rmsNormEps,
    tie_word_embeddings: cfg.tieWordEmbeddings,
    attention_bias: cfg.attentionBias,
    mlp_bias: cfg.mlpBias,
    hidden_act: cfg.hiddenAct,
    bos_token_id: ids(cfg.bosTokenIds),
    eos_token_id: ids(cfg.eosTokenIds),
    torch_dtype: cfg.torchDtype,
    dtype: cfg.torchDtype,
  };
  if (cfg.isDms) {
    const d = cfg.dms;
    Object.assign(out, {
      dms_window_size: d.window,
      dms_alpha_scale: d.alphaScale,
      dms_initial_alpha_offset: d.alphaOffset,
      dms_separate_alpha: d.separateAlpha,
      dms_alpha_per: d.alphaPer,
      dms_tau: d.tau,
      dms_paged_attention_block_size: d.blockSize,
      dms_cr: d.compressionRatio,
      dms_disable_eviction: d.disableEviction,
      dms_chunked_prefill: d.chunkedPrefill,
      dms_preallocate_for_tokens: d.preallocateForTokens,
      dms_manual_inference_mode: d.manualInferenceMode,
    });
  }
  return out;
}

/**
 * RoPE inverse frequencies `[headDim / 2]` of a config (HF `rope_scaling` semantics: none, `linear`,
 * `llama3`).
 *
 * @example
 * ```ts
 * import { invFreqFor, parseConfig } from "./config.ts";
 * const cfg = parseConfig({ model_type: "qwen3", hidden_size: 64, num_attention_heads: 2,
 *   num_key_value_heads: 1, head_dim: 32, num_hidden_layers: 1, intermediate_size: 128,
 *   vocab_size: 16, max_position_embeddings: 64, rope_theta: 10000 }, "example");
 * console.log(invFreqFor(cfg).length); // 16
 * ```
 */
export function invFreqFor(cfg: ModelConfig): Float32Array {
  const s = cfg.ropeScaling;
  let hf: HfRopeScaling | undefined;
  if (s?.type === "llama3") {
    hf = {
      rope_type: "llama3",
      factor: s.factor,
      low_freq_factor: s.lowFreqFactor,
      high_freq_factor: s.highFreqFactor,
      original_max_position_embeddings: s.originalMaxPositionEmbeddings,
    };
  } else if (s?.type === "linear") hf = { rope_type: "linear", factor: s.factor };
  return ropeInvFreq(cfg.headDim, cfg.ropeTheta, hf);
}
