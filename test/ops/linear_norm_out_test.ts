/**
 * `linearNormOut` (src/ops/linear_norm_out.ts): the projection bit for bit as `linear`'s
 * `gemv16`, its output's RMSNorm against the f64 reference and against the `rmsNorm` op on the
 * stored output, back-to-back dispatches sharing the arrival counter, and the input checks.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { linearNormOut, linearNormOutReference } from "../../src/ops/linear_norm_out.ts";
import { rmsNormRowsReference } from "../../src/ops/gemv.ts";
import { linear } from "../../src/ops/matmul.ts";
import { rmsNorm } from "../../src/ops/rmsnorm.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, randomArray } from "../_util.ts";

type Dt = "f32" | "f16";
const EPS = 1e-6;

function data(n: number, seed: number, dtype: Dt): Float32Array {
  const d = randomArray(n, seed);
  return dtype === "f16" ? roundToF16(d) : d;
}

/** rmsNorm of the stored y as the rmsnorm kernel stores it: `T(gain·(y·r))`, r in f32. */
function normedStored(y: Float32Array, gain: Float32Array, dtype: Dt): Float32Array {
  const N = gain.length, out = new Float32Array(y.length);
  for (let b = 0; b < y.length; b += N) {
    let ss = 0;
    for (let n = 0; n < N; n++) ss += y[b + n] * y[b + n];
    const r = Math.fround(1 / Math.sqrt(Math.fround(ss / N) + EPS));
    for (let n = 0; n < N; n++) out[b + n] = Math.fround(gain[n] * Math.fround(y[b + n] * r));
  }
  return dtype === "f16" ? roundToF16(out) : out;
}

Deno.test({
  name: "linearNormOut fused: y bit for bit as linear's gemv16, normed = rmsNorm(stored y) " +
    "(f64 and the rmsNorm op), M 1..16, K words 1..40, N 1..300 (even in f16), with and without " +
    "bias/residual",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<Dt>(...FLOAT_DTYPES),
        fc.constantFrom(1, 1, 2, 5, 16),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 300 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 1 << 30 }),
        async (dtype, M, words, n, extras, seed) => {
          const K = words * (dtype === "f16" ? 8 : 4);
          const N = dtype === "f16" ? 2 * Math.ceil(n / 2) : n; // f16 fused: N even
          const x = data(M * K, seed, dtype), w = data(N * K, seed + 1, dtype);
          const g = data(N, seed + 2, dtype), b = data(N, seed + 3, dtype);
          const res = data(M * N, seed + 4, dtype);
          using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
          using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
          using tg = Tensor.fromArray(gpu, g, [N], dtype);
          using tb = Tensor.fromArray(gpu, b, [N], dtype);
          using tr = Tensor.fromArray(gpu, res, [M, N], dtype);
          const lin = { bias: extras ? tb : undefined, residual: extras ? tr : undefined };
          const r = linearNormOut(tx, tw, {
            ...lin,
            norm: { weight: tg, eps: EPS },
            variant: "fused",
          });
          using y = r.y, normed = r.normed;
          const label = `${dtype} [${M}, ${K}] N ${N} extras ${extras}`;
          using plain = linear(tx, tw, { ...lin, variant: "gemv16" });
          const gotY = await y.toArray();
          assert.deepEqual(gotY, await plain.toArray(), `y vs linear gemv16 ${label}`);
          const ref = linearNormOutReference(x, w, M, K, N, {
            norm: { weight: g, eps: EPS },
            bias: extras ? b : undefined,
            residual: extras ? res : undefined,
          });
          const s = Math.sqrt(K);
          const tolY = dtype === "f32"
            ? { atol: 4e-6 * s, rtol: 1e-5 }
            : { atol: 2e-3 * s, rtol: 4e-3 };
          assertClose(gotY, ref.y, tolY, `y vs f64 ${label}`);
          const gotN = await normed.toArray();
          // from the stored y: only the order of the sum of squares differs
          const tn = dtype === "f32" ? { atol: 1e-6, rtol: 1e-5 } : { atol: 1e-3, rtol: 2e-3 };
          assertClose(gotN, normedStored(gotY, g, dtype), tn, `normed vs stored y ${label}`);
          using op = rmsNorm(y, tg, EPS);
          assertClose(gotN, await op.toArray(), tn, `normed vs rmsNorm op ${label}`);
          // and the f64 norm of the f64 y, within y's own rounding
          const loose = dtype === "f32" ? { atol: 1e-4, rtol: 1e-4 } : { atol: 2e-2, rtol: 2e-2 };
          assertClose(gotN, rmsNormRowsReference(ref.y, g, EPS), loose, `normed vs f64 ${label}`);
        },
      ),
      fcParams(20),
    );
  },
});

