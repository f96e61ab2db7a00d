import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import {
  HEADS_ROPE_MAX_D,
  headsNormRope,
  headsNormRopeReference,
  type HeadsRopeOptions,
} from "../../src/ops/heads_rope.ts";
import { rmsNorm } from "../../src/ops/rmsnorm.ts";
import { rope, ropeInvFreq } from "../../src/ops/rope.ts";
import { swapAxes12 } from "../../src/ops/layout.ts";
import { takeQueryNeuron, zeroQueryNeuron } from "../../src/dms/decisions.ts";
import {
  assertClose,
  fcParams,
  FLOAT_DTYPES,
  gpu,
  GPU_TEST,
  randomArray,
  TOL,
  type Tolerance,
} from "../_util.ts";

// Tolerances.
// - Against headsNormRopeReference (f64 norm and cos/sin, same f32 angle, the normed row rounded
//   to f16 for f16 as the kernel does): TOL[dtype] (f32: atol 1e-5, rtol 1e-4; f16: atol 2e-3,
//   rtol 1e-2). Inputs in [-1, 1] (f16-rounded for f16), gains in [0.5, 1.5]: outputs O(1).
// - Against the unfused GPU chain (rmsNorm → takeQueryNeuron → swapAxes12 → rope →
//   zeroQueryNeuron): without a norm both run the same f32 operations, so they must agree
//   bit for bit (atol 0); with a norm only the summation order of mean(x²) differs: f32
//   atol 1e-6, rtol 1e-6; f16 one f16 ulp of the O(1) outputs, atol 2e-3.

const EXACT: Tolerance = { atol: 0 };
const CHAIN_NORM_TOL: Record<"f32" | "f16", Tolerance> = {
  f32: { atol: 1e-6, rtol: 1e-6 },
  f16: { atol: 2e-3 },
};

interface Case {
  B: number;
  T: number;
  H: number;
  hkv: number;
  D: number;
  norm: boolean;
  neuron: boolean;
  batched: boolean;
  maxPos: number;
  seed: number;
}

/** The unfused chain the transformer layer runs today, on the GPU. */
function unfusedChain(
  x: Tensor,
  pos: Tensor,
  inv: Tensor,
  opts: HeadsRopeOptions,
): { out: Tensor; raw?: Tensor } {
  const normed = opts.norm ? rmsNorm(x, opts.norm.weight, opts.norm.eps) : undefined;
  const q = normed ?? x;
  const raw = opts.neuron ? takeQueryNeuron(q, opts.neuron.kvHeads) : undefined;
  using qh = swapAxes12(q);
  normed?.dispose();
  const out = rope(qh, pos, inv);
  if (opts.neuron) zeroQueryNeuron(out, opts.neuron.kvHeads);
  return { out, raw };
}

