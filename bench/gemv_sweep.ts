/**
 * GEMV lanes sweep (issue #10): every `LANES` value of `shaders/gemv.wgsl` (8, 16, 32, 64 lanes
 * per weight row; `gemvLanes` in src/ops/gemv.ts picks one from K) at the decode shapes of
 * Qwen3-0.6B (hidden 1024, intermediate 3072, 16/8 heads × 128, vocabulary 151936) and
 * Qwen3-8B (hidden 4096, intermediate 12288, 32/8 heads × 128), f16, M = 1:
 * - `qkv+norm`: `gemv16_qkv` with the input RMSNorm (K = hidden, N = q + k + v rows);
 * - `swiglu+norm`: `gemv16_swiglu` with the post-attention RMSNorm (K = hidden, gate and up);
 * - `o_proj+res`, `down+res`: `gemv16` with the residual (K = q rows / intermediate);
 * - `lm_head` (0.6B): `gemv16` over the tied embedding `[151936, 1024]` (311 MB), beside
 *   `linear(..., { variant: "gemv" })`, i.e. matmul's `gemv_t`, which `auto` routes the LM head
 *   to today (N > `GEMV16_AUTO_MAX_N`).
 *
 * GPU time per dispatch from timestamp queries (`gpu.profile`, one pass per dispatch as in the
 * decode step's per-kernel table of bench/generate.ts): the median over `--reps` samples of the
 * mean over ~20 ms of back-to-back dispatches, after ~0.2 s of load to raise the clocks. The
 * dispatches rotate over copies of the weights that together exceed the L2 (≥ 256 MB), as a
 * decode step reads each layer's weights once. GB/s counts the weight bytes. Before timing, each
 * variant's output is spot-checked against the CPU twins (gemvReference, linearSwigluReference,
 * linearQkvReference on rmsNormRowsReference) at 16 columns.
 *
 * On a CPU adapter (lavapipe) the shapes shrink (hidden 256, intermediate 768, 4/2 heads × 128,
 * vocabulary 4096) and only ratios to the 64-lane time print: those timings say nothing about
 * a GPU.
 *
 * Usage: `deno run -A bench/gemv_sweep.ts [--json FILE] [--reps N] [--models 0.6b,8b]`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { getGpu } from "../src/gpu/device.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import { roundToF16 } from "../src/tensor/dtype.ts";
import { linear } from "../src/ops/matmul.ts";
import {
  dispatchGemv16,
  GEMV_LANES,
  type GemvLanes,
  gemvLanes,
  rmsNormRowsReference,
} from "../src/ops/gemv.ts";
import { fmt, isCpuAdapter, markdownTable, median, random } from "./_common.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    json: { type: "string" },
    reps: { type: "string" },
    models: { type: "string", default: "0.6b,8b" },
  },
});

const gpu = await getGpu();
const cpu = isCpuAdapter(gpu);
const dtype = gpu.hasF16 ? "f16" : "f32";
const BPE = dtype === "f16" ? 2 : 4;
const reps = Number(args.reps ?? (cpu ? 3 : 7));
const SAMPLE_MS = cpu ? 5 : 20;
const WARM_MS = cpu ? 0 : 200;
/** Weight copies are made until they hold this many bytes (the H200's L2 is ~60 MB). */
const ROTATE_BYTES = cpu ? 0 : 256 << 20;
const EPS = 1e-6;

/** A decode projection at a model's shape. */
interface Shape {
  model: string;
  op: "qkv+norm" | "swiglu+norm" | "o_proj+res" | "down+res" | "lm_head";
  K: number;
  /** Rows of w (gate for SwiGLU, wq for QKV). */
  N: number;
  /** QKV: rows of wk and wv. */
  N2: number;
  N3: number;
}

/** One timed variant. */
interface Row {
  model: string;
  op: string;
  K: number;
  /** Weight rows read (gate and up together, q, k and v together). */
  rows: number;
  weightMB: number;
  /** `LANES` value, or "gemv_t". */
  variant: string;
  /** Whether `gemvLanes` picks this LANES for the shape. */
  picked: boolean;
  us: number;
  minUs: number;
  gbps: number;
  /** Time over the 64-lane time of the same shape. */
  vs64: number;
  check: string;
}

function models(): { name: string; H: number; I: number; Hq: number; Hkv: number; V: number }[] {
  const D = 128;
  const all = cpu ? [{ name: "0.6b", H: 256, I: 768, Hq: 4, Hkv: 2, V: 4096 }] : [
    { name: "0.6b", H: 1024, I: 3072, Hq: 16, Hkv: 8, V: 151936 },
    { name: "8b", H: 4096, I: 12288, Hq: 32, Hkv: 8, V: 0 },
  ];
  const want = (args.models ?? "").split(",");
  return all.filter((m) => cpu || want.includes(m.name)).map((m) => ({
    ...m,
    Hq: m.Hq * D,
    Hkv: m.Hkv * D,
  }));
}

