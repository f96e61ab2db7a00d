/**
 * The report of bench/attention.ts: its row type, the markdown table and its legend, the flash
 * plan in words, and the PyTorch twin (bench/torch_attention.py) it runs after its own rows.
 *
 * @module
 */

import type { FlashDecodePlan } from "../src/cache/paged_decode_plan.ts";
import { fmt } from "./_common.ts";

/** Storage dtypes the bench times. */
export type Dt = "f32" | "f16";

/** One result row of bench/attention.ts. */
export interface Row {
  dtype: Dt;
  ctx: number;
  B: number;
  /** "dense" or "dms CR=x" (forced). */
  cache: string;
  /** The decode kernel pagedAttention routed to (decodeKernelFor). */
  kernel: string;
  forcedCr?: number;
  /** Tokens / live entries. */
  cr: number;
  liveMB: number;
  check: string;
  us: number;
  minUs: number;
  gbps: number;
  /** The v2 split kernel's median µs (decodeKernel "split"). */
  oldUs?: number;
  /** The flash kernel's median µs under the `--other-*` tuning (see `--other`). */
  otherUs?: number;
  /**
   * The routed kernel's median µs a step with its steps recorded back to back in one compute
   * pass (timed by timestamps around the pass), as a decode step chains its dispatches; `us`
   * times each dispatch in a pass of its own (bench/attention.ts `timeChained`).
   */
  chainedUs?: number;
  /**
   * `--cold`: the same chained timing over `copies` identical caches, a step each in turn, so
   * that a cache smaller than the L2 is read from memory (`chainedUs` repeats one cache, which
   * then stays in the L2).
   */
  coldUs?: number;
  /** `--cold` with `--other`: the `--other` tuning timed the same way, interleaved with it. */
  otherColdUs?: number;
  /** `--other`: its tuning chained like `chainedUs`, the samples interleaved with it. */
  otherChainedUs?: number;
  /** `--cold`: the caches the cold timing rotates over (1: the cache alone spans `--cold`). */
  copies?: number;
  /** PyTorch SDPA over the dense cache of this shape, eager (each call launched by the host). */
  torchUs?: number;
  /** The same calls captured as one CUDA graph: the GPU's own time. */
  torchGraphUs?: number;
  /** DMS rows: SDPA (CUDA graph) over a dense cache holding this row's live keys a head. */
  torchLiveUs?: number;
  /** `--cold`: PyTorch's CUDA graph over as many copies of its cache, a call each in turn. */
  torchColdUs?: number;
  /** `--cold`, DMS rows: the same over copies of the dense cache of the row's live keys. */
  torchLiveColdUs?: number;
  /** The flash kernel's plan over this row's pages ({@linkcode planText}); `otherPlan`: `--other`'s. */
  plan?: string;
  otherPlan?: string;
  skipped?: string;
}

/**
 * A flash plan over pages of these lengths in words: the workgroups (pages × splits a page;
 * `pages·SH` with a head split), the
 * most keys a split takes (the kernel sizes adaptive splits from each page's own length, as
 * `decode_online` does: at least KMIN, at most PSMAX), and the blocks of KB keys that split walks
 * in turn. Each block is one dependent load of K and of V (docs/performance.md, session 22).
 *
 * @example 8 pages of 4600 keys, 64 splits a page, adaptive, KMIN 64, blocks of 32
 * ```ts
 * import type { FlashDecodePlan } from "../src/cache/paged_decode_plan.ts";
 * import { planText } from "./_attention_report.ts";
 * const plan = { np: 64, ps: 0, shape: { KB: 32, KMIN: 64, PSMAX: 512 } } as FlashDecodePlan;
 * console.log(planText(plan, new Array(8).fill(4600))); // "8×64 wg, 72 keys = 3 blocks of 32"
 * ```
 */
export function planText(plan: FlashDecodePlan, lens: ArrayLike<number>): string {
  const { KB, KMIN, PSMAX } = plan.shape;
  let most = 0;
  for (let i = 0; i < lens.length; i++) {
    const len = lens[i];
    const ps = plan.ps || Math.min(PSMAX, Math.max(KMIN, Math.ceil(len / plan.np)));
    most = Math.max(most, Math.min(ps, len));
  }
  const blocks = Math.ceil(most / KB);
  // A head split (SH > 1): SH workgroups a (page, split), G / SH heads each.
  const SH = plan.shape.SH ?? 1;
  const pages = SH > 1 ? `${lens.length}·${SH}` : `${lens.length}`;
  return `${pages}×${plan.np} wg, ${most} keys = ${blocks} block${
    blocks === 1 ? "" : "s"
  } of ${KB}`;
}

