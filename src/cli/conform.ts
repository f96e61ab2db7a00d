/**
 * `deno task conform <dir> [--backend cpu|gpu] [--only NAME[,NAME...]] [--verbose]`
 *
 * Runs every conformance case under `<dir>` (folder format:
 * `shared/conformance/README.md`) through a backend, prints one line per case
 * (`PASS A1_train_qneuron_head  max_err 3.1e-6 (logits)`) and a last line
 * `conformance: N passed, N failed`.
 *
 * Exit status: 0 all passed; 1 a case failed (or no case was found);
 * 2 usage error, unreadable folder, or the GPU backend module is missing.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  type ConformanceBackend,
  cpuBackend,
  formatSummary,
  runConformance,
} from "../eval/conformance.ts";

const USAGE =
  "usage: deno task conform <dir> [--backend cpu|gpu] [--only NAME[,NAME...]] [--verbose]";

/** Where `--backend gpu` comes from: a module exporting `gpuBackend: ConformanceBackend`. */
const GPU_BACKEND_MODULE = new URL("../eval/gpu_backend.ts", import.meta.url);

async function loadBackend(name: string): Promise<ConformanceBackend> {
  if (name === "cpu") return cpuBackend;
  if (name !== "gpu") throw new UsageError(`unknown backend "${name}" (expected cpu or gpu)`);
  try {
    await Deno.stat(GPU_BACKEND_MODULE);
  } catch {
    throw new UsageError(
      `the GPU backend is not available yet: ${GPU_BACKEND_MODULE.pathname} does not exist ` +
        "(it must export gpuBackend: ConformanceBackend)",
    );
  }
  const mod = await import(GPU_BACKEND_MODULE.href) as { gpuBackend?: ConformanceBackend };
  if (!mod.gpuBackend) {
    throw new UsageError(`${GPU_BACKEND_MODULE.pathname} does not export gpuBackend`);
  }
  return mod.gpuBackend;
}

class UsageError extends Error {}

/** Runs the CLI; returns the exit status. */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        backend: { type: "string", default: "cpu" },
        only: { type: "string", multiple: true },
        verbose: { type: "boolean", short: "v", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length !== 1) {
    console.error(`expected exactly one folder, got ${positionals.length}\n${USAGE}`);
    return 2;
  }
  const dir = positionals[0];
  try {
    const backend = await loadBackend(values.backend!);
    const only = values.only?.flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean);
    const report = await runConformance(dir, {
      backend,
      only,
      verbose: values.verbose,
      log: (line) => console.log(line),
    });
    if (report.cases.length === 0) {
      console.log(
        only
          ? `no case named ${only.join(", ")} under ${dir}`
          : `no case folders (with case.json) under ${dir}`,
      );
    }
    console.log(formatSummary(report));
    return report.ok ? 0 : 1;
  } catch (e) {
    console.error(`conform: ${(e as Error).message}`);
    return 2;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
