import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import {
  rope,
  ropeInvFreq,
  type RopeLayout,
  ropeReference,
  type RopeScaling,
} from "../../src/ops/rope.ts";
import {
  assertClose,
  diff,
  fcParams,
  FLOAT_DTYPES,
  gpu,
  GPU_TEST,
  randomArray,
  TOL,
} from "../_util.ts";

// Tolerances: TOL[dtype] (f32: atol 1e-5, rtol 1e-4; f16: atol 2e-3, rtol 1e-2) against
// ropeReference, which uses the same f32 angle as PyTorch and f64 cos/sin; inputs in [-1, 1]
// (f16-rounded for f16). Inverse frequencies: rtol 2e-6 against f64 evaluations of the
// transformers formulas (a few f32 roundings).

function randomPositions(n: number, seed: number, max: number): Int32Array {
  return Int32Array.from(randomArray(n, seed, 0, max + 1), Math.floor);
}

const LLAMA31: RopeScaling = {
  rope_type: "llama3",
  factor: 8,
  low_freq_factor: 1,
  high_freq_factor: 4,
  original_max_position_embeddings: 8192,
};

for (const dtype of FLOAT_DTYPES) {
  Deno.test({
    name: `rope() (${dtype}) matches the CPU reference over shapes, layouts and positions`,
    ...GPU_TEST,
    fn: async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            B: fc.integer({ min: 1, max: 2 }),
            H: fc.integer({ min: 1, max: 3 }),
            T: fc.integer({ min: 1, max: 7 }),
            D: fc.oneof(
              fc.integer({ min: 1, max: 20 }).map((h) => 2 * h),
              fc.constantFrom(64, 128, 130),
            ),
          }),
          fc.constantFrom<RopeLayout>("BHTD", "BTHD"),
          fc.boolean(),
          fc.constantFrom(10000, 1e6, 500000),
          fc.constantFrom(16, 2000, 40000),
          fc.integer(),
          async ({ B, H, T, D }, layout, batched, theta, maxPos, seed) => {
            const shape = layout === "BHTD" ? [B, H, T, D] : [B, T, H, D];
            let x = randomArray(B * H * T * D, seed);
            if (dtype === "f16") x = roundToF16(x);
            const pos = randomPositions(batched ? B * T : T, seed + 1, maxPos);
            const inv = ropeInvFreq(D, theta);
            using tx = Tensor.fromArray(gpu, x, shape, dtype);
            using tp = Tensor.fromArray(gpu, pos, batched ? [B, T] : [T], "i32");
            using ti = Tensor.fromArray(gpu, inv, [D / 2]);
            using out = rope(tx, tp, ti, { layout });
            assert.deepEqual(out.shape, shape);
            assert.equal(out.dtype, dtype);
            assertClose(
              await out.toArray(),
              ropeReference(x, shape, pos, inv, layout),
              TOL[dtype],
              `rope ${dtype} ${layout} ${JSON.stringify(shape)} pos<=${maxPos}`,
            );
          },
        ),
        fcParams(30),
      );
    },
  });

  Deno.test({
    name: `rope() (${dtype}) is the identity at position 0`,
    ...GPU_TEST,
    fn: async () => {
      const [B, H, T, D] = [2, 3, 4, 130];
      const x = roundToF16(randomArray(B * H * T * D, 3, -4, 4));
      using tx = Tensor.fromArray(gpu, x, [B, H, T, D], dtype);
      using tp = Tensor.zeros(gpu, [B, T], "i32");
      using ti = Tensor.fromArray(gpu, ropeInvFreq(D, 1e6, LLAMA31), [D / 2]);
      using out = rope(tx, tp, ti);
      assertClose(await out.toArray(), x, { atol: 0 }, "rope at position 0");
    },
  });
}

Deno.test({
  name: "rope() uses the f32 angle at large positions, within the documented bound of exact RoPE",
  ...GPU_TEST,
  fn: async () => {
    const [B, H, T, D] = [1, 2, 64, 128];
    const x = randomArray(B * H * T * D, 21);
    const pos = randomPositions(T, 22, 10000).map((p) => p + 30000); // 30000..40000
    for (const theta of [10000, 1e6]) {
      const inv = ropeInvFreq(D, theta);
      using tx = Tensor.fromArray(gpu, x, [B, H, T, D]);
      using tp = Tensor.fromArray(gpu, pos, [T], "i32");
      using ti = Tensor.fromArray(gpu, inv, [D / 2]);
      using out = rope(tx, tp, ti);
      const got = await out.toArray();
      assertClose(got, ropeReference(x, [B, H, T, D], pos, inv), TOL.f32, `theta ${theta}`);
      // The documented bound against an exact (f64) angle: |x|max * pos * 2^-23 (|x| <= 1).
      const exact = ropeReference(x, [B, H, T, D], pos, inv, "BHTD", true);
      assertClose(got, exact, { atol: 40000 * 2 ** -23 }, `theta ${theta} vs exact angle`);
      // ...and the f32 angle is visible at this tolerance: an exact-angle kernel would fail.
      assert.ok(!diff(exact, ropeReference(x, [B, H, T, D], pos, inv), TOL.f32).ok);
    }
  },
});

