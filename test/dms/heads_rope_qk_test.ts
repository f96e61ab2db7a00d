import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { headsNormRope } from "../../src/ops/heads_rope.ts";
import {
  headsNormRopeQK,
  headsNormRopeQKReference,
  headsRopeQKBuffers,
  headsRopeQKFused,
  type HeadsRopeQKOptions,
} from "../../src/dms/heads_rope_qk.ts";
import { ropeInvFreq } from "../../src/ops/rope.ts";
import { inferDecisions } from "../../src/dms/decisions.ts";
import {
  assertClose,
  fcParams,
  FLOAT_DTYPES,
  gpu,
  GPU_TEST,
  randomArray,
  TOL,
  type Tolerance,
} from "../_util.ts";

// Tolerances.
// - Against the three dispatches it replaces (headsNormRope on q, on k, inferDecisions): the
//   same WGSL functions on the same values, so everything is bit-exact (atol 0), decisions
//   included.
// - Against the CPU twin (f64 norm and cos/sin, the normed row rounded to f16 for f16): q, k,
//   raw within TOL[dtype] (inputs in [-1, 1], gains in [0.5, 1.5]: outputs O(1)). alpha is
//   scale·raw, so it is checked within scale·TOL of the twin; a decision must equal the
//   twin's wherever the twin's |alpha| exceeds that bound (near 0 a last-bit difference of raw
//   may flip it; the exact agreement that matters is the one with inferDecisions above).

const EXACT: Tolerance = { atol: 0 };

interface Case {
  B: number;
  T: number;
  hkv: number;
  G: number;
  D: number;
  qNorm: boolean;
  kNorm: boolean;
  neuron: boolean;
  decide?: { alphaScale: number; alphaOffset: number };
  batched: boolean;
  maxPos: number;
  seed: number;
}

