/**
 * `retrofit(model, data, options)`: teaches a model to evict (SPEC §6). Each optimizer step
 * takes a batch, runs {@linkcode forwardBackward} (`L = KL(student ‖ teacher) + L_cr` with the
 * CR target of the schedule, noise from `(seed, step, layer)`), clips the gradients by global
 * norm and takes an AdamW step; every `checkpointEvery` steps it writes a checkpoint
 * (checkpoint.ts), and `resume` continues from the latest one exactly.
 *
 * The model is trained **in place** (f32 weights; load with `{ dtype: "f32" }`). A plain model
 * becomes a DMS student first: its config is replaced by a copy with `isDms` true and the DMS
 * settings of the options (window, τ, alpha scale/offset/granularity, block size), and
 *
 * - with `decisions: "adapter"` (default; NVIDIA's recipe, SPEC §1b, §6) each layer gets the
 *   adapter `dms_proj_alpha` (Wα `[Hkv, H]` zero-initialised, so every logit starts at −offset)
 *   and `dms_proj_alpha_norm` (gain 1), `dms_separate_alpha` true;
 * - with `decisions: "neuron"` (the paper's borrowed query channel, SPEC §1a; needs the q
 *   projection trainable, e.g. `trainable: "all"`) the **neuron-zeroing phase-in** of SPEC §9.6
 *   runs first: for `neuronPhaseIn = K` steps the student stays a plain model (no eviction,
 *   KL only) while the q_proj row of channel D−1 of every first-of-group head (and its bias) is
 *   set to `original · (1 − (s + 1)/K)` after step s's update (step s runs with
 *   `1 − s/K`), so it is exactly 0 after step K − 1 and the rest of the network learns to do
 *   without it (the teacher, a frozen copy of the original, still uses it). From step K on the model is a DMS model in
 *   neuron mode (that channel leaves q·k) and the CR schedule starts (its step = s − K); a
 *   zero row gives logits of −offset, the same start as the adapters' zero Wα.
 *
 * Teacher: for the adapter-only recipe, the same weights in teacher mode (no second copy, SPEC
 * §6). When any base weight trains ("all" or a predicate that picks one), a frozen f32 copy of
 * the original weights is made as the teacher: one more model's worth of memory (4 bytes per
 * parameter: ~2.4 GB for Qwen3-0.6B), plus the AdamW moments (8 bytes per trained parameter).
 *
 * Readbacks: losses, the closed fraction and the gradient norm are read every `logEvery` steps
 * only (one readback), when `onStep` is called; nothing else leaves the GPU between checkpoints.
 *
 * @example Retrofit a model to CR 8 with the adapter recipe
 * ```ts ignore
 * import { loadModel } from "../model/model.ts";
 * import { loadTokenizer } from "../io/tokenizer.ts";
 * import { retrofit, textFileSource } from "./mod.ts";
 * const model = await loadModel(gpu, "Qwen3-0.6B", { dtype: "f32" });
 * const data = await textFileSource("corpus.txt", await loadTokenizer("Qwen3-0.6B"),
 *   { batch: 1, seqLen: 4096, seed: 42 });
 * await retrofit(model, data, {
 *   steps: 300, schedule: { initialCr: 1, finalCr: 8, finalStep: 238 }, window: 256,
 *   checkpointDir: "runs/cr8", checkpointEvery: 34, resume: true,
 *   onStep: (s) => console.log(s.step, s.lossDistill, s.fracClosed, s.targetCr),
 * });
 * ```
 *
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import { exportWeights, Model } from "../model/model.ts";
import type { Transformer } from "../model/transformer.ts";
import { loadWeights, memoryReader } from "../model/weights.ts";
import { readTensors, Tensor } from "../tensor/tensor.ts";
import { AdamW, clipGradients } from "./adamw.ts";
import {
  latestCheckpoint,
  readOptimizerState,
  readTrainerState,
  restoreWeights,
  saveCheckpoint,
  type TrainerState,
} from "./checkpoint.ts";
import type { BatchSource } from "./data.ts";
import { alphaTarget, type CompressionSchedule, targetCompressionRatio } from "./schedule.ts";
import {
  forwardBackward,
  isAdapterName,
  type Trainable,
  trainableParameters,
} from "./train_step.ts";

/** What {@linkcode RetrofitOptions.onStep} receives (read back every `logEvery` steps). */
export interface RetrofitStepInfo {
  /** The step just taken (from 0). */
  step: number;
  /** KL(student ‖ teacher) of this step. */
  lossDistill: number;
  /** The compression loss of this step (0 in the neuron phase-in). */
  lossCr: number;
  /** α* of this step. */
  alphaTarget: number;
  /** The schedule's CR target of this step. */
  targetCr: number;
  /** Mean closed fraction over the batch (SPEC §6; 0 in the phase-in). */
  fracClosed: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Training tokens per second since the last report. */
  tokensPerSecond: number;
  /** Optimizer steps per second since the last report. */
  stepsPerSecond: number;
}

