/**
 * Dense attention for prefill and the training forward: causal GQA with key padding and the DMS
 * window terms (SPEC §3 training soft mask, SPEC §5.1 inference visibility rule).
 *
 * `attention(q, k, v, opts)`: `q:[B, Hq, T, D]`, `k, v:[B, Hkv, S, D]` → `out:[B, Hq, T, D]`
 * (and `lse:[B, Hq, T]` with `returnLse`). Query head `h` reads KV head `floor(h / G)`,
 * `G = Hq / Hkv` (HF `repeat_kv` order). Query `t` sits at position `queryOffset + t`
 * (default `S - T`), key `i` at position `i`. Query position `qp` sees key `i` iff
 * - `i <= qp` (causal),
 * - `keyMask[b, i] != 0` (padding keys are invisible),
 * - and, only when `qp - i > window`: `farMask[b, hkv, i] == 0` and
 *   `farBias[b, hkv, i] > -3.40282346e38` (the masked sentinel); then the score gets
 *   `+ farBias[b, hkv, i]`. Keys at distance `0..window` get nothing.
 * The score is `scale * q·k` (+ far bias); a row with no visible key outputs zeros and
 * `lse = EMPTY_ROW_LSE`. {@linkcode attentionReference} is the readable statement of these rules
 * (in `attention_reference.ts` with the other f64 oracles, re-exported here).
 *
 * How DMS uses it:
 * - training (SPEC §3): `window = W`, `farBias[i] = logsigmoid(-z[i+1])` (`0` for the last key);
 * - inference / prefill oracle (SPEC §5.1): `window = W`, `farMask[i] = mark(i) = d(i+1)`,
 *   `keyMask` = the attention mask (left padding).
 *
 * Kernels (`shaders/attention.wgsl`), f32 math on f32 or f16 storage:
 * - `naive`: one thread per query row, two passes over all S keys (max; then exp-sum and P·V)
 *   with a private `[256]` accumulator. The readable reference kernel; O(S) global reads of K
 *   and V per row, no reuse.
 * - `flash` (default): one workgroup per (b, KV head, tile of R rows `t * G + g`), so the G
 *   query heads of one KV head share every K/V tile loaded into workgroup memory (each K/V
 *   element is read from global memory once per R rows instead of once per row); online
 *   softmax (running max and sum, rescaled per key tile); K and V tiles take turns in one
 *   vec4 buffer; 4 scores per work item; TD threads per row split the head dim; the key loop
 *   stops at the tile's last causal key. Tiles: R = 16/8/4 rows for D ≤ 64/128/256, BK keys
 *   to fill 10 KiB of workgroup memory (see `FLASH_TILE_BYTES` for why so little).
 *   (A first version used f32 workgroup arrays up to 32 KiB; identical results on Vulkan but
 *   up to minutes of shader compile on the GL backend.)
 *
 * @example Causal GQA attention with a DMS eviction mask (SPEC §5.1)
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { attention } from "./attention.ts";
 * const gpu = await getGpu();
 * const [B, Hq, Hkv, T, D] = [1, 4, 2, 6, 8];
 * using q = Tensor.fromArray(gpu, new Float32Array(B * Hq * T * D).fill(0.1), [B, Hq, T, D]);
 * using k = Tensor.fromArray(gpu, new Float32Array(B * Hkv * T * D).fill(0.2), [B, Hkv, T, D]);
 * using v = Tensor.fromArray(gpu, new Float32Array(B * Hkv * T * D).fill(1), [B, Hkv, T, D]);
 * using farMask = Tensor.fromArray(gpu, new Int32Array(B * Hkv * T).fill(1), [B, Hkv, T], "i32");
 * const { out, lse } = attention(q, k, v, { window: 2, farMask, returnLse: true });
 * console.log(await out.toArray(), await lse.toArray()); // out all 1; query 5 sees keys 3..5
 * out.dispose();
 * lse.dispose();
 * ```
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { assertFloat, assertRank, output, sameDtype } from "./launch.ts";

export {
  attentionReference,
  type AttentionReferenceOptions,
  type AttentionReferenceResult,
  type AttentionShape,
  EMPTY_ROW_LSE,
  mergeAttentionReference,
} from "./attention_reference.ts";

/** Largest supported head dim. */
export const ATTENTION_MAX_D = 256;

/** Kernel variants of {@linkcode attention}. */
export type AttentionKernel = "flash" | "naive";

