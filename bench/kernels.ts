/**
 * Kernel benchmark: matrix multiply (prefill GEMM, decode GEMV, the naive
 * kernel as the baseline) in f32 and f16, and a streaming elementwise add
 * for the bandwidth ceiling. GPU time from timestamp queries
 * (`gpu.profile`): the median over repetitions of samples that each keep the
 * GPU busy for ~20 ms, after ~0.8 s of load to raise its clocks (see `time`);
 * each result is
 * spot-checked against an f64 dot product so the numbers are for correct
 * kernels. When PyTorch with CUDA is importable by `python3`, the same
 * shapes and dtypes run there too (CUDA events) and print side by side.
 *
 * Usage: `deno run -A bench/kernels.ts [--quick] [--reps N] [--gemm] [--split-k-workgroups N]
 * [--no-torch] [--json out.json]` (`--help` lists the flags; `deno task bench --sections kernels`
 * runs it as one section of the bench).
 *
 * Sizes: on a CPU adapter ("llvmpipe") small shapes that finish in well
 * under a minute; otherwise prefill 512×4096×4096, decode 1×4096×4096 and a
 * 64M-element add. `--quick` shrinks both. The `GEMM` rows time `tiled` against
 * `tiled128`, `tiled128x64` and `tiled128split` (split K; `--split-k-workgroups` sets
 * `splitKTuning.workgroups`) at M×4096×4096, M = 512, 2048, 4096 (512 only with `--quick`),
 * and print TFLOP/s and the speed-up over `tiled` per shape; `--gemm` runs only those rows.
 *
 * @module
 */

import { getGpu } from "../src/gpu/device.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import { bytesPer, roundToF16 } from "../src/tensor/dtype.ts";
import { linear, type MatmulVariant, splitKTuning } from "../src/ops/matmul.ts";
import { add } from "../src/ops/elementwise.ts";
import { gemv } from "../src/ops/gemv.ts";
import { scriptArgs } from "../src/cli/script_args.ts";
import { median, runPython, torchCuda } from "./_common.ts";

/** Copies a tensor's bytes into another of the same size (for the shared spot check). */
function copyInto(src: Tensor, dst: Tensor): void {
  src.gpu.encoder().copyBufferToBuffer(
    src.buffer,
    0,
    dst.buffer,
    0,
    Math.ceil(src.byteSize / 4) * 4,
  );
}

type Dt = "f32" | "f16";

/** One benchmarked case. */
interface Case {
  name: string;
  kind: "linear" | "add";
  dtype: Dt;
  /** linear: x:[M, K] · w:[N, K]ᵀ; add: n elements. */
  M: number;
  K: number;
  N: number;
  /** A variant of `linear`, or "gemv16": `gemv` of src/ops/gemv.ts (16-byte loads). */
  variant?: MatmulVariant | "gemv16";
}

/** One row of results. */
interface Row {
  name: string;
  dtype: Dt;
  shape: string;
  variant: string;
  ms: number;
  /** Fastest sample. */
  minMs: number;
  /** Dispatches per sample. */
  perSample: number;
  gflops: number;
  gbps: number;
  check: string;
  torchMs?: number;
  torchGflops?: number;
  torchGbps?: number;
}

const USAGE = `usage: deno run -A bench/kernels.ts [flags]

  --quick                  smaller shapes, 1 warm-up; on a GPU no model-shape rows, GEMM M = 512
  --reps N                 timed samples a case, the median reported (default 20; CPU adapter 5;
                           --quick 3 on any adapter)
  --gemm                   only the GEMM rows (tiled against tiled128, tiled128x64, tiled128split)
  --split-k-workgroups N   splitKTuning.workgroups of tiled128split (default 512)
  --no-torch               skip the PyTorch twin
  --json FILE              write the device, the sizes and the rows as JSON
  -h, --help               this text`;

