/**
 * Training checkpoints in Hugging Face layout (issue 9 item 6): a folder
 * `<dir>/checkpoint-<step>/` holding
 *
 * - `model.safetensors` + `config.json`: the model as {@linkcode saveModel} writes it (with the
 *   `dms_*` fields and the adapter tensors under the reference's names
 *   `model.layers.N.self_attn.dms_proj_alpha.weight` / `dms_proj_alpha_norm.weight` for a
 *   retrofitted model), loadable with `loadModel`;
 * - `optimizer.safetensors`: AdamW's moments per trainable parameter, `<name>.exp_avg` and
 *   `<name>.exp_avg_sq` (torch's state names), F32, with the step count in the metadata;
 * - `trainer_state.json`: {@linkcode TrainerState} (step, schedule, data source position, seed,
 *   the run's options), written last.
 *
 * Atomicity: everything is written into a temporary sibling folder
 * (`.checkpoint-<step>.tmp-<id>`), which is renamed to `checkpoint-<step>` only when complete,
 * so a crash never leaves a half checkpoint under a final name; {@linkcode latestCheckpoint}
 * ignores temporary folders and any `checkpoint-*` folder without `trainer_state.json`.
 * Re-saving an existing step swaps the folders (the old one is removed after the rename).
 *
 * @example Save, find, restore
 * ```ts ignore
 * import { latestCheckpoint, readTrainerState, restoreWeights, saveCheckpoint } from "./checkpoint.ts";
 * await saveCheckpoint("runs/a", model, state, { names, optimizer });
 * const last = await latestCheckpoint("runs/a"); // "runs/a/checkpoint-<step>"
 * await restoreWeights(model, last!);
 * const st = await readTrainerState(last!);
 * ```
 *
 * @module
 */

import { writeTextFileAtomic } from "../io/atomic.ts";
import { openCheckpoint, type TensorInput, writeSafetensors } from "../io/safetensors.ts";
import { openSafetensors } from "../io/safetensors.ts";
import { saveModel } from "../model/model.ts";
import type { Transformer } from "../model/transformer.ts";
import { weightSpecs } from "../model/weights.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { AdamW, AdamwCheckpoint } from "./adamw.ts";
import type { BatchSourceState } from "./data.ts";
import type { CompressionSchedule } from "./schedule.ts";

/** `trainer_state.json` of a checkpoint. */
export interface TrainerState {
  /** Format version (1). */
  version: 1;
  /** Optimizer steps completed; a resumed run takes step `step` next. */
  step: number;
  /** The run's seed (noise from `(seed, step, layer)`). */
  seed: number;
  /** The CR schedule (SPEC §6). */
  schedule: CompressionSchedule;
  /** The data source's {@linkcode BatchSource.state} after the last step. */
  data: BatchSourceState;
  /** Names of the trainable parameters, in optimizer order. */
  parameters: string[];
  /** The run's options (JSON-serialisable part), for the record and for checks on resume. */
  options: Record<string, unknown>;
}

/** The optimizer part of {@linkcode saveCheckpoint}. */
export interface OptimizerSave {
  /** Parameter names, in the optimizer's order. */
  names: readonly string[];
  /** The optimizer (its state is read back) or an exported state. */
  optimizer: AdamW | AdamwCheckpoint;
  /** Parameter shapes (default: the optimizer's parameter shapes, else flat). */
  shapes?: readonly (readonly number[])[];
}

/** Files of a complete checkpoint. */
export const CHECKPOINT_FILES: readonly string[] = [
  "model.safetensors",
  "config.json",
  "trainer_state.json",
];

/** `<dir>/checkpoint-<step>`. */
export function checkpointPath(dir: string, step: number): string {
  return `${dir.replace(/\/$/, "")}/checkpoint-${step}`;
}

/**
 * Writes `<dir>/checkpoint-<state.step>` atomically (see the module doc).
 *
 * @param dir The run's checkpoint folder (created if missing).
 * @param model The model (f32 weights give a bit-exact round trip).
 * @param state `trainer_state.json`.
 * @param optimizer AdamW and its parameter names (omit for a weights-only checkpoint).
 * @returns The checkpoint's path.
 * @throws {RangeError} When the optimizer has a different number of parameters than names.
 */
