/**
 * The 16-byte-load GEMV (src/ops/gemv.ts) against its f64 CPU reference, and its input checks;
 * every entry of shaders/gemv.wgsl at every LANES against the CPU twins.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  dispatchGemv16,
  gemv,
  GEMV_LANES,
  type GemvLanes,
  gemvLanes,
  gemvReference,
  rmsNormRowsReference,
} from "../../src/ops/gemv.ts";
import { linearSwigluReference } from "../../src/ops/linear_swiglu.ts";
import { linearQkvReference } from "../../src/ops/linear_qkv.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, randomArray } from "../_util.ts";

const EPS = 1e-6;

/** f32 accumulation over K terms of products in [-1, 1]: error grows like sqrt(K). */
const tol = (dtype: "f32" | "f16", K: number) => ({
  atol: (dtype === "f32" ? 2e-6 : 2e-3) * Math.sqrt(K),
  rtol: dtype === "f32" ? 1e-5 : 4e-3,
});

Deno.test({
  name: "gemv() equals x·wᵀ in f64 for M 1..8, K words 1..80, N not a multiple of 4 (f32/f16)",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...FLOAT_DTYPES),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 80 }),
        fc.integer({ min: 1, max: 70 }),
        fc.integer({ min: 0, max: 1 << 30 }),
        async (dtype, M, words, N, seed) => {
          const K = words * (dtype === "f16" ? 8 : 4);
          let x = randomArray(M * K, seed), w = randomArray(N * K, seed + 1);
          if (dtype === "f16") [x, w] = [roundToF16(x), roundToF16(w)];
          using tx = Tensor.fromArray(gpu, x, [M, K], dtype);
          using tw = Tensor.fromArray(gpu, w, [N, K], dtype);
          using y = gemv(tx, tw);
          let want: ArrayLike<number> = gemvReference(x, w, M, K, N);
          if (dtype === "f16") want = roundToF16(Float32Array.from(want));
          assertClose(await y.toArray(), want, tol(dtype, K), `gemv ${dtype} ${M}x${K}x${N}`);
        },
      ),
      fcParams(24),
    );
  },
});

Deno.test({
  name: "gemv() rejects mismatched shapes, K not a whole number of words, M > 8 and mixed dtypes",
  ...GPU_TEST,
  fn: () => {
    using x = Tensor.fromArray(gpu, new Float32Array(8), [1, 8]);
    using w = Tensor.fromArray(gpu, new Float32Array(12), [3, 4]);
    assert.throws(() => gemv(x, w), /gemv: expected x:\[M, K\] and w:\[N, K\]/);
    using x6 = Tensor.fromArray(gpu, new Float32Array(6), [1, 6]);
    using w6 = Tensor.fromArray(gpu, new Float32Array(12), [2, 6]);
    assert.throws(() => gemv(x6, w6), /multiple of 4/);
    using x9 = Tensor.fromArray(gpu, new Float32Array(36), [9, 4]);
    using w4 = Tensor.fromArray(gpu, new Float32Array(8), [2, 4]);
    assert.throws(() => gemv(x9, w4), /M <= 8/);
    if (gpu.hasF16) {
      using h = Tensor.fromArray(gpu, new Float32Array(8), [2, 4], "f16");
      using x1 = Tensor.fromArray(gpu, new Float32Array(4), [1, 4]);
      assert.throws(() => gemv(x1, h), TypeError);
    }
  },
});

/** The entries of shaders/gemv.wgsl, as the LANES test drives them. */
type Entry = "gemv16" | "gemv16_swiglu" | "gemv16_qkv";

interface LanesCase {
  lanes: GemvLanes;
  entry: Entry;
  dtype: "f32" | "f16";
  M: number;
  /** 16-byte words per row of x. */
  words: number;
  /** Rows of w (gate/up; wq), and of wk, wv for QKV. */
  N: number;
  N2: number;
  N3: number;
  norm: boolean;
  /** Biases (every entry) and, for gemv16, the residual. */
  extras: boolean;
  seed: number;
}

/**
 * Runs one entry at a forced LANES through dispatchGemv16 and checks every output against the
 * CPU twins (gemvReference, linearSwigluReference, linearQkvReference, on rmsNormRowsReference
 * of x with the norm). Tolerances: f32 accumulation order, and in f16 the roundings of the
 * output and (with the norm) of every normed x to f16, which the f64 twins do not do; as in
 * linear_norm_test.ts and linear_swiglu_test.ts (SwiGLU's products grow like K).
 */
