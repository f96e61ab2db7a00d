/**
 * GPU faults (issue 13, item 3): an invalid dispatch is an error naming the kernel even outside
 * debug mode (never silently zero output); a buffer or binding larger than the device allows,
 * or past the memory limit, is refused before allocation with the sizes in the message; a device
 * lost in the middle of a generation ends it with an error, never with made-up tokens. Each test
 * that breaks its device makes a fresh one (`Gpu.create()`), not the shared one.
 */

import assert from "node:assert/strict";
import { Gpu } from "../../src/gpu/device.ts";
import { parseConfig } from "../../src/model/config.ts";
import { createModel } from "../../src/model/model.ts";
import { generate } from "../../src/generate.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { gpu, GPU_TEST } from "../_util.ts";

Deno.test({
  name:
    "outside debug mode an invalid dispatch fails the next sync and readback, naming the kernel",
  ...GPU_TEST,
  fn: async () => {
    const g = await Gpu.create({ debug: false });
    try {
      const k = g.kernel({ shader: "elementwise", entry: "add", defines: { T: "f32" } });
      const out = g.alloc(16);
      g.write(out, new Float32Array([7, 7, 7, 7]));
      const mapped = g.device.createBuffer({
        size: 16,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      // A MAP_READ buffer cannot be bound as storage: the dispatch is invalid and does nothing.
      g.dispatch(k, [out, out, mapped], [1], { n: 4, m: 4, alpha: 1 });
      await assert.rejects(() => g.sync(), /GPU error in elementwise:add .*STORAGE/s);
      // again (the invalid bind group is cached): the readback fails rather than return zeros
      g.dispatch(k, [out, out, mapped], [1], { n: 4, m: 4, alpha: 1 });
      await assert.rejects(() => g.read(out, 16), /GPU error: .*'elementwise:add/);
      // the error is reported once; the device stays usable
      assert.deepEqual([...new Float32Array(await g.read(out, 16))], [7, 7, 7, 7]);
    } finally {
      g.device.destroy();
    }
  },
});

Deno.test({
  name: "a buffer larger than maxBufferSize is refused before allocation, with both sizes",
  ...GPU_TEST,
  fn: () => {
    const max = gpu.limits.maxBufferSize;
    const before = gpu.memory();
    for (const bytes of [max + 1, 2 ** 52]) {
      assert.throws(
        () => gpu.alloc(bytes, "huge"),
        (e: Error) =>
          e instanceof RangeError && e.message.includes(`"huge" of ${bytes} bytes`) &&
          e.message.includes(`maxBufferSize (${max} bytes)`),
      );
    }
    for (const bytes of [-16, 1.5, NaN]) {
      assert.throws(() => gpu.alloc(bytes), /must be a whole number of bytes/);
    }
    assert.throws(() => Tensor.zeros(gpu, [Math.floor(max / 4) + 4]), /maxBufferSize/);
    assert.deepEqual(gpu.memory(), before);
  },
});

Deno.test({
  name:
    "a storage binding over maxStorageBufferBindingSize is refused naming the kernel and the sizes",
  ...GPU_TEST,
  fn: () => {
    const max = gpu.limits.maxStorageBufferBindingSize;
    const k = gpu.kernel({ shader: "elementwise", entry: "add", defines: { T: "f32" } });
    const small = gpu.alloc(16);
    try {
      // a range binding claiming more than the limit (no big buffer needed to hit the check)
      assert.throws(
        () =>
          gpu.dispatch(k, [small, small, { buffer: small, size: max + 16 }], [1], {
            n: 4,
            m: 4,
            alpha: 1,
          }),
        (e: Error) =>
          e instanceof RangeError && e.message.startsWith("elementwise:add") &&
          e.message.includes(`@binding(3) is ${max + 16} bytes`) &&
          e.message.includes(`maxStorageBufferBindingSize (${max} bytes)`),
      );
    } finally {
      gpu.release(small);
    }
  },
});

Deno.test({
  name: "past GpuOptions.memoryLimitBytes buffers and models are refused before allocation",
  ...GPU_TEST,
  fn: async () => {
    const g = await Gpu.create({ memoryLimitBytes: 1 << 20 });
    try {
      assert.equal(g.memoryLimitBytes, 1 << 20);
      const a = g.alloc(600 * 1024);
      assert.throws(
        () => g.alloc(600 * 1024, "second"),
        (e: Error) =>
          e instanceof RangeError && e.message.includes(
            `${1228800} bytes, over the limit of ` +
              `${1 << 20} bytes`,
          ) && e.message.includes(`${614400} bytes live`),
      );
      assert.equal(g.memory().liveBytes, 600 * 1024);
      g.release(a);
      g.alloc(600 * 1024); // reuses the freed buffer
      // 4·(2·64·256 + ...) bytes of weights > 1 MiB: refused by the config check up front
      const cfg = parseConfig({
        model_type: "qwen3",
        hidden_size: 256,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        head_dim: 64,
        intermediate_size: 512,
        vocab_size: 1000,
        max_position_embeddings: 64,
      }, "wide/config.json");
      assert.throws(
        () => createModel(g, cfg, { seed: 1 }),
        /config.json: the weights need .* more than the 0.0009766 GiB available/,
      );
      assert.equal(g.memory().liveBytes, 600 * 1024);
    } finally {
      g.device.destroy();
    }
  },
});

Deno.test({
  name: "destroying the device mid-generation ends the generation with a device-lost error",
  ...GPU_TEST,
  fn: async () => {
    const g = await Gpu.create();
    const config = parseConfig({
      model_type: "qwen3",
      hidden_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 8,
      intermediate_size: 48,
      vocab_size: 64,
      max_position_embeddings: 512,
      dms_window_size: 4,
      dms_paged_attention_block_size: 2,
    }, "tiny");
    const model = createModel(g, config, { seed: 3 });
    const chunks: number[][] = [];
    await assert.rejects(
      async () => {
        const gen = generate(model, [[1, 2, 3]], {
          maxTokens: 64,
          readbackEvery: 4,
          eosTokenIds: [],
        });
        for await (const c of gen) {
          chunks.push(c.tokens[0]);
          if (chunks.length === 2) g.device.destroy();
        }
      },
      /GPU device lost \(destroyed\)/,
    );
    // two chunks of 4 real tokens, then nothing: no zeros read from a dead device
    assert.equal(chunks.length, 2);
    assert.ok(chunks.every((c) => c.length === 4));
    assert.throws(() => g.alloc(16), /GPU device lost/);
  },
});
