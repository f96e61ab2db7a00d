/**
 * Hostile files through the CLI (issue 13 item 1, issue 12 item 3): a missing folder, a
 * config.json with a bad field or no JSON at all, a truncated or garbled model.safetensors
 * (fast-check picks the truncation points), a tensor with the wrong shape or missing, a
 * tokenizer.json that is not JSON, a config.json or tokenizer.json that never ends (/dev/zero):
 * through `inspect` and `generate` each ends in exit code 1 and ONE line on stderr,
 * `dms <command>: ...`, naming the file (and the field or tensor), with no stack trace;
 * `--debug` adds the stack. A conformance case with a missing tensor fails its case (exit 1)
 * with one FAIL line naming the file and the tensor. Hostile folders are copies of the
 * committed teacher with one file damaged.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { openSafetensors, writeSafetensors } from "../../src/io/safetensors.ts";
import type { RawTensor } from "../../src/io/safetensors.ts";
import { cli, type CliRun, CONFORMANCE, copyFolder, listTree, pool, TEACHER } from "./_cli.ts";

/** A copy of the teacher in a new temporary folder with `damage` applied to it; its path. */
async function hostile(damage: (dir: string) => void | Promise<void>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "dms-cli-hostile-" });
  copyFolder(TEACHER, dir);
  await damage(dir);
  return dir;
}

/** Removes the folders `hostile` made. */
const remove = (...dirs: string[]) =>
  Promise.all(dirs.map((d) => Deno.remove(d, { recursive: true }).catch(() => {})));

/** Rewrites `<dir>/<file>` through `edit` of its tensors (raw bytes, names in file order). */
async function editTensors(
  path: string,
  edit: (t: Record<string, RawTensor>) => void,
): Promise<void> {
  const tensors: Record<string, RawTensor> = {};
  {
    using f = await openSafetensors(path);
    for (const name of f.tensors.keys()) tensors[name] = await f.readRaw(name);
  }
  edit(tensors);
  await Deno.remove(path);
  await writeSafetensors(path, tensors);
}

/** The header JSON of a safetensors file rewritten by `edit`, padded to its length (offsets kept). */
function editHeader(path: string, edit: (h: Record<string, { shape: number[] }>) => void): void {
  const bytes = Deno.readFileSync(path);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  edit(header);
  const text = new TextEncoder().encode(JSON.stringify(header).padEnd(n, " "));
  assert.equal(text.length, n, "the edited header must keep its length");
  bytes.set(text, 8);
  Deno.writeFileSync(path, bytes);
}

const CONFIG = (dir: string) => `${dir}/config.json`;
const WEIGHTS = (dir: string) => `${dir}/model.safetensors`;

/** Exit 1, one line `dms <cmd>: ...` on stderr containing every `names`, no stack. */
function assertFailure(r: CliRun, cmd: string, names: (string | RegExp)[], what: string): void {
  const at = `${what}\n--- stderr:\n${r.stderr}`;
  assert.equal(r.code, 1, `exit code ${r.code}: ${at}`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `not one line on stderr: ${at}`);
  assert.ok(lines[0].startsWith(`dms ${cmd}: `), at);
  for (const n of names) {
    if (typeof n === "string") assert.ok(lines[0].includes(n), `"${n}" not named: ${at}`);
    else assert.match(lines[0], n, at);
  }
  assert.ok(!/\n\s+at /.test(r.stderr) && !r.stderr.includes("    at "), `stack trace: ${at}`);
  assert.ok(!r.stderr.includes("Uncaught"), `uncaught error: ${at}`);
}

