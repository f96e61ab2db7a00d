import assert from "node:assert/strict";
import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { logSoftmax, softmax, softmaxReference } from "../../src/ops/softmax.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, randomArray } from "../_util.ts";

/**
 * Tolerances. softmax: probabilities in [0, 1]; f32 exp/sum error ~1e-6 relative, f16 one
 * rounding of the output (half an ulp is 4.9e-4 relative). log-softmax: absolute error grows
 * with |log p| (x spans ±8 here, so |log p| < ~20 plus log N); f16 output rounds to ~1e-2 there.
 */
const TOL = {
  softmax: { f32: { atol: 1e-6, rtol: 1e-5 }, f16: { atol: 2e-4, rtol: 2e-3 } },
  log: { f32: { atol: 2e-5, rtol: 1e-5 }, f16: { atol: 2e-3, rtol: 2e-3 } },
} as const;
const LOWEST = { f32: -3.4028234663852886e38, f16: -65504 };

/** The reference with -Infinity replaced by what the GPU stores in its place. */
function expected(ref: Float64Array, log: boolean, dtype: "f32" | "f16"): Float64Array {
  return log ? ref.map((v) => (v === -Infinity ? LOWEST[dtype] : v)) : ref;
}

/** A mask shape broadcastable onto `shape`, drawn from `seed`: a suffix of it with some dims 1. */
function maskShapeOf(shape: readonly number[], seed: number): number[] {
  const r = randomArray(shape.length + 1, seed, 0, 1);
  const drop = Math.floor(r[0] * shape.length);
  return shape.slice(drop).map((d, i) => (r[i + 1] < 0.3 ? 1 : d));
}

for (const dtype of FLOAT_DTYPES) {
  for (const log of [false, true]) {
    const fn = log ? logSoftmax : softmax;
    const name = log ? "logSoftmax" : "softmax";
    Deno.test({
      name: `${name}() (${dtype}) matches the CPU reference with broadcast masks and causal mode`,
      ...GPU_TEST,
      fn: async () => {
        await fc.assert(
          fc.asyncProperty(
            fc.array(fc.integer({ min: 1, max: 4 }), { maxLength: 2 }),
            fc.integer({ min: 1, max: 5 }),
            fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 250, max: 1500 })),
            fc.integer(),
            fc.option(fc.integer({ min: -3, max: 3 })),
            fc.boolean(),
            fc.double({ min: 0, max: 0.9, noNaN: true }),
            async (lead, T, S, seed, qOff, withMask, pMasked) => {
              const shape = [...lead, T, S];
              const size = shape.reduce((a, b) => a * b, 1);
              let x = randomArray(size, seed, -8, 8);
              if (dtype === "f16") x = roundToF16(x);
              const mShape = maskShapeOf(shape, seed + 2);
              const mSize = mShape.reduce((a, b) => a * b, 1);
              // mask values: masked (-1e9 or -inf), or a mild bias in [-2, 0]
              const r = randomArray(mSize, seed + 1);
              let m: Float32Array = Float32Array.from(
                r,
                (v, i) => (Math.abs(v) < pMasked ? (i % 2 ? -1e9 : -Infinity) : -(v + 1)),
              );
              if (dtype === "f16") m = roundToF16(m);
              const causal = qOff === null ? undefined : { queryOffset: qOff };
              using tx = Tensor.fromArray(gpu, x, shape, dtype);
              using tm = withMask ? Tensor.fromArray(gpu, m, mShape, dtype) : undefined;
              using out = fn(tx, { mask: tm, causal });
              const ref = softmaxReference(x, shape, {
                mask: withMask ? { data: m, shape: mShape } : undefined,
                causal,
                log,
              });
              assertClose(
                await out.toArray(),
                expected(ref, log, dtype),
                TOL[log ? "log" : "softmax"][dtype],
                `${name} ${dtype} x${JSON.stringify(shape)} mask${
                  withMask ? JSON.stringify(mShape) : "-"
                } causal ${qOff}`,
              );
            },
          ),
          fcParams(20),
        );
      },
    });
  }
}

