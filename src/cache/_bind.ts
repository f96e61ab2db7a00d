/**
 * Internal: dispatch a kernel with its buffers given by `@binding` number. Bind groups are per
 * entry point (only the variables an entry uses), so the cache's multi-entry shaders list all
 * their buffers once, by binding, and each dispatch picks what its entry point needs.
 *
 * @module
 */

import type { Gpu, Kernel, Params } from "../gpu/device.ts";

/**
 * Records `kernel` with the buffers it uses, taken from `byBinding[n]` for `@binding(n)`.
 *
 * @throws {TypeError} When the entry point uses a binding that `byBinding` leaves empty.
 */
export function dispatchBound(
  gpu: Gpu,
  kernel: Kernel,
  byBinding: readonly (GPUBuffer | undefined)[],
  workgroups: readonly number[],
  params: Params,
): void {
  const buffers: GPUBuffer[] = [];
  for (const decl of kernel.bindings) {
    if (decl.kind === "uniform") continue;
    const b = byBinding[decl.binding];
    if (!b) throw new TypeError(`${kernel.label}: no buffer given for @binding(${decl.binding})`);
    buffers.push(b);
  }
  gpu.dispatch(kernel, buffers, workgroups, params);
}
