/**
 * The repository's scripts (examples, benches, tools) take their arguments like the CLI does
 * (`src/cli/script_args.ts`): `--help` prints the usage and exits 0, an unknown flag or a bad value
 * prints `<script>: <message>` and the usage on stderr and exits 2, with nothing on stdout and
 * never a stack trace. Each run is a child process; none of these reaches the GPU.
 */

import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const DIRS = ["examples", "examples/browser", "bench", "tools", "tools/kernel_stats"];

/** Every script: a `.ts` file in DIRS (not `_private`) that reads its arguments. */
async function scripts(): Promise<string[]> {
  const found: string[] = [];
  for (const dir of DIRS) {
    for await (const e of Deno.readDir(new URL(`${dir}/`, ROOT))) {
      if (!e.isFile || !e.name.endsWith(".ts") || e.name.startsWith("_")) continue;
      const path = `${dir}/${e.name}`;
      const text = await Deno.readTextFile(new URL(path, ROOT));
      if (/\bDeno\.args\b|\bparseArgs\(|\bscriptArgs\(/.test(text)) found.push(path);
    }
  }
  return found.sort();
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(path: string, args: string[]): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(path, ROOT).pathname, ...args],
    env: { NO_COLOR: "1", XDG_RUNTIME_DIR: "/tmp" },
    signal: AbortSignal.timeout(60_000),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  // Deno's own "Download https://registry.npmjs.org/…" lines (an npm package fetched on first use,
  // e.g. naga-wasm for tools/kernel_stats/spv.ts on a fresh DENO_DIR) are not the script's.
  const stderr = dec.decode(out.stderr).split("\n").filter((l) => !l.startsWith("Download "));
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: stderr.join("\n") };
}

/** Runs `jobs` two at a time (the CI machine has 2 cores). */
async function pool<T>(jobs: (() => Promise<T>)[]): Promise<T[]> {
  const results: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]();
    }
  };
  await Promise.all([worker(), worker()]);
  return results;
}

/** The name a script's messages start with: its `scriptArgs` first argument. */
async function scriptName(path: string): Promise<string> {
  const text = await Deno.readTextFile(new URL(path, ROOT));
  const m = text.match(/scriptArgs\(\s*"([^"]+)"/);
  assert.ok(m, `${path} reads arguments without scriptArgs (src/cli/script_args.ts)`);
  return m[1];
}

Deno.test("every script: --help exits 0 with its usage; an unknown flag exits 2 naming it", async () => {
  const paths = await scripts();
  assert.ok(paths.length >= 15, `found only ${paths.join(", ")}`);
  const names = await Promise.all(paths.map(scriptName));
  const runs = await pool(
    paths.flatMap((p) => [() => run(p, ["--help"]), () => run(p, ["--bogus-flag"])]),
  );
  paths.forEach((path, i) => {
    const [help, bad] = [runs[2 * i], runs[2 * i + 1]];
    assert.equal(help.code, 0, `${path} --help: exit ${help.code}\n${help.stderr}`);
    assert.match(help.stdout, /--[a-z]/, `${path} --help names no flag:\n${help.stdout}`);
    assert.equal(bad.code, 2, `${path} --bogus-flag: exit ${bad.code}\n${bad.stderr}`);
    assert.equal(bad.stdout, "", `${path} --bogus-flag printed on stdout`);
    assert.equal(
      bad.stderr.split("\n")[0],
      `${names[i]}: Unknown option '--bogus-flag'`,
      `${path} --bogus-flag`,
    );
    assert.doesNotMatch(bad.stderr, /Uncaught|\n\s+at .*:\d+:\d+/, `${path}: a stack trace`);
  });
});

/** Bad values, each read before the script opens the GPU or touches a file. */
const BAD: [string, string[], string][] = [
  [
    "examples/generate.ts",
    ["--max-tokens", "abc"],
    '--max-tokens must be an integer >= 1, got "abc"',
  ],
  ["examples/generate.ts", ["--cache", "foo"], '--cache must be one of dense, dms, got "foo"'],
  ["examples/generate.ts", ["--top-p", "0"], '--top-p must be in (0, 1], got "0"'],
  ["examples/generate.ts", ["--prompt"], "Option '--prompt <value>' argument missing"],
  [
    "examples/dms_quickstart.ts",
    ["--window", "1"],
    '--window must be an integer in 2..4096, got "1"',
  ],
  [
    "examples/retrofit.ts",
    ["--trainable", "x"],
    '--trainable must be one of adapters, all, got "x"',
  ],
  ["examples/retrofit.ts", ["--final-cr", "0.5"], '--final-cr must be a number >= 1, got "0.5"'],
  ["examples/demo.ts", ["--samples", "65"], '--samples must be an integer in 1..64, got "65"'],
  [
    "examples/hyperscale.ts",
    ["--out", "/nonexistent/x", "--chains", "1,x"],
    '--chains must be an integer >= 1, got "x"',
  ],
  ["examples/hyperscale.ts", ["--chains", "1"], "--out DIR is required"],
  [
    "examples/browser/serve.ts",
    ["--port", "70000"],
    '--port must be an integer in 0..65535, got "70000"',
  ],
  ["tools/pretrain_teacher.ts", ["--loss", "x"], '--loss must be one of answers, all, got "x"'],
];

Deno.test("bad values: exit 2, the flag and the value on stderr's first line, nothing on stdout", async () => {
  const runs = await pool(BAD.map(([path, args]) => () => run(path, args)));
  for (const [i, [path, args, message]] of BAD.entries()) {
    const r = runs[i];
    const what = `${path} ${args.join(" ")}`;
    assert.equal(r.code, 2, `${what}: exit ${r.code}\n${r.stderr}`);
    assert.equal(r.stdout, "", `${what} printed on stdout`);
    assert.equal(r.stderr.split("\n")[0], `${await scriptName(path)}: ${message}`, what);
  }
});
