import fc from "fast-check";
import assert from "node:assert/strict";
import { readTensors, Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import {
  attention,
  type AttentionKernel,
  attentionReference,
  type AttentionReferenceOptions,
  type AttentionShape,
  EMPTY_ROW_LSE,
} from "../../src/ops/attention.ts";
import {
  assertClose,
  fcParams,
  FLOAT_DTYPES,
  gpu,
  GPU_TEST,
  leftPadMask,
  randomArray,
  randomBits,
  TOL,
  type Tolerance,
} from "../_util.ts";

// Tolerances vs the f64 reference. f16 inputs are rounded to f16 before the reference sees them,
// so only the f16 output rounding (<= 2^-11 relative, |out| <= 1) and f32 math remain.
const OUT_TOL: Record<"f32" | "f16", Tolerance> = TOL; // f32 1e-5 + 1e-4 rel; f16 2e-3 + 1e-2 rel
// lse is f32 in both dtypes; |lse| stays below ~20 here.
const LSE_TOL: Tolerance = { atol: 5e-5, rtol: 1e-5 };
const KERNELS: AttentionKernel[] = ["naive", "flash"];

type Dtype = "f32" | "f16";

/** One attention problem on the CPU (flat arrays), with its options. */
interface Case {
  shape: AttentionShape;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  opts: AttentionReferenceOptions;
}

/** Runs every kernel on a case, checks each against the reference, and returns the GPU results. */
async function checkCase(c: Case, dtype: Dtype, label: string): Promise<void> {
  const { B, Hq, Hkv, T, S, D } = c.shape;
  let { q, k, v } = c;
  if (dtype === "f16") [q, k, v] = [roundToF16(q), roundToF16(k), roundToF16(v)];
  const ref = attentionReference(q, k, v, c.shape, c.opts);
  using tq = Tensor.fromArray(gpu, q, [B, Hq, T, D], dtype);
  using tk = Tensor.fromArray(gpu, k, [B, Hkv, S, D], dtype);
  using tv = Tensor.fromArray(gpu, v, [B, Hkv, S, D], dtype);
  using keyMask = c.opts.keyMask ? Tensor.fromArray(gpu, c.opts.keyMask, [B, S], "i32") : null;
  using farBias = c.opts.farBias ? Tensor.fromArray(gpu, c.opts.farBias, [B, Hkv, S]) : null;
  using farMask = c.opts.farMask ? Tensor.fromArray(gpu, c.opts.farMask, [B, Hkv, S], "i32") : null;
  const results = KERNELS.map((kernel) =>
    attention(tq, tk, tv, {
      scale: c.opts.scale,
      queryOffset: c.opts.queryOffset,
      window: c.opts.window,
      keyMask: keyMask ?? undefined,
      farBias: farBias ?? undefined,
      farMask: farMask ?? undefined,
      returnLse: true,
      kernel,
    })
  );
  const arrays = await readTensors(results.flatMap((r) => [r.out, r.lse]));
  results.forEach((r) => (r.out.dispose(), r.lse.dispose()));
  const desc = `${label} ${dtype} ${JSON.stringify(c.shape)} W=${c.opts.window} ` +
    `qoff=${c.opts.queryOffset} scale=${c.opts.scale}`;
  // f32 scores carry an absolute error of ~|s|·2^-23 with |s| <= scale·D (|q|, |k| <= 1); with
  // large scales that moves the (sharp) softmax weights, so the tolerance grows with it.
  const slack = 2.4e-7 * (c.opts.scale ?? 1 / Math.sqrt(D)) * D;
  const outTol = { ...OUT_TOL[dtype], atol: OUT_TOL[dtype].atol + slack };
  const lseTol = { ...LSE_TOL, atol: LSE_TOL.atol + slack };
  KERNELS.forEach((kernel, i) => {
    assertClose(arrays[2 * i], ref.out, outTol, `${kernel} out, ${desc}`);
    assertClose(arrays[2 * i + 1], ref.lse, lseTol, `${kernel} lse, ${desc}`);
  });
  // The readable kernel and the fast one agree with each other, too (each within outTol).
  const pairTol = { ...outTol, atol: 2 * outTol.atol };
  assertClose(arrays[2], arrays[0], pairTol, `flash vs naive out, ${desc}`);
}

const caseArb = fc.record({
  B: fc.integer({ min: 1, max: 2 }),
  Hkv: fc.integer({ min: 1, max: 3 }),
  G: fc.integer({ min: 1, max: 3 }),
  T: fc.integer({ min: 1, max: 24 }),
  // S = T + extra; the long ones span several flash key tiles (BK <= 64).
  extra: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 60, max: 140 })),
  D: fc.constantFrom(3, 8, 16, 64, 128),
  window: fc.oneof( // W = 0, small, around S, and W >= S
    fc.constant(0),
    fc.integer({ min: 0, max: 8 }),
    fc.integer({ min: 20, max: 99 }),
    fc.constant(1000),
  ),
  far: fc.constantFrom("none", "bias", "mask", "both"),
  pads: fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 2, maxLength: 2 }),
  padded: fc.boolean(),
  qoff: fc.option(fc.integer({ min: -3, max: 160 }), { nil: undefined }),
  // Large scales spread the scores by hundreds: online-softmax rescaling must not overflow.
  scale: fc.option(
    fc.oneof(
      fc.double({ min: 0.05, max: 2, noNaN: true }),
      fc.double({ min: 5, max: 30, noNaN: true }),
    ),
    { nil: undefined },
  ),
  seed: fc.integer(),
});

