/**
 * Helpers the bench scripts share: seeded data, medians, markdown tables, the CPU-adapter test,
 * the PyTorch probe and dispatch/submit/readback counters.
 *
 * @module
 */

import type { Gpu } from "../src/gpu/device.ts";
import type { KernelTime } from "../src/gpu/profiling.ts";

/** Whether the adapter is a CPU rasteriser (lavapipe / llvmpipe / SwiftShader). */
export function isCpuAdapter(gpu: Gpu): boolean {
  return /llvmpipe|lavapipe|swiftshader/i.test(gpu.description);
}

/** n values in [lo, hi) from a seeded mulberry32 stream. */
export function random(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = lo + (hi - lo) * (((t ^ (t >>> 14)) >>> 0) / 4294967296);
  }
  return out;
}

/** Median of a non-empty list. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/**
 * Median GPU µs a call over `n` samples: each sample records `record()` (`calls` calls) into the
 * command stream's compute pass, as a decode step chains its dispatches (WebGPU puts a barrier
 * between dependent ones), between two timestamp-only passes, then submits; the samples run back
 * to back. Unlike `Gpu.profile` (a pass per dispatch, each with its own start and drain), this is
 * the time a CUDA graph of the same kernels measures.
 *
 * @param gpu A device with the `timestamp-query` feature.
 * @param record Records one sample's calls.
 * @param calls Calls `record` makes (the divisor).
 * @param n Samples.
 */
export async function timeInOnePass(
  gpu: Gpu,
  record: () => void,
  calls: number,
  n: number,
): Promise<number> {
  return (await timeInOnePassEach(gpu, [record], calls, n))[0];
}

/**
 * {@linkcode timeInOnePass} for several recordings at once, their samples interleaved (A B A B
 * …), so that a clock that drifts weighs on each alike; the median µs a call of each.
 *
 * @param gpu A device with the `timestamp-query` feature.
 * @param records Each records one sample's calls.
 * @param calls Calls each record makes (the divisor).
 * @param n Samples of each.
 */
export async function timeInOnePassEach(
  gpu: Gpu,
  records: (() => void)[],
  calls: number,
  n: number,
): Promise<number[]> {
  const m = records.length * n;
  const qs = gpu.device.createQuerySet({ type: "timestamp", count: 2 * m });
  const resolve = gpu.device.createBuffer({
    size: 16 * m,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  try {
    for (let r = 0; r < m; r++) {
      const begin = { querySet: qs, beginningOfPassWriteIndex: 2 * r };
      const end = { querySet: qs, endOfPassWriteIndex: 2 * r + 1 };
      gpu.encoder().beginComputePass({ timestampWrites: begin }).end();
      records[r % records.length]();
      gpu.encoder().beginComputePass({ timestampWrites: end }).end();
      gpu.flush();
    }
    gpu.encoder().resolveQuerySet(qs, 0, 2 * m, resolve, 0);
    const t = new BigUint64Array(await gpu.read(resolve, 16 * m));
    const us = Array.from({ length: m }, (_, r) => Number(t[2 * r + 1] - t[2 * r]) / 1e3 / calls);
    // sample r belongs to record r % records.length
    return records.map((_, j) => median(us.filter((_, r) => r % records.length === j)));
  } finally {
    qs.destroy();
    resolve.destroy();
  }
}

/** A number for a table cell: "-" when absent or not finite, fewer digits when large. */
export function fmt(v: number | undefined | null, digits = 1): string {
  if (v === undefined || v === null || !Number.isFinite(v)) return "-";
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(digits);
}

/** A markdown table; columns from `left` on are right-aligned (numbers). */
export function markdownTable(head: string[], body: string[][], left = 1): string {
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? "").length)));
  const line = (c: string[]) =>
    "| " +
    w.map((n, i) => (i < left ? (c[i] ?? "").padEnd(n) : (c[i] ?? "").padStart(n))).join(" | ") +
    " |";
  return [
    line(head),
    "|" + w.map((n, i) => "-".repeat(n + 1) + (i < left ? "-" : ":") + "|").join(""),
    ...body.map(line),
  ].join("\n");
}

