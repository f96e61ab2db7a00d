/**
 * Backward of the dense causal GQA attention of {@linkcode attention} in training mode, with the
 * DMS soft mask (SPEC §3: keys beyond the window get `+ farBias[i] = log σ(−z[i+1])`).
 *
 * `attentionBackward(q, k, v, out, lse, dOut, opts)`: `q, out, dOut:[B, Hq, T, D]`,
 * `k, v:[B, Hkv, S, D]`, `lse:[B, Hq, T]` (the forward's `returnLse`), optional
 * `farBias:[B, Hkv, S]` → `{ dq, dk, dv, dFarBias? }`. FlashAttention-2 algorithm:
 * `Δ = rowsum(dOut ∘ out)`, `P = exp(s − lse)`, `dV = Σ Pᵀ dOut`, `dP = dOut Vᵀ`,
 * `dS = P ∘ (dP − Δ)`, `dQ = scale · dS K`, `dK = scale · dSᵀ Q`, and
 * `dFarBias[i] = Σ dS[·, i]` over the G query heads of the group and the queries with
 * `qpos − i > W`: the soft mask's gradient flows (the trap of the training golden vectors:
 * eager flex attention drops it). dk, dv and dFarBias sum over the G query heads of a group
 * inside one thread in a fixed order: deterministic, no atomics.
 *
 * Kernels (`shaders/attention_backward.wgsl`), f32 only:
 * - `delta` (both variants): `Δ` and `lse` per row and the far bias, into one side buffer
 *   (so that the main passes bind at most 8 storage buffers).
 * - `naive`: `naive_dq`, one thread per query row looping over all keys, and `naive_dkv`, one
 *   thread per key looping over the G heads' queries; private `[256]` accumulators. The
 *   readable reference kernels; no reuse of loaded rows.
 * - `flash` (default): `flash_dq`, one workgroup per (b, KV head, tile of R rows `t·G + g`)
 *   with K/V tiles of BK keys in workgroup memory shared by the tile's rows, stopping at the
 *   last causal key; `flash_dkv`, one workgroup per (b, KV head, tile of BK keys) with
 *   Q/dOut tiles of R rows shared by the tile's keys, starting at the first query that sees
 *   the tile. P and dS of a tile are computed once into workgroup memory; TD threads per row
 *   (or key) split the head dim. R = BK = 16/8/4/2 chosen so that the tiles fit
 *   {@linkcode BACKWARD_TILE_BYTES} (as the forward's, small for the GL backend's sake).
 *
 * @example Gradients of a tiny training-mode attention
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { attention } from "./attention.ts";
 * import { attentionBackward } from "./attention_backward.ts";
 * const gpu = await getGpu();
 * const [B, Hq, Hkv, T, D] = [1, 2, 1, 4, 8];
 * using q = Tensor.fromArray(gpu, new Float32Array(B * Hq * T * D).fill(0.1), [B, Hq, T, D]);
 * using k = Tensor.fromArray(gpu, new Float32Array(B * Hkv * T * D).fill(0.2), [B, Hkv, T, D]);
 * using v = Tensor.fromArray(gpu, new Float32Array(B * Hkv * T * D).map((_, i) => i % 3), [B, Hkv, T, D]);
 * using farBias = Tensor.fromArray(gpu, [-0.1, -2, -0.5, -0.7], [B, Hkv, T]);
 * using dOut = Tensor.fromArray(gpu, new Float32Array(B * Hq * T * D).fill(1), [B, Hq, T, D]);
 * const { out, lse } = attention(q, k, v, { window: 1, farBias, returnLse: true });
 * const g = attentionBackward(q, k, v, out, lse, dOut, { window: 1, farBias });
 * console.log(await g.dFarBias!.toArray()); // keys 0 and 1 are far for queries 2, 3 (and 3)
 * for (const t of [out, lse, g.dq, g.dk, g.dv, g.dFarBias!]) t.dispose();
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import { ATTENTION_MAX_D, attentionReference, EMPTY_ROW_LSE } from "./attention.ts";
import { assertRank, output } from "./launch.ts";

/** Workgroup memory budget of the flash backward tiles, in bytes (see the forward's `FLASH_TILE_BYTES`). */
export const BACKWARD_TILE_BYTES = 10240;

/** Kernel variants of {@linkcode attentionBackward}. */
export type AttentionBackwardKernel = "flash" | "naive";

