/**
 * The one bench entry point (`deno task bench`): runs the selected sections, each a script of
 * this folder in its own process (so one section's GPU memory and pipelines do not skew the
 * next), prints their markdown tables, and with `--json FILE` writes every section's JSON in one
 * file.
 *
 * | section | script | what |
 * | ------- | ------ | ---- |
 * | `attention` (a) | attention.ts | decode attention, dense vs DMS at forced CR 2/4/8, contexts 4K–128K, B 1–32, f16/f32, GB/s of live KV; PyTorch SDPA twin |
 * | `prefill` (b) | prefill.ts | prefill attention through the paged cache, flash kernel vs the tiled path, TFLOP/s |
 * | `kernels` (c) | kernels.ts | matmul / GEMV at the model's shapes, sizes past the 60 MB L2; PyTorch twin |
 * | `skinny` (c) | skinny.ts | linear at decode-batch row counts (M 4–64, parallel chains): `gemv16`, `tiled`, `gemv16wide`, `skinny`, weights past the L2 |
 * | `e2e` (d, e) | generate.ts | end-to-end decode tok/s at 2K and 32K, B = 1, dense and DMS at forced CR 8; dispatches, submits and readbacks per token; PyTorch eager and CUDA-graph twin |
 * | `chains` (f) | chains.ts | parallel chains B = 8–64 from one prompt at 8K–32K, tok/s, peak KV bytes, largest batch in a fixed KV budget |
 * | `floor` | dispatch_floor.ts | GPU µs per dispatch in one pass (with and without a barrier; tiny and 1–64 MB memory-bound kernels) and the decode step's GEMVs in the same regime; PyTorch CUDA-graph twin |
 *
 * Usage: `deno task bench [--sections attention,prefill,kernels,skinny,e2e,chains,floor] [--quick] [--full]
 * [--no-torch] [--json FILE]` (letters a–f work too; e is part of e2e). On a CPU adapter
 * (lavapipe) every section runs at its small sizes (`--quick`) and only ratios are printed
 * (absolute times of a CPU rasteriser say nothing about a GPU): the sections' own tables are
 * kept in the JSON's `log`, and this script prints ratio tables from their JSON. `--full` on a GPU
 * runs the sections' full sweeps (longer; bench/h200.sh sets the sizes it runs explicitly).
 * Arguments after `--` go to every section (e.g. `-- --reps 3`).
 *
 * Forcing a compression ratio is a benchmark knob (decision-logit scale and offset, or marks
 * drawn at rate 1 − 1/CR when a cache is filled directly), never a code path of the model: see
 * each section's module doc.
 *
 * @module
 */

import { scriptArgs } from "../src/cli/script_args.ts";
import { getGpu } from "../src/gpu/device.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";
import { fmt, isCpuAdapter, markdownTable } from "./_common.ts";

const SECTIONS = {
  attention: "attention.ts",
  prefill: "prefill.ts",
  kernels: "kernels.ts",
  skinny: "skinny.ts",
  e2e: "generate.ts",
  chains: "chains.ts",
  floor: "dispatch_floor.ts",
} as const;
type Section = keyof typeof SECTIONS;
const LETTERS: Record<string, Section> = {
  a: "attention",
  b: "prefill",
  c: "kernels",
  d: "e2e",
  e: "e2e",
  f: "chains",
};

const USAGE = `usage: deno run -A bench/main.ts [flags] [-- FLAGS FOR EVERY SECTION]

  --sections LIST  comma-separated: ${Object.keys(SECTIONS).join(", ")} (or letters a-f);
                   default all
  --quick          small sizes (always on a CPU adapter, where only ratios are printed)
  --full           the sections' full sweeps on a GPU
  --no-torch       skip the PyTorch twins
  --json FILE      every section's JSON in one file (written atomically)
  -h, --help       this text

deno task bench [flags] runs the same; flags after -- go to every section (e.g. -- --reps 3).`;

const args = scriptArgs("bench", USAGE, {
  sections: { type: "string" },
  quick: { type: "boolean" },
  full: { type: "boolean" },
  "no-torch": { type: "boolean" },
  json: { type: "string" },
}, Infinity);
// The arguments after `--` go to every section; a positional before it is a usage error.
const dashes = Deno.args.indexOf("--");
const positionals = dashes < 0 ? [] : Deno.args.slice(dashes + 1);
if (args.parsed.positionals.length > positionals.length) {
  args.fail(`unexpected argument "${args.parsed.positionals[0]}" (section flags go after --)`);
}
const chosen: Section[] = [];
const sections = args.str("sections") ?? Object.keys(SECTIONS).join(",");
for (const s of sections.split(",").map((x) => x.trim()).filter(Boolean)) {
  const name = Object.hasOwn(SECTIONS, s)
    ? s as Section
    : Object.hasOwn(LETTERS, s)
    ? LETTERS[s]
    : args.fail(`--sections: unknown section "${s}"`);
  if (!chosen.includes(name)) chosen.push(name);
}
if (chosen.length === 0) args.fail("--sections: no section given");
const full = args.flag("full"), noTorch = args.flag("no-torch"), jsonFile = args.str("json");

