/**
 * The RMSNorm prologue of `linear`, `gemv` and `linearSwiglu` (`opts.norm`, fused into the
 * GEMV kernels of shaders/gemv.wgsl): against the f64 CPU references on `rmsNormRowsReference`
 * of x, against the unfused GPU chains (`rmsNorm` then the op), and, in f16, against a CPU
 * emulation of the kernel's rounding of the normed x to f16 (which the chain stores).
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import {
  gemv,
  gemvNormStagedWords,
  gemvReference,
  rmsNormRowsReference,
} from "../../src/ops/gemv.ts";
import { linear, linearReference, type MatmulVariant } from "../../src/ops/matmul.ts";
import { linearSwiglu, linearSwigluReference } from "../../src/ops/linear_swiglu.ts";
import { rmsNorm } from "../../src/ops/rmsnorm.ts";
import { linearQkv } from "../../src/ops/linear_qkv.ts";
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
 * The normed x has entries of size ≲ 1.7 (gain in [-1, 1] times x / rms(x)), so outputs are sums
 * of K terms ≲ 1 of random sign: errors grow like √K. f32: accumulation order. f16: the f16
 * rounding of every normed x (2^-12 relative, which the f64 reference does not do) and of the
 * output. A wrong or missing term, or a wrong scale, moves an output by ~0.1 or more.
 */
function tol(dtype: Dt, K: number): Tolerance {
  const s = Math.sqrt(K);
  return dtype === "f32" ? { atol: 4e-6 * s, rtol: 1e-5 } : { atol: 2e-3 * s, rtol: 4e-3 };
}

/** Against the unfused GPU chain: same roundings, different summation orders. */
function chainTol(dtype: Dt, K: number): Tolerance {
  const s = Math.sqrt(K);
  return dtype === "f32" ? { atol: 4e-6 * s, rtol: 1e-5 } : { atol: 2e-4 * s, rtol: 1.5e-3 };
}

function data(n: number, seed: number, dtype: Dt): Float32Array {
  const d = randomArray(n, seed);
  return dtype === "f16" ? roundToF16(d) : d;
}

/**
 * The normed rows as the unfused `rmsNorm` stores them: `T(gain·(x·r))` with r in f32, i.e.
 * rounded to f16 in f16 (the value the fused kernel must also use).
 */
function normedStored(x: Float32Array, gain: Float32Array, dtype: Dt): Float32Array {
  const K = gain.length, out = new Float32Array(x.length);
  for (let b = 0; b < x.length; b += K) {
    let ss = 0;
    for (let k = 0; k < K; k++) ss += x[b + k] * x[b + k];
    const r = Math.fround(1 / Math.sqrt(Math.fround(ss / K) + EPS));
    for (let k = 0; k < K; k++) out[b + k] = Math.fround(gain[k] * Math.fround(x[b + k] * r));
  }
  return dtype === "f16" ? roundToF16(out) : out;
}

