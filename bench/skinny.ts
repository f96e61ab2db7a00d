/**
 * Linear layers at the row counts of a decode batch (parallel chains, B = 4–64): `tiled`
 * (64×64 tiles) against `gemv16` in blocks of 8 rows, and `gemv` (the matmul shader's GEMV) up
 * to M = 8, at the Qwen3-0.6B shapes in f16 (q/k/v stacked, gate, down, the LM head). GPU time
 * per call from timestamp queries (`gpu.profile`, the median of 5 samples of `--calls` calls each
 * after a warm-up), the weights cycled over copies that together exceed the 60 MB L2 so every call
 * reads them from HBM. This is what `linear`'s `auto` routing for 8 < M ≤ 64 rests on
 * (src/ops/matmul_launch.ts).
 *
 * `gemv16wide` (./src/ops/gemv.ts: 4–64 lanes a weight row, `--lanes 4,8`) is timed for M ≤ 64
 * (in blocks of 16 rows above 16). `skinny` (./src/ops/skinny.ts: x staged in f32 once a
 * workgroup, blocks of 16 rows) is timed for every M in the workgroup shapes of `--skinny`
 * (threads x lanes a slot of 4 columns, `skinnyTuning`; default `auto`, `skinnyShapeFor`).
 *
 * Usage: `deno run -A bench/skinny.ts [--rows 4,8,16,32,64] [--shapes lm,down] [--lanes 16]
 * [--skinny auto,128x16,64x8] [--variants skinny,gemv16] [--calls 64] [--quick] [--json FILE]`. On a CPU
 * adapter or with `--quick`: one small shape (on a CPU adapter ratios only).
 *
 * @module
 */

import { getGpu } from "../src/gpu/device.ts";
import { type KernelTime, MAX_PROFILED_DISPATCHES } from "../src/gpu/profiling.ts";
import { linear, type MatmulVariant } from "../src/ops/matmul.ts";
import { gemvTuning } from "../src/ops/gemv.ts";
import { skinnyTuning } from "../src/ops/skinny.ts";
import { randomTensor } from "../src/tensor/random.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";
import { scriptArgs } from "../src/cli/script_args.ts";
import { fmt, isCpuAdapter, markdownTable, median } from "./_common.ts";

const USAGE = `usage: deno run -A bench/skinny.ts [flags]

  --rows LIST      row counts M, comma-separated (default 4,8,16,32,64; --quick / CPU adapter 4,16)
  --shapes LIST    shapes whose name starts with these, comma-separated: q/k/v, gate, down, lm
                   (default all four; --quick / CPU adapter: one small shape)
  --lanes LIST     gemv16wide lanes a weight row, each 4, 8, 16, 32 or 64 (default 16)
  --skinny LIST    skinny workgroup shapes THREADSxLANES or auto (skinnyShapeFor), comma-separated
                   (default auto)
  --variants LIST  variants to time: gemv, gemv16, tiled, gemv16wide, skinny (default all)
  --calls N        calls a timed sample (default 64; CPU adapter 8)
  --quick          one small shape and M 4,16 (always on a CPU adapter)
  --json FILE      write the rows as JSON
  -h, --help       this text`;

const args = scriptArgs("skinny", USAGE, {
  rows: { type: "string" },
  shapes: { type: "string" },
  lanes: { type: "string" },
  skinny: { type: "string" },
  variants: { type: "string" },
  calls: { type: "string" },
  quick: { type: "boolean" },
  json: { type: "string" },
});
const SHAPES = [
  { name: "q/k/v", K: 1024, N: 4096 },
  { name: "gate", K: 1024, N: 3072 },
  { name: "down", K: 3072, N: 1024 },
  { name: "LM head", K: 1024, N: 151936 },
];
const SMALL_SHAPE = { name: "small", K: 64, N: 96 };
const matches = (name: string, w: string) => name.toLowerCase().startsWith(w.toLowerCase());
// Read (and checked) before the GPU opens; empty lists and undefined: the adapter's defaults.
const rowsArg = args.ints("rows", [], 1);
const wanted = args.str("shapes")?.split(",");
for (const w of wanted ?? []) {
  if (![...SHAPES, SMALL_SHAPE].some((s) => matches(s.name, w))) {
    args.fail(`--shapes: "${w}" starts no shape's name (q/k/v, gate, down, LM head, small)`);
  }
}
/** `gemv16wide` lane counts timed for M ≤ 16 (`gemvTuning.wideLanes`). */
const lanes = args.ints("lanes", [16], 1);
for (const l of lanes) {
  if (![4, 8, 16, 32, 64].includes(l)) {
    args.fail(`--lanes must be 4, 8, 16, 32 or 64 each, got ${l} in "${args.str("lanes")}"`);
  }
}
/** `skinny` workgroup shapes: threads x lanes a slot of 4 columns, or `auto` (`skinnyShapeFor`). */
const skinnyShapes = (args.str("skinny") ?? "auto").split(",").map((t) => {
  if (t === "auto") return [-1, -1];
  const tl = t.split("x");
  if (!(tl.length === 2 && tl.every((x) => /^\d+$/.test(x) && Number(x) >= 1))) {
    args.fail(`--skinny takes auto or THREADSxLANES (e.g. 64x8) each, got "${t}"`);
  }
  return tl.map(Number);
});
/** Variants to time (default: all). */
const VARIANTS = ["gemv", "gemv16", "tiled", "gemv16wide", "skinny"] as const;
const only: string[] | undefined = args.str("variants") === undefined
  ? undefined
  : args.oneOfList("variants", VARIANTS, []);
