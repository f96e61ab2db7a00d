/**
 * The deferred RMSNorm of the `gemv16` kernels (`norm.deferred`, `NORM = 2` in shaders/gemv.wgsl):
 * `y = r·((x ⊙ gain)·wᵀ)` with the squares of x summed beside the product. Against the f64 CPU
 * references on `rmsNormRowsReference` of x for every entry (`gemv16`, `gemv16_wide`, q/k/v,
 * SwiGLU), with biases and residuals; in f16, against the product of the *unrounded* normed x
 * (what deferring computes) where the rounded one (the exact prologue) is far off; and above
 * `GEMV_NORM_DEFERRED_MAX_M` rows, bit for bit the exact prologue (the fallback).
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import {
  gemv,
  GEMV_NORM_DEFERRED_MAX_M,
  gemvReference,
  gemvTuning,
  rmsNormRowsReference,
} from "../../src/ops/gemv.ts";
import { linear, linearReference } from "../../src/ops/matmul.ts";
import { linearSwiglu, linearSwigluReference } from "../../src/ops/linear_swiglu.ts";
import { linearQkv, linearQkvReference } from "../../src/ops/linear_qkv.ts";
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
 * Sums of K terms ≲ 1.7 of random sign against f64: f32 accumulation order (the row scale
 * applied once at the end); f16: the rounding of x, w and the output (the normed x is not
 * rounded here). A wrong scale, a missing gain or term moves an output by ~0.1 or more.
 */
function tol(dtype: Dt, K: number): Tolerance {
  const s = Math.sqrt(K);
  return dtype === "f32" ? { atol: 4e-6 * s, rtol: 1e-5 } : { atol: 2e-3 * s, rtol: 4e-3 };
}

function data(n: number, seed: number, dtype: Dt): Float32Array {
  const d = randomArray(n, seed);
  return dtype === "f16" ? roundToF16(d) : d;
}

Deno.test({
  name: "deferred norm: gemv16, gemv16_wide, q/k/v and SwiGLU equal the f64 references on the " +
    "normed x, M 1..6 (5, 6: the exact prologue), K words 1..80, biases and residuals (f32/f16)",
  ...GPU_TEST,
  fn: async () => {
    const saved = { ...gemvTuning };
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...FLOAT_DTYPES),
          fc.constantFrom("gemv16", "gemv16wide", "qkv", "swiglu"),
          fc.integer({ min: 1, max: 6 }),
          fc.integer({ min: 1, max: 80 }),
          fc.integer({ min: 1, max: 70 }),
          fc.constantFrom<number | undefined>(undefined, 4, 16, 64),
          fc.integer({ min: 0, max: 1 << 30 }),
          async (dtype, entry, M, words, N, lanes, seed) => {
            gemvTuning.wideLanes = lanes;
            const K = words * (dtype === "f16" ? 8 : 4);
            const x = data(M * K, seed, dtype), g = data(K, seed + 1, dtype);
            const w = data(N * K, seed + 2, dtype), w2 = data(N * K, seed + 3, dtype);
            const b = data(N, seed + 4, dtype), res = data(M * N, seed + 5, dtype);
            using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
            using tg = Tensor.fromArray(gpu, g, [K], dtype);
            using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
            using tw2 = Tensor.fromArray(gpu, w2, [N, K], dtype);
            using tb = Tensor.fromArray(gpu, b, [N], dtype);
            using tr = Tensor.fromArray(gpu, res, [M, N], dtype);
            const norm = { weight: tg, eps: EPS, deferred: true };
            const xn = rmsNormRowsReference(x, g, EPS);
            const label = `${entry} ${dtype} [${M}, ${K}] x [${N}] lanes ${lanes}`;
            const t = tol(dtype, K);
            if (entry === "gemv16" || entry === "gemv16wide") {
              using y = linear(tx, tw, { bias: tb, residual: tr, norm, variant: entry });
              const want = linearReference(xn, [M, K], w, [N, K], b, res);
              assertClose(await y.toArray(), want, t, label);
            } else if (entry === "qkv") {
              const o = linearQkv(tx, tw, tw2, tw, { norm, kBias: tb, variant: "fused" });
              using q = o.q, k = o.k, v = o.v;
              const want = linearQkvReference(x, M, K, { wq: w, wk: w2, wv: w }, {
                norm: { weight: g, eps: EPS },
                kBias: b,
              });
              assertClose(await q.toArray(), want.q, t, `${label} q`);
              assertClose(await k.toArray(), want.k, t, `${label} k`);
              assertClose(await v.toArray(), want.v, t, `${label} v`);
            } else {
              using y = linearSwiglu(tx, tw, tw2, { norm, gateBias: tb, variant: "fused" });
              const want = linearSwigluReference(x, [M, K], w, w2, N, {
                gateBias: b,
                norm: { weight: g, eps: EPS },
              });
              // silu(g)·u of two such sums: the gate's error times |u| and the other way round
              const ts = { atol: (t.atol ?? 0) * Math.sqrt(K), rtol: 2 * (t.rtol ?? 0) };
              assertClose(await y.toArray(), want, ts, label);
            }
          },
        ),
        fcParams(32),
      );
    } finally {
      Object.assign(gemvTuning, saved);
    }
  },
});

