/**
 * DMS eviction decisions on the GPU (SPEC §1, §4): the decision logit
 * `alpha` per (batch, KV head, position), its hard threshold at inference,
 * and the Gumbel-sigmoid relaxation with straight-through values in training.
 *
 * Two sources of the raw logit (SPEC §1):
 * - borrowed query neuron: {@linkcode takeQueryNeuron} reads channel D−1 of
 *   the first query head of each GQA group after q_norm and zeroes it; after
 *   RoPE, {@linkcode zeroQueryNeuron} zeroes it again;
 * - separate adapter: `Wα · RMSNormα(x)` on the pre-norm residual, computed
 *   with the ordinary `rmsNorm` and `linear` ops by the attention layer.
 * Then `alpha = alphaScale · raw − alphaOffset` ({@linkcode inferDecisions},
 * {@linkcode trainDecisions}). With `perLayer`, head 0 decides for all heads.
 *
 * Kernels: `shaders/dms_decision.wgsl`, one thread per element.
 *
 * @example Hard decisions from adapter logits
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { inferDecisions } from "./decisions.ts";
 * const gpu = await getGpu();
 * using raw = Tensor.fromArray(gpu, [0.06, 0.01, 0.04, 0.07], [1, 2, 2]); // [B, T, Hkv]
 * const { alpha, decisions } = inferDecisions(raw, { alphaScale: 100, alphaOffset: 5 });
 * console.log(await decisions.toArray()); // [B, Hkv, T] = [1, 0, 0, 1]
 * ```
 *
 * @module
 */

import { Gpu, type ParamValues } from "../gpu/device.ts";
import { fmtShape, Tensor } from "../tensor/tensor.ts";
import { assertRank } from "../ops/launch.ts";
import { gumbelSigmoid, logSigmoid } from "./oracle.ts";

const WG = 64;

/** How the raw logit becomes `alpha` (SPEC §1). */
export interface DecisionOptions {
  /** `dms_alpha_scale` (reference default 100). */
  alphaScale: number;
  /** `dms_initial_alpha_offset` (reference default 5). */
  alphaOffset: number;
  /** `dms_alpha_per == "layer"`: head 0's decision for every KV head. */
  perLayer?: boolean;
}

/** Hard decisions at inference. */
export interface InferDecisions {
  /** `[B, Hkv, T]` alpha after the per-layer broadcast. */
  alpha: Tensor<"f32">;
  /** `[B, Hkv, T]` i32 `1[alpha > 0]`; `decisions[.., t]` marks key t−1. */
  decisions: Tensor<"i32">;
}

/** Relaxed decisions in training (SPEC §4). All `[B, Hkv, T]`. */
export interface TrainDecisions {
  /** alpha per head (not broadcast). */
  alpha: Tensor<"f32">;
  /** `(alpha + noise) / tau` (broadcast for per-layer). */
  z: Tensor<"f32">;
  /** `σ(z)`. */
  prob: Tensor<"f32">;
  /** i32 `1[p > 0.5]`. */
  hard: Tensor<"i32">;
  /** Straight-through forward value `hard − p + p`. */
  straightThrough: Tensor<"f32">;
  /** Additive score term for keys beyond the window: `log σ(−z[t+1])`, `log σ(0)` for the last. */
  farBias: Tensor<"f32">;
}

function params(
  b: number,
  t: number,
  hq: number,
  hkv: number,
  d: number,
  o?: DecisionOptions,
  tau = 1,
): ParamValues {
  return {
    b,
    t,
    hq,
    hkv,
    d,
    per_layer: o?.perLayer ? 1 : 0,
    scale: o?.alphaScale ?? 1,
    offset: o?.alphaOffset ?? 0,
    inv_tau: 1 / tau,
    zero: 0,
  };
}

/**
 * Reads the borrowed query neuron and zeroes it in place (SPEC §1a, before RoPE).
 *
 * @param q `[B, T, Hq, D]` queries after q_norm (modified: channel D−1 of heads h·G set to 0).
 * @param kvHeads Hkv.
 * @returns raw `[B, T, Hkv]` = `q[b, t, h·G, D−1]`.
 */
