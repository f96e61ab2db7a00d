import fc from "fast-check";
import assert from "node:assert/strict";
import { readTensors, Tensor } from "../../src/tensor/tensor.ts";
import { attention, attentionReference } from "../../src/ops/attention.ts";
import {
  attentionBackward,
  type AttentionBackwardKernel,
  attentionBackwardReference,
  type AttentionBackwardReferenceOptions,
  type AttentionBackwardShape,
} from "../../src/ops/attention_backward.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray, type Tolerance } from "../_util.ts";

const KERNELS: AttentionBackwardKernel[] = ["naive", "flash"];
// GPU f32 vs the f64 twin: gradients are sums of O(T·G) terms of size O(1); f32 rounding of
// scores, P and the sums stays well below this (|q|, |k|, |v|, |dOut| <= 1).
const GRAD_TOL: Tolerance = { atol: 2e-5, rtol: 1e-4 };
// The twin vs central differences of the f64 forward (eps 1e-6).
const FD_TOL: Tolerance = { atol: 2e-8, rtol: 1e-5 };

interface Case {
  shape: AttentionBackwardShape;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  dOut: Float32Array;
  opts: AttentionBackwardReferenceOptions;
}

function makeCase(
  shape: AttentionBackwardShape,
  seed: number,
  opts: AttentionBackwardReferenceOptions,
  withFar: boolean,
): Case {
  const { B, Hq, Hkv, T, S, D } = shape;
  const farBias = withFar ? randomArray(B * Hkv * S, seed + 5, -4, 0) : undefined;
  return {
    shape,
    q: randomArray(B * Hq * T * D, seed + 1),
    k: randomArray(B * Hkv * S * D, seed + 2),
    v: randomArray(B * Hkv * S * D, seed + 3),
    dOut: randomArray(B * Hq * T * D, seed + 4),
    opts: { ...opts, farBias },
  };
}

/** Runs the forward and both backward kernels on the GPU; checks each against the twin. */
async function checkCase(c: Case, label: string): Promise<void> {
  const { B, Hq, Hkv, T, S, D } = c.shape;
  const ref = attentionBackwardReference(c.q, c.k, c.v, c.dOut, c.shape, c.opts);
  using q = Tensor.fromArray(gpu, c.q, [B, Hq, T, D]);
  using k = Tensor.fromArray(gpu, c.k, [B, Hkv, S, D]);
  using v = Tensor.fromArray(gpu, c.v, [B, Hkv, S, D]);
  using dOut = Tensor.fromArray(gpu, c.dOut, [B, Hq, T, D]);
  using farBias = c.opts.farBias ? Tensor.fromArray(gpu, c.opts.farBias, [B, Hkv, S]) : null;
  const o = {
    scale: c.opts.scale,
    queryOffset: c.opts.queryOffset,
    window: c.opts.window,
    farBias: farBias ?? undefined,
  };
  const { out, lse } = attention(q, k, v, { ...o, returnLse: true });
  const grads = KERNELS.map((kernel) =>
    attentionBackward(q, k, v, out, lse, dOut, { ...o, kernel })
  );
  const tensors = grads.flatMap((g) => [g.dq, g.dk, g.dv, ...(g.dFarBias ? [g.dFarBias] : [])]);
  const arrays = await readTensors(tensors);
  [out, lse, ...tensors].forEach((t) => t.dispose());
  const desc =
    `${label} ${JSON.stringify(c.shape)} W=${c.opts.window} qoff=${c.opts.queryOffset} ` +
    `far=${!!farBias}`;
  const per = farBias ? 4 : 3;
  KERNELS.forEach((kernel, i) => {
    assert.equal(grads[i].dFarBias !== undefined, !!farBias, `${kernel} dFarBias presence`);
    const a = arrays.slice(i * per, (i + 1) * per);
    assertClose(a[0], ref.dq, GRAD_TOL, `${kernel} dq, ${desc}`);
    assertClose(a[1], ref.dk, GRAD_TOL, `${kernel} dk, ${desc}`);
    assertClose(a[2], ref.dv, GRAD_TOL, `${kernel} dv, ${desc}`);
    if (farBias) assertClose(a[3], ref.dFarBias, GRAD_TOL, `${kernel} dFarBias, ${desc}`);
  });
  // The readable kernel and the fast one agree with each other.
  for (let j = 0; j < per; j++) {
    assertClose(arrays[per + j], arrays[j], GRAD_TOL, `flash vs naive tensor ${j}, ${desc}`);
  }
}

const shapeArb = fc.record({
  B: fc.integer({ min: 1, max: 2 }),
  Hkv: fc.integer({ min: 1, max: 2 }),
  G: fc.integer({ min: 1, max: 4 }),
  T: fc.integer({ min: 1, max: 19 }),
  extra: fc.integer({ min: 0, max: 5 }), // S = T + extra (a cached prefix)
  D: fc.constantFrom(1, 3, 8, 13, 32, 64, 100, 256),
  window: fc.integer({ min: 0, max: 24 }),
  far: fc.boolean(),
  qoffShift: fc.constantFrom(0, 0, 0, -3, 2),
  seed: fc.integer({ min: 0, max: 1 << 20 }),
});

