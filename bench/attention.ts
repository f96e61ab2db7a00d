/**
 * Decode attention benchmark over the paged KV cache: one decode step of one layer
 * (`pagedAttention` as routed: the flash-decoding `decode_online` + `combine` of
 * src/cache/paged_decode.ts; the `kernel` column names what ran) for a dense cache and for DMS
 * caches at forced compression ratios, Qwen3-8B attention heads (Hkv = 8, G = 4, D = 128), in
 * f16 and f32, against PyTorch's SDPA dense decode on a contiguous cache (bench/torch_attention.py,
 * run in the same process tree after our rows when `python3` has torch with CUDA): eager, as one
 * CUDA graph (the GPU's own time), and for each DMS row over a dense cache of that row's live keys
 * a head (what PyTorch takes for the bytes DMS keeps).
 *
 * Each row first validates: the fast kernel's output against the readable `partial` kernel
 * ("tiled") on the same pages (STYLE 11), then times the fast kernel with timestamp queries
 * (median over samples of back-to-back steps, after a warm-up). It reports µs per step and the
 * effective GB/s of the live K+V (live entries · 2 · D · bytes: what one step must read), and
 * the previous fast kernel (v2 `decode` + `merge_split`, `decodeKernel: "split"`) timed the
 * same way beside it on the dense rows and those of the highest forced CR (3 samples): `new/old`
 * is the routed kernel's time over it (`--no-old` skips it).
 *
 * Forcing a compression ratio (a benchmark knob, not a model code path): the cache is filled
 * through its policy and storage (the calls `PagedKvCache.attend` makes for a prefill chunk:
 * `prefillMarks`, `ensure`, `prefillCompact`, `scatterEntries`) with decisions drawn so that a
 * fraction 1 − 1/CR of the tokens is marked (seeded, independent per page and token); the chunk
 * attention a real prefill also computes is skipped (O(ctx²), not what is measured). The
 * measured CR (tokens / live entries) is reported; it stays under the forced one by about the
 * window's W·(1 − 1/CR) entries.
 *
 * Usage: `deno run -A bench/attention.ts [--contexts 4096,32768] [--batches 1,4] [--crs 2,4,8]
 * [--dtypes f16,f32] [--window 512] [--block 256] [--partition-keys N] [--reps N] [--no-torch]
 * [--no-old] [--other] [--quick] [--g 4] [--cold MB] [--json out.json]`. `--g` sets the query
 * heads per KV head (2 for Qwen3-0.6B). `--cold MB` also times each row chained over identical
 * copies of its cache (and PyTorch over copies of its own) that span at least MB megabytes, a
 * step a copy in turn: every row repeats one step over one cache, so a cache smaller than the L2
 * is otherwise timed from the L2, while a decode step streams every other layer between two
 * visits and reads it from memory. `--other` also validates and times the flash
 * kernel under another tuning (src/cache/paged_decode_plan.ts `FlashDecodeTuning`), chosen with
 * `--other-threads N`, `--other-loads J`, `--other-min-keys N`, `--other-max-keys N`,
 * `--other-workgroups N`, `--other-wave N` (workgroups a wave holds: splits fill the last wave),
 * `--other-combine fused|dispatch`, `--other-early` and `--other-heads SH` (SH workgroups share a
 * page's query heads; it must divide `--g`) (a sweep), its
 * samples interleaved
 * with the routed kernel's (A B A B: a drifting clock weighs on both alike): columns `other µs`
 * and `this/other` (a pass a dispatch), `other chained µs` and `chained this/other`, and with
 * `--cold` `other cold µs`. `--partition-keys` fixes the keys per decode split (a tuning sweep; default:
 * chosen from the length bound). Defaults on a CPU adapter (llvmpipe): contexts 256,1024, batches
 * 1,2, window 32, block 32 (well under 2 minutes); otherwise contexts 4096,32768,131072, batches
 * 1,4,16 (`--quick`: 4096,32768 and 1,4), window 512, block 256. Shapes whose K pool exceeds the
 * device's maxStorageBufferBindingSize are listed as skipped.
 *
 * @module
 */

import { getGpu } from "../src/gpu/device.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";
import { decodeKernelFor, pagedAttention } from "../src/cache/paged_attention.ts";
import { pagedDecodeFlash } from "../src/cache/paged_decode.ts";
import { flashDecodePlan } from "../src/cache/paged_decode_plan.ts";
import type { PagedKvCache } from "../src/cache/paged_kv_cache.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import { bytesPer } from "../src/tensor/dtype.ts";
import { scriptArgs } from "../src/cli/script_args.ts";
import { fmt, random } from "./_common.ts";
import { timeChained, timePerPass } from "./_step_timing.ts";
import { filledCache } from "./_attention_cache.ts";
import {
  type Dt,
  key,
  legend,
  liveKeys,
  planText,
  type Row,
  table,
  type TorchJob,
  torchTimes,
} from "./_attention_report.ts";

