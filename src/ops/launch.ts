/**
 * Helpers shared by op launchers: dtype checks, grids, output allocation.
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import type { DType, FloatDType } from "../tensor/dtype.ts";
import { fmtShape, Tensor } from "../tensor/tensor.ts";

/** Throws a `TypeError` unless the tensor holds floats. */
export function assertFloat(t: Tensor, what: string): asserts t is Tensor<FloatDType> {
  if (t.dtype !== "f32" && t.dtype !== "f16") {
    throw new TypeError(
      `${what}: expected an f32 or f16 tensor, got ${t.dtype}${fmtShape(t.shape)}`,
    );
  }
}

/** Throws a `TypeError` unless all tensors share one dtype; returns it. */
export function sameDtype(op: string, ...ts: Tensor[]): DType {
  const d = ts[0].dtype;
  for (const t of ts) {
    if (t.dtype !== d) {
      throw new TypeError(
        `${op}: dtypes differ (${ts.map((x) => x.dtype + fmtShape(x.shape)).join(", ")})`,
      );
    }
  }
  return d;
}

/** Workgroup grid for `n` items at `wg` items per workgroup (2D when large). */
export function grid1d(n: number, wg: number): [number, number] {
  return Gpu.grid(Math.ceil(n / wg));
}

/** Allocates the output tensor of an op. */
export function output<D extends DType>(gpu: Gpu, shape: readonly number[], dtype: D): Tensor<D> {
  return Tensor.empty(gpu, shape, dtype);
}

/** Throws a `RangeError` naming the op when a tensor's rank is wrong. */
export function assertRank(t: Tensor, rank: number | number[], what: string): void {
  const ok = Array.isArray(rank) ? rank.includes(t.rank) : t.rank === rank;
  if (!ok) {
    throw new RangeError(
      `${what}: expected rank ${Array.isArray(rank) ? rank.join(" or ") : rank}, got shape ${
        fmtShape(t.shape)
      }`,
    );
  }
}

/**
 * Workgroup size for a row-per-workgroup kernel over rows of length `n`: the smallest power of
 * two >= 32 that covers n / 8 (8 elements per thread per step), at most 1024 or the device's
 * limits (8 bytes of workgroup memory per thread).
 */
export function rowWorkgroupSize(gpu: Gpu, n: number): number {
  const l = gpu.limits;
  const max = Math.min(
    1024,
    l.maxComputeInvocationsPerWorkgroup,
    l.maxComputeWorkgroupSizeX,
    l.maxComputeWorkgroupStorageSize / 8,
  );
  let wg = 32;
  while (wg * 8 < n && wg * 2 <= max) wg *= 2;
  return wg;
}
