/**
 * Tensor comparison for the conformance runner: tolerances as the golden
 * vectors state them (`recommended_tolerance` in each `case.json`), and an
 * elementwise check that reports the max error and where it occurred.
 *
 * Rule (conformance README, "Tolerances"): a value passes iff
 * `|actual − expected| <= atol + rtol·|expected|`; "exact" tensors (integers,
 * decisions) must be equal; a NaN expected value needs a NaN actual value and
 * vice versa; an infinite expected value needs the same infinity.
 *
 * @module
 */

/** A float tolerance `|a − e| <= atol + rtol·|e|`, or exact equality. */
export type Tolerance =
  | { readonly kind: "close"; readonly atol: number; readonly rtol: number }
  | { readonly kind: "exact" };

/** Exact equality. */
export const EXACT: Tolerance = Object.freeze({ kind: "exact" });

/**
 * Tolerance of float tensors that `recommended_tolerance` does not list (inputs
 * echoed back by a backend, other people's cases without a table): the README's
 * tolerance for model outputs.
 */
export const DEFAULT_FLOAT_TOLERANCE: Tolerance = Object.freeze({
  kind: "close",
  atol: 1e-4,
  rtol: 1e-4,
});

/** Any array a tensor can hold. */
export type NumericArray = Float32Array | Float64Array | Int32Array | Uint8Array | Uint32Array;

/** A named array with its shape, as read from `case.safetensors` or produced by a backend. */
export interface CaseTensor {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Row-major values. */
  readonly data: NumericArray;
}

/**
 * Parses `recommended_tolerance` into name → tolerance. Keys are a tensor name,
 * several names joined by `/` (`"q / k / v"`) or a label with names in
 * parentheses (`"integers (input_ids, decisions, cache_len)"`); values are
 * `"exact"` or `{atol, rtol}`.
 *
 * @throws {SyntaxError} naming the key for a value of another form.
 */
export function parseTolerances(
  table: unknown,
  where = "recommended_tolerance",
): Map<string, Tolerance> {
  const out = new Map<string, Tolerance>();
  if (table == null) return out;
  if (typeof table !== "object" || Array.isArray(table)) {
    throw new SyntaxError(`${where}: expected an object, got ${JSON.stringify(table)}`);
  }
  for (const [key, value] of Object.entries(table as Record<string, unknown>)) {
    let tol: Tolerance;
    if (value === "exact") tol = EXACT;
    else if (
      value !== null && typeof value === "object" &&
      typeof (value as { atol?: unknown }).atol === "number"
    ) {
      const v = value as { atol: number; rtol?: unknown };
      tol = { kind: "close", atol: v.atol, rtol: typeof v.rtol === "number" ? v.rtol : 0 };
    } else {
      throw new SyntaxError(
        `${where}: "${key}": expected "exact" or {atol, rtol}, got ${JSON.stringify(value)}`,
      );
    }
    for (const name of namesOfKey(key)) out.set(name, tol);
  }
  return out;
}

/** `"a / b"` → [a, b]; `"label (a, b)"` → [a, b]; `"a"` → [a]. */
function namesOfKey(key: string): string[] {
  const paren = key.match(/\(([^)]*)\)/);
  const list = paren ? paren[1].split(",") : key.split("/");
  return list.map((s) => s.trim()).filter((s) => s.length > 0);
}

/** The tolerance of one tensor: the table's, else exact for integers, else the default. */
export function toleranceFor(
  name: string,
  dtype: string,
  table: ReadonlyMap<string, Tolerance>,
): { tolerance: Tolerance; source: "case" | "default" } {
  const t = table.get(name);
  if (t) return { tolerance: t, source: "case" };
  const isInt = /^(u?int|[iu]\d|bool)/i.test(dtype); // int32, I32, U8, bool ...
  return { tolerance: isInt ? EXACT : DEFAULT_FLOAT_TOLERANCE, source: "default" };
}

/** Row-major flat index → multi-index. */
export function unravel(index: number, shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = index % shape[d];
    index = Math.floor(index / shape[d]);
  }
  return out;
}

/** One failing element. */
export interface ElementFailure {
  /** Multi-index into the tensor. */
  readonly at: number[];
  /** The backend's value. */
  readonly actual: number;
  /** The golden value. */
  readonly expected: number;
}

/** Result of comparing one tensor. */
export interface TensorComparison {
  /** Tensor name. */
  readonly name: string;
  /** Expected shape. */
  readonly shape: readonly number[];
  /** True iff every compared element is within the tolerance. */
  readonly ok: boolean;
  /** The tolerance applied. */
  readonly tolerance: Tolerance;
  /** Where the tolerance came from: the case's table or the default. */
  readonly toleranceSource: "case" | "default";
  /** Elements compared. */
  readonly compared: number;
  /** Elements skipped as not observable (expected value equal to `skipValue`). */
  readonly skipped: number;
  /** Elements outside the tolerance. */
  readonly mismatches: number;
  /** Largest |actual − expected| over compared elements (Infinity for a NaN/inf mismatch). */
  readonly maxAbsErr: number;
  /** Multi-index of `maxAbsErr` (null if nothing was compared). */
  readonly maxAt: number[] | null;
  /** The first failing element in row-major order, if any. */
  readonly firstFailure: ElementFailure | null;
  /** Set when the tensor could not be compared at all (shape mismatch). */
  readonly error?: string;
}