Deno.test({
  name: "deferred norm in f16: the product of the unrounded normed x where the exact prologue " +
    "rounds it (cancelling pairs x·(1, -1)); above GEMV_NORM_DEFERRED_MAX_M rows the prologue",
  ...GPU_TEST,
  ignore: !gpu.hasF16,
  fn: async () => {
    // Row m: pairs (a, a·(1 + 2^-9)); column n takes pair n with weights (±1 / gain), so
    // y ≈ -2^-9·a·r, while each normed value's f16 rounding moves y by up to 2^-11·|a·r|.
    const K = 1040, N = K / 2; // 130 words: the two-word loop and the tail both run
    for (const M of [3, GEMV_NORM_DEFERRED_MAX_M + 1]) {
      const x = new Float32Array(M * K), w = new Float32Array(N * K);
      const g = roundToF16(randomArray(K, 5, 0.5, 1.5));
      const a = randomArray(M * N, 9, 0.3, 1);
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          x[m * K + 2 * n] = a[m * N + n];
          x[m * K + 2 * n + 1] = a[m * N + n] * (1 + 2 ** -9);
        }
      }
      for (let n = 0; n < N; n++) {
        w[n * K + 2 * n] = 1 / g[2 * n];
        w[n * K + 2 * n + 1] = -1 / g[2 * n + 1];
      }
      const xh = roundToF16(x), wh = roundToF16(w);
      using tx = Tensor.fromArray(gpu, xh, [M, K], "f16");
      using tw = Tensor.fromArray(gpu, wh, [N, K], "f16");
      using tg = Tensor.fromArray(gpu, g, [K], "f16");
      const deferred = { weight: tg, eps: EPS, deferred: true };
      using y = gemv(tx, tw, { norm: deferred });
      using yExact = gemv(tx, tw, { norm: { weight: tg, eps: EPS } });
      const got = await y.toArray(), exactPrologue = await yExact.toArray();
      if (M > GEMV_NORM_DEFERRED_MAX_M) {
        assert.deepEqual(got, exactPrologue, `M = ${M}: the exact prologue, bit for bit`);
        continue;
      }
      const unrounded = roundToF16(
        Float32Array.from(gemvReference(rmsNormRowsReference(xh, g, EPS), wh, M, K, N)),
      );
      const t = { atol: 1e-6, rtol: 2e-3 };
      // the data discriminates: the exact prologue (rounded normed x) is far from the unrounded
      assert.ok(
        !Array.from(unrounded).every((v, i) =>
          Math.abs(v - exactPrologue[i]) <= 1e-6 + 2e-2 * Math.abs(v)
        ),
      );
      assertClose(got, unrounded, t, "gemv16 deferred vs the unrounded normed x");
      using wide = linear(tx, tw, { norm: deferred, variant: "gemv16wide" });
      assertClose(await wide.toArray(), got, t, "gemv16_wide deferred vs gemv16");
      const qkv = linearQkv(tx, tw, tw, tw, { norm: deferred, variant: "fused" });
      for (const name of ["q", "k", "v"] as const) {
        using o = qkv[name];
        assertClose(await o.toArray(), got, t, `linearQkv deferred ${name} vs gemv16`);
      }
    }
  },
});