const args = scriptArgs("kernels", USAGE, {
  quick: { type: "boolean" },
  json: { type: "string" },
  reps: { type: "string" },
  gemm: { type: "boolean" },
  "split-k-workgroups": { type: "string" },
  "no-torch": { type: "boolean" },
});
const quick = args.flag("quick");
const gemmOnly = args.flag("gemm");
const json = args.str("json");
/** Undefined: the adapter's default. */
const repsArg = args.intOpt("reps", 1);
const splitKWorkgroups = args.intOpt("split-k-workgroups", 1);

const gpu = await getGpu();
const cpu = /llvmpipe/i.test(gpu.description);
const reps = repsArg ?? (quick ? 3 : cpu ? 5 : 20);
const warmup = quick ? 1 : 2;
const dtypes: Dt[] = gpu.hasF16 ? ["f32", "f16"] : ["f32"];

// [M, K, N] of prefill and decode, elements of the add.
const size = cpu
  ? (quick ? { pre: [64, 256, 256], dec: [1, 1024, 1024], add: 1 << 20 } : {
    pre: [128, 512, 512],
    dec: [1, 2048, 2048],
    add: 1 << 22,
  })
  : (quick
    ? { pre: [512, 2048, 2048], dec: [1, 4096, 4096], add: 1 << 24 }
    : { pre: [512, 4096, 4096], dec: [1, 4096, 4096], add: 1 << 26 });

const cases: Case[] = [];
for (const dtype of gemmOnly ? [] : dtypes) {
  const [pm, pk, pn] = size.pre, [dm, dk, dn] = size.dec;
  cases.push(
    { name: "prefill x·wᵀ", kind: "linear", dtype, M: pm, K: pk, N: pn, variant: "tiled" },
    { name: "prefill x·wᵀ", kind: "linear", dtype, M: pm, K: pk, N: pn, variant: "naive" },
    { name: "decode x·wᵀ", kind: "linear", dtype, M: dm, K: dk, N: dn, variant: "gemv" },
    { name: "add a+b", kind: "add", dtype, M: 1, K: 1, N: size.add },
  );
}

// Decode-time linear layers at the model's shapes ([M, K, N] of x·wᵀ): Qwen3-0.6B q_proj, gate
// and down, one 32K-row chunk of its LM head, Qwen3-8B gate/up and down (past the H200's 60 MB
// L2 in f16: 67, 100 and 100 MB), and the 8B gate at M = 4 and 8 (small-batch decode).
const modelShapes: [string, number, number, number][] = cpu
  ? [["0.6B q_proj", 1, 256, 512], ["0.6B down", 1, 768, 256], ["gate M=4", 4, 256, 768]]
  : [
    ["0.6B q_proj", 1, 1024, 2048],
    ["0.6B gate", 1, 1024, 3072],
    ["0.6B down", 1, 3072, 1024],
    ["0.6B lm_head chunk", 1, 1024, 32768],
    ["8B gate", 1, 4096, 12288],
    ["8B down", 1, 12288, 4096],
    ["8B gate M=4", 4, 4096, 12288],
    ["8B gate M=8", 8, 4096, 12288],
  ];
if ((!quick || cpu) && !gemmOnly) {
  for (const dtype of dtypes) {
    for (const [name, M, K, N] of modelShapes) {
      cases.push({ name: `decode ${name}`, kind: "linear", dtype, M, K, N, variant: "gemv" });
      cases.push({ name: `decode ${name}`, kind: "linear", dtype, M, K, N, variant: "gemv16" });
    }
  }
}

// Prefill-sized GEMMs x·wᵀ ([M, K, N]), the 64×64 tiles of `tiled` against the 128×128 and
// 128×64 tiles of shaders/matmul_big.wgsl (the `largeTiles` switch of the auto route rests on
// these). `--gemm` runs only these rows.
const GEMM_VARIANTS: MatmulVariant[] = ["tiled", "tiled128", "tiled128x64", "tiled128split"];
if (splitKWorkgroups !== undefined) splitKTuning.workgroups = splitKWorkgroups;
const gemmShapes: [number, number, number][] = cpu
  ? [[128, 256, 256], [256, 256, 512]]
  : quick
  ? [[512, 4096, 4096]]
  : [[512, 4096, 4096], [2048, 4096, 4096], [4096, 4096, 4096]];
