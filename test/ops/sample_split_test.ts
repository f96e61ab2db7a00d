/**
 * The split-row sampler (`kernel: "split"`, and the default's route for greedy and
 * temperature-only rows with V >= 16384) against the CPU reference `sampleReference`.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { readTensors, Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { sample, type SampleKernel, sampleReference, sampleUniform } from "../../src/ops/sample.ts";
import { argmaxReference } from "../../src/ops/reduce.ts";
import { fcParams, FLOAT_DTYPES, gpu, GPU_TEST, nearTieSlack, randomArray } from "../_util.ts";

/** Logits per chunk of the split kernel's first pass. */
const CHUNK = 2048;

/**
 * Float tolerance of the draw. The GPU sums the masses in f32 (per chunk, then rescaled to the
 * row max), the reference in f64; a token other than the reference's is accepted only when it
 * is the reference's token for a goal within EPS·Z of u·Z, i.e. its interval of running mass
 * (P(i-1), P(i)] computed in f64 meets [u·Z - EPS·Z, u·Z + EPS·Z]. EPS = 1e-5 leaves room for
 * WGSL's exp (3 + 2|x| ulp) on real GPUs; the callers also require nearly every row to match
 * exactly, so the tolerance cannot hide a wrong chunk or a wrong scan.
 */
const EPS = 1e-5;

/** Whether `got` is the reference token of the row; asserts it is within EPS otherwise. */
function checkDraw(
  got: number,
  row: ArrayLike<number>,
  temperature: number,
  u: number,
  what: string,
): boolean {
  const want = sampleReference(row, { temperature }, u);
  if (got === want) return true;
  let m = -Infinity;
  for (let i = 0; i < row.length; i++) m = Math.max(m, row[i]);
  const w = Array.from(row, (x) => Math.exp((x - m) / temperature));
  const z = w.reduce((a, b) => a + b, 0);
  let before = 0;
  for (let i = 0; i < got && i < row.length; i++) before += w[i];
  const goal = u * z;
  const ok = got >= 0 && got < row.length && w[got] > 0 &&
    before <= goal + EPS * z && before + w[got] > goal - EPS * z;
  assert.ok(
    ok,
    `${what}: got ${got}, want ${want} (u=${u}, T=${temperature}, V=${row.length}): ` +
      `mass before ${before / z} of Z, own ${w[got] / z}, goal ${u}`,
  );
  return false;
}

/** Logits in [-spread, spread), `peaks` of them raised by 10; with `grid`, rounded to 0.5 (ties). */
function logits(n: number, seed: number, spread: number, peaks: number, grid: boolean) {
  const x = randomArray(n, seed, -spread, spread);
  for (let i = 0; i < peaks; i++) x[(i * 7919 + (seed >>> 3)) % n] += 10;
  return grid ? x.map((v) => Math.round(v * 2) / 2) : x;
}

/** Small V forces the split kernel; large V (>= 16384) checks the default's routing too. */
const vocab = fc.oneof(
  fc.integer({ min: 1, max: 3 * CHUNK + 5 }),
  fc.integer({ min: 16384, max: 40000 }),
  fc.constant(151936),
);