async function runCase(dtype: "f32" | "f16", c: Case): Promise<void> {
  const { B, T, hkv, G, D, seed } = c;
  const Hq = hkv * G;
  const qShape = [B, T, Hq, D], kShape = [B, T, hkv, D];
  const r16 = (a: Float32Array) => dtype === "f16" ? roundToF16(a) : a;
  const q = r16(randomArray(B * T * Hq * D, seed));
  const k = r16(randomArray(B * T * hkv * D, seed + 1));
  const gq = r16(randomArray(D, seed + 2, 0.5, 1.5));
  const gk = r16(randomArray(D, seed + 3, 0.5, 1.5));
  const pos = Int32Array.from(
    randomArray(c.batched ? B * T : T, seed + 4, 0, c.maxPos + 1),
    Math.floor,
  );
  const inv = ropeInvFreq(D, 1e6);
  const [epsQ, epsK] = [1e-6, 1e-5];
  using tq = Tensor.fromArray(gpu, q, qShape, dtype);
  using tk = Tensor.fromArray(gpu, k, kShape, dtype);
  using tgq = Tensor.fromArray(gpu, gq, [D], dtype);
  using tgk = Tensor.fromArray(gpu, gk, [D], dtype);
  using tp = Tensor.fromArray(gpu, pos, c.batched ? [B, T] : [T], "i32");
  using ti = Tensor.fromArray(gpu, inv, [D / 2]);
  const opts: HeadsRopeQKOptions = {
    qNorm: c.qNorm ? { weight: tgq, eps: epsQ } : undefined,
    kNorm: c.kNorm ? { weight: tgk, eps: epsK } : undefined,
    neuron: c.neuron,
    decide: c.decide,
  };
  const label = `${dtype} ${JSON.stringify(c)}`;

  const r = headsNormRopeQK(tq, tk, tp, ti, opts);
  using oq = r.q, ok = r.k;
  using raw = r.raw, alpha = r.alpha, dec = r.decisions;
  assert.deepEqual([oq.shape, oq.dtype], [[B, Hq, T, D], dtype]);
  assert.deepEqual([ok.shape, ok.dtype], [[B, hkv, T, D], dtype]);
  assert.equal(raw === undefined, !c.neuron, "raw iff neuron");
  assert.equal(alpha === undefined, !c.decide, "alpha iff decide");
  if (raw) assert.deepEqual([raw.shape, raw.dtype], [[B, T, hkv], "f32"]);
  if (alpha) assert.deepEqual([alpha.shape, alpha.dtype], [[B, hkv, T], "f32"]);
  if (dec) assert.deepEqual([dec.shape, dec.dtype], [[B, hkv, T], "i32"]);
  const got = {
    q: await oq.toArray(),
    k: await ok.toArray(),
    raw: raw && await raw.toArray(),
    alpha: alpha && await alpha.toArray(),
    decisions: dec && await dec.toArray(),
  };

  // (a) the three dispatches it replaces: bit-exact
  const sq = headsNormRope(tq, tp, ti, {
    norm: opts.qNorm,
    neuron: c.neuron ? { kvHeads: hkv } : undefined,
  });
  const sk = headsNormRope(tk, tp, ti, { norm: opts.kNorm });
  using sqOut = sq.out, sqRaw = sq.raw, skOut = sk.out;
  const sd = c.decide ? inferDecisions(sqRaw!, c.decide) : undefined;
  using _a = sd?.alpha, _d = sd?.decisions;
  assertClose(got.q, await sqOut.toArray(), EXACT, `q vs headsNormRope, ${label}`);
  assertClose(got.k, await skOut.toArray(), EXACT, `k vs headsNormRope, ${label}`);
  if (got.raw) assertClose(got.raw, await sqRaw!.toArray(), EXACT, `raw vs split, ${label}`);
  if (sd) {
    assertClose(got.alpha!, await sd.alpha.toArray(), EXACT, `alpha vs inferDecisions, ${label}`);
    assert.deepEqual(got.decisions, await sd.decisions.toArray(), `decisions, ${label}`);
  }

  // (b) the CPU twin
  const ref = headsNormRopeQKReference(q, qShape, k, kShape, pos, inv, {
    qNorm: c.qNorm ? { weight: gq, eps: epsQ } : undefined,
    kNorm: c.kNorm ? { weight: gk, eps: epsK } : undefined,
    neuron: c.neuron,
    decide: c.decide,
    dtype,
  });
  assertClose(got.q, ref.q, TOL[dtype], `q vs reference, ${label}`);
  assertClose(got.k, ref.k, TOL[dtype], `k vs reference, ${label}`);
  if (got.raw) assertClose(got.raw, ref.raw!, TOL[dtype], `raw vs reference, ${label}`);
  if (c.decide) {
    const s = Math.abs(c.decide.alphaScale);
    const tol = { atol: s * TOL[dtype].atol, rtol: TOL[dtype].rtol ?? 0 };
    assertClose(got.alpha!, ref.alpha!, tol, `alpha vs reference, ${label}`);
    ref.alpha!.forEach((a, i) => {
      const bound = tol.atol + tol.rtol * Math.abs(a);
      if (Math.abs(a) > bound) {
        assert.equal(got.decisions![i], ref.decisions![i], `decision ${i} (alpha ${a}), ${label}`);
      }
    });
  }
}

const decideArb = fc.option(
  fc.constantFrom(
    { alphaScale: 100, alphaOffset: 5 },
    { alphaScale: 1, alphaOffset: 0 },
    { alphaScale: 10, alphaOffset: -0.5 },
  ),
  { nil: undefined },
);

