/**
 * The conformance runner: runs every golden case in a folder laid out as
 * `shared/conformance/README.md` describes (one subfolder per case with
 * `case.json`, `case.safetensors` and, for model cases, `config.json` +
 * `weights.safetensors`) through a {@linkcode ConformanceBackend} and compares
 * every expected tensor with the case's `recommended_tolerance`.
 *
 * Kinds (`case.json` → `kind`):
 * - `train_forward` (A): train-mode forward with given noise, plus teacher logits;
 * - `inference` (B): prefill of `prompt_len` tokens, then one decode step per token;
 * - `attention_only` (C): one DMS attention layer with given q/k/v/decisions,
 *   prefill chunks then decode steps.
 *
 * A backend receives only the inputs (never the expected outputs) and returns
 * named tensors; the runner compares each name listed in `case.json` →
 * `tensors` that the backend produced, plus `model_reported.<key>` scalars when
 * produced. Expected −1 entries of `cache_len` and `cache_retained_mask` mean
 * "not observable in the reference cache" and are skipped. A case passes iff
 * everything compared is within tolerance and at least one tensor was compared.
 * Unknown kinds, missing or malformed files and backend errors make a failed
 * case with a message naming the file, never a crash.
 *
 * @example Run the shared cases on the CPU reference
 * ```ts
 * import { cpuBackend, formatCaseReport, runConformance } from "./conformance.ts";
 * const report = await runConformance("../shared/conformance", {
 *   backend: cpuBackend,
 *   log: (line) => console.log(line),
 * });
 * console.log(report.passed, report.failed);
 * ```
 *
 * @module
 */

import { z } from "zod";
import { openSafetensors } from "../io/safetensors.ts";
import { loadConfig, type ModelConfig } from "../model/config.ts";
import type { WeightMap, WeightTensor } from "../model/reference.ts";
import {
  type CaseTensor,
  compareTensor,
  fmtNum,
  formatComparison,
  parseTolerances,
  type TensorComparison,
  type Tolerance,
  toleranceFor,
} from "./compare.ts";

export type { CaseTensor, TensorComparison, Tolerance } from "./compare.ts";
export type { ModelConfig } from "../model/config.ts";
export type { WeightMap, WeightTensor } from "../model/reference.ts";
export { cpuBackend } from "./cpu_backend.ts";

/** The case kinds this runner knows, as `case.json` names them. */
export const CASE_KINDS: readonly CaseKind[] = Object.freeze([
  "train_forward",
  "inference",
  "attention_only",
]);

/** `train_forward` (A), `inference` (B) or `attention_only` (C). */
export type CaseKind = "train_forward" | "inference" | "attention_only";

