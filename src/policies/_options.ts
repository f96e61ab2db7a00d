/**
 * Option checks shared by the baseline policies' `createXxxCache` functions (private to
 * src/policies/).
 *
 * @module
 */

/**
 * Returns `x` when it is an integer ≥ `min`, else throws a RangeError naming `op` and `field`.
 *
 * @example
 * ```ts ignore
 * const budget = intAtLeast("createTovaCache", "budget", options.budget, 1);
 * ```
 */
export function intAtLeast(op: string, field: string, x: unknown, min: number): number {
  if (typeof x !== "number" || !Number.isInteger(x) || x < min) {
    throw new RangeError(`${op}: ${field} must be an integer >= ${min}, got ${x}`);
  }
  return x;
}
