/**
 * Decode-attention variants for end-to-end A/B runs (`bench/generate.ts --variants`): each
 * variant is a set of {@linkcode flashDecodeDefaults} (src/cache/paged_decode_plan.ts) applied before
 * a generation, so that one process can alternate variants round by round (A B A B …) on the same
 * model. On the H200 the same configuration measured up to ±5% apart from process to process
 * (session 13), so a comparison made in separate processes, one after the other, mixes the
 * variants' difference with that drift.
 *
 * A variant is written `key=value,key=value` (keys: `minKeys`, `threads`, `maxKeys`,
 * `workgroups`, `wave`, `loads` (1, 2, 4 or 8: K/V words in flight a lane, dropped where the
 * shape cannot take it), `headSplit` (1, 2, 4 or 8 workgroups sharing a page's query heads,
 * dropped where it does not divide G), `combine` = `fused` | `dispatch`, `early` = `on` | `off`); `default` (or `-`) is
 * the defaults; variants are separated by `;`. Begin the list with `default`, not `-`: node's
 * `parseArgs` takes `--variants "-;…"` for a missing value (or write `--variants=-;…`).
 *
 * @example
 * ```ts
 * import { applyVariant, parseVariants } from "./_variants.ts";
 * const [a, b] = parseVariants("minKeys=64;minKeys=128");
 * applyVariant(a); // flashDecodeDefaults.minKeys = 64
 * applyVariant(b); // flashDecodeDefaults.minKeys = 128
 * ```
 *
 * @module
 */

import { flashDecodeDefaults } from "../src/cache/paged_decode_plan.ts";

/** One variant: the defaults it sets, and its label. */
export interface Variant {
  /** As written on the command line (`default` or `-` for the defaults). */
  label: string;
  /** The {@linkcode flashDecodeDefaults} it sets; the keys it does not name are unset. */
  defaults: typeof flashDecodeDefaults;
}

const NUMERIC = [
  "minKeys",
  "threads",
  "maxKeys",
  "workgroups",
  "wave",
  "loads",
  "headSplit",
] as const;

/**
 * Parses `a;b;…` into variants (`default` or `-`: the defaults).
 *
 * @throws {RangeError} On an unknown key, a value that is not a positive integer (numeric keys),
 *   not `fused` / `dispatch` (`combine`) or not `on` / `off` (`early`), or no variant.
 */
export function parseVariants(spec: string): Variant[] {
  const out = spec.split(";").map((v) => v.trim()).filter((v) => v !== "").map((label) => {
    const defaults: typeof flashDecodeDefaults = {};
    if (label !== "-" && label !== "default") {
      for (const part of label.split(",")) {
        const [key, value, extra] = part.split("=").map((x) => x.trim());
        if (value === undefined || extra !== undefined) {
          throw new RangeError(`--variants: "${part}" in "${label}" is not key=value`);
        }
        if (key === "combine") {
          if (value !== "fused" && value !== "dispatch") {
            throw new RangeError(`--variants: combine must be fused or dispatch, got ${value}`);
          }
          defaults.combine = value;
        } else if (key === "early") {
          if (value !== "on" && value !== "off") {
            throw new RangeError(`--variants: early must be on or off, got ${value}`);
          }
          defaults.earlyLoads = value === "on";
        } else if ((NUMERIC as readonly string[]).includes(key)) {
          const n = Number(value);
          if (!(Number.isInteger(n) && n >= 1)) {
            throw new RangeError(`--variants: ${key} must be an integer >= 1, got ${value}`);
          }
          defaults[key as typeof NUMERIC[number]] = n;
        } else {
          throw new RangeError(
            `--variants: unknown key "${key}" in "${label}" (keys: ${
              NUMERIC.join(", ")
            }, combine, early)`,
          );
        }
      }
    }
    return { label, defaults };
  });
  if (out.length === 0) throw new RangeError(`--variants: no variant in "${spec}"`);
  return out;
}

/**
 * Sets {@linkcode flashDecodeDefaults} to `base` (the defaults the command's other flags set)
 * overridden by the variant's; the keys neither names are unset.
 */
export function applyVariant(v: Variant, base: typeof flashDecodeDefaults = {}): void {
  for (const k of Object.keys(flashDecodeDefaults)) {
    delete flashDecodeDefaults[k as keyof typeof flashDecodeDefaults];
  }
  Object.assign(flashDecodeDefaults, base, v.defaults);
}