async function runCase(dtype: "f32" | "f16", c: Case): Promise<void> {
  const { B, T, H, hkv, D, seed } = c;
  const shape = [B, T, H, D];
  let x = randomArray(B * T * H * D, seed);
  let gain = randomArray(D, seed + 1, 0.5, 1.5);
  if (dtype === "f16") [x, gain] = [roundToF16(x), roundToF16(gain)];
  const pos = Int32Array.from(
    randomArray(c.batched ? B * T : T, seed + 2, 0, c.maxPos + 1),
    Math.floor,
  );
  const inv = ropeInvFreq(D, 1e6);
  const eps = 1e-6;
  using tx = Tensor.fromArray(gpu, x, shape, dtype);
  using tg = Tensor.fromArray(gpu, gain, [D], dtype);
  using tp = Tensor.fromArray(gpu, pos, c.batched ? [B, T] : [T], "i32");
  using ti = Tensor.fromArray(gpu, inv, [D / 2]);
  const opts: HeadsRopeOptions = {
    norm: c.norm ? { weight: tg, eps } : undefined,
    neuron: c.neuron ? { kvHeads: hkv } : undefined,
  };
  const label = `${dtype} ${JSON.stringify(c)}`;

  const fused = headsNormRope(tx, tp, ti, opts);
  using out = fused.out;
  using raw = fused.raw;
  assert.deepEqual(out.shape, [B, H, T, D]);
  assert.equal(out.dtype, dtype);
  assert.equal(raw === undefined, !c.neuron);
  const got = await out.toArray();
  const gotRaw = raw ? await raw.toArray() : undefined;
  if (raw) assert.deepEqual([raw.shape, raw.dtype], [[B, T, hkv], "f32"]);
  // The logit is read from the stored (f16-rounded) norm output, as the chain and HF read it.
  if (gotRaw && dtype === "f16") assertClose(gotRaw, roundToF16(gotRaw), EXACT, "raw is f16");

  // (a) the CPU twin
  const ref = headsNormRopeReference(x, shape, pos, inv, {
    norm: c.norm ? { weight: gain, eps } : undefined,
    neuron: c.neuron ? { kvHeads: hkv } : undefined,
    dtype,
  });
  assertClose(got, ref.out, TOL[dtype], `out vs reference, ${label}`);
  if (gotRaw) assertClose(gotRaw, ref.raw!, TOL[dtype], `raw vs reference, ${label}`);

  // (b) the unfused GPU chain
  const chain = unfusedChain(tx, tp, ti, opts);
  using chainOut = chain.out;
  using chainRaw = chain.raw;
  const tol = c.norm ? CHAIN_NORM_TOL[dtype] : EXACT;
  assertClose(got, await chainOut.toArray(), tol, `out vs unfused chain, ${label}`);
  if (gotRaw) assertClose(gotRaw, await chainRaw!.toArray(), tol, `raw vs unfused chain, ${label}`);
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  B: fc.integer({ min: 1, max: 2 }),
  T: fc.integer({ min: 1, max: 5 }),
  hg: fc.constantFrom([1, 1], [2, 1], [2, 2], [3, 1], [3, 3], [4, 1], [4, 2], [4, 4]),
  D: fc.constantFrom(2, 8, 16, 64, 128, 256),
  norm: fc.boolean(),
  neuron: fc.boolean(),
  batched: fc.boolean(),
  maxPos: fc.constantFrom(16, 40000),
  seed: fc.integer(),
}).map(({ hg: [H, hkv], ...rest }) => ({ H, hkv, ...rest }));

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `headsNormRope() (${dtype}) equals its CPU twin and the unfused GPU chain`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(fc.asyncProperty(caseArb, (c) => runCase(dtype, c)), fcParams(40));
    },
  });

  Deno.test({
    name: `headsNormRope() (${dtype}) covers every option at decode (T = 1) and Qwen3 sizes`,
    ...GPU_TEST,
    fn: async () => {
      for (const norm of [false, true]) {
        for (const neuron of [false, true]) {
          const base = { B: 2, H: 4, hkv: 2, D: 128, norm, neuron, batched: true, seed: 7 };
          await runCase(dtype, { ...base, T: 1, maxPos: 40000 });
          await runCase(dtype, { ...base, T: 5, maxPos: 16 });
        }
      }
    },
  });
}

Deno.test({
  name: "headsNormRope() keeps the neuron out of its rotate-half partner (hand-computed, D = 4)",
  ...GPU_TEST,
  fn: async () => {
    // x:[1, 1, 2, 4], one KV head: head 0 lends channel 3, head 1 is an ordinary head.
    const x = [0.5, -0.25, 0.75, 9, 0.1, 0.2, 0.3, 0.4];
    const inv = [0.5, 0.125];
    const position = 3;
    using tx = Tensor.fromArray(gpu, x, [1, 1, 2, 4]);
    using tp = Tensor.fromArray(gpu, [position], [1], "i32");
    using ti = Tensor.fromArray(gpu, inv, [2]);
    const { out, raw } = headsNormRope(tx, tp, ti, { neuron: { kvHeads: 1 } });
    using _o = out;
    using _r = raw;
    const [c0, s0] = [Math.cos(position * inv[0]), Math.sin(position * inv[0])];
    const [c1, s1] = [Math.cos(position * inv[1]), Math.sin(position * inv[1])];
    const expected = [
      // head 0: channel 3 (9) zeroed before RoPE, so channel 1 is -0.25·cos only; channel 3 is 0
      0.5 * c0 - 0.75 * s0,
      -0.25 * c1,
      0.75 * c0 + 0.5 * s0,
      0,
      // head 1: plain rotate-half
      0.1 * c0 - 0.3 * s0,
      0.2 * c1 - 0.4 * s1,
      0.3 * c0 + 0.1 * s0,
      0.4 * c1 + 0.2 * s1,
    ];
    assertClose(await out.toArray(), expected, { atol: 1e-6 }, "out");
    assertClose(await raw!.toArray(), [9], { atol: 0 }, "raw");
  },
});