/** Options of {@linkcode attentionBackward}: those the forward saw. */
export interface AttentionBackwardOptions {
  /** Score scale. Default `D^-0.5`. */
  scale?: number;
  /** Absolute position of query 0. Default `S - T`. */
  queryOffset?: number;
  /** DMS window W (integer ≥ 0); required with `farBias`. */
  window?: number;
  /** `farBias:[B, Hkv, S]` f32 as given to the forward (SPEC §3); its gradient is returned. */
  farBias?: Tensor;
  /** Kernel variant. Default `"flash"`. */
  kernel?: AttentionBackwardKernel;
}

/** Gradients returned by {@linkcode attentionBackward}. */
export interface AttentionGradients {
  /** `dq:[B, Hq, T, D]` f32. */
  dq: Tensor<"f32">;
  /** `dk:[B, Hkv, S, D]` f32 (summed over the G query heads of each group). */
  dk: Tensor<"f32">;
  /** `dv:[B, Hkv, S, D]` f32 (summed over the G query heads of each group). */
  dv: Tensor<"f32">;
  /** `dFarBias:[B, Hkv, S]` f32, only when `farBias` was given. */
  dFarBias?: Tensor<"f32">;
}

/** Flash backward tiles for head dim `D`: R = BK rows/keys, TD threads per row/key, 64 threads. */
function backwardTiles(D: number, storageBytes: number): Record<string, number> {
  const D4 = Math.ceil(D / 4);
  const vec4s = Math.min(storageBytes, BACKWARD_TILE_BYTES) / 16;
  // qs, dos, ks, vs: 4·R·D4 vec4s; ps, dss: 2·R·BK f32 (= R·BK/2 vec4s).
  let R = 16;
  while (R > 1 && 4 * R * D4 + (R * R) / 2 > vec4s) R /= 2;
  const TD = 64 / R;
  return { D, D4, R, BK: R, TD, DPT4: Math.ceil(D4 / TD), WG: 64 };
}

const NAIVE_WG = 64;
const I32_MAX = 2147483647;

function checkF32(op: string, name: string, t: Tensor, shape: number[], dims: string): void {
  if (t.dtype !== "f32") {
    throw new TypeError(`${op}: ${name} must be f32, got ${t.dtype}${fmtShape(t.shape)}`);
  }
  if (t.rank !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new RangeError(
      `${op}: ${name} must have shape ${dims} = ${fmtShape(shape)}, got ${fmtShape(t.shape)}`,
    );
  }
}

/**
 * Gradients of the training-mode attention (SPEC §3) with respect to q, k, v and the soft
 * mask's far bias, given the forward's inputs, its `out` and `lse`, and `dOut`.
 *
 * Shapes: `q, out, dOut:[B, Hq, T, D]`, `k, v:[B, Hkv, S, D]`, `lse:[B, Hq, T]`, optional
 * `farBias:[B, Hkv, S]`; all f32, `Hq % Hkv == 0`, `1 <= D <= 256`.
 *
 * @param q Queries `[B, Hq, T, D]`.
 * @param k Keys `[B, Hkv, S, D]`.
 * @param v Values `[B, Hkv, S, D]`.
 * @param out The forward's output `[B, Hq, T, D]`.
 * @param lse The forward's log-sum-exp `[B, Hq, T]` (`attention(..., { returnLse: true })`).
 * @param dOut Upstream gradient `[B, Hq, T, D]`.
 * @param opts The forward's scale, query offset, window and far bias; the kernel variant.
 * @returns `{ dq, dk, dv }`, plus `dFarBias:[B, Hkv, S]` when `farBias` is given.
 * @throws {TypeError} A tensor that is not f32.
 * @throws {RangeError} Shapes that do not fit together, D out of range, bad scale/window/offset.
 */