const kernelFor = (v: number): SampleKernel | undefined => (v >= 16384 ? undefined : "split");

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `sample() split (${dtype}) greedy is the first argmax, equal maxima in other chunks too`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 4 }),
          vocab,
          fc.integer(),
          fc.array(fc.nat(), { minLength: 0, maxLength: 5 }),
          fc.boolean(),
          async (B, V, seed, ties, topK1) => {
            let l: Float32Array = randomArray(B * V, seed, -4, 4).map(Math.round); // ties
            // several copies of the row max, in different chunks: the first must win
            for (let b = 0; b < B; b++) {
              for (const t of ties) l[b * V + ((t + b * 977) % V)] = 9;
            }
            if (dtype === "f16") l = roundToF16(l);
            using t = Tensor.fromArray(gpu, l, [B, V], dtype);
            // topK 1 is greedy at any temperature
            const opts = topK1 ? { temperature: 0.8, topK: 1, seed } : {};
            using ids = sample(t, { ...opts, kernel: kernelFor(V) });
            const want = argmaxReference(l, V);
            assert.deepEqual([...(await ids.toArray())], [...want], `B ${B} V ${V}`);
            for (let b = 0; b < B; b++) {
              assert.equal(want[b], sampleReference(l.subarray(b * V, (b + 1) * V), opts, 0.5));
            }
          },
        ),
        fcParams(20),
      );
    },
  });

  Deno.test({
    name: `sample() split (${dtype}) draws the reference's token under temperature alone`,
    ...GPU_TEST,
    fn: async () => {
      let rows = 0, exact = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 4 }),
          vocab,
          fc.integer(),
          fc.constantFrom(0.3, 0.7, 1, 2),
          fc.integer({ min: 0, max: 2 ** 32 - 1 }),
          fc.integer({ min: 0, max: 5000 }),
          fc.record({ spread: fc.constantFrom(0.5, 4, 8), peaks: fc.nat(6), grid: fc.boolean() }),
          async (B, V, dataSeed, temperature, seed, step, shape) => {
            let l = logits(B * V, dataSeed, shape.spread, shape.peaks, shape.grid);
            if (dtype === "f16") l = roundToF16(l);
            using t = Tensor.fromArray(gpu, l, [B, V], dtype);
            // topK >= V and topP 1 are "off": temperature alone
            const topK = V > 5 && step % 2 ? V + step : 0;
            using ids = sample(t, { temperature, topK, topP: 1, seed, step, kernel: kernelFor(V) });
            const got = await ids.toArray();
            for (let b = 0; b < B; b++) {
              rows++;
              const row = l.subarray(b * V, (b + 1) * V);
              const u = sampleUniform(seed, step, b);
              if (checkDraw(got[b], row, temperature, u, `row ${b}`)) exact++;
            }
          },
        ),
        fcParams(40),
      );
      assert.ok(
        exact >= rows - nearTieSlack(rows),
        `${rows - exact} of ${rows} rows needed the float tolerance`,
      );
    },
  });
}

Deno.test({
  name: "sample() split agrees with the fast kernel and the reference over many seeds and steps",
  ...GPU_TEST,
  fn: async () => {
    const B = 4;
    let rows = 0, exact = 0, same = 0;
    for (const [V, spread] of [[151936, 8], [5000, 2], [2048, 4], [37, 1]]) {
      const l = logits(B * V, V, spread, 3, false);
      using t = Tensor.fromArray(gpu, l, [B, V]);
      for (let s = 0; s < 12; s++) {
        const opts = { temperature: [0.6, 1, 1.4][s % 3], seed: 1000 + 17 * s, step: s * 31 };
        using split = sample(t, { ...opts, kernel: "split" });
        using fast = sample(t, { ...opts, topK: V }); // topK V: the one-workgroup kernel
        const [a, f] = await readTensors([split, fast]);
        for (let b = 0; b < B; b++) {
          rows++;
          const row = l.subarray(b * V, (b + 1) * V);
          const u = sampleUniform(opts.seed, opts.step, b);
          if (checkDraw(a[b], row, opts.temperature, u, `V ${V} seed ${opts.seed} row ${b}`)) {
            exact++;
          }
          if (a[b] === f[b]) same++;
        }
      }
    }
    assert.ok(
      exact >= rows - nearTieSlack(rows),
      `${rows - exact} of ${rows} rows needed the float tolerance`,
    );
    assert.ok(
      same >= rows - nearTieSlack(rows),
      `${rows - same} of ${rows} rows differ between the kernels`,
    );
  },
});

Deno.test({
  name: "sample() split draws u = sampleUniform(seed, step, row): uniform logits pick floor(u·V)",
  ...GPU_TEST,
  fn: async () => {
    // V = 2^15: every mass and goal is exact in f32, so the token is exactly floor(u·V)
    const B = 48, V = 32768;
    using t = Tensor.zeros(gpu, [B, V]);
    for (const [seed, step] of [[0, 0], [7, 3], [2 ** 32 - 1, 123456]]) {
      using ids = sample(t, { temperature: 1, seed, step });
      const want = Array.from(
        { length: B },
        (_, b) => Math.floor(sampleUniform(seed, step, b) * V),
      );
      assert.deepEqual([...(await ids.toArray())], want, `seed ${seed} step ${step}`);
    }
  },
});

