/**
 * One DMS training step on the GPU (SPEC §6): the training-mode forward recorded on a
 * {@linkcode Tape} (`train_forward.ts`), the losses, and the backward through every layer,
 * returning the gradients of the trainable weights. The optimizer (`adamw.ts`) is the caller's.
 *
 * Objectives:
 * - `"distill"` (a DMS model): `L = KL(student ‖ teacher) + L_cr`. The student is the train-mode
 *   forward with Gumbel-sigmoid decisions (noise from `(seed, step, layer)` or given) and the soft
 *   mask; the teacher is the SAME weights in teacher mode (`model.forward(ids, { mode: "teacher" })`,
 *   eviction off, no gradient, no second copy); positions whose input id is EOS carry no KL term;
 *   `L_cr = mean_b max(0, α* − frac_closed[b])` on the straight-through decisions.
 * - `"lm"`: next-token cross-entropy (the last position of each row has no target) with plain
 *   causal attention (teacher pre-training; a DMS model's borrowed neuron stays zeroed, as in
 *   teacher mode).
 *
 * Trainable sets: `"adapters"` (NVIDIA's recipe: `dms_proj_alpha*` only), `"all"` (the paper's),
 * or a predicate on Hugging Face names. Frozen weights get no dW, but gradients flow through
 * them. Tied embeddings: one gradient summing the embedding and LM-head uses. Activations are
 * freed as the tape unwinds; `checkpointLayers` recomputes each layer in backward instead of
 * keeping its activations. Only f32 models train (TypeError otherwise).
 *
 * @example One distillation step of a tiny random model
 * ```ts ignore
 * const out = forwardBackward(model, {
 *   ids, batch: 1, seqLen: 8, objective: "distill", alphaTarget: 0.5,
 *   noise: { seed: 1, step: 0 }, trainable: "adapters",
 * });
 * console.log(await out.loss.toArray(), [...out.grads.keys()]);
 * out.dispose();
 * ```
 *
 * @module
 */

import { add } from "../ops/elementwise.ts";
import { fmtShape, Tensor } from "../tensor/tensor.ts";
import type { Transformer } from "../model/transformer.ts";
import { invFreqFor } from "../model/config.ts";
import { weightSpecs } from "../model/weights.ts";
import type { ChunkedMatrix } from "../model/weights.ts";
import { Tape } from "./tape.ts";
import { compressionLoss, crossEntropy, klDivergence } from "./losses.ts";
import { logisticNoise } from "./noise.ts";
import type { F32 } from "./tape_ops.ts";
import { rmsNormT } from "./tape_ops.ts";
import { embedT, type LayerContext, lmHeadT, trainLayer } from "./train_forward.ts";

/** Which weights train: NVIDIA's adapter recipe, every weight (the paper's), or a predicate on HF names. */
export type Trainable = "adapters" | "all" | ((name: string) => boolean);

/** Inputs of {@linkcode forwardBackward}. */
export interface StepInputs {
  /** `[B, S]` packed tokens, row-major. */
  ids: Int32Array;
  /** B. */
  batch: number;
  /** S. */
  seqLen: number;
  /** distill: KL(student‖teacher) + L_cr (SPEC §6); lm: next-token cross-entropy. */
  objective: "distill" | "lm";
  /** distill: α* of L_cr at this step (default 0). */
  alphaTarget?: number;
  /** distill: positions whose input id is one of these carry no KL term. */
  eosTokenIds?: readonly number[];
  /** distill: noise key (per layer `logisticNoise` with `layer: l`) or tensors `[B, Hkv, S]` per layer. */
  noise?: { seed: number; step: number } | readonly Tensor<"f32">[];
  /**
   * lm: weight of each position's next-token target, `[B, S]` row-major (1 counted, 0 masked;
   * default all 1; the last position of a row never has a target), e.g. answer tokens only.
   */
  targetWeights?: ArrayLike<number>;
  /** The trainable set. */
  trainable: Trainable;
  /** Recompute each layer's forward in backward (memory for time). */
  checkpointLayers?: boolean;
  /**
   * distill: a separate frozen teacher (same vocabulary), e.g. a copy of the original weights
   * when base weights train; default: `model` itself in teacher mode (no second copy).
   */
  teacher?: Transformer;
}

