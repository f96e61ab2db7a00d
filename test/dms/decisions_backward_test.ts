import assert from "node:assert/strict";
import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import {
  takeQueryNeuron,
  trainDecisions,
  trainDecisionsReference,
  zeroQueryNeuron,
} from "../../src/dms/decisions.ts";
import { attention, attentionReference } from "../../src/ops/attention.ts";
import { attentionBackward } from "../../src/ops/attention_backward.ts";
import {
  takeQueryNeuronBackward,
  takeQueryNeuronBackwardReference,
  type TrainDecisionOptions,
  trainDecisionsBackward,
  trainDecisionsBackwardReference,
  zeroQueryNeuronBackward,
  zeroQueryNeuronBackwardReference,
} from "../../src/dms/decisions_backward.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";

const dims = fc.record({
  b: fc.integer({ min: 1, max: 2 }),
  t: fc.integer({ min: 1, max: 70 }),
  hkv: fc.integer({ min: 1, max: 4 }),
  perLayer: fc.boolean(),
  withFar: fc.boolean(),
  withSt: fc.boolean(),
  recipe: fc.constantFrom(
    { alphaScale: 1, alphaOffset: 0, tau: 0.5 },
    { alphaScale: 2, alphaOffset: 0.5, tau: 0.3 },
    { alphaScale: 100, alphaOffset: 5, tau: 0.1 },
  ),
  seed: fc.integer({ min: 0, max: 1 << 20 }),
});

/** Raw logits that keep |z| moderate for the recipe (as trained logits are). */
function rawFor(n: number, seed: number, o: TrainDecisionOptions): Float32Array {
  return randomArray(
    n,
    seed,
    (o.alphaOffset - 0.6) / o.alphaScale,
    (o.alphaOffset + 0.6) / o.alphaScale,
  );
}

Deno.test({
  name: "trainDecisionsBackward() matches its f64 twin (per head and per layer, either gradient)",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(dims, async ({ b, t, hkv, perLayer, withFar, withSt, recipe, seed }) => {
        const opts = { ...recipe, perLayer };
        const raw = rawFor(b * t * hkv, seed, opts);
        const noise = randomArray(b * hkv * t, seed + 1, -0.3, 0.3);
        const dFb = withFar ? randomArray(b * hkv * t, seed + 2) : undefined;
        const dSt = withSt ? randomArray(b * hkv * t, seed + 3) : undefined;
        using r = Tensor.fromArray(gpu, raw, [b, t, hkv]);
        using n = Tensor.fromArray(gpu, noise, [b, hkv, t]);
        using fb = dFb ? Tensor.fromArray(gpu, dFb, [b, hkv, t]) : null;
        using st = dSt ? Tensor.fromArray(gpu, dSt, [b, hkv, t]) : null;
        using dRaw = trainDecisionsBackward(r, n, opts, {
          dFarBias: fb ?? undefined,
          dStraightThrough: st ?? undefined,
        });
        const ref = trainDecisionsBackwardReference(raw, noise, [b, t, hkv], opts, {
          dFarBias: dFb,
          dStraightThrough: dSt,
        });
        // f32 z carries ~|z|·2^-24 error; dRaw = scale/tau · O(hkv) terms of size <= 1.
        const tol = { atol: 2e-6 * (recipe.alphaScale / recipe.tau) * hkv, rtol: 1e-4 };
        const got = await dRaw.toArray();
        assertClose(got, ref, tol, `dRaw b=${b} t=${t} hkv=${hkv} ${JSON.stringify(opts)}`);
        if (perLayer) { // only head 0's logit is read: the others get exactly 0
          for (let i = 0; i < got.length; i++) if (i % hkv !== 0) assert.equal(got[i], 0);
        }
        if (!withFar && !withSt) assert.ok(got.every((x) => x === 0));
      }),
      fcParams(20),
    );
  },
});

