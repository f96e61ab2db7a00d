import assert from "node:assert/strict";
import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import {
  compressionLoss,
  compressionLossReference,
  crossEntropy,
  crossEntropyReference,
  klDivergence,
  klDivergenceReference,
} from "../../src/train/losses.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";

/** Central differences of `f` at `x0` (f64). */
function fdGrad(f: (x: Float64Array) => number, x0: ArrayLike<number>, eps = 1e-6): Float64Array {
  const x = Float64Array.from(x0), g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    x[i] = v + eps;
    const hi = f(x);
    x[i] = v - eps;
    const lo = f(x);
    x[i] = v;
    g[i] = (hi - lo) / (2 * eps);
  }
  return g;
}

function mask(n: number, seed: number): Float32Array {
  return randomArray(n, seed, 0, 1).map((u) => (u < 0.3 ? 0 : 1));
}

function targetsOf(n: number, v: number, seed: number): Int32Array {
  return Int32Array.from(randomArray(n, seed, 0, 1), (u) => Math.min(v - 1, Math.floor(u * v)));
}

/** Tolerance of an f32 GPU gradient vs the f64 twin: relative to the largest entry. */
function gradTol(ref: ArrayLike<number>): { atol: number; rtol: number } {
  let m = 0;
  for (let i = 0; i < ref.length; i++) m = Math.max(m, Math.abs(ref[i]));
  // 1e-6: a gradient p − 1 for p near 1 is a difference of f32 values around 1, whose spacing
  // is 1.2e-7 (seen: n 1, v 3, 2.2e-7 off at p ≈ 0.99974), so its absolute error has that floor.
  return { atol: 1e-5 * m + 1e-6, rtol: 1e-4 };
}

Deno.test("klDivergenceReference() and crossEntropyReference() gradients match finite differences", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 9 }),
      fc.integer(),
      (n, v, seed) => {
        const s = randomArray(n * v, seed, -3, 3), t = randomArray(n * v, seed + 1, -3, 3);
        const w = mask(n, seed + 2), y = targetsOf(n, v, seed + 3);
        const kl = klDivergenceReference(s, t, w, n, v);
        const fdKl = fdGrad((x) => klDivergenceReference(x, t, w, n, v).loss, s);
        assertClose(kl.grad, fdKl, { atol: 1e-8, rtol: 1e-6 }, "dKL/ds");
        const ce = crossEntropyReference(s, y, w, n, v);
        const fdCe = fdGrad((x) => crossEntropyReference(x, y, w, n, v).loss, s);
        assertClose(ce.grad, fdCe, { atol: 1e-8, rtol: 1e-6 }, "dCE/dx");
      },
    ),
    { numRuns: 40 },
  );
});

Deno.test("klDivergenceReference() is KL(student ‖ teacher): 0 for equal logits, asymmetric", () => {
  const s = [1, 2, 3, 0.5, 0, -1], t = [3, 2, 1, 0, 0, 0];
  assert.ok(Math.abs(klDivergenceReference(s, s, [1, 1], 2, 3).loss) < 1e-15);
  const ps = [1, 2, 3].map(Math.exp), z = ps.reduce((a, b) => a + b);
  const byHand = ps.reduce((acc, e, j) => acc + (e / z) * ([1, 2, 3][j] - [3, 2, 1][j]), 0);
  assert.ok(Math.abs(klDivergenceReference(s, t, [1, 0], 2, 3).loss - byHand) < 1e-12);
  const ab = klDivergenceReference(s, t, [1, 1], 2, 3).loss;
  const ba = klDivergenceReference(t, s, [1, 1], 2, 3).loss;
  assert.ok(Math.abs(ab - ba) > 1e-3, "KL is not symmetric");
  // All positions masked: the count is clamped to 1, the loss and gradient are 0.
  const none = klDivergenceReference(s, t, [0, 0], 2, 3);
  assert.equal(none.loss, 0);
  assert.ok(none.grad.every((g) => g === 0));
});

for (const kind of ["kl", "ce"] as const) {
  Deno.test({
    name: `${kind === "kl" ? "klDivergence" : "crossEntropy"}() matches its CPU twin over shapes`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 0, max: 9 }),
          fc.integer({ min: 1, max: 700 }),
          fc.integer(),
          fc.boolean(),
          async (n, v, seed, chunked) => {
            const s = randomArray(n * v, seed, -6, 6), t = randomArray(n * v, seed + 1, -6, 6);
            const w = mask(n, seed + 2), y = targetsOf(n, v, seed + 3);
            // chunked: at most 2 rows per bound window.
            const opts = chunked ? { maxBindingBytes: 2 * v * 4 + 256 } : {};
            using ts = Tensor.fromArray(gpu, s, [n, v]);
            using tt = Tensor.fromArray(gpu, t, [n, v]);
            using tw = Tensor.fromArray(gpu, w, [n]);
            using ty = Tensor.fromArray(gpu, y, [n], "i32");
            const r = kind === "kl"
              ? klDivergence(ts, tt, tw, opts)
              : crossEntropy(ts, ty, tw, opts);
            using loss = r.loss, grad = r.grad;
            const ref = kind === "kl"
              ? klDivergenceReference(s, t, w, n, v)
              : crossEntropyReference(s, y, w, n, v);
            const label = `${kind} n ${n} v ${v} chunked ${chunked}`;
            assertClose(
              await loss.toArray(),
              [ref.loss],
              { atol: 1e-5, rtol: 1e-5 },
              `${label} loss`,
            );
            assertClose(await grad.toArray(), ref.grad, gradTol(ref.grad), `${label} grad`);
          },
        ),
        fcParams(20),
      );
    },
  });
}

