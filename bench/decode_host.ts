/**
 * Host (CPU-side) time of one decode step: what JS spends encoding a step (the model's forward,
 * the cache's bookkeeping, sampling, the submit), with the GPU idle before each step so its
 * work does not compete. Meaningful on any adapter, lavapipe included: the GPU's own time is
 * excluded by construction (each step starts after `gpu.sync()`, and only the synchronous
 * encoding is timed). The model has the Qwen3-0.6B layer count and head layout (28 layers,
 * 16/8 heads, so the same dispatches per token as bench/generate.ts) with small matrices, so
 * the prefill stays quick on a CPU adapter; the DMS cache runs at a forced CR as in
 * bench/generate.ts.
 *
 * Usage: `deno run -A bench/decode_host.ts [--ctx 2048] [--tokens 64] [--cr 8] [--head-dim 64]
 * [--policies dense,dms]`. On lavapipe the prefill of `--ctx 2048 --head-dim 128` takes minutes;
 * `--ctx 512` measures the same per-step host work.
 * Prints the median and mean host ms per step for dense and DMS, and the `reserve()` time per
 * 32 tokens (amortised per step), and where the step's host time goes (inside `gpu.dispatch`,
 * inside `gpu.flush`, the rest in the ops' JS) with the bind groups and buffers WebGPU created
 * per step (mean over all steps, the first included).
 *
 * @module
 */

import { createCacheFor } from "../src/generate.ts";
import { getGpu } from "../src/gpu/device.ts";
import { parseConfig } from "../src/model/config.ts";
import { createModel } from "../src/model/model.ts";
import { sample } from "../src/ops/sample.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import { scriptArgs } from "../src/cli/script_args.ts";
import { countGpu, fmt, median } from "./_common.ts";

const USAGE = `usage: deno run -A bench/decode_host.ts [flags]

  --ctx N           prompt tokens prefilled before the timed steps (default 2048)
  --tokens N        decode steps timed (default 64)
  --cr X            forced compression ratio of the DMS cache, >= 1 (default 8)
  --head-dim N      the model's head dim (default 64)
  --policies LIST   caches to time: dense, dms (default dense,dms)
  -h, --help        this text`;

const args = scriptArgs("decode_host", USAGE, {
  ctx: { type: "string" },
  tokens: { type: "string" },
  cr: { type: "string" },
  "head-dim": { type: "string" },
  policies: { type: "string" },
});
const ctx = args.int("ctx", 2048, 1), N = args.int("tokens", 64, 1), CR = args.num("cr", 8, 1);
const headDim = args.int("head-dim", 64, 1);
const policies = args.oneOfList("policies", ["dense", "dms"] as const, ["dense", "dms"]);
const gpu = await getGpu();
const dtype = gpu.hasF16 ? "f16" : "f32";
const counters = countGpu(gpu);
const EVERY = 32;

function config(policy: "dense" | "dms") {
  const W = policy === "dms" ? Math.max(2, Math.round(ctx / CR) - 1) : 512;
  return parseConfig({
    model_type: "qwen3",
    num_hidden_layers: 28,
    hidden_size: 128,
    num_attention_heads: 16,
    num_key_value_heads: 8,
    head_dim: headDim,
    intermediate_size: 128,
    vocab_size: 512,
    max_position_embeddings: Math.max(4096, 2 * (ctx + N)),
    rope_theta: 1e6,
    tie_word_embeddings: true,
    dms_window_size: W,
    dms_paged_attention_block_size: Math.min(256, W - 1),
    ...(policy === "dms" ? { dms_alpha_scale: 0, dms_initial_alpha_offset: -10 } : {}),
  }, "decode_host config");
}