Deno.test({
  name: "rope() with layout BTHD equals the BHTD result transposed",
  ...GPU_TEST,
  fn: async () => {
    const [B, H, T, D] = [2, 3, 5, 6];
    const xb = randomArray(B * H * T * D, 31);
    const xt = new Float32Array(xb.length); // [B, T, H, D]
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        for (let t = 0; t < T; t++) {
          for (let d = 0; d < D; d++) {
            xt[((b * T + t) * H + h) * D + d] = xb[((b * H + h) * T + t) * D + d];
          }
        }
      }
    }
    using tp = Tensor.fromArray(gpu, [7, 100, 3, 9999, 0, 5, 6, 7, 8, 12345], [B, T], "i32");
    using ti = Tensor.fromArray(gpu, ropeInvFreq(D, 10000), [D / 2]);
    using txb = Tensor.fromArray(gpu, xb, [B, H, T, D]);
    using txt = Tensor.fromArray(gpu, xt, [B, T, H, D]);
    using ob = rope(txb, tp, ti);
    using ot = rope(txt, tp, ti, { layout: "BTHD" });
    const [rb, rt] = [await ob.toArray(), await ot.toArray()];
    const rtb = new Float32Array(rb.length);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        for (let t = 0; t < T; t++) {
          for (let d = 0; d < D; d++) {
            rtb[((b * H + h) * T + t) * D + d] = rt[((b * T + t) * H + h) * D + d];
          }
        }
      }
    }
    assertClose(rtb, rb, { atol: 0 }, "BTHD vs BHTD");
    assert.ok(!diff(rb, xb, TOL.f32).ok, "positions must rotate something");
  },
});

Deno.test({
  name: "rope() covers more than 65535 workgroups through a 2D grid",
  ...GPU_TEST,
  // 16.8M pairs need 33.6M values: 134 MB in f32, over lavapipe's 128 MiB binding limit.
  ignore: !gpu.hasF16,
  fn: async () => {
    const [B, H, T, D] = [1, 4096, 4097, 2]; // 16.8M pairs > 65535 * 256
    const x = roundToF16(randomArray(B * H * T * D, 41));
    const pos = randomPositions(T, 42, 5000);
    const inv = ropeInvFreq(D, 10000);
    using tx = Tensor.fromArray(gpu, x, [B, H, T, D], "f16");
    using tp = Tensor.fromArray(gpu, pos, [T], "i32");
    using ti = Tensor.fromArray(gpu, inv, [D / 2]);
    using out = rope(tx, tp, ti);
    assertClose(await out.toArray(), ropeReference(x, [B, H, T, D], pos, inv), TOL.f16, "large");
  },
});

Deno.test({
  name: "ropeInvFreq() without scaling is theta^(-2i/D) and linear scaling divides by factor",
  fn: () => {
    for (const [D, theta] of [[128, 1e6], [64, 10000], [2, 500000], [6, 10000]]) {
      const want = Array.from({ length: D / 2 }, (_, i) => theta ** (-2 * i / D));
      assertClose(ropeInvFreq(D, theta), want, { atol: 0, rtol: 2e-6 }, `default D=${D}`);
      assertClose(ropeInvFreq(D, theta, { rope_type: "default" }), want, { atol: 0, rtol: 2e-6 });
      assertClose(ropeInvFreq(D, theta, null), want, { atol: 0, rtol: 2e-6 });
    }
    const lin = ropeInvFreq(64, 10000, { type: "linear", factor: 4 }); // legacy "type" key
    const want = [0.25, 0.05928434264154138, 3.33380358040831e-05]; // 10000^(-2i/64) / 4
    assertClose([lin[0], lin[5], lin[31]], want, { atol: 0, rtol: 2e-6 }, "linear");
  },
});

Deno.test({
  name: "ropeInvFreq() llama3 scaling matches hand-computed transformers values (Llama 3.1)",
  fn: () => {
    const inv = ropeInvFreq(128, 500000, LLAMA31);
    // f64 evaluation of _compute_llama3_parameters: wavelen = 2π/inv_freq; high-frequency
    // (wavelen < 8192/4) kept, low-frequency (wavelen > 8192/1) divided by 8, and between them
    // (1-s)·inv/8 + s·inv with s = (8192/wavelen - 1)/(4 - 1).
    const hand: [number, number][] = [
      [0, 1], // high: unchanged
      [1, 0.8146172338565447],
      [20, 0.016560440080994446],
      [28, 0.003211445994752591], // last high-frequency index
      [29, 0.002166570763503359], // medium, s = 0.803621
      [30, 0.0013718935677611381], // medium, s = 0.592849
      [32, 0.0005248461609929547], // medium, s = 0.281283
      [34, 0.0001785078127679964], // medium, s = 0.074527
      [35, 9.556212353964683e-05], // first low-frequency index: 500000^(-70/128) / 8
      [40, 3.428102195952591e-05],
      [63, 3.068925988914511e-07],
    ];
    assertClose(
      hand.map(([i]) => inv[i]),
      hand.map(([, v]) => v),
      { atol: 0, rtol: 2e-6 },
      "llama3 inv_freq",
    );
    // Without scaling the low-frequency entries are 8x larger: the check above can fail.
    assert.ok(Math.abs(ropeInvFreq(128, 500000)[40] / inv[40] - 8) < 1e-5);
  },
});

