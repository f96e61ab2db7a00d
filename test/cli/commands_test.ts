/**
 * The CLI's commands on the committed teacher and student (issue 12 item 3), each checked
 * against the library called directly in the test: `generate` (its tokens are `generate()`'s on
 * the same model, prompt and policy, for every name in CACHE_POLICY_NAMES; the streamed output
 * holds the same tokens), `inspect` (the parameter count is `parameterCount(config)` and the sum
 * of the checkpoint's tensor sizes; the KV bytes per token dense and at `--cr`), `eval` (the
 * library's `evaluateTask`), `bench`, `retrofit` (a checkpoint `inspect` accepts, `--resume`),
 * `plot` (valid SVGs, written atomically; a failed plot keeps the old file), `conform` (one
 * vendored case, CPU and GPU), and `--hub` served from a Hugging Face cache offline.
 */

import assert from "node:assert/strict";
import { evaluateTask } from "../../src/eval/task_eval.ts";
import { generateTask, type Task } from "../../src/eval/tasks.ts";
import { CACHE_POLICY_NAMES, type CachePolicyName, generate } from "../../src/generate.ts";
import { openCheckpoint } from "../../src/io/safetensors.ts";
import { loadConfig, parameterCount } from "../../src/model/config.ts";
import { loadModel } from "../../src/model/model.ts";
import { gpu, GPU_TEST } from "../_util.ts";
import { cli, CONFORMANCE, CONTROL, copyFolder, listTree, pool, STUDENT, TEACHER } from "./_cli.ts";

const TASK: Task = { kind: "kv", length: 48, pairs: 1, depth: [0, 0.5] };
const PROMPT = generateTask(TASK, { count: 1, seed: 5 })[0].prompt;
const MAX = 6;

/** The library's tokens for `folder`, `PROMPT` and `policy` (greedy, the config's EOS). */
async function libraryTokens(folder: string, policies: CachePolicyName[]): Promise<number[][]> {
  const model = await loadModel(gpu, folder);
  try {
    const out: number[][] = [];
    for (const cache of policies) {
      const gen = generate(model, [PROMPT], { maxTokens: MAX, cache });
      let r = await gen.next();
      while (!r.done) r = await gen.next();
      out.push(r.value.tokens[0]);
    }
    return out;
  } finally {
    model.dispose();
  }
}

Deno.test({
  name:
    "generate --json: the tokens of the library's generate() for every policy, teacher and student",
  ...GPU_TEST,
  fn: async () => {
    const ids = ["--ids", PROMPT.join(","), "--max-tokens", String(MAX), "--json"];
    const jobs: [string, CachePolicyName | undefined][] = [
      [TEACHER, undefined],
      ...CACHE_POLICY_NAMES.map((p) => [STUDENT, p] as [string, CachePolicyName]),
    ];
    const runs = await pool(
      jobs,
      2,
      ([folder, policy]) =>
        cli(["generate", folder, ...ids, ...(policy ? ["--policy", policy] : [])]),
    );
    const want = [
      ...await libraryTokens(TEACHER, ["dense"]),
      ...await libraryTokens(STUDENT, [...CACHE_POLICY_NAMES]),
    ];
    jobs.forEach(([folder, policy], i) => {
      const r = runs[i], what = `${folder} --policy ${policy}`;
      assert.equal(r.code, 0, `${what}: ${r.stderr}`);
      assert.equal(r.stderr, "", what);
      const j = JSON.parse(r.stdout);
      assert.equal(j.policy, policy ?? "dense", "the teacher is not a DMS checkpoint: dense");
      assert.deepEqual(j.prompt, PROMPT);
      assert.deepEqual(j.tokens, want[i], what);
      assert.ok(j.tokens.length >= 1 && j.tokens.length <= MAX, what);
      assert.equal(j.text, null, "no tokenizer.json: no text");
      const s = j.stats;
      assert.equal(s.liveTokens <= s.peakTokens, true, what);
      if (j.policy === "dense") assert.equal(s.compressionRatio, 1, what);
      if (j.policy === "dms") {
        assert.ok(s.compressionRatio > 1, `${what}: CR ${s.compressionRatio}`);
      }
      assert.ok(
        j.trace.length >= 1 && j.trace.every((t: { policy: string }) => t.policy === j.policy),
      );
    });
  },
});