type CaseArgs = typeof caseArb extends fc.Arbitrary<infer U> ? U : never;

function makeCase(a: CaseArgs): Case {
  const { B, Hkv, G, T, extra, D, window, far, pads, padded, qoff, scale, seed } = a;
  const S = T + extra, Hq = Hkv * G;
  // farBias: logsigmoid-like values in [-6, 0], about 1 in 10 the masked sentinel.
  const sentinel = randomBits(B * Hkv * S, seed + 7, 0.1);
  const farBias = Float32Array.from(
    randomArray(B * Hkv * S, seed + 3, -6, 0),
    (x, i) => (sentinel[i] ? EMPTY_ROW_LSE : x),
  );
  return {
    shape: { B, Hq, Hkv, T, S, D },
    q: randomArray(B * Hq * T * D, seed),
    k: randomArray(B * Hkv * S * D, seed + 1),
    v: randomArray(B * Hkv * S * D, seed + 2),
    opts: {
      scale,
      queryOffset: qoff,
      window,
      keyMask: padded ? leftPadMask(S, pads.slice(0, B)) : undefined,
      farBias: far === "bias" || far === "both" ? farBias : undefined,
      farMask: far === "mask" || far === "both" ? randomBits(B * Hkv * S, seed + 4) : undefined,
    },
  };
}

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `attention() naive and flash kernels (${dtype}) match the f64 reference over shapes, ` +
      `windows, far bias/mask and padding`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(caseArb, async (a) => {
          await checkCase(makeCase(a), dtype, "property");
        }),
        fcParams(30),
      );
    },
  });
}

Deno.test({
  name: "attention() handles D=256 and row/key counts far from the tile sizes",
  ...GPU_TEST,
  fn: async () => {
    for (const dtype of FLOAT_DTYPES) {
      const B = 1, Hkv = 2, G = 3, T = 21, S = 45, D = 256;
      const c: Case = {
        shape: { B, Hq: Hkv * G, Hkv, T, S, D },
        q: randomArray(B * Hkv * G * T * D, 11),
        k: randomArray(B * Hkv * S * D, 12),
        v: randomArray(B * Hkv * S * D, 13),
        opts: {
          window: 5,
          farMask: randomBits(B * Hkv * S, 14),
          farBias: randomArray(B * Hkv * S, 15, -4, 0),
        },
      };
      await checkCase(c, dtype, "D=256");
    }
  },
});

