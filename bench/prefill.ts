/**
 * Prefill attention through the paged cache (bench section b): one layer, Qwen3-8B attention
 * heads (Hkv 8, G 4, D 128), a `ctx`-token prompt attended in chunks of `--chunk` queries, each
 * chunk over the entries the cache holds so far plus its own keys (SPEC §5.1; the chunk is then
 * written through the policy exactly as `PagedKvCache.attend` does), dense and DMS at a forced CR
 * (decisions drawn at rate 1 − 1/CR: a benchmark knob). Times only the attention dispatches
 * (timestamp queries; wall clock without them) of the flash kernel (src/cache/paged_prefill.ts)
 * and, up to `--tiled-max` tokens, of the readable tiled `partial` path, after checking on the
 * first chunks that the two agree (STYLE 11). TFLOP/s counts the dense causal work,
 * 4·B·Hq·D·ctx²/2 (both matmuls), for every row, so DMS rows are "effective".
 *
 * Usage: `deno run -A bench/prefill.ts [--contexts 4096,32768] [--chunk 4096] [--crs 8]
 * [--dtypes f16,f32] [--tiled-max 8192] [--quick] [--json FILE]`. CPU adapter / `--quick`:
 * contexts 256,512, chunk 128, Hkv 2, D 64.
 *
 * @module
 */

import { getGpu } from "../src/gpu/device.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";
import { pagedAttention } from "../src/cache/paged_attention.ts";
import { widePrefillShape } from "../src/cache/paged_prefill.ts";
import type { PagedKvCache } from "../src/cache/paged_kv_cache.ts";
import { scatterEntries } from "../src/cache/paged_kv.ts";
import { createDmsCache } from "../src/dms/dms_cache.ts";
import { createDenseCache } from "../src/policies/dense.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import { scriptArgs } from "../src/cli/script_args.ts";
import { fmt, isCpuAdapter, markdownTable, random } from "./_common.ts";

type Dt = "f32" | "f16";
const USAGE = `usage: deno run -A bench/prefill.ts [flags]

  --contexts LIST   prompt tokens, comma-separated (default 4096,32768; --quick / CPU adapter
                    256,512)
  --chunk N         queries a prefill chunk (default 4096; --quick / CPU adapter 128)
  --crs LIST        forced compression ratios of the DMS rows, each >= 1 (default 8)
  --dtypes LIST     f16, f32 (default f16,f32; f16 only where the adapter has shader-f16)
  --tiled-max N     time the tiled path up to this many tokens (default 8192; --quick / CPU
                    adapter: every context)
  --window N        the DMS window W; blocks of min(256, W) entries (default 512; --quick / CPU
                    adapter 32)
  --quick           Hkv 2, D 64 and the small sizes above (always on a CPU adapter)
  --json FILE       write the sizes and the rows as JSON
  -h, --help        this text`;

const args = scriptArgs("prefill", USAGE, {
  contexts: { type: "string" },
  chunk: { type: "string" },
  crs: { type: "string" },
  dtypes: { type: "string" },
  "tiled-max": { type: "string" },
  window: { type: "string" },
  quick: { type: "boolean" },
  json: { type: "string" },
});
// Read (and checked) before the GPU opens; empty lists and undefined: the adapter's defaults.
const contextsArg = args.ints("contexts", [], 1);
const chunkArg = args.intOpt("chunk", 1);
const crs = args.nums("crs", [8], 1);
const dtypesArg = args.oneOfList("dtypes", ["f16", "f32"] as const, ["f16", "f32"]);
const tiledMaxArg = args.intOpt("tiled-max");
const windowArg = args.intOpt("window", 1);
const json = args.str("json");

