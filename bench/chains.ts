/**
 * Parallel chains (bench section f, the hyper-scaling regime): B sequences sampled from one
 * prompt of `ctx` tokens (prefilled once into a one-sequence cache, all but its last token, then
 * copied into the B sequences with `PagedKvCache.copySequenceFrom`; the chains start from the
 * last prompt token and sample with temperature 1 and a seed so they diverge), B = 8–64, dense vs DMS at a forced compression ratio, the Qwen3-0.6B
 * geometry with seeded random weights. Reports decode tokens/s summed over the chains, the peak
 * KV bytes (K and V of the live entries at the peak, `KvCacheStats.peakBytes`) and per chain,
 * then the largest batch whose peak KV fits a fixed KV memory budget (`--budget-gb`) for each
 * cache, and the throughput at that batch (measured when it is in the batch list, else at the
 * largest measured batch that fits, marked "≤").
 *
 * Forced CR: the decision-logit knob of bench/generate.ts (scale 0, offset −10: every token
 * marked) with W = ctx/CR − 1, so each page holds ctx/CR entries while decoding.
 *
 * Usage: `deno run -A bench/chains.ts [--contexts 8192,32768] [--batches 8,16,32,64]
 * [--tokens 64] [--cr 8] [--caches dense,dms] [--budget-gb 16] [--max-seconds 150] [--profile]
 * [--no-replay] [--overlap 8] [--quick] [--json FILE]`. `--no-replay`: every decode step encoded
 * by the ops (`GenerateOptions.replay` false); `--overlap`: `GenerateOptions.readbackOverlap`
 * (decode steps encoded while a readback waits; the bench passes its own caches, for which
 * generate's default is 0). `--profile`: after each row, one more decode step of the B chains
 * with timestamp queries, its GPU time by kernel (where the step's time goes). Rows
 * still to run when `--max-seconds` is spent are listed as skipped. CPU adapter / `--quick`:
 * 2 layers, hidden 128, contexts 128, batches 2,4, 48 tokens, budget 1 MB.
 *
 * @module
 */

import { createCacheFor, generate } from "../src/generate.ts";
import { getGpu } from "../src/gpu/device.ts";
import { parseConfig } from "../src/model/config.ts";
import { createModel, type Model } from "../src/model/model.ts";
import { PagedKvCache } from "../src/cache/paged_kv_cache.ts";
import type { KvCache } from "../src/cache/kv_cache.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import { sample } from "../src/ops/sample.ts";
import type { KernelTime } from "../src/gpu/profiling.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";
import { scriptArgs } from "../src/cli/script_args.ts";
import { byEntryPoint, fmt, isCpuAdapter, markdownTable } from "./_common.ts";

const USAGE = `usage: deno run -A bench/chains.ts [flags]

  --contexts LIST     prompt tokens, comma-separated (default 8192,32768; --quick / CPU adapter 128)
  --batches LIST      chains B, comma-separated (default 8,16,32,64; --quick / CPU adapter 2,4)
  --tokens N          tokens each chain decodes (default 64; --quick / CPU adapter 48)
  --cr X              forced compression ratio of the DMS cache, >= 1 (default 8)
  --caches LIST       dense, dms (default dense,dms)
  --budget-gb X       the KV memory budget of the largest-batch table, GB (default 16;
                      --quick / CPU adapter 0.001)
  --max-seconds X     rows not started within X seconds are listed as skipped (default 150)
  --dtype f16|f32     model and cache dtype (default f16 where the adapter has shader-f16, else f32)
  --profile           after each row, one decode step with timestamp queries, its time by kernel
  --no-replay         encode every decode step by the ops (GenerateOptions.replay false)
  --overlap N         decode steps encoded while a readback waits (readbackOverlap, default 8)
  --quick             2 layers, hidden 128 and the small sizes above (always on a CPU adapter)
  --json FILE         write the geometry, the rows and the budget table as JSON
  -h, --help          this text`;

