import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import {
  linear,
  linearReference,
  matmul,
  matmulOutputShape,
  matmulReference,
  type MatmulVariant,
} from "../../src/ops/matmul.ts";
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
const VARIANTS: MatmulVariant[] = ["auto", "naive", "tiled", "gemv"];

/**
 * Tolerance of a GPU product against the f64 CPU reference, inputs in [-1, 1]
 * (f16 inputs are rounded to f16 before the reference sees them):
 * - f32: atol 1e-5·√K, rtol 1e-4 (f32 accumulation over K terms);
 * - f16: atol 1e-4·√K, rtol 2e-3 (plus the output's rounding to f16, 2^-11 relative).
 * A wrong or missing term moves an output by ~0.1 or more, far outside these.
 */
function tol(dtype: Dt, K: number): Tolerance {
  const s = Math.sqrt(Math.max(1, K));
  return dtype === "f32" ? { atol: 1e-5 * s, rtol: 1e-4 } : { atol: 1e-4 * s, rtol: 2e-3 };
}

/** Seeded data in [-1, 1), rounded to what a `dtype` tensor stores. */
function data(n: number, seed: number, dtype: Dt): Float32Array {
  const d = randomArray(n, seed);
  return dtype === "f16" ? roundToF16(d) : d;
}

const prod = (s: readonly number[]): number => s.reduce((x, y) => x * y, 1);

/** Runs matmul on the GPU and compares with the reference; returns the GPU result. */
async function checkMatmul(
  dtype: Dt,
  aShape: number[],
  bShape: number[],
  transB: boolean,
  variant: MatmulVariant,
  seed: number,
  maxBindingBytes?: number,
): Promise<Float32Array> {
  const a = data(prod(aShape), seed, dtype), b = data(prod(bShape), seed + 1, dtype);
  using ta = Tensor.fromArray(gpu, a, aShape, dtype);
  using tb = Tensor.fromArray(gpu, b, bShape, dtype);
  using c = matmul(ta, tb, { transB, variant, maxBindingBytes });
  assert.deepEqual(c.shape, matmulOutputShape(aShape, bShape, transB));
  const got = await c.toArray();
  const K = aShape.at(-1)!;
  assertClose(
    got,
    matmulReference(a, aShape, b, bShape, { transB }),
    tol(dtype, K),
    `matmul ${dtype} ${variant} a[${aShape}] b[${bShape}]${transB ? " transB" : ""}`,
  );
  return got;
}

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `matmul() (${dtype}) matches the CPU reference over random shapes, batches and variants`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            M: fc.integer({ min: 1, max: 70 }),
            K: fc.integer({ min: 1, max: 70 }),
            N: fc.integer({ min: 1, max: 70 }),
            B: fc.integer({ min: 1, max: 3 }),
            batch: fc.constantFrom("none", "both", "a", "b"),
            transB: fc.boolean(),
            variant: fc.constantFrom(...VARIANTS),
            seed: fc.integer(),
          }),
          async ({ M, K, N, B, batch, transB, variant, seed }) => {
            const bb = transB ? [N, K] : [K, N];
            const aShape = batch === "both" || batch === "a" ? [B, M, K] : [M, K];
            const bShape = batch === "both" || batch === "b" ? [B, ...bb] : bb;
            await checkMatmul(dtype, aShape, bShape, transB, variant, seed);
          },
        ),
        fcParams(30),
      );
    },
  });
}

