/**
 * `dms conform [dir] [--backend cpu|gpu] [--only NAME[,NAME...]] [--verbose]`, also
 * `deno task conform ...` (this file runs on its own too).
 *
 * Runs every conformance case under `dir` (folder format:
 * `testdata/conformance/README.md`; a local path or an http(s) URL) through a backend, prints one
 * line per case (`PASS A1_train_qneuron_head  max_err 3.1e-6 (logits)`) and a last line
 * `conformance: N passed, N failed`.
 *
 * With no folder it runs both vendored folders (the ten golden cases of `testdata/conformance/`
 * and the three `train_step` cases of `testdata/conformance-train/`, 13 in all), and with no
 * `--backend` as well it runs them on both backends, CPU then GPU: a `backend NAME` line
 * before each run, each run's summary line, and a last line naming every failing case per
 * backend (`conformance (cpu, gpu): 24 passed, 2 failed; failing: cpu D3_..., gpu D3_...`).
 *
 * Exit status: 0 all passed; 1 a case failed (or no case was found, or a case could not be
 * read: one line naming the file); 2 usage error or a folder that does not exist.
 *
 * @example
 * ```sh
 * deno task conform --backend gpu
 * deno task conform testdata/conformance --only B1_infer_qneuron_head --verbose
 * ```
 *
 * @module
 */

import {
  type ConformanceBackend,
  cpuBackend,
  DEFAULT_CONFORMANCE_DIRS,
  formatSummary,
  runConformance,
} from "../eval/conformance.ts";
import { gpuBackend } from "../eval/gpu_backend.ts";
import { type Command, parse, runCommand, str, UsageError } from "./_command.ts";

const USAGE = "usage: dms conform [dir] [--backend cpu|gpu] [--only NAME[,NAME...]] [--verbose]\n" +
  "       (or deno task conform ...)\n" +
  "  dir: a folder of conformance cases (default: both vendored folders, testdata/conformance\n" +
  "       and the training cases, kind train_step, in testdata/conformance-train)\n" +
  "  --backend: default cpu with a folder; with no folder and no --backend: cpu, then gpu\n" +
  "  a case kind the backend does not implement is reported NOT SUPPORTED (not passed)\n" +
  "  --debug: stack traces on failures";

const BACKENDS: Readonly<Record<string, ConformanceBackend>> = { cpu: cpuBackend, gpu: gpuBackend };

/** Runs the CLI (`--help`, `--debug` and errors as every `dms` command); returns the exit status. */
export function main(args: string[]): Promise<number> {
  return runCommand(conformCommand, args);
}

async function run(args: string[]): Promise<number> {
  const p = parse(args, {
    backend: { type: "string" },
    only: { type: "string", multiple: true },
    verbose: { type: "boolean", short: "v", default: false },
  }, Infinity);
  const { values, positionals } = p;
  const backend = str(p, "backend");
  if (positionals.length > 1) {
    throw new UsageError(`expected at most one folder, got ${positionals.length}`);
  }
  const folder = positionals[0];
  if (folder !== undefined && !/^https?:\/\//.test(folder)) {
    const st = await Deno.stat(folder).catch(() => null);
    if (!st?.isDirectory) throw new UsageError(`${folder}: no such folder`);
  }
  const names = backend !== undefined
    ? [backend]
    : positionals.length
    ? ["cpu"]
    : Object.keys(BACKENDS);
  const backends = names.map((n) => Object.hasOwn(BACKENDS, n) ? BACKENDS[n] : null);
  if (backends.some((b) => !b)) {
    throw new UsageError(`unknown backend "${backend}" (expected cpu or gpu)`);
  }
  const dir: string | URL | readonly URL[] = positionals[0] ?? DEFAULT_CONFORMANCE_DIRS;
  const only = (values.only as string[] | undefined)?.flatMap((s) => s.split(",")).map((s) =>
    s.trim()
  ).filter(Boolean);
  if (backends.length === 1) return await runOne(backends[0]!, dir, only, values.verbose === true);
  let passed = 0, failed = 0, ok = true;
  const failing: string[] = [];
  for (const b of backends) {
    console.log(`backend ${b!.name}`);
    const r = await runOne(b!, dir, only, values.verbose === true, (report) => {
      passed += report.passed;
      failed += report.failed + report.unsupported;
      for (const c of report.cases) if (!c.ok) failing.push(`${b!.name} ${c.name}`);
    });
    ok &&= r === 0;
  }
  console.log(
    `conformance (${names.join(", ")}): ${passed} passed, ${failed} failed` +
      (failing.length ? `; failing: ${failing.join(", ")}` : ""),
  );
  return ok ? 0 : 1;
}

/** One backend over `dir`: case lines and the summary; returns the exit status (throws when a case cannot be read). */
async function runOne(
  backend: ConformanceBackend,
  dir: string | URL | readonly URL[],
  only: string[] | undefined,
  verbose: boolean,
  onReport?: (r: Awaited<ReturnType<typeof runConformance>>) => void,
): Promise<number> {
  const report = await runConformance(dir, {
    backend,
    only,
    verbose,
    log: (line) => console.log(line),
  });
  onReport?.(report);
  if (report.cases.length === 0) {
    console.log(
      only
        ? `no case named ${only.join(", ")} under ${report.dir}`
        : `no case folders (with case.json) under ${report.dir}`,
    );
  }
  console.log(formatSummary(report));
  return report.ok ? 0 : 1;
}

/** `dms conform`. */
export const conformCommand: Command = {
  name: "conform",
  summary: "run the DMS conformance cases (golden vectors) on the CPU and GPU backends",
  usage: USAGE,
  run,
};

if (import.meta.main) Deno.exit(await main(Deno.args));
