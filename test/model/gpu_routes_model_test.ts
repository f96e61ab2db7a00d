/**
 * The decode path a GPU takes, run where CI runs: a second device with `gpuRoutes` (the fused
 * GEMV kernels, the norms deferred into the projections that read them at ≤ 4 rows and written
 * by the producing projection above, the LM head on `gemv16_wide`) against the readable routes
 * a CPU adapter takes (the `rmsNorm` op, then the matmul kernels), the same seeded model on
 * each device: the logits of a prefill and of decode steps, B = 1 (every norm deferred) and
 * B = 3 (a prefill of 9 rows: the producer's norm), through a dense cache and a DMS cache that
 * evicts, f32 and f16.
 */
import assert from "node:assert/strict";
import { Gpu } from "../../src/gpu/device.ts";
import { parseConfig } from "../../src/model/config.ts";
import { createModel, type Model } from "../../src/model/model.ts";
import { createCacheFor } from "../../src/generate.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { gpu, GPU_TEST } from "../_util.ts";

function config(dms: boolean) {
  return parseConfig({
    model_type: "qwen3",
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    intermediate_size: 96,
    // over GEMV16_AUTO_MAX_N: the LM head takes gemv16_wide on the GPU routes
    vocab_size: 16400,
    max_position_embeddings: 256,
    ...(dms
      ? {
        dms_window_size: 5,
        dms_paged_attention_block_size: 4,
        dms_alpha_scale: 3,
        dms_initial_alpha_offset: 0,
      }
      : {}),
  }, dms ? "qwen3 dms" : "qwen3");
}

/** Last-position logits of a 3-token prefill and 4 decode steps of B rows; the kernels run. */
async function logits(model: Model, B: number, kernels: Set<string>): Promise<Float32Array[]> {
  const g = model.gpu;
  const dispatch = g.dispatch;
  g.dispatch = function (...args: Parameters<typeof dispatch>) {
    kernels.add(args[0].label.split(" ")[0]);
    return dispatch.apply(this, args);
  };
  try {
    using cache = createCacheFor(model, B, model.config.isDms ? "dms" : "dense");
    const out: Float32Array[] = [];
    let pos = 0;
    for (const T of [3, 1, 1, 1, 1]) {
      await cache.reserve(T);
      const ids = Array.from({ length: B * T }, (_, i) => (i * 37 + pos * 11) % 16400);
      using tid = Tensor.fromArray(g, ids, [B, T], "i32");
      const p = Array.from({ length: B * T }, (_, i) => pos + (i % T));
      using tp = Tensor.fromArray(g, p, [B, T], "i32");
      using l = model.forward(tid, { mode: "inference", positions: tp, cache, logits: "last" })!;
      out.push(Float32Array.from(await l.toArray()));
      pos += T;
    }
    return out;
  } finally {
    g.dispatch = dispatch;
  }
}

Deno.test({
  name: "the GPU routes (fused GEMVs, deferred norms, gemv16_wide LM head) give the logits of " +
    "the CPU routes: prefill and decode, B = 1 and 3, dense and DMS caches, f32 and f16",
  ...GPU_TEST,
  fn: async () => {
    const gpuR = await Gpu.create({ gpuRoutes: true });
    assert.equal(gpuR.cpuRoutes, false);
    for (const dtype of gpu.hasF16 ? ["f32", "f16"] as const : ["f32"] as const) {
      for (const dms of [false, true]) {
        for (const B of [1, 3]) {
          const cfg = config(dms);
          const label = `${dtype} ${dms ? "dms" : "dense"} B ${B}`;
          const fused = new Set<string>(), plain = new Set<string>();
          const a = createModel(gpuR, cfg, { seed: 7, dtype });
          const b = createModel(gpu, cfg, { seed: 7, dtype });
          try {
            const got = await logits(a, B, fused);
            const want = await logits(b, B, plain);
            // the routes differ: the GPU ones run the deferred GEMVs, the CPU ones the rmsNorm op
            const kinds = `${label}: ${[...fused].join(", ")}`;
            assert.ok(fused.has("gemv:gemv16_qkv") && fused.has("gemv:gemv16_wide"), kinds);
            // B = 1: every norm deferred (no norm dispatch); B = 3: the 9-row prefill's
            // projections write theirs
            if (B === 1) assert.ok(![...fused].some((k) => k.startsWith("rmsnorm")), kinds);
            else assert.ok(fused.has("gemv_rn:gemv16_rn"), kinds);
            assert.ok(![...plain].some((k) => k.startsWith("gemv")), `${label}: CPU routes`);
            let scale = 0;
            for (const s of want) for (const v of s) scale = Math.max(scale, Math.abs(v));
            // f16: the logits' own rounding (1 ulp is 2^-4 at 64..128) and the normed x's;
            // a wrong norm or term moves them by whole units
            const atol = dtype === "f32" ? 1e-4 * scale : 2 ** -9 * Math.max(scale, 1) * 4;
            got.forEach((s, i) => {
              let worst = 0;
              s.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - want[i][j]))));
              assert.ok(worst <= atol, `${label} step ${i}: max |diff| ${worst} > ${atol}`);
            });
            assert.ok(scale > 1, `${label}: logits of scale ${scale} discriminate`);
          } finally {
            a.dispose();
            b.dispose();
          }
        }
      }
    }
    gpuR.device.destroy();
  },
});
