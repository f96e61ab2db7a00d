import assert from "node:assert/strict";
import fc from "fast-check";
import { add, mul, scale } from "../../src/ops/elementwise.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { Tape } from "../../src/train/tape.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";

// Tape-aware wrappers of three ops whose backward is trivial: the pattern every op follows.
function tAdd(tape: Tape, a: Tensor, b: Tensor, saves: Tensor[] = []): Tensor {
  const y = add(a, b);
  tape.record("add", () => {
    const g = tape.grad(y);
    if (!g) return;
    if (tape.needsGrad(a)) tape.accumulate(a, scale(g, 1));
    if (tape.needsGrad(b)) tape.accumulate(b, scale(g, 1));
  }, { outputs: [y], saves });
  return y;
}

function tMul(tape: Tape, a: Tensor, b: Tensor, saves: Tensor[] = []): Tensor {
  const y = mul(a, b);
  tape.record("mul", () => {
    const g = tape.grad(y);
    if (!g) return;
    if (tape.needsGrad(a)) tape.accumulate(a, mul(g, b));
    if (tape.needsGrad(b)) tape.accumulate(b, mul(g, a));
  }, { outputs: [y], saves });
  return y;
}

function tScale(tape: Tape, a: Tensor, alpha: number, saves: Tensor[] = []): Tensor {
  const y = scale(a, alpha);
  tape.record("scale", () => {
    const g = tape.grad(y);
    if (g && tape.needsGrad(a)) tape.accumulate(a, scale(g, alpha));
  }, { outputs: [y], saves });
  return y;
}

// y = 0.5·(a + b)·a + b·b; every intermediate is handed to the tape as the save of its last
// consumer, so the tape frees it as it unwinds.
function forward(tape: Tape, a: Tensor, b: Tensor): Tensor {
  const s = tAdd(tape, a, b);
  const p = tMul(tape, s, a, [s]);
  const q = tScale(tape, p, 0.5, [p]);
  const r = tMul(tape, b, b);
  return tAdd(tape, q, r, [q, r]);
}

// The same function on the CPU in f64, weighted by c: L = Σ c·y.
function lossRef(a: ArrayLike<number>, b: ArrayLike<number>, c: ArrayLike<number>): number {
  let l = 0;
  for (let i = 0; i < a.length; i++) l += c[i] * (0.5 * (a[i] + b[i]) * a[i] + b[i] * b[i]);
  return l;
}

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

async function grads(
  n: number,
  seed: number,
  checkpointed: boolean,
): Promise<
  { ga: Float32Array; gb: Float32Array; a: Float32Array; b: Float32Array; c: Float32Array }
> {
  const a = randomArray(n, seed), b = randomArray(n, seed + 1), c = randomArray(n, seed + 2);
  const tape = new Tape();
  const ta = tape.requiresGrad(Tensor.fromArray(gpu, a, [n]));
  const tb = tape.requiresGrad(Tensor.fromArray(gpu, b, [n]));
  const y = checkpointed
    ? tape.checkpoint("segment", [ta, tb], (t, [x, z]) => [forward(t, x, z)])[0]
    : forward(tape, ta, tb);
  tape.backward(y, Tensor.fromArray(gpu, c, [n]));
  const [ga, gb] = await Promise.all([tape.grad(ta)!.toArray(), tape.grad(tb)!.toArray()]);
  tape.dispose();
  for (const t of [ta, tb, y]) t.dispose();
  return { ga: ga as Float32Array, gb: gb as Float32Array, a, b, c };
}

Deno.test({
  name: "Tape gradients of add/mul/scale match central finite differences (plain and checkpointed)",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 300 }),
        fc.integer(),
        fc.boolean(),
        async (n, seed, ckpt) => {
          const { ga, gb, a, b, c } = await grads(n, seed, ckpt);
          const fa = fdGrad((x) => lossRef(x, b, c), a);
          const fb = fdGrad((x) => lossRef(a, x, c), b);
          const tol = { atol: 1e-5, rtol: 1e-4 };
          assertClose(ga, fa, tol, `dL/da (n ${n}, checkpoint ${ckpt})`);
          assertClose(gb, fb, tol, `dL/db (n ${n}, checkpoint ${ckpt})`);
        },
      ),
      fcParams(12),
    );
  },
});

Deno.test({
  name: "Tape gradients are deterministic and checkpointing gives the same bits",
  ...GPU_TEST,
  fn: async () => {
    const x = await grads(1000, 7, false), y = await grads(1000, 7, false);
    const z = await grads(1000, 7, true);
    assert.deepEqual(y.ga, x.ga);
    assert.deepEqual(y.gb, x.gb);
    assert.deepEqual(z.ga, x.ga);
    assert.deepEqual(z.gb, x.gb);
  },
});

Deno.test({
  name: "Tape frees activations as it unwinds and leaks no buffer after backward + dispose",
  ...GPU_TEST,
  fn: async () => {
    await gpu.sync();
    const n = 4096, bytes = n * 4;
    const live0 = gpu.memory().liveBytes;
    for (const ckpt of [false, true]) {
      const tape = new Tape();
      const a = tape.requiresGrad(Tensor.fromArray(gpu, randomArray(n, 1), [n]));
      const b = tape.requiresGrad(Tensor.fromArray(gpu, randomArray(n, 2), [n]));
      const y = ckpt
        ? tape.checkpoint("segment", [a, b], (t, [x, z]) => [forward(t, x, z)])[0]
        : forward(tape, a, b);
      // a, b, y, plus the saved s, p, q, r unless the segment is checkpointed.
      assert.equal(
        gpu.memory().liveBytes - live0,
        (ckpt ? 3 : 7) * bytes,
        `after forward (${ckpt})`,
      );
      tape.backward(y);
      // Left: a, b, y and the two leaf gradients; every activation and inner gradient is gone.
      assert.equal(gpu.memory().liveBytes - live0, 5 * bytes, `after backward (${ckpt})`);
      assert.equal(tape.length, 0);
      tape.dispose();
      for (const t of [a, b, y]) t.dispose();
      assert.equal(gpu.memory().liveBytes, live0, `after dispose (${ckpt})`);
    }
    await gpu.sync();
  },
});

Deno.test({
  name: "Tape without recording (enabled: false) saves nothing and needs no gradient",
  ...GPU_TEST,
  fn: () => {
    const live0 = gpu.memory().liveBytes;
    const tape = new Tape({ enabled: false });
    using a = tape.requiresGrad(Tensor.fromArray(gpu, [1, 2], [2]));
    using b = Tensor.fromArray(gpu, [3, 4], [2]);
    assert.equal(tape.needsGrad(a), false);
    using _y = forward(tape, a, b);
    assert.equal(tape.length, 0);
    assert.equal(gpu.memory().liveBytes - live0, 3 * 16);
  },
});

Deno.test({
  name: "Tape.accumulate() rejects a gradient of another shape and names both shapes",
  ...GPU_TEST,
  fn: () => {
    const tape = new Tape();
    using a = Tensor.zeros(gpu, [2, 3]);
    assert.throws(() => tape.accumulate(a, Tensor.zeros(gpu, [3, 2])), /\[3, 2\].*\[2, 3\]/);
    assert.throws(
      () => {
        tape.record("bad op", () => {
          throw new Error("boom");
        });
        tape.backward();
      },
      /backward of "bad op" failed: boom/,
    );
    tape.dispose();
  },
});
