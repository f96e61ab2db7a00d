/**
 * End-to-end decode benchmark: a random model of a given shape (default: the
 * Qwen3-0.6B geometry) generates `--tokens` tokens after a `--prompt`-token
 * prefill, with the dense cache and with the DMS cache, and reports decode
 * tokens/s (wall clock, readback every 16 tokens included), prefill time, KV
 * entries read and the compression ratio. Random weights make random DMS
 * decisions (about half the tokens get marked), so the compression here is a
 * property of the random model, not of a retrofitted one.
 *
 *   deno task bench:generate [--layers 28 --hidden 1024 ...] [--quick]
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  createCacheFor,
  createModel,
  generate,
  getGpu,
  parseConfig,
  Tensor,
} from "@hyperscale/dms";
import { sample } from "@hyperscale/dms/ops";
import { writeTextFileAtomic } from "../src/io/atomic.ts";

const { values } = parseArgs({
  options: {
    layers: { type: "string", default: "28" },
    hidden: { type: "string", default: "1024" },
    heads: { type: "string", default: "16" },
    "kv-heads": { type: "string", default: "8" },
    "head-dim": { type: "string", default: "128" },
    intermediate: { type: "string", default: "3072" },
    vocab: { type: "string", default: "151936" },
    window: { type: "string", default: "512" },
    prompt: { type: "string", default: "2048" },
    tokens: { type: "string", default: "256" },
    dtype: { type: "string" },
    quick: { type: "boolean", default: false },
    json: { type: "string" },
  },
});
const gpu = await getGpu();
const cpu = /llvmpipe|lavapipe|swiftshader/i.test(gpu.description);
const n = (
  k: keyof typeof values,
  small: number,
) => (values.quick || cpu ? small : Number(values[k]));
const cfg = parseConfig({
  model_type: "qwen3",
  num_hidden_layers: n("layers", 2),
  hidden_size: n("hidden", 128),
  num_attention_heads: n("heads", 4),
  num_key_value_heads: n("kv-heads", 2),
  head_dim: n("head-dim", 32),
  intermediate_size: n("intermediate", 256),
  vocab_size: n("vocab", 1000),
  max_position_embeddings: 65536,
  rope_theta: 1e6,
  tie_word_embeddings: true,
  dms_window_size: n("window", 32),
  dms_paged_attention_block_size: Math.min(256, n("window", 32) - 1),
}, "bench config");
const dtype = (values.dtype as "f32" | "f16" | undefined) ?? (gpu.hasF16 ? "f16" : "f32");
const P = n("prompt", 128), N = n("tokens", 32);
console.log(
  `device: ${gpu.description}; model: ${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, ` +
    `${cfg.numHeads}/${cfg.numKvHeads} heads × ${cfg.headDim}, vocab ${cfg.vocabSize}, ${dtype}; ` +
    `prompt ${P}, decode ${N}, window ${cfg.dms.window}`,
);
const model = createModel(gpu, cfg, { seed: 1, dtype });
const prompt = Array.from({ length: P }, (_, i) => (i * 7919) % cfg.vocabSize);
const results: Record<string, unknown>[] = [];
for (const policy of ["dense", "dms"] as const) {
  const cache = createCacheFor(model, 1, policy);
  const t0 = performance.now();
  let tFirst = 0, count = 0;
  const gen = generate(model, [prompt], {
    maxTokens: N,
    cache,
    eosTokenIds: [],
    readbackEvery: 16,
    prefillChunk: 4096,
  });
  let stats;
  while (true) {
    const r = await gen.next();
    if (r.done) {
      stats = r.value.stats;
      break;
    }
    if (!tFirst) tFirst = performance.now();
    count += r.value.tokens[0].length;
  }
  const t1 = performance.now();
  cache.dispose();
  // the first chunk's time holds the prefill plus 16 decode steps; report decode rate after it
  const decodeTokens = count - Math.min(16, count);
  const row = {
    policy,
    prefill_plus_first16_ms: +(tFirst - t0).toFixed(1),
    decode_tokens_per_s: decodeTokens > 0
      ? +(decodeTokens / ((t1 - tFirst) / 1000)).toFixed(1)
      : null,
    kv_read_tokens: stats.readTokens,
    peak_kv_tokens: stats.peakTokens,
    compression_ratio: +stats.compressionRatio.toFixed(2),
  };
  results.push(row);
  console.log(JSON.stringify(row));
}
// One decode step in detail: CPU time to record it, wall time until the GPU is done, and the
// summed GPU time of its kernels (timestamp queries).
{
  const cache = createCacheFor(model, 1, "dms");
  const gen = generate(model, [prompt], {
    maxTokens: 1,
    cache,
    eosTokenIds: [],
    prefillChunk: 4096,
  });
  while (!(await gen.next()).done);
  using ids = Tensor.fromArray(gpu, [1], [1, 1], "i32");
  using pos = Tensor.fromArray(gpu, [P], [1, 1], "i32");
  const step = () => {
    const l = model.forward(ids, { mode: "inference", positions: pos, cache, logits: "last" })!;
    const logits = l.reshape([1, cfg.vocabSize]);
    l.dispose();
    sample(logits, { out: ids });
    logits.dispose();
  };
  await cache.reserve(8);
  await gpu.sync();
  const t0 = performance.now();
  step();
  const t1 = performance.now();
  gpu.flush();
  await gpu.sync();
  const t2 = performance.now();
  let gpuMs = NaN;
  if (gpu.hasTimestamps) gpuMs = await gpu.profile(step, 2048);
  const row = {
    policy: "dms one step",
    cpu_record_ms: +(t1 - t0).toFixed(2),
    wall_ms: +(t2 - t0).toFixed(2),
    gpu_kernels_ms: +gpuMs.toFixed(3),
  };
  results.push(row);
  console.log(JSON.stringify(row));
  cache.dispose();
}
if (values.json) {
  await writeTextFileAtomic(
    values.json,
    JSON.stringify({ device: gpu.description, results }, null, 2),
  );
}
model.dispose();
