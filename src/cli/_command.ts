/**
 * What every CLI command shares: argument parsing with `node:util` `parseArgs` (strict: an
 * unknown flag or a missing value is a usage error), typed flag readers that refuse negative,
 * fractional or non-numeric sizes, and the one runner that turns errors into exit codes:
 *
 * - 0: done;
 * - 1: a failure (bad model folder, malformed file, a failed check): ONE line on stderr,
 *   `dms <command>: <message>` (the loaders' messages name the file and the field), the stack
 *   only with `--debug`;
 * - 2: bad arguments: the message and the command's usage on stderr; nothing is written,
 *   because every command parses and checks all of its arguments before it touches a file.
 *
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

/** Bad arguments: the runner prints the message and the usage, exit code 2. */
export class UsageError extends Error {
  /** Creates a usage error with the message shown above the usage. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Something the command cannot do yet (its issue has not landed): exit code 2, no usage. */
export class NotAvailableError extends Error {
  /** Creates the error with the message shown on its own. */
  constructor(message: string) {
    super(message);
    this.name = "NotAvailableError";
  }
}

/** One CLI command. */
export interface Command {
  /** The command word (`generate`). */
  name: string;
  /** One line for the overview. */
  summary: string;
  /** The full `--help` text. */
  usage: string;
  /** Runs with the arguments after the command word; returns the exit code (or throws). */
  run(args: string[]): Promise<number>;
}

/** Parsed flags (strings and booleans) and positionals. */
export interface Parsed {
  /** Flag values by long name. */
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  /** Positional arguments. */
  positionals: string[];
}

/**
 * Strict `parseArgs`: its errors (unknown option, missing value) become {@linkcode UsageError}s,
 * and more positionals than `maxPositionals` too.
 */
export function parse(
  args: string[],
  options: ParseArgsOptionsConfig,
  maxPositionals = 0,
): Parsed {
  let r;
  try {
    r = parseArgs({ args, options, strict: true, allowPositionals: maxPositionals > 0 });
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify a positional.*$/s, ""));
  }
  if (r.positionals.length > maxPositionals) {
    throw new UsageError(
      `expected at most ${maxPositionals} positional argument${maxPositionals === 1 ? "" : "s"}, ` +
        `got ${r.positionals.length}: ${r.positionals.join(" ")}`,
    );
  }
  return r as Parsed;
}

/** A string flag (undefined when absent). */
export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === "string" ? v : undefined;
}

/**
 * An integer flag in `[min, max]`; `dflt` when absent.
 *
 * @throws {UsageError} For a non-numeric, fractional or out-of-range value.
 */
export function int(p: Parsed, name: string, dflt: number, min = 0, max = 2 ** 31 - 1): number {
  const v = str(p, name);
  if (v === undefined) return dflt;
  const x = /^[+-]?\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!(Number.isSafeInteger(x) && x >= min && x <= max)) {
    throw new UsageError(
      `--${name} must be an integer ${max < 2 ** 31 - 1 ? `in ${min}..${max}` : `>= ${min}`}, ` +
        `got "${v}"`,
    );
  }
  return x;
}

/**
 * A number flag in `[min, max]`; `dflt` when absent.
 *
 * @throws {UsageError} For a non-numeric, non-finite or out-of-range value.
 */
export function num(p: Parsed, name: string, dflt: number, min = 0, max = Infinity): number {
  const v = str(p, name);
  if (v === undefined) return dflt;
  const x = v.trim() === "" ? NaN : Number(v);
  if (!(Number.isFinite(x) && x >= min && x <= max)) {
    throw new UsageError(
      `--${name} must be a number ${max === Infinity ? `>= ${min}` : `in [${min}, ${max}]`}, ` +
        `got "${v}"`,
    );
  }
  return x;
}

/**
 * One of `choices`; `dflt` when absent.
 *
 * @throws {UsageError} Naming the flag and every choice.
 */
export function oneOf<T extends string>(
  p: Parsed,
  name: string,
  choices: readonly T[],
  dflt: T | undefined,
): T | undefined {
  const v = str(p, name);
  if (v === undefined) return dflt;
  if (!(choices as readonly string[]).includes(v)) {
    throw new UsageError(`--${name} must be one of ${choices.join(", ")}, got "${v}"`);
  }
  return v as T;
}

/** The message of an error on one line (newlines folded), with its causes' messages. */
export function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.replace(/\s*\n\s*/g, " ").trim();
}

/**
 * Runs a command: `--help`/`-h` prints its usage, `--debug` (anywhere) shows stacks; errors
 * become exit codes as the module header says.
 */
export async function runCommand(cmd: Command, args: string[]): Promise<number> {
  const debug = args.includes("--debug");
  const rest = args.filter((a) => a !== "--debug");
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(cmd.usage);
    return 0;
  }
  try {
    return await cmd.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`dms ${cmd.name}: ${e.message}\n\n${cmd.usage}`);
      return 2;
    }
    if (e instanceof NotAvailableError) {
      console.error(`dms ${cmd.name}: ${oneLine(e)}`);
      return 2;
    }
    if (debug) console.error(e instanceof Error ? e.stack : e);
    else console.error(`dms ${cmd.name}: ${oneLine(e)}`);
    return 1;
  }
}

/** Writes text to stdout in full (no newline added). */
export async function write(text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  let off = 0;
  while (off < bytes.length) off += await Deno.stdout.write(bytes.subarray(off));
}