export function takeQueryNeuron(q: Tensor, kvHeads: number): Tensor<"f32"> {
  assertRank(q, 4, "takeQueryNeuron q [B, T, Hq, D]");
  const [b, t, hq, d] = q.shape;
  checkHeads(hq, kvHeads);
  const gpu = q.gpu;
  const raw = Tensor.empty(gpu, [b, t, kvHeads], "f32");
  const k = gpu.kernel({
    shader: "dms_decision",
    entry: "neuron_take",
    defines: { T: q.dtype },
    constants: { WG },
  });
  gpu.dispatch(
    k,
    [q.buffer, raw.buffer],
    Gpu.grid(Math.ceil((b * t * kvHeads) / WG)),
    params(b, t, hq, kvHeads, d),
  );
  return raw;
}

/**
 * Zeroes channel D−1 of the first query head of each group again, after RoPE.
 *
 * @param q `[B, Hq, T, D]` (attention layout), modified in place.
 */
export function zeroQueryNeuron(q: Tensor, kvHeads: number): void {
  assertRank(q, 4, "zeroQueryNeuron q [B, Hq, T, D]");
  const [b, hq, t, d] = q.shape;
  checkHeads(hq, kvHeads);
  const gpu = q.gpu;
  const k = gpu.kernel({
    shader: "dms_decision",
    entry: "neuron_zero",
    defines: { T: q.dtype },
    constants: { WG },
  });
  gpu.dispatch(
    k,
    [q.buffer],
    Gpu.grid(Math.ceil((b * t * kvHeads) / WG)),
    params(b, t, hq, kvHeads, d),
  );
}

/**
 * Hard inference decisions (SPEC §1): `alpha = scale·raw − offset`, `d = 1[alpha > 0]`.
 *
 * @param raw `[B, T, Hkv]` f32 raw logits.
 */
export function inferDecisions(raw: Tensor, opts: DecisionOptions): InferDecisions {
  const [b, t, hkv] = checkRaw(raw);
  const gpu = raw.gpu;
  const alpha = Tensor.empty(gpu, [b, hkv, t], "f32");
  const decisions = Tensor.empty(gpu, [b, hkv, t], "i32");
  const k = gpu.kernel({
    shader: "dms_decision",
    entry: "finalize_infer",
    constants: { WG },
    defines: { T: "f32" },
  });
  gpu.dispatch(
    k,
    [raw.buffer, alpha.buffer, decisions.buffer],
    Gpu.grid(Math.ceil((b * t * hkv) / WG)),
    params(b, t, hkv, hkv, 1, opts),
  );
  return { alpha, decisions };
}

/**
 * Gumbel-sigmoid decisions for training (SPEC §4) and the soft-mask term (SPEC §3).
 *
 * @param raw `[B, T, Hkv]` f32 raw logits.
 * @param noise `[B, Hkv, T]` f32 logistic noise (Gumbel − Gumbel), this layer's slice.
 * @param tau temperature (`dms_tau`, 0.1 in the reference recipe).
 */
export function trainDecisions(
  raw: Tensor,
  noise: Tensor,
  opts: DecisionOptions & { tau: number },
): TrainDecisions {
  const [b, t, hkv] = checkRaw(raw);
  if (noise.dtype !== "f32" || noise.shape.join() !== [b, hkv, t].join()) {
    throw new RangeError(
      `trainDecisions noise: expected f32${fmtShape([b, hkv, t])}, got ${noise.dtype}${
        fmtShape(noise.shape)
      }`,
    );
  }
  if (!(opts.tau > 0)) throw new RangeError(`trainDecisions: tau must be > 0, got ${opts.tau}`);
  const gpu = raw.gpu;
  const mk = () => Tensor.empty(gpu, [b, hkv, t], "f32");
  const alpha = mk(), z = mk(), prob = mk(), straightThrough = mk(), farBias = mk();
  const hard = Tensor.empty(gpu, [b, hkv, t], "i32");
  const k = gpu.kernel({
    shader: "dms_decision",
    entry: "finalize_train",
    constants: { WG },
    defines: { T: "f32" },
  });
  gpu.dispatch(
    k,
    [
      raw.buffer,
      alpha.buffer,
      hard.buffer,
      noise.buffer,
      z.buffer,
      prob.buffer,
      straightThrough.buffer,
      farBias.buffer,
    ],
    Gpu.grid(Math.ceil((b * t * hkv) / WG)),
    params(b, t, hkv, hkv, 1, opts, opts.tau),
  );
  return { alpha, z, prob, hard, straightThrough, farBias };
}

