import assert from "node:assert/strict";
import fc from "fast-check";
import { readTensors, Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import {
  sample,
  type SampleOptions,
  sampleReference,
  sampleUniform,
} from "../../src/ops/sample.ts";
import { argmaxReference } from "../../src/ops/reduce.ts";
import { fcParams, FLOAT_DTYPES, gpu, GPU_TEST, nearTieSlack, randomArray } from "../_util.ts";

/**
 * Float tolerance of the draw: the GPU sums masses in f32, the reference in f64, so the token
 * may differ only when the goal u·Z or the top-p mass p·Zk lies within a relative 1e-4 of a
 * boundary. Such a row must then pick a token the reference picks for u or topP moved by 1e-4.
 */
const DELTA = 1e-4;

function checkRow(
  got: number,
  row: ArrayLike<number>,
  opts: SampleOptions,
  u: number,
  what: string,
): boolean {
  const want = sampleReference(row, opts, u);
  if (got === want) return true;
  const p = opts.topP ?? 1;
  const near = new Set<number>();
  for (const du of [-DELTA, 0, DELTA]) {
    for (const dp of [-DELTA, 0, DELTA]) {
      const uu = Math.min(Math.max(u + du, 0), 1 - 2 ** -24);
      near.add(sampleReference(row, { ...opts, topP: Math.min(p * (1 + dp), 1) }, uu));
    }
  }
  assert.ok(
    near.has(got),
    `${what}: got ${got}, want ${want} (u=${u}, ${JSON.stringify(opts)}); ` +
      `within ${DELTA} of the boundaries: ${[...near]}`,
  );
  return false;
}

/** Random logits; with `grid`, rounded to multiples of 0.5 (many exact ties). */
function logits(n: number, seed: number, spread: number, grid: boolean): Float32Array {
  const x = randomArray(n, seed, -spread, spread);
  return grid ? x.map((v) => Math.round(v * 2) / 2) : x;
}

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `sample() (${dtype}) with temperature 0 is the first argmax of each row`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 5 }),
          fc.integer({ min: 1, max: 3000 }),
          fc.integer(),
          async (B, V, seed) => {
            let l: Float32Array = randomArray(B * V, seed, -4, 4).map(Math.round); // many ties
            if (dtype === "f16") l = roundToF16(l);
            using t = Tensor.fromArray(gpu, l, [B, V], dtype);
            using ids = sample(t);
            assert.deepEqual([...(await ids.toArray())], [...argmaxReference(l, V)]);
          },
        ),
        fcParams(15),
      );
    },
  });

  Deno.test({
    name:
      `sample() (${dtype}) picks the CPU reference's token for the same u under temperature, top-k and top-p`,
    ...GPU_TEST,
    fn: async () => {
      let rows = 0, exact = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 4 }),
          fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 100, max: 3000 })),
          fc.integer(),
          fc.boolean(),
          fc.record({
            temperature: fc.constantFrom(0.3, 0.7, 1, 2),
            topK: fc.constantFrom(0, 0, 2, 5, 50, 100, 2500),
            topP: fc.constantFrom(1, 1, 0.95, 0.9, 0.5, 0.1),
            seed: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
          }),
          fc.integer({ min: 0, max: 1000 }),
          async (B, V, seed, grid, opts, step) => {
            let l: Float32Array = logits(B * V, seed, 6, grid);
            if (dtype === "f16") l = roundToF16(l);
            using t = Tensor.fromArray(gpu, l, [B, V], dtype);
            using ids = sample(t, { ...opts, step });
            const got = await ids.toArray();
            for (let b = 0; b < B; b++) {
              const row = l.subarray(b * V, (b + 1) * V);
              rows++;
              if (checkRow(got[b], row, opts, sampleUniform(opts.seed, step, b), `row ${b}`)) {
                exact++;
              }
            }
          },
        ),
        fcParams(40),
      );
      // boundary cases are rare: nearly every row must match exactly
      assert.ok(
        exact >= rows - nearTieSlack(rows),
        `${rows - exact} of ${rows} rows needed the float tolerance`,
      );
    },
  });
}

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name:
      `sample() (${dtype}) naive and fast kernels agree with each other and with the CPU reference`,
    ...GPU_TEST,
    fn: async () => {
      let rows = 0, same = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 3 }),
          fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 200, max: 3000 })),
          fc.integer(),
          fc.boolean(),
          fc.record({
            temperature: fc.constantFrom(0, 0.5, 1, 2),
            topK: fc.constantFrom(0, 1, 3, 50, 2500),
            topP: fc.constantFrom(1, 0.9, 0.5),
            seed: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
          }),
          fc.integer({ min: 0, max: 1000 }),
          async (B, V, seed, grid, opts, step) => {
            let l: Float32Array = logits(B * V, seed, 6, grid);
            if (dtype === "f16") l = roundToF16(l);
            using t = Tensor.fromArray(gpu, l, [B, V], dtype);
            using fast = sample(t, { ...opts, step, kernel: "fast" });
            using naive = sample(t, { ...opts, step, kernel: "naive" });
            const [f, n] = await readTensors([fast, naive]);
            for (let b = 0; b < B; b++) {
              const row = l.subarray(b * V, (b + 1) * V);
              const u = sampleUniform(opts.seed, step, b);
              rows++;
              checkRow(f[b], row, opts, u, `fast row ${b}`);
              checkRow(n[b], row, opts, u, `naive row ${b}`);
              if (f[b] === n[b]) same++;
            }
          },
        ),
        fcParams(25),
      );
      assert.ok(
        same >= rows - nearTieSlack(rows),
        `${rows - same} of ${rows} rows differ between the kernels`,
      );
    },
  });
}

