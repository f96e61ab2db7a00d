/**
 * The large-tile matmul kernels (`tiled128`: 128×128 tiles, `tiled128x64`: 128×64;
 * shaders/matmul_big.wgsl) against the f64 CPU reference and the `naive` kernel, at sizes off
 * their tiles (M 1..200, N 1..257, K 1..300: partial 128-row and 64/128-column tiles, partial
 * 16-wide K steps), both layouts of b, batches with either side broadcast, the bias and residual
 * epilogues, column offsets in a wider output, and the row-block split (odd element offsets).
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { Gpu } from "../../src/gpu/device.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import {
  linear,
  linearReference,
  matmul,
  matmulAuto,
  matmulOutputShape,
  matmulReference,
  type MatmulVariant,
  splitKTuning,
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
const BIG: MatmulVariant[] = ["tiled128", "tiled128x64", "tiled128split"];

/**
 * Runs `fn` (which records kernels) with split K allowed from 16 K steps a split, so that
 * `tiled128split` splits these small products (K ≥ 32: 2..8 splits, the last often short or
 * empty); the default (256) would leave them whole.
 */
function splitting<R>(fn: () => R): R {
  const minK = splitKTuning.minK;
  splitKTuning.minK = 16;
  try {
    return fn();
  } finally {
    splitKTuning.minK = minK;
  }
}

/** As in matmul_test.ts: f32 atol 1e-5·√K, rtol 1e-4; f16 atol 1e-4·√K, rtol 2e-3. */
function tol(dtype: Dt, K: number): Tolerance {
  const s = Math.sqrt(Math.max(1, K));
  return dtype === "f32" ? { atol: 1e-5 * s, rtol: 1e-4 } : { atol: 1e-4 * s, rtol: 2e-3 };
}

function data(n: number, seed: number, dtype: Dt): Float32Array {
  const d = randomArray(n, seed);
  return dtype === "f16" ? roundToF16(d) : d;
}

const prod = (s: readonly number[]): number => s.reduce((x, y) => x * y, 1);

async function run(
  dtype: Dt,
  a: Float32Array,
  aShape: number[],
  b: Float32Array,
  bShape: number[],
  transB: boolean,
  variant: MatmulVariant,
  maxBindingBytes?: number,
): Promise<Float32Array> {
  using ta = Tensor.fromArray(gpu, a, aShape, dtype);
  using tb = Tensor.fromArray(gpu, b, bShape, dtype);
  using c = splitting(() => matmul(ta, tb, { transB, variant, maxBindingBytes }));
  assert.deepEqual(c.shape, matmulOutputShape(aShape, bShape, transB));
  return await c.toArray();
}

/** Each big variant equals the reference and `naive` on `a`·`b`. */
async function check(
  dtype: Dt,
  aShape: number[],
  bShape: number[],
  transB: boolean,
  seed: number,
  maxBindingBytes?: number,
): Promise<void> {
  const a = data(prod(aShape), seed, dtype), b = data(prod(bShape), seed + 1, dtype);
  const K = aShape.at(-1)!;
  const ref = matmulReference(a, aShape, b, bShape, { transB });
  const naive = await run(dtype, a, aShape, b, bShape, transB, "naive");
  const what = `${dtype} a[${aShape}] b[${bShape}]${transB ? " transB" : ""}`;
  for (const variant of BIG) {
    const got = await run(dtype, a, aShape, b, bShape, transB, variant, maxBindingBytes);
    assertClose(got, ref, tol(dtype, K), `${variant} vs reference ${what}`);
    assertClose(got, naive, tol(dtype, K), `${variant} vs naive ${what}`);
  }
}

Deno.test("matmul_big.wgsl keeps matmul.wgsl's parameters, bindings and epilogue", async () => {
  const read = (f: string) =>
    Deno.readTextFile(new URL(`../../shaders/${f}.wgsl`, import.meta.url));
  const [small, big] = await Promise.all([read("matmul"), read("matmul_big")]);
  // From `struct Params` to the end of `fn store`, less matmul.wgsl's naive-only `WG` line.
  const shared = (src: string) => {
    const start = src.indexOf("struct Params {");
    const end = src.indexOf("\n}\n", src.indexOf("fn store(")) + 3;
    assert.ok(start >= 0 && end > start, "struct Params .. fn store not found");
    return src.slice(start, end).replace(/^override WG: .*\n/m, "");
  };
  assert.equal(shared(big), shared(small));
});