async function checkLanes(c: LanesCase): Promise<void> {
  const { lanes, entry, dtype, M, N, seed } = c;
  const K = c.words * (dtype === "f16" ? 8 : 4);
  const N2 = entry === "gemv16_qkv" ? c.N2 : 0, N3 = entry === "gemv16_qkv" ? c.N3 : 0;
  const rnd = (n: number, s: number) => {
    const d = randomArray(n, seed + s);
    return dtype === "f16" ? roundToF16(d) : d;
  };
  const x = rnd(M * K, 0), gain = rnd(K, 1), w = rnd(N * K, 2), w2 = rnd(N2 * K || N * K, 3);
  const w3 = rnd(N3 * K, 4), b = rnd(N, 5), b2 = rnd(N2 || N, 6), b3 = rnd(N3, 7);
  const res = rnd(M * N, 8);
  // gemv16_qkv_bias binds 11 storage buffers: without them the biases are left out
  const extras = c.extras &&
    (entry !== "gemv16_qkv" || gpu.limits.maxStorageBuffersPerShaderStage >= 11);
  const t = (d: Float32Array, shape: number[]) => Tensor.fromArray(gpu, d, shape, dtype);
  using tx = t(x, [M, K]);
  using tg = t(gain, [K]);
  using tw = t(w, [N, K]);
  using tw2 = t(w2, [w2.length / K, K]);
  using tw3 = t(w3.length ? w3 : new Float32Array(K), [Math.max(1, N3), K]);
  using tb = t(b, [N]);
  using tb2 = t(b2, [b2.length]);
  using tb3 = t(b3.length ? b3 : new Float32Array(1), [Math.max(1, N3)]);
  using tr = t(res, [M, N]);
  using y = Tensor.zeros(gpu, [M, N], dtype);
  using y2 = Tensor.zeros(gpu, [M, Math.max(1, N2)], dtype);
  using y3 = Tensor.zeros(gpu, [M, Math.max(1, N3)], dtype);
  const qkvBias = entry === "gemv16_qkv" && extras;
  dispatchGemv16(gpu, {
    entry: qkvBias ? "gemv16_qkv_bias" : entry,
    dtype,
    M,
    N,
    N2,
    N3,
    K,
    lanes,
    x: tx.buffer,
    offX: 0,
    norm: c.norm ? { gain: tg.buffer, eps: EPS } : undefined,
    w: tw.buffer,
    w2: entry === "gemv16" ? undefined : tw2.buffer,
    w3: entry === "gemv16_qkv" ? tw3.buffer : undefined,
    bias: extras ? tb.buffer : undefined,
    bias2: extras && entry !== "gemv16" ? tb2.buffer : undefined,
    bias3: qkvBias ? tb3.buffer : undefined,
    res: extras && entry === "gemv16" ? tr.buffer : undefined,
    offR: 0,
    y: y.buffer,
    y2: y2.buffer,
    y3: y3.buffer,
    offY: 0,
    ldy: N,
  });
  const label = `${entry} LANES ${lanes} ${dtype} M ${M} K ${K} (${c.words} words) N ${N}/${N2}/` +
    `${N3} norm ${c.norm} extras ${extras}`;
  const normRef = c.norm ? { weight: gain, eps: EPS } : undefined;
  const round = (v: ArrayLike<number>) =>
    dtype === "f16" ? roundToF16(Float32Array.from(v)) : Float32Array.from(v);
  const s = Math.sqrt(K);
  const lin = dtype === "f32" ? { atol: 4e-6 * s, rtol: 1e-5 } : { atol: 2e-3 * s, rtol: 4e-3 };
  if (entry === "gemv16") {
    const xn = c.norm ? rmsNormRowsReference(x, gain, EPS) : x;
    const want = gemvReference(xn, w, M, K, N);
    if (extras) want.forEach((_, i) => (want[i] += b[i % N] + res[i]));
    assertClose(await y.toArray(), round(want), lin, label);
  } else if (entry === "gemv16_swiglu") {
    const want = linearSwigluReference(x, [M, K], w, w2, N, {
      gateBias: extras ? b : undefined,
      upBias: extras ? b2 : undefined,
      norm: normRef,
    });
    const sw = dtype === "f32"
      ? { atol: 6e-6 * K, rtol: 1e-4 }
      : { atol: (c.norm ? 1.5e-3 : 5e-4) * K, rtol: 4e-3 };
    assertClose(await y.toArray(), round(want), sw, label);
  } else {
    const want = linearQkvReference(x, M, K, { wq: w, wk: w2, wv: w3 }, {
      norm: normRef,
      qBias: extras ? b : undefined,
      kBias: extras ? b2 : undefined,
      vBias: extras ? b3 : undefined,
    });
    assertClose(await y.toArray(), round(want.q), lin, `${label}: q`);
    if (N2) assertClose(await y2.toArray(), round(want.k), lin, `${label}: k`);
    if (N3) assertClose(await y3.toArray(), round(want.v), lin, `${label}: v`);
  }
}