Deno.test({
  name: "linear({ norm }) equals linear(rmsNorm(x)) in f64 and on the GPU chain, gemv16 " +
    "(fused, M 1..10 in blocks of 8) and the fallbacks, with bias, residual and out columns",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<Dt>(...FLOAT_DTYPES),
        fc.constantFrom<MatmulVariant>("gemv16", "gemv16", "auto", "naive", "gemv"),
        fc.integer({ min: 1, max: 10 }),
        fc.integer({ min: 1, max: 70 }),
        fc.integer({ min: 1, max: 23 }),
        fc.constantFrom("none", "bias", "residual", "out"),
        fc.integer({ min: 0, max: 1 << 30 }),
        async (dtype, variant, M, words, N, extra, seed) => {
          const K = words * (dtype === "f16" ? 8 : 4);
          const x = data(M * K, seed, dtype), w = data(N * K, seed + 1, dtype);
          const g = data(K, seed + 2, dtype), b = data(N, seed + 3, dtype);
          const res = data(M * N, seed + 4, dtype);
          using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
          using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
          using tg = Tensor.fromArray(gpu, g, [K], dtype);
          using tb = Tensor.fromArray(gpu, b, [N], dtype);
          using tr = Tensor.fromArray(gpu, res, [M, N], dtype);
          using out = Tensor.fromArray(
            gpu,
            new Float32Array(M * (N + 3)).fill(7),
            [M, N + 3],
            dtype,
          );
          const lin = {
            bias: extra === "bias" ? tb : undefined,
            residual: extra === "residual" ? tr : undefined,
            out: extra === "out" ? out : undefined,
            outColumnOffset: extra === "out" ? 2 : undefined,
          };
          const y = linear(tx, tw, { ...lin, norm: { weight: tg, eps: EPS }, variant });
          let got = await y.toArray();
          if (extra === "out") {
            for (let m = 0; m < M; m++) {
              assert.deepEqual([got[m * (N + 3)], got[m * (N + 3) + 1], got[m * (N + 3) + N + 2]], [
                7,
                7,
                7,
              ]);
            }
            got = Float32Array.from(
              { length: M * N },
              (_, i) => got[Math.floor(i / N) * (N + 3) + 2 + (i % N)],
            );
          } else y.dispose();
          const label = `linear norm ${dtype} ${variant} ${extra} [${M},${K},${N}]`;
          const xn = rmsNormRowsReference(x, g, EPS);
          const ref = linearReference(
            xn,
            [M, K],
            w,
            [N, K],
            extra === "bias" ? b : undefined,
            extra === "residual" ? res : undefined,
          );
          assertClose(got, ref, tol(dtype, K), `${label} vs f64`);
          using h = rmsNorm(tx, tg, EPS);
          using chain = linear(h, tw, { bias: lin.bias, residual: lin.residual, variant: "naive" });
          assertClose(got, await chain.toArray(), chainTol(dtype, K), `${label} vs chain`);
          const want = linearReference(
            normedStored(x, g, dtype),
            [M, K],
            w,
            [N, K],
            lin.bias && b,
            lin.residual && res,
          );
          assertClose(got, want, chainTol(dtype, K), `${label} vs the stored normed x`);
        },
      ),
      fcParams(40),
    );
  },
});

Deno.test({
  name: "gemv16 and gemv16_qkv with norm round the normed x to f16 before the product, as " +
    "rmsNorm stores it (cancelling pairs x·(1, -1) expose the rounding)",
  ...GPU_TEST,
  ignore: !gpu.hasF16,
  fn: async () => {
    // Row m: pairs (a, a·(1 + 2^-9)); column n takes pair n with weights (+1, -1), so
    // y ≈ -2^-9·a·r, while each normed value's f16 rounding moves y by up to 2^-11·|a·r|.
    const M = 3, K = 1040, N = K / 2; // 130 words: the two-word loop and the tail both run
    const x = new Float32Array(M * K), w = new Float32Array(N * K);
    const g = roundToF16(randomArray(K, 5, 0.5, 1.5));
    const a = randomArray(M * N, 9, 0.3, 1);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        x[m * K + 2 * n] = a[m * N + n];
        x[m * K + 2 * n + 1] = a[m * N + n] * (1 + 2 ** -9);
      }
    }
    const xh = roundToF16(x);
    for (let n = 0; n < N; n++) {
      w[n * K + 2 * n] = 1 / g[2 * n]; // undo the gain: the pair differs by x alone
      w[n * K + 2 * n + 1] = -1 / g[2 * n + 1];
    }
    const wh = roundToF16(w);
    using tx = Tensor.fromArray(gpu, xh, [M, K], "f16");
    using tw = Tensor.fromArray(gpu, wh, [N, K], "f16");
    using tg = Tensor.fromArray(gpu, g, [K], "f16");
    using y = gemv(tx, tw, { norm: { weight: tg, eps: EPS } });
    const got = await y.toArray();
    const rounded = gemvReference(normedStored(xh, g, "f16"), wh, M, K, N);
    const exact = gemvReference(rmsNormRowsReference(xh, g, EPS), wh, M, K, N);
    const t = { atol: 1e-6, rtol: 2e-3 };
    // the data discriminates: the unrounded product is far from the rounded one
    assert.ok(
      !Array.from(exact).every((v, i) => Math.abs(v - rounded[i]) <= 1e-6 + 2e-2 * Math.abs(v)),
    );
    assertClose(got, roundToF16(Float32Array.from(rounded)), t, "gemv norm f16 vs stored normed x");
    using h = rmsNorm(tx, tg, EPS);
    using chain = linear(h, tw, { variant: "naive" });
    assertClose(got, await chain.toArray(), t, "gemv norm f16 vs rmsNorm → linear");
    // the QKV kernel reads x through the same prologue
    const qkv = linearQkv(tx, tw, tw, tw, { norm: { weight: tg, eps: EPS }, variant: "fused" });
    for (const name of ["q", "k", "v"] as const) {
      using o = qkv[name];
      assertClose(await o.toArray(), got, t, `linearQkv norm f16 ${name} vs gemv`);
    }
  },
});

