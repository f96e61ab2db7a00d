import assert from "node:assert/strict";
import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import { sample, sampleReference, sampleUniform } from "../../src/ops/sample.ts";
import { fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";

/** Logits with well-separated values (gaps >= 1e-3), so thresholds and the draw are robust to f32 error. */
function logitsFor(B: number, V: number, seed: number, spread: number): Float32Array {
  const out = new Float32Array(B * V);
  for (let b = 0; b < B; b++) {
    const perm = Array.from({ length: V }, (_, i) => i);
    const r = randomArray(V, seed + b);
    perm.sort((i, j) => r[i] - r[j]);
    perm.forEach((idx, rank) => (out[b * V + idx] = (rank / V) * spread + rank * 1e-3));
  }
  return out;
}

Deno.test({
  name: "sample() with temperature 0 is the first argmax of each row",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 3000 }),
        fc.integer(),
        async (B, V, seed) => {
          const l = randomArray(B * V, seed, -4, 4).map((x) => Math.round(x)); // many ties
          using t = Tensor.fromArray(gpu, l, [B, V]);
          using ids = sample(t);
          const got = await ids.toArray();
          for (let b = 0; b < B; b++) {
            assert.equal(
              got[b],
              sampleReference(l.subarray(b * V, (b + 1) * V), {}, 0),
              `row ${b}`,
            );
          }
        },
      ),
      fcParams(20),
    );
  },
});

Deno.test({
  name:
    "sample() picks the CPU reference's token for the same draw, under temperature, top-k and top-p",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 2, max: 2000 }),
        fc.integer(),
        fc.record({
          temperature: fc.constantFrom(0.5, 1, 2),
          topK: fc.constantFrom(0, 1, 5, 50),
          topP: fc.constantFrom(1, 0.9, 0.5, 0.01),
          seed: fc.integer({ min: 0, max: 1000 }),
        }),
        fc.integer({ min: 0, max: 100 }),
        async (B, V, seed, opts, step) => {
          const l = logitsFor(B, V, seed, 8);
          using t = Tensor.fromArray(gpu, l, [B, V]);
          using ids = sample(t, { ...opts, step });
          const got = await ids.toArray();
          for (let b = 0; b < B; b++) {
            const u = sampleUniform(opts.seed, step, b);
            const row = l.subarray(b * V, (b + 1) * V);
            const want = sampleReference(row, opts, u);
            if (got[b] !== want) {
              // only acceptable when u sits within float error of a cumulative-mass boundary
              const near = [u - 1e-4, u + 1e-4].map((x) =>
                sampleReference(row, opts, Math.min(Math.max(x, 0), 0.9999999))
              );
              assert.ok(near.includes(got[b]), `row ${b}: got ${got[b]}, want ${want} (u=${u})`);
            }
          }
        },
      ),
      fcParams(25),
    );
  },
});

Deno.test({
  name: "sample() top-k 1 and a tiny top-p are greedy, and a seeded run is reproducible",
  ...GPU_TEST,
  fn: async () => {
    const l = logitsFor(3, 500, 4, 3);
    using t = Tensor.fromArray(gpu, l, [3, 500]);
    using g = sample(t);
    using k1 = sample(t, { temperature: 1, topK: 1, seed: 3 });
    using p0 = sample(t, { temperature: 1, topP: 1e-6, seed: 3 });
    using a = sample(t, { temperature: 1, seed: 9, step: 4 });
    using b = sample(t, { temperature: 1, seed: 9, step: 4 });
    const greedy = await g.toArray();
    assert.deepEqual(await k1.toArray(), greedy);
    assert.deepEqual(await p0.toArray(), greedy);
    assert.deepEqual(await a.toArray(), await b.toArray());
  },
});

Deno.test({
  name: "temperature sampling frequencies follow the softmax (chi-square bound, fixed seed)",
  ...GPU_TEST,
  fn: async () => {
    const V = 6, rows = 4000;
    const base = [0, 1, 2, 0.5, -1, 1.5];
    const l = new Float32Array(rows * V);
    for (let r = 0; r < rows; r++) l.set(base, r * V);
    using t = Tensor.fromArray(gpu, l, [rows, V]);
    using ids = sample(t, { temperature: 1.5, seed: 12345, step: 7 });
    const got = await ids.toArray();
    const counts = new Array(V).fill(0);
    for (const x of got) counts[x]++;
    const w = base.map((x) => Math.exp(x / 1.5)), z = w.reduce((a, b) => a + b);
    let chi = 0;
    for (let i = 0; i < V; i++) chi += (counts[i] - rows * w[i] / z) ** 2 / (rows * w[i] / z);
    assert.ok(
      chi < 20.5,
      `chi-square ${chi.toFixed(2)} (5 dof, p=0.001 bound 20.5), counts ${counts}`,
    );
  },
});

Deno.test({
  name:
    "sample() writes into the next-input buffer and the token log column, and rejects bad options",
  ...GPU_TEST,
  fn: async () => {
    using t = Tensor.fromArray(gpu, [0, 9, 1, 7, 0, 0], [2, 3]);
    using next = Tensor.zeros(gpu, [2, 1], "i32");
    using log = Tensor.fromArray(gpu, [-1, -1, -1, -1, -1, -1], [2, 3], "i32");
    sample(t, { out: next, log, logColumn: 2 });
    assert.deepEqual([...(await next.toArray())], [1, 0]);
    assert.deepEqual([...(await log.toArray())], [-1, -1, 1, -1, -1, 0]);
    assert.throws(() => sample(t, { topP: 0 }), /topP must be in \(0, 1\]/);
    assert.throws(() => sample(t, { temperature: -1 }), RangeError);
    assert.throws(() => sample(t, { log, logColumn: 3 }), /logColumn/);
  },
});