Deno.test({
  name: "matmul() tiled128 / tiled128x64 equal the reference and naive at sizes off the tiles",
  ...GPU_TEST,
  fn: async () => {
    // [M, K, N]: every M in 1, 7, 129, 200, N in 1, 130, 257, K in 1, 9, 33, 300 at least once;
    // 128 < M, N < 256 leave a partial second tile, 130 a partial 64-column one.
    const shapes = [
      [1, 1, 1],
      [7, 9, 130],
      [129, 33, 257],
      [200, 300, 130],
      [129, 1, 1],
      [200, 9, 257],
      [7, 300, 1],
      [128, 32, 128],
      [130, 48, 129], // three splits of K, 16 each (tiled128split)
    ];
    for (const dtype of FLOAT_DTYPES) {
      for (const transB of [false, true]) {
        for (const [M, K, N] of shapes) {
          await check(dtype, [M, K], transB ? [N, K] : [K, N], transB, M * 7 + K * 3 + N);
        }
      }
    }
    // K = 0: no K step runs; the output is zeros (plus the bias in linear).
    using a = Tensor.zeros(gpu, [130, 0]);
    using b = Tensor.zeros(gpu, [0, 3]);
    using w = Tensor.zeros(gpu, [3, 0]);
    using bias = Tensor.fromArray(gpu, [1.5, -2, 0.25], [3]);
    for (const variant of BIG) {
      using c = matmul(a, b, { variant });
      assert.deepEqual([...await c.toArray()], new Array(390).fill(0), variant);
      using y = linear(a, w, { bias, variant });
      assert.deepEqual(
        [...await y.toArray()],
        new Array(130).fill([1.5, -2, 0.25]).flat(),
        variant,
      );
    }
  },
});

Deno.test({
  name: "matmul() tiled128 / tiled128x64 handle batches with either side broadcast",
  ...GPU_TEST,
  fn: async () => {
    for (const dtype of FLOAT_DTYPES) {
      for (const transB of [false, true]) {
        const [B, M, K, N] = [3, 70, 41, 131]; // K = 41: two splits of K
        const bb = transB ? [N, K] : [K, N];
        await check(dtype, [B, M, K], [B, ...bb], transB, 11); // both batched
        await check(dtype, [M, K], [B, ...bb], transB, 12); // a broadcast (strideA = 0)
        await check(dtype, [B, M, K], bb, transB, 13); // b broadcast (folded into M = 210)
      }
    }
  },
});

Deno.test({
  name: "linear() tiled128 / tiled128x64 add bias and residual, and write columns of a wider out",
  ...GPU_TEST,
  fn: async () => {
    for (const dtype of FLOAT_DTYPES) {
      const [M, K, N] = [131, 37, 150];
      const x = data(M * K, 21, dtype), w = data(N * K, 22, dtype);
      const bias = data(N, 23, dtype), res = data(M * N, 24, dtype);
      using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
      using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
      using tbias = Tensor.fromArray(gpu, bias, [N], dtype);
      using tres = Tensor.fromArray(gpu, res, [1, M, N], dtype);
      const ref = linearReference(x, [M, K], w, [N, K], bias, res);
      const refNoRes = linearReference(x, [M, K], w, [N, K], bias);
      for (const variant of BIG) {
        // Whole, then through 24 KiB binding windows (row blocks of x, out and residual, element
        // offsets off the 256-byte grain); columns 5..5+N-1 of a [M, N + 9] output, the other
        // columns untouched.
        for (const maxBindingBytes of [undefined, 24576]) {
          using y = splitting(() =>
            linear(tx, tw, { bias: tbias, residual: tres, variant, maxBindingBytes })
          );
          assert.deepEqual(y.shape, [1, M, N]);
          assertClose(
            await y.toArray(),
            ref,
            tol(dtype, K),
            `${variant} ${dtype} bias+residual, window ${maxBindingBytes ?? "whole"}`,
          );
          const ld = N + 9;
          using out = Tensor.fromArray(gpu, new Float32Array(M * ld).fill(7), [M, ld], dtype);
          splitting(() =>
            linear(tx, tw, { bias: tbias, out, outColumnOffset: 5, variant, maxBindingBytes })
          );
          const got = await out.toArray();
          const cols = new Float32Array(M * N);
          for (let m = 0; m < M; m++) {
            cols.set(got.subarray(m * ld + 5, m * ld + 5 + N), m * N);
            for (const j of [0, 1, 2, 3, 4, ld - 4, ld - 3, ld - 2, ld - 1]) {
              assert.equal(got[m * ld + j], 7, `${variant}: column ${j} of row ${m} overwritten`);
            }
          }
          assertClose(
            cols,
            refNoRes,
            tol(dtype, K),
            `${variant} ${dtype} out columns, window ${maxBindingBytes ?? "whole"}`,
          );
        }
      }
      // matmul through row-block windows too (a:[150, 37], out:[150, 9] in 2000-byte windows).
      await check(dtype, [150, 37], [9, 37], true, 25, 2000);
      await check(dtype, [150, 37], [37, 9], false, 26, 2000);
    }
  },
});