/** The input tensors of each kind (everything else in `case.safetensors` is expected output). */
export const CASE_INPUTS: Readonly<Record<CaseKind, readonly string[]>> = Object.freeze({
  train_forward: ["input_ids", "noise"],
  inference: ["input_ids"],
  attention_only: ["q", "k", "v", "decisions", "attn_mask"],
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
  /** The case folder. */
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
}

/** The result of one case. */
export interface CaseReport {
  /** Folder path relative to the conformance folder. */
  readonly name: string;
  /** The case folder. */
  readonly dir: string;
  /** `case.json` → `kind`, or null if it could not be read. */
  readonly kind: string | null;
  /** True iff every comparison passed and at least one tensor was compared. */
  readonly ok: boolean;
  /** One entry per compared tensor, in `case.json` order. */
  readonly comparisons: readonly TensorComparison[];
  /** Expected tensors the backend did not produce (inputs included). */
  readonly notProduced: readonly string[];
  /** Human-readable reasons for failing (empty when ok). */
  readonly failures: readonly string[];
  /** The largest absolute error over all compared tensors, and which tensor. */
  readonly maxErr: { readonly tensor: string; readonly value: number } | null;
  /** Wall time of the case. */
  readonly seconds: number;
}

/** The result of a run. */
export interface ConformanceReport {
  /** The folder that was run. */
  readonly dir: string;
  /** The backend's name. */
  readonly backend: string;
  /** One report per case, sorted by name. */
  readonly cases: readonly CaseReport[];
  /** Cases that passed. */
  readonly passed: number;
  /** Cases that failed. */
  readonly failed: number;
  /** True iff at least one case ran and none failed. */
  readonly ok: boolean;
}

/** Options of {@linkcode runConformance}. */
export interface RunOptions {
  /** The implementation under test. */
  backend: ConformanceBackend;
  /** Run only these cases (name or folder basename). */
  only?: string | readonly string[];
  /** Called with each case's report line as soon as the case finishes. */
  log?: (line: string) => void;
  /** Add one line per tensor to what `log` receives. */
  verbose?: boolean;
}

/**
 * Runs every case under `dir` (or `dir` itself if it holds a `case.json`).
 *
 * @throws only if `dir` cannot be read; every per-case problem becomes a failed case.
 */
export async function runConformance(dir: string, options: RunOptions): Promise<ConformanceReport> {
  const { backend, log, verbose = false } = options;
  const only = options.only === undefined
    ? null
    : new Set(typeof options.only === "string" ? [options.only] : options.only);
  const cases: CaseReport[] = [];
  for (const c of await findCases(dir)) {
    if (only && !only.has(c.name) && !only.has(basename(c.dir))) continue;
    const report = await runCase(c.name, c.dir, backend);
    cases.push(report);
    log?.(formatCaseReport(report, { verbose }));
  }
  const passed = cases.filter((c) => c.ok).length;
  return {
    dir,
    backend: backend.name,
    cases,
    passed,
    failed: cases.length - passed,
    ok: cases.length > 0 && passed === cases.length,
  };
}

/**
 * Case folders under `dir`: `dir` itself if it has `case.json`, else every
 * subfolder (recursively, hidden folders skipped) that has one, sorted by name.
 */
export async function findCases(dir: string): Promise<{ name: string; dir: string }[]> {
  const stat = await Deno.stat(dir);
  if (!stat.isDirectory) throw new Error(`${dir} is not a folder`);
  if (await exists(join(dir, "case.json"))) return [{ name: basename(dir), dir }];
  const out: { name: string; dir: string }[] = [];
  const walk = async (d: string, rel: string, depth: number): Promise<void> => {
    const entries: string[] = [];
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory && !e.name.startsWith(".")) entries.push(e.name);
    }
    entries.sort();
    for (const name of entries) {
      const sub = join(d, name), subRel = rel ? `${rel}/${name}` : name;
      if (await exists(join(sub, "case.json"))) out.push({ name: subRel, dir: sub });
      else if (depth < 4) await walk(sub, subRel, depth + 1);
    }
  };
  await walk(dir, "", 1);
  return out;
}

/** Formats a case: `PASS name  max_err 3.1e-6 (logits)`; verbose adds one line per tensor. */
export function formatCaseReport(c: CaseReport, options: { verbose?: boolean } = {}): string {
  let line = `${c.ok ? "PASS" : "FAIL"} ${c.name}`;
  if (c.maxErr) line += `  max_err ${fmtNum(c.maxErr.value)} (${c.maxErr.tensor})`;
  if (!c.ok && c.failures.length) {
    line += `  ${c.failures[0]}`;
    if (c.failures.length > 1) line += ` (+${c.failures.length - 1} more)`;
  }
  if (!options.verbose) return line;
  const lines = [line];
  for (const cmp of c.comparisons) lines.push(`    ${formatComparison(cmp)}`);
  if (c.notProduced.length) lines.push(`    not produced: ${c.notProduced.join(", ")}`);
  for (const f of c.failures.slice(1)) lines.push(`    ${f}`);
  lines.push(`    ${c.seconds.toFixed(2)} s`);
  return lines.join("\n");
}

/** The last line of a run: `conformance: N passed, N failed`. */
export function formatSummary(r: ConformanceReport): string {
  return `conformance: ${r.passed} passed, ${r.failed} failed`;
}