/** Options of {@linkcode attention}. */
export interface AttentionOptions {
  /** Score scale. Default `D^-0.5`. */
  scale?: number;
  /** Absolute position of query 0 (query `t` at `queryOffset + t`, key `i` at `i`). Default `S - T`. Any integer; negative values are fine (rows before key 0 see nothing). */
  queryOffset?: number;
  /** `keyMask:[B, S]` i32: 0 = padding key (never visible), anything else = token. */
  keyMask?: Tensor;
  /** DMS window W (integer ≥ 0): keys at distance `0..W` never get far terms. Required with `farBias`/`farMask`. */
  window?: number;
  /** `farBias:[B, Hkv, S]` f32, added to the score of key `i` when `qpos - i > W` (SPEC §3: `logsigmoid(-z[i+1])`). A value `<= -3.40282346e38` (or `-Infinity`) masks the key like `farMask`. */
  farBias?: Tensor;
  /** `farMask:[B, Hkv, S]` i32: 1 = the key is invisible to queries with `qpos - i > W` (SPEC §5.1: `mark(i) = d(i+1)`). */
  farMask?: Tensor;
  /** Also return the per-row natural log-sum-exp of the (scaled, biased) scores. */
  returnLse?: boolean;
  /** Kernel variant. Default `"flash"`. */
  kernel?: AttentionKernel;
}

/** Output of {@linkcode attention} with `returnLse: true`. */
export interface AttentionResult {
  /** `out:[B, Hq, T, D]` in the dtype of `q`. */
  out: Tensor<FloatDType>;
  /** `lse:[B, Hq, T]` f32: `log Σ exp(score)` over visible keys, {@linkcode EMPTY_ROW_LSE} for a row without any. */
  lse: Tensor<"f32">;
}

/** Tile sizes of the flash kernel (the shader's overrides). */
interface FlashTiles {
  R: number;
  TD: number;
  BK: number;
  BK4: number;
  D4: number;
  DPT4: number;
  WG: number;
}

/**
 * Workgroup memory of one flash tile set, in bytes: kept small on purpose. wgpu zero-fills
 * workgroup memory, and on the GL backend naga writes that as one array constructor whose
 * compile time grows ~quadratically (10 KiB of vec4s: a few seconds per pipeline on llvmpipe
 * GL; 32 KiB of f32s: minutes). Vulkan/Metal/D3D12 are unaffected.
 */
const FLASH_TILE_BYTES = 10240;

/** Picks flash tiles for head dim `D` (qs: R·D4, kv: BK·D4, ss: R·BK/4 vec4s). */
function flashTiles(D: number, storageBytes: number): FlashTiles {
  const D4 = Math.ceil(D / 4);
  // R rows × TD threads = 64 threads; each thread owns DPT4 = ceil(D4 / TD) <= 4 vec4s.
  const R = D4 <= 16 ? 16 : D4 <= 32 ? 8 : 4;
  const TD = 64 / R;
  const vec4s = Math.min(storageBytes, FLASH_TILE_BYTES) / 16;
  const bk = Math.floor((vec4s - R * D4) / (D4 + R / 4));
  const BK = Math.max(4, Math.min(64, bk - (bk % 4)));
  return { R, TD, BK, BK4: BK / 4, D4, DPT4: Math.ceil(D4 / TD), WG: R * TD };
}

const NAIVE_WG = 64;
const I32_MAX = 2147483647;

/**
 * Dense causal attention with GQA, key padding and DMS window terms (SPEC §3, §5.1).
 *
 * Shapes: `q:[B, Hq, T, D]`, `k, v:[B, Hkv, S, D]` (same dtype, f32 or f16, `Hq % Hkv == 0`,
 * `1 <= D <= 256`), optional `keyMask:[B, S]` i32, `farBias:[B, Hkv, S]` f32,
 * `farMask:[B, Hkv, S]` i32 → `out:[B, Hq, T, D]` (dtype of q), with `returnLse` also
 * `lse:[B, Hq, T]` f32.
 *
 * @param q Queries `[B, Hq, T, D]`.
 * @param k Keys `[B, Hkv, S, D]`.
 * @param v Values `[B, Hkv, S, D]`.
 * @param opts Scale, query offset, masks, window terms, lse, kernel.
 * @returns `out`, or `{ out, lse }` with `returnLse: true`.
 * @throws {TypeError} Wrong dtypes (q/k/v not one float dtype, masks not i32, farBias not f32).
 * @throws {RangeError} Shapes that do not fit together, D out of range, bad scale/window/offset.
 *
 * @example Training-mode soft mask (SPEC §3)
 * ```ts ignore
 * // farBias[b, h, i] = logsigmoid(-z[b, h, i + 1]), 0 for the last key
 * const out = attention(q, k, v, { window: W, farBias });
 * ```
 */