Deno.test({
  name: "sample() naive kernel writes out, the log column and reads the step buffer like fast",
  ...GPU_TEST,
  fn: async () => {
    const B = 2, V = 700;
    const l = logits(B * V, 3, 4, false);
    using t = Tensor.fromArray(gpu, l, [B, V]);
    using stepT = Tensor.fromArray(gpu, [5], [1], "u32");
    const got: Int32Array[] = [];
    for (const kernel of ["fast", "naive"] as const) {
      using out = Tensor.fromArray(gpu, [-1, -1, -1, -1], [4], "i32");
      using log = Tensor.fromArray(gpu, [-1, -1, -1, -1, -1, -1], [2, 3], "i32");
      const opts = { temperature: 1, topK: 20, topP: 0.9, seed: 9 };
      // column 8 of a 3-column log is column 8 mod 3 = 2 (a ring)
      sample(t, { ...opts, step: stepT, out, outOffset: 1, log, logColumn: 8, kernel });
      const [o, g] = await readTensors([out, log]);
      assert.equal(o[0], -1);
      assert.equal(o[3], -1);
      assert.deepEqual([g[0], g[1], g[3], g[4]], [-1, -1, -1, -1]);
      assert.deepEqual([g[2], g[5]], [o[1], o[2]], kernel);
      for (let b = 0; b < B; b++) {
        checkRow(o[1 + b], l.subarray(b * V, (b + 1) * V), opts, sampleUniform(9, 5, b), kernel);
      }
      got.push(o as Int32Array);
    }
    assert.deepEqual([...got[0]], [...got[1]]);
    assert.throws(() => sample(t, { kernel: "slow" as "fast" }), {
      name: "RangeError",
      message: /kernel must be "fast", "naive" or "split"/,
    });
  },
});

Deno.test({
  name: "sample() matches the reference on LM-head rows (V = 151936, top-k 100, top-p)",
  ...GPU_TEST,
  fn: async () => {
    const B = 2, V = 151936;
    const l = logits(B * V, 77, 8, false);
    for (let i = 0; i < 40; i++) l[(i * 7919) % (B * V)] = 14 + (i % 5); // a few strong peaks
    using t = Tensor.fromArray(gpu, l, [B, V]);
    const configs: SampleOptions[] = [
      { temperature: 1 },
      { temperature: 0.8, topK: 100 },
      { temperature: 1, topP: 0.9 },
      { temperature: 0.7, topK: 50, topP: 0.95 },
      { temperature: 1.5, topP: 0.999 },
    ];
    for (const [i, c] of configs.entries()) {
      for (const step of [0, 1, 2]) {
        const opts = { ...c, seed: 1234 + i };
        using ids = sample(t, { ...opts, step });
        const got = await ids.toArray();
        for (let b = 0; b < B; b++) {
          checkRow(
            got[b],
            l.subarray(b * V, (b + 1) * V),
            opts,
            sampleUniform(opts.seed, step, b),
            `config ${i} step ${step} row ${b}`,
          );
        }
      }
    }
  },
});

Deno.test({
  name:
    "sample() takes the general (radix select) path when the candidates do not fit, with the same result",
  ...GPU_TEST,
  fn: async () => {
    // The candidate path holds at most 8 * 256 = 2048 tokens; these cases need more: top-k
    // 3000, and top-p over flat logits (the nucleus spans most of the row). Small cases of the
    // same shape take the candidate path, so both paths are checked against one reference.
    const B = 3, V = 12000;
    const flat = logits(B * V, 5, 0.5, false);
    const steep = logits(B * V, 6, 8, true);
    for (const l of [flat, steep]) {
      using t = Tensor.fromArray(gpu, l, [B, V]);
      for (
        const opts of [
          { temperature: 1, topK: 3000, seed: 1 },
          { temperature: 1, topK: 3000, topP: 0.9, seed: 2 },
          { temperature: 1, topP: 0.95, seed: 3 },
          { temperature: 0.5, topK: 40, topP: 0.8, seed: 4 },
          { temperature: 1, topK: 11999, seed: 5 },
        ]
      ) {
        for (const step of [0, 1]) {
          using ids = sample(t, { ...opts, step });
          const got = await ids.toArray();
          for (let b = 0; b < B; b++) {
            checkRow(
              got[b],
              l.subarray(b * V, (b + 1) * V),
              opts,
              sampleUniform(opts.seed, step, b),
              `${JSON.stringify(opts)} step ${step} row ${b}`,
            );
          }
        }
      }
    }
  },
});

