/**
 * End-to-end decode benchmark (bench sections d and e): a random model of the Qwen3-0.6B
 * geometry (28 layers, hidden 1024, 16/8 heads × 128, MLP 3072, vocab 151936; seeded random
 * weights, nothing downloaded) prefills a `ctx`-token prompt and decodes `--tokens` tokens, B = 1,
 * with the dense cache and with the DMS cache at a forced compression ratio. Reports decode
 * tokens/s (wall clock after the first readback chunk, readbacks included), prefill time, and
 * per generated token: dispatches, queue submits and readbacks (counted by wrapping this Gpu
 * instance, `countGpu` in bench/_common.ts), plus the summed GPU kernel time of one decode step
 * (timestamp queries). The PyTorch twin (bench/torch_generate.py: transformers' Qwen3 modules,
 * the same geometry, a static cache, eager and CUDA-graph decode) runs in the same invocation
 * when `python3` has torch with CUDA.
 *
 * Forcing a CR (a documented benchmark knob, not a model code path): the config's decision-logit
 * scale 0 and offset −10 (`dms_alpha_scale`, `dms_initial_alpha_offset`) make every decision
 * logit a = 0·x + 10 > 0 (SPEC §1), so every token is marked and leaves the cache W + 1 tokens
 * later (SPEC §2, §5.2); with W = ctx/CR − 1 each page holds ctx/CR entries when decode starts,
 * so decode attention reads 1/CR of the dense cache's entries (the measured CR is printed).
 *
 * Usage: `deno run -A bench/generate.ts [--contexts 2048,32768] [--tokens 256] [--cr 8]
 * [--readback-every 32] [--replay both|on|off] [--overlap 8] [--no-torch] [--quick]
 * [--legacy-gemv] [--combine fused|dispatch] [--decode-max-keys N] [--decode-workgroups N]
 * [--decode-threads N] [--decode-min-keys N] [--variants "a;b" [--rounds 3]] [--json FILE]`.
 * `--variants` (bench/_variants.ts, e.g. `"default;minKeys=128"`): an A/B of decode-attention
 * defaults in one process, the variants alternating round by round on one model per context and
 * cache (tok/s by round and the median; no PyTorch twin, no profile). `--decode-max-keys` /
 * `--decode-workgroups` / `--decode-threads` / `--decode-min-keys`: `flashDecodeDefaults.maxKeys` /
 * `.workgroups` / `.threads` / `.minKeys` (decode attention's split maximum, workgroup target,
 * threads a workgroup and split minimum). `--combine`: how decode attention
 * merges its splits (`flashDecodeDefaults.combine` in src/cache/paged_decode_plan.ts; default by the
 * split count). `--legacy-gemv`: the LM head on `gemv` (`matmulAuto.wideGemv`
 * off), the route before `gemv16wide`. `--overlap`: `GenerateOptions.readbackOverlap` (decode steps encoded while a
 * chunk's readback waits; the bench passes its own caches, for which generate's default is 0).
 * `--replay both` (default) times generation with replayed decode steps (`GenerateOptions.replay`,
 * the tok/s column) and again with every step encoded by the ops (tok/s encoded), each with a
 * fresh cache after its own prefill. On a CPU adapter (lavapipe) or
 * with `--quick`: 2 layers, hidden 128, 4/2 heads × 32, vocab 1000, contexts 256,1024, 96 tokens.
 *
 * @module
 */

import { flashDecodeDefaults } from "../src/cache/paged_decode_plan.ts";
import { createCacheFor, generate } from "../src/generate.ts";
import { getGpu } from "../src/gpu/device.ts";
import { parseConfig } from "../src/model/config.ts";
import { createModel, type Model } from "../src/model/model.ts";
import { sample } from "../src/ops/sample.ts";
import { matmulAuto } from "../src/ops/matmul.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import type { KernelTime } from "../src/gpu/profiling.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";
import { scriptArgs } from "../src/cli/script_args.ts";
import { applyVariant, parseVariants, type Variant } from "./_variants.ts";
import { decodeSpan } from "./_decode_span.ts";
import {
  byEntryPoint,
  countGpu,
  fmt,
  isCpuAdapter,
  markdownTable,
  median,
  runPython,
  torchCuda,
} from "./_common.ts";