const shapes: Shape[] = [];
for (const m of models()) {
  const s = (op: Shape["op"], K: number, N: number, N2 = 0, N3 = 0) =>
    shapes.push({ model: `Qwen3-${m.name.toUpperCase()}`, op, K, N, N2, N3 });
  s("qkv+norm", m.H, m.Hq, m.Hkv, m.Hkv);
  s("swiglu+norm", m.H, m.I);
  s("o_proj+res", m.Hq, m.H);
  s("down+res", m.I, m.H);
  if (m.V) s("lm_head", m.H, m.V);
}

/** Seeded data in [-1, 1), rounded to the storage dtype. */
function data(n: number, seed: number): Float32Array {
  const d = random(n, seed);
  return dtype === "f16" ? roundToF16(d) : d;
}

/** `copies` tensors holding `d` (one upload, then buffer copies). */
function upload(d: Float32Array, shape: number[], copies: number): Tensor[] {
  const first = Tensor.fromArray(gpu, d, shape, dtype);
  const out = [first];
  for (let c = 1; c < copies; c++) {
    const t = Tensor.empty(gpu, shape, dtype);
    gpu.encoder().copyBufferToBuffer(
      first.buffer,
      0,
      t.buffer,
      0,
      Math.ceil(first.byteSize / 4) * 4,
    );
    out.push(t);
  }
  gpu.flush();
  return out;
}

/**
 * Median and fastest GPU ms per dispatch of `record(j)` (which encodes dispatch j), over
 * samples of ~{@linkcode SAMPLE_MS} after ~{@linkcode WARM_MS} of load.
 */
async function time(record: (j: number) => void): Promise<{ ms: number; minMs: number }> {
  const sample = async (n: number): Promise<number> => {
    if (gpu.hasTimestamps) {
      return await gpu.profile(() => {
        for (let j = 0; j < n; j++) record(j);
      }, n) / n;
    }
    await gpu.sync();
    const t0 = performance.now();
    for (let j = 0; j < n; j++) record(j);
    await gpu.sync();
    return (performance.now() - t0) / n;
  };
  const first = await sample(1);
  const k = Math.max(1, Math.min(2000, Math.round(SAMPLE_MS / first)));
  for (let j = 0; j < Math.min(20000, Math.ceil(WARM_MS / first)); j++) record(j);
  const samples: number[] = [];
  for (let i = 0; i < reps; i++) samples.push(await sample(k));
  return { ms: median(samples), minMs: Math.min(...samples) };
}

/** Row `n` of `w:[N, K]` dotted with `x:[K]` in f64. */
function dot(x: ArrayLike<number>, w: Float32Array, n: number, K: number): number {
  let s = 0;
  for (let k = 0; k < K; k++) s += x[k] * w[n * K + k];
  return s;
}

/** "ok", or the first of 16 spread columns where `got` misses `want(col)`. */
function spotCheck(got: Float32Array, want: (col: number) => number, K: number, scale = 1) {
  const atol = (dtype === "f16" ? 2e-3 : 4e-6) * Math.sqrt(K) * scale;
  const rtol = dtype === "f16" ? 4e-3 : 1e-4;
  for (let j = 0; j < 16; j++) {
    const c = Math.min(got.length - 1, Math.floor((j * got.length) / 15));
    const e = want(c);
    if (!(Math.abs(got[c] - e) <= atol + rtol * Math.abs(e))) {
      return `FAIL col ${c}: ${got[c]} vs ${e.toPrecision(6)}`;
    }
  }
  return "ok";
}