/** Outputs of {@linkcode forwardBackward}: tensors stay on the GPU; read back when you log. */
export interface StepOutputs {
  /** `[1]` total loss. */
  loss: Tensor<"f32">;
  /** distill: `[1]` KL term. */
  lossDistill?: Tensor<"f32">;
  /** distill: `[1]` compression term. */
  lossCr?: Tensor<"f32">;
  /** lm: `[1]` cross-entropy. */
  lossLm?: Tensor<"f32">;
  /** distill: `[B]` closed fraction per row (SPEC §6). */
  fracClosed?: Tensor<"f32">;
  /** `[B, S, V]` student logits, with `{ keepLogits: true }`. */
  logits?: Tensor<"f32">;
  /** Gradients, same keys as {@linkcode trainableParameters}. */
  grads: Map<string, Tensor<"f32">>;
  /** Frees every tensor above. */
  dispose(): void;
}

/** Options of {@linkcode forwardBackward}. */
export interface StepOptions {
  /** Keep the student logits `[B, S, V]` in the outputs. */
  keepLogits?: boolean;
  /** distill: receives the teacher logits `[B, S, V]` (the callee owns them). */
  teacherLogits?: (logits: Tensor<"f32">) => void;
}

/** Whether an HF name belongs to the DMS adapter (`dms_proj_alpha`, `dms_proj_alpha_norm`). */
export function isAdapterName(name: string): boolean {
  return name.includes(".dms_proj_alpha");
}

function predicate(trainable: Trainable): (name: string) => boolean {
  if (trainable === "adapters") return isAdapterName;
  if (trainable === "all") return () => true;
  if (typeof trainable === "function") return trainable;
  throw new TypeError(`trainable: expected "adapters", "all" or a function, got ${trainable}`);
}

/** Every weight tensor by HF name (chunked matrices: one entry per chunk). */
export function namedWeights(model: Transformer): Map<string, Tensor> {
  const cfg = model.config, w = model.weights, out = new Map<string, Tensor>();
  const chunked = (name: string, m: ChunkedMatrix) => {
    if (m.chunks.length === 1) out.set(name, m.chunks[0].tensor);
    else for (const c of m.chunks) out.set(`${name}#${c.rowStart}`, c.tensor);
  };
  chunked("model.embed_tokens.weight", w.embed);
  for (const s of weightSpecs(cfg)) {
    out.set(s.name, (w.layers[s.layer!] as unknown as Record<string, Tensor>)[s.key!]);
  }
  out.set("model.norm.weight", w.finalNorm);
  if (w.lmHead !== w.embed) chunked("lm_head.weight", w.lmHead);
  return out;
}

/** The HF name of a (possibly chunk-suffixed) parameter key: `lm_head.weight#512` → `lm_head.weight`. */
export function baseName(key: string): string {
  const i = key.indexOf("#");
  return i < 0 ? key : key.slice(0, i);
}

/**
 * The trainable parameters of a model by HF name (f32 tensors; chunked matrices: one entry per
 * chunk, named `model.embed_tokens.weight` when unchunked, else `...weight#<rowStart>`). Tied
 * embeddings appear once, as `model.embed_tokens.weight`.
 */
export function trainableParameters(
  model: Transformer,
  trainable: Trainable,
): Map<string, Tensor<"f32">> {
  checkF32Model(model);
  const keep = predicate(trainable);
  const out = new Map<string, Tensor<"f32">>();
  for (const [name, t] of namedWeights(model)) {
    if (keep(baseName(name))) out.set(name, t as Tensor<"f32">);
  }
  return out;
}

function checkF32Model(model: Transformer): void {
  if (model.dtype !== "f32") {
    throw new TypeError(
      `forwardBackward: training needs an f32 model (f32 master weights), got dtype ${model.dtype}`,
    );
  }
}

