/**
 * linear()'s residual epilogue (`residual + x·wᵀ + bias` in the projection's dispatch) on every
 * kernel, and the `gemv16` variant of linear (shaders/gemv.wgsl) against the naive kernel and
 * the f64 CPU reference: bias, residual, output column ranges, row blocks, binding windows.
 */

import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { add } from "../../src/ops/elementwise.ts";
import { linear, linearReference, type MatmulVariant } from "../../src/ops/matmul.ts";
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

/**
 * GPU vs f64 reference, inputs in [-1, 1] (f16 inputs rounded before the reference sees them):
 * f32 accumulation error grows like √K; f16 adds the output's rounding (2^-11 relative). The
 * unfused chain (linear, then add) rounds the product once more before the add: 2^-11 of it.
 * A wrong or missing term (or a missing residual, itself in [-1, 1]) moves an output by ~0.1+.
 */
function tol(dtype: Dt, K: number): Tolerance {
  const s = Math.sqrt(Math.max(1, K));
  return dtype === "f32" ? { atol: 1e-5 * s, rtol: 1e-4 } : { atol: 1e-4 * s, rtol: 2e-3 };
}

function data(n: number, seed: number, dtype: Dt): Float32Array {
  const d = randomArray(n, seed);
  return dtype === "f16" ? roundToF16(d) : d;
}

const words = (dtype: Dt) => (dtype === "f16" ? 8 : 4);

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `linear() (${dtype}) with a residual equals residual + x·wᵀ + bias on every kernel ` +
      `and equals add(linear(), residual)`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            B: fc.integer({ min: 1, max: 3 }),
            T: fc.integer({ min: 1, max: 12 }),
            kWords: fc.integer({ min: 1, max: 12 }),
            kExtra: fc.integer({ min: 0, max: 3 }),
            N: fc.integer({ min: 1, max: 70 }),
            withBias: fc.boolean(),
            variant: fc.constantFrom<MatmulVariant>(
              "auto",
              "naive",
              "tiled",
              "gemv",
              "gemv16",
              "skinny",
            ),
            seed: fc.integer(),
          }),
          async ({ B, T, kWords, kExtra, N, withBias, variant, seed }) => {
            // gemv16 and skinny need whole 16-byte words of K; the others also get ragged K.
            const whole = variant === "gemv16" || variant === "skinny";
            const K = kWords * words(dtype) + (whole ? 0 : kExtra);
            const M = B * T;
            const x = data(M * K, seed, dtype), w = data(N * K, seed + 1, dtype);
            const bias = withBias ? data(N, seed + 2, dtype) : undefined;
            const res = data(M * N, seed + 3, dtype);
            using tx = Tensor.fromArray(gpu, x, [M, K], dtype); // x:[B·T, K]
            using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
            using tb = bias ? Tensor.fromArray(gpu, bias, [N], dtype) : undefined;
            using tr = Tensor.fromArray(gpu, res, [B, T, N], dtype); // residual:[B, T, N]
            using y = linear(tx, tw, { bias: tb, residual: tr, variant });
            assert.deepEqual(y.shape, [B, T, N]);
            const got = await y.toArray();
            const label = `linear+residual ${dtype} ${variant} [${M},${K},${N}] bias ${withBias}`;
            assertClose(
              got,
              linearReference(x, [M, K], w, [N, K], bias, res),
              tol(dtype, K),
              label,
            );
            using plain = linear(tx, tw, { bias: tb, variant: "naive" });
            using tr2 = Tensor.fromArray(gpu, res, [M, N], dtype);
            using chain = add(tr2, plain);
            // the chain rounds x·wᵀ to the storage type before the add, the epilogue does not:
            // in f16 they may differ by half an ulp of |x·wᵀ| besides the sum's own rounding
            // (seen on the H200: 1 ulp where x·wᵀ ≈ −residual)
            const p = await plain.toArray();
            const t = tol(dtype, K);
            const chainTol = dtype === "f16"
              ? { ...t, atol: t.atol + 2 ** -11 * p.reduce((m, v) => Math.max(m, Math.abs(v)), 0) }
              : t;
            assertClose(got, await chain.toArray(), chainTol, `${label} vs add chain`);
          },
        ),
        fcParams(30),
      );
    },
  });
}

