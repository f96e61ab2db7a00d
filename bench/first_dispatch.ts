/**
 * What each pipeline's first use costs: runs a script (default `examples/demo.ts`, with the
 * arguments after `--`) with `gpu.kernel` and `gpu.dispatch` wrapped, and prints per pipeline
 * the time to create it, the submit of its first dispatch and of its second dispatch (each
 * submitted alone: the work queued before it is flushed first), with what makes a kernel slow to
 * compile on Mesa's llvmpipe GL driver: its workgroup barriers (counted after inlining: a
 * barrier in a function called from three places counts three times, as LLVM sees it; loops
 * not unrolled) and its `var<workgroup>` arrays.
 *
 * On llvmpipe GL the driver compiles a pipeline's shader at its first dispatch, inside the
 * submit (so the first-dispatch column holds the compile); on Vulkan (lavapipe, GPUs) it
 * compiles in `createComputePipeline`. Time it with an empty shader cache:
 *
 *   MESA_SHADER_CACHE_DISABLE=true DENO_WEBGPU_BACKEND=gl deno run -A bench/first_dispatch.ts
 *   deno run -A bench/first_dispatch.ts examples/demo.ts --samples 2
 *
 * A first argument ending in `.ts` names the script (relative to the repository root); the
 * other arguments go to it.
 *
 * @module
 */

import process from "node:process";
import { getGpu } from "../src/gpu/device.ts";
import type { Kernel, KernelSpec } from "../src/gpu/pipelines.ts";
import { loadShaderSource, preprocess } from "../src/gpu/shader.ts";

let script = "examples/demo.ts";
if (process.argv[2]?.endsWith(".ts")) [script] = process.argv.splice(2, 1);

/** Per pipeline: creation, first and second dispatch (seconds), and its shape of barriers. */
interface Row {
  label: string;
  spec: KernelSpec;
  create: number;
  first?: number;
  second?: number;
  dispatches: number;
}

const gpu = await getGpu();
const rows = new Map<string, Row>();
const kernel = gpu.kernel.bind(gpu);
gpu.kernel = (spec: KernelSpec): Kernel => {
  const t0 = performance.now();
  const k = kernel(spec);
  if (!rows.has(k.label)) {
    rows.set(k.label, {
      label: k.label,
      spec,
      create: (performance.now() - t0) / 1000,
      dispatches: 0,
    });
  }
  return k;
};
const dispatch = gpu.dispatch.bind(gpu);
gpu.dispatch = (...a: Parameters<typeof dispatch>): void => {
  const row = rows.get(a[0].label);
  const n = row ? ++row.dispatches : 0;
  if (!row || n > 2) return dispatch(...a);
  gpu.flush();
  const t0 = performance.now();
  dispatch(...a);
  gpu.flush();
  const s = (performance.now() - t0) / 1000;
  if (n === 1) row.first = s;
  else row.second = s;
};

const t0 = performance.now();
await import(new URL(`../${script}`, import.meta.url).href);
await gpu.sync();
const total = (performance.now() - t0) / 1000;

const list = [...rows.values()].sort((x, y) => (y.first ?? 0) - (x.first ?? 0));
const firsts = list.reduce((s, r) => s + (r.first ?? 0) + r.create, 0);
console.log(
  `\n${gpu.description}, ${script}: ${total.toFixed(1)} s in all, ` +
    `${
      firsts.toFixed(1)
    } s creating pipelines and in their first submits (${list.length} pipelines)`,
);
console.log(
  "| pipeline | create s | 1st dispatch s | 2nd dispatch s | dispatches | barriers | workgroup arrays |",
);
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const r of list) {
  const shape = await barrierShape(r.spec);
  console.log(
    `| ${r.label} | ${r.create.toFixed(2)} | ${fmtS(r.first)} | ${fmtS(r.second)} | ` +
      `${r.dispatches} | ${shape.barriers} | ${shape.arrays.join(", ") || "-"} |`,
  );
}

function fmtS(s: number | undefined): string {
  return s === undefined ? "-" : s.toFixed(2);
}

/**
 * Barriers of the entry point after inlining (each call site counts its callee's barriers) and
 * the `var<workgroup>` arrays it reaches, e.g. `bins: array<u32, BINS * WG>` with WG = 32.
 */
async function barrierShape(spec: KernelSpec): Promise<{ barriers: number; arrays: string[] }> {
  const code = preprocess(await loadShaderSource(spec.shader), spec.defines)
    .replace(/\/\/[^\n]*/g, "");
  const bodies = new Map<string, string>();
  for (const m of code.matchAll(/\bfn\s+(\w+)\s*\(/g)) {
    const open = code.indexOf("{", m.index! + m[0].length);
    let depth = 0, i = open;
    for (; i < code.length; i++) {
      if (code[i] === "{") depth++;
      else if (code[i] === "}" && --depth === 0) break;
    }
    bodies.set(m[1], code.slice(open, i + 1));
  }
  const memo = new Map<string, number>();
  const reached = new Set<string>();
  const count = (f: string): number => {
    if (memo.has(f)) return memo.get(f)!;
    memo.set(f, 0); // no recursion in WGSL
    const body = bodies.get(f) ?? "";
    let n = (body.match(/\bworkgroupBarrier\s*\(/g) ?? []).length;
    for (const w of body.match(/(?<![.\w])[A-Za-z_]\w*\b/g) ?? []) {
      reached.add(w);
      if (bodies.has(w) && w !== f) n += count(w);
    }
    memo.set(f, n);
    return n;
  };
  const barriers = count(spec.entry);
  const consts = spec.constants ?? {};
  const arrays: string[] = [];
  for (const m of code.matchAll(/var<workgroup>\s*(\w+)\s*:\s*([^;]+);/g)) {
    if (!reached.has(m[1]) || !m[2].startsWith("array")) continue;
    arrays.push(`${m[1]}: ${m[2].trim()}`);
  }
  if (arrays.length && Object.keys(consts).length) arrays.push(`with ${JSON.stringify(consts)}`);
  return { barriers, arrays };
}
