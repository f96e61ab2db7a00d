/**
 * Backward of the DMS training decisions (SPEC §1, §3, §4): from the gradients of the soft
 * mask's far bias and of the straight-through values back to the raw decision logits, and from
 * there into the borrowed query neuron (SPEC §1a).
 *
 * The forward ({@linkcode trainDecisions} in `./decisions.ts`), per (b, KV head h, position t),
 * with `hs = perLayer ? 0 : h`:
 * - `z[b, h, t] = (alphaScale · raw[b, t, hs] − alphaOffset + noise[b, hs, t]) / tau`,
 *   `p = σ(z)`;
 * - straight-through `hard − stopgrad(p) + p`: gradient `dST · p (1 − p)` into z (SPEC §4);
 * - `farBias[b, h, t−1] = log σ(−z[b, h, t])` for `t ≥ 1` (the shift by one of SPEC §2):
 *   gradient `−dFarBias · σ(z)` into z (SPEC §3); the last key's `log σ(0)` is a constant;
 * - `dRaw[b, t, hs] = alphaScale / tau · Σ_h dz[b, h, t]`: with `perLayer` every head's z is
 *   head 0's, so their gradients sum into head 0 and the other raw logits get 0.
 *
 * Borrowed neuron (SPEC §1a): the raw logit is `q̂[b, t, h·G, D−1]` after q_norm, and that channel
 * is zeroed before and after RoPE, so attention passes no gradient into it.
 * {@linkcode zeroQueryNeuronBackward} zeroes the channel in `dq` after RoPE's layout (before the
 * RoPE backward, so nothing leaks into the rotation partner d/2−1), and
 * {@linkcode takeQueryNeuronBackward} writes `dRaw` into it before q_norm's backward.
 *
 * Kernels (`shaders/dms_decision_backward.wgsl`), f32, one thread per output element:
 * `decisions_backward` (one per raw logit; loops over the heads that read it, in order, so the
 * per-layer sum is deterministic), `neuron_take_backward`, `neuron_zero_backward`.
 *
 * @example Gradient of the raw logits from a far-bias gradient
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { trainDecisionsBackward } from "./decisions_backward.ts";
 * const gpu = await getGpu();
 * using raw = Tensor.fromArray(gpu, [0.1, -0.2, 0.3], [1, 3, 1]); // [B, T, Hkv]
 * using noise = Tensor.zeros(gpu, [1, 1, 3]);
 * using dFarBias = Tensor.fromArray(gpu, [1, 1, 1], [1, 1, 3]);
 * const opts = { alphaScale: 1, alphaOffset: 0, tau: 1 };
 * using dRaw = trainDecisionsBackward(raw, noise, opts, { dFarBias });
 * console.log(await dRaw.toArray()); // [0, −σ(−0.2), −σ(0.3)]
 * ```
 *
 * @module
 */

import { Gpu, type ParamValues } from "../gpu/device.ts";
import { fmtShape, Tensor } from "../tensor/tensor.ts";
import type { DecisionOptions } from "./decisions.ts";

const WG = 64;

/** Upstream gradients of {@linkcode trainDecisionsBackward}; both `[B, Hkv, T]` f32, each optional. */
export interface TrainDecisionGradients {
  /** Gradient of the `farBias` output (from `attentionBackward`'s `dFarBias`). */
  dFarBias?: Tensor;
  /** Gradient of the `straightThrough` output (from the compression loss). */
  dStraightThrough?: Tensor;
}

/** Options of the training decisions: {@linkcode DecisionOptions} and `tau`. */
export type TrainDecisionOptions = DecisionOptions & { tau: number };

function params(
  b: number,
  t: number,
  hq: number,
  hkv: number,
  d: number,
  o?: TrainDecisionOptions,
  flags = 0,
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
    inv_tau: o ? 1 / o.tau : 1,
    flags,
  };
}

function checkF32(op: string, name: string, t: Tensor, shape: readonly number[]): void {
  if (t.dtype !== "f32") {
    throw new TypeError(`${op}: ${name} must be f32, got ${t.dtype}${fmtShape(t.shape)}`);
  }
  if (t.shape.join() !== shape.join()) {
    throw new RangeError(
      `${op}: ${name} must have shape ${fmtShape(shape)}, got ${fmtShape(t.shape)}`,
    );
  }
}

function checkHeads(op: string, hq: number, hkv: number): void {
  if (!(Number.isInteger(hkv) && hkv > 0 && hq % hkv === 0)) {
    throw new RangeError(
      `${op}: query heads (${hq}) must be a positive multiple of KV heads (${hkv})`,
    );
  }
}