Deno.test({
  name: "headsNormRope() handles more rows than one grid dimension (2-D grid)",
  ...GPU_TEST,
  fn: async () => {
    await runCase("f32", {
      B: 1,
      T: 33000,
      H: 2,
      hkv: 1,
      D: 2,
      norm: true,
      neuron: true,
      batched: false,
      maxPos: 40000,
      seed: 11,
    });
  },
});

Deno.test({
  name: "headsNormRope() names the argument and the shapes in its errors",
  ...GPU_TEST,
  fn: () => {
    using x = Tensor.zeros(gpu, [1, 2, 4, 8], "f32");
    using pos = Tensor.zeros(gpu, [1, 2], "i32");
    using inv = Tensor.zeros(gpu, [4], "f32");
    using w = Tensor.zeros(gpu, [8], "f32");
    using xi = Tensor.zeros(gpu, [1, 2, 4, 8], "i32");
    using x3 = Tensor.zeros(gpu, [2, 4, 8], "f32");
    using xOdd = Tensor.zeros(gpu, [1, 2, 4, 7], "f32");
    using xBig = Tensor.zeros(gpu, [1, 1, 1, HEADS_ROPE_MAX_D + 2], "f32");
    using posF = Tensor.zeros(gpu, [1, 2], "f32");
    using pos3 = Tensor.zeros(gpu, [3], "i32");
    using inv8 = Tensor.zeros(gpu, [8], "f32");
    using w4 = Tensor.zeros(gpu, [4], "f32");
    const cases: [() => unknown, ErrorConstructor, RegExp][] = [
      [() => headsNormRope(xi, pos, inv), TypeError, /x: expected an f32 or f16 tensor/],
      [() => headsNormRope(x3, pos, inv), RangeError, /x: expected shape \[B, T, H, D\], got/],
      [() => headsNormRope(xOdd, pos, inv), RangeError, /x: head dimension D must be even/],
      [() => headsNormRope(xBig, pos, inv), RangeError, /in 2\.\.256, got x \[1, 1, 1, 258\]/],
      [() => headsNormRope(x, posF, inv), TypeError, /positions: expected an i32 tensor/],
      [
        () => headsNormRope(x, pos3, inv),
        RangeError,
        /positions: expected shape \[1, 2\] or \[2\] for x \[1, 2, 4, 8\].*got \[3\]/,
      ],
      [() => headsNormRope(x, pos, inv8), RangeError, /invFreq: expected shape \[4\].*got \[8\]/],
      [
        () => headsNormRope(x, pos, inv, { norm: { weight: w4, eps: 1e-6 } }),
        RangeError,
        /norm\.weight: expected shape \[8\].*got \[4\]/,
      ],
      [
        () => headsNormRope(x, pos, inv, { norm: { weight: w, eps: -1 } }),
        RangeError,
        /norm\.eps/,
      ],
      [
        () => headsNormRope(x, pos, inv, { neuron: { kvHeads: 3 } }),
        RangeError,
        /neuron\.kvHeads: expected a positive divisor of H = 4.*got 3/,
      ],
    ];
    for (const [f, type, re] of cases) {
      assert.throws(f, (e: Error) => e instanceof type && re.test(e.message), String(re));
    }
  },
});
