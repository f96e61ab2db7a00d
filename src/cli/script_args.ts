/**
 * Arguments of the repository's scripts (examples, benches, tools), with the CLI's rules
 * (`_command.ts`): `--help` / `-h` prints the script's usage and exits 0; an unknown flag, a
 * missing value or a bad number prints `<script>: <message>` and the usage on stderr and exits 2,
 * before the script opens a GPU or touches a file; never a stack trace.
 *
 * @example
 * ```ts ignore
 * const args = scriptArgs("quickstart", "usage: deno run -A examples/dms_quickstart.ts [--tokens N]", {
 *   tokens: { type: "string" },
 * });
 * const tokens = args.int("tokens", 96, 1);
 * ```
 *
 * @module
 */

import type { ParseArgsOptionsConfig } from "node:util";
import { int, num, oneOf, parse, type Parsed, str, UsageError } from "./_command.ts";

/** A script's parsed arguments and readers that exit 2 with the usage on a bad value. */
export interface ScriptArgs {
  /** The flags and positionals as parsed. */
  parsed: Parsed;
  /** A string flag (undefined when absent). */
  str(name: string): string | undefined;
  /** A boolean flag (false when absent). */
  flag(name: string): boolean;
  /** An integer flag in `[min, max]`; `dflt` when absent. */
  int(name: string, dflt: number, min?: number, max?: number): number;
  /** A finite number flag in `[min, max]`; `dflt` when absent. */
  num(name: string, dflt: number, min?: number, max?: number): number;
  /** One of `choices`; `dflt` when absent. */
  oneOf<T extends string>(name: string, choices: readonly T[], dflt: T): T;
  /** One of `choices`; undefined when absent (a default decided later). */
  oneOf<T extends string>(name: string, choices: readonly T[]): T | undefined;
  /** A comma-separated list of integers in `[min, max]`; `dflt` when absent. */
  ints(name: string, dflt: number[], min?: number, max?: number): number[];
  /** A comma-separated list of finite numbers in `[min, max]`; `dflt` when absent. */
  nums(name: string, dflt: number[], min?: number, max?: number): number[];
  /** A comma-separated list of `choices` (spaces around them ignored); `dflt` when absent. */
  oneOfList<T extends string>(name: string, choices: readonly T[], dflt: T[]): T[];
  /**
   * An integer flag in `[min, max]`, undefined when absent: for a default that depends on
   * something known later (the adapter), while a bad value still exits 2 at once.
   */
  intOpt(name: string, min?: number, max?: number): number | undefined;
  /** A number flag in `[min, max]`, undefined when absent (see `intOpt`). */
  numOpt(name: string, min?: number, max?: number): number | undefined;
  /** Prints `<script>: <message>` and the usage on stderr, exits 2. */
  fail(message: string): never;
}

/**
 * Parses `args` (default `Deno.args`) strictly against `options` (a `help` flag is added); see
 * the module header for what `--help` and bad arguments do.
 */
export function scriptArgs(
  script: string,
  usage: string,
  options: ParseArgsOptionsConfig,
  maxPositionals = 0,
  args: string[] = Deno.args,
): ScriptArgs {
  const fail = (message: string): never => {
    console.error(`${script}: ${message}\n\n${usage}`);
    Deno.exit(2);
  };
  const guard = <T>(read: () => T): T => {
    try {
      return read();
    } catch (e) {
      if (e instanceof UsageError) return fail(e.message);
      throw e;
    }
  };
  const parsed = guard(() =>
    parse(args, { ...options, help: { type: "boolean", short: "h" } }, maxPositionals)
  );
  if (parsed.values.help === true) {
    console.log(usage);
    Deno.exit(0);
  }
  /** One element of a comma list, as if it were the flag's whole value (for the readers). */
  const one = (name: string, value: string): Parsed => ({
    values: { [name]: value },
    positionals: [],
  });
  const list = <T>(name: string, dflt: T[], read: (s: string) => T): T[] => {
    const v = str(parsed, name);
    return v === undefined ? dflt : v.split(",").map((s) => guard(() => read(s)));
  };
  return {
    parsed,
    str: (name) => str(parsed, name),
    flag: (name) => parsed.values[name] === true,
    int: (name, dflt, min = 0, max = 2 ** 31 - 1) => guard(() => int(parsed, name, dflt, min, max)),
    num: (name, dflt, min = 0, max = Infinity) => guard(() => num(parsed, name, dflt, min, max)),
    oneOf:
      (<T extends string>(name: string, choices: readonly T[], dflt?: T) =>
        guard(() => oneOf(parsed, name, choices, dflt))) as ScriptArgs["oneOf"],
    ints: (name, dflt, min = 0, max = 2 ** 31 - 1) =>
      list(name, dflt, (s) => int(one(name, s), name, 0, min, max)),
    nums: (name, dflt, min = 0, max = Infinity) =>
      list(name, dflt, (s) => num(one(name, s), name, 0, min, max)),
    oneOfList: (name, choices, dflt) =>
      list(name, dflt, (s) => oneOf(one(name, s.trim()), name, choices, undefined)!),
    intOpt: (name, min = 0, max = 2 ** 31 - 1) =>
      str(parsed, name) === undefined ? undefined : guard(() => int(parsed, name, 0, min, max)),
    numOpt: (name, min = 0, max = Infinity) =>
      str(parsed, name) === undefined ? undefined : guard(() => num(parsed, name, 0, min, max)),
    fail,
  };
}