Deno.test({
  name: "sample() draws u = sampleUniform(seed, step, row): uniform logits pick floor(u·V)",
  ...GPU_TEST,
  fn: async () => {
    const B = 300, V = 256; // u·V is exact in f32 for V a power of two
    using t = Tensor.zeros(gpu, [B, V]);
    for (const [seed, step] of [[0, 0], [7, 3], [2 ** 32 - 1, 123456]]) {
      using ids = sample(t, { temperature: 1, seed, step });
      const got = await ids.toArray();
      const want = Array.from(
        { length: B },
        (_, b) => Math.floor(sampleUniform(seed, step, b) * V),
      );
      assert.deepEqual([...got], want, `seed ${seed} step ${step}`);
    }
  },
});

Deno.test({
  name: "sample() with top-k 1 or a tiny top-p is greedy, and a seeded run is reproducible",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 2, max: 2000 }),
        fc.integer(),
        fc.double({ min: 0.1, max: 3, noNaN: true }),
        async (B, V, seed, temperature) => {
          // distinct logits (a unique maximum): a tiny nucleus holds only it
          const l = logits(B * V, seed, 5, false).map((x, i) => x + i * 1e-6);
          using t = Tensor.fromArray(gpu, l, [B, V]);
          using g = sample(t);
          using k1 = sample(t, { temperature, topK: 1, seed });
          using p0 = sample(t, { temperature, topP: 1e-7, seed, step: 3 });
          using a = sample(t, { temperature, topK: 20, topP: 0.9, seed: 9, step: 4 });
          using b = sample(t, { temperature, topK: 20, topP: 0.9, seed: 9, step: 4 });
          const greedy = [...(await g.toArray())];
          assert.deepEqual(greedy, [...argmaxReference(l, V)]);
          assert.deepEqual([...(await k1.toArray())], greedy);
          assert.deepEqual([...(await p0.toArray())], greedy);
          assert.deepEqual([...(await a.toArray())], [...(await b.toArray())]);
        },
      ),
      fcParams(15),
    );
  },
});

Deno.test({
  name: "sample() reads the step from a GPU buffer (u32 or i32) like the same step as a number",
  ...GPU_TEST,
  fn: async () => {
    const B = 64, V = 256;
    using t = Tensor.zeros(gpu, [B, V]);
    using s5 = Tensor.fromArray(gpu, [5, 99], [2], "u32");
    using s5i = Tensor.fromArray(gpu, [5], [1], "i32");
    using byNumber = sample(t, { temperature: 1, seed: 3, step: 5 });
    using byU32 = sample(t, { temperature: 1, seed: 3, step: s5 });
    using byI32 = sample(t, { temperature: 1, seed: 3, step: s5i });
    using next = sample(t, { temperature: 1, seed: 3, step: 6 });
    const want = [...(await byNumber.toArray())];
    assert.deepEqual([...(await byU32.toArray())], want);
    assert.deepEqual([...(await byI32.toArray())], want);
    // the buffer is read when the kernel runs: update it on the GPU side, sample again
    s5.write([6, 0]);
    using later = sample(t, { temperature: 1, seed: 3, step: s5 });
    const other = [...(await next.toArray())];
    assert.deepEqual([...(await later.toArray())], other);
    assert.ok(other.filter((x, i) => x !== want[i]).length > B / 2, "steps 5 and 6 differ");
  },
});

/** Chi-square statistic of counts against probabilities (cells with p = 0 must be empty). */
function chiSquare(counts: number[], probs: number[], n: number): number {
  let chi = 0;
  for (let i = 0; i < counts.length; i++) {
    if (probs[i] === 0) {
      assert.equal(counts[i], 0, `token ${i} has probability 0 but was drawn ${counts[i]} times`);
      continue;
    }
    chi += (counts[i] - n * probs[i]) ** 2 / (n * probs[i]);
  }
  return chi;
}