for (const dtype of dtypes) {
  for (const [M, K, N] of gemmShapes) {
    for (const variant of GEMM_VARIANTS) {
      cases.push({ name: "GEMM x·wᵀ", kind: "linear", dtype, M, K, N, variant });
    }
  }
}

/** Seeded data in [-1, 1) (xorshift; fast enough for 16M elements). */
function random(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (s >>> 0) / 2147483648 - 1;
  }
  return out;
}

/** GPU time each sample should span (the ~10 ms readback after it leaves the GPU idle). */
const SAMPLE_MS = cpu ? 1 : 20;
/**
 * GPU time of back-to-back work, submitted without waiting, before the samples
 * of each case on a real GPU. An H100 left idle for a second (while the CPU
 * makes the next case's data) drops its SM clock from 1980 to ~600 MHz and
 * needs sustained load to climb back; short dispatches separated by readbacks
 * do not provide it, and timings varied 2-5x between runs.
 */
const WARM_MS = cpu ? 0 : 800;

/**
 * Times `fn` (which records exactly one dispatch and returns tensors to
 * dispose): the median over samples of the mean GPU ms per dispatch. A sample
 * runs `fn` back to back for about {@linkcode SAMPLE_MS}, after
 * {@linkcode WARM_MS} of load. The profile is sized to exactly the dispatches
 * recorded (`Gpu.profile` rejects a profile with more dispatches than its room).
 */
async function time(
  fn: () => Tensor[],
  dispatches = 1,
): Promise<{ ms: number; minMs: number; perSample: number }> {
  let made: Tensor[] = [];
  const record = (n: number) => {
    for (let j = 0; j < n; j++) {
      made.forEach((t) => t.dispose());
      made = fn();
    }
  };
  const sample = async (n: number): Promise<number> => {
    let ms: number;
    if (gpu.hasTimestamps) {
      ms = await gpu.profile(() => record(n), n * dispatches) / n;
    } else {
      await gpu.sync();
      const t0 = performance.now();
      record(n);
      await gpu.sync();
      ms = (performance.now() - t0) / n;
    }
    made.forEach((t) => t.dispose());
    made = [];
    return ms;
  };
  const first = await sample(1);
  const k = Math.max(1, Math.min(1000, Math.round(SAMPLE_MS / first)));
  record(Math.min(20000, Math.ceil(WARM_MS / first)));
  made.forEach((t) => t.dispose());
  made = [];
  for (let i = 1; i < warmup; i++) await sample(k);
  const samples: number[] = [];
  for (let i = 0; i < reps; i++) samples.push(await sample(k));
  return { ms: median(samples), minMs: Math.min(...samples), perSample: k };
}

/** Spot-checks `got` at a few indices against `expect(i)`; returns "ok" or the worst miss. */
function spotCheck(
  got: Float32Array,
  expect: (i: number) => number,
  dtype: Dt,
  K: number,
): string {
  const atol = (dtype === "f32" ? 1e-5 : 1e-4) * Math.sqrt(K), rtol = dtype === "f32" ? 1e-4 : 2e-3;
  const rnd = random(16, got.length);
  for (let j = 0; j < 16; j++) {
    const i = j === 0 ? 0 : j === 1 ? got.length - 1 : Math.floor((rnd[j] + 1) / 2 * got.length);
    const e = expect(i);
    if (!(Math.abs(got[i] - e) <= atol + rtol * Math.abs(e))) {
      return `FAIL at ${i}: ${got[i]} vs ${e}`;
    }
  }
  return "ok";
}

let lastData: { key: string; x: Float32Array; w: Float32Array } | undefined;

