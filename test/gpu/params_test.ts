import assert from "node:assert/strict";
import { packParams } from "../../src/gpu/params.ts";
import { parseParamLayout } from "../../src/gpu/shader.ts";
import { gpu, GPU_TEST } from "../_util.ts";

const SHADER = `
struct Params {
  rows: u32,   // a comment, with a comma
  shift: i32,
  /* block comment */ eps: f32,
  d: u32
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> o: array<f32>;`;

Deno.test("parseParamLayout() reads field names, types and offsets in declaration order", () => {
  const layout = parseParamLayout(SHADER)!;
  assert.equal(layout.struct, "Params");
  assert.deepEqual(layout.fields, [
    { name: "rows", type: "u32", offset: 0 },
    { name: "shift", type: "i32", offset: 4 },
    { name: "eps", type: "f32", offset: 8 },
    { name: "d", type: "u32", offset: 12 },
  ]);
  assert.equal(layout.size, 16);
  const five = parseParamLayout(
    "struct P { a: u32, b: u32, c: u32, d: u32, e: f32, }\n" +
      "@group(0) @binding(0) var<uniform> q: P;",
  )!;
  assert.deepEqual(five.fields.map((f) => [f.name, f.offset]), [
    ["a", 0],
    ["b", 4],
    ["c", 8],
    ["d", 12],
    ["e", 16],
  ]);
  assert.equal(five.size, 32);
});

Deno.test("parseParamLayout() of a shader without a uniform is undefined", () => {
  assert.equal(
    parseParamLayout("@group(0) @binding(0) var<storage, read_write> o: array<f32>;"),
    undefined,
  );
});

Deno.test("parseParamLayout() rejects vector, array and attributed fields, naming the field", () => {
  const bad = (body: string) =>
    `struct Params { n: u32, ${body} }\n@group(0) @binding(0) var<uniform> p: Params;`;
  assert.throws(() => parseParamLayout(bad("v: vec4<f32>,")), {
    name: "SyntaxError",
    message: /field "v": type vec4<f32> is not supported/,
  });
  assert.throws(() => parseParamLayout(bad("arr: array<u32, 4>,")), {
    name: "SyntaxError",
    message: /field "arr": type array<u32,4> is not supported/,
  });
  assert.throws(() => parseParamLayout(bad("@align(16) x: u32,")), {
    name: "SyntaxError",
    message: /field "x": layout attributes/,
  });
  assert.throws(() => parseParamLayout(bad("h: f16,")), /field "h": type f16/);
  assert.throws(
    () => parseParamLayout("@group(0) @binding(0) var<uniform> p: Missing;"),
    /struct Missing is not declared/,
  );
  const many = Array.from({ length: 65 }, (_, i) => `f${i}: u32`).join(", ");
  assert.throws(
    () =>
      parseParamLayout(`struct Params { ${many} }\n@group(0) @binding(0) var<uniform> p: Params;`),
    /272 bytes exceed the 256-byte uniform block/,
  );
});

Deno.test("packParams() writes each field at its offset, whatever the object's key order", () => {
  const layout = parseParamLayout(SHADER)!;
  const view = new DataView(new ArrayBuffer(64));
  packParams("k", layout, { d: 7, eps: 0.5, shift: -3, rows: 0xffffffff }, view, 16);
  assert.equal(view.getUint32(16, true), 0xffffffff);
  assert.equal(view.getInt32(20, true), -3);
  assert.equal(view.getFloat32(24, true), 0.5);
  assert.equal(view.getUint32(28, true), 7);
  assert.equal(view.getUint32(0, true), 0, "nothing written before the offset");
});