/** Options of {@linkcode compareTensor}. */
export interface CompareOptions {
  /** Expected elements equal to this value are "not observable" and skipped (e.g. −1). */
  skipValue?: number;
}

/**
 * Compares `actual` with `expected` elementwise under `tolerance`; never throws.
 *
 * @example
 * ```ts
 * const c = compareTensor("x", { shape: [2], data: new Float32Array([1, 2]) },
 *   { shape: [2], data: new Float32Array([1, 2.5]) }, { kind: "close", atol: 0.1, rtol: 0 });
 * c.ok; // false; c.maxAbsErr 0.5 at [1]
 * ```
 */
export function compareTensor(
  name: string,
  actual: CaseTensor,
  expected: CaseTensor,
  tolerance: Tolerance,
  options: CompareOptions & { toleranceSource?: "case" | "default" } = {},
): TensorComparison {
  const base = {
    name,
    shape: expected.shape,
    tolerance,
    toleranceSource: options.toleranceSource ?? "case",
  };
  const sameShape = actual.shape.length === expected.shape.length &&
    actual.shape.every((d, i) => d === expected.shape[i]);
  if (!sameShape || actual.data.length !== expected.data.length) {
    return {
      ...base,
      ok: false,
      compared: 0,
      skipped: 0,
      mismatches: expected.data.length,
      maxAbsErr: Infinity,
      maxAt: null,
      firstFailure: null,
      error: `shape [${actual.shape.join(", ")}] (${actual.data.length} values) ` +
        `differs from the expected [${expected.shape.join(", ")}] (${expected.data.length} values)`,
    };
  }
  let compared = 0, skipped = 0, mismatches = 0, maxAbsErr = 0, maxIndex = -1;
  let firstFailure: ElementFailure | null = null;
  const a = actual.data, e = expected.data;
  for (let i = 0; i < e.length; i++) {
    const ev = e[i], av = a[i];
    if (options.skipValue !== undefined && ev === options.skipValue) {
      skipped++;
      continue;
    }
    compared++;
    let err: number, pass: boolean;
    if (Number.isNaN(ev) || Number.isNaN(av)) {
      pass = Number.isNaN(ev) && Number.isNaN(av);
      err = pass ? 0 : Infinity;
    } else if (!Number.isFinite(ev) || !Number.isFinite(av)) {
      pass = ev === av;
      err = pass ? 0 : Infinity;
    } else {
      err = Math.abs(av - ev);
      pass = tolerance.kind === "exact"
        ? av === ev
        : err <= tolerance.atol + tolerance.rtol * Math.abs(ev);
    }
    if (err > maxAbsErr || maxIndex < 0) {
      maxAbsErr = err;
      maxIndex = i;
    }
    if (!pass) {
      mismatches++;
      firstFailure ??= { at: unravel(i, expected.shape), actual: av, expected: ev };
    }
  }
  return {
    ...base,
    ok: mismatches === 0,
    compared,
    skipped,
    mismatches,
    maxAbsErr: compared ? maxAbsErr : 0,
    maxAt: maxIndex >= 0 ? unravel(maxIndex, expected.shape) : null,
    firstFailure,
  };
}

/** `"atol 1e-4 rtol 1e-4"` or `"exact"`. */
export function formatTolerance(t: Tolerance): string {
  return t.kind === "exact" ? "exact" : `atol ${fmtNum(t.atol)} rtol ${fmtNum(t.rtol)}`;
}

/** Short scientific notation: `3.1e-6`, `0`, `Infinity`. */
export function fmtNum(x: number): string {
  if (x === 0 || !Number.isFinite(x)) return String(x);
  return x.toExponential(1).replace("e+", "e");
}

/** One line describing a comparison, e.g. `logits [1, 32, 256] max_err 1.2e-6 at [0, 3, 17] (atol 1e-4 rtol 1e-4) ok`. */
export function formatComparison(c: TensorComparison): string {
  const shape = `[${c.shape.join(", ")}]`;
  if (c.error) return `${c.name} ${shape}: ${c.error}`;
  let s = `${c.name} ${shape} max_err ${fmtNum(c.maxAbsErr)}`;
  if (c.maxAt && c.maxAbsErr > 0) s += ` at [${c.maxAt.join(", ")}]`;
  s += ` (${formatTolerance(c.tolerance)}${c.toleranceSource === "default" ? ", default" : ""})`;
  if (c.skipped) s += `, ${c.skipped} not observable skipped`;
  if (c.ok) return s + " ok";
  const f = c.firstFailure!;
  return s + ` FAIL: ${c.mismatches} of ${c.compared} outside; first at [${f.at.join(", ")}]: ` +
    `actual ${f.actual}, expected ${f.expected}`;
}