Deno.test("generate streams the same tokens on stdout and one summary line on stderr, no control codes", async () => {
  const ids = ["--ids", PROMPT.join(","), "--max-tokens", String(MAX)];
  const [stream, json] = await pool(
    [[...ids], [...ids, "--json"]],
    2,
    (a) => cli(["generate", STUDENT, ...a], { color: true }),
  );
  assert.equal(stream.code, 0, stream.stderr);
  const tokens = JSON.parse(json.stdout).tokens as number[];
  assert.equal(stream.stdout, tokens.join(" ") + " \n");
  assert.match(
    stream.stderr,
    /^\d+ tokens in [\d.]+ s, policy dms: compression [\d.]+, KV reads \d+/,
  );
  assert.equal(stream.stderr.trimEnd().split("\n").length, 1);
  assert.ok(!CONTROL.test(stream.stdout + stream.stderr), JSON.stringify(stream.stderr));
});

Deno.test("inspect: the parameter count of config.json and of the tensors, KV bytes per token dense vs DMS", async () => {
  const [teacherText, studentText, studentJson] = await pool(
    [
      ["inspect", TEACHER],
      ["inspect", STUDENT, "--cr", "4"],
      ["inspect", STUDENT, "--json"],
    ],
    3,
    (a) => cli(a),
  );
  for (const r of [teacherText, studentText, studentJson]) assert.equal(r.code, 0, r.stderr);
  for (const [folder, r] of [[TEACHER, teacherText], [STUDENT, studentText]] as const) {
    const cfg = await loadConfig(folder);
    using ckpt = await openCheckpoint(folder);
    const summed = [...ckpt.tensors.values()].reduce(
      (a, t) => a + t.shape.reduce((x, y) => x * y, 1),
      0,
    );
    assert.equal(summed, parameterCount(cfg), "the oracle itself: formula = tensors");
    assert.ok(r.stdout.includes(`parameters: ${summed.toLocaleString("en-US")} in `), r.stdout);
    // layers x KV heads x (K and V) x head_dim x 4 bytes (float32 checkpoints)
    const dense = cfg.numLayers * cfg.numKvHeads * 2 * cfg.headDim * 4;
    assert.equal(dense, 2 * 2 * 2 * 16 * 4);
    assert.ok(r.stdout.includes(`KV cache per token: dense ${dense} B`), r.stdout);
    assert.match(r.stdout, /tensors: all \d+ match config.json/);
  }
  assert.match(teacherText.stdout, /^DMS: none/m);
  assert.match(studentText.stdout, /^DMS: window 8, decisions adapter per head/m);
  assert.ok(studentText.stdout.includes(`DMS at CR 4: ${512 / 4} B`), studentText.stdout);
  const j = JSON.parse(studentJson.stdout);
  assert.equal(j.parameters, parameterCount(await loadConfig(STUDENT)));
  assert.deepEqual(j.kvBytesPerToken, {
    elementBytes: 4,
    dense: 512,
    compressionRatio: null, // dms_cr is null in the student's config.json
    dms: null,
  });
  assert.equal(j.isDms, true);
  assert.equal(j.dms.window, 8);
  assert.deepEqual(j.problems, []);
});