const gpu = await getGpu();
const cpu = isCpuAdapter(gpu);
const small = args.flag("quick") || cpu;
const [HKV, G, D] = small ? [2, 4, 64] : [8, 4, 128];
const contexts = contextsArg.length ? contextsArg : small ? [256, 512] : [4096, 32768];
const chunk = chunkArg ?? (small ? 128 : 4096);
const dtypes = dtypesArg.filter((d): d is Dt => d === "f32" || (d === "f16" && gpu.hasF16));
const tiledMax = tiledMaxArg ?? (small ? 1 << 30 : 8192);
const window = windowArg ?? (small ? 32 : 512);
const AGREE: Record<Dt, { atol: number; rtol: number }> = {
  f32: { atol: 2e-6, rtol: 1e-5 },
  f16: { atol: 1e-3, rtol: 4e-3 },
};

/** One result row. */
interface Row {
  dtype: Dt;
  ctx: number;
  cache: string;
  check: string;
  flashMs: number;
  wideMs?: number;
  tiledMs?: number;
  flashTflops: number;
  wideTflops?: number;
  tiledTflops?: number;
}

/** GPU ms of the dispatches `fn` records (timestamps), else wall ms around a sync. */
async function gpuMs(fn: () => Tensor): Promise<{ ms: number; out: Tensor }> {
  let out: Tensor | undefined;
  if (gpu.hasTimestamps) {
    const ms = await gpu.profile(() => {
      out = fn();
    }, 64);
    return { ms, out: out! };
  }
  await gpu.sync();
  const t = performance.now();
  out = fn();
  await gpu.sync();
  return { ms: performance.now() - t, out };
}

async function run(dtype: Dt, ctx: number, cr?: number): Promise<Row> {
  const sizes = {
    layers: 1,
    batch: 1,
    kvHeads: HKV,
    headDim: D,
    blockSize: Math.min(256, window),
    dtype,
    preallocateTokens: ctx + 64,
  };
  using cache: PagedKvCache = cr
    ? createDmsCache(gpu, { ...sizes, window })
    : createDenseCache(gpu, sizes);
  const s = cache.storage, pages = s.pages;
  const row: Row = {
    dtype,
    ctx,
    cache: cr ? `dms CR=${cr}` : "dense",
    check: "-",
    flashMs: 0,
    flashTflops: NaN,
  };
  const tiled = ctx <= tiledMax;
  if (tiled) row.tiledMs = 0;
  const wide =
    widePrefillShape(dtype, G, D, gpu.limits.maxComputeWorkgroupStorageSize) !== undefined;
  if (wide) row.wideMs = 0;
  let worst = 0, bad = 0;
  using firstReal = Tensor.zeros(gpu, [1], "i32");
  for (let t0 = 0, c = 0; t0 < ctx; t0 += chunk, c++) {
    const n = Math.min(chunk, ctx - t0);
    using q = Tensor.fromArray(
      gpu,
      random(HKV * G * n * D, 10 + c, -2, 2),
      [1, HKV * G, n, D],
      dtype,
    );
    using k = Tensor.fromArray(gpu, random(HKV * n * D, 20 + c), [1, HKV, n, D], dtype);
    using v = Tensor.fromArray(gpu, random(HKV * n * D, 30 + c), [1, HKV, n, D], dtype);
    const pMark = cr ? 1 - 1 / cr : 0;
    using d = Tensor.fromArray(
      gpu,
      Int32Array.from(random(HKV * n, 40 + c, 0, 1), (x) => (x < pMark ? 1 : 0)),
      [1, HKV, n],
      "i32",
    );
    const marks = gpu.alloc(pages * n * 4, "bench marks");
    const dest = gpu.alloc(pages * n * 4, "bench dest");
    const step = { layer: 0, n, t0, decisions: d.buffer, firstReal: firstReal.buffer, marks, dest };
    cache.policy.prefillMarks(step);
    const a = { t0, window: cache.policy.window, scale: 1 / Math.sqrt(D), chunk: { k, v, marks } };
    const f = await gpuMs(() => pagedAttention(s, 0, q, { ...a, prefillKernel: "flash" }));
    row.flashMs += f.ms;
    if (wide) {
      const w = await gpuMs(() => pagedAttention(s, 0, q, { ...a, prefillKernel: "wide" }));
      row.wideMs! += w.ms;
      if (c < 2) {
        const [x, y] = [await w.out.toArray(), await f.out.toArray()];
        const tol = AGREE[dtype];
        for (let i = 0; i < x.length; i++) {
          const e = Math.abs(x[i] - y[i]);
          if (!(e <= tol.atol + tol.rtol * Math.abs(y[i]))) bad++;
          if (!(e <= worst)) worst = e;
        }
      }
      w.out.dispose();
    }
    if (tiled) {
      const t = await gpuMs(() => pagedAttention(s, 0, q, { ...a, prefillKernel: "tiled" }));
      row.tiledMs! += t.ms;
      if (c < 2) {
        const [x, y] = [await f.out.toArray(), await t.out.toArray()];
        const tol = AGREE[dtype];
        for (let i = 0; i < x.length; i++) {
          const e = Math.abs(x[i] - y[i]);
          if (!(e <= tol.atol + tol.rtol * Math.abs(y[i]))) bad++;
          if (!(e <= worst)) worst = e;
        }
      }
      t.out.dispose();
    }
    f.out.dispose();
    s.ensure(0, () => n);
    cache.policy.prefillCompact(step);
    scatterEntries(s, 0, dest, marks, k, v, t0);
    gpu.release(marks);
    gpu.release(dest);
  }
  row.check = !tiled && !wide
    ? "-"
    : bad
    ? `FAIL (${bad} off, max ${worst.toExponential(2)})`
    : "ok";
  const flops = 4 * HKV * G * D * (ctx * ctx) / 2;
  row.flashTflops = flops / (row.flashMs * 1e-3) / 1e12;
  if (row.tiledMs) row.tiledTflops = flops / (row.tiledMs * 1e-3) / 1e12;
  if (row.wideMs) row.wideTflops = flops / (row.wideMs * 1e-3) / 1e12;
  return row;
}