const callsArg = args.intOpt("calls", 1);
const json = args.str("json");

const gpu = await getGpu();
const cpu = isCpuAdapter(gpu);
/** CPU adapter or `--quick`: one small shape (`deno task bench` on lavapipe). */
const small = cpu || args.flag("quick");
const dtype = gpu.hasF16 ? "f16" : "f32";
const rows = rowsArg.length ? rowsArg : small ? [4, 16] : [4, 8, 16, 32, 64];
const shapes = (small ? [SMALL_SHAPE] : SHAPES)
  .filter((s) => !wanted || wanted.some((w) => matches(s.name, w)));
/**
 * Calls a sample (default 8 on a CPU adapter, 64 on a GPU): the H200 keeps its SM clock at 345
 * MHz under light load, so short bursts of small products time the idle clock.
 */
const calls = callsArg ?? (cpu ? 8 : 64);

interface Row {
  shape: string;
  M: number;
  variant: string;
  us: number;
}
const out: Row[] = [];
for (const s of shapes) {
  const bytes = s.N * s.K * (dtype === "f16" ? 2 : 4);
  const copies = cpu ? 1 : Math.max(1, Math.ceil(128e6 / bytes));
  const ws = Array.from(
    { length: copies },
    (_, i) => randomTensor(gpu, [s.N, s.K], { seed: i + 1, lo: -0.05, hi: 0.05, dtype }),
  );
  try {
    for (const M of rows) {
      using x = randomTensor(gpu, [M, s.K], { seed: 99, lo: -1, hi: 1, dtype });
      const base: MatmulVariant[] = M <= 8 ? ["gemv", "gemv16", "tiled"] : ["gemv16", "tiled"];
      type V = [MatmulVariant, number, number];
      const variants: V[] = [
        ...base.map((v): V => [v, 0, 0]),
        ...(M <= 64 ? lanes.map((l): V => ["gemv16wide", l, 0]) : []),
        ...skinnyShapes.map(([t, l]): V => ["skinny", l, t]),
      ].filter(([v]) => !only || only.includes(v));
      for (const [variant, lw, threads] of variants) {
        if (variant === "skinny") {
          skinnyTuning.wg = threads > 0 ? threads : undefined;
          skinnyTuning.lanes = lw > 0 ? lw : undefined;
        } else if (lw) gemvTuning.wideLanes = lw;
        let i = 0;
        const call = () => linear(x, ws[i++ % copies], { variant }).dispose();
        // A profile times at most 2048 dispatches: as many calls as fit (gemv16 takes ceil(M/16)).
        const perCall = new Map<string, KernelTime>();
        await gpu.profile(call, MAX_PROFILED_DISPATCHES, perCall);
        const d = [...perCall.values()].reduce((a, k) => a + k.count, 0);
        const n = Math.max(
          1,
          Math.min(calls, Math.floor(MAX_PROFILED_DISPATCHES / Math.max(1, d))),
        );
        for (let k = 0; k < n; k++) call();
        await gpu.sync();
        const samples: number[] = [];
        for (let r = 0; r < 5; r++) {
          const ms = await gpu.profile(() => {
            for (let k = 0; k < n; k++) call();
          });
          samples.push((ms / n) * 1000);
        }
        const name = threads
          ? `${variant} (${threads > 0 ? `${threads}x${lw}` : "auto"})`
          : lw
          ? `${variant} (${lw} lanes)`
          : variant;
        out.push({ shape: `${s.name} ${s.K}×${s.N}`, M, variant: name, us: median(samples) });
      }
    }
  } finally {
    for (const w of ws) w.dispose();
  }
}
const best = (r: Row) =>
  Math.min(...out.filter((o) => o.shape === r.shape && o.M === r.M).map((o) => o.us));
console.log(`device: ${gpu.description}; ${dtype}; linear x:[M, K] · w:[N, K]ᵀ`);
console.log(markdownTable(
  ["shape", "M", "variant", cpu ? "time / best" : "µs per call", "× best"],
  out.map((r) => [
    r.shape,
    `${r.M}`,
    r.variant,
    cpu ? "-" : fmt(r.us, 1),
    fmt(r.us / best(r), 2),
  ]),
  2,
));
if (json) {
  await writeTextFileAtomic(
    json,
    JSON.stringify({ device: gpu.description, dtype, rows: out }, null, 2) + "\n",
  );
  console.log(`wrote ${json}`);
}
