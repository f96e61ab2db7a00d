/**
 * linearQkv() (src/ops/linear_qkv.ts): the fused `gemv16_qkv` kernels (with and without biases
 * and the RMSNorm prologue) and the unfused chain against the f64 CPU reference and against the
 * unfused GPU chain (rmsNorm, then three linears), and its input checks.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { linearQkv, linearQkvReference, type LinearQkvVariant } from "../../src/ops/linear_qkv.ts";
import { linear } from "../../src/ops/matmul.ts";
import { rmsNorm } from "../../src/ops/rmsnorm.ts";
import {
  assertClose,
  fcParams,
  FLOAT_DTYPES,
  gpu,
  GPU_TEST,
  randomArray,
  type Tolerance,
} from "../_util.ts";

type Dt = "f32" | "f16";
const EPS = 1e-6;

/**
 * Outputs are sums of K terms ≲ 1 of random sign (the normed x is ≲ 1.7): errors grow like √K.
 * f16 vs f64: the f16 roundings of the normed x and of the output; vs the GPU chain only
 * summation orders (and rare one-ulp flips of a normed x). A wrong or missing row, term or
 * scale moves an output by ~0.1 or more.
 */
function tol(dtype: Dt, K: number, chain: boolean): Tolerance {
  const s = Math.sqrt(K);
  if (dtype === "f32") return { atol: 4e-6 * s, rtol: 1e-5 };
  return chain ? { atol: 2e-4 * s, rtol: 1.5e-3 } : { atol: 2e-3 * s, rtol: 4e-3 };
}

function data(n: number, seed: number, dtype: Dt): Float32Array {
  const d = randomArray(n, seed);
  return dtype === "f16" ? roundToF16(d) : d;
}

interface Case {
  dtype: Dt;
  variant: LinearQkvVariant;
  lead: number[];
  K: number;
  N: [number, number, number];
  norm: boolean;
  biases: [boolean, boolean, boolean];
  seed: number;
}

async function check(c: Case): Promise<void> {
  const { dtype, variant, lead, K, N, seed } = c;
  const M = lead.reduce((a, b) => a * b, 1);
  const x = data(M * K, seed, dtype), g = data(K, seed + 1, dtype);
  const ws = N.map((n, i) => data(n * K, seed + 2 + i, dtype));
  const bs = N.map((n, i) => (c.biases[i] ? data(n, seed + 5 + i, dtype) : undefined));
  using tx = Tensor.fromArray(gpu, x, [...lead, K], dtype);
  using tg = Tensor.fromArray(gpu, g, [K], dtype);
  using twq = Tensor.fromArray(gpu, ws[0], [N[0], K], dtype);
  using twk = Tensor.fromArray(gpu, ws[1], [N[1], K], dtype);
  using twv = Tensor.fromArray(gpu, ws[2], [N[2], K], dtype);
  const tb = bs.map((b, i) => (b ? Tensor.fromArray(gpu, b, [N[i]], dtype) : undefined));
  const norm = c.norm ? { weight: tg, eps: EPS } : undefined;
  const out = linearQkv(tx, twq, twk, twv, {
    norm,
    qBias: tb[0],
    kBias: tb[1],
    vBias: tb[2],
    variant,
  });
  const label = `linearQkv ${dtype} ${variant} x[${lead},${K}] N ${N} norm ${c.norm} biases ${
    c.biases.map(Number).join("")
  }`;
  const ref = linearQkvReference(x, M, K, { wq: ws[0], wk: ws[1], wv: ws[2] }, {
    norm: c.norm ? { weight: g, eps: EPS } : undefined,
    qBias: bs[0],
    kBias: bs[1],
    vBias: bs[2],
  });
  using h = c.norm ? rmsNorm(tx, tg, EPS) : undefined;
  const names = ["q", "k", "v"] as const;
  for (const [i, name] of names.entries()) {
    using y = out[name];
    assert.deepEqual(y.shape, [...lead, N[i]], `${label}: ${name} shape`);
    const got = await y.toArray();
    assertClose(got, ref[name], tol(dtype, K, false), `${label}: ${name} vs f64`);
    using chain = linear(h ?? tx, [twq, twk, twv][i], { bias: tb[i], variant: "naive" });
    assertClose(got, await chain.toArray(), tol(dtype, K, true), `${label}: ${name} vs chain`);
  }
  for (const b of tb) b?.dispose();
}

Deno.test({
  name: "linearQkv() equals the three projections of rmsNorm(x) in f64 and the GPU chain, " +
    "fused (gemv16_qkv below 8 rows, skinny_qkv from 8) and unfused, M 1..40, N odd, with and " +
    "without norm and biases",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<Dt>(...FLOAT_DTYPES),
        fc.constantFrom<LinearQkvVariant>("fused", "fused", "unfused", "auto"),
        fc.array(fc.integer({ min: 1, max: 2 }), { maxLength: 1 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 40 }),
        fc.tuple(
          fc.integer({ min: 1, max: 37 }),
          fc.integer({ min: 1, max: 13 }),
          fc.integer({ min: 1, max: 13 }),
        ),
        fc.boolean(),
        fc.tuple(fc.boolean(), fc.boolean(), fc.boolean()),
        fc.integer({ min: 0, max: 1 << 30 }),
        async (dtype, variant, lead0, T, kWords, N, norm, biases, seed) => {
          const K = kWords * (dtype === "f16" ? 8 : 4);
          await check({ dtype, variant, lead: [...lead0, T], K, N, norm, biases, seed });
        },
      ),
      fcParams(30),
    );
  },
});