export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: AttentionOptions & { returnLse: true },
): AttentionResult;
/** Without `returnLse`: only `out:[B, Hq, T, D]`. */
export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts?: AttentionOptions & { returnLse?: false },
): Tensor<FloatDType>;
/** `returnLse` not known statically: `out` or `{ out, lse }`. */
export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts?: AttentionOptions,
): Tensor<FloatDType> | AttentionResult;
export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: AttentionOptions = {},
): Tensor<FloatDType> | AttentionResult {
  const op = "attention()";
  assertFloat(q, `${op} q`);
  assertFloat(k, `${op} k`);
  assertFloat(v, `${op} v`);
  const dtype = sameDtype(op, q, k, v) as FloatDType;
  assertRank(q, 4, `${op} q [B, Hq, T, D]`);
  assertRank(k, 4, `${op} k [B, Hkv, S, D]`);
  assertRank(v, 4, `${op} v [B, Hkv, S, D]`);
  const [B, Hq, T, D] = q.shape;
  const [Bk, Hkv, S, Dk] = k.shape;
  const qs = fmtShape(q.shape), ks = fmtShape(k.shape);
  if (v.shape.some((d, i) => d !== k.shape[i])) {
    throw new RangeError(`${op}: k ${ks} and v ${fmtShape(v.shape)} must have the same shape`);
  }
  if (Bk !== B) throw new RangeError(`${op}: batch of q ${qs} and k ${ks} differs`);
  if (Dk !== D) {
    throw new RangeError(`${op}: head dim D of q ${qs} (${D}) and k ${ks} (${Dk}) differs`);
  }
  if (Hkv < 1 || Hq % Hkv !== 0) {
    throw new RangeError(
      `${op}: query heads Hq=${Hq} of q ${qs} must be a multiple of KV heads Hkv=${Hkv} of k ${ks}`,
    );
  }
  if (D < 1 || D > ATTENTION_MAX_D) {
    throw new RangeError(`${op}: head dim D=${D} of q ${qs} must be in 1..${ATTENTION_MAX_D}`);
  }
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
  if ((opts.farBias || opts.farMask) && w === undefined) {
    throw new RangeError(`${op}: farBias/farMask need opts.window (the DMS window W)`);
  }
  checkAux(op, "keyMask", opts.keyMask, "i32", [B, S], "[B, S]");
  checkAux(op, "farBias", opts.farBias, "f32", [B, Hkv, S], "[B, Hkv, S]");
  checkAux(op, "farMask", opts.farMask, "i32", [B, Hkv, S], "[B, Hkv, S]");

  const gpu = q.gpu;
  const out = output(gpu, [B, Hq, T, D], dtype);
  const lse = output(gpu, [B, Hq, T], "f32");
  const G = Hq / Hkv;
  const flags = (opts.keyMask ? 1 : 0) | (opts.farBias ? 2 : 0) | (opts.farMask ? 4 : 0);
  const kind = opts.kernel ?? "flash";
  if (kind !== "flash" && kind !== "naive") {
    throw new RangeError(`${op}: kernel must be "flash" or "naive", got "${kind}"`);
  }
  let tiles = 0, groups = 0, constants: Record<string, number>;
  if (kind === "flash") {
    const t = flashTiles(D, gpu.limits.maxComputeWorkgroupStorageSize);
    tiles = Math.ceil((T * G) / t.R);
    groups = B * Hkv * tiles;
    constants = { D, ...t };
  } else {
    groups = Math.ceil((B * Hq * T) / NAIVE_WG);
    constants = { D, WG: NAIVE_WG };
  }
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
    flags,
    tiles,
  };
  if (groups > 0) {
    const kernel = gpu.kernel({
      shader: "attention",
      entry: kind,
      defines: { T: dtype },
      constants,
    });
    const dummy = q.buffer; // bound (never read) where an optional input is absent
    gpu.dispatch(
      kernel,
      [
        q.buffer,
        k.buffer,
        v.buffer,
        opts.keyMask?.buffer ?? dummy,
        opts.farBias?.buffer ?? dummy,
        opts.farMask?.buffer ?? dummy,
        out.buffer,
        lse.buffer,
      ],
      Gpu.grid(groups),
      params,
    );
  }
  if (opts.returnLse) return { out, lse };
  lse.dispose();
  return out;
}

function checkAux(
  op: string,
  name: string,
  t: Tensor | undefined,
  dtype: "i32" | "f32",
  shape: number[],
  dims: string,
): void {
  if (!t) return;
  if (t.dtype !== dtype) {
    throw new TypeError(`${op}: ${name} must be ${dtype}, got ${t.dtype}${fmtShape(t.shape)}`);
  }
  if (t.rank !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new RangeError(
      `${op}: ${name} must have shape ${dims} = ${fmtShape(shape)}, got ${fmtShape(t.shape)}`,
    );
  }
}