Deno.test({
  name: "ropeInvFreq() llama3 reproduces transformers' f32 results bit for bit",
  fn: () => {
    // LlamaRotaryEmbedding(config).inv_freq from transformers 5.17.0 / torch 2.11.0 on the CPU
    // (recorded on the device machine). ropeInvFreq replays torch's f32 operation order.
    const llama31 = ropeInvFreq(128, 500000, LLAMA31);
    const hf31: [number, number][] = [
      [0, 1],
      [1, 0.8146172165870667],
      [20, 0.016560440883040428],
      [28, 0.0032114461064338684],
      [29, 0.0021665706299245358],
      [30, 0.0013718936825171113],
      [32, 0.0005248460220173001],
      [34, 0.0001785077911335975],
      [35, 9.556212171446532e-05],
      [40, 3.428102354519069e-05],
      [63, 3.068925877869333e-07],
    ];
    assert.deepStrictEqual(hf31.map(([i]) => llama31[i]), hf31.map(([, v]) => v));
    // Thresholds that are not exact in f32 (2000/1.5, 2000/3.7); indices 16..18 are medium.
    const odd = ropeInvFreq(64, 10000, {
      rope_type: "llama3",
      factor: 4,
      low_freq_factor: 1.5,
      high_freq_factor: 3.7,
      original_max_position_embeddings: 2000,
    });
    assert.deepStrictEqual(
      Array.from(odd.subarray(14, 21)),
      [
        0.017782794311642647,
        0.01333521492779255,
        0.008237835951149464,
        0.004142281599342823,
        0.0019617814105004072,
        0.0010542412055656314,
        0.0007905694656074047,
      ],
    );
  },
});

Deno.test({
  name: "ropeInvFreq() rejects unknown scaling types by name, missing fields and odd D",
  fn: () => {
    assert.throws(
      () => ropeInvFreq(128, 1e6, { rope_type: "yarn", factor: 4 }),
      (e) => e instanceof RangeError && /unsupported rope_scaling type "yarn"/.test(e.message),
    );
    assert.throws(
      () => ropeInvFreq(128, 1e6, { ...LLAMA31, high_freq_factor: undefined }),
      (e) => e instanceof RangeError && /"llama3".*"high_freq_factor"/.test(e.message),
    );
    assert.throws(
      () => ropeInvFreq(128, 1e6, { type: "linear" }),
      (e) => e instanceof RangeError && /"linear".*"factor"/.test(e.message),
    );
    assert.throws(() => ropeInvFreq(127, 1e6), RangeError);
    assert.throws(() => ropeInvFreq(128, 0), RangeError);
  },
});

Deno.test({
  name: "rope() rejects odd head dims, mismatched invFreq/positions and wrong dtypes",
  ...GPU_TEST,
  fn: () => {
    using x = Tensor.zeros(gpu, [2, 3, 4, 8]);
    using xOdd = Tensor.zeros(gpu, [2, 3, 4, 7]);
    using x3 = Tensor.zeros(gpu, [3, 4, 8]);
    using xi = Tensor.zeros(gpu, [2, 3, 4, 8], "i32");
    using pos = Tensor.zeros(gpu, [2, 4], "i32");
    using posT = Tensor.zeros(gpu, [3], "i32");
    using posF = Tensor.zeros(gpu, [4]);
    using inv = Tensor.zeros(gpu, [4]);
    using inv5 = Tensor.zeros(gpu, [5]);
    using invI = Tensor.zeros(gpu, [4], "i32");
    assert.throws(
      () => rope(xOdd, pos, inv),
      (e) => e instanceof RangeError && /even/.test(e.message),
    );
    assert.throws(
      () => rope(x, pos, inv5),
      (e) =>
        e instanceof RangeError &&
        /rope\(\) invFreq: expected shape \[4\] for x \[2, 3, 4, 8\], got \[5\]/.test(e.message),
    );
    assert.throws(
      () => rope(x, posT, inv),
      (e) =>
        e instanceof RangeError &&
        /rope\(\) positions: expected shape \[2, 4\] or \[4\].*got \[3\]/.test(e.message),
    );
    // BTHD reads T from dim 1: positions [2, 4] no longer fit x [2, 3, 4, 8].
    assert.throws(() => rope(x, pos, inv, { layout: "BTHD" }), RangeError);
    assert.throws(() => rope(x3, posT, inv), RangeError);
    assert.throws(() => rope(x, posF, inv), TypeError);
    assert.throws(() => rope(x, pos, invI), TypeError);
    assert.throws(() => rope(xi, pos, inv), TypeError);
  },
});