/** Options of {@linkcode retrofit}; defaults are SPEC §6's table. */
export interface RetrofitOptions {
  /** Total optimizer steps of the run (a resumed run counts the steps already taken). */
  steps: number;
  /** CR schedule, linear in CR; step 0 gives α* = 1 − 1/initialCr. */
  schedule: CompressionSchedule;
  /** Trainable set (default "adapters"). */
  trainable?: Trainable;
  /** How a plain model decides (default "adapter"); a DMS model keeps its own. */
  decisions?: "adapter" | "neuron";
  /** Neuron mode on a plain model: steps of the neuron-zeroing phase-in (default 0). */
  neuronPhaseIn?: number;
  /** Learning rate (3e-5, constant). */
  lr?: number;
  /** AdamW (β1, β2) ([0.9, 0.95]). */
  betas?: readonly [number, number];
  /** AdamW eps (1e-8). */
  eps?: number;
  /** Decoupled weight decay (0). */
  weightDecay?: number;
  /** Global-norm gradient clipping (1.0; 0 disables). */
  clipGradNorm?: number;
  /** Seed of the Gumbel noise (42). */
  seed?: number;
  /** DMS window W (default: the config's; SPEC §9.2). */
  window?: number;
  /** Gumbel-sigmoid τ (default: the config's, 0.1). */
  tau?: number;
  /** Logit scale (default: the config's, 100). */
  alphaScale?: number;
  /** Logit offset (default: the config's, 5). */
  alphaOffset?: number;
  /** Decision granularity (default: the config's, "head"). */
  alphaPer?: "head" | "layer";
  /** Paged-cache block size (default: the config's, lowered below the window when needed). */
  blockSize?: number;
  /** Recompute each layer's forward in backward (less memory). */
  checkpointLayers?: boolean;
  /** Steps between checkpoints (0 or unset: only at the end when `checkpointDir` is set). */
  checkpointEvery?: number;
  /** Where checkpoints go (`<dir>/checkpoint-<step>`). */
  checkpointDir?: string;
  /** Continue from the latest checkpoint in `checkpointDir` (weights, optimizer, data, step). */
  resume?: boolean;
  /** Steps between readbacks / `onStep` calls (1). */
  logEvery?: number;
  /** Progress callback. */
  onStep?: (info: RetrofitStepInfo) => void | Promise<void>;
}

/** What {@linkcode retrofit} returns. */
export interface RetrofitResult {
  /** The trained model (the same object, now a DMS model). */
  model: Transformer;
  /** Steps taken in total (including resumed ones). */
  steps: number;
  /** Every report passed to `onStep`. */
  history: RetrofitStepInfo[];
  /** The last checkpoint written or resumed from, or null. */
  checkpoint: string | null;
}

function setConfig(model: Transformer, cfg: ModelConfig): void {
  (model as { config: ModelConfig }).config = cfg;
}

/**
 * The DMS config of the student: `isDms` true with the options' DMS settings (a copy; the
 * model's own config object is never changed).
 */
export function studentConfig(cfg: ModelConfig, opts: RetrofitOptions): ModelConfig {
  const d = cfg.dms;
  const window = opts.window ?? d.window;
  const separateAlpha = cfg.isDms ? d.separateAlpha : (opts.decisions ?? "adapter") === "adapter";
  return {
    ...cfg,
    isDms: true,
    dms: {
      ...d,
      window,
      separateAlpha,
      tau: opts.tau ?? d.tau,
      alphaScale: opts.alphaScale ?? d.alphaScale,
      alphaOffset: opts.alphaOffset ?? d.alphaOffset,
      alphaPer: opts.alphaPer ?? d.alphaPer,
      blockSize: opts.blockSize ?? (d.blockSize < window ? d.blockSize : Math.max(1, window - 1)),
      disableEviction: false,
    },
  };
}

/** Adds zero Wα (and bias) and unit RMSNormα gains to layers without adapters (SPEC §1b, §6). */
function addAdapters(model: Transformer): void {
  const cfg = model.config, H = cfg.hiddenSize, Hkv = cfg.numKvHeads;
  for (const w of model.weights.layers) {
    if (w.alphaProj) continue;
    w.alphaProj = Tensor.zeros(model.gpu, [Hkv, H], "f32");
    w.alphaNorm = Tensor.fromArray(model.gpu, new Float32Array(H).fill(1), [H], "f32");
    if (cfg.attentionBias) w.alphaBias = Tensor.zeros(model.gpu, [Hkv], "f32");
  }
}