const caseArb: fc.Arbitrary<Case> = fc.record({
  B: fc.integer({ min: 1, max: 2 }),
  T: fc.integer({ min: 1, max: 5 }),
  hkv: fc.integer({ min: 1, max: 4 }),
  G: fc.integer({ min: 1, max: 4 }),
  D: fc.constantFrom(8, 16, 64, 128),
  norm: fc.constantFrom("both", "none", "both", "none", "q", "k"),
  neuron: fc.boolean(),
  decide: decideArb,
  batched: fc.boolean(),
  maxPos: fc.constantFrom(16, 40000),
  seed: fc.integer(),
}).map(({ norm, neuron, decide, ...rest }) => ({
  ...rest,
  qNorm: norm === "both" || norm === "q",
  kNorm: norm === "both" || norm === "k",
  neuron: neuron || decide !== undefined,
  decide,
}));

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name:
      `headsNormRopeQK() (${dtype}) equals two headsNormRope calls + inferDecisions and its CPU twin`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(fc.asyncProperty(caseArb, (c) => runCase(dtype, c)), fcParams(40));
    },
  });

  Deno.test({
    name: `headsNormRopeQK() (${dtype}) covers every fused variant at decode and Qwen3 sizes`,
    ...GPU_TEST,
    fn: async () => {
      // every variant binds at most 11 storage buffers: all run fused here
      assert.ok(gpu.limits.maxStorageBuffersPerShaderStage >= 11, "device limit");
      for (const norm of [false, true]) {
        for (const [neuron, decide] of [[false, false], [true, false], [true, true]]) {
          const base = {
            B: 2,
            hkv: 2,
            G: 4,
            D: 128,
            qNorm: norm,
            kNorm: norm,
            neuron,
            decide: decide ? { alphaScale: 100, alphaOffset: 5 } : undefined,
            batched: true,
            seed: 7,
          };
          await runCase(dtype, { ...base, T: 1, maxPos: 40000 });
          await runCase(dtype, { ...base, T: 5, maxPos: 16 });
        }
      }
    },
  });
}

Deno.test({
  name: "headsNormRopeQK() decides exactly as inferDecisions at the threshold (alpha = 0, ±1 ulp)",
  ...GPU_TEST,
  fn: async () => {
    // No norm: raw is the input's channel D−1 of heads g·G. Offsets put scale·raw − offset at
    // 0 and one f32 ulp either side; 1[alpha > 0] is strict, so alpha = 0 keeps the key.
    const [B, T, hkv, G, D] = [1, 4, 3, 1, 8];
    const scale = 100;
    const nudge = (v: number, d: number) => {
      const f = new Float32Array([v]), u = new Int32Array(f.buffer);
      u[0] += d;
      return f[0];
    };
    const q = new Float32Array(B * T * hkv * G * D);
    const vals: number[] = [];
    for (let i = 0; i < T * hkv; i++) {
      const v = Math.fround(0.05 + 0.001 * i);
      vals.push(v);
      q[i * D + D - 1] = v;
    }
    const base = Math.fround(Math.fround(vals[0] * scale));
    using tq = Tensor.fromArray(gpu, q, [B, T, hkv * G, D]);
    using tk = Tensor.zeros(gpu, [B, T, hkv, D], "f32");
    using tp = Tensor.fromArray(gpu, [0, 1, 2, 3], [T], "i32");
    using ti = Tensor.fromArray(gpu, ropeInvFreq(D, 1e6), [D / 2]);
    for (const alphaOffset of [base, nudge(base, 1), nudge(base, -1), 5]) {
      const decide = { alphaScale: scale, alphaOffset };
      const r = headsNormRopeQK(tq, tk, tp, ti, { neuron: true, decide });
      using _q = r.q, _k = r.k, raw = r.raw!, alpha = r.alpha!, dec = r.decisions!;
      using s = inferDecisions(raw, decide).decisions;
      const got = await dec.toArray();
      assert.deepEqual(got, await s.toArray(), `offset ${alphaOffset}`);
      const a0 = (await alpha.toArray())[0];
      assert.equal(got[0], a0 > 0 ? 1 : 0, `decision follows alpha ${a0}`);
      if (alphaOffset === base) assert.deepEqual([a0, got[0]], [0, 0], "alpha = 0 keeps");
    }
  },
});

Deno.test({
  name: "headsNormRopeQK() counts its storage buffers against the device limit",
  fn: () => {
    const w = {} as Tensor;
    const n = { weight: w, eps: 0 };
    assert.equal(headsRopeQKBuffers({}), 6);
    assert.equal(headsRopeQKBuffers({ qNorm: n, kNorm: n }), 8);
    assert.equal(headsRopeQKBuffers({ qNorm: n, kNorm: n, neuron: true }), 9);
    const all = { qNorm: n, kNorm: n, neuron: true, decide: { alphaScale: 1, alphaOffset: 0 } };
    assert.equal(headsRopeQKBuffers(all), 11);
    assert.equal(headsRopeQKFused({ maxStorageBuffersPerShaderStage: 11 }, all), true);
    assert.equal(headsRopeQKFused({ maxStorageBuffersPerShaderStage: 10 }, all), false);
    assert.equal(headsRopeQKFused({ maxStorageBuffersPerShaderStage: 8 }, { neuron: true }), true);
    assert.equal(headsRopeQKFused({ maxStorageBuffersPerShaderStage: 32 }, { qNorm: n }), false);
  },
});

