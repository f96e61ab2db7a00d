/**
 * Reading a conformance case: the zod schema of its `case.json`, and
 * {@linkcode loadCase}, which reads one case folder (format:
 * `testdata/conformance/README.md`, "Files in each case folder") from disk or
 * HTTP(S) into the inputs a {@linkcode ConformanceBackend} gets and the
 * tensors it is compared with. What a case is (its kinds and types, and the
 * backend contract) lives in `case_types.ts` and is re-exported here.
 *
 * @example Load a case and look at its inputs
 * ```ts
 * import { loadCase } from "./case.ts";
 * const c = await loadCase("testdata/conformance/C1_attn_single_chunk");
 * if (c.kind === "attention_only") console.log(c.case.params.cacheWindow, c.case.inputs.q.shape);
 * ```
 *
 * @module
 */

import { z } from "zod";
import { decodeSafetensors } from "../io/safetensors.ts";
import { type ModelConfig, parseConfig } from "../model/config.ts";
import type { WeightMap, WeightTensor } from "../model/reference.ts";
import { type CaseTensor, parseTolerances } from "./compare.ts";
import { basename, CaseError, join, message, readBytes, readJson } from "./case_folder.ts";
import {
  type AttentionOnlyCase,
  CASE_INPUTS,
  CASE_KINDS,
  type CaseJson,
  type CaseKind,
  type InferenceCase,
  type LoadedCase,
  type TrainForwardCase,
  type TrainStepCase,
} from "./case_types.ts";

export {
  type AdamwSettings,
  type AttentionOnlyCase,
  type BackendOutputs,
  CASE_INPUTS,
  CASE_KINDS,
  type CaseBase,
  type CaseJson,
  type CaseKind,
  type ConformanceBackend,
  type InferenceCase,
  type LoadedCase,
  type ModelCase,
  NOT_OBSERVABLE,
  type TrainForwardCase,
  type TrainStepCase,
} from "./case_types.ts";

// ---------------------------------------------------------------------------------------------
// case.json schema (README, "Files in each case folder" and "Tensors")

const tensorsSchema = z.record(
  z.string(),
  z.object({ dtype: z.string(), shape: z.array(z.int().nonnegative()) }),
);
const caseJsonSchema = z.looseObject({ kind: z.string(), tensors: tensorsSchema });
const trainSchema = z.looseObject({
  batch: z.int().positive(),
  seq_len: z.int().positive(),
  target_frac_to_close: z.number(),
});
const trainStepSchema = z.looseObject({
  batch: z.int().positive(),
  seq_len: z.int().positive(),
  target_frac_to_close: z.number(),
  eos_token_id: z.int().nullish(),
  vocab_chunk: z.int().positive().nullish(),
  adamw: z.object({
    lr: z.number().nonnegative(),
    betas: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)]),
    eps: z.number().nonnegative(),
    weight_decay: z.number().nonnegative(),
    clip_grad_norm: z.number().positive(),
  }),
  params_without_grad: z.array(z.string()).nullish(),
  tolerance_per_tensor: z.record(z.string(), z.unknown()).nullish(),
});
const inferenceSchema = z.looseObject({
  prompt_len: z.int().positive(),
  num_decode_steps: z.int().nonnegative(),
  chunked_prefill: z.int().positive().nullish(),
});
const attentionSchema = z.looseObject({
  batch: z.int().positive(),
  heads_kv: z.int().positive(),
  gqa_factor: z.int().positive(),
  head_dim: z.int().positive(),
  attn_scaling: z.number().positive(),
  cache_window: z.int().positive(),
  block_size: z.int().positive().nullish(),
  prefill_len: z.int().positive(),
  prefill_chunks: z.array(z.tuple([z.int().nonnegative(), z.int().nonnegative()])).nullish(),
  num_decode_steps: z.int().nonnegative(),
  left_pad: z.array(z.int().nonnegative()).nullish(),
});

function parseWith<T>(schema: z.ZodType<T>, value: unknown, file: string): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const msg = r.error.issues.map((i) => `field "${i.path.join(".")}": ${i.message}`).join("; ");
  throw new CaseError(`${file}: ${msg}`);
}

/**
 * Reads and validates `case.json` of a case folder.
 *
 * @throws {CaseError} naming the file and field when it is missing or malformed
 */
export async function readCaseJson(dir: string): Promise<CaseJson> {
  const path = join(dir, "case.json");
  const json = parseWith(caseJsonSchema, await readJson(path), path) as CaseJson;
  try {
    // checked here, so that a malformed table is blamed on the file, not on the backend: the
    // table the report uses (`toleranceTable` in report.ts), `tolerance_per_tensor` (whose
    // entries that are not tolerances are notes) when it is an object, else this one
    const per = json.tolerance_per_tensor;
    if (per === null || typeof per !== "object" || Array.isArray(per)) {
      parseTolerances(json.recommended_tolerance);
    }
  } catch (e) {
    throw new CaseError(`${path}: field ${message(e)}`);
  }
  return json;
}

