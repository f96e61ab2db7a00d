/**
 * `deno task conform [dir] [--backend cpu|gpu] [--only NAME[,NAME...]] [--verbose]`
 *
 * Runs every conformance case under `dir` (folder format:
 * `testdata/conformance/README.md`; a local path or an http(s) URL; default:
 * the ten golden cases vendored in `testdata/conformance/`) through a backend, prints one line per case
 * (`PASS A1_train_qneuron_head  max_err 3.1e-6 (logits)`) and a last line
 * `conformance: N passed, N failed`.
 *
 * Exit status: 0 all passed; 1 a case failed (or no case was found);
 * 2 usage error or unreadable folder.
 *
 * @example
 * ```sh
 * deno task conform --backend gpu
 * deno task conform testdata/conformance --only B1_infer_qneuron_head --verbose
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  type ConformanceBackend,
  cpuBackend,
  DEFAULT_CONFORMANCE_DIR,
  formatSummary,
  runConformance,
} from "../eval/conformance.ts";
import { gpuBackend } from "../eval/gpu_backend.ts";

const USAGE =
  "usage: deno task conform [dir] [--backend cpu|gpu] [--only NAME[,NAME...]] [--verbose]\n" +
  "  dir: a folder of conformance cases (default: the vendored golden cases, testdata/conformance;\n" +
  "       the training cases, kind train_step, are in testdata/conformance-train)\n" +
  "  a case kind the backend does not implement is reported NOT SUPPORTED (not passed)";

const BACKENDS: Readonly<Record<string, ConformanceBackend>> = { cpu: cpuBackend, gpu: gpuBackend };

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
  if (positionals.length > 1) {
    console.error(`expected at most one folder, got ${positionals.length}\n${USAGE}`);
    return 2;
  }
  const backend = Object.hasOwn(BACKENDS, values.backend!) ? BACKENDS[values.backend!] : null;
  if (!backend) {
    console.error(`unknown backend "${values.backend}" (expected cpu or gpu)\n${USAGE}`);
    return 2;
  }
  const dir: string | URL = positionals[0] ?? DEFAULT_CONFORMANCE_DIR;
  try {
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
          ? `no case named ${only.join(", ")} under ${report.dir}`
          : `no case folders (with case.json) under ${report.dir}`,
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