/**
 * Gradient of the raw decision logits of {@linkcode trainDecisions} (SPEC §3, §4).
 *
 * @param raw `[B, T, Hkv]` f32 raw logits, as given to the forward.
 * @param noise `[B, Hkv, T]` f32 logistic noise, as given to the forward.
 * @param opts `alphaScale`, `alphaOffset`, `perLayer`, `tau`, as given to the forward.
 * @param grads `dFarBias` and/or `dStraightThrough`, each `[B, Hkv, T]` f32 (absent = 0).
 * @returns `dRaw:[B, T, Hkv]` f32.
 * @throws {TypeError} A tensor that is not f32.
 * @throws {RangeError} Shapes that do not match `raw`, or `tau <= 0`.
 */
export function trainDecisionsBackward(
  raw: Tensor,
  noise: Tensor,
  opts: TrainDecisionOptions,
  grads: TrainDecisionGradients,
): Tensor<"f32"> {
  const op = "trainDecisionsBackward()";
  if (raw.rank !== 3) {
    throw new RangeError(`${op}: raw must be [B, T, Hkv], got ${fmtShape(raw.shape)}`);
  }
  const [b, t, hkv] = raw.shape;
  checkF32(op, "raw", raw, [b, t, hkv]);
  checkF32(op, "noise", noise, [b, hkv, t]);
  if (grads.dFarBias) checkF32(op, "dFarBias", grads.dFarBias, [b, hkv, t]);
  if (grads.dStraightThrough) {
    checkF32(op, "dStraightThrough", grads.dStraightThrough, [b, hkv, t]);
  }
  if (!(opts.tau > 0)) throw new RangeError(`${op}: tau must be > 0, got ${opts.tau}`);
  const gpu = raw.gpu;
  const dRaw = Tensor.empty(gpu, [b, t, hkv], "f32");
  const n = b * t * hkv;
  if (n === 0) return dRaw;
  const flags = (grads.dFarBias ? 1 : 0) | (grads.dStraightThrough ? 2 : 0);
  const k = gpu.kernel({
    shader: "dms_decision_backward",
    entry: "decisions_backward",
    constants: { WG },
  });
  gpu.dispatch(
    k,
    [
      raw.buffer,
      noise.buffer,
      (grads.dFarBias ?? noise).buffer, // bound, never read, when absent
      (grads.dStraightThrough ?? noise).buffer,
      dRaw.buffer,
    ],
    Gpu.grid(Math.ceil(n / WG)),
    params(b, t, hkv, hkv, 1, opts, flags),
  );
  return dRaw;
}

/**
 * Backward of `takeQueryNeuron` (SPEC §1a): `dq` with channel D−1 of the first query head of
 * each group replaced by the raw logit's gradient (the forward zeroed that channel, so the
 * gradient arriving there from attention is dropped).
 *
 * @param dq `[B, T, Hq, D]` f32 gradient of the q_norm output after the neuron was taken.
 * @param dRaw `[B, T, Hkv]` f32 gradient of the raw logits ({@linkcode trainDecisionsBackward}).
 * @param kvHeads Hkv.
 * @returns `[B, T, Hq, D]` f32, the gradient of q_norm's output.
 */
export function takeQueryNeuronBackward(dq: Tensor, dRaw: Tensor, kvHeads: number): Tensor<"f32"> {
  const op = "takeQueryNeuronBackward()";
  if (dq.rank !== 4) {
    throw new RangeError(`${op}: dq must be [B, T, Hq, D], got ${fmtShape(dq.shape)}`);
  }
  const [b, t, hq, d] = dq.shape;
  checkHeads(op, hq, kvHeads);
  checkF32(op, "dq", dq, [b, t, hq, d]);
  checkF32(op, "dRaw", dRaw, [b, t, kvHeads]);
  return neuronKernel(
    "neuron_take_backward",
    dq,
    [dRaw.buffer, dq.buffer],
    params(b, t, hq, kvHeads, d),
  );
}

/**
 * Backward of `zeroQueryNeuron` (SPEC §1a, after RoPE): `dq` with channel D−1 of the first query
 * head of each group zeroed. Apply it before the RoPE backward.
 *
 * @param dq `[B, Hq, T, D]` f32 (attention layout), e.g. `attentionBackward`'s `dq`.
 * @param kvHeads Hkv.
 * @returns `[B, Hq, T, D]` f32.
 */
export function zeroQueryNeuronBackward(dq: Tensor, kvHeads: number): Tensor<"f32"> {
  const op = "zeroQueryNeuronBackward()";
  if (dq.rank !== 4) {
    throw new RangeError(`${op}: dq must be [B, Hq, T, D], got ${fmtShape(dq.shape)}`);
  }
  const [b, hq, t, d] = dq.shape;
  checkHeads(op, hq, kvHeads);
  checkF32(op, "dq", dq, [b, hq, t, d]);
  return neuronKernel("neuron_zero_backward", dq, [dq.buffer], params(b, t, hq, kvHeads, d));
}