Deno.test({
  name: "trainDecisionsBackwardReference() equals central differences of trainDecisionsReference()",
  fn: () => {
    fc.assert(
      fc.property(dims, ({ b, hkv, perLayer, recipe, seed, t }) => {
        const T = Math.min(t, 6);
        const opts = { ...recipe, perLayer };
        const shape = [b, T, hkv] as const;
        const raw = Float64Array.from(rawFor(b * T * hkv, seed, opts));
        const noise = randomArray(b * hkv * T, seed + 1, -0.3, 0.3);
        const dFarBias = randomArray(b * hkv * T, seed + 2);
        const dStraightThrough = randomArray(b * hkv * T, seed + 3);
        // L = Σ dFarBias ∘ farBias + Σ dST ∘ p (the straight-through value's gradient is p's).
        const loss = () => {
          const f = trainDecisionsReference(raw, noise, shape, opts);
          let l = 0;
          for (let i = 0; i < f.farBias.length; i++) {
            l += dFarBias[i] * f.farBias[i] + dStraightThrough[i] * f.prob[i];
          }
          return l;
        };
        const ref = trainDecisionsBackwardReference(raw, noise, shape, opts, {
          dFarBias,
          dStraightThrough,
        });
        const eps = 1e-6 / recipe.alphaScale;
        const fd = raw.map((x0, i) => {
          raw[i] = x0 + eps;
          const lp = loss();
          raw[i] = x0 - eps;
          const lm = loss();
          raw[i] = x0;
          return (lp - lm) / (2 * eps);
        });
        assertClose(ref, fd, { atol: 1e-7 * recipe.alphaScale / recipe.tau, rtol: 1e-5 }, "dRaw");
      }),
      fcParams(40),
    );
  },
});

Deno.test({
  name: "neuron backward kernels route dRaw into channel D−1 of each group's first head",
  ...GPU_TEST,
  fn: async () => {
    const arb = fc.record({
      b: fc.integer({ min: 1, max: 2 }),
      t: fc.integer({ min: 1, max: 9 }),
      hkv: fc.integer({ min: 1, max: 3 }),
      G: fc.integer({ min: 1, max: 4 }),
      d: fc.constantFrom(1, 2, 5, 8),
      seed: fc.integer({ min: 0, max: 1 << 20 }),
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ b, t, hkv, G, d, seed }) => {
        const hq = hkv * G;
        const dq = randomArray(b * t * hq * d, seed);
        const dRaw = randomArray(b * t * hkv, seed + 1);
        using tdq = Tensor.fromArray(gpu, dq, [b, t, hq, d]);
        using tdRaw = Tensor.fromArray(gpu, dRaw, [b, t, hkv]);
        using take = takeQueryNeuronBackward(tdq, tdRaw, hkv);
        const takeRef = takeQueryNeuronBackwardReference(dq, dRaw, [b, t, hq, d], hkv);
        assertClose(await take.toArray(), takeRef, { atol: 0 }, "takeQueryNeuronBackward");
        // The same tensor read as [B, Hq, T, D] for the after-RoPE zeroing.
        using tdq2 = Tensor.fromArray(gpu, dq, [b, hq, t, d]);
        using zero = zeroQueryNeuronBackward(tdq2, hkv);
        const zeroRef = zeroQueryNeuronBackwardReference(dq, [b, hq, t, d], hkv);
        assertClose(await zero.toArray(), zeroRef, { atol: 0 }, "zeroQueryNeuronBackward");
        // The twins are the adjoints of the forward kernels: <take(q), (dq, dRaw)> = <q, take*(dq, dRaw)>.
        const q = randomArray(b * t * hq * d, seed + 2);
        using tq = Tensor.fromArray(gpu, q, [b, t, hq, d]);
        using raw = takeQueryNeuron(tq, hkv); // tq zeroed in place
        const [qz, rawv] = [await tq.toArray(), await raw.toArray()];
        let lhs = 0, rhs = 0;
        for (let i = 0; i < q.length; i++) lhs += qz[i] * dq[i], rhs += q[i] * takeRef[i];
        for (let i = 0; i < rawv.length; i++) lhs += rawv[i] * dRaw[i];
        assert.ok(Math.abs(lhs - rhs) < 1e-4, `take adjoint ${lhs} vs ${rhs}`);
        using tq2 = Tensor.fromArray(gpu, q, [b, hq, t, d]);
        zeroQueryNeuron(tq2, hkv);
        const qz2 = await tq2.toArray();
        let l2 = 0, r2 = 0;
        for (let i = 0; i < q.length; i++) l2 += qz2[i] * dq[i], r2 += q[i] * zeroRef[i];
        assert.ok(Math.abs(l2 - r2) < 1e-4, `zero adjoint ${l2} vs ${r2}`);
      }),
      fcParams(12),
    );
  },
});