/** CPU reference of {@linkcode inferDecisions}: raw `[B, T, Hkv]` → alpha, decisions `[B, Hkv, T]`. */
export function inferDecisionsReference(
  raw: ArrayLike<number>,
  shape: readonly [number, number, number],
  opts: DecisionOptions,
): { alpha: Float64Array; decisions: Int32Array } {
  const [b, t, hkv] = shape;
  const alpha = new Float64Array(b * hkv * t), decisions = new Int32Array(b * hkv * t);
  for (let bi = 0; bi < b; bi++) {
    for (let h = 0; h < hkv; h++) {
      for (let ti = 0; ti < t; ti++) {
        const hs = opts.perLayer ? 0 : h;
        const a = raw[(bi * t + ti) * hkv + hs] * opts.alphaScale - opts.alphaOffset;
        const i = (bi * hkv + h) * t + ti;
        alpha[i] = a;
        decisions[i] = a > 0 ? 1 : 0;
      }
    }
  }
  return { alpha, decisions };
}

/** CPU reference of {@linkcode trainDecisions} (f64). */
export function trainDecisionsReference(
  raw: ArrayLike<number>,
  noise: ArrayLike<number>,
  shape: readonly [number, number, number],
  opts: DecisionOptions & { tau: number },
): {
  alpha: Float64Array;
  z: Float64Array;
  prob: Float64Array;
  hard: Int32Array;
  farBias: Float64Array;
} {
  const [b, t, hkv] = shape;
  const n = b * hkv * t;
  const alpha = new Float64Array(n),
    z = new Float64Array(n),
    prob = new Float64Array(n),
    farBias = new Float64Array(n);
  const hard = new Int32Array(n);
  const zAt = (bi: number, h: number, ti: number) => {
    const hs = opts.perLayer ? 0 : h;
    const a = raw[(bi * t + ti) * hkv + hs] * opts.alphaScale - opts.alphaOffset;
    return gumbelSigmoid(a, noise[(bi * hkv + hs) * t + ti], opts.tau);
  };
  for (let bi = 0; bi < b; bi++) {
    for (let h = 0; h < hkv; h++) {
      for (let ti = 0; ti < t; ti++) {
        const i = (bi * hkv + h) * t + ti;
        const g = zAt(bi, h, ti);
        alpha[i] = raw[(bi * t + ti) * hkv + h] * opts.alphaScale - opts.alphaOffset;
        z[i] = g.z;
        prob[i] = g.p;
        hard[i] = g.p > 0.5 ? 1 : 0;
        farBias[i] = logSigmoid(-(ti + 1 < t ? zAt(bi, h, ti + 1).z : 0));
      }
    }
  }
  return { alpha, z, prob, hard, farBias };
}

function checkRaw(raw: Tensor): [number, number, number] {
  if (raw.dtype !== "f32" || raw.rank !== 3) {
    throw new RangeError(
      `decision logits: expected f32 [B, T, Hkv], got ${raw.dtype}${fmtShape(raw.shape)}`,
    );
  }
  return raw.shape as [number, number, number];
}

function checkHeads(hq: number, hkv: number): void {
  if (!(Number.isInteger(hkv) && hkv > 0 && hq % hkv === 0)) {
    throw new RangeError(`query heads (${hq}) must be a positive multiple of KV heads (${hkv})`);
  }
}
