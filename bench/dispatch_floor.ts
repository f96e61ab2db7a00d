/**
 * What one dispatch costs the GPU when nothing else does: N dispatches recorded in one compute
 * pass, timed by the pass's begin/end timestamps, median of `--reps`. It separates the fixed cost
 * of a dispatch (and of the barrier WebGPU puts between two dispatches that touch the same
 * storage buffer) from the time a memory-bound kernel needs for its bytes, so the decode step's
 * GPU span (~230 dispatches a token, bench/generate.ts) can be split into the two.
 *
 * Cases (each dispatch of a case runs the same kernel):
 * - `tiny`: the first of 1 or 1024 workgroups of 64 threads adds 1 to 64 words of a buffer (the
 *   others only start and end), every dispatch the same buffer (a read-write hazard: WebGPU
 *   orders them with a barrier) or each dispatch its own buffer (no hazard, no barrier);
 * - `stream S MB dependent / independent`: 1024 workgroups of 256 threads read S MB as 16-byte
 *   words (read-only inputs, see the rotation below), sum them in a tree in workgroup memory
 *   and write one sum per workgroup, into one
 *   output buffer for all dispatches (a barrier each) or into one buffer per dispatch.
 *
 * The stream cases rotate over copies of their input summing to >= 128 MB (more than the H200's
 * 60 MB L2), so every dispatch reads HBM as a decode step's GEMVs do.
 *
 * The PyTorch twin (bench/torch_dispatch_floor.py) times the same work on CUDA, captured as one
 * CUDA graph: N in-place adds on 64 words (beside the 1-workgroup row) and N sums over S MB with
 * the same rotation (`torch.sum` reduces to one scalar: not the same kernel), when `python3` has
 * torch with CUDA (`--no-torch` skips it).
 *
 * Timing: each case records its N dispatches in one pass per sample; untimed samples for 300 ms
 * (`warm`), then `--reps` timed ones back to back (see `time`), so the GPU's clock is up when
 * timed. `--dispatches` stays below 1024 so that a sample is one submit.
 *
 * Usage: `deno run -A bench/dispatch_floor.ts [--dispatches 256] [--sizes 1,4,16,64] [--reps 5]
 * [--quick] [--no-torch] [--json FILE]`. On a CPU adapter (lavapipe) or with `--quick` the sizes
 * default to 1 MB; on a CPU adapter the GEMVs are 8× smaller and the times say nothing about a
 * GPU (`deno task bench` prints ratios there).
 *
 * @module
 */

import { getGpu } from "../src/gpu/device.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import { gemv } from "../src/ops/gemv.ts";
import { linearNormOut } from "../src/ops/linear_norm_out.ts";
import { linear } from "../src/ops/matmul.ts";
import { linearQkv } from "../src/ops/linear_qkv.ts";
import { linearSwiglu } from "../src/ops/linear_swiglu.ts";
import { scriptArgs } from "../src/cli/script_args.ts";
import {
  fmt,
  isCpuAdapter,
  markdownTable,
  median,
  random,
  runPython,
  timeInOnePass,
  torchCuda,
} from "./_common.ts";

const USAGE = `usage: deno run -A bench/dispatch_floor.ts [flags]

  --dispatches N   dispatches in one pass a sample, 1..1023 (one submit a sample; default 256)
  --sizes LIST     MB the stream cases read, comma-separated (default 1,4,16,64;
                   --quick / CPU adapter 1)
  --reps N         timed samples a case, the median reported (default 5)
  --quick          the small sizes (always on a CPU adapter)
  --no-torch       skip the PyTorch CUDA-graph twin
  --json FILE      write both tables' rows as JSON
  -h, --help       this text`;

