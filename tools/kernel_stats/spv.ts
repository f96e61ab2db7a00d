/**
 * Registers and shared memory of our WGSL kernels as the NVIDIA driver compiles them, step 1 of 2
 * (here, on any machine): each kernel variant -> SPIR-V with naga (npm `naga-wasm`, the
 * translator wgpu uses; the version differs from Deno's, so counts can differ by a few registers),
 * its `override` constants substituted as `const`s, plus `args.txt` for `vkstats` and the Vulkan
 * headers it compiles against (`apt-get install -y libvulkan-dev` here first). Step 2 runs on the
 * GPU machine: `bash tools/kernel_stats/run.sh .device/stats` (carry `.gpu` and `.device/stats`),
 * which builds `vkstats.c` there and prints `Register Count` and `Shared Memory Size` per kernel
 * (VK_KHR_pipeline_executable_properties). Occupancy follows: 65536 registers and 228 KB a
 * streaming multiprocessor on the H200, registers allocated per warp.
 *
 * Usage: `deno run -A tools/kernel_stats/spv.ts [--out .device/stats] [--decode]
 * [--kernel shader:entry[:T] --constants NAME=V,...]...`. `--decode` adds `decode_online` for
 * f16 / f32, G 1, 2, 4, 8, 128 threads and loads J 1, 2, 4, 8 (src/cache/paged_decode_plan.ts
 * `flashDecodeShape`, D 128), each also with `FUSED` 1 (the fused merge's tail), `EARLY` 1 (the
 * early first-block loads) and both; each `--kernel`
 * takes the `--constants` that follow it.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { NagaError, parseWgsl, validate, writeSpirv } from "naga-wasm";
import {
  loadShaderSource,
  parseBindings,
  preprocess,
  resolveIncludes,
} from "../../src/gpu/shader.ts";
import { type ScriptArgs, scriptArgs } from "../../src/cli/script_args.ts";
import { SHADER_FILES } from "../../src/gpu/manifest.ts";
import { flashDecodeShape } from "../../src/cache/paged_decode_plan.ts";

/** One kernel variant: a shader's entry point with its defines and override constants. */
interface Variant {
  name: string;
  shader: string;
  entry: string;
  defines: Record<string, string>;
  constants: Record<string, number>;
}

const USAGE = `usage: deno run -A tools/kernel_stats/spv.ts [flags]

  --out DIR                        where the SPIR-V, args.txt and the headers go
                                   (default .device/stats)
  --decode                         add every decode_online variant (dtype, G, loads; FUSED,
                                   EARLY)
  --kernel shader:entry[:T]        add one kernel (repeatable), with T the element type
  --constants NAME=V,...           the override constants of the --kernel before it`;
const OPTIONS = {
  out: { type: "string", default: ".device/stats" },
  decode: { type: "boolean", default: false },
  kernel: { type: "string", multiple: true },
  constants: { type: "string", multiple: true },
} as const;
const cli: ScriptArgs = scriptArgs("spv", USAGE, OPTIONS); // --help and bad flags (exit 2)
const args = { out: cli.str("out")!, decode: cli.flag("decode") };
// the tokens, for which --constants follow which --kernel (the flags are valid: checked above)
const { tokens } = parseArgs({ args: Deno.args, options: OPTIONS, tokens: true });

