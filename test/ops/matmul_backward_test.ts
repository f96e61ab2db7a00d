import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { linearReference } from "../../src/ops/matmul.ts";
import {
  linearBackward,
  linearBackwardReference,
  type LinearBackwardVariant,
} from "../../src/ops/matmul_backward.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray, type Tolerance } from "../_util.ts";
import { assertGradClose, finiteDiffGrad } from "./_finite_diff.ts";

/**
 * GPU (f32) vs the f64 twin, inputs in [-1, 1]: atol 1e-5·√n, rtol 1e-4, where
 * n is the output's reduction length (M for dx; N = prod(lead)·rows, up to
 * 1280, for dw and db), as `matmul_test.ts` scales it. f32 rounding of a sum of
 * n terms grows like √n (a fixed atol tuned for 80 terms failed dw at N = 1280
 * by 3e-5 in CI); a wrong or missing term moves an output by ~0.1 or more.
 */
function tolFor(n: number): Tolerance {
  return { atol: 1e-5 * Math.sqrt(Math.max(1, n)), rtol: 1e-4 };
}
const VARIANTS: LinearBackwardVariant[] = ["naive", "tiled"];

function add(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  return Float64Array.from(a, (v, i) => v + b[i]);
}

Deno.test({
  name: "linearBackward() matches the f64 twin over random shapes, both kernels, with accumulation",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 4 }), { maxLength: 2 }),
        fc.integer({ min: 1, max: 80 }),
        fc.integer({ min: 1, max: 70 }),
        fc.integer({ min: 1, max: 70 }),
        fc.constantFrom(...VARIANTS),
        fc.boolean(),
        fc.boolean(),
        fc.integer(),
        async (lead, rows, M, K, variant, bias, accumulate, seed) => {
          // rows is the last leading dim, so N = prod(lead) * rows is rarely a tile multiple.
          const xShape = [...lead, rows, K];
          const N = lead.reduce((a, b) => a * b, 1) * rows;
          const x = randomArray(N * K, seed), w = randomArray(M * K, seed + 1);
          const dy = randomArray(N * M, seed + 2);
          using tx = Tensor.fromArray(gpu, x, xShape);
          using tw = Tensor.fromArray(gpu, w, [M, K]);
          using tdy = Tensor.fromArray(gpu, dy, [...lead, rows, M]);
          const prev = { dx: randomArray(N * K, seed + 3), dw: randomArray(M * K, seed + 4) };
          const pdb = randomArray(M, seed + 5);
          using adx = Tensor.fromArray(gpu, prev.dx, xShape);
          using adw = Tensor.fromArray(gpu, prev.dw, [M, K]);
          using adb = Tensor.fromArray(gpu, pdb, [M]);
          const g = linearBackward(tx, tw, tdy, {
            bias,
            variant,
            accumulate: accumulate ? { dx: adx, dw: adw, db: bias ? adb : undefined } : undefined,
          });
          assert.deepEqual(g.dx.shape, xShape);
          assert.deepEqual(g.dw.shape, [M, K]);
          assert.equal(g.db !== undefined, bias);
          if (accumulate) assert.ok(g.dx === adx && g.dw === adw && (!bias || g.db === adb));
          const ref = linearBackwardReference(x, w, dy, N, M, K);
          const label = `${variant} N=${N} M=${M} K=${K}`;
          assertClose(
            await g.dx.toArray(),
            accumulate ? add(ref.dx, prev.dx) : ref.dx,
            tolFor(M),
            `dx ${label}`,
          );
          assertClose(
            await g.dw.toArray(),
            accumulate ? add(ref.dw, prev.dw) : ref.dw,
            tolFor(N),
            `dw ${label}`,
          );
          if (bias) {
            assertClose(
              await g.db!.toArray(),
              accumulate ? add(ref.db, pdb) : ref.db,
              tolFor(N),
              `db ${label}`,
            );
          }
          if (!accumulate) [g.dx, g.dw, g.db].forEach((t) => t?.dispose());
        },
      ),
      fcParams(30),
    );
  },
});