const USAGE = `usage: deno run -A bench/generate.ts [flags]

  --contexts LIST          prompt tokens, comma-separated (default 2048,32768;
                           --quick / CPU adapter 256,1024)
  --tokens N               tokens decoded (default 256; --quick / CPU adapter 96)
  --cr X                   forced compression ratio of the DMS cache, >= 1 (default 8)
  --readback-every N       tokens a readback chunk (GenerateOptions.readbackEvery, default 32)
  --replay both|on|off     decode steps replayed from traces (on), encoded by the ops (off) or
                           both timed, each after its own prefill (default both)
  --overlap N              decode steps encoded while a readback waits (readbackOverlap, default 8)
  --dtype f16|f32          model and cache dtype (default f16 where the adapter has shader-f16)
  --no-torch               skip the PyTorch twin (transformers, eager and CUDA graph)
  --quick                  2 layers, hidden 128 and the small sizes above (always on a CPU adapter)
  --legacy-gemv            the LM head on gemv (matmulAuto.wideGemv off), the route before
                           gemv16wide
  --combine fused|dispatch how decode attention merges its splits (flashDecodeDefaults.combine;
                           default by the split count)
  --decode-max-keys N      flashDecodeDefaults.maxKeys, a power of two: keys a split at most
                           (default: by shape)
  --decode-workgroups N    flashDecodeDefaults.workgroups: workgroups planned (default: by shape)
  --decode-threads N       flashDecodeDefaults.threads: 64, 128, 256 or 512 (default 128)
  --decode-min-keys N      flashDecodeDefaults.minKeys: least keys a split (default 64 at G <= 2,
                           else 128)
  --variants "A;B;..."     an A/B of decode-attention defaults in one process (bench/_variants.ts,
                           e.g. "default;minKeys=128"), alternating round by round
  --rounds N               rounds of --variants (default 3)
  --json FILE              write the geometry and the rows (or the variants' rounds) as JSON
  -h, --help               this text`;

const args = scriptArgs("generate", USAGE, {
  contexts: { type: "string" },
  tokens: { type: "string" },
  cr: { type: "string" },
  "readback-every": { type: "string" },
  dtype: { type: "string" },
  "no-torch": { type: "boolean" },
  replay: { type: "string" },
  combine: { type: "string" },
  "decode-max-keys": { type: "string" },
  "decode-workgroups": { type: "string" },
  "decode-threads": { type: "string" },
  "decode-min-keys": { type: "string" },
  variants: { type: "string" },
  rounds: { type: "string" },
  overlap: { type: "string" },
  quick: { type: "boolean" },
  "legacy-gemv": { type: "boolean" },
  json: { type: "string" },
});
// Read (and checked) before the GPU opens; empty lists and undefined: the adapter's defaults.
const contextsArg = args.ints("contexts", [], 1);
const tokensArg = args.intOpt("tokens", 1);
const CR = args.num("cr", 8, 1);
const every = args.int("readback-every", 32, 1);
const dtypeArg = args.oneOf("dtype", ["f16", "f32"] as const);
const replayMode = args.oneOf("replay", ["both", "on", "off"] as const, "both");
const overlap = args.int("overlap", 8);
const rounds = args.int("rounds", 3, 1);
let variants: Variant[] | undefined;
try {
  const spec = args.str("variants");
  variants = spec === undefined ? undefined : parseVariants(spec);
} catch (e) {
  args.fail((e as Error).message);
}
const json = args.str("json");
// Decode attention's defaults (src/cache/paged_decode_plan.ts), checked as its plan checks them.
const combine = args.oneOf("combine", ["fused", "dispatch"] as const);
if (combine !== undefined) flashDecodeDefaults.combine = combine;
const maxKeys = args.intOpt("decode-max-keys", 1);
if (maxKeys !== undefined && !Number.isInteger(Math.log2(maxKeys))) {
  args.fail(`--decode-max-keys must be a power of two, got "${args.str("decode-max-keys")}"`);
}
const threads = args.intOpt("decode-threads", 1);
if (threads !== undefined && ![64, 128, 256, 512].includes(threads)) {
  args.fail(
    `--decode-threads must be one of 64, 128, 256, 512, got "${args.str("decode-threads")}"`,
  );
}
if (maxKeys !== undefined) flashDecodeDefaults.maxKeys = maxKeys;
if (threads !== undefined) flashDecodeDefaults.threads = threads;
const minKeys = args.intOpt("decode-min-keys", 1);
if (minKeys !== undefined) flashDecodeDefaults.minKeys = minKeys;
const workgroups = args.intOpt("decode-workgroups", 1);
if (workgroups !== undefined) flashDecodeDefaults.workgroups = workgroups;
if (args.flag("legacy-gemv")) {
  // The GEMV choices before 2026-12-05, for an A/B in one lease: the LM head on `gemv`.
  matmulAuto.wideGemv = false;
}
const gpu = await getGpu();
const cpu = isCpuAdapter(gpu);
const small = args.flag("quick") || cpu;
const geometry = small
  ? { layers: 2, hidden: 128, heads: 4, kvHeads: 2, headDim: 32, inter: 256, vocab: 1000 }
  : { layers: 28, hidden: 1024, heads: 16, kvHeads: 8, headDim: 128, inter: 3072, vocab: 151936 };
