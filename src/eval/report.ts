/**
 * Judging and reporting a conformance case: {@linkcode compareOutputs}
 * compares a backend's named tensors with the expected ones of `case.json`
 * (each with its `recommended_tolerance`; expected −1 entries of `cache_len`
 * and `cache_retained_mask` mean "not observable" and are skipped), and the
 * formatters print one line per case and the summary line of a run.
 *
 * Tolerances: `case.json` → `tolerance_per_tensor` when the case has one
 * (`train_step` cases: one `{atol, rtol}` per tensor, "input" for inputs),
 * else `recommended_tolerance`. (`train_step`: `adamw1.*` / `adamw2.*` come from the
 * reference's own gradients, `TrainStepCase.optimizerGradients`.)
 *
 * A case passes iff everything compared is within tolerance and at least one
 * tensor was compared. A case whose kind the backend does not implement is
 * reported as not supported: neither passed nor hidden.
 *
 * @example The summary line of a run
 * ```ts
 * import { formatSummary } from "./report.ts";
 * console.log(formatSummary({ passed: 10, failed: 0 })); // conformance: 10 passed, 0 failed
 * ```
 *
 * @module
 */

import type { BackendOutputs, CaseJson } from "./case.ts";
import { NOT_OBSERVABLE } from "./case.ts";
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
  /** True iff the backend does not implement this case's kind (then `ok` is false). */
  readonly unsupported?: boolean;
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
  /** The folder that was run (local path or http(s) URL). */
  readonly dir: string;
  /** The backend's name. */
  readonly backend: string;
  /** One report per case, sorted by name. */
  readonly cases: readonly CaseReport[];
  /** Cases that passed. */
  readonly passed: number;
  /** Cases that failed (unsupported ones not included). */
  readonly failed: number;
  /** Cases whose kind the backend does not implement (not passed, not failed). */
  readonly unsupported: number;
  /** True iff at least one case ran and every case passed. */
  readonly ok: boolean;
}

/** The verdict part of a {@linkcode CaseReport}. */
export type CaseVerdict = Pick<
  CaseReport,
  "ok" | "comparisons" | "notProduced" | "failures" | "maxErr"
>;

/** README: "cr rtol 1e-6". Used for `model_reported` scalars without their own entry. */
const CR_TOLERANCE: Tolerance = Object.freeze({ kind: "close", atol: 1e-6, rtol: 1e-6 });

/**
 * Compares a backend's outputs with the expected tensors of a case: every
 * tensor listed in `case.json` → `tensors` that the backend produced, plus
 * `model_reported.<key>` scalars when produced.
 *
 * @throws {TypeError} if `outputs` is not an object of `{shape, data}` tensors
 */
export function compareOutputs(
  json: CaseJson,
  expected: ReadonlyMap<string, CaseTensor>,
  outputs: BackendOutputs,
): CaseVerdict {
  const table = toleranceTable(json);
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

/**
 * The tolerance table of a case: `tolerance_per_tensor` (entries that are not a tolerance,
 * such as "input", skipped) when present, else `recommended_tolerance`.
 */
function toleranceTable(json: CaseJson): Map<string, Tolerance> {
  const per = json.tolerance_per_tensor;
  if (per !== null && typeof per === "object" && !Array.isArray(per)) {
    const usable = Object.entries(per as Record<string, unknown>).filter(
      ([, v]) => v === "exact" || (v !== null && typeof v === "object"),
    );
    return parseTolerances(Object.fromEntries(usable), "tolerance_per_tensor");
  }
  return parseTolerances(json.recommended_tolerance);
}

/**
 * Formats a case: `PASS name  max_err 3.1e-6 (logits)` (or `FAIL ...`, or
 * `NOT SUPPORTED name  <reason>`); verbose adds one line per tensor.
 */
export function formatCaseReport(c: CaseReport, options: { verbose?: boolean } = {}): string {
  if (c.unsupported) return `NOT SUPPORTED ${c.name}  ${c.failures.join("; ")}`;
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

/**
 * The last line of a run: `conformance: N passed, N failed`, plus `, N not supported`
 * when the backend skipped case kinds it does not implement.
 */
export function formatSummary(
  r: Pick<ConformanceReport, "passed" | "failed"> & { readonly unsupported?: number },
): string {
  const extra = r.unsupported ? `, ${r.unsupported} not supported` : "";
  return `conformance: ${r.passed} passed, ${r.failed} failed${extra}`;
}