Deno.test({
  name: "softmax() gives zeros (logSoftmax the lowest value) for fully masked rows, never NaN",
  ...GPU_TEST,
  fn: async () => {
    for (const dtype of FLOAT_DTYPES) {
      for (const n of [1, 7, 300]) {
        // row 0: masked by the mask (-inf / -1e9 / -3.4e38), row 1: by its own logits, row 2: live
        const x = new Float32Array(3 * n).map((
          _,
          i,
        ) => (i < 2 * n && i >= n ? -3.4e38 : (i % 5) - 2));
        const m = new Float32Array(3 * n).map((
          _,
          i,
        ) => (i < n ? [-Infinity, -1e9, -3.4e38][i % 3] : 0));
        const xs = dtype === "f16" ? roundToF16(x) : x; // f16: -3.4e38 becomes -inf
        using tx = Tensor.fromArray(gpu, xs, [3, n], dtype);
        using tm = Tensor.fromArray(gpu, m, [3, n], dtype);
        using p = softmax(tx, { mask: tm });
        using lp = logSoftmax(tx, { mask: tm });
        const [gp, glp] = [await p.toArray(), await lp.toArray()];
        assert.ok(gp.every((v) => !Number.isNaN(v)) && glp.every((v) => !Number.isNaN(v)));
        assert.deepEqual([...gp.subarray(0, 2 * n)], new Array(2 * n).fill(0), `${dtype} n=${n}`);
        assert.ok(glp.subarray(0, 2 * n).every((v) => v === LOWEST[dtype]), `${dtype} n=${n}`);
        const live = gp.subarray(2 * n).reduce((a, b) => a + b, 0);
        assert.ok(Math.abs(live - 1) < 2e-3, `live row sums to ${live}`);
      }
    }
    // causal: queries before the first key (queryOffset < -t) see nothing
    using s = Tensor.fromArray(gpu, randomArray(12, 5), [3, 4]);
    using c = softmax(s, { causal: { queryOffset: -2 } });
    const g = await c.toArray();
    assert.deepEqual([...g.subarray(0, 8)], new Array(8).fill(0));
    assertClose(g.subarray(8), [1, 0, 0, 0], { atol: 1e-7 }, "query 2 sees key 0");
  },
});

Deno.test({
  name: "softmax() is max-subtracted: huge logits neither overflow nor underflow",
  ...GPU_TEST,
  fn: async () => {
    const x = [1e4, 1e4 + 1, 1e4 - 1, -1e4, 1e8, 1e8];
    using t = Tensor.fromArray(gpu, x, [2, 3]);
    using p = softmax(t);
    using lp = logSoftmax(t);
    const ref = softmaxReference(x, [2, 3]);
    assertClose(await p.toArray(), ref, TOL.softmax.f32, "softmax");
    assertClose(await lp.toArray(), softmaxReference(x, [2, 3], { log: true }), {
      atol: 1e-4,
      rtol: 1e-6,
    }, "log");
  },
});

Deno.test({
  name: "softmax() covers N = 1, long rows (N = 151936) and more than 65535 rows",
  ...GPU_TEST,
  fn: async () => {
    using one = Tensor.fromArray(gpu, [5, -3, 0], [3, 1]);
    using p1 = softmax(one);
    using l1 = logSoftmax(one);
    assert.deepEqual([...(await p1.toArray())], [1, 1, 1]);
    assert.deepEqual([...(await l1.toArray())], [0, 0, 0]);

    const V = 151936;
    const x = randomArray(V, 11, -20, 20);
    using big = Tensor.fromArray(gpu, x, [1, V]);
    using pb = softmax(big);
    assertClose(await pb.toArray(), softmaxReference(x, [1, V]), TOL.softmax.f32, "V row");

    const rows = 66000;
    const y = randomArray(rows * 2, 12);
    using many = Tensor.fromArray(gpu, y, [rows, 2]);
    using pm = softmax(many);
    assertClose(await pm.toArray(), softmaxReference(y, [rows, 2]), TOL.softmax.f32, "many rows");
  },
});

Deno.test({
  name: "softmax() causal mode defaults queryOffset to S - T (decode over a cache)",
  ...GPU_TEST,
  fn: async () => {
    const x = randomArray(2 * 3 * 5, 21);
    using t = Tensor.fromArray(gpu, x, [2, 3, 5]);
    using a = softmax(t, { causal: {} });
    using b = softmax(t, { causal: { queryOffset: 2 } });
    const [ga, gb] = [await a.toArray(), await b.toArray()];
    assert.deepEqual([...ga], [...gb]);
    assert.equal(ga[3], 0); // query 0 sees keys 0..2
    assert.ok(ga[2] > 0);
  },
});

Deno.test({
  name: "softmax() rejects bad masks, dtypes and causal shapes, naming both shapes",
  ...GPU_TEST,
  fn: () => {
    using x = Tensor.zeros(gpu, [2, 3, 4]);
    using bad = Tensor.zeros(gpu, [2, 4]);
    using i = Tensor.zeros(gpu, [4], "i32");
    using v = Tensor.zeros(gpu, [4]);
    assert.throws(() => softmax(x, { mask: bad }), {
      name: "RangeError",
      message: /softmax\(\) mask: cannot broadcast \[2, 4\] onto x \[2, 3, 4\]/,
    });
    assert.throws(() => logSoftmax(x, { mask: i }), {
      name: "TypeError",
      message: /logSoftmax\(\) mask/,
    });
    assert.throws(() => softmax(i), TypeError);
    assert.throws(() => softmax(v, { causal: {} }), { name: "RangeError", message: /causal/ });
    assert.throws(() => softmax(x, { causal: { queryOffset: 0.5 } }), RangeError);
  },
});