Deno.test("hostile model folders through inspect and generate: exit 1, one line naming the file and field", async () => {
  const missing = `${await Deno.makeTempDir()}/no-such-model`;
  const badField = await hostile((d) => {
    const c = JSON.parse(Deno.readTextFileSync(CONFIG(d)));
    Deno.writeTextFileSync(CONFIG(d), JSON.stringify({ ...c, hidden_size: "big" }));
  });
  const notJson = await hostile((d) =>
    Deno.writeTextFileSync(CONFIG(d), '{"model_type": "qwen3",')
  );
  const truncated = await hostile((d) => {
    const b = Deno.readFileSync(WEIGHTS(d));
    Deno.writeFileSync(WEIGHTS(d), b.subarray(0, b.length >> 1));
  });
  const garbled = await hostile((d) => {
    const b = Deno.readFileSync(WEIGHTS(d));
    b.fill(0xff, 20, 60); // inside the header: not UTF-8 any more
    Deno.writeFileSync(WEIGHTS(d), b);
  });
  const UP = "model.layers.0.mlp.up_proj.weight";
  const wrongShape = await hostile((d) =>
    editHeader(WEIGHTS(d), (h) => {
      h[UP].shape.reverse(); // [192, 64] -> [64, 192]: the same bytes, the wrong shape
    })
  );
  const NORM = "model.norm.weight";
  const missingTensor = await hostile((d) =>
    editTensors(WEIGHTS(d), (t) => {
      delete t[NORM];
    })
  );
  const badTokenizer = await hostile((d) => Deno.writeTextFileSync(`${d}/tokenizer.json`, "{not"));
  // endless files: read forever unless refused
  const zeroConfig = await hostile((d) => {
    Deno.removeSync(CONFIG(d));
    Deno.symlinkSync("/dev/zero", CONFIG(d));
  });
  const zeroTokenizer = await hostile((d) => Deno.symlinkSync("/dev/zero", `${d}/tokenizer.json`));

  const IDS = ["--ids", "1,20,6"];
  const cases: [string[], string, (string | RegExp)[]][] = [
    [["inspect", missing], "inspect", [missing, "no such model folder"]],
    [["generate", missing, ...IDS], "generate", [missing, "no such model folder"]],
    [["inspect", badField], "inspect", [CONFIG(badField), "hidden_size", '"big"']],
    [["generate", badField, ...IDS], "generate", [CONFIG(badField), "hidden_size"]],
    [["inspect", notJson], "inspect", [CONFIG(notJson), /JSON/]],
    [["generate", notJson, ...IDS], "generate", [CONFIG(notJson), /JSON/]],
    [["inspect", truncated], "inspect", [WEIGHTS(truncated), /truncated/]],
    [["generate", truncated, ...IDS], "generate", [WEIGHTS(truncated), /truncated/]],
    [["inspect", garbled], "inspect", [WEIGHTS(garbled), /header/]],
    [["generate", garbled, ...IDS], "generate", [WEIGHTS(garbled), /header/]],
    [["inspect", wrongShape], "inspect", [WEIGHTS(wrongShape), UP, "[192, 64]", "[64, 192]"]],
    [["generate", wrongShape, ...IDS], "generate", [WEIGHTS(wrongShape), UP, "[192, 64]"]],
    [["inspect", missingTensor], "inspect", [missingTensor, NORM, "missing"]],
    [["generate", missingTensor, ...IDS], "generate", [missingTensor, NORM]],
    [["generate", badTokenizer, ...IDS], "generate", [`${badTokenizer}/tokenizer.json`, /JSON/]],
    [["inspect", zeroConfig], "inspect", [CONFIG(zeroConfig), "not a regular file"]],
    [["generate", zeroTokenizer, ...IDS], "generate", [`${zeroTokenizer}/tokenizer.json`]],
    // the committed teacher has no tokenizer.json, and 128 tokens
    [["generate", TEACHER, "--prompt", "hi"], "generate", [`${TEACHER}/tokenizer.json`, "--ids"]],
    [["generate", TEACHER, "--ids", "1,500"], "generate", [`${TEACHER}/config.json`, "500", "128"]],
  ];
  const runs = await pool(cases, 3, ([args]) => cli(args));
  await remove(missing.slice(0, -"/no-such-model".length), badField, notJson, truncated, garbled);
  await remove(wrongShape, missingTensor, badTokenizer, zeroConfig, zeroTokenizer);
  cases.forEach(([args, cmd, names], i) => assertFailure(runs[i], cmd, names, args.join(" ")));
  // inspect still prints its report of what it found before failing on the tensor problems
  assert.match(runs[10].stdout, /tensors: 1 problem\(s\)/);
  assert.equal(runs[1].stdout, "");
});