/** One PyTorch SDPA shape: a contiguous dense cache of S keys a head. */
export interface TorchJob {
  key: string;
  S: number;
  B: number;
  dtype: Dt;
  /** Copies of the cache the calls take in turn (`--cold`; 1 or absent: one cache). */
  copies?: number;
}

/** PyTorch's times (ms) by key: eager and CUDA graph. */
export interface TorchTimes {
  eager: Record<string, number | null>;
  graph: Record<string, number | null>;
}

/** The attention geometry and sampling the twin copies. */
export interface TorchSetup {
  /** KV heads, query heads per KV head, head dim. */
  Hkv: number;
  G: number;
  D: number;
  /** A CPU adapter: few calls (the twin needs CUDA anyway). */
  cpu: boolean;
  /** Timed samples, the median reported. */
  reps: number;
}

/**
 * PyTorch SDPA times by key (bench/torch_attention.py), when python3 has torch with CUDA; else
 * undefined, with a line that says why.
 */
export async function torchTimes(
  shapes: TorchJob[],
  { Hkv, G, D, cpu, reps }: TorchSetup,
): Promise<TorchTimes | undefined> {
  if (shapes.length === 0) return undefined;
  if (Deno.permissions.querySync({ name: "run", command: "python3" }).state !== "granted") {
    console.log("PyTorch comparison skipped: needs --allow-run (deno run -A bench/attention.ts).");
    return undefined;
  }
  const script = new URL("./torch_attention.py", import.meta.url).pathname;
  const jobs = shapes.map((x) => ({
    key: x.key,
    B: x.B,
    Hkv,
    G,
    S: x.S,
    D,
    dtype: x.dtype,
    copies: x.copies ?? 1,
  }));
  const cfg = { jobs, warmup: cpu ? 2 : 20, iters: cpu ? 3 : 50, reps };
  try {
    const probe = await new Deno.Command("python3", {
      args: ["-c", "import torch; print(torch.cuda.is_available())"],
      stderr: "null",
    }).output();
    if (new TextDecoder().decode(probe.stdout).trim() !== "True") {
      console.log("PyTorch comparison skipped: python3 has no torch with CUDA.");
      return undefined;
    }
    const r = await new Deno.Command("python3", { args: [script, JSON.stringify(cfg)] }).output();
    const text = new TextDecoder().decode(r.stdout).trim();
    if (!r.success) throw new Error(new TextDecoder().decode(r.stderr).trim().split("\n").at(-1));
    const doc = JSON.parse(text.split("\n").at(-1)!);
    console.log(
      `PyTorch ${doc.torch} on ${doc.device}: F.scaled_dot_product_attention, CUDA events, ` +
        "eager and as one CUDA graph",
    );
    for (const [k, e] of Object.entries(doc.errors ?? {})) console.log(`  torch ${k}: ${e}`);
    return { eager: doc.times ?? {}, graph: doc.graph ?? {} };
  } catch (e) {
    console.log(`PyTorch comparison skipped: ${(e as Error).message}`);
    return undefined;
  }
}

/** Keys a head of the dense cache PyTorch times for a DMS row: its live keys (tokens / CR). */
export function liveKeys(r: Row): number {
  return Math.max(1, Math.round(r.ctx / r.cr));
}

/** A row's shape as the twin's job keys name it. */
export function key(x: { ctx: number; B: number; dtype: Dt }): string {
  return `${x.dtype} S=${x.ctx} B=${x.B}`;
}

