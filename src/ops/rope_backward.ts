/**
 * Backward of rotary position embedding (`rope` in `./rope.ts`, HF rotate-half):
 * `ropeBackward` and its f64 CPU twin `ropeBackwardReference`.
 *
 * RoPE rotates each pair `(x[j], x[j + D/2])` by `ang = f32(pos · inv_freq[j])`,
 * so its Jacobian is that rotation and the gradient is the transpose, a
 * rotation by `−ang`:
 *
 * ```
 * dx[j]       = dy[j]·cos(ang) + dy[j + D/2]·sin(ang)
 * dx[j + D/2] = dy[j + D/2]·cos(ang) − dy[j]·sin(ang)        j < D/2
 * ```
 *
 * `rope_scaling` (linear, llama3) only changes `inv_freq`, which the caller
 * computes once with `ropeInvFreq` and passes to both directions; it is not
 * trainable, so there is no gradient for it or for the positions. Layouts
 * `"BHTD"` and `"BTHD"` as in the forward.
 *
 * Kernels (`shaders/rope.wgsl`, beside the forward's):
 * - `rope_backward`: naive, one thread per rotation pair, 256 per workgroup,
 *   f32; the forward's pairs, f32 angle and sincos (`shaders/sincos.wgsl`,
 *   accurate at large angles, see `./rope.ts`). Memory-bound; no faster
 *   variant needed.
 *
 * @example The gradient of a rotation is the inverse rotation
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { ropeInvFreq } from "./rope.ts";
 * import { ropeBackward } from "./rope_backward.ts";
 * const gpu = await getGpu();
 * const [B, H, T, D] = [1, 2, 3, 8];
 * using dy = Tensor.fromArray(gpu, new Float32Array(B * H * T * D).fill(1), [B, H, T, D]);
 * using pos = Tensor.fromArray(gpu, [0, 1, 2], [T], "i32");
 * using inv = Tensor.fromArray(gpu, ropeInvFreq(D, 10000), [D / 2]);
 * using dx = ropeBackward(dy, pos, inv); // dx:[B, H, T, D]
 * console.log((await dx.toArray()).slice(0, D)); // position 0: unchanged, all 1
 * ```
 *
 * @module
 */

import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import { grid1d, output } from "./launch.ts";
import type { RopeLayout, RopeOptions } from "./rope.ts";

const WG = 256;

/**
 * Gradient of `rope(x, positions, invFreq, opts)` with respect to x.
 *
 * @param dy Upstream gradient `[B, H, T, D]` (or `[B, T, H, D]` with `layout: "BTHD"`), f32, D even.
 * @param positions i32 `[B, T]` or `[T]`, as given to the forward.
 * @param invFreq f32 `[D/2]`, as given to the forward (scaling included).
 * @param opts Layout of dy (that of the forward's x).
 * @returns A new tensor `dx` shaped and laid out like dy.
 * @throws {TypeError} When dy is not f32, positions not i32 or invFreq not f32.
 * @throws {RangeError} When a shape does not match (named with both shapes) or D is odd.
 */
export function ropeBackward(
  dy: Tensor,
  positions: Tensor,
  invFreq: Tensor,
  opts: RopeOptions = {},
): Tensor<"f32"> {
  const op = "ropeBackward()";
  const layout = opts.layout ?? "BHTD";
  if (layout !== "BHTD" && layout !== "BTHD") {
    throw new RangeError(`${op}: layout must be "BHTD" or "BTHD", got "${layout}"`);
  }
  const want: [Tensor, string, string][] = [[dy, "dy", "f32"], [positions, "positions", "i32"], [
    invFreq,
    "invFreq",
    "f32",
  ]];
  for (const [t, name, dtype] of want) {
    if (t.dtype !== dtype) {
      throw new TypeError(
        `${op} ${name}: expected an ${dtype} tensor, got ${t.dtype}${fmtShape(t.shape)}`,
      );
    }
  }
  const layoutShape = layout === "BHTD" ? "[B, H, T, D]" : "[B, T, H, D]";
  if (dy.rank !== 4) {
    throw new RangeError(`${op} dy: expected shape ${layoutShape}, got ${fmtShape(dy.shape)}`);
  }
  const [B, d1, d2, D] = dy.shape;
  const [H, T] = layout === "BHTD" ? [d1, d2] : [d2, d1];
  if (D % 2 !== 0) {
    throw new RangeError(`${op} dy: head dimension must be even, got ${fmtShape(dy.shape)}`);
  }
  if (invFreq.rank !== 1 || invFreq.shape[0] !== D / 2) {
    throw new RangeError(
      `${op} invFreq: expected shape [${D / 2}] for dy ${fmtShape(dy.shape)}, got ${
        fmtShape(invFreq.shape)
      }`,
    );
  }
  const batched = positions.rank === 2;
  const posOk = batched
    ? positions.shape[0] === B && positions.shape[1] === T
    : positions.rank === 1 && positions.shape[0] === T;
  if (!posOk) {
    throw new RangeError(
      `${op} positions: expected shape [${B}, ${T}] or [${T}] for dy ${
        fmtShape(dy.shape)
      } (${layoutShape}), got ${fmtShape(positions.shape)}`,
    );
  }
  const gpu = dy.gpu;
  const dx = output(gpu, dy.shape, "f32");
  const n = dy.size / 2;
  if (n === 0) return dx;
  const k = gpu.kernel({
    shader: "rope",
    entry: "rope_backward",
    defines: { T: "f32" },
    constants: { WG },
  });
  gpu.dispatch(k, [dy.buffer, positions.buffer, invFreq.buffer, dx.buffer], grid1d(n, WG), {
    n,
    half: D / 2,
    heads: H,
    seq: T,
    tokens_first: layout === "BHTD" ? 0 : 1,
    pos_batched: batched ? 1 : 0,
    zero: 0,
  });
  return dx;
}

/**
 * CPU twin of {@linkcode ropeBackward}: plain loops, the angle rounded to f32
 * as in `ropeReference`, cos/sin and products in f64.
 *
 * @param dy Row-major upstream gradient of shape `shape`.
 * @param shape `[B, H, T, D]`, or `[B, T, H, D]` with layout "BTHD".
 * @param positions `[B, T]` or `[T]` values.
 * @param invFreq `[D/2]`.
 * @param layout As in the forward's options.
 * @returns `dx`, shaped like dy, in f64.
 */
export function ropeBackwardReference(
  dy: ArrayLike<number>,
  shape: readonly number[],
  positions: ArrayLike<number>,
  invFreq: ArrayLike<number>,
  layout: RopeLayout = "BHTD",
): Float64Array {
  const [B, d1, d2, D] = shape;
  const [H, T] = layout === "BHTD" ? [d1, d2] : [d2, d1];
  const half = D / 2;
  const batched = positions.length === B * T;
  if (
    invFreq.length !== half || dy.length !== B * H * T * D || !batched && positions.length !== T
  ) {
    throw new RangeError(
      `ropeBackwardReference(): inconsistent sizes for shape ${fmtShape(shape)}`,
    );
  }
  const dx = new Float64Array(dy.length);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const pos = positions[batched ? b * T + t : t];
        const base = (layout === "BHTD" ? (b * H + h) * T + t : (b * T + t) * H + h) * D;
        for (let j = 0; j < half; j++) {
          const ang = Math.fround(pos * invFreq[j]);
          const c = Math.cos(ang), s = Math.sin(ang);
          const g1 = dy[base + j], g2 = dy[base + j + half];
          dx[base + j] = g1 * c + g2 * s;
          dx[base + j + half] = g2 * c - g1 * s;
        }
      }
    }
  }
  return dx;
}