async function runShape(s: Shape): Promise<Row[]> {
  const { K, N, N2, N3 } = s;
  const rows = s.op === "swiglu+norm" ? 2 * N : N + N2 + N3;
  const bytes = rows * K * BPE;
  const copies = Math.max(1, Math.min(32, Math.ceil(ROTATE_BYTES / bytes)));
  const norm = s.op === "qkv+norm" || s.op === "swiglu+norm";
  const x = data(K, 1), gain = data(K, 2), res = data(N, 3);
  const w = data(N * K, 4);
  const w2 = s.op === "swiglu+norm" ? data(N * K, 5) : s.op === "qkv+norm" ? data(N2 * K, 5) : w;
  const w3 = s.op === "qkv+norm" ? data(N3 * K, 6) : w;
  const xn = norm ? rmsNormRowsReference(x, gain, EPS) : x;
  using tx = Tensor.fromArray(gpu, x, [1, K], dtype);
  using tg = Tensor.fromArray(gpu, gain, [K], dtype);
  using tr = Tensor.fromArray(gpu, res, [1, N], dtype);
  const tw = upload(w, [N, K], copies);
  const tw2 = w2 === w ? tw : upload(w2, [w2.length / K, K], copies);
  const tw3 = w3 === w ? tw : upload(w3, [w3.length / K, K], copies);
  using y = Tensor.empty(gpu, [1, N], dtype);
  using y2 = Tensor.empty(gpu, [1, Math.max(1, N2)], dtype);
  using y3 = Tensor.empty(gpu, [1, Math.max(1, N3)], dtype);
  const entry = s.op === "qkv+norm"
    ? "gemv16_qkv"
    : s.op === "swiglu+norm"
    ? "gemv16_swiglu"
    : "gemv16";
  const dispatch = (lanes: GemvLanes, c: number) =>
    dispatchGemv16(gpu, {
      entry,
      dtype,
      M: 1,
      N,
      N2,
      N3,
      K,
      lanes,
      x: tx.buffer,
      offX: 0,
      norm: norm ? { gain: tg.buffer, eps: EPS } : undefined,
      w: tw[c].buffer,
      w2: entry === "gemv16" ? undefined : tw2[c].buffer,
      w3: entry === "gemv16_qkv" ? tw3[c].buffer : undefined,
      res: s.op.endsWith("+res") ? tr.buffer : undefined,
      offR: 0,
      y: y.buffer,
      y2: y2.buffer,
      y3: y3.buffer,
      offY: 0,
      ldy: N,
    });
  const check = async (): Promise<string> => {
    const got = await y.toArray();
    if (s.op === "swiglu+norm") {
      return spotCheck(
        got,
        (c) => {
          const g = dot(xn, w, c, K), u = dot(xn, w2, c, K);
          return (g / (1 + Math.exp(-g))) * u;
        },
        K,
        Math.sqrt(K),
      );
    }
    const plus = s.op.endsWith("+res") ? res : undefined;
    let r = spotCheck(got, (c) => dot(xn, w, c, K) + (plus ? plus[c] : 0), K);
    if (s.op === "qkv+norm") {
      for (const [t, m] of [[y2, w2], [y3, w3]] as const) {
        if (r === "ok") r = spotCheck(await t.toArray(), (c) => dot(xn, m, c, K), K);
      }
    }
    return r;
  };
  const picked = gemvLanes(K, dtype, rows);
  const out: Row[] = [];
  const row = (variant: string, t: { ms: number; minMs: number }, ok: string): Row => ({
    model: s.model,
    op: s.op,
    K,
    rows,
    weightMB: bytes / 1e6,
    variant,
    picked: variant === String(picked),
    us: t.ms * 1e3,
    minUs: t.minMs * 1e3,
    gbps: bytes / (t.ms * 1e-3) / 1e9,
    vs64: NaN,
    check: ok,
  });
  try {
    for (const lanes of GEMV_LANES) {
      dispatch(lanes, 0);
      const ok = await check();
      out.push(row(String(lanes), await time((j) => dispatch(lanes, j % copies)), ok));
    }
    if (s.op === "lm_head") {
      // today's route: linear's `gemv` variant, i.e. matmul's gemv_t (4-element loads)
      const gemvT = (c: number) => linear(tx, tw[c], { out: y, variant: "gemv" });
      gemvT(0);
      const ok = spotCheck(await y.toArray(), (c) => dot(xn, w, c, K), K);
      out.push(row("gemv_t", await time((j) => gemvT(j % copies)), ok));
    }
  } finally {
    for (const t of new Set([...tw, ...tw2, ...tw3])) t.dispose();
  }
  const base = out.find((r) => r.variant === "64")!.us;
  for (const r of out) r.vs64 = r.us / base;
  return out;
}

console.log(
  `# GEMV lanes sweep on ${gpu.description} (${dtype}, M = 1, ${
    gpu.hasTimestamps ? "timestamp queries" : "wall clock"
  }, median of ${reps})\n`,
);
const all: Row[] = [];
for (const s of shapes) {
  const rows = await runShape(s);
  all.push(...rows);
  for (const r of rows) {
    console.error(`${r.model} ${r.op} ${r.variant}: ${fmt(r.us)} µs (${r.check})`);
  }
}

const head = cpu
  ? ["model", "op", "K", "rows", "variant", "time / 64 lanes", "check"]
  : ["model", "op", "K", "rows", "MB", "variant", "µs", "min µs", "GB/s", "/ 64 lanes", "check"];
const body = all.map((r) => {
  const v = r.variant + (r.picked ? " *" : "");
  return cpu ? [r.model, r.op, String(r.K), String(r.rows), v, fmt(r.vs64, 2), r.check] : [
    r.model,
    r.op,
    String(r.K),
    String(r.rows),
    fmt(r.weightMB),
    v,
    fmt(r.us),
    fmt(r.minUs),
    fmt(r.gbps, 0),
    fmt(r.vs64, 2),
    r.check,
  ];
});
console.log(markdownTable(head, body, 2));
console.log(
  "\n`*`: the lanes `gemvLanes` picks. GB/s: weight bytes over the median time." +
    (cpu ? " CPU adapter: ratios only." : ""),
);

if (args.json) {
  const doc = { adapter: gpu.description, dtype, reps, rows: all };
  await writeTextFileAtomic(args.json, JSON.stringify(doc, null, 2) + "\n");
  console.log(`wrote ${args.json}`);
}