const contexts = contextsArg.length ? contextsArg : small ? [256, 1024] : [2048, 32768];
const N = tokensArg ?? (small ? 96 : 256);
const dtype = dtypeArg ?? (gpu.hasF16 ? "f16" : "f32");
const counters = countGpu(gpu);

/** One result row. */
interface Row {
  ctx: number;
  cache: string;
  cr: number;
  prefillMs: number;
  tokPerS: number;
  /** Decode tokens/s with every step encoded by the ops (`replay: false`); `--replay both`. */
  tokPerSEncoded?: number;
  /** Decode steps replayed from traces per generated token (`replay: true`). */
  replayedPerToken?: number;
  stepGpuMs: number;
  dispatchesPerToken: number;
  submitsPerToken: number;
  readbacksPerToken: number;
  torchEagerTokPerS?: number;
  torchGraphTokPerS?: number;
  /** GPU span per step of {@linkcode span}'s K steps (shared passes, barriers included). */
  spanGpuMsPerStep?: number;
  /** Host time per step to encode and submit those K steps. */
  spanHostMsPerStep?: number;
  /** One decode step's GPU time per kernel (timestamp queries), largest first. */
  stepKernels?: { kernel: string; ms: number; count: number }[];
}

function config(ctx: number, policy: "dense" | "dms") {
  const W = policy === "dms" ? Math.max(2, Math.round(ctx / CR) - 1) : 512;
  const g = geometry;
  return parseConfig({
    model_type: "qwen3",
    num_hidden_layers: g.layers,
    hidden_size: g.hidden,
    num_attention_heads: g.heads,
    num_key_value_heads: g.kvHeads,
    head_dim: g.headDim,
    intermediate_size: g.inter,
    vocab_size: g.vocab,
    max_position_embeddings: Math.max(4096, 2 * (ctx + N)),
    rope_theta: 1e6,
    tie_word_embeddings: true,
    dms_window_size: W,
    dms_paged_attention_block_size: Math.min(256, W - 1),
    // The forced-CR knob (module doc): every decision logit is +10, every token marked.
    ...(policy === "dms" ? { dms_alpha_scale: 0, dms_initial_alpha_offset: -10 } : {}),
  }, "bench config");
}

async function run(ctx: number, policy: "dense" | "dms"): Promise<Row> {
  const cfg = config(ctx, policy);
  const model = createModel(gpu, cfg, { seed: 1, dtype });
  try {
    return await runOn(model, ctx, policy);
  } finally {
    model.dispose();
  }
}

async function runOn(model: Model, ctx: number, policy: "dense" | "dms"): Promise<Row> {
  const replay = replayMode !== "off";
  const row = await decode(model, ctx, policy, replay, true);
  if (replayMode === "both") {
    row.tokPerSEncoded = (await decode(model, ctx, policy, false, false)).tokPerS;
  }
  return row;
}

