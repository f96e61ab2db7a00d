import assert from "node:assert/strict";
import { openCheckpoint } from "../../src/io/checkpoint.ts";
import { writeSafetensors } from "../../src/io/safetensors_writer.ts";
import { withTmp } from "./_safetensors_util.ts";

Deno.test("openCheckpoint reads sharded checkpoints through the index and names missing shards and tensors", async () => {
  await withTmp(async (dir) => {
    await writeSafetensors(`${dir}/model-00001-of-00002.safetensors`, {
      "a.weight": { dtype: "BF16", shape: [2, 2], data: [1, 2, 3, 4] },
      "b.weight": { dtype: "F32", shape: [3], data: [5, 6, 7] },
    });
    await writeSafetensors(`${dir}/model-00002-of-00002.safetensors`, {
      "c.weight": { dtype: "I32", shape: [2], data: [-8, 9] },
    });
    const index = {
      metadata: { total_size: 24 },
      weight_map: {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00001-of-00002.safetensors",
        "c.weight": "model-00002-of-00002.safetensors",
      },
    };
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify(index));
    {
      using ckpt = await openCheckpoint(dir);
      assert.deepEqual([...ckpt.tensors.keys()], ["a.weight", "b.weight", "c.weight"]);
      assert.equal(ckpt.files.length, 2);
      assert.ok(ckpt.tensors.get("c.weight")!.file.endsWith("model-00002-of-00002.safetensors"));
      assert.deepEqual(Array.from((await ckpt.read("a.weight", { rowStart: 1 })).data), [3, 4]);
      assert.deepEqual(Array.from((await ckpt.read("c.weight")).data), [-8, 9]);
      assert.deepEqual(Array.from((await ckpt.read("b.weight")).data), [5, 6, 7]);
      await assert.rejects(ckpt.read("d.weight"), /Tensor "d.weight" not found in checkpoint/);
    }
    const bad = (m: Record<string, string>) =>
      Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify({ weight_map: m }));
    await bad({ ...index.weight_map, "d.weight": "model-00003-of-00003.safetensors" });
    await assert.rejects(
      openCheckpoint(dir),
      (e: Error) =>
        e.message.includes("model.safetensors.index.json") &&
        e.message.includes("model-00003-of-00003.safetensors") && e.message.includes('"d.weight"'),
    );
    await bad({ ...index.weight_map, "e.weight": "model-00002-of-00002.safetensors" });
    await assert.rejects(
      openCheckpoint(dir),
      /tensor "e.weight" is mapped to .*model-00002-of-00002.safetensors, which does not contain it/,
    );
    await bad({ "a.weight": "../escape.safetensors" });
    await assert.rejects(openCheckpoint(dir), SyntaxError);
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, "{ nope");
    await assert.rejects(openCheckpoint(dir), /model.safetensors.index.json/);
    const empty = await Deno.makeTempDir({ dir });
    await assert.rejects(openCheckpoint(empty), /No weights in .*model.safetensors/);
  });
});