Deno.test({
  name: "the norm prologue stages the normed rows in workgroup memory where they fit and " +
    "renormalises each word read where they do not: gemv, q/k/v and SwiGLU agree either way",
  ...GPU_TEST,
  fn: async () => {
    const limit = gpu.limits.maxComputeWorkgroupStorageSize;
    for (const dtype of FLOAT_DTYPES) {
      const epv = dtype === "f16" ? 8 : 4;
      // M = 1 with K = 64 words fits any device (1 KB + 1 KB); M = 5 (over
      // GEMV_NORM_STAGED_MAX_M, and under SKINNY_MIN_M: the fused q/k/v and SwiGLU run the
      // gemv16 kernels) with enough words that 16 such rows exceed the limit is not staged.
      const big = Math.ceil(limit / 16 / 16) + 3;
      for (const [M, words, staged] of [[1, 64, true], [5, big, false]] as const) {
        const K = words * epv, N = 6;
        assert.equal(gemvNormStagedWords(M, K, dtype, limit) > 1, staged, `[${M}, ${K}] staged`);
        const x = data(M * K, M + K, dtype), g = data(K, K, dtype);
        const w = data(N * K, 5, dtype), w2 = data(N * K, 6, dtype), w3 = data(3 * K, 7, dtype);
        using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
        using tg = Tensor.fromArray(gpu, g, [K], dtype);
        using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
        using tw2 = Tensor.fromArray(gpu, w2, [N, K], dtype);
        using tw3 = Tensor.fromArray(gpu, w3, [3, K], dtype);
        const norm = { weight: tg, eps: EPS };
        const xn = normedStored(x, g, dtype), label = `${dtype} [${M}, ${K}] staged ${staged}`;
        const t = chainTol(dtype, K);
        using y = gemv(tx, tw, { norm });
        assertClose(await y.toArray(), gemvReference(xn, w, M, K, N), t, `gemv ${label}`);
        const qkv = linearQkv(tx, tw, tw2, tw3, { norm, variant: "fused" });
        using q = qkv.q, k = qkv.k, v = qkv.v;
        assertClose(await q.toArray(), gemvReference(xn, w, M, K, N), t, `q ${label}`);
        assertClose(await k.toArray(), gemvReference(xn, w2, M, K, N), t, `k ${label}`);
        assertClose(await v.toArray(), gemvReference(xn, w3, M, K, 3), t, `v ${label}`);
        using s = linearSwiglu(tx, tw, tw2, { norm, variant: "fused" });
        const ref = linearSwigluReference(xn, [M, K], w, w2, N);
        const ts = { atol: t.atol * Math.sqrt(K), rtol: t.rtol };
        assertClose(await s.toArray(), ref, ts, `swiglu ${label}`);
      }
    }
  },
});