const [HKV, D] = [8, 128];

const USAGE = `usage: deno run -A bench/attention.ts [flags]

  --contexts LIST        tokens a sequence, comma-separated (default 4096,32768,131072;
                         --quick 4096,32768; CPU adapter 256,1024)
  --batches LIST         sequences B, comma-separated (default 1,4,16; --quick 1,4; CPU adapter 1,2)
  --crs LIST             forced compression ratios of the DMS rows, each >= 1 (default 2,4,8)
  --dtypes LIST          f16, f32 (default f16,f32; f16 only where the adapter has shader-f16)
  --window N             the DMS window W (default 512; CPU adapter 32)
  --block N              entries a cache block (default 256; CPU adapter 32)
  --partition-keys N     keys a decode split, fixed (default: chosen from the length bound)
  --reps N               timed samples a row, the median reported (default 7; CPU adapter 3)
  --g N                  query heads a KV head, 1..8 (default 4, Qwen3-8B; 2: Qwen3-0.6B)
  --quick                the smaller default contexts and batches (always on a CPU adapter)
  --no-old               skip the v2 split kernel (old µs, new/old)
  --no-torch             skip the PyTorch SDPA twin
  --cold MB              also time every row chained over copies of its cache spanning at least
                         MB megabytes, a step a copy in turn (cold µs), and PyTorch likewise (cold
                         graph µs): a cache smaller than the L2 is then read from memory, as in a
                         decode step, instead of from the L2 (e.g. 256: 5x an H100's 50 MB); the
                         copies allocate at most 6 GB a row (fewer copies where pools are large)
  --other                also check and time the flash kernel under the --other-* tuning,
                         interleaved with the routed kernel (other µs, this/other; chained:
                         other chained µs, chained this/other; --cold: other cold µs)
  --other-threads N      its threads a workgroup: 64, 128, 256 or 512 (default: as routed)
  --other-loads J        its loads in flight a lane: 1, 2, 4 or 8 (default: the most that fit)
  --other-min-keys N     its least keys an adaptive split (default 64 at G <= 2, else 128)
  --other-max-keys N     its most keys a split: 1, 2, 4 or 8 times its threads (default: as routed)
  --other-workgroups N   its workgroups planned in all (default: as routed)
  --other-wave N         its workgroups a wave holds, splits fill the last wave (default: as routed)
  --other-combine fused|dispatch  how its splits merge (default: as routed, dispatch)
  --other-early          its threads load their first block from the block table early (EARLY)
  --other-heads SH       its workgroups a page's heads are shared among: 1, 2, 4 or 8, dividing
                         --g (default 1)
  --json FILE            write the device, the sizes and the rows as JSON
  -h, --help             this text`;

const args = scriptArgs("attention", USAGE, {
  contexts: { type: "string" },
  batches: { type: "string" },
  crs: { type: "string" },
  dtypes: { type: "string" },
  window: { type: "string" },
  block: { type: "string" },
  "partition-keys": { type: "string" },
  reps: { type: "string" },
  "no-torch": { type: "boolean" },
  "no-old": { type: "boolean" },
  cold: { type: "string" },
  other: { type: "boolean" },
  "other-threads": { type: "string" },
  "other-loads": { type: "string" },
  "other-min-keys": { type: "string" },
  "other-combine": { type: "string" },
  "other-early": { type: "boolean" },
  "other-max-keys": { type: "string" },
  "other-workgroups": { type: "string" },
  "other-wave": { type: "string" },
  "other-heads": { type: "string" },
  quick: { type: "boolean" },
  g: { type: "string" },
  json: { type: "string" },
});
/** Query heads per KV head: 4 (Qwen3-8B) unless `--g` (2: Qwen3-0.6B). */
const G = args.int("g", 4, 1, 8);
// Read (and checked) before the GPU opens; empty lists and undefined: the adapter's defaults.
const contextsArg = args.ints("contexts", [], 1);
const batchesArg = args.ints("batches", [], 1);
const crs = args.nums("crs", [2, 4, 8], 1);
const dtypesArg = args.oneOfList("dtypes", ["f16", "f32"] as const, ["f16", "f32"]);
const windowArg = args.intOpt("window", 1);
const blockArg = args.intOpt("block", 1);
const partitionKeys = args.intOpt("partition-keys", 1);
const repsArg = args.intOpt("reps", 1);
/** `--cold MB`: bytes the rotated copies of a row's cache span at least (undefined: no cold rows). */
const coldBytes = (() => {
  const mb = args.intOpt("cold", 1, 1 << 20);
  return mb === undefined ? undefined : mb * 1e6;
})();
/** Copies of a cache at most in a cold row. */
const MAX_COPIES = 32;
/**
 * GPU memory the copies of one cold row may allocate in all: each copy allocates its pools for the
 * whole context (a DMS cache too, though it keeps 1/CR of it), so a row whose pools are large
 * takes fewer copies (the `copies` column says how many).
 */
