/**
 * The GPU conformance backend: runs each golden case through the WebGPU
 * implementation (the same decoder, decision kernels and KV cache users run)
 * and returns the tensors the runner compares with NVIDIA's reference.
 *
 * @module
 */

import { getGpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { Model } from "../model/model.ts";
import { loadWeights, memoryReader } from "../model/weights.ts";
import type { CaptureName } from "../model/transformer.ts";
import type { CaseTensor } from "./compare.ts";
import type {
  AttentionOnlyCase,
  BackendOutputs,
  ConformanceBackend,
  InferenceCase,
  TrainForwardCase,
} from "./conformance.ts";

type Captured = Map<string, Tensor[]>; // name -> per layer

function collector(): { map: Captured; capture: (n: CaptureName, l: number, t: Tensor) => void } {
  const map: Captured = new Map();
  return {
    map,
    capture: (name, layer, t) => {
      let list = map.get(name);
      if (!list) map.set(name, list = []);
      list[layer] = t;
    },
  };
}

/** Concatenates per-layer tensors `[...]` into `[L, ...]` on the CPU. */
async function stack(ts: Tensor[]): Promise<{ shape: number[]; data: Float32Array | Int32Array }> {
  const parts = await Promise.all(ts.map((t) => t.toArray()));
  const n = parts[0].length;
  const isInt = ts[0].dtype === "i32";
  const data = isInt ? new Int32Array(n * parts.length) : new Float32Array(n * parts.length);
  parts.forEach((p, i) => data.set(p, i * n));
  return { shape: [ts.length, ...ts[0].shape], data };
}

function disposeAll(m: Captured): void {
  for (const list of m.values()) for (const t of list) t?.dispose();
}

async function modelFor(c: TrainForwardCase | InferenceCase): Promise<Model> {
  const gpu = await getGpu();
  const weights = await loadWeights(
    gpu,
    c.config,
    memoryReader(c.weights, `${c.dir}/weights.safetensors`),
    c.dir,
    {
      dtype: "f32",
    },
  );
  return new Model(gpu, c.config, weights, "f32");
}

/** A: train-mode forward with the case's noise, plus the teacher forward. */
async function trainCase(c: TrainForwardCase): Promise<BackendOutputs> {
  const model = await modelFor(c);
  const gpu = model.gpu, cfg = model.config;
  const [B, S] = c.inputs.input_ids.shape;
  const L = cfg.numLayers, Hkv = cfg.numKvHeads, per = B * Hkv * S;
  const noise = Array.from(
    { length: L },
    (_, l) =>
      Tensor.fromArray(gpu, c.inputs.noise.data.subarray(l * per, (l + 1) * per), [
        B,
        Hkv,
        S,
      ]) as Tensor<"f32">,
  );
  const col = collector();
  try {
    using ids = Tensor.fromArray(gpu, c.inputs.input_ids.data, [B, S], "i32");
    using pos = Tensor.fromArray(
      gpu,
      Array.from({ length: B * S }, (_, i) => i % S),
      [B, S],
      "i32",
    );
    using logits = model.forward(ids, {
      mode: "train",
      positions: pos,
      noise,
      capture: col.capture,
    })!;
    using teacher = model.forward(ids, { mode: "teacher", positions: pos })!;
    const out: Record<string, CaseTensor> = {
      logits: { shape: [B, S, cfg.vocabSize], data: await logits.toArray() },
      logits_teacher: { shape: [B, S, cfg.vocabSize], data: await teacher.toArray() },
    };
    const lo = await stack(col.map.get("layer_out")!);
    out.layer_out = lo;
    const names: [CaptureName, string][] = [
      ["alpha", "decision_logits_raw"],
      ["z", "decision_logits_noisy"],
      ["prob", "decision_probs"],
      ["decisions", "decisions_hard"],
      ["straight_through", "decisions_straight_through"],
    ];
    for (const [from, to] of names) out[to] = await stack(col.map.get(from)!);
    // frac_closed[b] = mean over layers of mean over (heads, positions) of the ST decisions (SPEC §6)
    const st = out.decisions_straight_through.data;
    const frac = new Float64Array(B);
    for (let l = 0; l < L; l++) {
      for (let b = 0; b < B; b++) {
        let s = 0;
        for (let i = 0; i < Hkv * S; i++) s += st[((l * B + b) * Hkv * S) + i];
        frac[b] += s / (Hkv * S) / L;
      }
    }
    const fracMean = frac.reduce((a, x) => a + x, 0) / B;
    const loss = frac.reduce((a, x) => a + Math.max(0, c.params.targetFracToClose - x), 0) / B;
    const scalar = (v: number): CaseTensor => ({ shape: [1], data: new Float64Array([v]) });
    out.dms_frac_closed = scalar(fracMean);
    out.dms_loss = scalar(loss);
    out["model_reported.dms_frac_closed"] = scalar(fracMean);
    out["model_reported.dms_loss"] = scalar(loss);
    out["model_reported.cr"] = scalar(1 / Math.max(1 - fracMean, 1e-6));
    return out;
  } finally {
    for (const t of noise) t.dispose();
    disposeAll(col.map);
    model.dispose();
  }
}

function notYet(what: string): Promise<BackendOutputs> {
  return Promise.reject(
    new Error(`gpu backend: ${what} cases need the paged DMS cache (not wired yet)`),
  );
}

/** The GPU backend for {@linkcode runConformance}. */
export const gpuBackend: ConformanceBackend = {
  name: "gpu",
  trainForward: trainCase,
  inference: (_c: InferenceCase) => notYet("inference"),
  attentionOnly: (_c: AttentionOnlyCase) => notYet("attention-only"),
};
