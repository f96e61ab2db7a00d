/**
 * The `dms` command line: `deno run -A jsr:@hyperscale/dms/cli <command> [options]` (or
 * `deno task cli <command>` in the repository).
 *
 * Commands: `generate`, `inspect`, `retrofit`, `eval`, `bench`, `conform`, `plot`; each has
 * `--help`. Exit codes: 0 done; 1 a failure, reported in one line naming the file and the field
 * (`--debug` adds the stack); 2 bad arguments (usage on stderr, nothing written) or a feature
 * that has not landed yet.
 *
 * @example
 * ```sh
 * deno run -A jsr:@hyperscale/dms/cli inspect --hub nvidia/Qwen3-8B-DMS-8x
 * deno run -A jsr:@hyperscale/dms/cli generate ./Qwen3-0.6B --prompt "Why is the sky blue?"
 * deno run -A jsr:@hyperscale/dms/cli generate testdata/teacher --ids 1,20,6,60 --json
 * ```
 *
 * @module
 */

import { benchCommand } from "./bench.ts";
import { type Command, runCommand } from "./_command.ts";
import { conformCommand } from "./conform.ts";
import { evalCommand } from "./eval.ts";
import { generateCommand } from "./generate.ts";
import { inspectCommand } from "./inspect.ts";
import { plotCommand } from "./plot.ts";
import { retrofitCommand } from "./retrofit.ts";

const COMMANDS: readonly Command[] = [
  generateCommand,
  inspectCommand,
  retrofitCommand,
  evalCommand,
  benchCommand,
  conformCommand,
  plotCommand,
];

const USAGE = `usage: dms <command> [options]    (dms <command> --help for its options)

Dynamic Memory Sparsification (KV-cache eviction) for Qwen3 / Llama models on WebGPU.

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(10)} ${c.summary}`).join("\n")}

Exit codes: 0 done, 1 failure (one line naming the file and field; --debug for the stack),
2 bad arguments (nothing written).`;

/**
 * Runs the CLI with `args` (the command word first) and returns the exit code.
 *
 * @example
 * ```ts ignore
 * import { main } from "@hyperscale/dms/cli";
 * const code = await main(["inspect", "testdata/teacher", "--json"]);
 * ```
 */
export async function main(args: string[]): Promise<number> {
  const [word, ...rest] = args;
  if (word === undefined) {
    console.error(USAGE);
    return 2;
  }
  if (word === "--help" || word === "-h" || word === "help") {
    const topic = word === "help" ? rest[0] : undefined;
    const which = COMMANDS.find((c) => c.name === topic);
    if (topic !== undefined && !which) {
      console.error(`dms: unknown command "${topic}"\n\n${USAGE}`);
      return 2;
    }
    console.log(which ? which.usage : USAGE);
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === word);
  if (!cmd) {
    console.error(`dms: unknown command "${word}"\n\n${USAGE}`);
    return 2;
  }
  return await runCommand(cmd, rest);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
