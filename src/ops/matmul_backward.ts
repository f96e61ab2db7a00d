/**
 * Backward of `linear` (`./matmul.ts`) (`y = x·wᵀ + b`, Hugging Face `nn.Linear`):
 * `linearBackward` with its f64 CPU twin `linearBackwardReference`.
 *
 * ```
 * x:[N, K]  w:[M, K]  dy:[N, M]   (leading dims of x and dy flattened into N)
 * dx:[N, K] = dy·w        dw:[M, K] = dyᵀ·x        db:[M] = Σ_n dy[n, :]
 * ```
 *
 * Kernels (`shaders/matmul_backward.wgsl`), f32 storage and accumulation. One
 * strided product kernel `c (+)= A·B` serves both dx (A = dy) and dw (A = dyᵀ),
 * so a transposed operand is only a pair of strides, never a copy:
 *
 * | variant | what it is | what it changed |
 * | ------- | ---------- | --------------- |
 * | `naive` | one thread per output, a plain loop over the reduction | the definition; kept for agreement tests |
 * | `tiled` (default) | the forward `tiled` matmul (64×64 tile per workgroup, 4×4 outputs per thread in `vec4` registers, 16-deep staged tiles) with strided operands; each tile load walks its operand's contiguous axis | each loaded element reused 64×; lavapipe, dx + dw of 512×256×256: 2.4 vs 0.5 GFLOP/s (`naive`); not yet timed on a GPU |
 * | `bias_grad` | one thread per column of dy, a sum over rows in order | db (memory-bound) |
 *
 * Determinism: no atomics. dw and db reduce over N in increasing n inside one
 * thread; when x or dy is larger than one storage binding, the launcher splits
 * N into row blocks and launches them in order, each adding into the result
 * (the `accumulate` flag of the kernel), so the result never depends on
 * scheduling.
 *
 * Accumulation (chosen for tied embeddings and LM-head chunks):
 * `opts.accumulate: { dx?, dw?, db? }` names existing f32 gradient tensors to
 * add into in place; those are returned as the result (same objects, not new
 * references). Gradients not named there are new tensors. A weight too large
 * for one binding (an LM head `[V, H]`) is handled as the forward does: run one
 * `linearBackward` per row chunk `w[r0:r1]` with `dyColumnOffset: r0`, and
 * accumulate the chunks' dx into one tensor via `accumulate.dx`.
 *
 * @example Gradients of a linear layer
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { linearBackward } from "./matmul_backward.ts";
 * const gpu = await getGpu();
 * using x = Tensor.fromArray(gpu, [1, 2, 3, 4, 5, 6], [2, 3]); // x:[N=2, K=3]
 * using w = Tensor.fromArray(gpu, [1, 0, 0, 0, 1, 0], [2, 3]); // w:[M=2, K=3]
 * using dy = Tensor.fromArray(gpu, [1, 0, 0, 1], [2, 2]); // dy:[N=2, M=2]
 * const { dx, dw, db } = linearBackward(x, w, dy, { bias: true });
 * console.log(await dx.toArray()); // [1, 0, 0, 0, 1, 0]
 * console.log(await dw.toArray()); // [1, 2, 3, 4, 5, 6]
 * console.log(await db!.toArray()); // [1, 1]
 * ```
 *
 * @module
 */

import { type Binding, Gpu } from "../gpu/device.ts";
import { fmtShape, numel, Tensor } from "../tensor/tensor.ts";

/** Kernel choice for the two products (dx, dw). Default `tiled`. */
export type LinearBackwardVariant = "naive" | "tiled";

/** Options of {@linkcode linearBackward}. */
export interface LinearBackwardOptions {
  /** Also return `db:[M]` (the forward had a bias). Default false. */
  bias?: boolean;
  /**
   * `dy` is `[..., Mtotal]` and this weight's rows are its columns
   * `dyColumnOffset .. dyColumnOffset + M - 1` (a row chunk of an LM head, as
   * the forward's `outColumnOffset`). Default 0 with `Mtotal = M`.
   */
  dyColumnOffset?: number;
  /**
   * Existing f32 gradients to add into in place (`dx:[..., K]`, `dw:[M, K]`,
   * `db:[M]`); each one given is returned as that gradient.
   */
  accumulate?: { dx?: Tensor; dw?: Tensor; db?: Tensor };
  /** Force a kernel (tests, benchmarks). Default `tiled`. */
  variant?: LinearBackwardVariant;
  /**
   * Largest byte range bound per buffer; default and maximum: the device's
   * `maxStorageBufferBindingSize`. Lower it to exercise the row-block split.
   */
  maxBindingBytes?: number;
}