console.log(
  `device: ${gpu.description}; prefill attention through the paged cache, one layer, B 1, ` +
    `Hkv ${HKV}, G ${G}, D ${D}, chunks of ${chunk}; DMS window ${window}; ` +
    `${gpu.hasTimestamps ? "timestamp queries" : "wall clock"}`,
);
const rows: Row[] = [];
for (const dtype of dtypes) {
  for (const ctx of contexts) {
    for (const cr of [undefined, ...crs]) {
      const r = await run(dtype, ctx, cr);
      rows.push(r);
      console.error(
        `  ${dtype} ${ctx} ${r.cache}: flash ${fmt(r.flashMs)} ms, wide ${fmt(r.wideMs)} ms, ` +
          r.check,
      );
    }
  }
}
console.log(markdownTable(
  cpu ? ["dtype", "ctx", "cache", "check", "tiled / flash time", "flash / wide time"] : [
    "dtype",
    "ctx",
    "cache",
    "check",
    "flash ms",
    "flash TFLOP/s",
    "wide ms",
    "wide TFLOP/s",
    "tiled ms",
    "tiled TFLOP/s",
    "tiled / flash",
  ],
  rows.map((r) => [
    r.dtype,
    `${r.ctx}`,
    r.cache,
    r.check,
    ...(cpu ? [] : [
      fmt(r.flashMs),
      fmt(r.flashTflops, 2),
      fmt(r.wideMs),
      fmt(r.wideTflops, 2),
      fmt(r.tiledMs),
      fmt(r.tiledTflops, 2),
    ]),
    fmt(r.tiledMs ? r.tiledMs / r.flashMs : NaN, 2),
    ...(cpu ? [fmt(r.wideMs ? r.flashMs / r.wideMs : NaN, 2)] : []),
  ]),
  4,
));
console.log("TFLOP/s: dense causal work 4·Hq·D·ctx²/2 over GPU time (DMS rows: effective).");
if (json) {
  const doc = { device: gpu.description, cpu, Hkv: HKV, G, D, chunk, window, rows };
  await writeTextFileAtomic(json, JSON.stringify(doc, null, 2) + "\n");
  console.log(`wrote ${json}`);
}
if (rows.some((r) => r.check.startsWith("FAIL"))) Deno.exitCode = 1;