/**
 * Reads one case folder: `case.json`, every tensor it lists from
 * `case.safetensors`, and for model cases `config.json` + `weights.safetensors`.
 *
 * @param dir the case folder (local path or http(s) URL)
 * @param name the case name for reports (default: the folder's basename)
 * @throws {CaseError} naming the file (and field or tensor) when something is missing or
 *   malformed, or the kind is unknown
 */
export async function loadCase(dir: string, name: string = basename(dir)): Promise<LoadedCase> {
  const jsonPath = join(dir, "case.json");
  const json = await readCaseJson(dir);
  const kind = json.kind;
  if (!(CASE_KINDS as readonly string[]).includes(kind)) {
    throw new CaseError(`${jsonPath}: unknown kind "${kind}" (expected ${CASE_KINDS.join(", ")})`);
  }
  const k = kind as CaseKind;
  const expected = await readCaseTensors(dir, json);
  const inputs: Record<string, CaseTensor> = {};
  for (const n of CASE_INPUTS[k]) {
    const t = expected.get(n);
    if (!t) {
      throw new CaseError(`${jsonPath}: "tensors" lists no input "${n}" (needed by kind ${k})`);
    }
    inputs[n] = t;
  }
  const base = { name, dir, json };
  if (k === "attention_only") {
    const p = parseWith(attentionSchema, json, jsonPath);
    const params: AttentionOnlyCase["params"] = {
      batch: p.batch,
      headsKv: p.heads_kv,
      gqaFactor: p.gqa_factor,
      headDim: p.head_dim,
      attnScaling: p.attn_scaling,
      cacheWindow: p.cache_window,
      blockSize: p.block_size ?? p.cache_window,
      prefillLen: p.prefill_len,
      prefillChunks: p.prefill_chunks ?? [[0, p.prefill_len]],
      numDecodeSteps: p.num_decode_steps,
      leftPad: p.left_pad ?? new Array(p.batch).fill(0),
    };
    checkChunks(params.prefillChunks, params.prefillLen, jsonPath);
    const T = p.prefill_len + p.num_decode_steps,
      fields = "batch, heads_kv, prefill_len, " +
        "num_decode_steps, head_dim";
    checkShape(jsonPath, inputs, "k", [p.batch, p.heads_kv, T, p.head_dim], fields);
    checkShape(jsonPath, inputs, "v", [p.batch, p.heads_kv, T, p.head_dim], fields);
    checkShape(
      jsonPath,
      inputs,
      "q",
      [p.batch * p.heads_kv, T, p.gqa_factor, p.head_dim],
      fields + ", gqa_factor",
    );
    checkShape(jsonPath, inputs, "decisions", [p.batch, p.heads_kv, T], fields);
    checkShape(jsonPath, inputs, "attn_mask", [p.batch, T], "batch, prefill_len, num_decode_steps");
    const pads = params.leftPad;
    if (pads.length !== p.batch || pads.some((x) => x >= p.prefill_len)) {
      throw new CaseError(
        `${jsonPath}: field "left_pad" ${JSON.stringify(pads)}: expected ${p.batch} (batch) ` +
          `values below prefill_len ${p.prefill_len}`,
      );
    }
    const c: AttentionOnlyCase = {
      ...base,
      params,
      inputs: inputs as unknown as AttentionOnlyCase["inputs"],
    };
    return { kind: k, case: c, expected };
  }
  const { config, weights } = await loadModelFiles(dir);
  if (k === "train_forward" || k === "train_step") {
    const p = parseWith(trainSchema, json, jsonPath);
    checkShape(jsonPath, inputs, "input_ids", [p.batch, p.seq_len], "batch, seq_len");
  }
  if (k === "train_forward") {
    const p = parseWith(trainSchema, json, jsonPath);
    const c: TrainForwardCase = {
      ...base,
      config,
      weights,
      params: { batch: p.batch, seqLen: p.seq_len, targetFracToClose: p.target_frac_to_close },
      inputs: inputs as unknown as TrainForwardCase["inputs"],
    };
    return { kind: k, case: c, expected };
  }
  if (k === "train_step") {
    const p = parseWith(trainStepSchema, json, jsonPath);
    const c: TrainStepCase = {
      ...base,
      config,
      weights,
      params: {
        batch: p.batch,
        seqLen: p.seq_len,
        targetFracToClose: p.target_frac_to_close,
        eosTokenId: p.eos_token_id ?? null,
        vocabChunk: p.vocab_chunk ?? null,
        adamw: {
          lr: p.adamw.lr,
          betas: p.adamw.betas,
          eps: p.adamw.eps,
          weightDecay: p.adamw.weight_decay,
          clipGradNorm: p.adamw.clip_grad_norm,
        },
        paramsWithoutGrad: p.params_without_grad ?? [],
      },
      inputs: inputs as unknown as TrainStepCase["inputs"],
      optimizerGradients: new Map(
        [...expected].filter(([n]) => n.startsWith("grad.")).map(([n, t]) => [n.slice(5), t]),
      ),
    };
    return { kind: k, case: c, expected };
  }
  const p = parseWith(inferenceSchema, json, jsonPath);
  const ids = inputs.input_ids.shape;
  checkShape(
    jsonPath,
    inputs,
    "input_ids",
    [ids[0], p.prompt_len + p.num_decode_steps],
    "prompt_len, num_decode_steps",
  );
  const c: InferenceCase = {
    ...base,
    config,
    weights,
    params: {
      promptLen: p.prompt_len,
      numDecodeSteps: p.num_decode_steps,
      chunkedPrefill: p.chunked_prefill ?? null,
    },
    inputs: inputs as unknown as InferenceCase["inputs"],
  };
  return { kind: k, case: c, expected };
}