/** The rows as a markdown table; `cold` adds the `--cold` columns. */
export function table(rows: Row[], cold: boolean): string {
  const head = [
    "dtype",
    "ctx",
    "B",
    "cache",
    "kernel",
    "CR",
    "live MB",
    "check",
    "µs",
    "GB/s",
    "chained µs",
    "old µs",
    "new/old",
    "other µs",
    "this/other",
    "other chained µs",
    "chained this/other",
    "torch µs",
    "torch GB/s",
    "ours/torch",
    "torch/ours",
    "torch graph µs",
    "torch@live µs",
    "chained/graph",
    "dense/this",
    ...(!cold ? [] : [
      "copies",
      "cold µs",
      "other cold µs",
      "torch cold graph µs",
      "torch@live cold µs",
      "cold/graph",
    ]),
  ];
  const body = rows.map((r) => {
    if (r.skipped) {
      return [r.dtype, `${r.ctx}`, `${r.B}`, r.cache, "-", "skipped: " + r.skipped];
    }
    const dense = rows.find((x) =>
      !x.forcedCr && x.dtype === r.dtype && x.ctx === r.ctx && x.B === r.B
    );
    const denseBytes = (dense?.liveMB ?? NaN) * 1e6;
    return [
      r.dtype,
      `${r.ctx}`,
      `${r.B}`,
      r.cache,
      r.kernel,
      fmt(r.cr, 2),
      fmt(r.liveMB),
      r.check,
      fmt(r.us),
      fmt(r.gbps),
      fmt(r.chainedUs),
      fmt(r.oldUs),
      fmt(r.oldUs ? r.us / r.oldUs : undefined, 2),
      fmt(r.otherUs),
      fmt(r.otherUs ? r.us / r.otherUs : undefined, 2),
      fmt(r.otherChainedUs),
      fmt(r.chainedUs && r.otherChainedUs ? r.chainedUs / r.otherChainedUs : undefined, 2),
      fmt(r.torchUs),
      fmt(r.torchUs ? denseBytes / (r.torchUs * 1e-6) / 1e9 : undefined),
      fmt(r.torchUs ? r.us / r.torchUs : undefined, 2),
      fmt(r.torchUs ? r.torchUs / r.us : undefined, 2),
      fmt(r.torchGraphUs),
      fmt(r.torchLiveUs),
      fmt(r.chainedUs && r.torchGraphUs ? r.chainedUs / r.torchGraphUs : undefined, 2),
      fmt(dense && r !== dense ? dense.us / r.us : undefined, 2),
      ...(!cold ? [] : [
        fmt(r.copies, 0),
        fmt(r.coldUs),
        fmt(r.otherColdUs),
        fmt(r.torchColdUs),
        fmt(r.torchLiveColdUs),
        fmt(r.coldUs && r.torchColdUs ? r.coldUs / r.torchColdUs : undefined, 2),
      ]),
    ];
  });
  const w = head.map((h, i) =>
    Math.max(h.length, ...body.map((b) => (b.length > 6 ? b[i].length : 0)))
  );
  const line = (c: string[]) =>
    "| " + c.map((x, i) => (i < 5 ? x.padEnd(w[i]) : x.padStart(w[i]))).join(" | ") + " |";
  return [
    line(head),
    "|" + w.map((n, i) => "-".repeat(n + 1) + (i < 5 ? "-" : ":") + "|").join(""),
    ...body.map(line),
  ].join("\n");
}

/** What the table's columns mean; `cold` adds the `--cold` ones. */
export function legend(cold: boolean): string {
  return (
    "kernel: flash = decode_online + combine (src/cache/paged_decode.ts); " +
    "other µs: the same under the --other-* tuning (--other), other chained µs: chained, " +
    "interleaved with the chained µs; old µs: the v2 split " +
    "kernel (decode + merge_split) on the same pages; new/old: the routed kernel's time over it. " +
    "ours/torch: our time over PyTorch SDPA dense (target <= 1.2 for dense at 32K); torch/ours: " +
    "speed-up over it (target >= 5 for DMS at CR 8); dense/this: our dense time over this row's " +
    "(target >= 6.5 at 32K). GB/s: live K+V bytes per step time (torch: of the dense cache). " +
    "torch µs: eager (the host launches each call); torch graph µs: the same calls as one CUDA " +
    "graph; torch@live µs: SDPA (CUDA graph) over a dense cache of the DMS row's live keys a " +
    "head (tokens / CR): PyTorch's own time for the bytes DMS keeps. µs: each dispatch timed in " +
    "a pass of its own (every dispatch of a step summed); chained µs: steps recorded back to " +
    "back in one pass, as a decode step chains its dispatches (what the CUDA graph column " +
    "measures for PyTorch); chained/graph: the two's ratio." +
    (!cold ? "" : " cold µs (--cold): chained over `copies` identical caches " +
      "spanning at least the --cold size, a step each in turn, so that a cache smaller than the " +
      "L2 is read from memory; other cold µs: the --other tuning likewise, interleaved with it; " +
      "torch cold graph µs and torch@live cold µs: PyTorch's graph over " +
      "as many copies of its cache; cold/graph: the two's ratio.")
  );
}
