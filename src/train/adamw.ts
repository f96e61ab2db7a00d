/**
 * The optimizer of DMS training (SPEC §6: AdamW, β = (0.9, 0.95), wd 0, gradient clipping at
 * 1.0 in the reference recipe), on the GPU with f32 master weights:
 *
 * - {@linkcode globalGradNorm}: `‖(g_1, …, g_k)‖₂` over all gradients, a deterministic
 *   two-level reduction (per-workgroup partial sums of squares in a fixed order, then one
 *   workgroup over the partials).
 * - {@linkcode clipGradients}: `torch.nn.utils.clip_grad_norm_`: every gradient times
 *   `min(1, maxNorm / (norm + 1e−6))`, in place; returns the norm before clipping.
 * - {@linkcode AdamW}: `torch.optim.AdamW` (non-amsgrad, the foreach path's formulas):
 *   `p ← p·(1 − lr·wd)`; `m ← lerp(m, g, 1 − β1)`; `v ← β2·v + (1 − β2)·g²`;
 *   `p ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + eps)` with t the step count from 1. The
 *   scalar factors are computed in f64 and rounded to f32, as torch does with Python floats.
 *   State (`m`, `v`, step) exports to Float32Arrays for checkpoints and imports back.
 *
 * The f64 twins are `clipGradNormReference` and `adamwReferenceStep` in reference_adamw.ts
 * (one home for the reference optimizer; this module shares its {@linkcode AdamwOptions}).
 *
 * Kernels (`shaders/adamw.wgsl`): `sumsq_partial` (4096 elements per workgroup), `norm_total`,
 * `clip` and `adamw` (one thread per element). Tensors over the binding limit (128 MiB, e.g.
 * a 151936×4096 embedding gradient) are processed in windows. Nothing reads back.
 *
 * @example Clip, then one step
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { AdamW, clipGradients } from "./adamw.ts";
 * const gpu = await getGpu();
 * using w = Tensor.fromArray(gpu, [1, -2], [2]);
 * using g = Tensor.fromArray(gpu, [3, 4], [2]);
 * const opt = new AdamW([w], { lr: 0.01, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0 });
 * using norm = clipGradients([g], 1.0); // norm [5]; g is now [0.6, 0.8]
 * opt.step([g]);
 * console.log(await norm.toArray(), await w.toArray()); // [5] [0.99, -2.01]
 * opt.dispose();
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { fmtShape, Tensor } from "../tensor/tensor.ts";
import type { AdamwOptions } from "./reference_adamw.ts";

export type { AdamwOptions } from "./reference_adamw.ts";

/** Binding-limit option of the optimizer functions. */
export interface OptimizerOptions {
  /**
   * Largest byte range bound per buffer; default and maximum: 128 MiB (or the device's
   * `maxStorageBufferBindingSize` when lower). Lower it to exercise the windows.
   */
  maxBindingBytes?: number;
}

/** AdamW state for a checkpoint: the step count and the moments, in parameter order. */
export interface AdamwCheckpoint {
  /** Steps taken. */
  step: number;
  /** First moments, one per parameter. */
  m: Float32Array[];
  /** Second moments, one per parameter. */
  v: Float32Array[];
}

const WG = 256;
const BLOCK = WG * 16; // elements per sumsq_partial workgroup (PER_THREAD in the shader)
const MAX_BINDING = 128 * 1024 * 1024;

const ZERO = {
  n: 0,
  base: 0,
  max_norm: 0,
  decay: 0,
  w1: 0,
  beta2: 0,
  one_minus_beta2: 0,
  bc2_sqrt: 0,
  eps: 0,
  neg_step: 0,
};

/** Windows `[start, end)` in elements: multiples of BLOCK (so 256-byte aligned), within the limit. */
function windows(gpu: Gpu, n: number, opts: OptimizerOptions): [number, number][] {
  const limit = Math.min(
    opts.maxBindingBytes ?? MAX_BINDING,
    MAX_BINDING,
    gpu.limits.maxStorageBufferBindingSize,
  );
  const per = Math.max(BLOCK, Math.floor(limit / 4 / BLOCK) * BLOCK);
  const out: [number, number][] = [];
  for (let s = 0; s < n; s += per) out.push([s, Math.min(n, s + per)]);
  return out;
}

function bind(
  t: Tensor,
  [s, e]: [number, number],
): { buffer: GPUBuffer; offset: number; size: number } {
  return { buffer: t.buffer, offset: s * 4, size: (e - s) * 4 };
}

function checkF32(op: string, what: string, t: Tensor): void {
  if (t.dtype !== "f32") {
    throw new TypeError(`${op}: ${what} must be f32, got ${t.dtype}${fmtShape(t.shape)}`);
  }
}