Deno.test({
  name: "linear() variants gemv16 and skinny agree with naive and the reference: M 1..40 (row " +
    "blocks of 16), N not a multiple of 4, bias, out column ranges",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<Dt>(...FLOAT_DTYPES),
        fc.constantFrom<MatmulVariant>("gemv16", "skinny"),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 70 }),
        fc.integer({ min: 0, max: 5 }),
        fc.boolean(),
        fc.integer(),
        async (dtype, variant, M, kWords, N, col, withBias, seed) => {
          const K = kWords * words(dtype);
          const x = data(M * K, seed, dtype), w = data(N * K, seed + 1, dtype);
          const bias = withBias ? data(N, seed + 2, dtype) : undefined;
          using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
          using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
          using tb = bias ? Tensor.fromArray(gpu, bias, [N], dtype) : undefined;
          const ld = N + col + 2;
          using out = Tensor.fromArray(gpu, new Float32Array(M * ld).fill(7), [M, ld], dtype);
          linear(tx, tw, { bias: tb, out, outColumnOffset: col, variant });
          using naive = linear(tx, tw, { bias: tb, variant: "naive" });
          const all = await out.toArray(), cols = new Float32Array(M * N);
          for (let m = 0; m < M; m++) {
            cols.set(all.subarray(m * ld + col, m * ld + col + N), m * N);
            for (let j = 0; j < ld; j++) {
              if (j >= col && j < col + N) continue;
              assert.equal(all[m * ld + j], 7, `${variant} wrote column ${j} of row ${m}`);
            }
          }
          const label = `${variant} ${dtype} [${M},${K},${N}] col ${col} bias ${withBias}`;
          assertClose(cols, linearReference(x, [M, K], w, [N, K], bias), tol(dtype, K), label);
          assertClose(cols, await naive.toArray(), tol(dtype, K), `${label} vs naive`);
        },
      ),
      fcParams(25),
    );
  },
});

Deno.test({
  name: "linear() with a residual splits rows into binding windows on every kernel",
  ...GPU_TEST,
  fn: async () => {
    for (const dtype of FLOAT_DTYPES) {
      for (const variant of ["auto", "naive", "tiled", "gemv", "gemv16", "skinny"] as const) {
        // 512-byte windows over x:[37, 24], res/out:[37, 5]: 2 rows per dispatch, offsets
        // inside the 256-byte aligned windows (x's in whole 16-byte words, as gemv16 needs).
        const M = 37, K = 24, N = 5;
        const x = data(M * K, 7, dtype), w = data(N * K, 8, dtype), res = data(M * N, 9, dtype);
        using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
        using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
        using tr = Tensor.fromArray(gpu, res, [M, N], dtype);
        using y = linear(tx, tw, { residual: tr, variant, maxBindingBytes: 512 });
        assertClose(
          await y.toArray(),
          linearReference(x, [M, K], w, [N, K], undefined, res),
          tol(dtype, K),
          `split linear+residual ${dtype} ${variant}`,
        );
      }
    }
  },
});

Deno.test({
  name: "linear() rejects a residual of the wrong shape or dtype, residual with out, and " +
    "gemv16 and skinny where K is not whole 16-byte words",
  ...GPU_TEST,
  fn: () => {
    const range = (re: RegExp) => (e: unknown) => e instanceof RangeError && re.test(e.message);
    using x = Tensor.zeros(gpu, [6, 8]), w = Tensor.zeros(gpu, [5, 8]);
    using r1 = Tensor.zeros(gpu, [6, 4]), r2 = Tensor.zeros(gpu, [7, 5]);
    using ok = Tensor.zeros(gpu, [2, 3, 5]), out = Tensor.zeros(gpu, [6, 5]);
    assert.throws(
      () => linear(x, w, { residual: r1 }),
      range(/residual must be \[\.\.\., 5\] with 6 rows.*x \[6, 8\].*w \[5, 8\].*got \[6, 4\]/),
    );
    assert.throws(() => linear(x, w, { residual: r2 }), range(/residual.*got \[7, 5\]/));
    assert.throws(
      () => linear(x, w, { residual: ok, out }),
      range(/opts\.residual \[2, 3, 5\] cannot be combined with opts\.out \[6, 5\]/),
    );
    assert.throws(() => linear(x, w, { residual: ok, outColumnOffset: 1 }), range(/needs opts/));
    using x6 = Tensor.zeros(gpu, [1, 6]), w6 = Tensor.zeros(gpu, [5, 6]);
    assert.throws(
      () => linear(x6, w6, { variant: "gemv16" }),
      range(/gemv16 needs .*K a multiple of 4.*K=6 f32/),
    );
    assert.throws(
      () => linear(x6, w6, { variant: "skinny" }),
      range(/skinny needs .*K a multiple of 4.*K=6 f32/),
    );
    if (gpu.hasF16) {
      using r16 = Tensor.zeros(gpu, [6, 5], "f16");
      assert.throws(() => linear(x, w, { residual: r16 }), TypeError);
    }
  },
});