for (const lanes of GEMV_LANES) {
  Deno.test({
    name: `gemv16, gemv16_swiglu and gemv16_qkv(_bias) with LANES ${lanes} equal their CPU ` +
      "twins: M 1..8, K words below and above 4·LANES (not multiples of LANES), odd N, norm, " +
      "biases and residual (f32/f16)",
    ...GPU_TEST,
    fn: async () => {
      // the loop's four-word steps and their ragged tail, fixed, then random cases
      for (const words of [3, 4 * lanes + 3, 9 * lanes + 5]) {
        for (const entry of ["gemv16", "gemv16_swiglu", "gemv16_qkv"] as const) {
          await checkLanes({
            lanes,
            entry,
            dtype: FLOAT_DTYPES[FLOAT_DTYPES.length - 1],
            M: 1,
            words,
            N: 7,
            N2: 3,
            N3: 5,
            norm: entry !== "gemv16",
            extras: entry !== "gemv16_swiglu",
            seed: words,
          });
        }
      }
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            lanes: fc.constant(lanes),
            entry: fc.constantFrom<Entry>("gemv16", "gemv16_swiglu", "gemv16_qkv"),
            dtype: fc.constantFrom(...FLOAT_DTYPES),
            M: fc.integer({ min: 1, max: 8 }),
            words: fc.oneof(
              fc.integer({ min: 1, max: 2 * lanes }),
              fc.integer({ min: 4 * lanes + 1, max: 9 * lanes }),
            ),
            N: fc.integer({ min: 1, max: 37 }),
            N2: fc.integer({ min: 0, max: 9 }),
            N3: fc.integer({ min: 0, max: 9 }),
            norm: fc.boolean(),
            extras: fc.boolean(),
            seed: fc.integer({ min: 0, max: 1 << 30 }),
          }),
          checkLanes,
        ),
        fcParams(12),
      );
    },
  });
}

Deno.test({
  name: "gemvLanes() gives each lane at most 8 words while keeping 256 workgroups, else 64 lanes",
  fn: () => {
    assert.equal(gemvLanes(1024, "f16", 4096), 16); // Qwen3-0.6B q, k, v
    assert.equal(gemvLanes(1024, "f16", 2 * 3072), 16); // gate and up
    assert.equal(gemvLanes(2048, "f16", 1024), 64); // o_proj: 32 lanes would make 128 groups
    assert.equal(gemvLanes(3072, "f16", 1024), 64); // down_proj
    assert.equal(gemvLanes(1024, "f16", 151936), 16); // the LM head
    assert.equal(gemvLanes(1024, "f32", 151936), 32);
    assert.equal(gemvLanes(512, "f16", 151936), 8);
    assert.equal(gemvLanes(12288, "f16", 4096), 64); // Qwen3-8B down_proj: 24 words per lane
    assert.equal(gemvLanes(64, "f16", 8), 64); // few rows: as many workgroups as possible
    for (const K of [8, 1024, 4096, 1 << 16]) {
      for (const rows of [1, 1000, 1 << 20]) {
        assert.ok(GEMV_LANES.includes(gemvLanes(K, "f16", rows)));
      }
    }
  },
});

Deno.test({
  name: "dispatchGemv16() rejects lanes other than 8, 16, 32 and 64",
  ...GPU_TEST,
  fn: () => {
    using x = Tensor.fromArray(gpu, new Float32Array(4), [1, 4]);
    assert.throws(
      () =>
        dispatchGemv16(gpu, {
          entry: "gemv16",
          dtype: "f32",
          M: 1,
          N: 1,
          K: 4,
          x: x.buffer,
          offX: 0,
          w: x.buffer,
          offR: 0,
          y: x.buffer,
          offY: 0,
          ldy: 1,
          lanes: 4 as GemvLanes,
        }),
      /lanes must be 8, 16, 32 or 64, got 4/,
    );
  },
});