/** A frozen f32 copy of the model's weights under its current config (the teacher). */
async function frozenCopy(model: Transformer): Promise<Model> {
  const reader = memoryReader(await exportWeights(model), "<teacher>");
  const w = await loadWeights(model.gpu, model.config, reader, "<teacher>", { dtype: "f32" });
  return new Model(model.gpu, model.config, w, "f32");
}

/** The borrowed neuron's q_proj rows (channel D−1 of heads g·G) and their original values. */
async function neuronRows(model: Transformer): Promise<{ rows: number[]; orig: Float32Array[] }> {
  const c = model.config, G = c.numHeads / c.numKvHeads, D = c.headDim, H = c.hiddenSize;
  const rows = Array.from({ length: c.numKvHeads }, (_, g) => g * G * D + D - 1);
  const orig: Float32Array[] = [];
  for (const w of model.weights.layers) {
    const [q, b] = await readTensors(w.qBias ? [w.qProj, w.qBias] : [w.qProj]);
    orig.push(Float32Array.from(rows.flatMap((r) => [...q.slice(r * H, r * H + H), b ? b[r] : 0])));
  }
  return { rows, orig };
}

/** Writes `orig · scale` into the neuron rows (and bias entries) of every layer. */
function scaleNeuronRows(
  model: Transformer,
  nr: { rows: number[]; orig: Float32Array[] },
  scale: number,
): void {
  const H = model.config.hiddenSize, gpu = model.gpu;
  model.weights.layers.forEach((w, l) => {
    nr.rows.forEach((r, i) => {
      const src = nr.orig[l].subarray(i * (H + 1), (i + 1) * (H + 1));
      gpu.write(
        w.qProj.buffer,
        Float32Array.from(src.subarray(0, H), (x) => x * scale + 0),
        r * H * 4,
      );
      if (w.qBias) gpu.write(w.qBias.buffer, Float32Array.of(src[H] * scale + 0), r * 4);
    });
  });
}

function jsonOptions(o: RetrofitOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    if (typeof v === "function") out[k] = k === "trainable" ? "<predicate>" : undefined;
    else out[k] = v;
  }
  delete out.onStep;
  return out;
}

/**
 * Retrofits `model` (in place) into a DMS model that evicts at the schedule's CR; see the
 * module doc for the recipe, the teacher and the neuron phase-in.
 *
 * @param model An f32 model (plain or DMS).
 * @param data Batches `ids:[B, S]` (data.ts); its EOS ids carry no KL term.
 * @param options Steps, schedule, optimizer, checkpoints, logging ({@linkcode RetrofitOptions}).
 * @returns The model, the steps taken, the reports and the last checkpoint.
 * @throws {TypeError} For a non-f32 model, neuron decisions with a frozen q_proj, or a resume
 *   checkpoint whose trainable parameters differ. {RangeError} For invalid step counts.
 */