/** Gradients returned by {@linkcode linearBackward}. */
export interface LinearGrads {
  /** `dx:[..., K]`, x's shape. */
  dx: Tensor<"f32">;
  /** `dw:[M, K]`, w's shape. */
  dw: Tensor<"f32">;
  /** `db:[M]`, when `opts.bias`. */
  db?: Tensor<"f32">;
}

const ALIGN = 256; // minStorageBufferOffsetAlignment upper bound in WebGPU
const WG = 256;
const TILE = 64;

function assertF32(t: Tensor, what: string): void {
  if (t.dtype !== "f32") {
    throw new TypeError(
      `linearBackward() ${what}: expected an f32 tensor, got ${t.dtype}${fmtShape(t.shape)}`,
    );
  }
}

function assertShape(t: Tensor, shape: readonly number[], what: string, ctx: string): void {
  if (t.rank !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new RangeError(
      `linearBackward() ${what}: expected shape ${fmtShape(shape)} for ${ctx}, got ${
        fmtShape(t.shape)
      }`,
    );
  }
}

/** A window `[start, end)` (elements) of an f32 tensor's buffer, bound at a 256-byte aligned offset. */
function window(t: Tensor, start: number, end: number): { binding: Binding; off: number } {
  const first = Math.floor((start * 4) / ALIGN) * ALIGN;
  const last = Math.min(t.buffer.size, end * 4);
  return {
    binding: { buffer: t.buffer, offset: first, size: Math.max(4, last - first) },
    off: (start * 4 - first) / 4,
  };
}

/** Strided product `c (+)= A·B`, I×J outputs, R-long sums (see the shader header). */
interface Product {
  a: { binding: Binding; off: number };
  b: { binding: Binding; off: number };
  c: { binding: Binding; off: number };
  I: number;
  J: number;
  R: number;
  sAi: number;
  sAr: number;
  sBr: number;
  sBj: number;
  ldc: number;
  accumulate: boolean;
}

function product(gpu: Gpu, variant: LinearBackwardVariant, q: Product): void {
  if (q.I === 0 || q.J === 0) return;
  const k = gpu.kernel({ shader: "matmul_backward", entry: variant, constants: { WG } });
  const groups = variant === "naive"
    ? Math.ceil((q.I * q.J) / WG)
    : Math.ceil(q.I / TILE) * Math.ceil(q.J / TILE);
  gpu.dispatch(k, [q.a.binding, q.b.binding, q.c.binding], Gpu.grid(groups), {
    I: q.I,
    J: q.J,
    R: q.R,
    sAi: q.sAi,
    sAr: q.sAr,
    sBr: q.sBr,
    sBj: q.sBj,
    ldc: q.ldc,
    offA: q.a.off,
    offB: q.b.off,
    offC: q.c.off,
    accumulate: q.accumulate ? 1 : 0,
  });
}

/**
 * Gradients of `linear` (`./matmul.ts`) `y = x·wᵀ (+ b)` with respect to x, w and b.
 *
 * Shapes: `x:[..., K]`, `w:[M, K]`, `dy:[..., M]` (leading dims as x's; or
 * `[..., Mtotal]` with `opts.dyColumnOffset`) → `dx:[..., K]`, `dw:[M, K]`,
 * `db:[M]`. f32 only (training keeps f32 master weights).
 *
 * @param x The forward input `[..., K]`.
 * @param w The weight `[M, K]` (PyTorch layout).
 * @param dy Upstream gradient `[..., M]`.
 * @param opts Bias, dy column window, in-place accumulation, kernel, binding limit.
 * @returns `{ dx, dw, db? }`: new tensors, or the `opts.accumulate` tensors added into.
 * @throws {TypeError} When a tensor is not f32 (naming it).
 * @throws {RangeError} When shapes disagree (naming the argument and both shapes), the
 *   column window does not fit in dy, or w is larger than one storage binding.
 *
 * @example LM head in two row chunks, dx accumulated
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { linearBackward } from "./matmul_backward.ts";
 * const gpu = await getGpu();
 * using h = Tensor.zeros(gpu, [4, 64]); // h:[T, H]
 * using w0 = Tensor.zeros(gpu, [600, 64]); // rows 0..599 of lm_head [1000, 64]
 * using w1 = Tensor.zeros(gpu, [400, 64]); // rows 600..999
 * using dlogits = Tensor.zeros(gpu, [4, 1000]); // dlogits:[T, V]
 * const g0 = linearBackward(h, w0, dlogits, { dyColumnOffset: 0 });
 * const g1 = linearBackward(h, w1, dlogits, { dyColumnOffset: 600, accumulate: { dx: g0.dx } });
 * // g1.dx === g0.dx holds dh; g0.dw and g1.dw are the two chunks of d(lm_head)
 * ```
 */
