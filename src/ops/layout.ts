/**
 * Layout ops: `swapAxes12` swaps dimensions 1 and 2 of a rank-4 tensor, the
 * move between the projection layout `[B, T, H, D]` and the attention layout
 * `[B, H, T, D]`.
 *
 * Kernel (`shaders/layout.wgsl`): one thread per output element (gather).
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { swapAxes12 } from "./layout.ts";
 * const gpu = await getGpu();
 * using x = Tensor.fromArray(gpu, [1, 2, 3, 4, 5, 6], [1, 2, 3, 1]);
 * using y = swapAxes12(x); // [1, 3, 2, 1]: 1 4 2 5 3 6
 * ```
 *
 * @module
 */

import type { DType } from "../tensor/dtype.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { assertRank, grid1d, output } from "./launch.ts";

const WG = 256;

/** `x:[A, B, C, D] → [A, C, B, D]`. */
export function swapAxes12<D extends DType>(x: Tensor<D>): Tensor<D> {
  assertRank(x, 4, "swapAxes12 x");
  const [a, b, c, d] = x.shape;
  const gpu = x.gpu;
  const out = output(gpu, [a, c, b, d], x.dtype);
  const k = gpu.kernel({
    shader: "layout",
    entry: "swap12",
    defines: { T: x.dtype },
    constants: { WG },
  });
  gpu.dispatch(
    k,
    [x.buffer, out.buffer],
    grid1d(x.size, WG),
    { a, b, c, d },
  );
  return out;
}

/** CPU reference of {@linkcode swapAxes12}. */
export function swapAxes12Reference(x: ArrayLike<number>, shape: readonly number[]): Float64Array {
  const [a, b, c, d] = shape;
  const out = new Float64Array(x.length);
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) {
      for (let k = 0; k < c; k++) {
        for (let l = 0; l < d; l++) {
          out[((i * c + k) * b + j) * d + l] = x[((i * b + j) * c + k) * d + l];
        }
      }
    }
  }
  return out;
}

/**
 * `x:[A, B, C, D] → [A, C, B, D]` as cheaply as it can be: the move between the projection layout
 * `[B, T, H, D]` and the attention layout `[B, H, T, D]`. With one token (decode, T = 1) or one
 * head the two layouts are the same bytes, so it is a view (no dispatch; 4 a layer saved in
 * decode); otherwise {@linkcode swapAxes12}. The result shares `x`'s buffer when it is a view.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { toHeads } from "./layout.ts";
 * const gpu = await getGpu();
 * using x = Tensor.fromArray(gpu, [1, 2, 3, 4], [1, 1, 2, 2]); // T = 1: a view
 * const y = toHeads(x); // [1, 2, 1, 2]
 * ```
 */
export function toHeads<D extends DType>(x: Tensor<D>): Tensor<D> {
  const [a, b, c, d] = x.shape;
  return b === 1 || c === 1 ? x.reshape([a, c, b, d]) : swapAxes12(x);
}