Deno.test({
  name: "property: tiled128 / tiled128x64 equal the reference and naive for random sizes, " +
    "layouts and batch broadcasts",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          dtype: fc.constantFrom(...FLOAT_DTYPES),
          M: fc.integer({ min: 1, max: 260 }),
          K: fc.integer({ min: 1, max: 140 }),
          N: fc.integer({ min: 1, max: 260 }),
          B: fc.integer({ min: 1, max: 2 }),
          batch: fc.constantFrom("none", "both", "a", "b"),
          transB: fc.boolean(),
          seed: fc.integer({ min: 0, max: 1 << 20 }),
        }),
        async ({ dtype, M, K, N, B, batch, transB, seed }) => {
          const bb = transB ? [N, K] : [K, N];
          const aShape = batch === "both" || batch === "a" ? [B, M, K] : [M, K];
          const bShape = batch === "both" || batch === "b" ? [B, ...bb] : bb;
          await check(dtype, aShape, bShape, transB, seed);
        },
      ),
      fcParams(8),
    );
  },
});

Deno.test({
  name: "auto takes tiled128split for a product of too few 128×128 tiles (GPU routes), and " +
    "tiled128 with a short K, with splitK off, or with enough tiles",
  ...GPU_TEST,
  fn: async () => {
    const g = await Gpu.create({ gpuRoutes: true });
    const ran: string[] = [];
    const dispatch = g.dispatch.bind(g);
    g.dispatch = (k, ...rest) => {
      ran.push(k.label.split(" ")[0]); // shader:entry (the label goes on with the constants)
      dispatch(k, ...rest);
    };
    try {
      // 128 tiles (a batch of 128 products of 128×128), K = 40: two splits of 16-step minimum.
      const [B, M, N] = [128, 128, 128];
      const kernels = async (K: number, splitK = true, batch = B): Promise<string[]> => {
        const a = data(batch * M * K, K, "f32"), b = data(batch * K * N, K + 1, "f32");
        using ta = Tensor.fromArray(g, a, [batch, M, K]);
        using tb = Tensor.fromArray(g, b, [batch, K, N]);
        ran.length = 0;
        const was = matmulAuto.splitK;
        matmulAuto.splitK = splitK;
        let c: Tensor;
        try {
          c = splitting(() => matmul(ta, tb));
        } finally {
          matmulAuto.splitK = was;
        }
        using _c = c;
        const ref = matmulReference(a, [batch, M, K], b, [batch, K, N]);
        assertClose(await c.toArray(), ref, tol("f32", K), `auto, K ${K}, batch ${batch}`);
        return [...ran];
      };
      assert.deepEqual(await kernels(40), ["matmul_big:tiled128_split", "matmul_big:splitk_sum"]);
      assert.deepEqual(await kernels(31), ["matmul_big:tiled128"]); // under two splits of 16
      assert.deepEqual(await kernels(40, false), ["matmul_big:tiled128"]);
      // 512 tiles fill the GPU (over half of splitKTuning.workgroups = 512)
      assert.deepEqual(await kernels(40, true, 4 * B), ["matmul_big:tiled128"]);
    } finally {
      g.device.destroy();
    }
  },
});