const COLD_ALLOC_BYTES = 6e9;
const otherInt = (name: string, choices?: number[]): number | undefined => {
  const x = args.intOpt(name, 1);
  if (x !== undefined && choices && !choices.includes(x)) {
    args.fail(`--${name} must be one of ${choices.join(", ")}, got "${args.str(name)}"`);
  }
  return x;
};
const tuning = {
  threads: otherInt("other-threads", [64, 128, 256, 512]),
  loads: otherInt("other-loads", [1, 2, 4, 8]),
  minKeys: otherInt("other-min-keys"),
  combine: args.oneOf("other-combine", ["fused", "dispatch"] as const),
  maxKeys: otherInt("other-max-keys", [64, 128, 256, 512, 1024, 2048, 4096]),
  workgroups: otherInt("other-workgroups"),
  wave: otherInt("other-wave"),
  earlyLoads: args.flag("other-early") || undefined,
  headSplit: otherInt("other-heads", [1, 2, 4, 8]),
};
if (tuning.headSplit && G % tuning.headSplit !== 0) {
  args.fail(`--other-heads must divide --g (${G}), got ${tuning.headSplit}`);
}
const json = args.str("json");

const gpu = await getGpu();
const cpu = /llvmpipe/i.test(gpu.description);
const quick = args.flag("quick") || cpu;
const contexts = contextsArg.length
  ? contextsArg
  : cpu
  ? [256, 1024]
  : quick
  ? [4096, 32768]
  : [4096, 32768, 131072];
const batches = batchesArg.length ? batchesArg : cpu ? [1, 2] : quick ? [1, 4] : [1, 4, 16];
const dtypes = dtypesArg.filter((d): d is Dt => d === "f32" || (d === "f16" && gpu.hasF16));
const window = windowArg ?? (cpu ? 32 : 512);
const blockSize = blockArg ?? (cpu ? 32 : 256);
const reps = repsArg ?? (cpu ? 3 : 7);
/** GPU time per timing sample, and of back-to-back load before a shape's samples (clocks). */
const SAMPLE_MS = cpu ? 1 : 20;
const WARM_MS = cpu ? 0 : 200;
/** Split vs tiled on the same pages: only the summation order differs. */
const AGREE: Record<Dt, { atol: number; rtol: number }> = {
  f32: { atol: 2e-6, rtol: 1e-5 },
  f16: { atol: 1e-3, rtol: 4e-3 },
};

/** `--cold`: copies of a cache of `bytes` that span at least `coldBytes` (1 without `--cold`). */
function copiesFor(bytes: number): number {
  if (coldBytes === undefined) return 1;
  return Math.max(1, Math.min(MAX_COPIES, Math.ceil(coldBytes / bytes)));
}

/** Whether a cache of this shape fits the device's largest storage binding (one K pool). */
function fits(ctx: number, B: number, dtype: Dt): boolean {
  const slots = Math.ceil((ctx + 64) / blockSize) * blockSize * B * HKV;
  return slots * D * bytesPer(dtype) <= gpu.limits.maxStorageBufferBindingSize;
}

/** A one-layer cache of this run's geometry ({@linkcode filledCache}). */
const filled = (ctx: number, B: number, dtype: Dt, cr?: number): Promise<PagedKvCache> =>
  filledCache(gpu, {
    ctx,
    B,
    dtype,
    cr,
    kvHeads: HKV,
    headDim: D,
    window,
    blockSize,
    partitionKeys,
  });

/** This run's sampling ({@linkcode timePerPass}). */
const sampling = { n: reps, sampleMs: SAMPLE_MS, warmMs: WARM_MS };