const args = scriptArgs("dispatch_floor", USAGE, {
  dispatches: { type: "string" },
  sizes: { type: "string" },
  reps: { type: "string" },
  quick: { type: "boolean" },
  "no-torch": { type: "boolean" },
  json: { type: "string" },
});
const N = args.int("dispatches", 256, 1, 1023), REPS = args.int("reps", 5, 1);
/** Empty: the adapter's default. */
const sizesArg = args.ints("sizes", [], 1);
const json = args.str("json");
const gpu = await getGpu();
if (!gpu.hasTimestamps) {
  console.log(`dispatch_floor: ${gpu.description} has no timestamp-query; nothing measured`);
  Deno.exit(0);
}
const device = gpu.device;
const cpu = isCpuAdapter(gpu);
/** Untimed work before each case's timed samples, in ms of wall time (the GPU busy meanwhile). */
const WARM_MS = cpu ? 0 : 300;
/** The stream cases and the GEMVs rotate over copies of their inputs summing to at least this. */
const ROTATE_MB = cpu ? 1 : 128;
const sizes = sizesArg.length ? sizesArg : cpu || args.flag("quick") ? [1] : [1, 4, 16, 64];

const WG = 1024, THREADS = 256;
const module = device.createShaderModule({
  code: /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> words: array<u32>;
@compute @workgroup_size(64)
fn tiny(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) i: u32) {
  if (wg.x == 0u) { words[i] = words[i] + 1u; }
}

struct Params { vecs_per_wg: u32 }
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> sums: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;
var<workgroup> part: array<u32, ${THREADS}>;
@compute @workgroup_size(${THREADS})
fn stream(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) i: u32) {
  var acc = 0u;
  let base = wg.x * p.vecs_per_wg;
  for (var j = i; j < p.vecs_per_wg; j += ${THREADS}u) {
    let w = src[base + j];
    acc += w.x ^ w.y ^ w.z ^ w.w;
  }
  part[i] = acc;
  for (var h = ${THREADS / 2}u; h > 0u; h >>= 1u) {
    workgroupBarrier();
    if (i < h) { part[i] += part[i + h]; }
  }
  if (i == 0u) { sums[wg.x] = part[0]; }
}`,
});
const pipe = (entryPoint: string) =>
  device.createComputePipeline({ layout: "auto", compute: { module, entryPoint } });
const tinyPipe = pipe("tiny"), streamPipe = pipe("stream");
const storage = (size: number) =>
  device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });

/**
 * Untimed work before a timed sample: rounds of `submitOne` (which submits one untimed sample),
 * each round waited for, until `WARM_MS` of wall time have passed (at least one round): the GPU
 * stays busy and its clock comes up before the timed samples.
 */
async function warm(submitOne: () => void): Promise<void> {
  // Rounds double until one takes >= 40 ms, so the ~11 ms a wait costs in Deno leaves the GPU
  // busy most of the time (light load is what lowers the clock).
  const t0 = performance.now();
  let n = 4;
  do {
    const r0 = performance.now();
    for (let i = 0; i < n; i++) submitOne();
    await device.queue.onSubmittedWorkDone();
    if (performance.now() - r0 < 40) n *= 2;
  } while (performance.now() - t0 < WARM_MS);
}

/**
 * Median GPU µs per dispatch of `N` dispatches `record` puts in one timestamped pass. Untimed
 * passes run back to back for `WARM_MS` first (see {@linkcode warm}), then `REPS` timed ones, one
 * submit each, one readback at the end: an H200 lowers its SM clock from 1980 to 345 MHz after
 * ~3.5 s of light load (a readback per small pass is light load) and small kernels then take
 * 4-5x as long; back-to-back work keeps the clock up.
 */
async function time(record: (pass: GPUComputePassEncoder, i: number) => void): Promise<number> {
  const qs = device.createQuerySet({ type: "timestamp", count: 2 * REPS });
  const resolve = device.createBuffer({
    size: 16 * REPS,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const read = device.createBuffer({
    size: 16 * REPS,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const submit = (r: number) => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass(
      r < 0 ? {} : {
        timestampWrites: {
          querySet: qs,
          beginningOfPassWriteIndex: 2 * r,
          endOfPassWriteIndex: 2 * r + 1,
        },
      },
    );
    for (let i = 0; i < N; i++) record(pass, i);
    pass.end();
    if (r === REPS - 1) {
      enc.resolveQuerySet(qs, 0, 2 * REPS, resolve, 0);
      enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * REPS);
    }
    device.queue.submit([enc.finish()]);
  };
  await warm(() => submit(-1));
  for (let r = 0; r < REPS; r++) submit(r);
  await read.mapAsync(GPUMapMode.READ);
  const t = new BigUint64Array(read.getMappedRange().slice(0));
  read.unmap();
  const us = Array.from({ length: REPS }, (_, r) => Number(t[2 * r + 1] - t[2 * r]) / 1e3 / N);
  qs.destroy();
  resolve.destroy();
  read.destroy();
  return median(us);
}

interface Row {
  kernel: string;
  mb: number;
  dependent: number;
  independent: number;
  torch?: number;
}
const rows: Row[] = [];

{
  const shared = storage(256);
  const own = Array.from({ length: N }, () => storage(256));
  const bg = (b: GPUBuffer) =>
    device.createBindGroup({
      layout: tinyPipe.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: b } }],
    });
  const sharedBg = bg(shared), ownBg = own.map(bg);
  const run = (groups: (i: number) => GPUBindGroup, workgroups: number) =>
    time((pass, i) => {
      pass.setPipeline(tinyPipe);
      pass.setBindGroup(0, groups(i));
      pass.dispatchWorkgroups(workgroups);
    });
  for (const workgroups of [1, WG]) {
    rows.push({
      kernel: `tiny, ${workgroups} workgroup${workgroups > 1 ? "s" : ""}`,
      mb: 0,
      dependent: await run(() => sharedBg, workgroups),
      independent: await run((i) => ownBg[i], workgroups),
    });
  }
  for (const b of [shared, ...own]) b.destroy();
}

for (const mb of sizes) {
  const bytes = mb * 1024 * 1024, vecsPerWg = Math.ceil(bytes / 16 / WG);
  // Enough copies that consecutive dispatches never find their bytes in the 60 MB L2: a decode
  // step streams its weights from HBM once a token.
  const srcs = Array.from(
    { length: Math.max(2, Math.ceil(ROTATE_MB / mb)) },
    () => storage(vecsPerWg * WG * 16),
  );
  const uni = device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(uni, 0, new Uint32Array([vecsPerWg, 0, 0, 0]));
  const outs = Array.from({ length: N + 1 }, () => storage(WG * 4));
  const group = (i: number, o: GPUBuffer) =>
    device.createBindGroup({
      layout: streamPipe.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: srcs[i % srcs.length] } },
        { binding: 1, resource: { buffer: o } },
        { binding: 2, resource: { buffer: uni } },
      ],
    });
  const own = outs.slice(0, N).map((o, i) => group(i, o));
  const shared = Array.from({ length: N }, (_, i) => group(i, outs[N]));
  const run = (g: (i: number) => GPUBindGroup) =>
    time((pass, i) => {
      pass.setPipeline(streamPipe);
      pass.setBindGroup(0, g(i));
      pass.dispatchWorkgroups(WG);
    });
  rows.push({
    kernel: `stream ${mb} MB, ${WG} workgroups`,
    mb,
    dependent: await run((i) => shared[i]),
    independent: await run((i) => own[i]),
  });
  for (const b of [...srcs, uni, ...outs]) b.destroy();
}

// The decode step's GEMVs (Qwen3-0.6B shapes, M = 1), each `N` times in the same back-to-back
// regime (every output disposed at once, so the pool hands the next call the same buffer: a
// barrier each, as in a decode step), beside the plain gemv16 of the same bytes. Each op rotates
// over copies of its weights summing to >= ROTATE_MB, so they come from HBM as in a decode step.
interface OpRow {
  op: string;
  mb: number;
  us: number;
}
const opRows: OpRow[] = [];
{
  const dtype: "f16" | "f32" = gpu.hasF16 ? "f16" : "f32", bytes = dtype === "f16" ? 2 : 4;
  const K = cpu ? 128 : 1024, F = 3 * K, Q = 2 * K, N2 = K;
  const t = (shape: number[], seed: number) =>
    Tensor.fromArray(gpu, random(shape[0] * (shape[1] ?? 1), seed, -0.05, 0.05), shape, dtype);
  using x = t([1, K], 1), gain = t([K], 2), res = t([1, K], 3), a2 = t([1, Q], 4);
  using a3 = t([1, F], 5);
  const norm = { weight: gain, eps: 1e-6 };
  const deferred = { ...norm, deferred: true };
  /** Copies of seeded weights of these shapes, enough sets to reach ROTATE_MB. */
  const sets = (shapes: number[][], seed: number): Tensor<"f16" | "f32">[][] => {
    const first = shapes.map((sh, i) => t(sh, seed + i));
    const mb = first.reduce((n, w) => n + w.size * bytes, 0) / 1e6;
    const out = [first];
    for (let c = 1; c < Math.max(2, Math.ceil(ROTATE_MB / mb)); c++) {
      out.push(first.map((w) => {
        const copy = Tensor.empty(gpu, w.shape, dtype) as Tensor<"f16" | "f32">;
        gpu.encoder().copyBufferToBuffer(w.buffer, 0, copy.buffer, 0, w.size * bytes);
        return copy;
      }));
    }
    return out;
  };
  const qkv = sets([[Q, K], [N2, K], [N2, K]], 6), mlp = sets([[F, K], [F, K]], 9);
  const wo = sets([[K, Q]], 11), wd = sets([[K, F]], 12), w4 = sets([[4 * K, K]], 13);
  const mb = (s: Tensor<"f16" | "f32">[][]) => s[0].reduce((n, w) => n + w.size, 0) * bytes / 1e6;
  const at = (s: Tensor<"f16" | "f32">[][], i: number) => s[i % s.length];
  const ops: [string, number, (i: number) => void][] = [
    [`norm + q/k/v (gemv16_qkv) ${Q}+${N2}+${N2}×${K}`, mb(qkv), (i) => {
      const [wq, wk, wv] = at(qkv, i);
      const r = linearQkv(x, wq, wk, wv, { norm, variant: "fused" });
      r.q.dispose();
      r.k.dispose();
      r.v.dispose();
    }],
    [`norm + SwiGLU (gemv16_swiglu) 2×${F}×${K}`, mb(mlp), (i) => {
      const [gate, up] = at(mlp, i);
      linearSwiglu(x, gate, up, { norm, variant: "fused" }).dispose();
    }],
    [
      `o + residual (gemv16) ${K}×${Q}`,
      mb(wo),
      (i) => linear(a2, at(wo, i)[0], { residual: res, variant: "gemv16" }).dispose(),
    ],
    [
      `down + residual (gemv16) ${K}×${F}`,
      mb(wd),
      (i) => linear(a3, at(wd, i)[0], { residual: res, variant: "gemv16" }).dispose(),
    ],
    [`q/k/v (gemv16_qkv, x normed before) ${Q}+${N2}+${N2}×${K}`, mb(qkv), (i) => {
      const [wq, wk, wv] = at(qkv, i);
      const r = linearQkv(x, wq, wk, wv, { variant: "fused" });
      r.q.dispose();
      r.k.dispose();
      r.v.dispose();
    }],
    [`SwiGLU (gemv16_swiglu, x normed before) 2×${F}×${K}`, mb(mlp), (i) => {
      const [gate, up] = at(mlp, i);
      linearSwiglu(x, gate, up, { variant: "fused" }).dispose();
    }],
    [`o + residual + its norm (gemv16_rn) ${K}×${Q}`, mb(wo), (i) => {
      const r = linearNormOut(a2, at(wo, i)[0], { residual: res, norm, variant: "fused" });
      r.y.dispose();
      r.normed.dispose();
    }],
    [`down + residual + its norm (gemv16_rn) ${K}×${F}`, mb(wd), (i) => {
      const r = linearNormOut(a3, at(wd, i)[0], { residual: res, norm, variant: "fused" });
      r.y.dispose();
      r.normed.dispose();
    }],
    [`deferred norm + q/k/v ${Q}+${N2}+${N2}×${K}`, mb(qkv), (i) => {
      const [wq, wk, wv] = at(qkv, i);
      const r = linearQkv(x, wq, wk, wv, { norm: deferred, variant: "fused" });
      r.q.dispose();
      r.k.dispose();
      r.v.dispose();
    }],
    [`deferred norm + SwiGLU 2×${F}×${K}`, mb(mlp), (i) => {
      const [gate, up] = at(mlp, i);
      linearSwiglu(x, gate, up, { norm: deferred, variant: "fused" }).dispose();
    }],
    [`deferred norm + gemv16 ${4 * K}×${K}`, mb(w4), (i) => {
      gemv(x, at(w4, i)[0], { norm: deferred }).dispose();
    }],
    [`gemv16 ${4 * K}×${K}`, mb(w4), (i) => gemv(x, at(w4, i)[0]).dispose()],
    [`norm + gemv16 ${4 * K}×${K}`, mb(w4), (i) => gemv(x, at(w4, i)[0], { norm }).dispose()],
  ];
  for (const [op, m, fn] of ops) opRows.push({ op, mb: m, us: await timeOps(fn) });
  for (const s of [qkv, mlp, wo, wd, w4]) s.flat().forEach((w) => w.dispose());
}

/** {@linkcode time} for library ops: `N` calls of `fn` per timestamped sample, back to back. */
async function timeOps(fn: (i: number) => void): Promise<number> {
  await warm(() => {
    for (let i = 0; i < N; i++) fn(i);
    gpu.flush();
  });
  return timeInOnePass(
    gpu,
    () => {
      for (let i = 0; i < N; i++) fn(i);
    },
    N,
    REPS,
  );
}

let torchNote = "";
if (!args.flag("no-torch") && !cpu && await torchCuda()) {
  try {
    const t = await runPython("torch_dispatch_floor.py", { dispatches: N, sizes, reps: REPS });
    const us = t.us as Record<string, number>;
    for (const r of rows) {
      r.torch = r.mb ? us[String(r.mb)] : r.kernel.startsWith("tiny, 1 ") ? us.tiny : undefined;
    }
    torchNote =
      ` PyTorch ${t.torch}, ${t.device}: ${N} kernels of the same work as one CUDA graph ` +
      `(in-place adds on 64 words; sums over the same rotating bytes, into one scalar).`;
  } catch (e) {
    torchNote = ` PyTorch twin failed: ${(e as Error).message}`;
  }
}

const gbs = (r: Row, us: number | undefined) =>
  r.mb && us ? ` (${fmt(r.mb * 1.048576e6 / (us * 1e3))} GB/s)` : "";
console.log(
  `\nGPU µs per dispatch, ${N} dispatches in one compute pass, median of ${REPS}; ` +
    `${gpu.description}.${torchNote}\n`,
);
console.log(markdownTable(
  ["kernel", "same buffer (barrier each)", "own buffers (no barrier)", "PyTorch CUDA graph"],
  rows.map((r) => [
    r.kernel,
    fmt(r.dependent, 2) + gbs(r, r.dependent),
    fmt(r.independent, 2) + gbs(r, r.independent),
    fmt(r.torch, 2) + gbs(r, r.torch),
  ]),
));
console.log(
  `\nThe decode step's GEMVs (M = 1), ${N} calls in one pass, each output disposed at once ` +
    `(a barrier each, as in a decode step), same timing:\n`,
);
console.log(markdownTable(
  ["op", "weights MB", "µs per call", "GB/s"],
  opRows.map((r) => [r.op, fmt(r.mb, 2), fmt(r.us, 2), fmt(r.mb * 1e3 / r.us)]),
));
if (json) {
  await writeTextFileAtomic(
    json,
    JSON.stringify({ device: gpu.description, dispatches: N, reps: REPS, rows, opRows }, null, 2),
  );
}
gpu.device.destroy();
