/**
 * Inference-time hyper-scaling at small scale (issue 11; SPEC §8): accuracy against the exact KV
 * budgets — KV-cache token reads and peak KV tokens per problem — for a W × L × CR grid (W
 * parallel sampled chains with a majority vote, L max new tokens, CR the cache's compression),
 * with the Pareto frontier of every policy: the dense teacher, its DMS students (one compression
 * each) and every training-free baseline `createCacheFor` knows (`BASELINES`), matched to each
 * DMS compression.
 *
 * ```sh
 * deno run -A examples/hyperscale.ts --quick --out /tmp/hs        # 2 CPU cores, < 5 minutes
 * deno run -A examples/hyperscale.ts --out results/hyperscale     # full grid (a GPU)
 * ```
 *
 * Writes `results.csv` (one row per configuration: `policy, label, compression, chains,
 * max_tokens, samples, accuracy, kv_reads, peak_kv_tokens, …`; the same seed gives the same
 * bytes), `results.json` (the rows, the settings, seconds per configuration) and
 * `pareto_reads.svg` / `pareto_memory.svg` (accuracy vs reads and vs peak KV tokens, log x, one
 * frontier line per policy), every file written atomically.
 *
 * The task: the committed models (`testdata/teacher`, `testdata/students/*`) were trained on
 * key–value retrieval with one needle in the first half of a 240-token prompt, and that is the
 * only task they solve (the teacher is at chance on the multi-step `sum` task, see its README),
 * so it is the default. Its answer is one token, so a longer L buys nothing here but costs reads;
 * with `--task sum` (a written-out chain of lookups and additions) L and W both matter, for a
 * model trained on it. Each DMS student's compression is measured first (`get_cr`, greedy, on
 * the same task) and labels its rows.
 *
 * Reading the baselines: by default every policy reads the prompt token by token
 * (`--prefill-chunk 1`), so each applies its rule at every prompt position — TOVA and H2O score
 * from the decode kernel's attention weights, which a prefill chunk does not produce — and the
 * KV reads include the prompt's. With a larger chunk TOVA, H2O and Quest attend to the whole
 * chunk densely (TOVA and H2O then keep its newest `budget` entries: src/policies/
 * score_evict.ts), so with `--prefill-chunk 240` the one-token answer of those three sees the
 * whole prompt and the task cannot tell them from dense. DMS and StreamingLLM give the same
 * tokens under any chunking (SPEC §5.1).
 *
 * @module
 */

import {
  CACHE_POLICY_NAMES,
  type CachePolicyName,
  createCacheFor,
  getGpu,
  type HyperscalePolicy,
  type HyperscaleRow,
  loadModel,
  type Model,
  type Task,
} from "@hyperscale/dms";
import {
  evaluateTask,
  hyperscaleCsv,
  type HyperscaleProgress,
  runHyperscale,
} from "@hyperscale/dms/eval";
import { scriptArgs } from "../src/cli/script_args.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";

const HELP = `hyperscale: accuracy vs KV reads and peak KV memory, dense vs DMS vs baselines

  --out DIR          output folder (required): results.csv, results.json, pareto_*.svg
  --quick            small grid for 2 CPU cores (< 5 minutes)
  --teacher DIR      dense model (default testdata/teacher)
  --students DIR...  DMS students (repeatable; default every folder in testdata/students/;
                     quick: w8-step192 and w8-step1000)
  --task KIND        kv (default: one needle in the first half), sum (3 terms, written out)
  --length L         prompt tokens (default 240, what the committed models were trained on)
  --chains LIST      W values, comma-separated (quick 1,4; full 1,2,4,8,16)
  --max-tokens LIST  L values (quick 2; full 2,4,8,16; sum: answers are 14 tokens)
  --samples N        problems per configuration (quick 16, full 128)
  --temperature T    sampling temperature of every chain (default 1)
  --batch-rows N     generated rows per batch (quick 64, full 256)
  --seed N           seed of the problems and the sampling (default 1)
  --prefill-chunk N  prompt tokens per prefill chunk, every policy (default 1: each policy's
                     rule at every prompt token; the prompt length: one dense chunk)
  --replot DIR       only (re)draw DIR/pareto_*.svg from DIR/results.json
  --help             this text`;

const DATA = new URL("../testdata/", import.meta.url).pathname;

/**
 * The training-free baselines: every name `createCacheFor` knows besides dense and DMS. Each runs
 * on the teacher once per DMS compression CR, with a budget of ⌊prompt / CR⌉ KV entries per page
 * (StreamingLLM: 4 sinks + a recent window; Quest: top-k chunks, so reads only).
 */