const args = scriptArgs("chains", USAGE, {
  contexts: { type: "string" },
  batches: { type: "string" },
  caches: { type: "string" },
  tokens: { type: "string" },
  cr: { type: "string" },
  "budget-gb": { type: "string" },
  "max-seconds": { type: "string" },
  dtype: { type: "string" },
  profile: { type: "boolean" },
  "no-replay": { type: "boolean" },
  overlap: { type: "string" },
  quick: { type: "boolean" },
  json: { type: "string" },
});
// Read (and checked) before the GPU opens; empty lists and undefined: the adapter's defaults.
const contextsArg = args.ints("contexts", [], 1);
const batchesArg = args.ints("batches", [], 1);
const tokensArg = args.intOpt("tokens", 1);
const caches = args.oneOfList("caches", ["dense", "dms"] as const, ["dense", "dms"]);
const CR = args.num("cr", 8, 1);
const budgetArg = args.numOpt("budget-gb");
const maxSeconds = args.num("max-seconds", 150);
const dtypeArg = args.oneOf("dtype", ["f16", "f32"] as const);
const overlap = args.int("overlap", 8);
const json = args.str("json");

const gpu = await getGpu();
const cpu = isCpuAdapter(gpu);
const small = args.flag("quick") || cpu;
const g = small
  ? { layers: 2, hidden: 128, heads: 4, kvHeads: 2, headDim: 32, inter: 256, vocab: 1000 }
  : { layers: 28, hidden: 1024, heads: 16, kvHeads: 8, headDim: 128, inter: 3072, vocab: 151936 };
const contexts = contextsArg.length ? contextsArg : small ? [128] : [8192, 32768];
const batches = batchesArg.length ? batchesArg : small ? [2, 4] : [8, 16, 32, 64];
const N = tokensArg ?? (small ? 48 : 64);
const budget = (budgetArg ?? (small ? 0.001 : 16)) * 1e9;
const deadline = performance.now() + maxSeconds * 1000;
const dtype = dtypeArg ?? (gpu.hasF16 ? "f16" : "f32");
const every = Math.min(small ? 16 : 32, N);

/** One measured (or skipped) configuration. */
interface Row {
  ctx: number;
  cache: "dense" | "dms";
  B: number;
  tokPerS: number;
  peakKvBytes: number;
  cr: number;
  /** Copying the prefilled prompt into the B sequences (`copySequenceFrom`), ms. */
  copyMs?: number;
  /** `--profile`: one decode step's GPU time (timestamp queries), ms, and its largest kernels. */
  stepGpuMs?: number;
  stepKernels?: { kernel: string; ms: number; count: number }[];
  skipped?: string;
}

function modelFor(ctx: number, cache: "dense" | "dms"): Model {
  const W = cache === "dms" ? Math.max(2, Math.round(ctx / CR) - 1) : 512;
  const cfg = parseConfig({
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
    ...(cache === "dms" ? { dms_alpha_scale: 0, dms_initial_alpha_offset: -10 } : {}),
  }, "chains config");
  return createModel(gpu, cfg, { seed: 1, dtype });
}

function paged(c: KvCache): PagedKvCache {
  if (!(c instanceof PagedKvCache)) throw new TypeError("chains: expected a paged cache");
  return c;
}

/** Prefills all but the last prompt token into a one-sequence cache (chunks of 4096). */
async function prefillOne(model: Model, cache: "dense" | "dms", prompt: number[]) {
  const one = paged(createCacheFor(model, 1, cache));
  const n = prompt.length - 1;
  for (let s = 0; s < n; s += 4096) {
    const e = Math.min(n, s + 4096);
    await one.reserve(e - s);
    using ids = Tensor.fromArray(gpu, prompt.slice(s, e), [1, e - s], "i32");
    using pos = Tensor.fromArray(
      gpu,
      Array.from({ length: e - s }, (_, i) => s + i),
      [1, e - s],
      "i32",
    );
    model.forward(ids, { mode: "inference", positions: pos, cache: one, logits: "none" });
  }
  await gpu.sync();
  return one;
}