Deno.test({
  name: "linearBackward() tiled agrees with the readable naive kernel on tile-edge sizes",
  ...GPU_TEST,
  fn: async () => {
    for (const [N, M, K] of [[64, 64, 64], [65, 63, 129], [1, 130, 7], [200, 3, 66]]) {
      const x = randomArray(N * K, N), w = randomArray(M * K, M), dy = randomArray(N * M, K);
      using tx = Tensor.fromArray(gpu, x, [N, K]);
      using tw = Tensor.fromArray(gpu, w, [M, K]);
      using tdy = Tensor.fromArray(gpu, dy, [N, M]);
      const a = linearBackward(tx, tw, tdy, { variant: "naive" });
      const b = linearBackward(tx, tw, tdy, { variant: "tiled" });
      assertClose(await b.dx.toArray(), await a.dx.toArray(), tolFor(M), `dx ${N}x${M}x${K}`);
      assertClose(await b.dw.toArray(), await a.dw.toArray(), tolFor(N), `dw ${N}x${M}x${K}`);
      [a.dx, a.dw, b.dx, b.dw].forEach((t) => t.dispose());
    }
  },
});

Deno.test({
  name: "linearBackward() splits x and dy into row blocks past the binding limit, same result",
  ...GPU_TEST,
  fn: async () => {
    const [N, M, K] = [300, 24, 40];
    const x = randomArray(N * K, 1), w = randomArray(M * K, 2), dy = randomArray(N * M, 3);
    using tx = Tensor.fromArray(gpu, x, [N, K]);
    using tw = Tensor.fromArray(gpu, w, [M, K]);
    using tdy = Tensor.fromArray(gpu, dy, [N, M]);
    const ref = linearBackwardReference(x, w, dy, N, M, K);
    for (const variant of VARIANTS) {
      // 8 KiB windows: 49 rows of x per launch, 7 launches, dw and db accumulated in order.
      const g = linearBackward(tx, tw, tdy, { bias: true, variant, maxBindingBytes: 8192 });
      assertClose(await g.dx.toArray(), ref.dx, tolFor(M), `dx ${variant}`);
      assertClose(await g.dw.toArray(), ref.dw, tolFor(N), `dw ${variant}`);
      assertClose(await g.db!.toArray(), ref.db, tolFor(N), `db ${variant}`);
      [g.dx, g.dw, g.db!].forEach((t) => t.dispose());
    }
    assert.throws(
      () => linearBackward(tx, tw, tdy, { maxBindingBytes: 1024 }),
      (e) =>
        e instanceof RangeError && /w: \[24, 40\].*binding limit.*dyColumnOffset/.test(e.message),
    );
  },
});

Deno.test({
  name:
    "linearBackward() over LM-head row chunks (dyColumnOffset, accumulated dx) equals one launch",
  ...GPU_TEST,
  fn: async () => {
    const [N, V, H] = [5, 90, 33];
    const x = randomArray(N * H, 4), w = randomArray(V * H, 5), dy = randomArray(N * V, 6);
    using tx = Tensor.fromArray(gpu, x, [N, H]);
    using tdy = Tensor.fromArray(gpu, dy, [N, V]);
    using w0 = Tensor.fromArray(gpu, w.subarray(0, 50 * H), [50, H]);
    using w1 = Tensor.fromArray(gpu, w.subarray(50 * H), [40, H]);
    using dx = Tensor.zeros(gpu, [N, H]);
    const g0 = linearBackward(tx, w0, tdy, { dyColumnOffset: 0, bias: true, accumulate: { dx } });
    const g1 = linearBackward(tx, w1, tdy, { dyColumnOffset: 50, bias: true, accumulate: { dx } });
    const ref = linearBackwardReference(x, w, dy, N, V, H);
    assertClose(await dx.toArray(), ref.dx, tolFor(V), "dx");
    const dw = [...await g0.dw.toArray(), ...await g1.dw.toArray()];
    assertClose(dw, ref.dw, tolFor(N), "dw");
    assertClose([...await g0.db!.toArray(), ...await g1.db!.toArray()], ref.db, tolFor(N), "db");
    [g0.dw, g1.dw, g0.db!, g1.db!].forEach((t) => t.dispose());
  },
});