const BASELINES: readonly CachePolicyName[] = CACHE_POLICY_NAMES.filter((n) =>
  n !== "dense" && n !== "dms"
);

const args = scriptArgs("hyperscale", HELP, {
  out: { type: "string" },
  quick: { type: "boolean" },
  teacher: { type: "string" },
  students: { type: "string", multiple: true },
  task: { type: "string" },
  length: { type: "string" },
  chains: { type: "string" },
  "max-tokens": { type: "string" },
  samples: { type: "string" },
  temperature: { type: "string" },
  "batch-rows": { type: "string" },
  seed: { type: "string" },
  "prefill-chunk": { type: "string" },
  replot: { type: "string" },
});
const fail: (message: string) => never = args.fail;

/**
 * Draws `pareto_reads.svg` and `pareto_memory.svg` into `out` from the rows. The plot module
 * (Vega) is imported here, not at the top, so a sweep on a machine without it still writes its
 * CSV and JSON (then `--replot DIR` draws the pictures elsewhere).
 */
async function writePlots(out: string, rows: HyperscaleRow[], taskName: string): Promise<void> {
  // A specifier in a variable: Deno resolves it when this line runs, not at startup.
  const plotModule = "@hyperscale/dms/plot";
  const { paretoSvg }: typeof import("@hyperscale/dms/plot") = await import(plotModule);
  const chart = (cost: (r: HyperscaleRow) => number, on: keyof HyperscaleRow, xTitle: string) =>
    paretoSvg(
      rows.map((r) => ({
        policy: r.policy,
        cost: Math.max(cost(r), 1),
        accuracy: r.accuracy,
        frontier: r[on] as boolean,
      })),
      { xTitle, title: `${taskName}: accuracy vs ${xTitle}` },
    );
  await writeTextFileAtomic(
    `${out}/pareto_reads.svg`,
    await chart((r) => r.kv_reads, "reads_frontier", "KV-cache token reads per problem"),
  );
  await writeTextFileAtomic(
    `${out}/pareto_memory.svg`,
    await chart((r) => r.peak_kv_tokens, "memory_frontier", "peak KV tokens per problem"),
  );
}

const replot = args.str("replot"), outArg = args.str("out");
if (replot !== undefined) {
  const dir = replot.replace(/\/+$/, "");
  let doc: { task: string; rows: HyperscaleRow[] };
  try {
    doc = JSON.parse(await Deno.readTextFile(`${dir}/results.json`));
    if (typeof doc.task !== "string" || !Array.isArray(doc.rows)) {
      throw new Error("no task or rows field");
    }
  } catch (e) {
    console.error(`hyperscale: ${dir}/results.json: ${(e as Error).message}`);
    Deno.exit(1);
  }
  await writePlots(dir, doc.rows, doc.task);
  console.log(`wrote ${dir}/pareto_reads.svg, ${dir}/pareto_memory.svg`);
  Deno.exit(0);
}
if (!outArg) fail("--out DIR is required");

const quick = args.flag("quick");
const length = args.int("length", 240, 1);
const task: Task = args.oneOf("task", ["kv", "sum"] as const, "kv") === "kv"
  ? { kind: "kv", length, pairs: 1, depth: [0, 0.5] }
  : { kind: "sum", length, pairs: 3, terms: 3 };
const grid = {
  chains: args.ints("chains", quick ? [1, 4] : [1, 2, 4, 8, 16], 1),
  maxTokens: args.ints("max-tokens", quick ? [2] : [2, 4, 8, 16], 1),
};
const samples = args.int("samples", quick ? 16 : 128, 1);
const batchRows = args.int("batch-rows", quick ? 64 : 256, 1);
const seed = args.int("seed", 1);
const prefillChunk = args.int("prefill-chunk", 1, 1);
const temperature = args.num("temperature", 1);
const teacherDir = args.str("teacher") ?? `${DATA}teacher`;
let studentDirs = (args.parsed.values.students as string[] | undefined) ?? [];
if (studentDirs.length === 0) {
  const names = quick ? ["w8-step192", "w8-step1000"] : [];
  if (!quick) {
    for await (const e of Deno.readDir(`${DATA}students`)) if (e.isDirectory) names.push(e.name);
  }
  studentDirs = names.sort().map((n) => `${DATA}students/${n}`);
}
for (const dir of [teacherDir, ...studentDirs]) {
  try {
    await Deno.stat(`${dir}/config.json`);
  } catch {
    fail(`no model at ${dir} (config.json missing)`);
  }
}