/** B chains from the prefilled prompt: copy it into B sequences, then decode N tokens each. */
async function run(
  ctx: number,
  cache: "dense" | "dms",
  B: number,
  model: Model,
  one: PagedKvCache,
  last: number,
): Promise<Row> {
  using kv = paged(createCacheFor(model, B, cache));
  const t0 = performance.now();
  await kv.copySequenceFrom(one);
  await gpu.sync();
  const copyMs = performance.now() - t0;
  const gen = generate(model, Array.from({ length: B }, () => [last]), {
    maxTokens: N,
    cache: kv,
    eosTokenIds: [],
    readbackEvery: every,
    sampling: { temperature: 1, seed: 7 },
    replay: !args.flag("no-replay"),
    readbackOverlap: overlap,
  });
  let tFirst = 0, count = 0, stats;
  while (true) {
    const r = await gen.next();
    if (r.done) {
      stats = r.value.stats;
      break;
    }
    count += r.value.tokens.reduce((a, t) => a + t.length, 0);
    if (!tFirst) tFirst = performance.now();
  }
  const decoded = count - B * Math.min(every, N);
  const row: Row = {
    ctx,
    cache,
    B,
    tokPerS: decoded > 0 ? decoded / ((performance.now() - tFirst) / 1000) : NaN,
    peakKvBytes: stats.peakBytes,
    cr: stats.compressionRatioDenseOverKept,
    copyMs,
  };
  if (args.flag("profile") && gpu.hasTimestamps) {
    Object.assign(row, await profileStep(model, kv, B, ctx));
  }
  return row;
}

/** One decode step of the B chains under timestamp queries: GPU ms and the time by kernel. */
async function profileStep(model: Model, kv: PagedKvCache, B: number, ctx: number) {
  const V = model.config.vocabSize;
  await kv.reserve(1);
  using ids = Tensor.zeros(gpu, [B, 1], "i32");
  using pos = Tensor.fromArray(gpu, Array.from({ length: B }, () => ctx + N), [B, 1], "i32");
  const perKernel = new Map<string, KernelTime>();
  const stepGpuMs = await gpu.profile(
    () => {
      const l = model.forward(ids, {
        mode: "inference",
        positions: pos,
        cache: kv,
        logits: "last",
      })!;
      const logits = l.reshape([B, V]);
      l.dispose();
      sample(logits, { out: ids.reshape([B]) });
      logits.dispose();
    },
    2048,
    perKernel,
  );
  const stepKernels = byEntryPoint(perKernel).slice(0, 8);
  return { stepGpuMs, stepKernels };
}