export async function saveCheckpoint(
  dir: string,
  model: Transformer,
  state: TrainerState,
  optimizer?: OptimizerSave,
): Promise<string> {
  const final = checkpointPath(dir, state.step);
  const tmp = `${dir.replace(/\/$/, "")}/.checkpoint-${state.step}.tmp-${
    crypto.randomUUID().slice(0, 8)
  }`;
  await Deno.mkdir(tmp, { recursive: true });
  try {
    await saveModel(model, tmp);
    if (optimizer) await writeOptimizer(`${tmp}/optimizer.safetensors`, optimizer);
    await writeTextFileAtomic(`${tmp}/trainer_state.json`, JSON.stringify(state, null, 2) + "\n");
    let old: string | undefined;
    try {
      await Deno.rename(tmp, final);
    } catch (e) {
      if (!(await exists(final))) throw e;
      old = `${dir.replace(/\/$/, "")}/.checkpoint-${state.step}.old-${
        crypto.randomUUID().slice(0, 8)
      }`;
      await Deno.rename(final, old);
      await Deno.rename(tmp, final);
    }
    if (old) await Deno.remove(old, { recursive: true });
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  return final;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function writeOptimizer(path: string, o: OptimizerSave): Promise<void> {
  const opt = o.optimizer;
  const st: AdamwCheckpoint = "exportState" in opt ? await opt.exportState() : opt;
  const params: readonly Tensor[] = "exportState" in opt ? opt.params : [];
  if (st.m.length !== o.names.length || st.v.length !== o.names.length) {
    throw new RangeError(
      `saveCheckpoint: ${o.names.length} parameter names for ${st.m.length} optimizer moments`,
    );
  }
  const tensors: Record<string, TensorInput> = {};
  o.names.forEach((name, i) => {
    const shape = o.shapes?.[i] ?? params[i]?.shape ?? [st.m[i].length];
    tensors[`${name}.exp_avg`] = { dtype: "F32", shape, data: st.m[i] };
    tensors[`${name}.exp_avg_sq`] = { dtype: "F32", shape, data: st.v[i] };
  });
  await writeSafetensors(path, tensors, { format: "pt", step: String(st.step) });
}

/**
 * The complete checkpoint with the highest step under `dir`, or null (none, or no folder).
 * Temporary folders and `checkpoint-*` folders missing a file of {@linkcode CHECKPOINT_FILES}
 * are ignored.
 */
export async function latestCheckpoint(dir: string): Promise<string | null> {
  const steps: number[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      const m = /^checkpoint-(\d+)$/.exec(e.name);
      if (e.isDirectory && m) steps.push(Number(m[1]));
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  steps.sort((a, b) => b - a);
  for (const s of steps) {
    const p = checkpointPath(dir, s);
    const ok = await Promise.all(CHECKPOINT_FILES.map((f) => exists(`${p}/${f}`)));
    if (ok.every(Boolean)) return p;
  }
  return null;
}

const isRecord = (v: unknown): boolean => typeof v === "object" && v !== null && !Array.isArray(v);

/** What each `trainer_state.json` field must be: a check and its description. */
const STATE_FIELDS: readonly [keyof TrainerState, (v: unknown) => boolean, string][] = [
  ["step", (v) => Number.isSafeInteger(v) && (v as number) >= 0, "an integer >= 0"],
  ["seed", (v) => Number.isSafeInteger(v), "an integer"],
  ["schedule", isRecord, "an object"],
  ["data", isRecord, "an object"],
  [
    "parameters",
    (v) => Array.isArray(v) && v.every((n) => typeof n === "string"),
    "an array of parameter names",
  ],
  ["options", isRecord, "an object"],
];

/**
 * Reads `trainer_state.json` of a checkpoint.
 *
 * @throws {SyntaxError} Naming the file when it is not JSON (a truncated file). {TypeError}
 *   Naming the file and the field when a field is missing or of the wrong type.
 */
export async function readTrainerState(path: string): Promise<TrainerState> {
  const file = `${path}/trainer_state.json`;
  let json: TrainerState;
  try {
    json = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    if (e instanceof SyntaxError) throw new SyntaxError(`${file}: not valid JSON (${e.message})`);
    throw new Error(`${file}: cannot read (${(e as Error).message})`, { cause: e });
  }
  if (!isRecord(json)) throw new TypeError(`${file}: expected a JSON object`);
  for (const [k, ok, what] of STATE_FIELDS) {
    if (json[k] === undefined) throw new TypeError(`${file}: field "${k}" is missing`);
    if (!ok(json[k])) {
      throw new TypeError(
        `${file}: field "${k}": expected ${what}, got ${JSON.stringify(json[k]).slice(0, 60)}`,
      );
    }
  }
  if (json.version !== 1) throw new TypeError(`${file}: unknown version ${json.version}`);
  return json;
}

/**
 * Reads `optimizer.safetensors` of a checkpoint for these parameter names (in this order).
 *
 * @param path The checkpoint folder.
 * @param names Trainable parameter names, in the optimizer's order.
 * @param shapes Each parameter's shape (checked against both moments when given).
 * @throws {Error} Naming the file when it is missing (a weights-only checkpoint cannot resume
 *   an optimizer), and the tensor when one is missing. {TypeError} For a moment that is not F32.
 *   {RangeError} For a moment whose shape differs from its parameter's.
 */
export async function readOptimizerState(
  path: string,
  names: readonly string[],
  shapes?: readonly (readonly number[])[],
): Promise<AdamwCheckpoint> {
  const file = `${path}/optimizer.safetensors`;
  if (!(await exists(file))) {
    throw new Error(`${file} is missing: the checkpoint holds no optimizer state to resume from`);
  }
  using f = await openSafetensors(file);
  const step = Number(f.metadata?.step);
  if (!Number.isInteger(step) || step < 0) {
    throw new TypeError(
      `${file}: metadata "step" must be an integer >= 0, got ${f.metadata?.step}`,
    );
  }
  const m: Float32Array[] = [], v: Float32Array[] = [];
  for (const [i, name] of names.entries()) {
    for (const [suffix, out] of [[".exp_avg", m], [".exp_avg_sq", v]] as const) {
      const info = f.tensors.get(name + suffix);
      if (!info) throw new Error(`${file}: tensor "${name}${suffix}" is missing`);
      if (info.dtype !== "F32") {
        throw new TypeError(`${file}: tensor "${name}${suffix}" is ${info.dtype}, expected F32`);
      }
      const want = shapes?.[i];
      if (want && info.shape.join() !== want.join()) {
        throw new RangeError(
          `${file}: tensor "${name}${suffix}" has shape [${info.shape.join(", ")}], ` +
            `the parameter is [${want.join(", ")}]`,
        );
      }
      out.push((await f.read(name + suffix)).data as Float32Array);
    }
  }
  return { step, m, v };
}

/**
 * Overwrites every weight of `model` with a checkpoint's `model.safetensors` (same config
 * shapes; f32 values written as stored, so an f32 model is restored bit-exactly).
 *
 * @throws {Error} Naming the tensor and the file when one is missing. {RangeError} For a
 *   shape that differs.
 */
export async function restoreWeights(model: Transformer, path: string): Promise<void> {
  using ckpt = await openCheckpoint(path);
  const cfg = model.config, w = model.weights;
  const read = async (name: string, shape: readonly number[], range?: [number, number]) => {
    const info = ckpt.tensors.get(name);
    if (!info) throw new Error(`${path}: tensor "${name}" is missing`);
    if (info.shape.join() !== shape.join()) {
      throw new RangeError(
        `${name}: expected [${shape.join(", ")}], got [${info.shape.join(", ")}] in ${info.file}`,
      );
    }
    const r = range ? { rowStart: range[0], rowEnd: range[1] } : undefined;
    return (await ckpt.read(name, r)).data as Float32Array;
  };
  for (const s of weightSpecs(cfg)) {
    const t = (w.layers[s.layer!] as unknown as Record<string, Tensor>)[s.key!];
    t.write(await read(s.name, s.shape));
  }
  const VH = [cfg.vocabSize, cfg.hiddenSize];
  const matrix = async (name: string, m: typeof w.embed) => {
    for (const c of m.chunks) {
      c.tensor.write(await read(name, VH, [c.rowStart, c.rowStart + c.tensor.shape[0]]));
    }
  };
  await matrix("model.embed_tokens.weight", w.embed);
  if (w.lmHead !== w.embed) await matrix("lm_head.weight", w.lmHead);
  w.finalNorm.write(await read("model.norm.weight", [cfg.hiddenSize]));
}