// ---------------------------------------------------------------------------------------------
// One case

/** A problem that fails a case with this message (files, formats). */
class CaseError extends Error {}

const tensorsSchema = z.record(
  z.string(),
  z.object({ dtype: z.string(), shape: z.array(z.int().nonnegative()) }),
);
const baseSchema = z.looseObject({ kind: z.string(), tensors: tensorsSchema });
const trainSchema = z.looseObject({
  batch: z.int().positive(),
  seq_len: z.int().positive(),
  target_frac_to_close: z.number(),
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
  };

/**
 * Reads one case folder: `case.json`, every tensor it lists from
 * `case.safetensors`, and for model cases `config.json` + `weights.safetensors`.
 *
 * @param dir the case folder
 * @param name the case name for reports (default: the folder's basename)
 * @throws Error naming the file (and field or tensor) when something is missing or malformed,
 *   or the kind is unknown
 */
export async function loadCase(dir: string, name: string = basename(dir)): Promise<LoadedCase> {
  const jsonPath = join(dir, "case.json");
  const json = parseWith(baseSchema, await readJson(jsonPath), jsonPath) as CaseJson;
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
    const c: AttentionOnlyCase = {
      ...base,
      params,
      inputs: inputs as unknown as AttentionOnlyCase["inputs"],
    };
    return { kind: k, case: c, expected };
  }
  const { config, weights } = await loadModelFiles(dir);
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
  const p = parseWith(inferenceSchema, json, jsonPath);
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

/** Calls the backend method matching the case's kind. */
export function runBackend(
  backend: ConformanceBackend,
  loaded: LoadedCase,
): Promise<BackendOutputs> {
  switch (loaded.kind) {
    case "train_forward":
      return backend.trainForward(loaded.case);
    case "inference":
      return backend.inference(loaded.case);
    case "attention_only":
      return backend.attentionOnly(loaded.case);
  }
}

async function runCase(
  name: string,
  dir: string,
  backend: ConformanceBackend,
): Promise<CaseReport> {
  const start = performance.now();
  const seconds = () => (performance.now() - start) / 1000;
  const failed = (kind: string | null, msg: string): CaseReport => ({
    name,
    dir,
    kind,
    ok: false,
    comparisons: [],
    notProduced: [],
    failures: [msg],
    maxErr: null,
    seconds: seconds(),
  });
  let loaded: LoadedCase;
  try {
    loaded = await loadCase(dir, name);
  } catch (e) {
    const kind = await readJson(join(dir, "case.json"))
      .then((
        j,
      ) => (j && typeof j === "object" && typeof (j as CaseJson).kind === "string"
        ? (j as CaseJson).kind
        : null)
      )
      .catch(() => null);
    return failed(kind, e instanceof CaseError ? e.message : `${dir}: ${message(e)}`);
  }
  let outputs: BackendOutputs;
  try {
    outputs = await runBackend(backend, loaded);
  } catch (e) {
    return failed(loaded.kind, `backend ${backend.name} failed: ${message(e)}`);
  }
  try {
    const cmp = compareOutputs(loaded.case.json, loaded.expected, outputs);
    return { ...cmp, name, dir, kind: loaded.kind, seconds: seconds() };
  } catch (e) {
    return failed(loaded.kind, `backend ${backend.name} returned malformed outputs: ${message(e)}`);
  }
}

/** Compares a backend's outputs with the expected tensors of a case. */
function compareOutputs(
  json: CaseJson,
  expected: ReadonlyMap<string, CaseTensor>,
  outputs: BackendOutputs,
): Pick<CaseReport, "ok" | "comparisons" | "notProduced" | "failures" | "maxErr"> {
  const table = parseTolerances(json.recommended_tolerance);
  const comparisons: TensorComparison[] = [];
  const notProduced: string[] = [];
  if (outputs === null || typeof outputs !== "object") {
    throw new TypeError(`expected an object of named tensors, got ${String(outputs)}`);
  }
  for (const [name, info] of Object.entries(json.tensors)) {
    const actual = outputs[name];
    if (
      actual !== undefined && !(Array.isArray(actual?.shape) && ArrayBuffer.isView(actual?.data))
    ) {
      throw new TypeError(`output "${name}" is not a {shape, data} tensor`);
    }
    if (!actual) {
      notProduced.push(name);
      continue;
    }
    const { tolerance, source } = toleranceFor(name, info.dtype, table);
    comparisons.push(
      compareTensor(name, actual, expected.get(name)!, tolerance, {
        skipValue: NOT_OBSERVABLE[name],
        toleranceSource: source,
      }),
    );
  }
  // scalars the reference model returned, e.g. A's `cr`
  for (const [key, value] of Object.entries(json.model_reported ?? {})) {
    const name = `model_reported.${key}`;
    const actual = outputs[name];
    if (!actual || typeof value !== "number") continue;
    const { tolerance, source } = table.has(key)
      ? { tolerance: table.get(key)!, source: "case" as const }
      : { tolerance: CR_TOLERANCE, source: "default" as const };
    const exp: CaseTensor = { shape: [1], data: new Float64Array([value]) };
    comparisons.push(compareTensor(name, actual, exp, tolerance, { toleranceSource: source }));
  }
  const failures = comparisons.filter((c) => !c.ok).map((c) => formatComparison(c));
  if (comparisons.length === 0) failures.push("the backend produced none of the expected tensors");
  let maxErr: CaseReport["maxErr"] = null;
  for (const c of comparisons) {
    if (!maxErr || c.maxAbsErr > maxErr.value) maxErr = { tensor: c.name, value: c.maxAbsErr };
  }
  return { ok: failures.length === 0, comparisons, notProduced, failures, maxErr };
}

/** README: "cr rtol 1e-6". Used for `model_reported` scalars without their own entry. */
const CR_TOLERANCE: Tolerance = Object.freeze({ kind: "close", atol: 1e-6, rtol: 1e-6 });

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

/** Reads every tensor `case.json` lists from `case.safetensors`, checking dtype class and shape. */
async function readCaseTensors(dir: string, json: CaseJson): Promise<Map<string, CaseTensor>> {
  const path = join(dir, "case.safetensors");
  if (!(await exists(path))) throw new CaseError(`missing file ${path}`);
  const file = await openSafetensors(path);
  try {
    const out = new Map<string, CaseTensor>();
    for (const [name, info] of Object.entries(json.tensors)) {
      if (!file.tensors.has(name)) {
        throw new CaseError(`${path}: no tensor "${name}" (listed in case.json)`);
      }
      const t = await file.read(name);
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
  } finally {
    file.close();
  }
}

/** `config.json` and `weights.safetensors` of a model case. */
async function loadModelFiles(dir: string): Promise<{ config: ModelConfig; weights: WeightMap }> {
  const cfgPath = join(dir, "config.json"), wPath = join(dir, "weights.safetensors");
  if (!(await exists(cfgPath))) throw new CaseError(`missing file ${cfgPath}`);
  if (!(await exists(wPath))) throw new CaseError(`missing file ${wPath}`);
  let config: ModelConfig;
  try {
    config = await loadConfig(cfgPath);
  } catch (e) {
    throw new CaseError(message(e));
  }
  const file = await openSafetensors(wPath);
  try {
    const weights = new Map<string, WeightTensor>();
    for (const name of file.tensors.keys()) {
      const t = await file.read(name);
      if (!(t.data instanceof Float32Array)) {
        throw new CaseError(`${wPath}: tensor "${name}" is ${t.dtype}, expected a float type`);
      }
      weights.set(name, { shape: t.shape, data: t.data });
    }
    return { config, weights };
  } finally {
    file.close();
  }
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CaseError(`missing file ${path}`);
    throw e;
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CaseError(`${path}: not valid JSON (${message(e)})`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

function join(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

function basename(path: string): string {
  const p = path.replace(/\/+$/, "");
  return p.slice(p.lastIndexOf("/") + 1) || p;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
