import assert from "node:assert/strict";
import { createModel, exportWeights, loadModel } from "../../src/model/model.ts";
import { parseConfig } from "../../src/model/config.ts";
import { AdamW } from "../../src/train/adamw.ts";
import {
  latestCheckpoint,
  readOptimizerState,
  readTrainerState,
  restoreWeights,
  saveCheckpoint,
  type TrainerState,
} from "../../src/train/checkpoint.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { bitsEqual, disposing, gpu, GPU_TEST, randomArray } from "../_util.ts";

const config = parseConfig({
  model_type: "qwen3",
  hidden_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  intermediate_size: 48,
  vocab_size: 40,
  max_position_embeddings: 128,
  dms_window_size: 8,
  dms_paged_attention_block_size: 4,
  dms_separate_alpha: true,
});

function state(step: number, extra: Partial<TrainerState> = {}): TrainerState {
  return {
    version: 1,
    step,
    seed: 42,
    schedule: { initialCr: 1, finalCr: 4, finalStep: 10 },
    data: { kind: "generator", seed: 42, index: step },
    parameters: ["a", "b"],
    options: { lr: 3e-5 },
    ...extra,
  };
}

Deno.test({
  name: "saveCheckpoint() round-trips weights bit-exactly, optimizer moments and step",
  ...GPU_TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "dms_ckpt_" });
    try {
      const model = createModel(gpu, config, { seed: 3, dtype: "f32" });
      const other = createModel(gpu, config, { seed: 4, dtype: "f32" });
      using _ = disposing(model, other);
      // an optimizer with non-trivial moments
      const pa = Tensor.fromArray(gpu, randomArray(6, 1), [2, 3]);
      const pb = Tensor.fromArray(gpu, randomArray(5, 2), [5]);
      using opt = new AdamW([pa, pb], { lr: 0.1, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0 });
      using ga = Tensor.fromArray(gpu, randomArray(6, 3), [2, 3]);
      using gb = Tensor.fromArray(gpu, randomArray(5, 4), [5]);
      opt.step([ga, gb]);
      opt.step([ga, gb]);
      const path = await saveCheckpoint(dir, model, state(7), {
        names: ["a", "b"],
        optimizer: opt,
      });
      assert.equal(path, `${dir}/checkpoint-7`);
      assert.equal(await latestCheckpoint(dir), path);
      const files = [...Deno.readDirSync(path)].map((e) => e.name).sort();
      assert.deepEqual(files, [
        "config.json",
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
      ]);
      const cfgJson = JSON.parse(await Deno.readTextFile(`${path}/config.json`));
      assert.equal(cfgJson.dms_separate_alpha, true);
      assert.equal(cfgJson.dms_window_size, 8);

      // weights: restore into a differently initialised model → bit-exact
      await restoreWeights(other, path);
      const want = await exportWeights(model), got = await exportWeights(other);
      assert.ok(want.has("model.layers.1.self_attn.dms_proj_alpha.weight"));
      assert.ok(want.has("model.layers.1.self_attn.dms_proj_alpha_norm.weight"));
      for (const [name, t] of want) bitsEqual(got.get(name)!.data, t.data, name);
      // loadModel reads the same checkpoint
      const loaded = await loadModel(gpu, path, { dtype: "f32" });
      using _l = disposing(loaded);
      const viaLoad = await exportWeights(loaded);
      for (const [name, t] of want) bitsEqual(viaLoad.get(name)!.data, t.data, name);

      // optimizer: moments and step
      const exp = await opt.exportState();
      const back = await readOptimizerState(path, ["a", "b"]);
      assert.equal(back.step, 2);
      exp.m.forEach((m, i) => bitsEqual(back.m[i], m, `m[${i}]`));
      exp.v.forEach((v, i) => bitsEqual(back.v[i], v, `v[${i}]`));
      await assert.rejects(readOptimizerState(path, ["a", "c"]), /tensor "c.exp_avg" is missing/);

      assert.deepEqual(await readTrainerState(path), state(7));
      // re-saving the same step replaces it whole
      await saveCheckpoint(dir, model, state(7, { seed: 9 }));
      assert.equal((await readTrainerState(path)).seed, 9);
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["checkpoint-7"]);
      pa.dispose();
      pb.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a save that dies midway leaves the previous checkpoint as the latest",
  ...GPU_TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "dms_ckpt_" });
    try {
      const model = createModel(gpu, config, { seed: 3, dtype: "f32" });
      using _ = disposing(model);
      assert.equal(await latestCheckpoint(dir), null);
      assert.equal(await latestCheckpoint(`${dir}/none`), null);
      const first = await saveCheckpoint(dir, model, state(4));
      // a failure after the weights were written (trainer_state is not serialisable)
      const bad = state(8, { options: { n: 1n as unknown as number } });
      await assert.rejects(saveCheckpoint(dir, model, bad), TypeError);
      assert.equal(await latestCheckpoint(dir), first);
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["checkpoint-4"]);
      // what a killed process leaves: a temporary folder with some files, and a final-named
      // folder without trainer_state.json (e.g. copied by hand) → both ignored
      await Deno.mkdir(`${dir}/.checkpoint-12.tmp-dead`);
      await Deno.writeTextFile(`${dir}/.checkpoint-12.tmp-dead/model.safetensors`, "partial");
      await Deno.mkdir(`${dir}/checkpoint-16`);
      await Deno.copyFile(`${first}/model.safetensors`, `${dir}/checkpoint-16/model.safetensors`);
      assert.equal(await latestCheckpoint(dir), first);
      // a later complete one wins (numeric order, not lexicographic)
      const later = await saveCheckpoint(dir, model, state(10));
      assert.equal(await latestCheckpoint(dir), later);
      await Deno.writeTextFile(`${later}/trainer_state.json`, "{");
      await assert.rejects(readTrainerState(later), {
        name: "SyntaxError",
        message: /trainer_state.json: not valid JSON/,
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