const variants: Variant[] = [];
if (args.decode) {
  for (const dtype of ["f16", "f32"] as const) {
    for (const G of [1, 2, 4, 8]) {
      for (const loads of [1, 2, 4, 8]) {
        const c = flashDecodeShape(dtype, G, 128, 1 << 16, { threads: 128, loads });
        if (!c || c.J !== loads) continue;
        // FUSED 1: the merge of the page's splits in the kernel's tail (combine "fused"); its
        // registers count for the whole kernel's occupancy. EARLY 1: the first block's loads
        // beside the visibility reads (tuning earlyLoads).
        for (const [fused, early] of [[0, 0], [1, 0], [0, 1], [1, 1]]) {
          const tag = `${fused ? "_fused" : ""}${early ? "_early" : ""}`;
          variants.push({
            name: `decode_online_${dtype}_g${G}_j${loads}${tag}`,
            shader: "paged_decode",
            entry: "decode_online",
            defines: { T: dtype },
            constants: { ...c, DIRECT: 0, FUSED: fused, EARLY: early },
          });
        }
      }
    }
  }
}
// --kernel shader:entry[:T], each followed by its own --constants.
for (const t of tokens ?? []) {
  if (t.kind !== "option") continue;
  if (t.name === "kernel") {
    const [shader, entry, T] = (t.value ?? "").split(":");
    if (!shader || !entry) {
      cli.fail(`--kernel: want shader:entry[:T], got "${t.value}"`);
    }
    const defines: Record<string, string> = T ? { T } : {};
    variants.push({
      name: `${shader}_${entry}${T ? `_${T}` : ""}`,
      shader,
      entry,
      defines,
      constants: {},
    });
  } else if (t.name === "constants") {
    const v = variants.at(-1);
    if (!v) {
      cli.fail("--constants: give a --kernel first");
    }
    for (const kv of (t.value ?? "").split(",").filter(Boolean)) {
      const [k, x] = kv.split("=");
      if (!k || x === undefined || !Number.isFinite(Number(x))) {
        cli.fail(`--constants: want NAME=number, got "${kv}"`);
      }
      v.constants[k] = Number(x);
      v.name += `_${k}${x}`;
    }
  }
}
if (!variants.length) {
  cli.fail("nothing to compile: pass --decode or --kernel shader:entry[:T]");
}

const sources = new Map<string, string>();
for (const f of SHADER_FILES) sources.set(f, await loadShaderSource(f));
const out = args.out;
await Deno.mkdir(`${out}/spv`, { recursive: true });
const lines: string[] = [];
let failed = 0;
for (const v of variants) {
  const src = sources.get(v.shader);
  if (src === undefined) {
    console.error(`${v.name}: no shader "${v.shader}" in src/gpu/manifest.ts`);
    failed++;
    continue;
  }
  // Overrides become constants (naga's SPIR-V writer wants no pipeline constants left).
  const code = preprocess(resolveIncludes(src, (n) => sources.get(n)), v.defines).replace(
    /^override\s+(\w+)\s*:\s*(\w+)\s*(?:=\s*([^;]+))?;/gm,
    (_m, n: string, t: string, d?: string) =>
      n in v.constants ? `const ${n}: ${t} = ${t}(${v.constants[n]});` : `const ${n}: ${t} = ${d};`,
  );
  const kinds = parseBindings(code, v.entry).map((b) => (b.kind === "uniform" ? "u" : "s"));
  try {
    using module = parseWgsl(code);
    using info = validate(module);
    const words = writeSpirv(module, info);
    await Deno.writeFile(
      `${out}/spv/${v.name}.spv`,
      new Uint8Array(words.buffer, words.byteOffset, words.byteLength),
    );
    lines.push(`${v.name}.spv ${v.entry} ${kinds.join("")}`);
  } catch (e) {
    console.error(`${v.name}: ${e instanceof NagaError ? e.formatted : e}`);
    failed++;
  }
}
await Deno.writeTextFile(`${out}/spv/args.txt`, lines.join("\n") + "\n");
// The Vulkan headers vkstats.c needs (the GPU machine has none).
for (const dir of ["vulkan", "vk_video"]) {
  try {
    await Deno.mkdir(`${out}/inc/${dir}`, { recursive: true });
    for await (const f of Deno.readDir(`/usr/include/${dir}`)) {
      if (/^(vulkan\.h|vulkan_core\.h|vk_platform\.h|vulkan_video_.*\.h)$/.test(f.name)) {
        await Deno.copyFile(`/usr/include/${dir}/${f.name}`, `${out}/inc/${dir}/${f.name}`);
      }
    }
  } catch {
    console.error(`no /usr/include/${dir}: apt-get install -y libvulkan-dev, then run again`);
    failed++;
  }
}
console.log(
  `${lines.length} kernels -> ${out}/spv (args.txt)${failed ? `, ${failed} failed` : ""}`,
);
if (failed) Deno.exit(1);
