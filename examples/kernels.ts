/**
 * Runs every op once on random inputs and prints its max error against the
 * CPU reference, plus the device and its features.
 *
 *   deno run -A examples/kernels.ts [--f16]
 *
 * @module
 */

import {
  add,
  attention,
  attentionReference,
  cast,
  castReference,
  elementwiseReference,
  embedding,
  embeddingReference,
  getGpu,
  linear,
  linearReference,
  matmul,
  matmulReference,
  mul,
  randomTensor,
  rmsNorm,
  rmsNormReference,
  rope,
  ropeInvFreq,
  ropeReference,
  silu,
  siluReference,
  swiglu,
  Tensor,
} from "@hyperscale/dms/ops";
import { roundToF16 } from "../src/tensor/dtype.ts";
import { extraKernelChecks } from "./_kernel_checks.ts";
import { scriptArgs } from "../src/cli/script_args.ts";

const args = scriptArgs(
  "kernels",
  `usage: deno run -A examples/kernels.ts [--f16]

  --f16   run the ops in f16 (where the adapter offers shader-f16; else f32)`,
  { f16: { type: "boolean" } },
);
const gpu = await getGpu();
const dtype = args.flag("f16") && gpu.hasF16 ? "f16" : "f32";
console.log(
  `device: ${gpu.description}  shader-f16: ${gpu.hasF16}  timestamps: ${gpu.hasTimestamps}  dtype: ${dtype}`,
);

/** Uploads seeded random data; returns the tensor and the values it holds. */
async function rand(shape: number[], seed: number, scale = 1): Promise<[Tensor, Float32Array]> {
  const t = randomTensor(gpu, shape, { seed, dist: "normal", std: scale, dtype });
  return [t, await t.toArray() as Float32Array];
}

function maxErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const rows: [string, string, number][] = [];
async function check(
  name: string,
  shape: string,
  out: Tensor,
  ref: ArrayLike<number>,
): Promise<void> {
  const got = await out.toArray();
  // f16 outputs are compared against the f32 reference rounded to f16
  const expect = out.dtype === "f16" ? roundToF16(ref) : ref;
  rows.push([name, shape, maxErr(got, expect)]);
  out.dispose();
}

const [a, av] = await rand([33, 70], 1);
const [b, bv] = await rand([70], 2);
await check("add", "[33,70]+[70]", add(a, b), elementwiseReference("add", av, bv));
await check("mul", "[33,70]*[70]", mul(a, b), elementwiseReference("mul", av, bv));

const [w, wv] = await rand([45, 70], 3, 0.1);
await check(
  "linear x·Wᵀ",
  "[33,70]·[45,70]ᵀ",
  linear(a, w),
  linearReference(av, [33, 70], wv, [45, 70]),
);
const [m2, m2v] = await rand([2, 70, 19], 4, 0.1);
const [m1, m1v] = await rand([2, 33, 70], 5);
await check(
  "matmul",
  "[2,33,70]·[2,70,19]",
  matmul(m1, m2),
  matmulReference(m1v, [2, 33, 70], m2v, [2, 70, 19]),
);

const [g, gv] = await rand([70], 6, 0.1);
await check("rmsNorm", "[33,70]", rmsNorm(a, g, 1e-6), rmsNormReference(av, gv, 1e-6));
await check("silu", "[33,70]", silu(a), siluReference(av));
await check("swiglu", "[33,70]", swiglu(a, a), siluReference(av, av));

const [B, H, T, D] = [1, 4, 9, 16];
const [x, xv] = await rand([B, H, T, D], 7);
const pos = Array.from({ length: T }, (_, i) => 100 + i);
using post = Tensor.fromArray(gpu, pos, [T], "i32");
const inv = ropeInvFreq(D, 10000);
using invt = Tensor.fromArray(gpu, inv, [D / 2]);
await check("rope", "[1,4,9,16]", rope(x, post, invt), ropeReference(xv, [B, H, T, D], pos, inv));

const ids = [3, 0, 32, 7];
using idt = Tensor.fromArray(gpu, ids, [4], "i32");
await check("embedding", "[4] of [33,70]", embedding(idt, a), embeddingReference(ids, av, 70));
if (gpu.hasF16) {
  const [c32] = await (async () => {
    const t = randomTensor(gpu, [1000], { seed: 8, dist: "normal" });
    return [t, await t.toArray() as Float32Array];
  })();
  await check(
    "cast f32→f16",
    "[1000]",
    cast(c32, "f16"),
    castReference(await c32.toArray(), "f16"),
  );
  c32.dispose();
}

const [Hkv, S] = [2, 13];
const [q, qv] = await rand([1, H, T, D], 9);
const [k, kv] = await rand([1, Hkv, S, D], 10);
const [v, vv] = await rand([1, Hkv, S, D], 11);
const marks = Array.from({ length: Hkv * S }, (_, i) => (i * 7) % 3 === 0 ? 1 : 0);
using farMask = Tensor.fromArray(gpu, marks, [1, Hkv, S], "i32");
await check(
  "attention (DMS window)",
  "q[1,4,9,16] kv[1,2,13,16] W=3",
  attention(q, k, v, { window: 3, farMask }),
  attentionReference(qv, kv, vv, { B: 1, Hq: H, Hkv, T, S, D }, { window: 3, farMask: marks }).out,
);

for (const r of await extraKernelChecks(gpu, dtype)) rows.push(r);

console.log(`\n${"op".padEnd(32)} ${"shape".padEnd(35)} max |gpu - cpu|`);
for (const [name, shape, err] of rows) {
  console.log(`${name.padEnd(32)} ${shape.padEnd(35)} ${err.toExponential(2)}`);
}
for (const t of [a, b, w, m1, m2, g, x, q, k, v]) t.dispose();