Deno.test({
  name: "headsNormRopeQK() names the argument and the shapes in its errors",
  ...GPU_TEST,
  fn: () => {
    using q = Tensor.zeros(gpu, [1, 2, 4, 8], "f32");
    using k = Tensor.zeros(gpu, [1, 2, 2, 8], "f32");
    using pos = Tensor.zeros(gpu, [1, 2], "i32");
    using inv = Tensor.zeros(gpu, [4], "f32");
    using w = Tensor.zeros(gpu, [8], "f32");
    using w4 = Tensor.zeros(gpu, [4], "f32");
    using ki = Tensor.zeros(gpu, [1, 2, 2, 8], "i32");
    using k16 = Tensor.zeros(gpu, [1, 2, 2, 8], gpu.hasF16 ? "f16" : "i32");
    using k3 = Tensor.zeros(gpu, [1, 2, 3, 8], "f32");
    using kT = Tensor.zeros(gpu, [1, 3, 2, 8], "f32");
    using kD = Tensor.zeros(gpu, [1, 2, 2, 16], "f32");
    using kOdd = Tensor.zeros(gpu, [1, 2, 2, 7], "f32");
    using pos3 = Tensor.zeros(gpu, [3], "i32");
    const d = { alphaScale: 100, alphaOffset: 5 };
    const cases: [() => unknown, ErrorConstructor, RegExp][] = [
      [() => headsNormRopeQK(q, ki, pos, inv), TypeError, /\) k: expected an f32 or f16 tensor/],
      [() => headsNormRopeQK(q, k16, pos, inv), TypeError, /\) k: expected q's dtype f32/],
      [
        () => headsNormRopeQK(q, kOdd, pos, inv),
        RangeError,
        /\) k: head dimension D must be even.*got k \[1, 2, 2, 7\]/,
      ],
      [
        () => headsNormRopeQK(q, kT, pos, inv),
        RangeError,
        /positions: expected shape \[1, 3\] or \[3\] for k \[1, 3, 2, 8\]/,
      ],
      [
        () => headsNormRopeQK(q, kD, pos, inv),
        RangeError,
        /invFreq: expected shape \[8\] for k \[1, 2, 2, 16\], got \[4\]/,
      ],
      [
        () => headsNormRopeQK(q, k, pos3, inv),
        RangeError,
        /positions: expected shape \[1, 2\] or \[2\] for q \[1, 2, 4, 8\].*got \[3\]/,
      ],
      [
        () => headsNormRopeQK(q, k, pos, inv, { kNorm: { weight: w4, eps: 1e-6 } }),
        RangeError,
        /kNorm\.weight: expected shape \[8\] to match k \[1, 2, 2, 8\], got \[4\]/,
      ],
      [
        () => headsNormRopeQK(q, k, pos, inv, { qNorm: { weight: w, eps: NaN } }),
        RangeError,
        /qNorm\.eps: expected a finite number/,
      ],
      [
        () => headsNormRopeQK(q, k3, pos, inv, { neuron: true }),
        RangeError,
        /neuron: the KV heads of k \[1, 2, 3, 8\] must divide the heads of q \[1, 2, 4, 8\]/,
      ],
      [() => headsNormRopeQK(q, k, pos, inv, { decide: d }), RangeError, /decide: needs neuron/],
      [
        () =>
          headsNormRopeQK(q, k, pos, inv, {
            neuron: true,
            decide: { alphaScale: Infinity, alphaOffset: 5 },
          }),
        RangeError,
        /decide: expected finite alphaScale and alphaOffset, got Infinity, 5/,
      ],
    ];
    if (!gpu.hasF16) cases.splice(1, 1);
    for (const [f, type, re] of cases) {
      assert.throws(f, (e: Error) => e instanceof type && re.test(e.message), String(re));
    }
  },
});