function progress(line: string): void {
  if (Deno.stderr.isTerminal()) Deno.stderr.writeSync(new TextEncoder().encode(`\r${line}\x1b[K`));
}

const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
const gpu = await getGpu();
const models: Model[] = [];
const load = async (dir: string) => {
  const m = await loadModel(gpu, dir, { dtype: "f32" });
  models.push(m);
  return m;
};
try {
  const teacher = await load(teacherDir);
  const policies: HyperscalePolicy[] = [
    { policy: "dense", compression: 1, label: "teacher", model: teacher, cache: "dense" },
  ];
  const folders = [teacherDir]; // the model folder of each policy entry
  for (const dir of studentDirs) {
    const model = await load(dir);
    if (!model.config.isDms) fail(`${dir} is not a DMS checkpoint (no dms_* config)`);
    const name = dir.replace(/\/+$/, "").split("/").at(-1)!;
    progress(`measuring the compression of ${name} (${elapsed()})`);
    const r = await evaluateTask(model, task, { samples: 8, seed: seed + 7, policy: "dms" });
    const compression = Math.round(r.compressionRatio * 100) / 100;
    policies.push({ policy: "dms", compression, label: name, model, cache: "dms" });
    folders.push(dir);
  }
  const dmsRatios = policies.filter((p) => p.policy === "dms").map((p) => p.compression);
  for (const name of BASELINES) {
    for (const cr of dmsRatios) {
      const budget = Math.max(1, Math.round(length / cr));
      policies.push({
        policy: name,
        compression: cr,
        label: `budget ${budget}`,
        model: teacher,
        cache: (batch) =>
          createCacheFor(teacher, batch, name, {
            budget,
            preallocateTokens: length + Math.max(...grid.maxTokens),
          }),
      });
      folders.push(teacherDir);
    }
  }
  for (const p of policies) p.prefillChunk = prefillChunk;
  console.log(
    `task ${task.kind} (${length}-token prompts), ${samples} problems per configuration, ` +
      `T = ${temperature}, seed ${seed}; W ∈ {${grid.chains}}, L ∈ {${grid.maxTokens}}; ` +
      policies.map((p) => `${p.policy} CR ${p.compression} (${p.label})`).join(", "),
  );
  const result = await runHyperscale(policies, grid, {
    task,
    samples,
    seed,
    temperature,
    batchRows,
    onProgress: (p: HyperscaleProgress) =>
      progress(
        `[${p.config + 1}/${p.configs}] ${p.policy} CR ${p.compression} W=${p.chains} ` +
          `L=${p.maxTokens}: ${p.done}/${p.total} problems (${elapsed()})`,
      ),
  });
  progress("");

  const out = outArg.replace(/\/+$/, "");
  await Deno.mkdir(out, { recursive: true });
  const csv = hyperscaleCsv(result.rows);
  await writeTextFileAtomic(`${out}/results.csv`, csv);
  const json = {
    task: result.task,
    seed,
    temperature,
    samples,
    grid,
    prefill_chunk: prefillChunk,
    policies: policies.map((p, i) => ({
      policy: p.policy,
      compression: p.compression,
      label: p.label,
      model: folders[i],
    })),
    rows: result.rows,
    seconds: result.seconds,
  };
  await writeTextFileAtomic(`${out}/results.json`, JSON.stringify(json, null, 2) + "\n");
  console.log(
    "\n| policy | CR | W | L | accuracy | KV reads | peak KV tokens | frontier (reads/peak) |\n" +
      "| --- | --- | --- | --- | --- | --- | --- | --- |",
  );
  for (const r of result.rows) {
    console.log(
      `| ${r.policy} | ${r.compression} | ${r.chains} | ${r.max_tokens} | ${
        r.accuracy.toFixed(3)
      } | ${r.kv_reads.toFixed(0)} | ${r.peak_kv_tokens.toFixed(0)} | ${
        r.reads_frontier ? "R" : "-"
      }/${r.memory_frontier ? "M" : "-"} |`,
    );
  }
  console.log(`\nwrote ${out}/results.csv, ${out}/results.json`);
  try {
    await writePlots(out, result.rows, result.task);
  } catch (e) {
    console.error(
      `hyperscale: the Pareto plots were not drawn (${(e as Error).message.split("\n")[0]}); ` +
        `results.csv and results.json are complete: run --replot ${out} where Vega loads`,
    );
    Deno.exit(1);
  }
  console.log(`wrote ${out}/pareto_reads.svg, ${out}/pareto_memory.svg`);
  console.log(`total ${elapsed()}`);
} finally {
  for (const m of models) m.dispose();
}
