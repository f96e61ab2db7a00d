import assert from "node:assert/strict";
import { Gpu } from "../../src/gpu/device.ts";
import { SHADER_FILES } from "../../src/gpu/manifest.ts";
import { parseBindings, preprocess, resolveIncludes } from "../../src/gpu/shader.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { add, scale } from "../../src/ops/elementwise.ts";
import type { KernelTime } from "../../src/gpu/profiling.ts";
import { gpu, GPU_TEST } from "../_util.ts";

Deno.test("the shader manifest lists exactly the .wgsl files in shaders/", () => {
  const dir = new URL("../../shaders/", import.meta.url);
  const files = [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".wgsl")).map((e) =>
    e.name.slice(0, -5)
  ).sort();
  assert.deepEqual(files, [...SHADER_FILES].sort());
});

Deno.test("preprocess() enables f16 only when an alias needs it", () => {
  assert.equal(preprocess("x", { T: "f32" }), "alias T = f32;\nx");
  assert.equal(preprocess("x", { T: "f16" }), "enable f16;\nalias T = f16;\nx");
});

Deno.test('resolveIncludes() expands `// #include "name"` lines, nested, each file once, and names bad ones', () => {
  const files: Record<string, string> = {
    core: "fn f() {}",
    mid: '// #include "core"\nfn m() {}',
    loop: '// #include "back"',
    back: '// #include "loop"',
  };
  const lookup = (n: string) => files[n];
  assert.equal(
    resolveIncludes('// a #include "core" in prose stays\n// #include "core"\nfn g() {}', lookup),
    '// a #include "core" in prose stays\nfn f() {}\nfn g() {}',
  );
  assert.equal(resolveIncludes("fn g() {}", lookup), "fn g() {}");
  // nested, and core once although both the file and mid include it
  assert.equal(
    resolveIncludes('// #include "mid"\n// #include "core"\nfn g() {}', lookup),
    "fn f() {}\nfn m() {}\n\nfn g() {}",
  );
  assert.throws(() => resolveIncludes('// #include "gone"', lookup), /#include "gone": no such/);
  assert.throws(
    () => resolveIncludes('// #include "loop"', lookup),
    /#include "loop": a cycle \(loop -> back -> loop\)/,
  );
});

Deno.test("parseBindings() reads binding kinds and rejects gaps", () => {
  const b = parseBindings(`@group(0) @binding(0) var<uniform> p: P;
    @group(0) @binding(1) var<storage, read> a: array<f32>;
    @group(0) @binding(2) var<storage, read_write> o: array<f32>;`);
  assert.deepEqual(b.map((x) => x.kind), ["uniform", "read", "read_write"]);
  assert.throws(
    () => parseBindings("@group(0) @binding(1) var<storage, read> a: array<f32>;"),
    SyntaxError,
  );
});

Deno.test("parseBindings() with an entry keeps only the bindings that entry reaches", () => {
  const src = `@group(0) @binding(0) var<uniform> p: P;
    @group(0) @binding(1) var<storage, read> a: array<f32>;
    @group(0) @binding(2) var<storage, read> b: array<f32>;
    @group(0) @binding(3) var<storage, read_write> o: array<f32>;
    fn helper(i: u32) -> f32 { return b[i]; } // uses b
    @compute @workgroup_size(1) fn one() { o[0] = a[0]; }
    @compute @workgroup_size(1) fn two() { o[0] = helper(0u) * f32(p.n); }`;
  assert.deepEqual(parseBindings(src, "one").map((x) => x.binding), [1, 3]);
  assert.deepEqual(parseBindings(src, "two").map((x) => x.binding), [0, 2, 3]);
  assert.throws(() => parseBindings(src, "three"), SyntaxError);
});

Deno.test("parseBindings() does not take a member access (wid.x) for a use of a variable x", () => {
  const src = `@group(0) @binding(0) var<storage, read> x: array<f32>;
    @group(0) @binding(1) var<storage, read_write> o: array<f32>;
    @compute @workgroup_size(1) fn only_o(@builtin(workgroup_id) wid: vec3<u32>) { o[wid.x] = 1.0; }
    @compute @workgroup_size(1) fn both(@builtin(workgroup_id) wid: vec3<u32>) { o[wid.x] = x[0]; }`;
  assert.deepEqual(parseBindings(src, "only_o").map((b) => b.binding), [1]);
  assert.deepEqual(parseBindings(src, "both").map((b) => b.binding), [0, 1]);
});

Deno.test("Gpu.grid() splits large workgroup counts into two dimensions", () => {
  assert.deepEqual(Gpu.grid(10), [10, 1]);
  const [x, y] = Gpu.grid(200000);
  assert.ok(x <= 65535 && x * y >= 200000);
});

Deno.test({
  name: "debug mode raises a validation error with the kernel's name",
  ...GPU_TEST,
  fn: async () => {
    const dbg = await Gpu.create({ debug: true });
    const k = dbg.kernel({ shader: "elementwise", entry: "add", defines: { T: "f32" } });
    const small = dbg.alloc(16);
    const mapped = dbg.device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    // A MAP_READ buffer cannot be bound as storage: a validation error.
    dbg.dispatch(k, [small, small, mapped], [1], { n: 4, m: 4, alpha: 1 });
    await assert.rejects(() => dbg.sync(), /GPU error in elementwise:add/);
    dbg.device.destroy();
  },
});

Deno.test({
  name: "profile() times recorded dispatches with timestamp queries",
  ignore: !gpu.hasTimestamps,
  ...GPU_TEST,
  fn: async () => {
    using a = Tensor.zeros(gpu, [1 << 20]);
    let out: Tensor | undefined;
    const ms = await gpu.profile(() => {
      out = add(a, a);
    });
    out?.dispose();
    assert.ok(ms > 0 && ms < 10000, `ms=${ms}`);
  },
});

Deno.test({
  name: "profile() with perKernel sums each kernel's dispatches to the total",
  ignore: !gpu.hasTimestamps,
  ...GPU_TEST,
  fn: async () => {
    using a = Tensor.zeros(gpu, [1 << 16]);
    const made: Tensor[] = [];
    const perKernel = new Map<string, KernelTime>();
    const ms = await gpu.profile(
      () => {
        for (let i = 0; i < 3; i++) made.push(add(a, a));
        made.push(scale(a, 2));
      },
      2048,
      perKernel,
    );
    made.forEach((t) => t.dispose());
    const counts = [...perKernel.values()].map((k) => k.count);
    assert.equal(counts.reduce((x, y) => x + y, 0), 4, JSON.stringify([...perKernel]));
    assert.equal(perKernel.size, 2, [...perKernel.keys()].join(", "));
    const sum = [...perKernel.values()].reduce((x, k) => x + k.ms, 0);
    assert.ok(Math.abs(sum - ms) <= 1e-9 * Math.max(1, ms), `${sum} vs ${ms}`);
  },
});

Deno.test({
  name: "profile() rejects when fn records more dispatches than it can time",
  ignore: !gpu.hasTimestamps,
  ...GPU_TEST,
  fn: async () => {
    using a = Tensor.zeros(gpu, [1 << 10]);
    const made: Tensor[] = [];
    const record = (n: number) => () => {
      for (let i = 0; i < n; i++) made.push(add(a, a));
    };
    // Exactly maxDispatches: every dispatch timed.
    const ms = await gpu.profile(record(3), 3);
    assert.ok(ms > 0, `ms=${ms}`);
    // One more: the fourth ran untimed, so the sum would be short; it must not be returned.
    await assert.rejects(
      () => gpu.profile(record(4), 3),
      RangeError,
      "recorded 4 dispatches, maxDispatches is 3: 1 ran untimed",
    );
    made.forEach((t) => t.dispose());
    // The device still works after the rejected profile, and profiling is off again.
    using b = add(a, a);
    assert.deepEqual(Array.from((await b.toArray()).slice(0, 2)), [0, 0]);
  },
});

Deno.test({
  name: "Gpu.create() without an adapter explains how to get one instead of crashing",
  ...GPU_TEST,
  fn: async () => {
    const original = navigator.gpu.requestAdapter;
    // deno-lint-ignore require-await
    navigator.gpu.requestAdapter = async () => null;
    try {
      await assert.rejects(() => Gpu.create(), /No WebGPU adapter found.*mesa-vulkan-drivers/s);
    } finally {
      navigator.gpu.requestAdapter = original;
    }
  },
});

Deno.test({
  name: "getGpu() prints no XDG_RUNTIME_DIR error when the variable is unset",
  ...GPU_TEST,
  fn: async () => {
    const device = new URL("../../src/gpu/device.ts", import.meta.url).href;
    const env = { ...Deno.env.toObject() };
    delete env.XDG_RUNTIME_DIR;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `const { getGpu } = await import(${JSON.stringify(device)});` +
        `console.log((await getGpu()).description ? "adapter" : "none");`,
      ],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.equal(new TextDecoder().decode(out.stdout).trim(), "adapter");
    assert.doesNotMatch(stderr, /error:/, stderr);
  },
});