Deno.test({
  name: "klDivergence() handles a 151936-wide vocabulary in row chunks",
  ...GPU_TEST,
  fn: async () => {
    const n = 5, v = 151936;
    const s = randomArray(n * v, 11, -8, 8), t = randomArray(n * v, 12, -8, 8);
    const w = Float32Array.from([1, 1, 0, 1, 1]);
    using ts = Tensor.fromArray(gpu, s, [n, v]);
    using tt = Tensor.fromArray(gpu, t, [n, v]);
    using tw = Tensor.fromArray(gpu, w, [n]);
    const r = klDivergence(ts, tt, tw, { maxBindingBytes: 2 * v * 4 + 256 });
    using loss = r.loss, grad = r.grad;
    const ref = klDivergenceReference(s, t, w, n, v);
    assertClose(await loss.toArray(), [ref.loss], { atol: 1e-5, rtol: 1e-5 }, "loss");
    assertClose(await grad.toArray(), ref.grad, gradTol(ref.grad), "grad");
  },
});

Deno.test({
  name: "klDivergence() and crossEntropy() reject wrong dtypes and shapes, naming the argument",
  ...GPU_TEST,
  fn: () => {
    using s = Tensor.zeros(gpu, [2, 3]);
    using t = Tensor.zeros(gpu, [2, 4]);
    using w = Tensor.zeros(gpu, [2]);
    using w3 = Tensor.zeros(gpu, [3]);
    using y = Tensor.zeros(gpu, [2], "i32");
    using yf = Tensor.zeros(gpu, [2]);
    assert.throws(() => klDivergence(s, t, w), /teacher \[2, 4\] must match student \[2, 3\]/);
    assert.throws(() => klDivergence(s, s, w3), /weights \[3\] must be \[2\]/);
    assert.throws(() => klDivergence(s, s, y), /weights must be f32/);
    assert.throws(() => crossEntropy(s, yf, w), /targets must be i32/);
    if (gpu.hasF16) {
      using h = Tensor.zeros(gpu, [2, 3], "f16");
      assert.throws(() => crossEntropy(h, y, w), TypeError);
    }
  },
});

Deno.test("compressionLossReference() gradient matches finite differences away from the kink", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 7 }),
      fc.integer(),
      (layers, b, v, seed) => {
        const st = Array.from({ length: layers }, (_, l) => randomArray(b * v, seed + l, 0, 1));
        const alpha = 0.5;
        const ref = compressionLossReference(st, b, alpha);
        if (ref.fracClosed.some((f) => Math.abs(f - alpha) < 1e-4)) return; // at the kink
        st.forEach((x, l) => {
          const fd = fdGrad(
            (y) => compressionLossReference(st.map((z, k) => k === l ? y : z), b, alpha).loss,
            x,
          );
          assertClose(ref.grads[l], fd, { atol: 1e-9, rtol: 1e-6 }, `dLcr/dST[${l}]`);
        });
      },
    ),
    { numRuns: 60 },
  );
});

Deno.test({
  name: "compressionLoss() matches its CPU twin, incl. the hinge at 0 (step 0: α* = 0)",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 300 }),
        fc.constantFrom(0, 0.25, 0.5, 0.875),
        fc.integer(),
        async (layers, b, h, t, alpha, seed) => {
          // Hard decisions (0/1), as in the forward: the closed fraction is exact in f32.
          const st = Array.from(
            { length: layers },
            (_, l) => randomArray(b * h * t, seed + l, 0, 1).map((u) => (u < alpha * 1.2 ? 1 : 0)),
          );
          if (alpha === 0) st.forEach((x) => x.fill(0));
          const ts = st.map((x) => Tensor.fromArray(gpu, x, [b, h, t]));
          const r = compressionLoss(ts, alpha);
          const ref = compressionLossReference(st, b, alpha);
          const [loss, frac, ...grads] = await Promise.all(
            [r.loss, r.fracClosed, ...r.grads].map((x) => x.toArray()),
          );
          const label = `L ${layers} B ${b} Hkv ${h} T ${t} α* ${alpha}`;
          assertClose(loss, [ref.loss], { atol: 1e-6, rtol: 1e-5 }, `${label} loss`);
          assertClose(frac, ref.fracClosed, { atol: 1e-6, rtol: 1e-5 }, `${label} frac`);
          grads.forEach((g, l) =>
            assertClose(g, ref.grads[l], { atol: 1e-12, rtol: 1e-5 }, `${label} grad ${l}`)
          );
          if (alpha === 0) {
            assert.ok(grads[0].every((g) => g < 0), "the hinge at 0 passes the gradient");
          }
          for (const x of [...ts, r.loss, r.fracClosed, ...r.grads]) x.dispose();
        },
      ),
      fcParams(20),
    );
  },
});

Deno.test({
  name: "compressionLoss() rejects no layers and layers of different shapes",
  ...GPU_TEST,
  fn: () => {
    using a = Tensor.zeros(gpu, [1, 2, 3]);
    using b = Tensor.zeros(gpu, [1, 2, 4]);
    assert.throws(() => compressionLoss([], 0.5), /stValues is empty/);
    assert.throws(() => compressionLoss([a, b], 0.5), /stValues\[1\] \[1, 2, 4\] differs/);
  },
});