Deno.test({
  name: "matmul() variants agree with the reference and with the naive kernel at edge sizes",
  ...GPU_TEST,
  fn: async () => {
    // [M, K, N]: K=1, N=1, M=1; sizes off the 64/16 tiles, the GEMV's 4-wide k groups,
    // its 8-row blocks and 8/32-column groups.
    const shapes = [
      [1, 1, 1],
      [65, 1, 33],
      [7, 129, 1],
      [1, 257, 130],
      [9, 63, 64],
      [
        64,
        16,
        64,
      ],
      [130, 250, 67],
      [17, 5, 31],
    ];
    for (const dtype of FLOAT_DTYPES) {
      for (const transB of [false, true]) {
        for (const [M, K, N] of shapes) {
          const aShape = [M, K], bShape = transB ? [N, K] : [K, N];
          const naive = await checkMatmul(dtype, aShape, bShape, transB, "naive", M + K + N);
          for (const variant of ["tiled", "gemv"] as const) {
            const got = await checkMatmul(dtype, aShape, bShape, transB, variant, M + K + N);
            // Both accumulate in f32, in different orders.
            assertClose(got, naive, tol(dtype, K), `${variant} vs naive ${dtype} [${M},${K},${N}]`);
          }
        }
      }
    }
  },
});

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `linear() (${dtype}) matches y = x·wᵀ + bias over leading dims, with and without bias`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 0, maxLength: 2 }),
          fc.integer({ min: 1, max: 12 }),
          fc.integer({ min: 1, max: 90 }),
          fc.integer({ min: 1, max: 50 }),
          fc.boolean(),
          fc.constantFrom(...VARIANTS),
          fc.integer(),
          async (lead0, T, K, N, withBias, variant, seed) => {
            const xShape = [...lead0, T, K];
            const x = data(prod(xShape), seed, dtype);
            const w = data(N * K, seed + 1, dtype);
            const bias = withBias ? data(N, seed + 2, dtype) : undefined;
            using tx = Tensor.fromArray(gpu, x, xShape, dtype);
            using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
            using tb = bias ? Tensor.fromArray(gpu, bias, [N], dtype) : undefined;
            using y = linear(tx, tw, { bias: tb, variant });
            assert.deepEqual(y.shape, [...lead0, T, N]);
            assertClose(
              await y.toArray(),
              linearReference(x, xShape, w, [N, K], bias),
              tol(dtype, K),
              `linear ${dtype} ${variant} x[${xShape}] w[${N},${K}] bias ${withBias}`,
            );
          },
        ),
        fcParams(25),
      );
    },
  });
}

Deno.test({
  name: "linear() into out at column offsets, chunk by chunk, equals one big linear",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<Dt>(...FLOAT_DTYPES),
        fc.constantFrom([1], [3], [20], [2, 3]),
        fc.integer({ min: 1, max: 70 }),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 4 }),
        fc.integer(),
        async (dtype, lead, K, chunks, seed) => {
          const N = chunks.reduce((s, c) => s + c, 0);
          const pad = 3; // out has extra columns that no chunk writes
          const xShape = [...lead, K], M = prod(lead);
          const x = data(M * K, seed, dtype);
          const w = data(N * K, seed + 1, dtype);
          const bias = data(N, seed + 2, dtype);
          using tx = Tensor.fromArray(gpu, x, xShape, dtype);
          using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
          using tb = Tensor.fromArray(gpu, bias, [N], dtype);
          using whole = linear(tx, tw, { bias: tb });
          using out = Tensor.fromArray(gpu, new Float32Array(M * (N + pad)).fill(7), [
            ...lead,
            N + pad,
          ], dtype);
          let r0 = 0;
          for (const c of chunks) {
            using wc = Tensor.fromArray(gpu, w.subarray(r0 * K, (r0 + c) * K), [c, K], dtype);
            using bc = Tensor.fromArray(gpu, bias.subarray(r0, r0 + c), [c], dtype);
            const ret = linear(tx, wc, { bias: bc, out, outColumnOffset: r0 });
            assert.equal(ret, out);
            r0 += c;
          }
          const got = await out.toArray();
          const ref = await whole.toArray();
          const ours = new Float32Array(M * N);
          for (let m = 0; m < M; m++) {
            ours.set(got.subarray(m * (N + pad), m * (N + pad) + N), m * N);
            for (let j = N; j < N + pad; j++) {
              assert.equal(got[m * (N + pad) + j], 7, `column ${j} of row ${m} was overwritten`);
            }
          }
          assertClose(ours, ref, { atol: 0 }, `chunked vs whole linear ${dtype}`);
          assertClose(ours, linearReference(x, xShape, w, [N, K], bias), tol(dtype, K));
        },
      ),
      fcParams(15),
    );
  },
});

Deno.test({
  name: "matmul()/linear() split rows into binding windows when a buffer exceeds the limit",
  ...GPU_TEST,
  fn: async () => {
    for (const dtype of FLOAT_DTYPES) {
      for (const variant of VARIANTS) {
        // 1000-byte windows: 4 to 7 dispatches, odd element offsets for f16.
        await checkMatmul(dtype, [3, 21, 17], [17, 9], false, variant, 5, 1000);
        await checkMatmul(dtype, [45, 13], [11, 13], true, variant, 6, 1000);
        const x = data(37 * 19, 7, dtype), w = data(5 * 19, 8, dtype);
        using tx = Tensor.fromArray(gpu, x, [37, 19], dtype);
        using tw = Tensor.fromArray(gpu, w, [5, 19], dtype);
        using out = Tensor.zeros(gpu, [37, 12], dtype);
        linear(tx, tw, { out, outColumnOffset: 6, variant, maxBindingBytes: 512 });
        const got = await out.toArray();
        const ref = linearReference(x, [37, 19], w, [5, 19]);
        const cols = new Float32Array(37 * 5);
        for (let m = 0; m < 37; m++) cols.set(got.subarray(m * 12 + 6, m * 12 + 11), m * 5);
        assertClose(cols, ref, tol(dtype, 19), `split linear ${dtype} ${variant}`);
      }
    }
    using w = Tensor.zeros(gpu, [64, 64]);
    using x = Tensor.zeros(gpu, [1, 64]);
    assert.throws(
      () => linear(x, w, { maxBindingBytes: 1024 }),
      (e) => e instanceof RangeError && /w \[64, 64\].*row chunks/.test(e.message),
    );
  },
});