Deno.test({
  name: "attentionBackward() matches its f64 twin for both kernels (GQA, windows, far bias)",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(shapeArb, async (r) => {
        const shape = { B: r.B, Hq: r.Hkv * r.G, Hkv: r.Hkv, T: r.T, S: r.T + r.extra, D: r.D };
        const c = makeCase(shape, r.seed, {
          window: r.window,
          queryOffset: r.extra + r.qoffShift,
        }, r.far);
        await checkCase(c, "random");
      }),
      fcParams(14),
    );
  },
});

Deno.test({
  name: "attentionBackward() boundary cases: W=0, W>=T, T=1, no far bias, large T",
  ...GPU_TEST,
  fn: async () => {
    const s = (T: number, G: number, D: number, S = T) => ({ B: 1, Hq: 2 * G, Hkv: 2, T, S, D });
    await checkCase(makeCase(s(9, 3, 16), 1, { window: 0 }, true), "W=0");
    await checkCase(makeCase(s(9, 2, 16), 2, { window: 9 }, true), "W>=T");
    await checkCase(makeCase(s(1, 4, 8), 3, { window: 0 }, true), "T=1");
    await checkCase(makeCase(s(7, 1, 5), 4, {}, false), "plain causal");
    await checkCase(makeCase(s(70, 2, 64), 5, { window: 5 }, true), "T=70 (several tiles)");
    // queryOffset below 0: the first rows see nothing (empty rows get zero gradients).
    await checkCase(makeCase(s(6, 2, 8), 6, { window: 1, queryOffset: -2 }, true), "empty rows");
  },
});

Deno.test({
  name: "attentionBackward() passes no gradient through a masked far-bias sentinel",
  ...GPU_TEST,
  fn: async () => {
    const c = makeCase({ B: 1, Hq: 2, Hkv: 1, T: 8, S: 8, D: 4 }, 7, { window: 1 }, true);
    (c.opts.farBias as Float32Array)[2] = -3.4028234663852886e38;
    await checkCase(c, "sentinel");
    const ref = attentionBackwardReference(c.q, c.k, c.v, c.dOut, c.shape, c.opts);
    assert.equal(ref.dFarBias[2], 0);
  },
});

/** L = Σ dOut ∘ out(q, k, v, farBias) with the f64 forward reference. */
function loss(
  c: Case,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  fb?: ArrayLike<number>,
): number {
  const { out } = attentionReference(q, k, v, c.shape, { ...c.opts, farBias: fb });
  let l = 0;
  for (let i = 0; i < out.length; i++) l += out[i] * c.dOut[i];
  return l;
}

Deno.test({
  name: "attentionBackwardReference() equals central differences of attentionReference()",
  fn: () => {
    fc.assert(
      fc.property(shapeArb, (r) => {
        const shape = {
          B: 1,
          Hq: r.Hkv * r.G,
          Hkv: r.Hkv,
          T: Math.min(r.T, 7),
          S: Math.min(r.T, 7) + Math.min(r.extra, 2),
          D: Math.min(r.D, 5),
        };
        const c = makeCase(shape, r.seed, {
          window: Math.min(r.window, 6),
          queryOffset: shape.S - shape.T + r.qoffShift,
        }, r.far);
        const ref = attentionBackwardReference(c.q, c.k, c.v, c.dOut, c.shape, c.opts);
        const x = {
          q: Float64Array.from(c.q),
          k: Float64Array.from(c.k),
          v: Float64Array.from(c.v),
          fb: c.opts.farBias ? Float64Array.from(c.opts.farBias) : undefined,
        };
        const eps = 1e-6;
        const fd = (a: Float64Array): Float64Array =>
          a.map((x0, i) => {
            a[i] = x0 + eps;
            const lp = loss(c, x.q, x.k, x.v, x.fb);
            a[i] = x0 - eps;
            const lm = loss(c, x.q, x.k, x.v, x.fb);
            a[i] = x0;
            return (lp - lm) / (2 * eps);
          });
        const desc = `${JSON.stringify(shape)} W=${c.opts.window} far=${r.far}`;
        assertClose(ref.dq, fd(x.q), FD_TOL, `dq ${desc}`);
        assertClose(ref.dk, fd(x.k), FD_TOL, `dk ${desc}`);
        assertClose(ref.dv, fd(x.v), FD_TOL, `dv ${desc}`);
        if (x.fb) assertClose(ref.dFarBias, fd(x.fb), FD_TOL, `dFarBias ${desc}`);
      }),
      fcParams(40),
    );
  },
});

Deno.test({
  name: "attentionBackward() rejects non-f32 tensors and mismatched shapes",
  ...GPU_TEST,
  fn: () => {
    using q = Tensor.zeros(gpu, [1, 2, 3, 4]);
    using k = Tensor.zeros(gpu, [1, 1, 3, 4]);
    using lse = Tensor.zeros(gpu, [1, 2, 3]);
    using bad = Tensor.zeros(gpu, [1, 2, 4, 4]);
    using fb = Tensor.zeros(gpu, [1, 1, 3]);
    assert.throws(() => attentionBackward(q, k, k, q, lse, bad), /dOut must have shape/);
    assert.throws(
      () => attentionBackward(q, k, k, q, lse, q, { farBias: fb }),
      /needs opts.window/,
    );
    if (gpu.hasF16) {
      using h = Tensor.zeros(gpu, [1, 2, 3, 4], "f16");
      assert.throws(() => attentionBackward(h, k, k, q, lse, q), TypeError);
    }
  },
});