/** x:[M, K] and w:[N, K] of a linear case, kept for the next case of the same shape. */
function hostData(M: number, K: number, N: number): { x: Float32Array; w: Float32Array } {
  const key = `${M}x${K}x${N}`;
  if (lastData?.key !== key) lastData = { key, x: random(M * K, 3), w: random(N * K, 4) };
  return lastData;
}

async function runCase(c: Case): Promise<Row> {
  const bpe = bytesPer(c.dtype);
  if (c.kind === "add") {
    let a = random(c.N, 1), b = random(c.N, 2);
    if (c.dtype === "f16") [a, b] = [roundToF16(a), roundToF16(b)];
    using ta = Tensor.fromArray(gpu, a, [c.N], c.dtype);
    using tb = Tensor.fromArray(gpu, b, [c.N], c.dtype);
    const { ms, minMs, perSample } = await time(() => [add(ta, tb)]);
    using out = add(ta, tb);
    const got = await out.toArray();
    return {
      name: c.name,
      dtype: c.dtype,
      shape: `[${c.N}]`,
      variant: "-",
      ms,
      minMs,
      perSample,
      gflops: c.N / ms / 1e6,
      gbps: 3 * c.N * bpe / ms / 1e6,
      check: spotCheck(got, (i) => a[i] + b[i], c.dtype, 1),
    };
  }
  const { M, K, N } = c;
  const { x, w } = hostData(M, K, N);
  using tx = Tensor.fromArray(gpu, x, [M, K], c.dtype);
  using tw = Tensor.fromArray(gpu, w, [N, K], c.dtype);
  using out = Tensor.empty(gpu, [M, N], c.dtype);
  const { ms, minMs, perSample } = await time(() => {
    if (c.variant === "gemv16") return [gemv(tx, tw)];
    linear(tx, tw, { out, variant: c.variant });
    return [];
  }, c.variant === "tiled128split" ? 2 : 1);
  if (c.variant === "gemv16") {
    using y = gemv(tx, tw);
    copyInto(y, out);
  }
  const got = await out.toArray();
  const row = (v: Float32Array, r: number) => {
    const s = v.subarray(r * K, (r + 1) * K);
    return c.dtype === "f16" ? roundToF16(s) : s;
  };
  const check = spotCheck(
    got,
    (i) => {
      const xr = row(x, Math.floor(i / N)), wr = row(w, i % N);
      let acc = 0;
      for (let k = 0; k < K; k++) acc += xr[k] * wr[k];
      return acc;
    },
    c.dtype,
    K,
  );
  return {
    name: c.name,
    dtype: c.dtype,
    shape: `${M}×${K}×${N}`,
    variant: c.variant ?? "auto",
    ms,
    minMs,
    perSample,
    gflops: 2 * M * N * K / ms / 1e6,
    gbps: (M * K + N * K + M * N) * bpe / ms / 1e6,
    check,
  };
}

/**
 * PyTorch on CUDA (bench/torch_kernels.py) for the same shapes, when `python3` has it; undefined
 * (with the reason printed) otherwise.
 */
async function torchTimes(): Promise<Record<string, number> | undefined> {
  if (!(await torchCuda())) {
    console.log(
      "PyTorch comparison skipped: no python3 with CUDA torch (or no --allow-run: deno run -A).",
    );
    return undefined;
  }
  const jobs = [
    ...new Map(
      cases.filter((c) => c.variant !== "naive" && c.variant !== "gemv16").map((c) => [key(c), {
        key: key(c),
        ...c,
      }]),
    ).values(),
  ];
  try {
    return await runPython("torch_kernels.py", { jobs, reps, warmup }) as Record<string, number>;
  } catch (e) {
    console.log(`PyTorch comparison skipped: ${(e as Error).message}`);
    return undefined;
  }
}

function key(c: Case): string {
  return `${c.kind} ${c.dtype} ${c.M}x${c.K}x${c.N}`;
}