Deno.test("--hub finds a model in the Hugging Face cache offline (refs/main or a commit) and writes nothing", async () => {
  const cache = await Deno.makeTempDir({ prefix: "dms-cli-hub-" });
  try {
    const commit = "0123456789abcdef0123456789abcdef01234567";
    const snap = `${cache}/models--tiny--teacher/snapshots/${commit}`;
    copyFolder(TEACHER, snap);
    Deno.mkdirSync(`${cache}/models--tiny--teacher/refs`);
    Deno.writeTextFileSync(`${cache}/models--tiny--teacher/refs/main`, commit);
    const before = listTree(cache);
    const env = { HF_HUB_OFFLINE: "1", HF_HUB_CACHE: cache };
    const [byRef, byCommit] = await pool(
      [
        ["inspect", "--hub", "tiny/teacher", "--json"],
        ["generate", "--hub", "tiny/teacher", "--revision", commit, "--ids", "1,20,6", "--json"],
      ],
      2,
      (a) => cli(a, { env }),
    );
    assert.equal(byRef.code, 0, byRef.stderr);
    const j = JSON.parse(byRef.stdout);
    assert.equal(j.folder, snap);
    assert.equal(j.parameters, parameterCount(await loadConfig(TEACHER)));
    assert.equal(byCommit.code, 0, byCommit.stderr);
    assert.equal(JSON.parse(byCommit.stdout).folder, snap);
    assert.deepEqual(listTree(cache), before);
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test({
  name:
    "eval --json: the accuracy and accounting of the library's evaluateTask; bench: both policies",
  ...GPU_TEST,
  fn: async () => {
    const [ev, bench] = await pool(
      [
        ["eval", STUDENT, "--length", "48", "--samples", "4", "--policy", "dms", "--json"],
        ["bench", STUDENT, "--prompt-len", "8", "--max-tokens", "4", "--runs", "1", "--json"],
      ],
      2,
      (a) => cli(a),
    );
    assert.equal(ev.code, 0, ev.stderr);
    const e = JSON.parse(ev.stdout);
    const model = await loadModel(gpu, STUDENT);
    try {
      const want = await evaluateTask(model, TASK, { samples: 4, seed: 1, policy: "dms" });
      assert.deepEqual(e.task, TASK);
      assert.equal(e.accuracy, want.accuracy);
      assert.equal(e.compressionRatio, want.compressionRatio);
      assert.equal(e.kvReads, want.kvReads);
    } finally {
      model.dispose();
    }
    assert.equal(bench.code, 0, bench.stderr);
    const b = JSON.parse(bench.stdout);
    assert.deepEqual(b.rows.map((r: { policy: string }) => r.policy), ["dense", "dms"]);
    for (const r of b.rows) {
      assert.ok(r.tokensPerSecond > 0 && r.seconds.length === 1);
      assert.ok(r.kvReads > 0);
    }
    assert.equal(b.rows[0].compressionRatio, 1);
  },
});

Deno.test("retrofit writes a DMS checkpoint that inspect accepts; --resume at the last step has nothing to do", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dms-cli-retrofit-" });
  try {
    const args = ["retrofit", TEACHER, "--out", `${dir}/ck`, "--task", "kv", "--length", "32"];
    args.push("--steps", "2", "--batch", "2", "--window", "4", "--block-size", "2");
    const r = await cli(args);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^step 2\/2: KL [\d.]+/);
    assert.ok(r.stdout.includes(`student: ${dir}/ck/checkpoint-2`), r.stdout);
    assert.ok(!CONTROL.test(r.stdout + r.stderr));
    assert.ok(listTree(dir).includes("ck/checkpoint-2/model.safetensors"), listTree(dir).join());
    const [ins, again] = await pool(
      [
        ["inspect", `${dir}/ck/checkpoint-2`, "--json"],
        [...args, "--resume"],
      ],
      2,
      (a) => cli(a),
    );
    assert.equal(ins.code, 0, ins.stderr);
    const j = JSON.parse(ins.stdout);
    assert.equal(j.isDms, true);
    assert.equal(j.dms.window, 4);
    assert.equal(j.dms.blockSize, 2);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /nothing to do: already at step 2/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Throws unless `svg` is one well-formed `<svg>` element (tags balanced, names matching). */
function assertWellFormedSvg(svg: string, what: string): void {
  assert.ok(/^(<\?xml[^>]*\?>\s*)?<svg[\s>]/.test(svg), `${what}: does not start with <svg`);
  assert.ok(svg.trimEnd().endsWith("</svg>"), `${what}: does not end with </svg>`);
  const body = svg.replace(/<!--[\s\S]*?-->/g, "").replace(/<!\[CDATA\[[\s\S]*?\]\]>/g, "");
  const stack: string[] = [];
  for (const m of body.matchAll(/<(\/?)([A-Za-z][\w:.-]*)((?:[^>"']|"[^"]*"|'[^']*')*)>/g)) {
    const [, close, name, rest] = m;
    if (close) assert.equal(stack.pop(), name, `${what}: </${name}> closes the wrong element`);
    else if (!rest.endsWith("/")) stack.push(name);
  }
  assert.deepEqual(stack, [], `${what}: unclosed elements`);
}

Deno.test({
  name: "plot: eviction map, compression and diagram SVGs from generate's JSON, written atomically",
  ...GPU_TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "dms-cli-plot-" });
    try {
      const ids = ["--ids", PROMPT.join(","), "--max-tokens", "4", "--json"];
      const [dms, dense] = await pool(
        [
          ["generate", STUDENT, ...ids, "--eviction-map"],
          ["generate", STUDENT, ...ids, "--policy", "dense"],
        ],
        2,
        (a) => cli(a),
      );
      assert.equal(dms.code, 0, dms.stderr);
      assert.equal(dense.code, 0, dense.stderr);
      await Deno.writeTextFile(`${dir}/dms.json`, dms.stdout);
      await Deno.writeTextFile(`${dir}/dense.json`, dense.stdout);
      await Deno.writeTextFile(`${dir}/bad.json`, JSON.stringify({ evictionMap: { window: 8 } }));
      await Deno.writeTextFile(`${dir}/old.svg`, "<svg>old</svg>");
      await Deno.writeTextFile(`${dir}/keep.svg`, "<svg>keep</svg>");
      const map = JSON.parse(dms.stdout).evictionMap;
      assert.equal(map.states.length, 2, "two layers");
      assert.equal(map.states[0].length, 2, "two KV heads");
      const runs = await pool(
        [
          ["plot", "eviction-map", "dms.json", "--out", "maps/e.svg", "--title", "w8 student"],
          ["plot", "compression", "dense.json", "dms.json", "--out", "c.svg"],
          ["plot", "diagram", "--window", "2", "--decisions", "0,1,0,1", "--out", "old.svg"],
          ["plot", "eviction-map", "bad.json", "--out", "keep.svg"],
        ],
        2,
        (a) => cli(a, { cwd: dir }),
      );
      for (const [i, f] of ["maps/e.svg", "c.svg", "old.svg"].entries()) {
        assert.equal(runs[i].code, 0, runs[i].stderr);
        assert.equal(runs[i].stderr, `wrote ${f}\n`);
        assertWellFormedSvg(await Deno.readTextFile(`${dir}/${f}`), f);
      }
      const e = await Deno.readTextFile(`${dir}/maps/e.svg`);
      assert.ok(e.includes("w8 student"), "the title");
      const c = await Deno.readTextFile(`${dir}/c.svg`);
      // two panels (live entries, compression), one line per policy in each
      assert.equal((c.match(/aria-roledescription="line mark"/g) ?? []).length, 4, "dense, dms");
      for (const p of ["dense", "dms"]) assert.match(c, new RegExp(`>${p}</text>`), p);
      const d = await Deno.readTextFile(`${dir}/old.svg`);
      assert.equal((d.match(/aria-roledescription="rect mark"/g) ?? []).length, (4 * 5) / 2);
      // the bad input: exit 1 naming the file and field, the old file kept
      assert.equal(runs[3].code, 1);
      assert.match(runs[3].stderr, /^dms plot: bad\.json: evictionMap\.tokensSeen: /);
      assert.deepEqual(listTree(dir), [
        "bad.json",
        "c.svg",
        "dense.json",
        "dms.json",
        "keep.svg",
        "maps",
        "maps/e.svg",
        "old.svg",
      ], "no temporary file left");
      assert.equal(await Deno.readTextFile(`${dir}/keep.svg`), "<svg>keep</svg>");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("conform: a vendored case passes on the CPU and the GPU backend", async () => {
  const runs = await pool(
    ["cpu", "gpu"],
    2,
    (b) => cli(["conform", CONFORMANCE, "--only", "C1_attn_single_chunk", "--backend", b]),
  );
  for (const r of runs) {
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^PASS C1_attn_single_chunk {2}max_err /);
    assert.match(r.stdout, /\nconformance: 1 passed, 0 failed\n$/);
  }
});