Deno.test("linearBackwardReference() is the gradient of linearReference() (central differences)", () => {
  // linearReference rounds y to f32: atol = the rounding bound of the difference quotient + 1e-7.
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 1, max: 5 }),
      fc.integer(),
      (N, M, K, seed) => {
        const x = randomArray(N * K, seed), w = randomArray(M * K, seed + 1);
        const b = randomArray(M, seed + 2), dy = randomArray(N * M, seed + 3);
        const ref = linearBackwardReference(x, w, dy, N, M, K);
        const fx = finiteDiffGrad((v) => linearReference(v, [N, K], w, [M, K], b), x, dy);
        const fw = finiteDiffGrad((v) => linearReference(x, [N, K], v, [M, K], b), w, dy);
        const fb = finiteDiffGrad((v) => linearReference(x, [N, K], w, [M, K], v), b, dy);
        assertGradClose(ref.dx, fx.grad, fx.roundBound + 1e-7, "dx");
        assertGradClose(ref.dw, fw.grad, fw.roundBound + 1e-7, "dw");
        assertGradClose(ref.db, fb.grad, fb.roundBound + 1e-7, "db");
      },
    ),
    { numRuns: 30 },
  );
});

Deno.test({
  name: "linearBackward() handles empty N (zero dw/db) and rejects bad shapes and dtypes",
  ...GPU_TEST,
  fn: async () => {
    using x0 = Tensor.zeros(gpu, [0, 3]);
    using w = Tensor.fromArray(gpu, [1, 2, 3, 4, 5, 6], [2, 3]);
    using dy0 = Tensor.zeros(gpu, [0, 2]);
    const g = linearBackward(x0, w, dy0, { bias: true });
    assert.deepEqual([...await g.dw.toArray()], [0, 0, 0, 0, 0, 0]);
    assert.deepEqual([...await g.db!.toArray()], [0, 0]);
    [g.dx, g.dw, g.db!].forEach((t) => t.dispose());

    using x = Tensor.zeros(gpu, [4, 3]);
    using dy = Tensor.zeros(gpu, [4, 2]);
    using bad = Tensor.zeros(gpu, [4, 5]);
    using wt = Tensor.zeros(gpu, [3, 2]);
    using ids = Tensor.zeros(gpu, [4, 3], "i32");
    assert.throws(
      () => linearBackward(x, w, bad),
      (e) =>
        e instanceof RangeError &&
        /linearBackward\(\) dy: expected shape \[4, 2\].*got \[4, 5\]/.test(e.message),
    );
    assert.throws(
      () => linearBackward(x, wt, dy),
      (e) =>
        e instanceof RangeError &&
        /linearBackward\(\) w: expected shape \[M, 3\].*got \[3, 2\]/.test(e.message),
    );
    assert.throws(
      () => linearBackward(x, w, bad, { dyColumnOffset: 4 }),
      (e) =>
        e instanceof RangeError && /dyColumnOffset: columns 4\.\.5.*dy \[4, 5\]/.test(e.message),
    );
    assert.throws(
      () => linearBackward(x, w, dy, { accumulate: { dw: wt } }),
      (e) => e instanceof RangeError && /accumulate\.dw: expected shape \[2, 3\]/.test(e.message),
    );
    assert.throws(
      () => linearBackward(ids, w, dy),
      (e) =>
        e instanceof TypeError &&
        /linearBackward\(\) x: expected an f32 tensor, got i32/.test(e.message),
    );
    if (gpu.hasF16) {
      using h = Tensor.zeros(gpu, [2, 3], "f16");
      assert.throws(
        () => linearBackward(x, h, dy),
        (e) => e instanceof TypeError && /w:/.test(e.message),
      );
    }
  },
});