function neuronKernel(entry: string, dq: Tensor, ins: GPUBuffer[], p: ParamValues): Tensor<"f32"> {
  const gpu = dq.gpu;
  const out = Tensor.empty(gpu, dq.shape, "f32");
  if (dq.size === 0) return out;
  const k = gpu.kernel({ shader: "dms_decision_backward", entry, constants: { WG } });
  gpu.dispatch(k, [...ins, out.buffer], Gpu.grid(Math.ceil(dq.size / WG)), p);
  return out;
}

// ---------------------------------------------------------------------------------------------
// CPU twins (f64).

/** Upstream gradients of {@linkcode trainDecisionsBackwardReference}, flat `[B, Hkv, T]`. */
export interface TrainDecisionGradientArrays {
  /** Gradient of `farBias`. */
  dFarBias?: ArrayLike<number>;
  /** Gradient of the straight-through values (flows through p). */
  dStraightThrough?: ArrayLike<number>;
}

/**
 * CPU twin of {@linkcode trainDecisionsBackward} in f64, spelled out per forward output.
 *
 * @param raw `[B, T, Hkv]` flat.
 * @param noise `[B, Hkv, T]` flat.
 * @param shape `[B, T, Hkv]`.
 * @param opts As the forward's.
 * @param grads `dFarBias`, `dStraightThrough` (flat `[B, Hkv, T]`, absent = 0).
 * @returns `dRaw:[B, T, Hkv]`.
 */
export function trainDecisionsBackwardReference(
  raw: ArrayLike<number>,
  noise: ArrayLike<number>,
  shape: readonly [number, number, number],
  opts: TrainDecisionOptions,
  grads: TrainDecisionGradientArrays,
): Float64Array {
  const [b, t, hkv] = shape;
  const dRaw = new Float64Array(b * t * hkv);
  const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
  for (let bi = 0; bi < b; bi++) {
    for (let h = 0; h < hkv; h++) {
      const hs = opts.perLayer ? 0 : h; // the head whose raw logit and noise this head reads
      for (let ti = 0; ti < t; ti++) {
        const e = (bi * hkv + h) * t + ti;
        const raw0 = raw[(bi * t + ti) * hkv + hs];
        const z = (raw0 * opts.alphaScale - opts.alphaOffset + noise[(bi * hkv + hs) * t + ti]) /
          opts.tau;
        const p = sigmoid(z);
        let dz = 0;
        // straight-through hard − stopgrad(p) + p: d/dz = p (1 − p) (SPEC §4)
        if (grads.dStraightThrough) dz += grads.dStraightThrough[e] * p * (1 - p);
        // farBias[t − 1] = log σ(−z[t]) (SPEC §2, §3): d/dz = −σ(z)
        if (grads.dFarBias && ti >= 1) dz -= grads.dFarBias[e - 1] * p;
        dRaw[(bi * t + ti) * hkv + hs] += dz * opts.alphaScale / opts.tau;
      }
    }
  }
  return dRaw;
}

/**
 * CPU twin of {@linkcode takeQueryNeuronBackward}: copies `dq:[B, T, Hq, D]` and sets channel D−1
 * of head `h·G` to `dRaw[b, t, h]`.
 */
export function takeQueryNeuronBackwardReference(
  dq: ArrayLike<number>,
  dRaw: ArrayLike<number>,
  shape: readonly [number, number, number, number],
  kvHeads: number,
): Float64Array {
  const [b, t, hq, d] = shape;
  const G = hq / kvHeads;
  const out = Float64Array.from(dq);
  for (let bt = 0; bt < b * t; bt++) {
    for (let h = 0; h < kvHeads; h++) out[(bt * hq + h * G) * d + d - 1] = dRaw[bt * kvHeads + h];
  }
  return out;
}

/**
 * CPU twin of {@linkcode zeroQueryNeuronBackward}: copies `dq:[B, Hq, T, D]` with channel D−1
 * of head `h·G` zeroed.
 */
export function zeroQueryNeuronBackwardReference(
  dq: ArrayLike<number>,
  shape: readonly [number, number, number, number],
  kvHeads: number,
): Float64Array {
  const [b, hq, t, d] = shape;
  const G = hq / kvHeads;
  const out = Float64Array.from(dq);
  for (let bi = 0; bi < b; bi++) {
    for (let h = 0; h < hq; h += G) {
      for (let ti = 0; ti < t; ti++) out[((bi * hq + h) * t + ti) * d + d - 1] = 0;
    }
  }
  return out;
}