Deno.test({
  name: "attention() keeps a marked key visible at distance exactly W and drops it at W + 1",
  ...GPU_TEST,
  fn: async () => {
    // q = 0: every visible key gets weight 1/n. v[i] = [1 if i is the marked key, i, 0, ...].
    const S = 12, D = 4, T = 1, qpos = S - 1;
    for (const W of [0, 1, 3, 7]) {
      for (const dist of [W, W + 1]) {
        const marked = qpos - dist;
        const v = new Float32Array(S * D);
        for (let i = 0; i < S; i++) [v[i * D], v[i * D + 1]] = [i === marked ? 1 : 0, i];
        const mask = Int32Array.from({ length: S }, (_, i) => (i === marked ? 1 : 0));
        const sentinel = Float32Array.from(mask, (m) => (m ? EMPTY_ROW_LSE : 0));
        // Expected: all S keys visible when dist <= W, else S - 1 (the marked one gone).
        const weight = dist <= W ? 1 / S : 0;
        const shape = { B: 1, Hq: 1, Hkv: 1, T, S, D };
        const q = new Float32Array(D), k = randomArray(S * D, W);
        for (const opts of [{ window: W, farMask: mask }, { window: W, farBias: sentinel }]) {
          const ref = attentionReference(q, k, v, shape, opts);
          assert.ok(Math.abs(ref.out[0] - weight) < 1e-12, `reference W=${W} dist=${dist}`);
          for (const dtype of FLOAT_DTYPES) {
            using tq = Tensor.fromArray(gpu, q, [1, 1, T, D], dtype);
            using tk = Tensor.fromArray(gpu, k, [1, 1, S, D], dtype);
            using tv = Tensor.fromArray(gpu, v, [1, 1, S, D], dtype);
            using m = Tensor.fromArray(gpu, mask, [1, 1, S], "i32");
            using fb = Tensor.fromArray(gpu, sentinel, [1, 1, S]);
            for (const kernel of KERNELS) {
              using out = "farMask" in opts
                ? attention(tq, tk, tv, { window: W, farMask: m, kernel })
                : attention(tq, tk, tv, { window: W, farBias: fb, kernel });
              const o = await out.toArray();
              const what = `${kernel} ${dtype} W=${W} dist=${dist} ${Object.keys(opts)[1]}`;
              if (weight === 0) assert.equal(o[0], 0, what);
              else assert.ok(Math.abs(o[0] - weight) < 1e-3, `${what}: ${o[0]} vs ${weight}`);
            }
          }
        }
      }
    }
  },
});

Deno.test({
  name: "attentionReference() matches hand-computed values for the SPEC §3 training mask",
  fn: () => {
    // q = k = 0: scores are 0 before the bias. W = 0, query 2 (T = S = 3, D = 1):
    // key 0 (distance 2 > W) gets log 0.5, key 1 (distance 1 > W) gets log 0.25, key 2 nothing.
    const v = [10, 20, 40];
    const farBias = [Math.log(0.5), Math.log(0.25), 0];
    const shape = { B: 1, Hq: 1, Hkv: 1, T: 3, S: 3, D: 1 };
    const { out, lse } = attentionReference([0, 0, 0], [0, 0, 0], v, shape, { window: 0, farBias });
    assert.ok(Math.abs(out[0] - 10) < 1e-12); // query 0 sees key 0 only
    assert.ok(Math.abs(out[1] - (0.5 * 10 + 20) / 1.5) < 1e-12); // key 0 at distance 1 > 0
    assert.ok(Math.abs(out[2] - (0.5 * 10 + 0.25 * 20 + 40) / 1.75) < 1e-12);
    assert.ok(Math.abs(lse[2] - Math.log(1.75)) < 1e-12);
    // W = 1: key 1 is now inside the window for query 2.
    const w1 = attentionReference([0, 0, 0], [0, 0, 0], v, shape, { window: 1, farBias });
    assert.ok(Math.abs(w1.out[2] - (0.5 * 10 + 20 + 40) / 2.5) < 1e-12);
    // Scale and causality: one query at position 1 over keys [0, 1], q = 1, k = [0, 1].
    const one = attentionReference([1], [0, 1], [10, 20], { ...shape, T: 1, S: 2 }, { scale: 2 });
    const e2 = Math.exp(2);
    assert.ok(Math.abs(one.out[0] - (10 + 20 * e2) / (1 + e2)) < 1e-12);
  },
});