Deno.test("missing pieces: no config.json, no weights, no tokenizer for --text, offline hub, unreadable plot input", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dms-cli-missing-" });
  try {
    Deno.mkdirSync(`${dir}/empty`);
    copyFolder(TEACHER, `${dir}/config-only`);
    Deno.removeSync(`${dir}/config-only/model.safetensors`);
    Deno.mkdirSync(`${dir}/hub`);
    Deno.writeTextFileSync(`${dir}/text.txt`, "one paragraph\n\nanother\n");
    const before = listTree(dir);
    const cases: [string[], (string | RegExp)[]][] = [
      [["bench", `${dir}/empty`], [`${dir}/empty/config.json`, "missing"]],
      [["eval", `${dir}/text.txt`], [`${dir}/text.txt`, "not a folder"]],
      [["inspect", `${dir}/config-only`], [`${dir}/config-only`, "model.safetensors"]],
      [["generate", "--hub", "owner/name", "--ids", "1"], ["owner/name", "HF_HUB_OFFLINE"]],
      [
        ["retrofit", TEACHER, "--out", `${dir}/ck`, "--text", `${dir}/text.txt`, "--steps", "1"],
        [`${TEACHER}/tokenizer.json`, "missing"],
      ],
      [["plot", "eviction-map", `${dir}/none.json`, "--out", `${dir}/e.svg`], [`${dir}/none.json`]],
    ];
    const env = { HF_HUB_OFFLINE: "1", HF_HUB_CACHE: `${dir}/hub` };
    const runs = await pool(cases, 3, ([args]) => cli(args, { env }));
    cases.forEach(([args, names], i) => assertFailure(runs[i], args[0], names, args.join(" ")));
    assert.deepEqual(listTree(dir), before, "a failed command wrote nothing");
  } finally {
    await remove(dir);
  }
});

Deno.test("--debug adds the stack trace to the failure", async () => {
  const dir = await hostile((d) => {
    const c = JSON.parse(Deno.readTextFileSync(CONFIG(d)));
    Deno.writeTextFileSync(CONFIG(d), JSON.stringify({ ...c, num_attention_heads: 0 }));
  });
  const [a, b] = await pool([["inspect", dir, "--debug"], ["--debug"]], 2, (args) => cli(args));
  await remove(dir);
  assert.equal(a.code, 1, a.stderr);
  assert.ok(a.stderr.includes(CONFIG(dir)) && a.stderr.includes("num_attention_heads"), a.stderr);
  assert.match(a.stderr, /\n {4}at .*src\/model\/config\.ts/);
  // --debug is a command's flag, not a command
  assert.equal(b.code, 2, b.stderr);
});

Deno.test("randomly truncated model.safetensors: inspect exits 1 with one line naming the file", async () => {
  const size = Deno.statSync(`${TEACHER}/model.safetensors`).size;
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: size - 1 }), async (cut) => {
      const dir = await hostile((d) => {
        const b = Deno.readFileSync(WEIGHTS(d));
        Deno.writeFileSync(WEIGHTS(d), b.subarray(0, cut));
      });
      const r = await cli(["inspect", dir]);
      await remove(dir);
      assertFailure(r, "inspect", [WEIGHTS(dir)], `inspect after a cut at byte ${cut} of ${size}`);
    }),
    { numRuns: 5, seed: 1213 },
  );
});

Deno.test("a conformance case with a missing tensor fails its case, naming the file and the tensor", async () => {
  const root = await Deno.makeTempDir({ prefix: "dms-cli-case-" });
  const name = "C1_attn_single_chunk";
  copyFolder(`${CONFORMANCE}/${name}`, `${root}/${name}`);
  await editTensors(`${root}/${name}/case.safetensors`, (t) => {
    delete t.decode_out;
  });
  const r = await cli(["conform", root]);
  await remove(root);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const fails = r.stdout.split("\n").filter((l) => l.startsWith("FAIL "));
  assert.equal(fails.length, 1, r.stdout);
  assert.ok(fails[0].includes(`${root}/${name}/case.safetensors`), fails[0]);
  assert.ok(fails[0].includes("decode_out"), fails[0]);
  assert.match(r.stdout, /conformance: 0 passed, 1 failed/);
  assert.ok(!r.stdout.includes("    at ") && !r.stderr.includes("    at "), r.stderr);
});