export function linearBackward(
  x: Tensor,
  w: Tensor,
  dy: Tensor,
  opts: LinearBackwardOptions = {},
): LinearGrads {
  assertF32(x, "x");
  assertF32(w, "w");
  assertF32(dy, "dy");
  const acc = opts.accumulate ?? {};
  if (acc.dx) assertF32(acc.dx, "accumulate.dx");
  if (acc.dw) assertF32(acc.dw, "accumulate.dw");
  if (acc.db) assertF32(acc.db, "accumulate.db");
  const variant = opts.variant ?? "tiled";
  if (variant !== "naive" && variant !== "tiled") {
    throw new RangeError(`linearBackward() variant: expected "naive" or "tiled", got "${variant}"`);
  }
  if (x.rank < 1) {
    throw new RangeError(`linearBackward() x: expected shape [..., K], got ${fmtShape(x.shape)}`);
  }
  const K = x.shape[x.rank - 1];
  if (w.rank !== 2 || w.shape[1] !== K) {
    throw new RangeError(
      `linearBackward() w: expected shape [M, ${K}] for x ${fmtShape(x.shape)}, got ${
        fmtShape(w.shape)
      }`,
    );
  }
  const M = w.shape[0];
  const lead = x.shape.slice(0, -1);
  const col = opts.dyColumnOffset ?? 0;
  const ldy = dy.shape[dy.rank - 1];
  const ctx = `x ${fmtShape(x.shape)} and w ${fmtShape(w.shape)}`;
  if (
    dy.rank !== x.rank || lead.some((d, i) => d !== dy.shape[i]) ||
    (opts.dyColumnOffset === undefined && ldy !== M)
  ) {
    assertShape(dy, [...lead, M], "dy", ctx);
  }
  if (!(Number.isInteger(col) && col >= 0 && col + M <= ldy)) {
    throw new RangeError(
      `linearBackward() dyColumnOffset: columns ${col}..${col + M - 1} of w ${
        fmtShape(w.shape)
      } do not fit in dy ${fmtShape(dy.shape)}`,
    );
  }
  if (acc.dx) assertShape(acc.dx, x.shape, "accumulate.dx", ctx);
  if (acc.dw) assertShape(acc.dw, w.shape, "accumulate.dw", ctx);
  if (acc.db) assertShape(acc.db, [M], "accumulate.db", ctx);

  const gpu = x.gpu;
  const N = numel(lead);
  const limit = Math.min(opts.maxBindingBytes ?? Infinity, gpu.limits.maxStorageBufferBindingSize);
  if (w.size * 4 > limit) {
    throw new RangeError(
      `linearBackward() w: ${fmtShape(w.shape)} is ${w.size * 4} bytes, over the ${limit}-byte ` +
        `binding limit; split it into row chunks and run one linearBackward per chunk ` +
        `(opts.dyColumnOffset, opts.accumulate.dx)`,
    );
  }
  // Rows of x, dy and dx per launch, so that every bound window fits the limit.
  const rowBytes = Math.max(K, ldy, 1) * 4;
  let rowsPer = N;
  if (Math.max(x.size, dy.size) * 4 > limit) {
    rowsPer = Math.floor((limit - ALIGN) / rowBytes);
    if (rowsPer < 1) {
      throw new RangeError(
        `linearBackward(): one row of x ${fmtShape(x.shape)} or dy ${
          fmtShape(dy.shape)
        } exceeds the ${limit}-byte binding limit`,
      );
    }
  }

  const dx = (acc.dx ?? Tensor.empty(gpu, x.shape, "f32")) as Tensor<"f32">;
  // With no rows the reductions are empty sums: zeros (or the accumulated tensors unchanged).
  const dw = (acc.dw ?? (N === 0 ? Tensor.zeros : Tensor.empty)(gpu, w.shape, "f32")) as Tensor<
    "f32"
  >;
  const db = opts.bias || acc.db
    ? (acc.db ?? (N === 0 ? Tensor.zeros : Tensor.empty)(gpu, [M], "f32")) as Tensor<"f32">
    : undefined;
  const wWin = window(w, 0, w.size);
  const dwWin = window(dw, 0, dw.size);
  for (let n0 = 0; n0 < N; n0 += rowsPer) {
    const rows = Math.min(rowsPer, N - n0);
    const dyWin = window(dy, n0 * ldy + col, (n0 + rows - 1) * ldy + col + M);
    const xWin = window(x, n0 * K, (n0 + rows) * K);
    const later = n0 > 0;
    // dx[n, k] = Σ_m dy[n, m] w[m, k]
    product(gpu, variant, {
      a: dyWin,
      b: wWin,
      c: window(dx, n0 * K, (n0 + rows) * K),
      I: rows,
      J: K,
      R: M,
      sAi: ldy,
      sAr: 1,
      sBr: K,
      sBj: 1,
      ldc: K,
      accumulate: acc.dx !== undefined,
    });
    // dw[m, k] (+)= Σ_n dy[n, m] x[n, k]
    product(gpu, variant, {
      a: dyWin,
      b: xWin,
      c: dwWin,
      I: M,
      J: K,
      R: rows,
      sAi: 1,
      sAr: ldy,
      sBr: K,
      sBj: 1,
      ldc: K,
      accumulate: later || acc.dw !== undefined,
    });
    if (db && M > 0) {
      const k = gpu.kernel({ shader: "matmul_backward", entry: "bias_grad", constants: { WG } });
      const dbWin = window(db, 0, M);
      gpu.dispatch(k, [dyWin.binding, dbWin.binding], Gpu.grid(Math.ceil(M / WG)), {
        I: 1,
        J: M,
        R: rows,
        sAi: 1,
        sAr: ldy,
        sBr: 0,
        sBj: 0,
        ldc: M,
        offA: dyWin.off,
        offB: 0,
        offC: dbWin.off,
        accumulate: later || acc.db !== undefined ? 1 : 0,
      });
    }
  }
  return db ? { dx, dw, db } : { dx, dw };
}