Deno.test({
  name: "matmul() handles empty dimensions and K = 0",
  ...GPU_TEST,
  fn: async () => {
    using a0 = Tensor.zeros(gpu, [0, 5]);
    using b0 = Tensor.zeros(gpu, [5, 3]);
    using c0 = matmul(a0, b0);
    assert.deepEqual(c0.shape, [0, 3]);
    using a = Tensor.zeros(gpu, [4, 0]);
    using b = Tensor.zeros(gpu, [0, 3]);
    for (const variant of VARIANTS) {
      using c = matmul(a, b, { variant });
      assert.deepEqual([...await c.toArray()], new Array(12).fill(0));
    }
    using w = Tensor.zeros(gpu, [2, 0]);
    using bias = Tensor.fromArray(gpu, [1.5, -2], [2]);
    using y = linear(a, w, { bias });
    assert.deepEqual([...await y.toArray()], [1.5, -2, 1.5, -2, 1.5, -2, 1.5, -2]);
  },
});

Deno.test({
  name: "matmul()/linear() cover more than 65535 workgroups through a 2D grid",
  ...GPU_TEST,
  fn: async () => {
    // gemv_t: 8 columns per workgroup -> 75,000 workgroups.
    const N = 600_000, K = 5;
    const x = data(K, 1, "f32"), w = data(N * K, 2, "f32");
    using tx = Tensor.fromArray(gpu, x, [1, K]);
    using tw = Tensor.fromArray(gpu, w, [N, K]);
    using y = linear(tx, tw);
    assertClose(await y.toArray(), linearReference(x, [1, K], w, [N, K]), tol("f32", K), "gemv");
    // tiled: one 64x64 tile per batch -> 66,000 workgroups.
    const B = 66_000;
    await checkMatmul("f32", [B, 1, 2], [B, 2, 1], false, "tiled", 3);
  },
});

Deno.test({
  name: "matmul()/linear() reject shapes that do not multiply, naming both",
  ...GPU_TEST,
  fn: () => {
    const t = (shape: number[], dtype: "f32" | "i32" = "f32") => Tensor.zeros(gpu, shape, dtype);
    using a = t([2, 3]), b = t([4, 5]), bt = t([5, 4]), a3 = t([2, 2, 3]), b3 = t([3, 3, 5]);
    const range = (re: RegExp) => (e: unknown) => e instanceof RangeError && re.test(e.message);
    assert.throws(() => matmul(a, b), range(/K=3 vs 4.*a \[2, 3\] and b \[4, 5\]/));
    assert.throws(() => matmul(a, bt, { transB: true }), range(/a \[2, 3\] and b \[5, 4\]/));
    assert.throws(() => matmul(a3, b3), range(/batch.*a \[2, 2, 3\] and b \[3, 3, 5\]/));
    using v = t([3]);
    assert.throws(() => matmul(v, b), range(/rank >= 2.*a \[3\] and b \[4, 5\]/));
    using x = t([7, 3]), w = t([6, 4]), w2 = t([6, 3]), bias = t([5]), out = t([7, 8]);
    assert.throws(() => linear(x, w), range(/K=3 vs 4.*x \[7, 3\] and w \[6, 4\]/));
    assert.throws(() => linear(x, w2, { bias }), range(/bias must be \[6\].*got \[5\]/));
    assert.throws(
      () => linear(x, w2, { out, outColumnOffset: 3 }),
      range(/out \[7, 8\] cannot take columns 3\.\.8/),
    );
    using out2 = t([6, 8]);
    assert.throws(() => linear(x, w2, { out: out2 }), range(/out \[6, 8\]/));
    assert.throws(() => linear(x, w2, { outColumnOffset: 1 }), range(/needs opts\.out/));
    using xi = t([7, 3], "i32");
    assert.throws(() => linear(xi, w2), TypeError);
    if (gpu.hasF16) {
      using w16 = Tensor.zeros(gpu, [6, 3], "f16");
      assert.throws(() => linear(x, w16), TypeError);
    }
  },
});