const gpu = await getGpu();
const cpu = isCpuAdapter(gpu);
const description = gpu.description;
gpu.device.destroy(); // the sections open their own devices
const quick = args.flag("quick") || cpu;
console.log(`# bench on ${description}${cpu ? " (CPU adapter: small sizes, ratios only)" : ""}\n`);

const dir = await Deno.makeTempDir({ prefix: "dms-bench-" });
const docs: Record<string, unknown> = {};
let failed = 0;
for (const s of chosen) {
  const json = `${dir}/${s}.json`;
  const flags = [
    ...(quick && !full ? ["--quick"] : []),
    ...(noTorch && !["prefill", "chains", "skinny"].includes(s) ? ["--no-torch"] : []),
    "--json",
    json,
    ...positionals,
  ];
  console.log(`## ${s} (bench/${SECTIONS[s]})\n`);
  const t = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(SECTIONS[s], import.meta.url).pathname, ...flags],
    stdout: cpu ? "piped" : "inherit",
    stderr: "inherit",
  });
  const r = await child.output();
  const log = cpu ? new TextDecoder().decode(r.stdout) : undefined;
  let doc: Record<string, unknown> | undefined;
  try {
    doc = JSON.parse(await Deno.readTextFile(json));
  } catch {
    doc = undefined;
  }
  docs[s] = { ok: r.success, seconds: (performance.now() - t) / 1000, log, result: doc };
  if (!r.success) {
    failed++;
    console.log(`section ${s} failed (exit ${r.code})${log ? ":\n" + log.slice(-2000) : ""}`);
  }
  if (cpu && (s === "e2e" || s === "chains")) console.log(log); // their tables are ratios already
  else if (cpu && doc) console.log(ratios(s, doc));
  console.log();
}
await Deno.remove(dir, { recursive: true });
if (jsonFile) {
  const doc = { device: description, cpu, quick, sections: docs };
  await writeTextFileAtomic(jsonFile, JSON.stringify(doc, null, 2) + "\n");
  console.log(`wrote ${jsonFile}`);
}
if (failed) Deno.exitCode = 1;

// deno-lint-ignore no-explicit-any
type Json = any;

/** The ratio table printed for a section on a CPU adapter. */
function ratios(s: Section, doc: Json): string {
  if (s === "attention") {
    const rows = (doc.rows as Json[]).filter((r) => !r.skipped);
    return markdownTable(
      ["dtype", "ctx", "B", "cache", "CR", "check", "dense time / this"],
      rows.map((r) => {
        const d = rows.find((x) =>
          !x.forcedCr && x.dtype === r.dtype && x.ctx === r.ctx &&
          x.B === r.B
        );
        return [
          r.dtype,
          `${r.ctx}`,
          `${r.B}`,
          r.cache,
          fmt(r.cr, 2),
          r.check,
          fmt(d?.us / r.us, 2),
        ];
      }),
      4,
    );
  }
  if (s === "floor") {
    const rows = doc.rows as Json[], ops = doc.opRows as Json[];
    const plain = ops.find((o) => o.op.startsWith("gemv16"));
    return markdownTable(
      ["case", "same buffer / own buffers"],
      rows.map((r) => [r.kernel, fmt(r.dependent / r.independent, 2)]),
    ) + "\n\n" + markdownTable(
      ["decode GEMV", "time / plain gemv16 of 4K×K"],
      ops.map((o) => [o.op, fmt(o.us / plain.us, 2)]),
    );
  }
  if (s === "prefill") {
    return markdownTable(
      ["dtype", "ctx", "cache", "check", "tiled time / flash time"],
      (doc.rows as Json[]).map((r) => [
        r.dtype,
        `${r.ctx}`,
        r.cache,
        r.check,
        fmt(r.tiledMs / r.flashMs, 2),
      ]),
      3,
    );
  }
  if (s === "skinny") {
    const rows = doc.rows as Json[];
    return markdownTable(
      ["shape", "M", "variant", "time / best of the shape and M"],
      rows.map((r) => {
        const best = Math.min(
          ...rows.filter((x) => x.shape === r.shape && x.M === r.M).map((x) => x.us),
        );
        return [r.shape, `${r.M}`, r.variant, fmt(r.us / best, 2)];
      }),
      2,
    );
  }
  if (s === "kernels") {
    const rows = doc.rows as Json[];
    return markdownTable(
      ["case", "dtype", "shape", "variant", "check", "time / first variant of the shape"],
      rows.map((r) => {
        const first = rows.find((x) =>
          x.name === r.name && x.dtype === r.dtype &&
          x.shape === r.shape
        );
        return [r.name, r.dtype, r.shape, r.variant, r.check, fmt(r.ms / first.ms, 2)];
      }),
      5,
    );
  }
  return "";
}
