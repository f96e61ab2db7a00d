import assert from "node:assert/strict";
import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import {
  inferDecisions,
  inferDecisionsReference,
  takeQueryNeuron,
  trainDecisions,
  trainDecisionsReference,
  zeroQueryNeuron,
} from "../../src/dms/decisions.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";

const dims = fc.record({
  b: fc.integer({ min: 1, max: 2 }),
  t: fc.integer({ min: 1, max: 70 }),
  hkv: fc.integer({ min: 1, max: 4 }),
  perLayer: fc.boolean(),
  seed: fc.integer(),
});

Deno.test({
  name: "inferDecisions() thresholds scale·raw − offset strictly and broadcasts head 0 per layer",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(dims, async ({ b, t, hkv, perLayer, seed }) => {
        const raw = randomArray(b * t * hkv, seed, -0.2, 0.2);
        raw[0] = 0.05; // alpha exactly 0 at scale 100, offset 5: decision 0 (strict)
        const opts = { alphaScale: 100, alphaOffset: 5, perLayer };
        using r = Tensor.fromArray(gpu, raw, [b, t, hkv]);
        const { alpha, decisions } = inferDecisions(r, opts);
        using _a = alpha;
        using _d = decisions;
        const ref = inferDecisionsReference(raw, [b, t, hkv], opts);
        assertClose(await alpha.toArray(), ref.alpha, { atol: 1e-5, rtol: 1e-6 }, "alpha");
        // a decision may only differ where alpha is within f32 rounding of 0
        const got = await decisions.toArray();
        for (let i = 0; i < got.length; i++) {
          if (got[i] !== ref.decisions[i]) {
            assert.ok(Math.abs(ref.alpha[i]) < 1e-5, `decision ${i}`);
          }
        }
      }),
      fcParams(20),
    );
  },
});

Deno.test({
  name:
    "trainDecisions() matches the Gumbel-sigmoid reference, with the far bias taken from the next position",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        dims,
        fc.constantFrom(0.1, 0.5, 1),
        async ({ b, t, hkv, perLayer, seed }, tau) => {
          const raw = randomArray(b * t * hkv, seed, -0.1, 0.1);
          const noise = randomArray(b * t * hkv, seed + 1, -3, 3);
          const opts = { alphaScale: 100, alphaOffset: 5, perLayer, tau };
          using r = Tensor.fromArray(gpu, raw, [b, t, hkv]);
          using n = Tensor.fromArray(gpu, noise, [b, hkv, t]);
          const out = trainDecisions(r, n, opts);
          const ref = trainDecisionsReference(raw, noise, [b, t, hkv], opts);
          const zTol = { atol: 1e-5 * 100 / tau, rtol: 1e-5 };
          assertClose(await out.z.toArray(), ref.z, zTol, "z");
          assertClose(await out.prob.toArray(), ref.prob, { atol: 1e-5 }, "p");
          assertClose(await out.farBias.toArray(), ref.farBias, zTol, "farBias");
          assertClose(await out.alpha.toArray(), ref.alpha, { atol: 1e-4 }, "alpha");
          const hard = await out.hard.toArray();
          const st = await out.straightThrough.toArray();
          for (let i = 0; i < hard.length; i++) {
            if (hard[i] !== ref.hard[i]) assert.ok(Math.abs(ref.z[i]) < 1e-3, `hard ${i}`);
            assert.ok(
              Math.abs(st[i] - hard[i]) < 1e-6,
              "straight-through forward value equals hard",
            );
          }
          for (const x of Object.values(out)) x.dispose();
        },
      ),
      fcParams(15),
    );
  },
});

Deno.test({
  name:
    "the borrowed query neuron is read from the first head of each group and zeroed before and after RoPE",
  ...GPU_TEST,
  fn: async () => {
    const [b, t, hq, hkv, d] = [2, 3, 6, 2, 4];
    const q = randomArray(b * t * hq * d, 9);
    using qt = Tensor.fromArray(gpu, q, [b, t, hq, d]);
    using raw = takeQueryNeuron(qt, hkv);
    const got = await raw.toArray();
    const after = await qt.toArray();
    const g = hq / hkv;
    for (let bi = 0; bi < b; bi++) {
      for (let ti = 0; ti < t; ti++) {
        for (let h = 0; h < hq; h++) {
          const idx = ((bi * t + ti) * hq + h) * d + d - 1;
          if (h % g === 0) {
            assert.equal(got[(bi * t + ti) * hkv + h / g], q[idx]);
            assert.equal(after[idx], 0);
          } else assert.equal(after[idx], q[idx]);
        }
      }
    }
    // after RoPE, in [B, Hq, T, D]
    const q2 = randomArray(b * hq * t * d, 10);
    using q2t = Tensor.fromArray(gpu, q2, [b, hq, t, d]);
    zeroQueryNeuron(q2t, hkv);
    const z = await q2t.toArray();
    for (let i = 0; i < z.length; i++) {
      const h = Math.floor(i / (t * d)) % hq, c = i % d;
      assert.equal(z[i], h % g === 0 && c === d - 1 ? 0 : q2[i]);
    }
    assert.throws(
      () => takeQueryNeuron(qt, 4),
      /query heads \(6\) must be a positive multiple of KV heads \(4\)/,
    );
  },
});
