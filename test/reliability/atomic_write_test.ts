/**
 * Nothing lost (issue 13, item 6): a write that fails half-way, or a process killed while
 * writing, leaves the previous file (or checkpoint) intact and no temporary file behind. The
 * writers: `writeTextFileAtomic` (results JSON, plots, config.json, trainer_state.json),
 * `writeSafetensors` (weights, optimizer state) and `saveCheckpoint` (a whole folder).
 * Resume-equals-uninterrupted for retrofit is test/train/retrofit_test.ts ("retrofit() resumed
 * from a checkpoint equals the uninterrupted run (bit-exact)").
 */

import assert from "node:assert/strict";
import { writeTextFileAtomic } from "../../src/io/atomic.ts";
import { openSafetensors, writeSafetensors } from "../../src/io/safetensors.ts";
import { parseConfig } from "../../src/model/config.ts";
import { createModel } from "../../src/model/model.ts";
import { latestCheckpoint, saveCheckpoint, type TrainerState } from "../../src/train/checkpoint.ts";
import { gpu, GPU_TEST } from "../_util.ts";

/** Runs `fn` with every file write after the first `okWrites` failing like a full disk. */
async function withFailingWrites<T>(okWrites: number, fn: () => Promise<T>): Promise<T> {
  const proto = Deno.FsFile.prototype;
  const write = proto.write;
  let n = 0;
  proto.write = function (this: Deno.FsFile, p: Uint8Array): Promise<number> {
    if (n++ >= okWrites) {
      return Promise.reject(new Deno.errors.WriteZero("No space left on device"));
    }
    return write.call(this, p.subarray(0, Math.max(1, p.length >> 1))); // short writes too
  };
  try {
    return await fn();
  } finally {
    proto.write = write;
  }
}

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

Deno.test("a failing text write leaves the old file and no temporary file", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/results.json`;
  await writeTextFileAtomic(path, '{"old": true}\n');
  for (const ok of [0, 1, 3]) {
    await assert.rejects(
      () => withFailingWrites(ok, () => writeTextFileAtomic(path, "x".repeat(10_000))),
      new RegExp(`writing ${path} failed: No space left`),
    );
    assert.equal(await Deno.readTextFile(path), '{"old": true}\n');
    assert.deepEqual(await names(dir), ["results.json"]);
  }
  // a rename that fails (the target became a folder): the temporary file is removed too
  await Deno.remove(path);
  await Deno.mkdir(`${path}/x`, { recursive: true });
  await assert.rejects(() => writeTextFileAtomic(path, "new"), /writing .* failed/);
  assert.deepEqual(await names(dir), ["results.json"]);
  // short writes are completed, not truncated
  await Deno.remove(path, { recursive: true });
  const long = "y".repeat(50_000);
  await withFailingWrites(Infinity, () => writeTextFileAtomic(path, long));
  assert.equal(await Deno.readTextFile(path), long);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a failing safetensors write leaves the old file readable", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/model.safetensors`;
  await writeSafetensors(path, { w: { dtype: "F32", shape: [3], data: [1, 2, 3] } });
  const big = { w: { dtype: "F32" as const, shape: [4096], data: new Float32Array(4096).fill(9) } };
  for (const ok of [0, 1, 2]) {
    await assert.rejects(() => withFailingWrites(ok, () => writeSafetensors(path, big)));
    using f = await openSafetensors(path);
    assert.deepEqual([...(await f.read("w")).data], [1, 2, 3]);
    assert.deepEqual(await names(dir), ["model.safetensors"]);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a process killed while writing safetensors leaves the old file or the new one, never a part", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/w.safetensors`;
  const n = 1 << 22; // 16 MiB per write, rewritten until killed
  await writeSafetensors(path, { w: { dtype: "F32", shape: [4], data: [1, 2, 3, 4] } });
  const writer = new URL("../../src/io/safetensors.ts", import.meta.url).href;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `const { writeSafetensors } = await import(${JSON.stringify(writer)});` +
      `for (let i = 0; ; i++) await writeSafetensors(${JSON.stringify(path)}, ` +
      `{ w: { dtype: "F32", shape: [${n}], data: new Float32Array(${n}).fill(i) } });`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await new Promise((r) => setTimeout(r, 1500));
  child.kill("SIGKILL");
  await child.status;
  using f = await openSafetensors(path); // parses: header and data complete
  const w = f.tensors.get("w")!;
  if (w.shape[0] === 4) assert.deepEqual([...(await f.read("w")).data], [1, 2, 3, 4]);
  else {
    const data = (await f.read("w")).data as Float32Array;
    assert.equal(data.length, n);
    assert.ok(data.every((x) => x === data[0]), "a mix of two writes");
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test({
  name: "a checkpoint save that fails half-way leaves the previous checkpoint the latest",
  ...GPU_TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const config = parseConfig({
      model_type: "qwen3",
      hidden_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      head_dim: 8,
      intermediate_size: 24,
      vocab_size: 20,
      max_position_embeddings: 64,
    }, "tiny");
    const model = createModel(gpu, config, { seed: 2 });
    const state = (step: number): TrainerState => ({
      version: 1,
      step,
      seed: 1,
      schedule: { initialCr: 1, finalCr: 4, finalStep: 10 },
      data: { kind: "generator", seed: 1, index: step },
      parameters: ["p"],
      options: {},
    });
    const optimizer = {
      names: ["p"],
      optimizer: { step: 1, m: [new Float32Array(2)], v: [new Float32Array(2)] },
    };
    try {
      const first = await saveCheckpoint(dir, model, state(1), optimizer);
      const before = await Deno.readFile(`${first}/model.safetensors`);
      // fails in model.safetensors, in optimizer.safetensors, in trainer_state.json; and
      // re-saving step 1 that fails must not touch the complete step-1 folder
      for (const [step, ok] of [[2, 1], [2, 6], [2, 12], [1, 3]]) {
        await assert.rejects(() =>
          withFailingWrites(ok, () => saveCheckpoint(dir, model, state(step), optimizer))
        );
        assert.equal(await latestCheckpoint(dir), first, `step ${step}, ${ok} writes`);
        assert.deepEqual(await names(dir), ["checkpoint-1"], "temporary folder left");
        assert.deepEqual(await Deno.readFile(`${first}/model.safetensors`), before);
      }
    } finally {
      model.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