function checkInputs(model: Transformer, inp: StepInputs): void {
  const { batch: B, seqLen: S } = inp, V = model.config.vocabSize;
  if (!(Number.isInteger(B) && B >= 1 && Number.isInteger(S) && S >= 1)) {
    throw new RangeError(`forwardBackward: batch and seqLen must be integers >= 1, got ${B}, ${S}`);
  }
  if (inp.ids.length !== B * S) {
    throw new RangeError(
      `forwardBackward: ids has ${inp.ids.length} values, expected [B, S] = ${fmtShape([B, S])}`,
    );
  }
  for (let i = 0; i < inp.ids.length; i++) {
    if (!(inp.ids[i] >= 0 && inp.ids[i] < V)) {
      throw new RangeError(`forwardBackward: ids[${i}] = ${inp.ids[i]} is outside [0, ${V})`);
    }
  }
  if (inp.objective === "distill" && !model.config.isDms && !inp.teacher) {
    throw new TypeError(
      'forwardBackward: objective "distill" needs a DMS model (config.isDms); use "lm"',
    );
  }
  if (inp.objective !== "distill" && inp.objective !== "lm") {
    throw new TypeError(
      `forwardBackward: objective must be "distill" or "lm", got ${inp.objective}`,
    );
  }
  if (inp.targetWeights && inp.targetWeights.length !== B * S) {
    throw new RangeError(
      `forwardBackward: targetWeights has ${inp.targetWeights.length} values, expected [B, S] = ${
        fmtShape([B, S])
      }`,
    );
  }
}

function layerNoise(model: Transformer, inp: StepInputs): F32[] {
  const cfg = model.config, shape = [inp.batch, cfg.numKvHeads, inp.seqLen];
  const n = inp.noise;
  if (!n) throw new RangeError('forwardBackward: objective "distill" needs noise');
  if (Array.isArray(n)) {
    const list = n as readonly Tensor<"f32">[];
    if (list.length !== cfg.numLayers) {
      throw new RangeError(
        `forwardBackward: noise: expected ${cfg.numLayers} layers, got ${list.length}`,
      );
    }
    list.forEach((t, l) => {
      if (t.dtype !== "f32" || t.shape.join() !== shape.join()) {
        throw new RangeError(
          `forwardBackward: noise[${l}]: expected f32${fmtShape(shape)}, got ${t.dtype}${
            fmtShape(t.shape)
          }`,
        );
      }
    });
    return list.map((t) => t.reshape(t.shape));
  }
  const key = n as { seed: number; step: number };
  return Array.from(
    { length: cfg.numLayers },
    (_, layer) => logisticNoise(model.gpu, shape, { seed: key.seed, step: key.step, layer }),
  );
}

/**
 * One training step: forward (recorded), losses, backward; gradients of the trainable weights.
 *
 * @param model An f32 model (its weights are read, never changed).
 * @param inputs Tokens, objective, noise, trainable set (see {@linkcode StepInputs}).
 * @param opts `keepLogits`.
 * @returns Losses and gradients on the GPU (see {@linkcode StepOutputs}); nothing read back.
 * @throws {TypeError} A model that is not f32 (naming its dtype), "distill" on a plain model.
 * @throws {RangeError} Wrong ids / noise shapes, ids outside the vocabulary.
 */