async function run(policy: "dense" | "dms") {
  const model = createModel(gpu, config(policy), { seed: 1, dtype });
  using cache = createCacheFor(model, 1, policy);
  const prompt = Array.from({ length: ctx }, (_, i) => (i * 7919) % model.config.vocabSize);
  await cache.reserve(ctx);
  {
    using ids = Tensor.fromArray(gpu, prompt, [1, ctx], "i32");
    using pos = Tensor.fromArray(gpu, prompt.map((_, i) => i), [1, ctx], "i32");
    model.forward(ids, { mode: "inference", positions: pos, cache, logits: "none" });
  }
  await gpu.sync();
  using next = Tensor.zeros(gpu, [1, 1], "i32");
  using log = Tensor.zeros(gpu, [1, EVERY], "i32");
  using posT = Tensor.empty(gpu, [1, 1], "i32");
  const steps: number[] = [];
  let reserveMs = 0;
  const split = instrument();
  counters.reset();
  for (let s = 0; s < N; s++) {
    if (s % EVERY === 0) {
      const r0 = performance.now();
      await cache.reserve(EVERY);
      reserveMs += performance.now() - r0;
    }
    await gpu.sync();
    const t0 = performance.now();
    posT.write([ctx + s]);
    const l = model.forward(next, { mode: "inference", positions: posT, cache, logits: "last" })!;
    const logits = l.reshape([1, model.config.vocabSize]);
    l.dispose();
    sample(logits, { out: next, log, logColumn: s % EVERY });
    logits.dispose();
    gpu.flush();
    steps.push(performance.now() - t0);
  }
  const dispatches = counters.dispatches / N, submits = counters.submits / N;
  const where = split.done(N);
  await gpu.sync();
  model.dispose();
  const warm = steps.slice(Math.min(8, N >> 2));
  return {
    policy,
    median: median(warm),
    mean: warm.reduce((a, b) => a + b, 0) / warm.length,
    reservePerStep: reserveMs / N,
    dispatches,
    submits,
    ...where,
  };
}

/**
 * Where the host time of the steps goes: the time inside `gpu.dispatch` (bind-group lookup,
 * uniform write, the WebGPU calls), inside `gpu.flush` (finish + submit), and how many bind
 * groups and buffers WebGPU had to create (wrappers installed for the timed steps only).
 */
function instrument() {
  const dispatch = gpu.dispatch, flush = gpu.flush;
  const dev = gpu.device;
  const createBindGroup = dev.createBindGroup, createBuffer = dev.createBuffer;
  let dispatchMs = 0, flushMs = 0, groups = 0, buffers = 0;
  gpu.dispatch = function (...args: Parameters<typeof dispatch>) {
    const t = performance.now();
    dispatch.apply(this, args);
    dispatchMs += performance.now() - t;
  };
  gpu.flush = function () {
    const t = performance.now();
    flush.apply(this);
    flushMs += performance.now() - t;
  };
  dev.createBindGroup = function (d: GPUBindGroupDescriptor) {
    groups++;
    return createBindGroup.call(this, d);
  };
  dev.createBuffer = function (d: GPUBufferDescriptor) {
    buffers++;
    return createBuffer.call(this, d);
  };
  return {
    done(steps: number) {
      gpu.dispatch = dispatch;
      gpu.flush = flush;
      dev.createBindGroup = createBindGroup;
      dev.createBuffer = createBuffer;
      return {
        dispatchMs: dispatchMs / steps,
        flushMs: flushMs / steps,
        bindGroups: groups / steps,
        buffers: buffers / steps,
      };
    },
  };
}

console.log(`device: ${gpu.description}; ctx ${ctx}, ${N} tokens, CR ${CR}, ${dtype}`);
for (const p of policies) {
  const r = await run(p);
  console.log(
    `${r.policy.padEnd(5)} host ms/step: median ${fmt(r.median, 3)}, mean ${fmt(r.mean, 3)}; ` +
      `reserve ms/step ${fmt(r.reservePerStep, 3)}; dispatches/step ${fmt(r.dispatches)}, ` +
      `submits/step ${fmt(r.submits, 2)}\n` +
      `      per step: ${fmt(r.dispatchMs, 3)} ms in gpu.dispatch, ${fmt(r.flushMs, 3)} ms in ` +
      `gpu.flush (finish + submit), the rest in the ops' own JS; ${fmt(r.bindGroups, 1)} bind ` +
      `groups and ${fmt(r.buffers, 1)} buffers created`,
  );
}
