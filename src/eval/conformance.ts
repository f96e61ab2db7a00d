/**
 * The conformance runner: runs every golden case in a folder laid out as
 * `testdata/conformance/README.md` describes (one subfolder per case with
 * `case.json`, `case.safetensors` and, for model cases, `config.json` +
 * `weights.safetensors`) through a {@linkcode ConformanceBackend} and compares
 * every expected tensor with the case's `recommended_tolerance`.
 *
 * With no folder it runs the ten golden cases that ship with the package
 * (`testdata/conformance/`, produced by NVIDIA's reference; see its
 * PROVENANCE.md): from disk in a checkout, over HTTP(S) when imported from a
 * registry. A list of folders runs them all, in order: {@linkcode DEFAULT_CONFORMANCE_DIRS}
 * adds the three training cases (`testdata/conformance-train/`, kind `train_step`),
 * which is what `deno task conform` runs with no folder. With no backend it uses the
 * float64 CPU reference.
 *
 * A backend that does not implement a case kind (the optional `trainStep`) gets that
 * case reported as NOT SUPPORTED: counted apart, never as passed, and the run is not ok.
 *
 * The pieces: `case_types.ts` (case types, the backend contract), `case.ts` (`case.json`
 * schema, {@linkcode loadCase}), `case_folder.ts` (finding and reading case folders),
 * `report.ts` (comparing and formatting), `cpu_backend.ts` / `gpu_backend.ts` (the
 * implementations), `observables.ts` (what the reference cache reports). This module runs them
 * and re-exports what a caller needs.
 *
 * A backend receives only the inputs (never the expected outputs) and returns
 * named tensors. Unknown kinds, missing or malformed files and backend errors
 * make a failed case with a message naming the file, never a crash.
 *
 * @example Run the vendored cases on the CPU reference
 * ```ts
 * import { formatSummary, runConformance } from "./conformance.ts";
 * const report = await runConformance(undefined, { log: (line) => console.log(line) });
 * console.log(formatSummary(report)); // conformance: 10 passed, 0 failed
 * ```
 *
 * @module
 */

import {
  type BackendOutputs,
  type CaseJson,
  type ConformanceBackend,
  loadCase,
  type LoadedCase,
} from "./case.ts";
import {
  basename,
  CaseError,
  DEFAULT_CONFORMANCE_DIR,
  findCases,
  folderLocation,
  join,
  message,
  readJson,
} from "./case_folder.ts";
import { cpuBackend } from "./cpu_backend.ts";
import {
  type CaseReport,
  compareOutputs,
  type ConformanceReport,
  formatCaseReport,
} from "./report.ts";

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
  loadCase,
  type LoadedCase,
  type ModelCase,
  NOT_OBSERVABLE,
  type TrainForwardCase,
  type TrainStepCase,
} from "./case.ts";
export {
  DEFAULT_CONFORMANCE_DIR,
  DEFAULT_CONFORMANCE_DIRS,
  DEFAULT_CONFORMANCE_TRAIN_DIR,
  findCases,
  type FoundCase,
  GOLDEN_CASES,
  GOLDEN_TRAIN_CASES,
} from "./case_folder.ts";
export {
  type CaseReport,
  type ConformanceReport,
  formatCaseReport,
  formatSummary,
} from "./report.ts";
export type { CaseTensor, TensorComparison, Tolerance } from "./compare.ts";
export type { ModelConfig } from "../model/config.ts";
export type { WeightMap, WeightTensor } from "../model/reference.ts";
export { cpuBackend } from "./cpu_backend.ts";

/** Options of {@linkcode runConformance}. */
export interface RunOptions {
  /** The implementation under test (default: the float64 CPU reference, `cpuBackend`). */
  backend?: ConformanceBackend;
  /** Run only these cases (name or folder basename). */
  only?: string | readonly string[];
  /** Called with each case's report line as soon as the case finishes. */
  log?: (line: string) => void;
  /** Add one line per tensor to what `log` receives. */
  verbose?: boolean;
}

/** Thrown by {@linkcode runBackend} when the backend does not implement the case's kind. */
export class UnsupportedKindError extends Error {}

/**
 * Runs every case under `dir` (or `dir` itself if it holds a `case.json`); a list of
 * folders runs each in turn, in one report.
 *
 * @param dir a local folder path, or a `file:` / `http(s):` URL, or a list of them;
 *   default: the ten golden cases vendored with the package
 *   ({@linkcode DEFAULT_CONFORMANCE_DIR}; {@linkcode DEFAULT_CONFORMANCE_DIRS} adds the
 *   training cases)
 * @param options backend (default CPU reference), case filter, logging
 * @throws only if `dir` cannot be read; every per-case problem becomes a failed case.
 *   A run that finds no case is not ok.
 */
export async function runConformance(
  dir?: string | URL | readonly (string | URL)[],
  options: RunOptions = {},
): Promise<ConformanceReport> {
  const { backend = cpuBackend, log, verbose = false } = options;
  const dirs = Array.isArray(dir) ? dir : [dir ?? DEFAULT_CONFORMANCE_DIR];
  const locs = dirs.map((d: string | URL) => folderLocation(d));
  const only = options.only === undefined
    ? null
    : new Set(typeof options.only === "string" ? [options.only] : options.only);
  const cases: CaseReport[] = [];
  for (const loc of locs) {
    for (const c of await findCases(loc)) {
      if (only && !only.has(c.name) && !only.has(basename(c.dir))) continue;
      const report = await runCase(c.name, c.dir, backend);
      cases.push(report);
      log?.(formatCaseReport(report, { verbose }));
    }
  }
  const passed = cases.filter((c) => c.ok).length;
  const unsupported = cases.filter((c) => c.unsupported).length;
  return {
    dir: locs.join(", "),
    backend: backend.name,
    cases,
    passed,
    failed: cases.length - passed - unsupported,
    unsupported,
    ok: cases.length > 0 && passed === cases.length,
  };
}

/**
 * Calls the backend method matching the case's kind.
 *
 * @throws {UnsupportedKindError} when the backend has no method for the kind (`trainStep`)
 */
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
    case "train_step":
      if (!backend.trainStep) {
        throw new UnsupportedKindError(
          `kind train_step is not supported by backend ${backend.name} yet`,
        );
      }
      return backend.trainStep(loaded.case);
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
    // the kind, when case.json is readable, so that the report says what failed to load
    const kind = await readJson(join(dir, "case.json")).then(
      (
        j,
      ) => (j && typeof j === "object" && typeof (j as CaseJson).kind === "string"
        ? (j as CaseJson).kind
        : null),
      () => null,
    );
    return failed(kind, e instanceof CaseError ? e.message : `${dir}: ${message(e)}`);
  }
  let outputs: BackendOutputs;
  try {
    outputs = await runBackend(backend, loaded);
  } catch (e) {
    if (e instanceof UnsupportedKindError) {
      return { ...failed(loaded.kind, e.message), unsupported: true };
    }
    return failed(loaded.kind, `backend ${backend.name} failed: ${message(e)}`);
  }
  try {
    const cmp = compareOutputs(loaded.case.json, loaded.expected, outputs);
    return { ...cmp, name, dir, kind: loaded.kind, seconds: seconds() };
  } catch (e) {
    return failed(loaded.kind, `backend ${backend.name} returned malformed outputs: ${message(e)}`);
  }
}