/** Gradients returned by {@linkcode linearBackwardReference} (f64). */
export interface LinearGradsReference {
  /** `dx:[N, K]`. */
  dx: Float64Array;
  /** `dw:[M, K]`. */
  dw: Float64Array;
  /** `db:[M]`. */
  db: Float64Array;
}

/**
 * CPU twin of {@linkcode linearBackward}: plain loops in f64, the derivative of
 * `linearReference` (`y = x·wᵀ + b`).
 *
 * @param x Data of `x:[N, K]` (leading dims flattened).
 * @param w Data of `w:[M, K]`.
 * @param dy Data of `dy:[N, M]`.
 * @param n Rows N.
 * @param m Output features M.
 * @param k Input features K.
 * @returns `{ dx:[N, K], dw:[M, K], db:[M] }` in f64.
 */
export function linearBackwardReference(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  dy: ArrayLike<number>,
  n: number,
  m: number,
  k: number,
): LinearGradsReference {
  if (x.length !== n * k || w.length !== m * k || dy.length !== n * m) {
    throw new RangeError(
      `linearBackwardReference(): sizes x ${x.length}, w ${w.length}, dy ${dy.length} do not ` +
        `match N=${n}, M=${m}, K=${k}`,
    );
  }
  const dx = new Float64Array(n * k), dw = new Float64Array(m * k), db = new Float64Array(m);
  for (let r = 0; r < n; r++) {
    for (let o = 0; o < m; o++) {
      const g = dy[r * m + o];
      db[o] += g;
      for (let i = 0; i < k; i++) {
        dx[r * k + i] += g * w[o * k + i];
        dw[o * k + i] += g * x[r * k + i];
      }
    }
  }
  return { dx, dw, db };
}
