/**
 * The GPU side of the `train_step` conformance cases (D): one training step of the DMS
 * objective (SPEC §6) by `forwardBackward` (src/train/train_step.ts) on the case's weights and
 * noise, then the optimizer check the CPU backend (`cpu_backend.ts` `trainStepCase`) makes:
 * the reference's own gradients (`case.optimizerGradients`) clipped by global norm and stepped
 * twice by the GPU AdamW (src/train/adamw.ts).
 *
 * Outputs: `loss_total`, `loss_distill`, `loss_cr`, `dms_frac_closed`, `grad_total_norm` (of our
 * gradients, before clipping), `logits`, `logits_teacher`, `grad.<name>` (HF names, chunked
 * matrices assembled whole) and `adamw1.<name>` / `adamw2.<name>` for every weight.
 *
 * @module
 */

import { getGpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { exportWeights, Model } from "../model/model.ts";
import { loadWeights, memoryReader } from "../model/weights.ts";
import { baseName, forwardBackward, trainableParameters } from "../train/train_step.ts";
import { AdamW, clipGradients, globalGradNorm } from "../train/adamw.ts";
import type { BackendOutputs, TrainStepCase } from "./case.ts";
import type { CaseTensor } from "./compare.ts";

/** Rows `[r0, r0 + rows)` of a whole `[R, ...]` tensor, as f32. */
function rowSlice(t: CaseTensor, r0: number, rows: number): Float32Array {
  const per = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return Float32Array.from(t.data.subarray(r0 * per, (r0 + rows) * per));
}

/** The row start of a parameter key (`name#r0`), 0 when unchunked. */
function rowStart(key: string): number {
  const i = key.indexOf("#");
  return i < 0 ? 0 : Number(key.slice(i + 1));
}

/** Chunk gradients (keys `name` or `name#r0`) assembled into whole tensors by HF name. */
async function wholeGrads(
  grads: ReadonlyMap<string, Tensor<"f32">>,
  shapeOf: (name: string) => number[],
): Promise<Map<string, CaseTensor>> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [key, g] of grads) {
    const name = baseName(key), shape = shapeOf(name);
    let whole = out.get(name);
    if (!whole) {
      whole = { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) };
      out.set(name, whole);
    }
    const per = shape.slice(1).reduce((a, b) => a * b, 1);
    whole.data.set(await g.toArray(), rowStart(key) * per);
  }
  return out;
}

/**
 * Runs one `train_step` case on the GPU.
 *
 * @param c The case (inputs only).
 * @returns The named tensors listed in the module doc.
 */
export async function gpuTrainStep(c: TrainStepCase): Promise<BackendOutputs> {
  const gpu = await getGpu();
  const cfg = c.config, p = c.params;
  const weights = await loadWeights(
    gpu,
    cfg,
    memoryReader(c.weights, `${c.dir}/weights.safetensors`),
    c.dir,
    { dtype: "f32" },
  );
  const model = new Model(gpu, cfg, weights, "f32");
  const [B, S] = c.inputs.input_ids.shape;
  const Hkv = cfg.numKvHeads, V = cfg.vocabSize, per = B * Hkv * S;
  const noise = Array.from(
    { length: cfg.numLayers },
    (_, l) =>
      Tensor.fromArray(gpu, c.inputs.noise.data.subarray(l * per, (l + 1) * per), [
        B,
        Hkv,
        S,
      ]) as Tensor<"f32">,
  );
  const frozen = new Set(p.paramsWithoutGrad);
  const trainable = (name: string) => !frozen.has(name);
  const shapeOf = (name: string): number[] => {
    const w = c.weights.get(name);
    if (!w) throw new RangeError(`gpu backend: no weight "${name}" in weights.safetensors`);
    return [...w.shape];
  };
  let teacher: Tensor<"f32"> | undefined;
  const step = forwardBackward(model, {
    ids: Int32Array.from(c.inputs.input_ids.data),
    batch: B,
    seqLen: S,
    objective: "distill",
    alphaTarget: p.targetFracToClose,
    eosTokenIds: p.eosTokenId === null ? [] : [p.eosTokenId],
    noise,
    trainable,
  }, { keepLogits: true, teacherLogits: (t) => teacher = t });
  const toDispose: Tensor[] = [...noise];
  try {
    using norm = globalGradNorm([...step.grads.values()]);
    const scalar = async (t: Tensor | undefined): Promise<CaseTensor> => ({
      shape: [1],
      data: Float32Array.of((await t!.toArray())[0]),
    });
    const out: Record<string, CaseTensor> = {
      loss_total: await scalar(step.loss),
      loss_distill: await scalar(step.lossDistill),
      loss_cr: await scalar(step.lossCr),
      grad_total_norm: await scalar(norm),
      logits: { shape: [B, S, V], data: await step.logits!.toArray() },
      logits_teacher: { shape: [B, S, V], data: await teacher!.toArray() },
    };
    const frac = await step.fracClosed!.toArray();
    out.dms_frac_closed = {
      shape: [1],
      data: Float64Array.of(frac.reduce((a, x) => a + x, 0) / frac.length),
    };
    for (const [name, g] of await wholeGrads(step.grads, shapeOf)) out[`grad.${name}`] = g;

    // the optimizer steps the reference's own gradients, clipped (TrainStepCase.optimizerGradients)
    const params = trainableParameters(model, trainable);
    const given = [...params].map(([key, t]) => {
      const name = baseName(key), g = c.optimizerGradients.get(name);
      if (!g) throw new RangeError(`gpu backend: case.safetensors has no grad.${name}`);
      const r0 = rowStart(key), rows = t.shape[0];
      const data = t.rank === 1 ? Float32Array.from(g.data) : rowSlice(g, r0, rows);
      return Tensor.fromArray(gpu, data, t.shape, "f32") as Tensor<"f32">;
    });
    toDispose.push(...given);
    if (given.length) toDispose.push(clipGradients(given, p.adamw.clipGradNorm));
    using opt = new AdamW([...params.values()], {
      lr: p.adamw.lr,
      betas: p.adamw.betas,
      eps: p.adamw.eps,
      weightDecay: p.adamw.weightDecay,
    });
    for (const k of [1, 2]) {
      if (given.length) opt.step(given);
      for (const [name, w] of await exportWeights(model)) out[`adamw${k}.${name}`] = w;
    }
    return out;
  } finally {
    teacher?.dispose();
    step.dispose();
    for (const t of toDispose) t.dispose();
    model.dispose();
  }
}