console.log(
  `device: ${gpu.description}; ${g.layers} layers, hidden ${g.hidden}, ${g.heads}/${g.kvHeads} ` +
    `heads × ${g.headDim}, ${dtype}; ${N} tokens per chain; KV budget ${budget / 1e9} GB`,
);
const rows: Row[] = [];
const prefillMs: { ctx: number; cache: string; ms: number }[] = [];
for (const ctx of contexts) {
  for (const cache of caches) {
    if (performance.now() > deadline) {
      for (const B of batches) {
        rows.push({ ctx, cache, B, tokPerS: NaN, peakKvBytes: NaN, cr: NaN, skipped: "time" });
      }
      continue;
    }
    const model = modelFor(ctx, cache);
    const prompt = Array.from({ length: ctx }, (_, i) => (i * 7919) % model.config.vocabSize);
    const tp = performance.now();
    const one = await prefillOne(model, cache, prompt);
    prefillMs.push({ ctx, cache, ms: performance.now() - tp });
    try {
      for (const B of batches) {
        if (performance.now() > deadline) {
          rows.push({ ctx, cache, B, tokPerS: NaN, peakKvBytes: NaN, cr: NaN, skipped: "time" });
          continue;
        }
        try {
          const r = await run(ctx, cache, B, model, one, prompt[ctx - 1]);
          rows.push(r);
          console.error(`  ctx ${ctx} ${cache} B=${B}: ${fmt(r.tokPerS)} tok/s`);
        } catch (e) {
          const msg = (e as Error).message.split("\n")[0].slice(0, 80);
          rows.push({ ctx, cache, B, tokPerS: NaN, peakKvBytes: NaN, cr: NaN, skipped: msg });
        }
      }
    } finally {
      one.dispose();
      model.dispose();
    }
  }
}
for (const r of ok0()) {
  console.log(
    `\nstep GPU time, ctx ${r.ctx} ${r.cache} B=${r.B}: ${fmt(r.stepGpuMs!)} ms\n` +
      markdownTable(
        ["kernel", "dispatches", "ms"],
        r.stepKernels!.map((k) => [k.kernel, `${k.count}`, fmt(k.ms)]),
      ),
  );
}
function ok0(): Row[] {
  return rows.filter((r) => r.stepKernels?.length);
}
for (const p of prefillMs) {
  console.log(`prefill once, ctx ${p.ctx} ${p.cache}: ${cpu ? "-" : `${fmt(p.ms / 1000, 1)} s`}`);
}
const ok = rows.filter((r) => !r.skipped);
console.log(markdownTable(
  ["ctx", "cache", "B", "CR", "tok/s", "peak KV MB", "KV MB / chain", "note"],
  rows.map((r) => [
    `${r.ctx}`,
    r.cache,
    `${r.B}`,
    fmt(r.cr, 2),
    cpu ? "-" : fmt(r.tokPerS),
    fmt(r.peakKvBytes / 1e6),
    fmt(r.peakKvBytes / r.B / 1e6, 2),
    r.skipped ? `skipped: ${r.skipped}` : "",
  ]),
  2,
));
/** At the budget: the largest batch whose peak fits, and the throughput measured nearest it. */
const atBudget = contexts.flatMap((ctx) =>
  (["dense", "dms"] as const).map((cache) => {
    const mine = ok.filter((r) => r.ctx === ctx && r.cache === cache);
    if (!mine.length) return { ctx, cache, bMax: NaN, tokPerS: NaN, measuredAt: NaN };
    const perChain = Math.max(...mine.map((r) => r.peakKvBytes / r.B));
    const bMax = Math.floor(budget / perChain);
    const fit = mine.filter((r) => r.B <= bMax).sort((a, b) => b.B - a.B)[0];
    return { ctx, cache, bMax, tokPerS: fit?.tokPerS ?? NaN, measuredAt: fit?.B ?? NaN };
  })
);
console.log(markdownTable(
  ["ctx", "cache", `largest B in ${budget / 1e9} GB`, "measured at B", "tok/s", "DMS/dense"],
  atBudget.map((r) => {
    const d = atBudget.find((x) => x.ctx === r.ctx && x.cache === "dense")!;
    return [
      `${r.ctx}`,
      r.cache,
      `${r.bMax}`,
      (r.measuredAt < r.bMax ? "≤ " : "") + fmt(r.measuredAt, 0),
      cpu ? "-" : fmt(r.tokPerS),
      r.cache === "dms" ? fmt(r.tokPerS / d.tokPerS, 2) : "",
    ];
  }),
  2,
));
if (json) {
  const doc = {
    device: gpu.description,
    cpu,
    geometry: g,
    dtype,
    tokens: N,
    cr: CR,
    budget,
    rows,
    prefillMs,
    atBudget,
  };
  await writeTextFileAtomic(json, JSON.stringify(doc, null, 2) + "\n");
  console.log(`wrote ${json}`);
}