Deno.test({
  name: "linearQkv() at Qwen3-0.6B's decode shapes (K 1024, q 2048, k and v 1024, M 1) and " +
    "odd ones: fused, with the input norm",
  ...GPU_TEST,
  fn: async () => {
    const shapes: [number[], number, [number, number, number], boolean][] = [
      [[1], 1024, [2048, 1024, 1024], false],
      [[8], 64, [5, 1, 3], true],
      [[2, 3], 24, [1, 7, 2], true],
    ];
    for (const dtype of FLOAT_DTYPES) {
      for (const [lead, K, N, biased] of shapes) {
        const biases: [boolean, boolean, boolean] = [biased, biased, false];
        await check({ dtype, variant: "fused", lead, K, N, norm: true, biases, seed: K });
      }
    }
  },
});

Deno.test({
  name: "linearQkv() falls back to three linears for M > 256 and ragged K",
  ...GPU_TEST,
  fn: async () => {
    for (const dtype of FLOAT_DTYPES) {
      for (const [M, K] of [[257, 16], [17, 13], [3, 13], [1, 1]]) {
        for (const variant of ["auto", "unfused"] as const) {
          const biases: [boolean, boolean, boolean] = [true, false, true];
          await check({ dtype, variant, lead: [M], K, N: [5, 3, 2], norm: true, biases, seed: M });
        }
      }
    }
  },
});

Deno.test({
  name: "linearQkv() rejects mismatched shapes, biases and dtypes, and fused where it does " +
    "not apply",
  ...GPU_TEST,
  fn: () => {
    const range = (re: RegExp) => (e: unknown) => e instanceof RangeError && re.test(e.message);
    using x = Tensor.zeros(gpu, [2, 8]), wq = Tensor.zeros(gpu, [6, 8]);
    using wk = Tensor.zeros(gpu, [2, 8]), w7 = Tensor.zeros(gpu, [2, 7]);
    using b5 = Tensor.zeros(gpu, [5]), g4 = Tensor.zeros(gpu, [4]);
    assert.throws(
      () => linearQkv(x, wq, w7, wk),
      range(/expected x:\[\.\.\., K\].*x \[2, 8\], wq \[6, 8\], wk \[2, 7\], wv \[2, 8\]/),
    );
    assert.throws(() => linearQkv(x, wq, wk, wk, { qBias: b5 }), range(/qBias must be \[6\]/));
    assert.throws(() => linearQkv(x, wq, wk, wk, { vBias: b5 }), range(/vBias must be \[2\]/));
    assert.throws(
      () => linearQkv(x, wq, wk, wk, { norm: { weight: g4, eps: EPS } }),
      range(/linearQkv: norm.weight must be \[8\]/),
    );
    using x9 = Tensor.zeros(gpu, [257, 8]);
    assert.throws(
      () => linearQkv(x9, wq, wk, wk, { variant: "fused" }),
      range(/fused needs M <= 256 rows, K a multiple of 4.*x \[257, 8\]/),
    );
    using x6 = Tensor.zeros(gpu, [1, 6]), w6 = Tensor.zeros(gpu, [2, 6]);
    assert.throws(() => linearQkv(x6, w6, w6, w6, { variant: "fused" }), range(/fused needs/));
    if (gpu.hasF16) {
      using h = Tensor.zeros(gpu, [2, 8], "f16");
      assert.throws(() => linearQkv(x, wq, wk, h), TypeError);
    }
  },
});

Deno.test({
  name: "linearQkv() with biases needs 11 storage buffers per stage: below that fused throws " +
    "and auto takes three linears; without biases fused still runs",
  ...GPU_TEST,
  fn: async () => {
    const limits = gpu.limits as unknown as Record<string, number>;
    Object.defineProperty(limits, "maxStorageBuffersPerShaderStage", {
      value: 8,
      configurable: true,
    });
    try {
      assert.equal(gpu.limits.maxStorageBuffersPerShaderStage, 8);
      using x = Tensor.zeros(gpu, [1, 8]), w = Tensor.zeros(gpu, [3, 8]);
      using b = Tensor.fromArray(gpu, [1, 2, 3], [3]);
      assert.throws(
        () => linearQkv(x, w, w, w, { kBias: b, variant: "fused" }),
        (e: unknown) =>
          e instanceof RangeError &&
          /11 storage buffers per stage.*8 storage buffers per stage/.test(e.message),
      );
      const { q, k, v } = linearQkv(x, w, w, w, { kBias: b });
      assert.deepEqual(
        [await q.toArray(), await k.toArray(), await v.toArray()].map((a) => Array.from(a)),
        [[0, 0, 0], [1, 2, 3], [0, 0, 0]],
      );
      q.dispose(), k.dispose(), v.dispose();
      await check({
        dtype: "f32",
        variant: "fused",
        lead: [2],
        K: 16,
        N: [3, 2, 5],
        norm: true,
        biases: [false, false, false],
        seed: 3,
      });
    } finally {
      delete limits.maxStorageBuffersPerShaderStage;
    }
    assert.ok(gpu.limits.maxStorageBuffersPerShaderStage >= 8);
  },
});
