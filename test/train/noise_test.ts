import assert from "node:assert/strict";
import fc from "fast-check";
import { logisticNoise, logisticNoiseReference, noiseKeys } from "../../src/train/noise.ts";
import { assertClose, fcParams, gpu, GPU_TEST } from "../_util.ts";

Deno.test({
  name: "logisticNoise() matches its CPU twin over shapes and keys",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 37 }), { minLength: 1, maxLength: 3 }),
        fc.nat(),
        fc.nat({ max: 100000 }),
        fc.nat({ max: 63 }),
        async (shape, seed, step, layer) => {
          using n = logisticNoise(gpu, shape, { seed, step, layer });
          const ref = logisticNoiseReference(shape, { seed, step, layer });
          assertClose(await n.toArray(), ref, { atol: 2e-5, rtol: 1e-5 }, "noise");
        },
      ),
      fcParams(15),
    );
  },
});

Deno.test({
  name: "logisticNoise() is reproducible from (seed, step, layer) and distinct across them",
  ...GPU_TEST,
  fn: async () => {
    const shape = [2, 4, 64];
    const draw = async (seed: number, step: number, layer: number) => {
      using t = logisticNoise(gpu, shape, { seed, step, layer });
      return await t.toArray();
    };
    const a = await draw(42, 7, 3);
    assert.deepEqual(await draw(42, 7, 3), a);
    for (const [seed, step, layer] of [[43, 7, 3], [42, 8, 3], [42, 7, 4], [42, 3, 7]]) {
      const b = await draw(seed, step, layer);
      const same = a.filter((x, i) => x === b[i]).length;
      assert.ok(same < 3, `(${seed}, ${step}, ${layer}) shares ${same} of ${a.length} values`);
    }
    // Keys: injective in step for a seed, in layer for a step.
    const seen = new Set<string>();
    for (let step = 0; step < 200; step++) {
      for (let layer = 0; layer < 40; layer++) seen.add(noiseKeys({ seed: 1, step, layer }).join());
    }
    assert.equal(seen.size, 200 * 40);
  },
});

Deno.test({
  name: "logisticNoise() has mean 0 and variance π²/3, and P(σ((a+n)/τ) > 0.5) = σ(a)",
  ...GPU_TEST,
  fn: async () => {
    const N = 1 << 18;
    using t = logisticNoise(gpu, [N], { seed: 5, step: 0, layer: 0 });
    const n = await t.toArray();
    let s = 0, s2 = 0;
    for (const x of n) {
      assert.ok(Number.isFinite(x));
      s += x;
      s2 += x * x;
    }
    const mean = s / N, variance = s2 / N - mean * mean;
    const v = Math.PI ** 2 / 3; // Var of Logistic(0, 1); Var(x²) = 16π⁴/15 − v²
    const seMean = Math.sqrt(v / N), seVar = Math.sqrt((16 * Math.PI ** 4 / 15 - v * v) / N);
    assert.ok(Math.abs(mean) < 5 * seMean, `mean ${mean} (5σ = ${5 * seMean})`);
    assert.ok(Math.abs(variance - v) < 5 * seVar, `variance ${variance} vs ${v}`);
    const tau = 0.1;
    for (const a of [-5, -2, -0.5, 0, 0.3, 1.5, 4]) {
      let hard = 0;
      for (const x of n) if (1 / (1 + Math.exp(-(a + x) / tau)) > 0.5) hard++;
      const p = 1 / (1 + Math.exp(-a)), se = Math.sqrt(p * (1 - p) / N);
      assert.ok(
        Math.abs(hard / N - p) < 5 * se,
        `a = ${a}: P(hard = 1) = ${hard / N}, σ(a) = ${p} (5σ = ${5 * se})`,
      );
    }
  },
});

Deno.test("logisticNoise() rejects keys that are not u32, naming the field", () => {
  assert.throws(() => noiseKeys({ seed: -1, step: 0, layer: 0 }), /seed/);
  assert.throws(() => noiseKeys({ seed: 0, step: 1.5, layer: 0 }), /step/);
  assert.throws(() => noiseKeys({ seed: 0, step: 0, layer: 2 ** 32 }), /layer/);
});