export async function retrofit(
  model: Transformer,
  data: BatchSource,
  options: RetrofitOptions,
): Promise<RetrofitResult> {
  const o = options;
  if (model.dtype !== "f32") {
    throw new TypeError(
      `retrofit: training needs f32 weights, got a ${model.dtype} model (load it with { dtype: "f32" })`,
    );
  }
  for (const k of ["steps", "neuronPhaseIn", "checkpointEvery", "logEvery"] as const) {
    const v = o[k];
    if (v !== undefined && !(Number.isInteger(v) && v >= 0)) {
      throw new RangeError(`retrofit: ${k} must be an integer >= 0, got ${v}`);
    }
  }
  const trainable = o.trainable ?? "adapters", seed = o.seed ?? 42, logEvery = o.logEvery ?? 1;
  const clip = o.clipGradNorm ?? 1.0;
  const base = model.config;
  const student = studentConfig(base, o);
  const phaseIn = !base.isDms && !student.dms.separateAlpha ? (o.neuronPhaseIn ?? 0) : 0;

  // the teacher: a frozen copy of the original weights when any base weight trains
  const names = [...trainableParameters(model, trainable).keys()];
  const trainsBase = names.some((n) => !isAdapterName(n));
  const teacher = trainsBase ? await frozenCopy(model) : undefined;
  const nr = phaseIn > 0 ? await neuronRows(model) : undefined;

  // the student
  setConfig(model, student);
  if (student.dms.separateAlpha) addAdapters(model);
  if (!student.dms.separateAlpha && !names.some((n) => n.includes(".self_attn.q_proj."))) {
    teacher?.dispose();
    throw new TypeError(
      'retrofit: borrowed-neuron decisions need q_proj trainable (trainable: "all" or a predicate)',
    );
  }
  const params = trainableParameters(model, trainable);
  const order = [...params.keys()];
  const opt = new AdamW([...params.values()], {
    lr: o.lr ?? 3e-5,
    betas: o.betas ?? [0.9, 0.95],
    eps: o.eps ?? 1e-8,
    weightDecay: o.weightDecay ?? 0,
  });

  let start = 0, checkpoint: string | null = null;
  try {
    if (o.resume && o.checkpointDir) checkpoint = await latestCheckpoint(o.checkpointDir);
    if (checkpoint) {
      const st = await readTrainerState(checkpoint);
      if (st.parameters.join("\n") !== order.join("\n")) {
        throw new TypeError(
          `retrofit: ${checkpoint} trained other parameters (${st.parameters.length} vs ${order.length})`,
        );
      }
      await restoreWeights(model, checkpoint);
      opt.importState(
        await readOptimizerState(checkpoint, order, opt.params.map((p) => p.shape)),
      );
      data.restore(st.data);
      start = st.step;
    }

    const history: RetrofitStepInfo[] = [];
    const dmsAt = (s: number) => s >= phaseIn;
    let t0 = performance.now(), s0 = start;
    for (let step = start; step < o.steps; step++) {
      const sched = Math.max(0, step - phaseIn);
      if (nr) setConfig(model, dmsAt(step) ? student : { ...student, isDms: false });
      const aStar = dmsAt(step) ? alphaTarget(sched, o.schedule) : 0;
      const batch = data.next();
      const out = forwardBackward(model, {
        ids: batch.ids,
        batch: batch.batch,
        seqLen: batch.seqLen,
        objective: "distill",
        alphaTarget: aStar,
        eosTokenIds: data.eosTokenIds,
        noise: { seed, step },
        trainable,
        checkpointLayers: o.checkpointLayers,
        teacher,
      });
      try {
        const grads = order.map((n) => out.grads.get(n)!);
        const norm = clip > 0 ? clipGradients(grads, clip) : undefined;
        opt.step(grads);
        // phase-in: the rows follow their schedule, whatever the update did to them
        if (nr && !dmsAt(step)) scaleNeuronRows(model, nr, 1 - (step + 1) / phaseIn);
        if ((step + 1 - start) % logEvery === 0 || step === o.steps - 1) {
          const ts = [out.lossDistill!, out.lossCr, out.fracClosed, norm].filter((t) => t);
          const vals = await readTensors(ts as Tensor[]);
          const [kl, cr, frac, gn] = [
            vals[0][0],
            out.lossCr ? vals[1][0] : 0,
            out.fracClosed ? mean(vals[out.lossCr ? 2 : 1]) : 0,
            norm ? vals[vals.length - 1][0] : NaN,
          ];
          const dt = (performance.now() - t0) / 1000, n = step + 1 - s0;
          const info: RetrofitStepInfo = {
            step,
            lossDistill: kl,
            lossCr: cr,
            alphaTarget: aStar,
            targetCr: dmsAt(step) ? targetCompressionRatio(sched, o.schedule) : 1,
            fracClosed: frac,
            gradNorm: gn,
            tokensPerSecond: (n * batch.batch * batch.seqLen) / dt,
            stepsPerSecond: n / dt,
          };
          history.push(info);
          await o.onStep?.(info);
          t0 = performance.now();
          s0 = step + 1;
        }
        norm?.dispose();
      } finally {
        out.dispose();
      }
      const last = step === o.steps - 1;
      if (
        o.checkpointDir && ((o.checkpointEvery && (step + 1) % o.checkpointEvery === 0) || last)
      ) {
        if (nr && !dmsAt(step + 1)) setConfig(model, { ...student, isDms: false });
        else setConfig(model, student);
        student.dms.compressionRatio = targetCompressionRatio(sched, o.schedule);
        const state: TrainerState = {
          version: 1,
          step: step + 1,
          seed,
          schedule: o.schedule,
          data: data.state(),
          parameters: order,
          options: jsonOptions(o),
        };
        checkpoint = await saveCheckpoint(o.checkpointDir, model, state, {
          names: order,
          optimizer: opt,
        });
      }
    }
    if (nr && o.steps >= phaseIn) setConfig(model, student);
    return { model, steps: Math.max(start, o.steps), history, checkpoint };
  } finally {
    opt.dispose();
    teacher?.dispose();
  }
}

function mean(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  return a.length ? s / a.length : 0;
}