/**
 * The global L2 norm of all gradients, `sqrt(Σ_k Σ_i g_k[i]²)`, computed on the GPU.
 *
 * @param grads Gradients (f32, any shapes; at least one, on one device).
 * @param opts `maxBindingBytes` (tests).
 * @returns A new `[1]` f32 tensor.
 * @throws {TypeError} For a non-f32 gradient. {RangeError} For an empty list.
 */
export function globalGradNorm(
  grads: readonly Tensor[],
  opts: OptimizerOptions = {},
): Tensor<"f32"> {
  if (!grads.length) throw new RangeError("globalGradNorm: grads is empty");
  grads.forEach((g, i) => checkF32("globalGradNorm", `grads[${i}]`, g));
  const gpu = grads[0].gpu;
  const plan = grads.map((g) => windows(gpu, g.size, opts));
  const count = plan.flat().reduce((a, [s, e]) => a + Math.ceil((e - s) / BLOCK), 0);
  using partials = Tensor.zeros(gpu, [Math.max(1, count)], "f32");
  const norm = Tensor.zeros(gpu, [1], "f32");
  const kPart = gpu.kernel({ shader: "adamw", entry: "sumsq_partial", constants: { WG } });
  let base = 0;
  grads.forEach((g, k) => {
    for (const w of plan[k]) {
      const blocks = Math.ceil((w[1] - w[0]) / BLOCK);
      gpu.dispatch(kPart, [bind(g, w), partials.buffer], Gpu.grid(blocks), {
        ...ZERO,
        n: w[1] - w[0],
        base,
      });
      base += blocks;
    }
  });
  const kTotal = gpu.kernel({ shader: "adamw", entry: "norm_total", constants: { WG } });
  gpu.dispatch(kTotal, [partials.buffer, norm.buffer], [1], { ...ZERO, n: count });
  return norm;
}

/**
 * `torch.nn.utils.clip_grad_norm_(params, maxNorm)`: scales every gradient in place by
 * `min(1, maxNorm / (norm + 1e−6))`, the factor computed on the GPU (no readback).
 *
 * @param grads Gradients (f32), modified in place.
 * @param maxNorm Largest allowed global norm (> 0).
 * @param opts `maxBindingBytes` (tests).
 * @returns The global norm before clipping, a new `[1]` f32 tensor (`grad_total_norm`).
 */
export function clipGradients(
  grads: readonly Tensor[],
  maxNorm: number,
  opts: OptimizerOptions = {},
): Tensor<"f32"> {
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) {
    throw new RangeError(`clipGradients: maxNorm must be a finite number > 0, got ${maxNorm}`);
  }
  const norm = globalGradNorm(grads, opts);
  const gpu = norm.gpu;
  const k = gpu.kernel({ shader: "adamw", entry: "clip", constants: { WG } });
  for (const g of grads) {
    for (const w of windows(gpu, g.size, opts)) {
      const n = w[1] - w[0];
      gpu.dispatch(k, [bind(g, w), norm.buffer], Gpu.grid(Math.ceil(n / WG)), {
        ...ZERO,
        n,
        max_norm: maxNorm,
      });
    }
  }
  return norm;
}

/** `torch.optim.AdamW` over f32 parameters updated in place on the GPU. */
export class AdamW {
  /** The parameters, in the order `step()` expects their gradients. */
  readonly params: readonly Tensor[];
  /** Hyper-parameters (`lr` may be overridden per step). */
  readonly options: AdamwOptions;
  #m: Tensor<"f32">[];
  #v: Tensor<"f32">[];
  #step = 0;
  #opts: OptimizerOptions;

  /**
   * Creates the optimizer with zeroed moments (step 0) for these parameters.
   *
   * @param params f32 parameters (the master weights), updated in place by `step()`.
   * @param options `{ lr, betas, eps, weightDecay }` (torch's names and meaning) and
   *   `maxBindingBytes` (tests).
   * @throws {TypeError} For a non-f32 parameter. {RangeError} For an invalid hyper-parameter.
   */
  constructor(params: readonly Tensor[], options: AdamwOptions & OptimizerOptions) {
    params.forEach((p, i) => checkF32("AdamW", `params[${i}]`, p));
    const { lr, betas, eps, weightDecay } = options;
    for (const [k, x] of [["lr", lr], ["eps", eps], ["weightDecay", weightDecay]] as const) {
      if (!(x >= 0) || !Number.isFinite(x)) {
        throw new RangeError(`AdamW: ${k} must be finite and >= 0, got ${x}`);
      }
    }
    betas.forEach((b, i) => {
      if (!(b >= 0 && b < 1)) {
        throw new RangeError(`AdamW: betas[${i}] must be in [0, 1), got ${b}`);
      }
    });
    this.params = [...params];
    this.options = { lr, betas: [betas[0], betas[1]], eps, weightDecay };
    this.#opts = { maxBindingBytes: options.maxBindingBytes };
    this.#m = params.map((p) => Tensor.zeros(p.gpu, p.shape, "f32"));
    this.#v = params.map((p) => Tensor.zeros(p.gpu, p.shape, "f32"));
  }