Deno.test({
  name:
    "sampling frequencies follow the filtered softmax (chi-square, fixed seed, many rows and steps)",
  ...GPU_TEST,
  fn: async () => {
    const V = 6, rows = 4000, steps = 5;
    const base = [0, 1, 2, 0.5, -1, 1.5];
    const l = new Float32Array(rows * V);
    for (let r = 0; r < rows; r++) l.set(base, r * V);
    using t = Tensor.fromArray(gpu, l, [rows, V]);
    // 99.99% quantiles of chi-square with 5 / 2 / 1 degrees of freedom
    const bound: Record<number, number> = { 5: 25.74, 2: 18.42, 1: 15.14 };
    const cases: { opts: SampleOptions; keep: number[] }[] = [
      { opts: { temperature: 0.7 }, keep: [0, 1, 2, 3, 4, 5] },
      { opts: { temperature: 1.3, topK: 3 }, keep: [1, 2, 5] },
      // masses at T=1, descending: 2 → .41, 1.5 → .25, 1 → .15 ...; topP .6 keeps {2, 5}
      { opts: { temperature: 1, topP: 0.6 }, keep: [2, 5] },
    ];
    for (const { opts, keep } of cases) {
      using log = Tensor.zeros(gpu, [rows, steps], "i32");
      using scratch = Tensor.zeros(gpu, [rows], "i32");
      for (let s = 0; s < steps; s++) {
        sample(t, { ...opts, seed: 2024, step: s, out: scratch, log, logColumn: s });
      }
      const got = await log.toArray(); // one readback for all steps
      const counts = new Array(V).fill(0);
      for (const x of got) counts[x]++;
      const w = base.map((x, i) => (keep.includes(i) ? Math.exp(x / opts.temperature!) : 0));
      const z = w.reduce((a, b) => a + b);
      const chi = chiSquare(counts, w.map((x) => x / z), rows * steps);
      const dof = keep.length - 1;
      assert.ok(
        chi < bound[dof],
        `${JSON.stringify(opts)}: chi-square ${chi.toFixed(2)} >= ${
          bound[dof]
        } (${dof} dof), counts ${counts}`,
      );
    }
  },
});

Deno.test({
  name: "sample() writes at an offset of the out buffer and into a token log column only",
  ...GPU_TEST,
  fn: async () => {
    using t = Tensor.fromArray(gpu, [0, 9, 1, 7, 0, 0], [2, 3]);
    using buf = Tensor.fromArray(gpu, [-1, -1, -1, -1, -1], [5], "i32");
    using log = Tensor.fromArray(gpu, [-1, -1, -1, -1, -1, -1], [2, 3], "i32");
    const r = sample(t, { out: buf, outOffset: 2, log, logColumn: 2 });
    assert.equal(r, buf);
    assert.deepEqual([...(await buf.toArray())], [-1, -1, 1, 0, -1]);
    assert.deepEqual([...(await log.toArray())], [-1, -1, 1, -1, -1, 0]);
    using next = Tensor.zeros(gpu, [2, 1], "i32");
    sample(t, { out: next });
    assert.deepEqual([...(await next.toArray())], [1, 0]);
  },
});

Deno.test({
  name: "sample() rejects bad shapes, dtypes and options, naming them",
  ...GPU_TEST,
  fn: () => {
    using t = Tensor.fromArray(gpu, [0, 9, 1, 7, 0, 0], [2, 3]);
    using i = Tensor.zeros(gpu, [2, 3], "i32");
    using f = Tensor.zeros(gpu, [2]);
    using small = Tensor.zeros(gpu, [3], "i32");
    using log = Tensor.zeros(gpu, [2, 3], "i32");
    using empty = Tensor.zeros(gpu, [2, 0]);
    assert.throws(() => sample(i), { name: "TypeError", message: /logits: expected f32 or f16/ });
    assert.throws(() => sample(f), { name: "RangeError", message: /expected shape \[B, V\]/ });
    assert.throws(() => sample(empty), RangeError);
    assert.throws(() => sample(t, { topP: 0 }), /topP must be in \(0, 1\]/);
    assert.throws(() => sample(t, { topP: 1.5 }), RangeError);
    assert.throws(() => sample(t, { temperature: -1 }), RangeError);
    assert.throws(() => sample(t, { temperature: 1e-40 }), /too small/);
    assert.throws(() => sample(t, { topK: 2.5 }), /topK/);
    assert.throws(() => sample(t, { seed: 0.5 }), /seed/);
    assert.throws(() => sample(t, { step: f }), { name: "TypeError", message: /step/ });
    assert.throws(() => sample(t, { out: f }), {
      name: "TypeError",
      message: /out: expected an i32/,
    });
    assert.throws(() => sample(t, { out: small, outOffset: 2 }), /do not fit in \[3\]/);
    assert.throws(() => sample(t, { outOffset: 1 }), /needs an out tensor/);
    assert.throws(() => sample(t, { log, logColumn: -1 }), /logColumn/);
    assert.throws(() => sample(t, { log, logColumn: 1.5 }), /logColumn/);
  },
});