Deno.test("packParams() errors name the kernel and the field", () => {
  const layout = parseParamLayout(SHADER)!;
  const view = new DataView(new ArrayBuffer(16));
  const ok = { rows: 1, shift: 0, eps: 1e-6, d: 4 };
  const pack = (v: Record<string, unknown>) =>
    packParams("rmsnorm:rows", layout, v as Record<string, number>, view);
  pack(ok);
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ rows: 1, shift: 0, eps: 1 }, "TypeError", /rmsnorm:rows: missing param "d" \(u32\)/],
    [{ ...ok, extra: 1 }, "TypeError", /rmsnorm:rows: unknown param "extra"/],
    [{ ...ok, d: "4" }, "TypeError", /rmsnorm:rows: param "d" must be a number/],
    [{ ...ok, d: -1 }, "RangeError", /rmsnorm:rows: param "d" must be an integer in 0\.\.2\^32-1/],
    [{ ...ok, rows: 1.5 }, "RangeError", /rmsnorm:rows: param "rows" must be an integer/],
    [{ ...ok, rows: 2 ** 32 }, "RangeError", /param "rows"/],
    [{ ...ok, shift: 2 ** 31 }, "RangeError", /param "shift" must be an integer in -2\^31/],
    [{ ...ok, shift: 0.25 }, "RangeError", /param "shift"/],
    [{ ...ok, eps: NaN }, "RangeError", /rmsnorm:rows: param "eps" \(f32\) is NaN/],
  ];
  for (const [values, name, message] of cases) {
    assert.throws(() => pack(values), { name, message }, JSON.stringify(values));
  }
  assert.throws(() => packParams("k", undefined, { n: 1 }, view), {
    name: "TypeError",
    message: /k: takes no params .* got "n"/,
  });
  packParams("k", undefined, {}, view);
});

Deno.test({
  name: "dispatch() packs named params by field, whatever the key order",
  ...GPU_TEST,
  fn: async () => {
    const k = gpu.kernel({ shader: "elementwise", entry: "scale", defines: { T: "f32" } });
    assert.deepEqual(k.params?.fields.map((f) => f.name), ["n", "m", "alpha"]);
    const a = gpu.alloc(16), named = gpu.alloc(16), ordered = gpu.alloc(16);
    gpu.write(a, new Float32Array([1, 2, 3, 4]));
    // keys in another order than the struct: packing is by name
    gpu.dispatch(k, [a, named], [1], { alpha: 2.5, m: 1, n: 3 });
    gpu.dispatch(k, [a, ordered], [1], { n: 3, m: 1, alpha: 2.5 });
    const [x, y] = await gpu.readMany([
      { buffer: named, size: 12 },
      { buffer: ordered, size: 12 },
    ]);
    assert.deepEqual([...new Float32Array(x)], [2.5, 5, 7.5]);
    assert.deepEqual([...new Float32Array(y)], [2.5, 5, 7.5]);
    for (const b of [a, named, ordered]) gpu.release(b);
  },
});

Deno.test({
  name: "dispatch() rejects a missing, extra or mistyped param, naming the kernel and field",
  ...GPU_TEST,
  fn: () => {
    const k = gpu.kernel({ shader: "elementwise", entry: "scale", defines: { T: "f32" } });
    const a = gpu.alloc(16);
    const go = (p: Record<string, number>) => gpu.dispatch(k, [a, a], [1], p);
    const label = /elementwise:scale/;
    assert.throws(() => go({ n: 4, m: 1 }), { name: "TypeError", message: label });
    assert.throws(() => go({ n: 4, m: 1 }), /missing param "alpha"/);
    assert.throws(() => go({ n: 4, m: 1, alpha: 1, beta: 2 }), /unknown param "beta"/);
    assert.throws(() => go({ n: -4, m: 1, alpha: 1 }), { name: "RangeError", message: /"n"/ });
    assert.throws(() => go({ n: 4, m: 1, alpha: NaN }), { name: "RangeError", message: label });
    assert.throws(
      () => gpu.dispatch(k, [a, a], [1]),
      /elementwise:scale .*: missing uniform params \{ n, m, alpha \}/,
    );
    gpu.dispatch(k, [a, a], [1], { n: 4, m: 1, alpha: 1 }); // a failed pack leaves no slot behind
    gpu.release(a);
  },
});