Deno.test({
  name: "sample() split skips -inf logits, also whole -inf chunks",
  ...GPU_TEST,
  fn: async () => {
    const B = 3, V = 5 * CHUNK + 100;
    const l = logits(B * V, 11, 3, 2, false);
    for (let b = 0; b < B; b++) {
      // row 0: chunks 0-1 masked; row 1: all but chunk 3; row 2: every other logit
      for (let j = 0; j < V; j++) {
        const c = Math.floor(j / CHUNK);
        if ((b === 0 && c < 2) || (b === 1 && c !== 3) || (b === 2 && j % 2)) {
          l[b * V + j] = -Infinity;
        }
      }
    }
    using t = Tensor.fromArray(gpu, l, [B, V]);
    using g = sample(t, { kernel: "split" });
    assert.deepEqual([...(await g.toArray())], [...argmaxReference(l, V)]);
    for (let step = 0; step < 6; step++) {
      using ids = sample(t, { temperature: 1.5, seed: 5, step, kernel: "split" });
      const got = await ids.toArray();
      for (let b = 0; b < B; b++) {
        const row = l.subarray(b * V, (b + 1) * V);
        assert.ok(row[got[b]] > -Infinity, `step ${step} row ${b}: drew a -inf logit`);
        checkDraw(got[b], row, 1.5, sampleUniform(5, step, b), `step ${step} row ${b}`);
      }
    }
  },
});

Deno.test({
  name: "sample() split writes out at an offset, the log column, and reads the step buffer",
  ...GPU_TEST,
  fn: async () => {
    const B = 2;
    for (const [V, kernel] of [[20000, undefined], [700, "split"]] as const) {
      const l = logits(B * V, 3, 4, 0, false);
      using t = Tensor.fromArray(gpu, l, [B, V]);
      for (
        const stepT of [
          Tensor.fromArray(gpu, [5], [1], "u32"),
          Tensor.fromArray(gpu, [5], [1], "i32"),
        ]
      ) {
        using s = stepT;
        using out = Tensor.fromArray(gpu, [-1, -1, -1, -1], [4], "i32");
        using log = Tensor.fromArray(gpu, [-1, -1, -1, -1, -1, -1], [2, 3], "i32");
        const opts = { temperature: 1, seed: 9 };
        // column 5 of a 3-column log is column 2 (a ring)
        sample(t, { ...opts, step: s, out, outOffset: 1, log, logColumn: 5, kernel });
        using byNumber = sample(t, { ...opts, step: 5, kernel });
        using greedy = sample(t, { kernel, log, logColumn: 0 });
        const [o, g, n, gr] = await readTensors([out, log, byNumber, greedy]);
        assert.deepEqual([o[0], o[3]], [-1, -1]);
        assert.deepEqual([g[1], g[4]], [-1, -1]);
        assert.deepEqual([g[2], g[5]], [o[1], o[2]]);
        assert.deepEqual([o[1], o[2]], [...n]);
        assert.deepEqual([g[0], g[3]], [...gr]);
        assert.deepEqual([...gr], [...argmaxReference(l, V)]);
        for (let b = 0; b < B; b++) {
          checkDraw(o[1 + b], l.subarray(b * V, (b + 1) * V), 1, sampleUniform(9, 5, b), `V ${V}`);
        }
      }
    }
  },
});

Deno.test({
  name: "sample() split rejects top-k and top-p, naming the kernel",
  ...GPU_TEST,
  fn: () => {
    using t = Tensor.zeros(gpu, [2, 100]);
    assert.throws(() => sample(t, { temperature: 1, topK: 5, kernel: "split" }), {
      name: "RangeError",
      message: /kernel "split" takes greedy or temperature-only sampling, got topK 5/,
    });
    assert.throws(() => sample(t, { temperature: 1, topP: 0.9, kernel: "split" }), /topP 0.9/);
    // greedy with top-k / top-p set is still greedy: allowed
    using ok = sample(t, { topK: 5, topP: 0.9, kernel: "split" });
    assert.equal(ok.size, 2);
  },
});