Deno.test({
  name: "linearNormOut fused: five dispatches back to back share the arrival counter, each " +
    "normed from its own y (the last workgroup resets the count); unfused gives the same values; " +
    "N of 512, 1024 and 1026 (128-257 workgroups)",
  ...GPU_TEST,
  fn: async () => {
    const cases = FLOAT_DTYPES.flatMap((d) => [512, 1024, 1026].map((n) => [d, n] as const));
    for (const [dtype, N] of cases) {
      const M = 1, K = 64; // 128-257 workgroups a dispatch
      const w = data(N * K, 1, dtype), g = data(N, 2, dtype);
      using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
      using tg = Tensor.fromArray(gpu, g, [N], dtype);
      const xs = Array.from({ length: 5 }, (_, i) => data(M * K, 10 + i, dtype));
      const outs = xs.map((x) => {
        using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
        return linearNormOut(tx, tw, { norm: { weight: tg, eps: EPS }, variant: "fused" });
      });
      for (let i = 0; i < outs.length; i++) {
        using y = outs[i].y, normed = outs[i].normed;
        const gotY = await y.toArray();
        const t = dtype === "f32" ? { atol: 1e-6, rtol: 1e-5 } : { atol: 1e-3, rtol: 2e-3 };
        const label = `${dtype} N ${N} call ${i}`;
        assertClose(await normed.toArray(), normedStored(gotY, g, dtype), t, label);
        using tx = Tensor.fromArray(gpu, xs[i], [M, K], dtype);
        const u = linearNormOut(tx, tw, { norm: { weight: tg, eps: EPS }, variant: "unfused" });
        using uy = u.y, un = u.normed;
        // y: the two variants' dot products over K may round apart (the property test's bound)
        const ty = dtype === "f32"
          ? { atol: 4e-6 * Math.sqrt(K), rtol: 1e-5 }
          : { atol: 2e-3 * Math.sqrt(K), rtol: 4e-3 };
        assertClose(await uy.toArray(), gotY, ty, `${label}: unfused y`);
        assertClose(await un.toArray(), await normed.toArray(), t, `${label}: unfused normed`);
      }
    }
  },
});

Deno.test({
  name: "linearNormOut checks shapes, the norm and a forced fused that does not apply",
  ...GPU_TEST,
  fn: () => {
    using x = Tensor.fromArray(gpu, new Float32Array(8), [1, 8]);
    using w = Tensor.fromArray(gpu, new Float32Array(16), [2, 8]);
    using g2 = Tensor.fromArray(gpu, new Float32Array(2), [2]);
    using g3 = Tensor.fromArray(gpu, new Float32Array(3), [3]);
    using w7 = Tensor.fromArray(gpu, new Float32Array(14), [2, 7]);
    using r3 = Tensor.fromArray(gpu, new Float32Array(3), [1, 3]);
    using x17 = Tensor.fromArray(gpu, new Float32Array(17 * 8), [17, 8]);
    const norm = { weight: g2, eps: EPS };
    assert.throws(() => linearNormOut(x, w7, { norm }), /expected x:\[\.\.\., K\] and w:\[N, K\]/);
    assert.throws(
      () => linearNormOut(x, w, { norm: { weight: g3, eps: EPS } }),
      /norm.weight must be \[2\]/,
    );
    assert.throws(() => linearNormOut(x, w, { norm: { weight: g2, eps: -1 } }), /norm.eps/);
    assert.throws(() => linearNormOut(x, w, { norm, residual: r3 }), /residual must be \[1, 2\]/);
    assert.throws(
      () => linearNormOut(x17, w, { norm, variant: "fused" }),
      /variant fused needs 1 <= M <= 16/,
    );
    if (gpu.hasF16) {
      using h = Tensor.fromArray(gpu, new Float32Array(8), [1, 8], "f16");
      using w3 = Tensor.fromArray(gpu, new Float32Array(24), [3, 8], "f16");
      using h3 = Tensor.fromArray(gpu, new Float32Array(3), [3], "f16");
      assert.throws(
        () => linearNormOut(h, w3, { norm: { weight: h3, eps: EPS }, variant: "fused" }),
        /an even N/,
      );
      using g16 = Tensor.fromArray(gpu, new Float32Array(2), [2], "f16");
      assert.throws(
        () => linearNormOut(x, w, { norm: { weight: g16, eps: EPS }, variant: "fused" }),
        /a f32 gain, got .* gain f16/,
      );
      // auto with a gain of another dtype: the unfused chain
      const r = linearNormOut(x, w, { norm: { weight: g16, eps: EPS } });
      r.y.dispose();
      r.normed.dispose();
    }
  },
});
