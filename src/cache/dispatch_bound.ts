/**
 * Dispatch a kernel with its buffers given by `@binding` number. Bind groups are per entry
 * point (only the variables an entry uses), so the cache's multi-entry shaders (paged_kv,
 * paged_attention, dms_cache) list all their buffers once, by binding, and each dispatch picks
 * what its entry point needs. Used by the storage, the attention launchers and the policies.
 *
 * @module
 */

import type { Gpu, Kernel, ParamValues } from "../gpu/device.ts";

/**
 * Records `kernel` with the buffers it uses, taken from `byBinding[n]` for `@binding(n)`.
 *
 * @param byBinding Buffers indexed by `@binding` number (index 0, the uniform, is ignored).
 * @param workgroups Workgroup counts `[x, y?, z?]`.
 * @param params The uniform fields of `@binding(0)` by name (the WGSL `struct Params`).
 * @throws {TypeError} When the entry point uses a binding that `byBinding` leaves empty.
 *
 * @example
 * ```ts ignore
 * dispatchBound(gpu, kernel, [undefined, lens, table], [1], { pages: 4, n: 1 });
 * ```
 */
export function dispatchBound(
  gpu: Gpu,
  kernel: Kernel,
  byBinding: readonly (GPUBuffer | undefined)[],
  workgroups: readonly number[],
  params: ParamValues,
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
