/**
 * Properties of the float64 CPU reference model (src/model/reference.ts) on
 * small random Qwen3/Llama models: its three modes agree where SPEC.md says
 * they must, and bad inputs are rejected with messages naming the tensor.
 * (Agreement with NVIDIA's reference itself is test/eval/conformance_test.ts.)
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { parseConfig } from "../../src/model/config.ts";
import {
  compressionScalars,
  inferenceForward,
  loadReferenceModel,
  ropeInvFreq,
  teacherForward,
  trainForward,
} from "../../src/model/reference.ts";
import { ropeInvFreq as ropeInvFreqF32 } from "../../src/ops/rope.ts";
import { inferenceObservables, retainedCounts } from "../../src/eval/observables.ts";
import { makeModel, normal, type Spec, V } from "../_reference_model.ts";

const specArb = (
  over: Partial<Record<keyof Spec, fc.Arbitrary<unknown>>> = {},
): fc.Arbitrary<Spec> =>
  fc.record({
    modelType: fc.constantFrom("qwen3" as const, "llama" as const),
    L: fc.integer({ min: 1, max: 2 }),
    Hkv: fc.integer({ min: 1, max: 2 }),
    G: fc.integer({ min: 1, max: 3 }),
    D: fc.constantFrom(4, 8),
    separate: fc.boolean(),
    per: fc.constantFrom("head" as const, "layer" as const),
    tie: fc.boolean(),
    window: fc.integer({ min: 2, max: 5 }),
    offset: fc.constant(0),
    scale: fc.constantFrom(1, 3),
    tau: fc.constantFrom(0.3, 1),
    seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    ...over,
  } as Record<keyof Spec, fc.Arbitrary<unknown>>) as fc.Arbitrary<Spec>;

const idsArb = (minLen: number, maxLen: number, rows = 1) =>
  fc.integer({ min: minLen, max: maxLen }).chain((S) =>
    fc.array(fc.array(fc.integer({ min: 0, max: V - 1 }), { minLength: S, maxLength: S }), {
      minLength: rows,
      maxLength: rows,
    })
  );

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const RUNS = { numRuns: 12 };

Deno.test("teacher mode equals train mode with alpha forced very negative", () => {
  fc.assert(
    fc.property(specArb({ offset: fc.constant(1e6) }), idsArb(6, 14, 2), (spec, ids) => {
      const { model, config } = makeModel(spec);
      const S = ids[0].length, n = config.numLayers * 2 * config.numKvHeads * S;
      const noise = Float64Array.from({ length: n }, normal(spec.seed + 1));
      const tr = trainForward(model, ids, noise, 0.5);
      const te = teacherForward(model, ids);
      assert.ok(tr.decisionsHard.every((d) => d === 0));
      assert.equal(tr.dmsFracClosed, 0);
      assert.equal(tr.dmsLoss, 0.5);
      assert.equal(tr.cr, 1);
      const d = maxDiff(tr.logits, te.logits);
      assert.ok(d <= 1e-12, `logits differ by ${d}`);
      assert.ok(maxDiff(tr.layerOut, te.layerOut) <= 1e-12);
    }),
    RUNS,
  );
});

Deno.test("train mode with the window covering the sequence equals teacher mode, whatever the decisions", () => {
  fc.assert(
    fc.property(specArb({ window: fc.constant(16) }), idsArb(4, 16, 1), (spec, ids) => {
      const { model, config } = makeModel(spec);
      const S = ids[0].length;
      const noise = Float64Array.from(
        { length: config.numLayers * config.numKvHeads * S },
        normal(spec.seed + 7),
      );
      const tr = trainForward(model, ids, noise, 0.5);
      const te = teacherForward(model, ids);
      assert.ok(maxDiff(tr.logits, te.logits) <= 1e-10);
    }),
    RUNS,
  );
});

Deno.test("inference with all-zero decisions equals teacher logits and keeps every key", () => {
  fc.assert(
    fc.property(
      specArb({ offset: fc.constant(1e6) }),
      idsArb(5, 14),
      fc.integer({ min: 1, max: 5 }),
      (spec, ids, p) => {
        const { model, config } = makeModel(spec);
        const T = ids[0].length, P = Math.min(p, T), L = config.numLayers, Hkv = config.numKvHeads;
        const inf = inferenceForward(model, ids[0], P);
        const obs = inferenceObservables(
          retainedCounts(inf.retainedMask, T),
          { T, L, Hkv },
          P,
          config.dms.window + 1,
        );
        const te = teacherForward(model, ids);
        assert.ok(inf.decisions.every((d) => d === 0));
        assert.ok(maxDiff(inf.logits, te.logits) <= 1e-12);
        assert.ok(maxDiff(inf.layerOut, te.layerOut) <= 1e-12);
        for (let t = P; t < T; t++) {
          assert.equal(obs.crCache[t], 1);
          for (let i = 0; i < L * Hkv; i++) assert.equal(obs.cacheLen[t * L * Hkv + i], t + 1);
        }
      },
    ),
    RUNS,
  );
});

Deno.test("inference with a window of at least T equals teacher logits, with decisions of both kinds", () => {
  fc.assert(
    fc.property(specArb({ window: fc.constant(16) }), idsArb(4, 16), (spec, ids) => {
      const { model } = makeModel(spec);
      const inf = inferenceForward(model, ids[0], 1);
      const te = teacherForward(model, ids);
      assert.ok(maxDiff(inf.logits, te.logits) <= 1e-12);
    }),
    RUNS,
  );
});

Deno.test("train mode with zero noise and a tiny tau equals inference (SPEC §5.1 = hard-thresholded §3)", () => {
  fc.assert(
    fc.property(specArb({ tau: fc.constant(1e-9) }), idsArb(6, 16), (spec, ids) => {
      const { model, config } = makeModel(spec);
      const S = ids[0].length;
      const tr = trainForward(
        model,
        ids,
        new Float64Array(config.numLayers * config.numKvHeads * S),
        0,
      );
      const inf = inferenceForward(model, ids[0], S);
      assert.deepEqual([...tr.decisionsHard], [...inf.decisions]);
      assert.ok(maxDiff(tr.logits, inf.logits) <= 1e-9);
    }),
    RUNS,
  );
});

Deno.test("inference is causal: the logits of a prefix equal the first rows of the full run", () => {
  fc.assert(
    fc.property(specArb(), idsArb(6, 14), fc.integer({ min: 1, max: 5 }), (spec, ids, cut) => {
      const { model, config } = makeModel(spec);
      const T = ids[0].length, n = T - cut;
      const full = inferenceForward(model, ids[0], 1);
      const pre = inferenceForward(model, ids[0].slice(0, n), 1);
      assert.ok(maxDiff(pre.logits, full.logits.subarray(0, n * V)) <= 1e-12);
      // decisions of the prefix are the first n of the full run
      const Lh = config.numLayers * config.numKvHeads;
      for (let r = 0; r < Lh; r++) {
        assert.deepEqual([...pre.decisions.subarray(r * n, (r + 1) * n)], [
          ...full.decisions.subarray(r * T, r * T + n),
        ]);
      }
    }),
    RUNS,
  );
});

Deno.test("decision conventions: borrowed neuron zeroed in q, 'layer' broadcasts head 0, cache stats follow the window", () => {
  fc.assert(
    fc.property(specArb({ scale: fc.constant(3) }), idsArb(8, 16), (spec, ids) => {
      const { model, config } = makeModel(spec);
      const T = ids[0].length,
        L = config.numLayers,
        Hkv = config.numKvHeads,
        G = config.numHeads / Hkv;
      const D = config.headDim, W = config.dms.window, Hq = config.numHeads;
      const inf = inferenceForward(model, ids[0], 3);
      const obs = inferenceObservables(
        retainedCounts(inf.retainedMask, T),
        { T, L, Hkv },
        3,
        W + 1,
      );
      for (let l = 0; l < L; l++) {
        for (let h = 0; h < Hq; h++) {
          for (let t = 0; t < T; t++) {
            const x = inf.q[((l * Hq + h) * T + t) * D + D - 1];
            if (!spec.separate && h % G === 0) assert.equal(x, 0, `q[${l}, ${h}, ${t}, D-1]`);
          }
        }
        if (spec.per === "layer") {
          for (let h = 1; h < Hkv; h++) {
            assert.deepEqual(
              [...inf.decisionLogits.subarray((l * Hkv + h) * T, (l * Hkv + h + 1) * T)],
              [...inf.decisionLogits.subarray(l * Hkv * T, (l * Hkv + 1) * T)],
            );
          }
        }
      }
      // the W+1 most recent keys are always retained; cache_len = row sums of retained_mask
      for (let t = 2; t < T; t++) {
        for (let r = 0; r < L * Hkv; r++) {
          let sum = 0;
          for (let j = 0; j <= t; j++) {
            const m = inf.retainedMask[(t * L * Hkv + r) * T + j];
            if (t - j <= W) assert.equal(m, 1);
            sum += m;
          }
          assert.equal(obs.cacheLen[t * L * Hkv + r], sum);
        }
      }
      assert.ok(Number.isNaN(obs.crModel[2]) && Number.isNaN(obs.crCache[0]));
      assert.ok(obs.cacheLen.subarray(0, L * Hkv).every((x) => x === -1)); // row 0 < P−1
    }),
    RUNS,
  );
});

Deno.test("loadReferenceModel rejects missing and misshapen weights, naming the tensor", () => {
  const spec: Spec = {
    modelType: "qwen3",
    L: 1,
    Hkv: 2,
    G: 2,
    D: 8,
    separate: true,
    per: "head",
    tie: false,
    window: 3,
    offset: 0,
    scale: 1,
    tau: 1,
    seed: 1,
  };
  const { config, weights } = makeModel(spec);
  const missing = new Map(weights);
  missing.delete("model.layers.0.self_attn.dms_proj_alpha.weight");
  assert.throws(
    () => loadReferenceModel(config, missing),
    /missing weight model\.layers\.0\.self_attn\.dms_proj_alpha\.weight/,
  );
  const bad = new Map(weights);
  bad.set("model.layers.0.self_attn.k_proj.weight", {
    shape: [24, 16],
    data: new Float32Array(384),
  });
  assert.throws(
    () => loadReferenceModel(config, bad),
    (e: Error) =>
      e instanceof RangeError &&
      /k_proj\.weight: expected \[16, 24\], got \[24, 16\]/.test(e.message),
  );
  const noHead = new Map(weights);
  noHead.delete("lm_head.weight");
  assert.throws(() => loadReferenceModel(config, noHead), /lm_head\.weight/);
  const model = loadReferenceModel(config, weights);
  assert.throws(() => teacherForward(model, [[1, V]]), /token id 37 at position 1/);
  assert.throws(
    () => trainForward(model, [[1, 2]], new Float64Array(3), 0),
    /noise: expected \[1, 1, 2, 2\]/,
  );
  assert.throws(() => inferenceForward(model, [1, 2], 3), /promptLen/);
});

Deno.test("ropeInvFreq applies linear and llama3 scaling like HF", () => {
  const base = {
    model_type: "llama",
    hidden_size: 64,
    num_hidden_layers: 1,
    num_attention_heads: 1,
    intermediate_size: 8,
    vocab_size: 8,
    max_position_embeddings: 64,
    rope_theta: 500000,
  };
  const plain = ropeInvFreq(parseConfig(base));
  assert.equal(plain[0], 1);
  assert.ok(Math.abs(plain[1] - Math.pow(500000, -2 / 64)) < 1e-18);
  const linear = ropeInvFreq(
    parseConfig({ ...base, rope_scaling: { rope_type: "linear", factor: 4 } }),
  );
  assert.ok(maxDiff(linear, plain.map((f) => f / 4)) < 1e-18);
  const scaling = {
    rope_type: "llama3",
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8192,
  };
  const l3 = ropeInvFreq(parseConfig({ ...base, rope_scaling: scaling }));
  // agrees with the f32-faithful HF port used by the GPU RoPE op to f32 precision
  for (
    const [ours, hf] of [[plain, ropeInvFreqF32(64, 500000)], [
      linear,
      ropeInvFreqF32(64, 500000, { rope_type: "linear", factor: 4 }),
    ], [l3, ropeInvFreqF32(64, 500000, scaling)]]
  ) {
    for (let i = 0; i < ours.length; i++) {
      assert.ok(
        Math.abs(ours[i] - hf[i]) <= 1e-6 * ours[i],
        `inv_freq[${i}]: ${ours[i]} vs ${hf[i]}`,
      );
    }
  }
  for (let i = 0; i < plain.length; i++) {
    const wavelen = 2 * Math.PI / plain[i];
    if (wavelen < 8192 / 4) assert.equal(l3[i], plain[i]); // high frequencies untouched
    else if (wavelen > 8192) assert.equal(l3[i], plain[i] / 8); // low frequencies scaled
    else assert.ok(l3[i] < plain[i] && l3[i] > plain[i] / 8); // interpolated
  }
});

Deno.test("compressionScalars: frac_closed per sequence, dms_loss clamped at 0, cr from the mean", () => {
  // st:[L=2, B=2, Hkv=1, S=2]: b0 closes 3 of 4, b1 closes 1 of 4
  const st = new Float64Array([1, 1, 0, 1, 1, 0, 0, 0]);
  const s = compressionScalars(st, 2, 2, 0.5);
  assert.deepEqual([...s.fracClosed], [0.75, 0.25]);
  assert.equal(s.dmsFracClosed, 0.5);
  assert.equal(s.dmsLoss, (0 + 0.25) / 2);
  assert.equal(s.cr, 2);
  assert.equal(compressionScalars(new Float64Array(4).fill(1), 1, 1, 0).cr, 1e6);
  assert.throws(() => compressionScalars(new Float64Array(3), 2, 2, 0), RangeError);
});