export function attentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  dOut: Tensor,
  opts: AttentionBackwardOptions = {},
): AttentionGradients {
  const op = "attentionBackward()";
  assertRank(q, 4, `${op} q [B, Hq, T, D]`);
  assertRank(k, 4, `${op} k [B, Hkv, S, D]`);
  const [B, Hq, T, D] = q.shape;
  const [, Hkv, S] = k.shape;
  if (Hkv < 1 || Hq % Hkv !== 0) {
    throw new RangeError(
      `${op}: query heads Hq=${Hq} of q ${fmtShape(q.shape)} must be a multiple of KV heads ` +
        `Hkv=${Hkv} of k ${fmtShape(k.shape)}`,
    );
  }
  if (D < 1 || D > ATTENTION_MAX_D) {
    throw new RangeError(`${op}: head dim D=${D} of q must be in 1..${ATTENTION_MAX_D}`);
  }
  checkF32(op, "q", q, [B, Hq, T, D], "[B, Hq, T, D]");
  checkF32(op, "k", k, [B, Hkv, S, D], "[B, Hkv, S, D]");
  checkF32(op, "v", v, [B, Hkv, S, D], "[B, Hkv, S, D]");
  checkF32(op, "out", out, [B, Hq, T, D], "[B, Hq, T, D]");
  checkF32(op, "lse", lse, [B, Hq, T], "[B, Hq, T]");
  checkF32(op, "dOut", dOut, [B, Hq, T, D], "[B, Hq, T, D]");
  if (opts.farBias) checkF32(op, "farBias", opts.farBias, [B, Hkv, S], "[B, Hkv, S]");
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  if (!Number.isFinite(scale)) throw new RangeError(`${op}: scale must be finite, got ${scale}`);
  const qoff = opts.queryOffset ?? S - T;
  if (!Number.isInteger(qoff) || Math.abs(qoff) + T + S > I32_MAX) {
    throw new RangeError(
      `${op}: queryOffset must be an integer with |queryOffset| + T + S < 2^31, got ${qoff}`,
    );
  }
  const w = opts.window;
  if (w !== undefined && !(Number.isInteger(w) && w >= 0) && w !== Infinity) {
    throw new RangeError(`${op}: window must be an integer >= 0, got ${w}`);
  }
  if (opts.farBias && w === undefined) {
    throw new RangeError(`${op}: farBias needs opts.window (the DMS window W)`);
  }
  const kind = opts.kernel ?? "flash";
  if (kind !== "flash" && kind !== "naive") {
    throw new RangeError(`${op}: kernel must be "flash" or "naive", got "${kind}"`);
  }

  const gpu = q.gpu;
  const G = Hq / Hkv;
  const rows = B * Hq * T, keys = B * Hkv * S;
  const dq = output(gpu, [B, Hq, T, D], "f32");
  const dk = output(gpu, [B, Hkv, S, D], "f32");
  const dv = output(gpu, [B, Hkv, S, D], "f32");
  const dFarBias = output(gpu, [B, Hkv, S], "f32");
  const aux = output(gpu, [2 * rows + keys], "f32");
  const params = {
    B,
    Hq,
    Hkv,
    G,
    T,
    S,
    qoff,
    window: Math.min(w ?? I32_MAX, I32_MAX),
    scale,
    flags: opts.farBias ? 2 : 0,
    tiles: 0,
  };
  if (rows + keys > 0) {
    const kernel = gpu.kernel({ shader: "attention_backward", entry: "delta", constants: { D } });
    gpu.dispatch(
      kernel,
      [out.buffer, dOut.buffer, lse.buffer, (opts.farBias ?? lse).buffer, aux.buffer],
      Gpu.grid(Math.ceil((rows + keys) / NAIVE_WG)),
      params,
    );
  }
  const ins = [q.buffer, k.buffer, v.buffer, dOut.buffer, aux.buffer];
  const run = (
    entry: string,
    constants: Record<string, number>,
    groups: number,
    tiles: number,
    outs: GPUBuffer[],
  ) => {
    if (groups === 0) return;
    const kernel = gpu.kernel({ shader: "attention_backward", entry, constants });
    gpu.dispatch(kernel, [...ins, ...outs], Gpu.grid(groups), { ...params, tiles });
  };
  const dkv = [dk.buffer, dv.buffer, dFarBias.buffer];
  if (kind === "naive") {
    const c = { D, WG: NAIVE_WG };
    run("naive_dq", c, Math.ceil(rows / NAIVE_WG), 0, [dq.buffer]);
    run("naive_dkv", c, Math.ceil(keys / NAIVE_WG), 0, dkv);
  } else {
    const c = backwardTiles(D, gpu.limits.maxComputeWorkgroupStorageSize);
    const rowTiles = Math.ceil((T * G) / c.R), keyTiles = Math.ceil(S / c.BK);
    run("flash_dq", c, B * Hkv * rowTiles, rowTiles, [dq.buffer]);
    run("flash_dkv", c, B * Hkv * keyTiles, keyTiles, dkv);
  }
  aux.dispose();
  if (opts.farBias) return { dq, dk, dv, dFarBias };
  dFarBias.dispose();
  return { dq, dk, dv };
}

// ---------------------------------------------------------------------------------------------
// CPU twin (f64).