  /** Steps taken so far (the bias corrections of the next step use `stepCount + 1`). */
  get stepCount(): number {
    return this.#step;
  }

  /**
   * One update of every parameter with its gradient (already clipped, if clipping).
   *
   * @param grads One f32 gradient per parameter, same shapes, same order.
   * @param lr This step's learning rate (default `options.lr`).
   * @throws {RangeError} When the count or a shape differs, naming the parameter index.
   */
  step(grads: readonly Tensor[], lr: number = this.options.lr): void {
    if (grads.length !== this.params.length) {
      throw new RangeError(
        `AdamW.step: ${grads.length} gradients for ${this.params.length} parameters`,
      );
    }
    grads.forEach((g, i) => {
      checkF32("AdamW.step", `grads[${i}]`, g);
      const p = this.params[i];
      if (g.size !== p.size || g.shape.some((d, j) => d !== p.shape[j])) {
        throw new RangeError(
          `AdamW.step: grads[${i}] ${fmtShape(g.shape)} does not match params[${i}] ${
            fmtShape(p.shape)
          }`,
        );
      }
    });
    const t = ++this.#step;
    const { eps, weightDecay } = this.options;
    const [b1, b2] = this.options.betas;
    const scalars = {
      decay: 1 - lr * weightDecay,
      w1: 1 - b1,
      beta2: b2,
      one_minus_beta2: 1 - b2,
      bc2_sqrt: Math.sqrt(1 - b2 ** t),
      eps,
      neg_step: -lr / (1 - b1 ** t),
    };
    this.params.forEach((p, i) => {
      const gpu = p.gpu;
      const k = gpu.kernel({ shader: "adamw", entry: "adamw", constants: { WG } });
      for (const w of windows(gpu, p.size, this.#opts)) {
        const n = w[1] - w[0];
        const bufs = [bind(grads[i], w), bind(p, w), bind(this.#m[i], w), bind(this.#v[i], w)];
        gpu.dispatch(k, bufs, Gpu.grid(Math.ceil(n / WG)), { ...ZERO, ...scalars, n });
      }
    });
  }

  /** Reads the state back (one readback for all moments) for a checkpoint. */
  async exportState(): Promise<AdamwCheckpoint> {
    const gpu = this.params[0]?.gpu;
    if (!gpu) return { step: this.#step, m: [], v: [] };
    const ranges = [...this.#m, ...this.#v].map((t) => ({ buffer: t.buffer, size: t.byteSize }));
    const bytes = await gpu.readMany(ranges);
    const arrays = bytes.map((b) => new Float32Array(b));
    const n = this.params.length;
    return { step: this.#step, m: arrays.slice(0, n), v: arrays.slice(n) };
  }

  /**
   * Restores a state from {@linkcode AdamW.exportState} (a resumed run then continues exactly).
   *
   * @throws {RangeError} When the number or sizes of the moments do not match the parameters.
   */
  importState(state: AdamwCheckpoint): void {
    if (!Number.isInteger(state.step) || state.step < 0) {
      throw new RangeError(`AdamW.importState: step must be an integer >= 0, got ${state.step}`);
    }
    const n = this.params.length;
    if (state.m.length !== n || state.v.length !== n) {
      throw new RangeError(
        `AdamW.importState: ${state.m.length} m and ${state.v.length} v arrays for ${n} parameters`,
      );
    }
    this.params.forEach((p, i) => {
      for (const [name, a] of [["m", state.m[i]], ["v", state.v[i]]] as const) {
        if (a.length !== p.size) {
          throw new RangeError(
            `AdamW.importState: ${name}[${i}] has ${a.length} values, params[${i}] ${
              fmtShape(p.shape)
            } ${p.size}`,
          );
        }
      }
      this.#m[i].write(state.m[i]);
      this.#v[i].write(state.v[i]);
    });
    this.#step = state.step;
  }

  /** Frees the moment buffers (the parameters stay the caller's). */
  dispose(): void {
    for (const t of [...this.#m, ...this.#v]) t.dispose();
    this.#m = [];
    this.#v = [];
  }

  /** `using opt = new AdamW(...)` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