function fmt(v: number | undefined, digits = 1): string {
  if (v === undefined || !Number.isFinite(v)) return "-";
  return v >= 100 ? v.toFixed(0) : v.toFixed(v >= 1 ? digits : 3);
}

function table(rows: Row[], withTorch: boolean): string {
  const head = ["op", "dtype", "M×K×N / n", "kernel", "ms", "GFLOP/s", "GB/s", "check"];
  if (withTorch) head.push("torch ms", "torch GFLOP/s", "torch GB/s");
  const body = rows.map((r) => {
    const cells = [r.name, r.dtype, r.shape, r.variant, fmt(r.ms, 3), fmt(r.gflops), fmt(r.gbps)];
    cells.push(r.check === "ok" ? "ok" : "FAIL");
    if (withTorch) cells.push(fmt(r.torchMs, 3), fmt(r.torchGflops), fmt(r.torchGbps));
    return cells;
  });
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < 4 ? c.padEnd(w[i]) : c.padStart(w[i]))).join("  ");
  return [line(head), w.map((n) => "-".repeat(n)).join("  "), ...body.map(line)].join("\n");
}

console.log(
  `device: ${gpu.description} (${cpu ? "CPU adapter, small sizes" : "full sizes"}${
    quick ? ", --quick" : ""
  }); f16 ${gpu.hasF16 ? "yes" : "no"}; timer: ${
    gpu.hasTimestamps ? "timestamp queries" : "wall clock (no timestamp-query)"
  }; median of ${reps} samples (each ~${SAMPLE_MS} ms of back-to-back dispatches) ` +
    `after ${warmup} warm-up`,
);
const torch = args.flag("no-torch") ? undefined : await torchTimes();
const rows: Row[] = [];
for (const c of cases) {
  const r = await runCase(c);
  const t = torch?.[key(c)];
  if (t !== undefined) {
    r.torchMs = t;
    r.torchGflops = r.gflops * r.ms / t;
    r.torchGbps = r.gbps * r.ms / t;
  }
  rows.push(r);
}
console.log(table(rows, torch !== undefined));
for (const dtype of dtypes) {
  const dec = rows.find((r) => r.dtype === dtype && r.variant === "gemv");
  const str = rows.find((r) => r.dtype === dtype && r.name.startsWith("add"));
  if (dec && str) {
    console.log(
      `${dtype}: decode GEMV streams at ${(100 * dec.gbps / str.gbps).toFixed(0)}% of the add's ` +
        `${str.gbps.toFixed(1)} GB/s`,
    );
  }
}
for (const dtype of dtypes) {
  for (const [M, K, N] of gemmShapes) {
    const of = (v: MatmulVariant) =>
      rows.find((r) =>
        r.name.startsWith("GEMM") && r.dtype === dtype && r.shape === `${M}×${K}×${N}` &&
        r.variant === v
      );
    const base = of("tiled");
    if (!base) continue;
    const cells = GEMM_VARIANTS.map((v) => {
      const r = of(v);
      if (!r) return `${v} -`;
      const speed = cpu
        ? `${r.gflops.toFixed(1)} GFLOP/s`
        : `${(r.gflops / 1e3).toFixed(2)} TFLOP/s`;
      return `${v} ${speed} (${(base.ms / r.ms).toFixed(2)}×)`;
    });
    console.log(`GEMM ${dtype} ${M}×${K}×${N}: ${cells.join(", ")}`);
  }
}
const failed = rows.filter((r) => r.check !== "ok");
for (const r of failed) console.error(`spot-check failed: ${r.name} ${r.dtype}: ${r.check}`);
if (json) {
  const doc = { device: gpu.description, cpu, quick, reps, warmup, rows };
  try {
    await writeTextFileAtomic(json, JSON.stringify(doc, null, 2) + "\n");
    console.log(`wrote ${json}`);
  } catch (e) {
    console.error(`cannot write ${json} (needs --allow-write): ${(e as Error).message}`);
    Deno.exitCode = 1;
  }
}
if (failed.length) Deno.exitCode = 1;