/** Sizes of an attention problem (as {@linkcode attentionReference}'s). */
export interface AttentionBackwardShape {
  /** Batch. */
  B: number;
  /** Query heads. */
  Hq: number;
  /** KV heads. */
  Hkv: number;
  /** Queries. */
  T: number;
  /** Keys. */
  S: number;
  /** Head dim. */
  D: number;
}

/** Options of {@linkcode attentionBackwardReference}, as flat arrays. */
export interface AttentionBackwardReferenceOptions {
  /** Default `D^-0.5`. */
  scale?: number;
  /** Default `S - T`. */
  queryOffset?: number;
  /** DMS window W; absent = no far terms. */
  window?: number;
  /** `[B, Hkv, S]`, added beyond the window; `<= -3.40282346e38` masks. */
  farBias?: ArrayLike<number>;
}

/** Output of {@linkcode attentionBackwardReference} (flat, f64). */
export interface AttentionBackwardReferenceResult {
  /** `[B, Hq, T, D]`. */
  dq: Float64Array;
  /** `[B, Hkv, S, D]`. */
  dk: Float64Array;
  /** `[B, Hkv, S, D]`. */
  dv: Float64Array;
  /** `[B, Hkv, S]` (zeros without `farBias`). */
  dFarBias: Float64Array;
}

/**
 * CPU twin of {@linkcode attentionBackward} in f64: recomputes the forward with
 * {@linkcode attentionReference}, then applies the chain rule score by score, in the order a
 * reader expects (visible keys of SPEC §3, P, dP, dS, then the four gradients).
 *
 * @param q `[B, Hq, T, D]` flat.
 * @param k `[B, Hkv, S, D]` flat.
 * @param v `[B, Hkv, S, D]` flat.
 * @param dOut `[B, Hq, T, D]` flat upstream gradient.
 * @param shape The sizes.
 * @param opts Scale, query offset, window, far bias.
 * @returns `dq`, `dk`, `dv`, `dFarBias`.
 */
export function attentionBackwardReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dOut: ArrayLike<number>,
  shape: AttentionBackwardShape,
  opts: AttentionBackwardReferenceOptions = {},
): AttentionBackwardReferenceResult {
  const { B, Hq, Hkv, T, S, D } = shape;
  if (dOut.length !== B * Hq * T * D) {
    throw new RangeError(
      `attentionBackwardReference(): dOut has ${dOut.length} values, expected ${B * Hq * T * D}`,
    );
  }
  const { out, lse } = attentionReference(q, k, v, shape, opts);
  const G = Hq / Hkv;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const queryOffset = opts.queryOffset ?? S - T;
  const W = opts.window ?? Infinity;
  const farBias = opts.farBias;
  const dq = new Float64Array(B * Hq * T * D);
  const dk = new Float64Array(B * Hkv * S * D);
  const dv = new Float64Array(B * Hkv * S * D);
  const dFarBias = new Float64Array(B * Hkv * S);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const hkv = Math.floor(h / G);
      for (let t = 0; t < T; t++) {
        const row = (b * Hq + h) * T + t;
        if (lse[row] <= EMPTY_ROW_LSE) continue; // no visible key: out = 0 for any input
        const qpos = queryOffset + t;
        let delta = 0; // Δ = dOut · out
        for (let d = 0; d < D; d++) delta += dOut[row * D + d] * out[row * D + d];
        for (let i = 0; i <= Math.min(qpos, S - 1); i++) {
          const f = (b * Hkv + hkv) * S + i;
          const far = farBias !== undefined && qpos - i > W;
          if (far && farBias[f] <= EMPTY_ROW_LSE) continue; // masked sentinel
          let s = 0, dp = 0;
          for (let d = 0; d < D; d++) {
            s += q[row * D + d] * k[f * D + d];
            dp += dOut[row * D + d] * v[f * D + d];
          }
          s = s * scale + (far ? farBias[f] : 0);
          const p = Math.exp(s - lse[row]);
          const ds = p * (dp - delta); // ∂L/∂s
          for (let d = 0; d < D; d++) {
            dq[row * D + d] += scale * ds * k[f * D + d];
            dk[f * D + d] += scale * ds * q[row * D + d];
            dv[f * D + d] += p * dOut[row * D + d];
          }
          if (far) dFarBias[f] += ds; // the soft mask's gradient (SPEC §3)
        }
      }
    }
  }
  return { dq, dk, dv, dFarBias };
}