Deno.test({
  name: "attention() outputs zeros and the empty lse for rows without visible keys",
  ...GPU_TEST,
  fn: async () => {
    // B = 2: batch 1 is padding only; queryOffset -2 puts queries 0, 1 before every key;
    // W = 0 with every key marked and the diagonal key of batch 0 at t = 4 padded out.
    const B = 2, Hkv = 1, G = 2, T = 6, S = 6, D = 8;
    const keyMask = Int32Array.from({ length: B * S }, (_, i) => (i >= S || i === 2 ? 0 : 1));
    const farMask = new Int32Array(B * Hkv * S).fill(1);
    const c: Case = {
      shape: { B, Hq: Hkv * G, Hkv, T, S, D },
      q: randomArray(B * Hkv * G * T * D, 1),
      k: randomArray(B * Hkv * S * D, 2),
      v: randomArray(B * Hkv * S * D, 3),
      opts: { queryOffset: -2, window: 0, keyMask, farMask },
    };
    const ref = attentionReference(c.q, c.k, c.v, c.shape, c.opts);
    // Rows that see nothing: t = 0, 1 (before key 0), t = 4 (key 2 is padding), all of batch 1.
    const empty = (b: number, t: number) => b === 1 || t < 2 || t === 4;
    for (let row = 0; row < B * G * T; row++) {
      const t = row % T, b = Math.floor(row / (G * T));
      assert.equal(ref.lse[row] === EMPTY_ROW_LSE, empty(b, t), `reference row ${row}`);
    }
    for (const dtype of FLOAT_DTYPES) {
      await checkCase(c, dtype, "empty rows");
      using tq = Tensor.fromArray(gpu, c.q, [B, G, T, D], dtype);
      using tk = Tensor.fromArray(gpu, c.k, [B, Hkv, S, D], dtype);
      using tv = Tensor.fromArray(gpu, c.v, [B, Hkv, S, D], dtype);
      using km = Tensor.fromArray(gpu, keyMask, [B, S], "i32");
      using fm = Tensor.fromArray(gpu, farMask, [B, Hkv, S], "i32");
      for (const kernel of KERNELS) {
        const r = attention(tq, tk, tv, {
          queryOffset: -2,
          window: 0,
          keyMask: km,
          farMask: fm,
          returnLse: true,
          kernel,
        });
        const [out, lse] = await readTensors([r.out, r.lse]);
        r.out.dispose(), r.lse.dispose();
        for (let row = 0; row < B * G * T; row++) {
          const t = row % T, b = Math.floor(row / (G * T));
          if (!empty(b, t)) continue;
          assert.equal(lse[row], EMPTY_ROW_LSE, `${kernel} ${dtype} lse row ${row}`);
          for (let d = 0; d < D; d++) assert.equal(out[row * D + d], 0, `${kernel} row ${row}`);
        }
      }
    }
    // No keys at all (S = 0) and no queries (T = 0).
    using q0 = Tensor.fromArray(gpu, randomArray(2 * 3 * 4, 1), [1, 2, 3, 4]);
    using k0 = Tensor.zeros(gpu, [1, 1, 0, 4]);
    using o0 = attention(q0, k0, k0);
    assert.deepEqual([...await o0.toArray()], new Array(24).fill(0));
    using q1 = Tensor.zeros(gpu, [1, 2, 0, 4]);
    using k1 = Tensor.zeros(gpu, [1, 1, 5, 4]);
    using o1 = attention(q1, k1, k1);
    assert.deepEqual(o1.shape, [1, 2, 0, 4]);
  },
});

