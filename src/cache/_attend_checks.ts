/**
 * The argument checks of `PagedKvCache.attend` (./paged_kv_cache.ts): q, k and v against the
 * cache's geometry and dtype, and the decisions against the step and the policy. Each error names
 * the argument, the expected and the actual shape or dtype.
 *
 * @module
 */

import { assertShape, fmtShape, type Tensor } from "../tensor/tensor.ts";

/** What the checks need of the cache. */
interface Geometry {
  readonly dtype: "f32" | "f16";
  readonly batch: number;
  readonly kvHeads: number;
  readonly headDim: number;
}

/**
 * Checks `q:[B, Hq, n, D]`, `k, v:[B, Hkv, n, D]` (Hq a positive multiple of Hkv, n ≥ 1) and
 * their dtype against the cache; returns n.
 *
 * @throws {TypeError} A dtype other than the cache's.
 * @throws {RangeError} A rank or shape that does not match (naming the tensor).
 */
export function checkAttendInputs(
  op: string,
  c: Geometry,
  q: Tensor,
  k: Tensor,
  v: Tensor,
): number {
  for (const [name, t] of [["q", q], ["k", k], ["v", v]] as const) {
    if (t.dtype !== c.dtype) {
      throw new TypeError(
        `${op}: ${name} must be ${c.dtype} like the cache, got ${t.dtype}${fmtShape(t.shape)}`,
      );
    }
    if (t.rank !== 4) {
      throw new RangeError(
        `${op}: ${name} must have rank 4 [B, H, n, D], got ${fmtShape(t.shape)}`,
      );
    }
  }
  const n = k.shape[2];
  if (n < 1) throw new RangeError(`${op}: k has no tokens (${fmtShape(k.shape)})`);
  assertShape(k, [c.batch, c.kvHeads, n, c.headDim], `${op}: k`);
  assertShape(v, [c.batch, c.kvHeads, n, c.headDim], `${op}: v`);
  const Hq = q.shape[1];
  if (Hq < 1 || Hq % c.kvHeads !== 0) {
    throw new RangeError(
      `${op}: q has ${Hq} heads, not a positive multiple of the ${c.kvHeads} KV heads (${
        fmtShape(q.shape)
      })`,
    );
  }
  assertShape(q, [c.batch, Hq, n, c.headDim], `${op}: q`);
  return n;
}

/**
 * Checks the decisions `[B, Hkv, n]` i32 of a step, required when the policy uses them.
 *
 * @throws {TypeError} Not i32, or missing for a policy that uses them.
 * @throws {RangeError} Another shape.
 */
export function checkAttendDecisions(
  op: string,
  c: Geometry,
  policy: { readonly usesDecisions: boolean; readonly name: string },
  n: number,
  decisions: Tensor | undefined,
): void {
  const B = c.batch, Hkv = c.kvHeads;
  if (decisions) {
    if (decisions.dtype !== "i32") {
      throw new TypeError(
        `${op}: decisions must be i32, got ${decisions.dtype}${fmtShape(decisions.shape)}`,
      );
    }
    const want = [B, Hkv, n];
    if (decisions.rank !== 3 || decisions.shape.some((x, i) => x !== want[i])) {
      throw new RangeError(
        `${op}: decisions: expected shape ${fmtShape(want)} [B, Hkv, n], got ${
          fmtShape(decisions.shape)
        }`,
      );
    }
  } else if (policy.usesDecisions) {
    throw new TypeError(
      `${op}: decisions [${B}, ${Hkv}, ${n}] i32 are required by the ${policy.name} policy`,
    );
  }
}

/**
 * Validates a step's key mask `[B, n]` (0/1, left padding only: no 0 after a row's first 1, nor in
 * a row that has started, `started[b]`) and writes each row's first real index into `fr` (n for
 * a row of padding only).
 *
 * @returns The mask as i32.
 * @throws {RangeError} A mask of the wrong length, a value not 0 or 1, or a 0 after a token
 *   (naming `op`, the row and the index).
 */
export function checkLeftPadding(
  op: string,
  keyMask: ArrayLike<number>,
  B: number,
  n: number,
  started: Uint8Array,
  fr: Int32Array,
): Int32Array {
  if (keyMask.length !== B * n) {
    throw new RangeError(
      `${op}: keyMask: expected ${B * n} values [B, n] = [${B}, ${n}], got ${keyMask.length}`,
    );
  }
  const m = Int32Array.from(keyMask);
  for (let b = 0; b < B; b++) {
    let f = n;
    for (let j = 0; j < n; j++) {
      const x = m[b * n + j];
      if (x !== 0 && x !== 1) {
        throw new RangeError(`${op}: keyMask[${b}, ${j}] must be 0 or 1, got ${x}`);
      }
      if (x === 1 && f === n) f = j;
      if (x === 0 && (f < n || started[b])) {
        throw new RangeError(
          `${op}: keyMask row ${b} has a 0 at ${j} after a token; only left padding is supported`,
        );
      }
    }
    fr[b] = f;
  }
  return m;
}

/** Whether `keyMask` equals the step's mask `m` (undefined: none, or all ones). */
export function sameMask(
  m: Int32Array | undefined,
  keyMask: ArrayLike<number> | undefined,
): boolean {
  return m === undefined
    ? keyMask === undefined || Array.prototype.every.call(keyMask, (x: number) => x === 1)
    : keyMask !== undefined && keyMask.length === m.length &&
      Array.prototype.every.call(keyMask, (x: number, i: number) => x === m[i]);
}
