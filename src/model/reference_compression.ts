/**
 * The training-time compression scalars of the float64 reference (SPEC §6:
 * `frac_closed`, `dms_loss`; §5.4: the logged CR) from straight-through
 * decisions. One home for both the CPU reference (`trainForward`) and the GPU
 * conformance backend.
 *
 * @example Half the decisions closed, target 0.7
 * ```ts
 * import { compressionScalars } from "./reference_compression.ts";
 * const st = new Float64Array([1, 0, 1, 0]); // [L=1, B=1, Hkv=1, S=4]
 * const s = compressionScalars(st, 1, 1, 0.7);
 * console.log(s.dmsFracClosed, s.dmsLoss, s.cr); // 0.5 0.2 2 (up to rounding)
 * ```
 *
 * @module
 */

/** Output of {@linkcode compressionScalars} (SPEC §5.4, §6). */
export interface CompressionScalars {
  /** `[B]` mean over layers of the mean over (heads, positions) of the ST decisions */
  fracClosed: Float64Array;
  /** mean over b of `fracClosed` */
  dmsFracClosed: number;
  /** `mean_b max(0, target − fracClosed[b])` */
  dmsLoss: number;
  /** logged training CR `1 / max(1 − dmsFracClosed, 1e−6)` */
  cr: number;
}

/**
 * The training scalars of SPEC §6 (and the logged CR of §5.4) from the
 * straight-through decisions: `frac_closed[b]` = mean over layers of the mean
 * over (KV heads, positions), position 0 and the last one included;
 * `dms_loss = mean_b max(0, target − frac_closed[b])`; `cr = 1 / max(1 −
 * mean_b frac_closed, 1e−6)`. The GPU conformance backend uses it too.
 *
 * @param st `[L, B, Hkv, S]` straight-through decisions (forward value = hard)
 * @param L layers
 * @param B batch
 * @param targetFracToClose α* of the schedule
 */
export function compressionScalars(
  st: ArrayLike<number>,
  L: number,
  B: number,
  targetFracToClose: number,
): CompressionScalars {
  const len = st.length / (L * B); // Hkv·S values per (layer, sequence)
  if (!Number.isInteger(len) || len < 1) {
    throw new RangeError(
      `compressionScalars: st: expected [${L}, ${B}, Hkv, S], got ${st.length} values`,
    );
  }
  const fracClosed = new Float64Array(B); // [B]
  for (let b = 0; b < B; b++) {
    let frac = 0;
    for (let l = 0; l < L; l++) {
      let layerSum = 0;
      for (let i = 0; i < len; i++) layerSum += st[(l * B + b) * len + i];
      frac += layerSum / len / L;
    }
    fracClosed[b] = frac;
  }
  let sum = 0, loss = 0;
  for (let b = 0; b < B; b++) {
    sum += fracClosed[b];
    loss += Math.max(0, targetFracToClose - fracClosed[b]);
  }
  const dmsFracClosed = sum / B;
  return {
    fracClosed,
    dmsFracClosed,
    dmsLoss: loss / B,
    cr: 1 / Math.max(1 - dmsFracClosed, 1e-6),
  };
}