/**
 * The input tensor `name` must have the shape `case.json`'s scalar fields imply: a case whose
 * fields disagree with its tensors fails here, naming both, instead of running a different
 * problem than it describes (or a billion decode steps).
 */
function checkShape(
  file: string,
  inputs: Record<string, CaseTensor>,
  name: string,
  want: readonly number[],
  fields: string,
): void {
  const got = inputs[name].shape;
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new CaseError(
      `${file}: fields ${fields} imply "${name}" of shape [${want.join(", ")}], ` +
        `but case.safetensors has [${got.join(", ")}]`,
    );
  }
}

function checkChunks(
  chunks: readonly (readonly [number, number])[],
  S: number,
  file: string,
): void {
  let at = 0;
  for (const [s, e] of chunks) {
    if (s !== at || e <= s) {
      throw new CaseError(
        `${file}: prefill_chunks must be contiguous non-empty [start, end) from 0, got ${
          JSON.stringify(chunks)
        }`,
      );
    }
    at = e;
  }
  if (at !== S) throw new CaseError(`${file}: prefill_chunks end at ${at}, prefill_len is ${S}`);
}

/** Decodes a whole (small) safetensors file; a malformed file becomes a CaseError naming it. */
async function readSafetensors(path: string): Promise<ReturnType<typeof decodeSafetensors>> {
  const bytes = await readBytes(path);
  try {
    return decodeSafetensors(bytes, path);
  } catch (e) {
    throw new CaseError(message(e));
  }
}

/** Reads every tensor `case.json` lists from `case.safetensors`, checking its shape. */
async function readCaseTensors(dir: string, json: CaseJson): Promise<Map<string, CaseTensor>> {
  const path = join(dir, "case.safetensors");
  const { tensors } = await readSafetensors(path);
  const out = new Map<string, CaseTensor>();
  for (const [name, info] of Object.entries(json.tensors)) {
    const t = tensors[name];
    if (!t) throw new CaseError(`${path}: no tensor "${name}" (listed in case.json)`);
    if (t.shape.length !== info.shape.length || t.shape.some((d, i) => d !== info.shape[i])) {
      throw new CaseError(
        `${path}: tensor "${name}" has shape [${t.shape.join(", ")}], case.json says [${
          info.shape.join(", ")
        }]`,
      );
    }
    out.set(name, { shape: t.shape, data: t.data });
  }
  return out;
}

/** `config.json` and `weights.safetensors` of a model case. */
async function loadModelFiles(dir: string): Promise<{ config: ModelConfig; weights: WeightMap }> {
  const cfgPath = join(dir, "config.json"), wPath = join(dir, "weights.safetensors");
  const cfgJson = await readJson(cfgPath);
  let config: ModelConfig;
  try {
    config = parseConfig(cfgJson, cfgPath);
  } catch (e) {
    throw new CaseError(message(e));
  }
  const { tensors } = await readSafetensors(wPath);
  const weights = new Map<string, WeightTensor>();
  for (const [name, t] of Object.entries(tensors)) {
    if (!(t.data instanceof Float32Array)) {
      throw new CaseError(`${wPath}: tensor "${name}" is ${t.dtype}, expected a float type`);
    }
    weights.set(name, { shape: t.shape, data: t.data });
  }
  return { config, weights };
}
