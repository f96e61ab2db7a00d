/**
 * Float64 references of the optimizer side of a training step: global
 * gradient-norm clipping as `torch.nn.utils.clip_grad_norm_` does it and one
 * `torch.optim.AdamW` step (decoupled weight decay, bias-corrected moments,
 * eps added to √v̂). The oracle of the WGSL optimizer kernels and of the
 * `adamw1.*` / `adamw2.*` tensors of the `train_step` golden cases.
 *
 * @example Clip, then two AdamW steps with the same gradients
 * ```ts
 * import { adamwReferenceStep, clipGradNormReference, newAdamwState } from "./reference_adamw.ts";
 * const w = new Map([["w", new Float64Array([1, -2])]]);
 * const g = new Map([["w", new Float64Array([3, 4])]]);
 * const { totalNorm, grads } = clipGradNormReference(g, 1); // totalNorm 5, grads [0.6, 0.8]
 * const state = newAdamwState(w);
 * const opts = { lr: 0.01, betas: [0.9, 0.999] as const, eps: 1e-8, weightDecay: 0.1 };
 * adamwReferenceStep(w, grads, state, opts);
 * adamwReferenceStep(w, grads, state, opts);
 * console.log(totalNorm, w.get("w"));
 * ```
 *
 * @module
 */

/** AdamW hyper-parameters (torch names). */
export interface AdamwOptions {
  /** Learning rate. */
  readonly lr: number;
  /** (β1, β2) moment decay rates. */
  readonly betas: readonly [number, number];
  /** Added to √v̂. */
  readonly eps: number;
  /** Decoupled weight decay: `w -= lr·weightDecay·w` before the Adam update. */
  readonly weightDecay: number;
}

/** Per-weight AdamW state: step count and the two moments (by weight name). */
export interface AdamwState {
  /** Steps taken so far. */
  step: number;
  /** First moments, shaped like the weights. */
  readonly m: Map<string, Float64Array>;
  /** Second moments, shaped like the weights. */
  readonly v: Map<string, Float64Array>;
}

/** Fresh AdamW state (step 0, zero moments) for these weights. */
export function newAdamwState(weights: ReadonlyMap<string, Float64Array>): AdamwState {
  const m = new Map<string, Float64Array>(), v = new Map<string, Float64Array>();
  for (const [name, w] of weights) {
    m.set(name, new Float64Array(w.length));
    v.set(name, new Float64Array(w.length));
  }
  return { step: 0, m, v };
}

/**
 * `clip_grad_norm_(params, maxNorm)`: the global L2 norm over all gradients,
 * then every gradient times `min(1, maxNorm / (norm + 1e−6))`.
 *
 * @returns the norm BEFORE clipping and new, clipped gradient arrays (inputs untouched)
 */
export function clipGradNormReference(
  grads: ReadonlyMap<string, Float64Array>,
  maxNorm: number,
): { totalNorm: number; grads: Map<string, Float64Array> } {
  let ss = 0;
  for (const g of grads.values()) for (const x of g) ss += x * x;
  const totalNorm = Math.sqrt(ss);
  const coef = Math.min(1, maxNorm / (totalNorm + 1e-6));
  const out = new Map<string, Float64Array>();
  for (const [name, g] of grads) out.set(name, g.map((x) => x * coef));
  return { totalNorm, grads: out };
}

/**
 * One `torch.optim.AdamW` step in place on `weights` (every weight that has a gradient):
 * `w -= lr·wd·w; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
 * w -= (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + eps)`.
 *
 * @throws {RangeError} naming the weight when a gradient's length differs from its weight's
 */
export function adamwReferenceStep(
  weights: ReadonlyMap<string, Float64Array>,
  grads: ReadonlyMap<string, Float64Array>,
  state: AdamwState,
  options: AdamwOptions,
): void {
  const { lr, eps, weightDecay } = options;
  const [b1, b2] = options.betas;
  const t = ++state.step;
  const bc1 = 1 - b1 ** t, bc2 = 1 - b2 ** t;
  for (const [name, g] of grads) {
    const w = weights.get(name);
    if (!w) throw new RangeError(`adamwReferenceStep: no weight "${name}" for its gradient`);
    if (w.length !== g.length) {
      throw new RangeError(
        `adamwReferenceStep: "${name}": gradient has ${g.length} values, weight ${w.length}`,
      );
    }
    let m = state.m.get(name), v = state.v.get(name);
    if (!m) state.m.set(name, m = new Float64Array(w.length));
    if (!v) state.v.set(name, v = new Float64Array(w.length));
    for (let i = 0; i < w.length; i++) {
      w[i] *= 1 - lr * weightDecay;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const denom = Math.sqrt(v[i]) / Math.sqrt(bc2) + eps;
      w[i] -= (lr / bc1) * (m[i] / denom);
    }
  }
}