export function forwardBackward(
  model: Transformer,
  inputs: StepInputs,
  opts: StepOptions = {},
): StepOutputs {
  checkF32Model(model);
  checkInputs(model, inputs);
  const cfg = model.config, gpu = model.gpu, w = model.weights;
  const B = inputs.batch, S = inputs.seqLen, N = B * S, V = cfg.vocabSize;
  const distill = inputs.objective === "distill";
  const params = trainableParameters(model, inputs.trainable);
  const tape = new Tape();
  for (const t of params.values()) tape.requiresGrad(t);
  const owned: Tensor[] = [];
  const own = <T extends Tensor>(t: T): T => (owned.push(t), t);
  const idsFlat = own(Tensor.fromArray(gpu, inputs.ids, [N], "i32"));
  const positions = own(
    Tensor.fromArray(gpu, Int32Array.from({ length: N }, (_, i) => i % S), [B, S], "i32"),
  );
  const invFreq = own(Tensor.fromArray(gpu, invFreqFor(cfg), [cfg.headDim / 2], "f32"));
  const noise = distill ? layerNoise(model, inputs).map(own) : [];
  const result: Partial<StepOutputs> = {};
  try {
    // --- forward, recorded
    let x = embedT(tape, idsFlat, w.embed);
    const sts: F32[] = [];
    for (let l = 0; l < cfg.numLayers; l++) {
      const ctx: LayerContext = {
        config: cfg,
        batch: B,
        seqLen: S,
        positions,
        invFreq,
        noise: distill ? noise[l] : undefined,
      };
      let out: F32, st: F32 | undefined;
      if (inputs.checkpointLayers) {
        // the segment's input must outlive the forward: a view the tape holds until it unwinds
        const xl = x, xi = x.reshape(x.shape);
        tape.record(`layer ${l} input`, () => {
          const g = tape.grad(xi);
          if (g) tape.accumulate(xl, g.reshape(xl.shape));
        }, { outputs: [xi], saves: [xi] });
        const r = tape.checkpoint(`layer ${l}`, [xi], (t, [xi]) => {
          const o = trainLayer(t, l, w.layers[l], xi as F32, ctx);
          return o.straightThrough ? [o.out, o.straightThrough] : [o.out];
        }) as F32[];
        [out, st] = r;
      } else {
        const o = trainLayer(tape, l, w.layers[l], x, ctx);
        out = o.out;
        st = o.straightThrough;
      }
      x.dispose();
      x = out;
      if (st) sts.push(own(st));
    }
    const hn = rmsNormT(tape, "model.norm", x, w.finalNorm, cfg.rmsNormEps);
    x.dispose();
    const logits = own(lmHeadT(tape, hn, w.lmHead)); // [N, V]
    hn.dispose();

    // --- losses (SPEC §6), their gradients seeded into the tape
    if (distill) {
      const eos = new Set(inputs.eosTokenIds ?? []);
      using weights = Tensor.fromArray(
        gpu,
        Float32Array.from(inputs.ids, (id) => eos.has(id) ? 0 : 1),
        [N],
      );
      using ids2 = idsFlat.reshape([B, S]);
      const teacher3 = (inputs.teacher ?? model).forward(ids2 as Tensor<"i32">, {
        mode: "teacher",
        positions,
      })!;
      using teacher = teacher3.reshape([N, V]);
      const kl = klDivergence(logits, teacher, weights);
      if (opts.teacherLogits) opts.teacherLogits(teacher3);
      else teacher3.dispose();
      tape.accumulate(logits, kl.grad);
      result.lossDistill = kl.loss;
      if (sts.length) {
        const cr = compressionLoss(sts, inputs.alphaTarget ?? 0);
        sts.forEach((st, l) => tape.accumulate(st, cr.grads[l]));
        result.lossCr = cr.loss;
        result.fracClosed = cr.fracClosed;
        result.loss = add(kl.loss, cr.loss) as Tensor<"f32">;
      } else {
        result.loss = kl.loss.reshape([1]);
      }
    } else {
      const targets = Int32Array.from(
        { length: N },
        (_, i) => (i % S) < S - 1 ? inputs.ids[i + 1] : 0,
      );
      using tg = Tensor.fromArray(gpu, targets, [N], "i32");
      using weights = Tensor.fromArray(
        gpu,
        Float32Array.from(
          { length: N },
          (_, i) => (i % S) < S - 1 ? (inputs.targetWeights?.[i] ?? 1) : 0,
        ),
        [N],
      );
      const ce = crossEntropy(logits, tg, weights);
      tape.accumulate(logits, ce.grad);
      result.lossLm = ce.loss;
      result.loss = ce.loss.reshape([1]);
    }
    if (opts.keepLogits) result.logits = logits.reshape([B, S, V]);

    // --- backward: every record in reverse, activations freed as it unwinds
    tape.backward();
    const grads = new Map<string, Tensor<"f32">>();
    for (const [name, t] of params) {
      const g = tape.takeGrad(t) as Tensor<"f32"> | undefined;
      grads.set(name, g ?? Tensor.zeros(gpu, t.shape, "f32"));
    }
    result.grads = grads;
  } catch (e) {
    for (const t of Object.values(result)) if (t instanceof Tensor) t.dispose();
    for (const g of result.grads?.values() ?? []) g.dispose();
    throw e;
  } finally {
    tape.dispose();
    for (const t of owned) t.dispose();
  }
  const out = result as StepOutputs;
  out.dispose = () => {
    for (
      const t of [out.loss, out.lossDistill, out.lossCr, out.lossLm, out.fracClosed, out.logits]
    ) {
      t?.dispose();
    }
    for (const g of out.grads.values()) g.dispose();
  };
  return out;
}