Deno.test({
  name: "decision backward launchers reject non-f32 tensors and wrong shapes",
  ...GPU_TEST,
  fn: () => {
    const opts = { alphaScale: 1, alphaOffset: 0, tau: 1 };
    using raw = Tensor.zeros(gpu, [1, 4, 2]);
    using noise = Tensor.zeros(gpu, [1, 2, 4]);
    using wrong = Tensor.zeros(gpu, [1, 4, 2]);
    using ints = Tensor.zeros(gpu, [1, 2, 4], "i32");
    assert.throws(
      () => trainDecisionsBackward(raw, noise, opts, { dFarBias: wrong }),
      /dFarBias must have shape/,
    );
    assert.throws(
      () => trainDecisionsBackward(raw, noise, opts, { dStraightThrough: ints }),
      TypeError,
    );
    assert.throws(() => trainDecisionsBackward(raw, noise, { ...opts, tau: 0 }, {}), /tau/);
    using dq = Tensor.zeros(gpu, [1, 4, 3, 8]);
    assert.throws(() => takeQueryNeuronBackward(dq, raw, 2), /multiple of KV heads/);
    assert.throws(() => zeroQueryNeuronBackward(raw, 1), /dq must be/);
  },
});

Deno.test({
  name: "the soft mask's gradient flows: raw logits → farBias → attention, GPU chain vs FD",
  ...GPU_TEST,
  fn: async () => {
    const [B, Hkv, G, T, D, W] = [1, 2, 2, 9, 4, 2];
    const Hq = Hkv * G;
    const opts = { alphaScale: 2, alphaOffset: 0.5, tau: 0.3, perLayer: false };
    const shape = { B, Hq, Hkv, T, S: T, D };
    const raw = Float64Array.from(rawFor(B * T * Hkv, 11, opts));
    const noise = randomArray(B * Hkv * T, 12, -0.3, 0.3);
    const [q, k, v] = [13, 14, 15].map((s, i) => randomArray((i ? Hkv : Hq) * T * D, s));
    const dOut = randomArray(Hq * T * D, 16);
    // L(raw) = Σ dOut ∘ attention(q, k, v, farBias(raw)) through the f64 forward references.
    const loss = () => {
      const { farBias } = trainDecisionsReference(raw, noise, [B, T, Hkv], opts);
      const { out } = attentionReference(q, k, v, shape, { window: W, farBias });
      return out.reduce((s, o, i) => s + o * dOut[i], 0);
    };
    const eps = 1e-7;
    const fd = raw.map((x0, i) => {
      raw[i] = x0 + eps;
      const lp = loss();
      raw[i] = x0 - eps;
      const lm = loss();
      raw[i] = x0;
      return (lp - lm) / (2 * eps);
    });
    assert.ok(fd.some((x) => Math.abs(x) > 1e-3), "the distillation path reaches the logits");
    // The same chain on the GPU: trainDecisions → attention → attentionBackward → decisions.
    using tr = Tensor.fromArray(gpu, raw, [B, T, Hkv]);
    using tn = Tensor.fromArray(gpu, noise, [B, Hkv, T]);
    using tq = Tensor.fromArray(gpu, q, [B, Hq, T, D]);
    using tk = Tensor.fromArray(gpu, k, [B, Hkv, T, D]);
    using tv = Tensor.fromArray(gpu, v, [B, Hkv, T, D]);
    using tdo = Tensor.fromArray(gpu, dOut, [B, Hq, T, D]);
    const dec = trainDecisions(tr, tn, opts);
    const { out, lse } = attention(tq, tk, tv, {
      window: W,
      farBias: dec.farBias,
      returnLse: true,
    });
    const g = attentionBackward(tq, tk, tv, out, lse, tdo, { window: W, farBias: dec.farBias });
    using dRaw = trainDecisionsBackward(tr, tn, opts, { dFarBias: g.dFarBias });
    assertClose(await dRaw.toArray(), fd, { atol: 1e-5, rtol: 1e-3 }, "GPU dRaw vs FD");
    for (const t of [out, lse, g.dq, g.dk, g.dv, g.dFarBias!, ...Object.values(dec)]) t.dispose();
  },
});