async function decode(
  model: Model,
  ctx: number,
  policy: "dense" | "dms",
  replay: boolean,
  profile: boolean,
): Promise<Row> {
  const cfg = model.config;
  const prompt = Array.from({ length: ctx }, (_, i) => (i * 7919) % cfg.vocabSize);
  using cache = createCacheFor(model, 1, policy);
  await gpu.sync();
  const t0 = performance.now();
  let tFirst = 0, count = 0;
  const gen = generate(model, [prompt], {
    maxTokens: N,
    cache,
    eosTokenIds: [],
    readbackEvery: every,
    prefillChunk: 4096,
    replay,
    readbackOverlap: overlap,
  });
  let stats;
  while (true) {
    const r = await gen.next();
    if (r.done) {
      stats = r.value.stats;
      break;
    }
    count += r.value.tokens[0].length;
    if (!tFirst) {
      tFirst = performance.now();
      counters.reset();
    }
  }
  const t1 = performance.now();
  const decoded = count - Math.min(every, count);
  const per = (x: number) => (decoded > 0 ? x / decoded : NaN);
  const row: Row = {
    ctx,
    cache: policy === "dense" ? "dense" : `dms CR=${CR} (forced)`,
    cr: stats.compressionRatioDenseOverKept,
    prefillMs: tFirst - t0,
    tokPerS: decoded > 0 ? decoded / ((t1 - tFirst) / 1000) : NaN,
    stepGpuMs: NaN,
    dispatchesPerToken: per(counters.dispatches + counters.replayedDispatches),
    submitsPerToken: per(counters.submits),
    readbacksPerToken: per(counters.readbacks),
    replayedPerToken: per(counters.replays),
  };
  // One decode step's kernels (timestamp queries), after the run, at the cache's length.
  if (profile && gpu.hasTimestamps) {
    using ids = Tensor.fromArray(gpu, [1], [1, 1], "i32");
    using pos = Tensor.fromArray(gpu, [ctx + N], [1, 1], "i32");
    await cache.reserve(4);
    const perKernel = new Map<string, KernelTime>();
    row.stepGpuMs = await gpu.profile(
      () => {
        const l = model.forward(ids, { mode: "inference", positions: pos, cache, logits: "last" })!;
        const logits = l.reshape([1, cfg.vocabSize]);
        l.dispose();
        sample(logits, { out: ids });
        logits.dispose();
      },
      2048,
      perKernel,
    );
    row.stepKernels = byEntryPoint(perKernel);
    Object.assign(row, await decodeSpan(model, cache, ctx + N + 8));
  }
  return row;
}

/**
 * `--variants`: per context and cache, one model, then `--rounds` rounds in each of which every
 * variant generates once (replayed steps, no profile), in order; prints each variant's tok/s per
 * round and their median (`--json`: the same).
 */
async function variantRuns(variants: Variant[], rounds: number): Promise<void> {
  const base = { ...flashDecodeDefaults };
  const body: string[][] = [];
  const results: { ctx: number; cache: string; variant: string; tokPerS: number[] }[] = [];
  for (const ctx of contexts) {
    for (const policy of ["dense", "dms"] as const) {
      const model = createModel(gpu, config(ctx, policy), { seed: 1, dtype });
      try {
        const tok = variants.map(() => [] as number[]);
        for (let r = 0; r < rounds; r++) {
          for (const [i, v] of variants.entries()) {
            applyVariant(v, base);
            tok[i].push((await decode(model, ctx, policy, replayMode !== "off", false)).tokPerS);
          }
        }
        applyVariant({ label: "-", defaults: {} }, base);
        for (const [i, v] of variants.entries()) {
          const cache = policy === "dense" ? "dense" : `dms CR=${CR} (forced)`;
          results.push({ ctx, cache, variant: v.label, tokPerS: tok[i] });
          body.push([
            `${ctx}`,
            cache,
            v.label,
            tok[i].map((x) => fmt(x)).join(" / "),
            fmt(median(tok[i])),
          ]);
        }
      } finally {
        model.dispose();
      }
    }
  }
  console.log(markdownTable(["ctx", "cache", "variant", "tok/s by round", "median"], body, 3));
  if (json) {
    const doc = { device: gpu.description, geometry, dtype, tokens: N, cr: CR, rounds, results };
    await writeTextFileAtomic(json, JSON.stringify(doc, null, 2) + "\n");
    console.log(`wrote ${json}`);
  }
}

