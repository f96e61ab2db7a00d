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