async function runRow(ctx: number, B: number, dtype: Dt, cr?: number): Promise<Row> {
  const row: Row = {
    dtype,
    ctx,
    B,
    cache: cr ? `dms CR=${cr}` : "dense",
    kernel: "-",
    forcedCr: cr,
    cr: 0,
    liveMB: 0,
    check: "-",
    us: NaN,
    minUs: NaN,
    gbps: NaN,
  };
  if (!fits(ctx, B, dtype)) {
    row.skipped =
      `K pool over maxStorageBufferBindingSize ${gpu.limits.maxStorageBufferBindingSize}`;
    return row;
  }
  using cache = await filled(ctx, B, dtype, cr);
  const s = cache.storage;
  const lens = await s.readLengths();
  const live = lens.reduce((a, b) => a + b, 0);
  row.cr = (B * HKV * ctx) / live;
  const bytes = live * 2 * D * bytesPer(dtype);
  row.liveMB = bytes / 1e6;
  using q = Tensor.fromArray(gpu, random(B * HKV * G * D, 7, -2, 2), [B, HKV * G, 1, D], dtype);
  const a = { t0: ctx, window: cache.policy.window, scale: 1 / Math.sqrt(D) };
  row.kernel = decodeKernelFor(s, G, D, {});
  const fast = () => pagedAttention(s, 0, q, a);
  /** The flash kernel under the `--other` tuning on storage `st`. */
  const otherOn = (st: typeof s) => {
    const out = pagedDecodeFlash(st, 0, q, { ...a, tuning });
    if (!out) throw new Error(`--other: no flash kernel for ${JSON.stringify(tuning)}`);
    return out;
  };
  const other = () => otherOn(s);
  const withOther = args.flag("other") && row.kernel === "flash";
  const pagesOf = lens.subarray(0, s.pages); // layer 0, the only one
  const plan = row.kernel === "flash" ? flashDecodePlan(s, 0, G) : undefined;
  const otherPlan = withOther ? flashDecodePlan(s, 0, G, tuning) : undefined;
  if (plan) row.plan = planText(plan, pagesOf);
  if (otherPlan) row.otherPlan = planText(otherPlan, pagesOf);
  const y = await (async () => {
    using t = pagedAttention(s, 0, q, { ...a, decodeKernel: "tiled" });
    return await t.toArray();
  })();
  /** "ok", or how far a step's output lies from the readable kernel's `y` on the same pages. */
  const agree = async (run: () => Tensor): Promise<string> => {
    using f = run();
    const x = await f.toArray();
    const tol = AGREE[dtype];
    let worst = 0, bad = 0;
    for (let i = 0; i < x.length; i++) {
      const e = Math.abs(x[i] - y[i]);
      if (!(e <= tol.atol + tol.rtol * Math.abs(y[i]))) bad++;
      if (!(e <= worst)) worst = e;
    }
    return bad ? `FAIL (${bad} off, max ${worst.toExponential(2)})` : "ok";
  };
  const steps = withOther ? [fast, other] : [fast];
  const checks: string[] = [];
  for (const run of steps) checks.push(await agree(run));
  const [{ us, minUs }, otherTime] = await timePerPass(gpu, steps, sampling);
  row.us = us;
  row.minUs = minUs;
  row.gbps = bytes / (us * 1e-6) / 1e9;
  if (otherTime) row.otherUs = otherTime.us;
  const calls = Math.max(1, Math.min(400, Math.round(SAMPLE_MS * 1e3 / us)));
  [row.chainedUs, row.otherChainedUs] = await timeChained(gpu, steps, calls, reps);
  if (coldBytes !== undefined) {
    // The same fill again (seeded: the same decisions and K/V, so the same live entries), each
    // copy checked against the first one's readable output like the row itself.
    row.copies = Math.min(
      copiesFor(bytes),
      Math.max(1, Math.floor(COLD_ALLOC_BYTES / s.allocatedBytes)),
    );
    const more: PagedKvCache[] = [];
    try {
      for (let c = 1; c < row.copies; c++) more.push(await filled(ctx, B, dtype, cr));
      const stores = [s, ...more.map((m) => m.storage)];
      for (const [c, st] of stores.entries()) {
        const got = await agree(() => pagedAttention(st, 0, q, a));
        if (got !== "ok") checks.push(`copy ${c}: ${got}`);
        if (withOther) {
          const o = await agree(() => otherOn(st));
          if (o !== "ok") checks.push(`copy ${c}, --other: ${o}`);
        }
      }
      let i = 0, j = 0;
      const cold = () => pagedAttention(stores[i++ % stores.length], 0, q, a);
      const otherCold = () => otherOn(stores[j++ % stores.length]); // --other from memory too
      const k = Math.ceil(calls / stores.length) * stores.length;
      [row.coldUs, row.otherColdUs] = await timeChained(
        gpu,
        withOther ? [cold, otherCold] : [cold],
        k,
        reps,
      );
    } finally {
      more.forEach((m) => m.dispose());
    }
  }
  row.check = checks.every((c) => c === "ok") ? "ok" : checks.join(" / ");
  // The old kernel on dense rows and the highest forced CR only (the section's time limit).
  if (!args.flag("no-old") && row.kernel !== "split" && (!cr || cr === Math.max(...crs))) {
    const old = () => pagedAttention(s, 0, q, { ...a, decodeKernel: "split" });
    row.oldUs = (await timePerPass(gpu, [old], { ...sampling, n: Math.min(reps, 3) }))[0].us;
  }
  return row;
}