const g = geometry;
console.log(
  `device: ${gpu.description}; model: ${g.layers} layers, hidden ${g.hidden}, ${g.heads}/` +
    `${g.kvHeads} heads × ${g.headDim}, MLP ${g.inter}, vocab ${g.vocab}, ${dtype}; B = 1, ` +
    `${N} tokens, readback every ${every}`,
);
if (variants !== undefined) {
  await variantRuns(variants, rounds);
  Deno.exit(0);
}
const rows: Row[] = [];
for (const ctx of contexts) {
  for (const policy of ["dense", "dms"] as const) {
    const r = await run(ctx, policy);
    rows.push(r);
    console.error(`  ctx ${ctx} ${r.cache}: ${fmt(r.tokPerS)} tok/s`);
  }
}
let torch: Record<string, unknown> | undefined;
if (!args.flag("no-torch") && await torchCuda()) {
  try {
    torch = await runPython("./torch_generate.py", {
      ...geometry,
      contexts,
      tokens: N,
      dtype,
    });
    const t = torch.results as Record<string, { eager?: number; graph?: number }>;
    for (const r of rows.filter((x) => x.cache === "dense")) {
      r.torchEagerTokPerS = t?.[`${r.ctx}`]?.eager;
      r.torchGraphTokPerS = t?.[`${r.ctx}`]?.graph;
    }
    console.log(`PyTorch ${torch.torch}, transformers ${torch.transformers} on ${torch.device}`);
    for (const [k, e] of Object.entries(torch.errors ?? {})) console.log(`  torch ${k}: ${e}`);
  } catch (e) {
    console.log(`PyTorch twin skipped: ${(e as Error).message}`);
  }
}
const dense = (r: Row) => rows.find((x) => x.ctx === r.ctx && x.cache === "dense")!;
const body = rows.map((r) => [
  `${r.ctx}`,
  r.cache,
  fmt(r.cr, 2),
  ...(cpu ? [] : [fmt(r.prefillMs), fmt(r.tokPerS), fmt(r.tokPerSEncoded), fmt(r.stepGpuMs, 2)]),
  fmt(dense(r).tokPerS ? r.tokPerS / dense(r).tokPerS : NaN, 2),
  fmt(r.replayedPerToken, 2),
  fmt(r.dispatchesPerToken),
  fmt(r.submitsPerToken, 2),
  fmt(r.readbacksPerToken, 3),
  ...(cpu ? [] : [fmt(r.torchEagerTokPerS), fmt(r.torchGraphTokPerS)]),
  fmt(r.torchGraphTokPerS ? r.tokPerS / r.torchGraphTokPerS : NaN, 2),
]);
const head = [
  "ctx",
  "cache",
  "CR",
  ...(cpu ? [] : ["prefill ms", "tok/s", "tok/s encoded", "step GPU ms"]),
  "this/dense",
  "replayed/tok",
  "dispatches/tok",
  "submits/tok",
  "readbacks/tok",
  ...(cpu ? [] : ["torch eager tok/s", "torch graph tok/s"]),
  "ours/graph",
];
console.log(markdownTable(head, body, 2));
// Host or GPU bound: the GPU's span per step (barriers and gaps included) against the host's
// encoding time per step, over the same 32 steps (ratios only on a CPU adapter).
for (const r of rows.filter((x) => x.spanGpuMsPerStep !== undefined)) {
  const g = r.spanGpuMsPerStep!, h = r.spanHostMsPerStep!;
  console.log(
    cpu
      ? `span, ctx ${r.ctx} ${r.cache}: GPU span / host encoding ${fmt(g / h, 2)}`
      : `span, ctx ${r.ctx} ${r.cache}: GPU ${fmt(g, 2)} ms/step (kernels alone ${
        fmt(r.stepGpuMs, 2)
      }), host ${fmt(h, 2)} ms/step, wall ${fmt(1000 / r.tokPerS, 2)} ms/token`,
  );
}
// Where one decode step's GPU time goes: the kernels that take most of it, per row.
for (const r of rows.filter((x) => x.stepKernels?.length)) {
  const top = r.stepKernels!.slice(0, 8);
  console.log(
    `\nstep GPU time by kernel, ctx ${r.ctx} ${r.cache} (${fmt(r.stepGpuMs, 2)} ms, ` +
      `${r.stepKernels!.reduce((n, k) => n + k.count, 0)} dispatches):`,
  );
  console.log(markdownTable(
    ["kernel", "dispatches", "ms", "share", "µs per dispatch"],
    top.map((k) => [
      k.kernel,
      `${k.count}`,
      fmt(k.ms, 3),
      `${fmt((100 * k.ms) / r.stepGpuMs, 1)} %`,
      fmt((1000 * k.ms) / k.count, 1),
    ]),
    1,
  ));
}
if (json) {
  const doc = { device: gpu.description, cpu, geometry, dtype, tokens: N, cr: CR, rows, torch };
  await writeTextFileAtomic(json, JSON.stringify(doc, null, 2) + "\n");
  console.log(`wrote ${json}`);
}