/** Dispatches, queue submits and readbacks (maps) recorded since {@linkcode Counters.reset}. */
export interface Counters {
  dispatches: number;
  submits: number;
  readbacks: number;
  syncs: number;
  /** Steps replayed from traces (`gpu.replay` calls). */
  replays: number;
  /** Dispatches those replays encoded (not counted in `dispatches`). */
  replayedDispatches: number;
  /** Zeroes the counts. */
  reset(): void;
}

/**
 * Counts what crosses the CPU–GPU line by wrapping this Gpu instance's `dispatch`, `replay`,
 * `readMany` and `sync` and its queue's `submit` (benchmark instrumentation; the library is
 * unchanged).
 */
export function countGpu(gpu: Gpu): Counters {
  const c: Counters = {
    dispatches: 0,
    submits: 0,
    readbacks: 0,
    syncs: 0,
    replays: 0,
    replayedDispatches: 0,
    reset() {
      c.dispatches =
        c.submits =
        c.readbacks =
        c.syncs =
        c.replays =
        c.replayedDispatches =
          0;
    },
  };
  const replay = gpu.replay.bind(gpu);
  gpu.replay = ((...a: Parameters<Gpu["replay"]>) => {
    c.replays++;
    c.replayedDispatches += a[0].dispatches.filter((d) => d.group).length;
    return replay(...a);
  }) as Gpu["replay"];
  const dispatch = gpu.dispatch.bind(gpu);
  gpu.dispatch = ((...a: Parameters<Gpu["dispatch"]>) => {
    c.dispatches++;
    return dispatch(...a);
  }) as Gpu["dispatch"];
  const readMany = gpu.readMany.bind(gpu);
  gpu.readMany = ((...a: Parameters<Gpu["readMany"]>) => {
    c.readbacks++;
    return readMany(...a);
  }) as Gpu["readMany"];
  const sync = gpu.sync.bind(gpu);
  gpu.sync = (() => {
    c.syncs++;
    return sync();
  }) as Gpu["sync"];
  const queue = gpu.device.queue;
  const submit = queue.submit.bind(queue);
  queue.submit = (cbs: GPUCommandBuffer[]) => {
    c.submits++;
    return submit(cbs);
  };
  return c;
}

/** Whether `python3` imports torch with CUDA (the PyTorch twins run only then). */
export async function torchCuda(): Promise<boolean> {
  if (Deno.permissions.querySync({ name: "run", command: "python3" }).state !== "granted") {
    return false;
  }
  try {
    const probe = await new Deno.Command("python3", {
      args: ["-c", "import torch; print(torch.cuda.is_available())"],
      stderr: "null",
    }).output();
    return new TextDecoder().decode(probe.stdout).trim() === "True";
  } catch {
    return false;
  }
}

/**
 * Runs a Python twin with one JSON argument; returns the JSON object on its last stdout line
 * (or throws with the last line of its stderr).
 */
export async function runPython(script: string, cfg: unknown): Promise<Record<string, unknown>> {
  const path = new URL(script, import.meta.url).pathname;
  const r = await new Deno.Command("python3", { args: [path, JSON.stringify(cfg)] }).output();
  const text = new TextDecoder().decode(r.stdout).trim();
  if (!r.success) {
    const err = new TextDecoder().decode(r.stderr).trim().split("\n").at(-1);
    throw new Error(`${script}: ${err}`);
  }
  return JSON.parse(text.split("\n").at(-1)!);
}

/**
 * Per-kernel times of `gpu.profile` summed by entry point (labels are
 * "shader:entry {defines} {constants}"), largest first.
 */
export function byEntryPoint(
  perKernel: Map<string, KernelTime>,
): { kernel: string; ms: number; count: number }[] {
  const byEntry = new Map<string, KernelTime>();
  for (const [label, k] of perKernel) {
    const name = label.split(" ")[0], e = byEntry.get(name) ?? { ms: 0, count: 0 };
    byEntry.set(name, { ms: e.ms + k.ms, count: e.count + k.count });
  }
  return [...byEntry].map(([kernel, k]) => ({ kernel, ...k })).sort((a, b) => b.ms - a.ms);
}