console.log(
  `device: ${gpu.description}${cpu ? " (CPU adapter: small sizes)" : ""}; one decode step of one ` +
    `layer, Hkv ${HKV}, G ${G}, D ${D}; DMS window ${window}, block ${blockSize}; ` +
    `${
      gpu.hasTimestamps ? "timestamp queries" : "wall clock"
    }, median of ${reps} samples of ~${SAMPLE_MS} ms`,
);
const shapes = dtypes.flatMap((dtype) =>
  contexts.flatMap((ctx) => batches.map((B) => ({ ctx, B, dtype })))
);
const rows: Row[] = [];
for (const { ctx, B, dtype } of shapes) {
  for (const cr of [undefined, ...crs]) {
    const r = await runRow(ctx, B, dtype, cr);
    rows.push(r);
    const what = r.skipped
      ? "skipped"
      : `${r.kernel} ${fmt(r.us)} µs (old ${fmt(r.oldUs)} µs), ${r.check}` +
        (r.plan ? `; ${r.plan}` : "") + (r.otherPlan ? `; --other ${r.otherPlan}` : "");
    console.error(`  ${key(r)} ${r.cache}: ${what}`);
  }
}
// PyTorch after ours (its process then has the GPU to itself): the dense cache of every shape,
// and for every DMS row a dense cache of that row's live keys a head (what SDPA takes for the
// bytes DMS keeps; the row's pages vary in length around it).
const liveKey = (r: Row) => `live ${r.dtype} S=${liveKeys(r)} B=${r.B}`;
const jobs = new Map<string, TorchJob>();
/** K and V bytes of a dense cache of S keys a head (what SDPA reads a call). */
const denseBytes = (S: number, B: number, dtype: Dt) => 2 * B * HKV * S * D * bytesPer(dtype);
const addJob = (k: string, S: number, B: number, dtype: Dt) => {
  jobs.set(k, { key: k, S, B, dtype });
  if (coldBytes !== undefined) {
    const copies = copiesFor(denseBytes(S, B, dtype));
    jobs.set(`cold ${k}`, { key: `cold ${k}`, S, B, dtype, copies });
  }
};
for (const x of shapes.filter((x) => fits(x.ctx, x.B, x.dtype))) {
  addJob(key(x), x.ctx, x.B, x.dtype);
}
for (const r of rows.filter((r) => r.forcedCr && !r.skipped)) {
  addJob(liveKey(r), liveKeys(r), r.B, r.dtype);
}
const torch = args.flag("no-torch")
  ? undefined
  : await torchTimes([...jobs.values()], { Hkv: HKV, G, D, cpu, reps });
const ms = (t: number | null | undefined) => (typeof t === "number" ? t * 1000 : undefined);
for (const r of rows) {
  r.torchUs = ms(torch?.eager[key(r)]);
  r.torchGraphUs = ms(torch?.graph[key(r)]);
  r.torchColdUs = ms(torch?.graph[`cold ${key(r)}`]);
  if (r.forcedCr && !r.skipped) {
    r.torchLiveUs = ms(torch?.graph[liveKey(r)]);
    r.torchLiveColdUs = ms(torch?.graph[`cold ${liveKey(r)}`]);
  }
}
console.log(table(rows, coldBytes !== undefined));
console.log(legend(coldBytes !== undefined));
const failed = rows.filter((r) => r.check.includes("FAIL"));
for (const r of failed) console.error(`validation failed: ${key(r)} ${r.cache}: ${r.check}`);
if (json) {
  const doc = { device: gpu.description, cpu, Hkv: HKV, G, D, window, blockSize, reps, rows };
  await writeTextFileAtomic(json, JSON.stringify(doc, null, 2) + "\n");
  console.log(`wrote ${json}`);
}
if (failed.length) Deno.exitCode = 1;