// ---------------------------------------------------------------------------------------------
// Bad input

Deno.test({
  name: "attention() rejects mismatched shapes and dtypes, naming the value and shapes",
  ...GPU_TEST,
  fn: () => {
    using q = Tensor.zeros(gpu, [1, 6, 3, 8]);
    using k = Tensor.zeros(gpu, [1, 4, 5, 8]);
    using k2 = Tensor.zeros(gpu, [1, 2, 5, 8]);
    using kd = Tensor.zeros(gpu, [1, 2, 5, 16]);
    using fb = Tensor.zeros(gpu, [1, 5]);
    using fm = Tensor.zeros(gpu, [1, 2, 5], "i32");
    using fmBad = Tensor.zeros(gpu, [1, 2, 5]);
    using km = Tensor.zeros(gpu, [1, 4], "i32");
    using q3 = Tensor.zeros(gpu, [6, 3, 8]);
    using qBig = Tensor.zeros(gpu, [1, 2, 1, 300]);
    using kBig = Tensor.zeros(gpu, [1, 2, 1, 300]);
    assert.throws(
      () => attention(q, k, k),
      (e: Error) =>
        e instanceof RangeError && /Hq=6/.test(e.message) && /Hkv=4/.test(e.message) &&
        /\[1, 6, 3, 8\]/.test(e.message) && /\[1, 4, 5, 8\]/.test(e.message),
    );
    assert.throws(
      () => attention(q, kd, kd),
      (e: Error) =>
        e instanceof RangeError && /head dim D/.test(e.message) &&
        /\[1, 2, 5, 16\]/.test(e.message),
    );
    assert.throws(() => attention(q, k2, kd), /k \[1, 2, 5, 8\] and v \[1, 2, 5, 16\]/);
    assert.throws(
      () => attention(q, k2, k2, { window: 2, farBias: fb }),
      (e: Error) =>
        e instanceof RangeError && /farBias/.test(e.message) && /\[1, 2, 5\]/.test(e.message) &&
        /got \[1, 5\]/.test(e.message),
    );
    assert.throws(() => attention(q, k2, k2, { window: 2, farMask: fmBad }), TypeError);
    assert.throws(() => attention(q, k2, k2, { farMask: fm }), /need opts.window/);
    assert.throws(() => attention(q, k2, k2, { window: -1, farMask: fm }), RangeError);
    assert.throws(() => attention(q, k2, k2, { window: 1.5, farMask: fm }), RangeError);
    assert.throws(() => attention(q, k2, k2, { keyMask: km }), /keyMask.*\[1, 5\].*got \[1, 4\]/);
    assert.throws(() => attention(q, k2, k2, { queryOffset: 0.5 }), RangeError);
    assert.throws(() => attention(q3, k2, k2), /q \[B, Hq, T, D\].*rank 4.*\[6, 3, 8\]/);
    assert.throws(() => attention(qBig, kBig, kBig), /D=300/);
    using kmv = km.reshape([1, 1, 1, 4]);
    assert.throws(() => attention(kmv, k2, k2), TypeError);
    if (gpu.hasF16) {
      using kh = Tensor.zeros(gpu, [1, 2, 5, 8], "f16");
      assert.throws(() => attention(q, kh, kh), TypeError);
    }
    assert.throws(
      () => attentionReference([0], [0], [0], { B: 1, Hq: 3, Hkv: 2, T: 1, S: 1, D: 1 }),
      RangeError,
    );
  },
});