Deno.test({
  name: "linearSwiglu({ norm }) equals linearSwiglu(rmsNorm(x)) in f64 and on the GPU chain, " +
    "fused and unfused, M 1..16, Qwen3-0.6B's K 1024 → F 3072 among the shapes",
  ...GPU_TEST,
  fn: async () => {
    const shapes: [number, number, number][] = [[1, 1024, 3072], [3, 40, 7], [8, 16, 5], [
      13,
      16,
      9,
    ], [
      2,
      24,
      1,
    ]];
    for (const dtype of FLOAT_DTYPES) {
      for (const [M, K, F] of shapes) {
        for (const variant of ["fused", "unfused", "auto"] as const) {
          const x = data(M * K, M + K, dtype);
          const gate = data(F * K, F, dtype), up = data(F * K, F + 1, dtype);
          const g = data(K, K + 1, dtype), bg = data(F, 3, dtype);
          using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
          using tgate = Tensor.fromArray(gpu, gate, [F, K], dtype);
          using tup = Tensor.fromArray(gpu, up, [F, K], dtype);
          using tg = Tensor.fromArray(gpu, g, [K], dtype);
          using tbg = Tensor.fromArray(gpu, bg, [F], dtype);
          const norm = { weight: tg, eps: EPS };
          using y = linearSwiglu(tx, tgate, tup, { norm, gateBias: tbg, variant });
          const got = await y.toArray();
          const label = `linearSwiglu norm ${dtype} ${variant} [${M},${K},${F}]`;
          // silu(g)·u: errors in g, u scale by |u|, |silu(g)| ~ √K/2 (see linear_swiglu_test.ts)
          const t = (tl: Tolerance) => ({ atol: tl.atol * Math.sqrt(K), rtol: tl.rtol });
          const ref = linearSwigluReference(x, [M, K], gate, up, F, {
            gateBias: bg,
            norm: { weight: g, eps: EPS },
          });
          assertClose(got, ref, t(tol(dtype, K)), `${label} vs f64`);
          using h = rmsNorm(tx, tg, EPS);
          using chain = linearSwiglu(h, tgate, tup, { gateBias: tbg, variant: "unfused" });
          assertClose(got, await chain.toArray(), t(chainTol(dtype, K)), `${label} vs chain`);
        }
      }
    }
  },
});

Deno.test({
  name: "norm with a gain of another dtype falls back to rmsNorm (same values)",
  ...GPU_TEST,
  ignore: !gpu.hasF16,
  fn: async () => {
    const M = 2, K = 16, N = 5;
    const x = data(M * K, 1, "f16"), w = data(N * K, 2, "f16"), g = randomArray(K, 3);
    using tx = Tensor.fromArray(gpu, x, [M, K], "f16");
    using tw = Tensor.fromArray(gpu, w, [N, K], "f16");
    using tg = Tensor.fromArray(gpu, g, [K], "f32");
    using h = rmsNorm(tx, tg, EPS);
    using chain = linear(h, tw, { variant: "naive" });
    const want = await chain.toArray();
    using y = linear(tx, tw, { norm: { weight: tg, eps: EPS }, variant: "gemv16" });
    assertClose(await y.toArray(), want, chainTol("f16", K), "linear f16 x, f32 gain");
    using s = linearSwiglu(tx, tw, tw, { norm: { weight: tg, eps: EPS }, variant: "fused" });
    using sc = linearSwiglu(h, tw, tw, { variant: "unfused" });
    assertClose(await s.toArray(), await sc.toArray(), chainTol("f16", K), "linearSwiglu f32 gain");
  },
});

Deno.test({
  name: "norm options are checked: weight shape and eps, naming the op",
  ...GPU_TEST,
  fn: () => {
    const range = (re: RegExp) => (e: unknown) => e instanceof RangeError && re.test(e.message);
    using x = Tensor.zeros(gpu, [1, 8]), w = Tensor.zeros(gpu, [3, 8]);
    using g4 = Tensor.zeros(gpu, [4]), g8 = Tensor.zeros(gpu, [8]);
    assert.throws(
      () => linear(x, w, { norm: { weight: g4, eps: EPS } }),
      range(/linear: norm.weight must be \[8\].*got \[4\]/),
    );
    assert.throws(
      () => linear(x, w, { norm: { weight: g8, eps: NaN } }),
      range(/linear: norm.eps/),
    );
    assert.throws(() => gemv(x, w, { norm: { weight: g4, eps: EPS } }), range(/gemv: norm.weight/));
    assert.throws(
      () => linearSwiglu(x, w, w, { norm: { weight: g8, eps: -1 } }),
      range(/linearSwiglu: norm.eps must be a finite number >= 0, got -1/),
    );
  },
});
