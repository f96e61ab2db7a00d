/**
 * The "lm" objective of a training step (src/train/train_step.ts `forwardBackward`): its loss and
 * every weight's gradient against f64 finite differences of the reference teacher forward +
 * cross-entropy, and `targetWeights` (answer-only loss) against the weighted f64 loss.
 */

import assert from "node:assert/strict";
import { createModel, exportWeights } from "../../src/model/model.ts";
import { loadReferenceModel, teacherForward } from "../../src/model/reference.ts";
import { referenceParams } from "../../src/train/reference_step.ts";
import { crossEntropyReference } from "../../src/train/losses.ts";
import { forwardBackward } from "../../src/train/train_step.ts";
import { assertClose, gpu, GPU_TEST, randomArray } from "../_util.ts";
import { configOf, inputs, readGrads, type Spec, V } from "./_tiny_train.ts";

/** f64 "lm" loss of a reference model: teacher-mode logits, next-token CE. */
function lmLossReference(
  ref: ReturnType<typeof loadReferenceModel>,
  rows: readonly Int32Array[],
): number {
  const B = rows.length, T = rows[0].length;
  const logits = teacherForward(ref, rows).logits;
  const targets = new Int32Array(B * T), w = new Float64Array(B * T);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T - 1; t++) {
      targets[b * T + t] = rows[b][t + 1];
      w[b * T + t] = 1;
    }
  }
  return crossEntropyReference(logits, targets, w, B * T, V).loss;
}

Deno.test({
  name:
    'forwardBackward() "lm" objective matches f64 finite differences of teacher forward + cross-entropy',
  ...GPU_TEST,
  fn: async () => {
    const cases: Spec[] = [
      {
        modelType: "llama",
        layers: 2,
        kv: 1,
        group: 2,
        headDim: 8,
        separateAlpha: false,
        perLayer: false,
        tied: true,
        bias: true,
        window: 2,
        dms: false,
      },
      {
        modelType: "qwen3",
        layers: 1,
        kv: 2,
        group: 1,
        headDim: 4,
        separateAlpha: false,
        perLayer: false,
        tied: false,
        bias: false,
        window: 2,
      },
    ];
    for (const spec of cases) {
      const cfg = configOf(spec), B = 2, T = 6;
      const model = createModel(gpu, cfg, { seed: 11 });
      try {
        const { ids, rows } = inputs(cfg, B, T, 9);
        const ref = loadReferenceModel(cfg, await exportWeights(model));
        const out = forwardBackward(model, {
          ids,
          batch: B,
          seqLen: T,
          objective: "lm",
          trainable: "all",
        });
        const loss = (await out.lossLm!.toArray())[0];
        const grads = await readGrads(out.grads);
        out.dispose();
        assertClose([loss], [lmLossReference(ref, rows)], { atol: 1e-5, rtol: 1e-5 }, "lm loss");
        const params = referenceParams(ref);
        assert.deepEqual([...grads.keys()].sort(), [...params.keys()].sort());
        const eps = 1e-6;
        let k = 0;
        for (const [name, p] of params) {
          const g = grads.get(name)!;
          for (let j = 0; j < 3; j++) {
            const i = Math.floor(randomArray(1, 100 + k++, 0, p.length)[0]);
            const keep = p[i];
            p[i] = keep + eps;
            const up = lmLossReference(ref, rows);
            p[i] = keep - eps;
            const down = lmLossReference(ref, rows);
            p[i] = keep;
            const fd = (up - down) / (2 * eps);
            assertClose([g[i]], [fd], { atol: 2e-5, rtol: 2e-3 }, `d lm / d ${name}[${i}]`);
          }
        }
      } finally {
        model.dispose();
      }
    }
  },
});

Deno.test({
  name: 'forwardBackward() "lm" targetWeights weigh each target (answer-only loss) and are checked',
  ...GPU_TEST,
  fn: async () => {
    const cfg = configOf({
      modelType: "qwen3",
      layers: 1,
      kv: 1,
      group: 2,
      headDim: 8,
      separateAlpha: false,
      perLayer: false,
      tied: true,
      bias: false,
      window: 2,
      dms: false,
    });
    const B = 2, T = 5;
    const model = createModel(gpu, cfg, { seed: 5 });
    try {
      const { ids, rows } = inputs(cfg, B, T, 3);
      const ref = loadReferenceModel(cfg, await exportWeights(model));
      const logits = teacherForward(ref, rows).logits;
      const w = [0, 1, 0, 1, 1, 1, 0, 0, 1, 1]; // the last of each row has no target anyway
      const targets = new Int32Array(B * T), wr = new Float64Array(B * T);
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < T - 1; t++) {
          targets[b * T + t] = rows[b][t + 1];
          wr[b * T + t] = w[b * T + t];
        }
      }
      const want = crossEntropyReference(logits, targets, wr, B * T, V).loss;
      const base = {
        ids,
        batch: B,
        seqLen: T,
        objective: "lm" as const,
        trainable: "all" as const,
      };
      const out = forwardBackward(model, { ...base, targetWeights: w });
      const loss = (await out.lossLm!.toArray())[0];
      out.dispose();
      assertClose([loss], [want], { atol: 1e-5, rtol: 1e-5 }, "weighted lm loss");
      assert.throws(
        () => forwardBackward(model, { ...base, targetWeights: [1, 1] }),
        /targetWeights has 2 values, expected \[B, S\] = \[2, 5\]/,
      );
    } finally {
      model.dispose();
    }
  },
});
