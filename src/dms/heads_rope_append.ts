/**
 * A decode step's q/k preparation with the cache append fused in (issue #10: decode is
 * dispatch-bound): {@linkcode headsNormRopeQKAppend} does what {@linkcode headsNormRopeQK} does
 * for q and k at T = 1 and then, instead of returning k, stores the rotated key and the value of
 * every page into the slot a cache that appends in place (the dense cache) gives them
 * (`KvCache.decodeAppendTarget`), as paged_kv.wgsl's `append_scatter` would inside
 * `KvCache.attend`. One dispatch a layer fewer. For the DMS cache (a target with `slots`: its
 * `decode_slots` chose every layer's slot before the step, SPEC §5.2 steps 1, 2, 4) the kernel
 * (`heads_rope_qk[_norm]_neuron_dms`) also computes each KV head's decision d_t from its first
 * query head's neuron, as `headsNormRopeQK`'s `decide` does, and marks the entry of position
 * t − 1 with it (step 3) before storing the new one.
 *
 * Kernel: `heads_rope_qk[_norm][_neuron]_append` in `shaders/heads_rope_append.wgsl` (which
 * includes `shaders/heads_rope.wgsl`, `// #include`): the same q rows as
 * `heads_rope_qk*` (the neuron channel zeroed without recording the raw logit: a dense cache
 * takes no decisions), and each k row, the page b·Hkv + h, takes slot `lens` of its page. Its
 * readable twin is the unfused chain, which the tests compare bit for bit: `headsNormRopeQK`
 * (CPU twin `headsNormRopeQKReference`), then `attend`'s append (`append_scatter`, CPU twin in
 * test/cache/paged_kv_test.ts).
 *
 * @example A dense cache's decode step, q/k prepared and the entry stored in one dispatch
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { ropeInvFreq } from "../ops/rope.ts";
 * import { createDenseCache } from "../policies/dense.ts";
 * import { headsNormRopeQKAppend } from "./heads_rope_append.ts";
 * const gpu = await getGpu();
 * const [B, Hq, Hkv, D] = [1, 4, 2, 8];
 * using cache = createDenseCache(gpu, { layers: 1, batch: B, kvHeads: Hkv, headDim: D });
 * using q = Tensor.fromArray(gpu, new Float32Array(B * Hq * D).fill(1), [B, 1, Hq, D]);
 * using k = Tensor.fromArray(gpu, new Float32Array(B * Hkv * D).fill(1), [B, 1, Hkv, D]);
 * using v = Tensor.fromArray(gpu, new Float32Array(B * Hkv * D).fill(2), [B, 1, Hkv, D]);
 * using pos = Tensor.fromArray(gpu, [0], [B, 1], "i32");
 * using inv = Tensor.fromArray(gpu, ropeInvFreq(D, 1e6), [D / 2]);
 * const target = cache.decodeAppendTarget(0, "f32", false)!; // dense: no decisions
 * using qr = headsNormRopeQKAppend(q, k, v, pos, inv, {}, target); // qr:[B, Hq, 1, D]
 * using kv = k.reshape([B, Hkv, 1, D]), vv = v.reshape([B, Hkv, 1, D]); // checked, not read
 * using out = cache.attend(0, qr, kv, vv);
 * console.log(await out.toArray()); // every value 2
 * ```
 *
 * @module
 */

import { fmtShape, type Tensor } from "../tensor/tensor.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { output } from "../ops/launch.ts";
import { checkHeadsRopeArgs } from "../ops/heads_rope.ts";
import type { DecodeAppendTarget, KvCache } from "../cache/kv_cache.ts";
import { checkDecide, dispatchHeadsRopeQK, type HeadsRopeQKOptions } from "./heads_rope_qk.ts";

/**
 * Storage buffers the append kernel binds: q, k, v, positions, invFreq, the q output, the two
 * gains with norms, and the cache's lens, table, meta and K and V pools (dense), or its table,
 * meta, pools, ring and slots (`dms`: a target with `slots`).
 *
 * @param opts Which norms are on (counted when both are given).
 * @param dms Whether the target has `slots` (the DMS cache).
 * @returns 11 or 13 (dense), 12 or 14 (DMS), compared with `maxStorageBuffersPerShaderStage`.
 */
export function headsRopeQKAppendBuffers(
  opts: Pick<HeadsRopeQKOptions, "qNorm" | "kNorm">,
  dms = false,
): number {
  return (dms ? 12 : 11) + (opts.qNorm && opts.kNorm ? 2 : 0);
}

/**
 * Whether {@linkcode headsNormRopeQKAppend} takes these options on a device with these limits:
 * both or neither norms, the buffers within the limit, and for a DMS target (`dms`) the neuron
 * and `decide` (the kernel computes the step's decisions), else no `decide` (a dense cache takes
 * no decisions). Ask before `KvCache.decodeAppendTarget`, which commits the cache to the append.
 *
 * @param limits The device's limits (`gpu.limits`).
 * @param opts The options of the call.
 * @param dms Whether the target will have `slots` (the DMS cache).
 * @returns True when the fused append applies.
 */
export function headsRopeQKAppendFits(
  limits: Pick<GPUSupportedLimits, "maxStorageBuffersPerShaderStage">,
  opts: HeadsRopeQKOptions,
  dms = false,
): boolean {
  return !opts.qNorm === !opts.kNorm && (dms ? !!opts.neuron && !!opts.decide : !opts.decide) &&
    headsRopeQKAppendBuffers(opts, dms) <= limits.maxStorageBuffersPerShaderStage;
}

/**
 * Where layer `layer`'s decode entry goes when {@linkcode headsNormRopeQKAppend} may store it:
 * `cache.decodeAppendTarget`, asked only when the device takes the kernel for these options, and
 * for a cache that chooses its slots up front (DMS) only when the kernel can also take `decide`
 * (the per-head decisions). Call it for a plain decode step only (one token, no key mask); undefined
 * leaves the cache untouched.
 *
 * @param cache The step's cache.
 * @param limits The device's limits (`gpu.limits`).
 * @param layer The layer about to attend.
 * @param dtype The model's storage dtype.
 * @param heads Norms and neuron of the q/k preparation.
 * @param decide The per-head decision parameters, when the model decides there.
 * @returns The target, or undefined.
 */
export function decodeAppendTargetFor(
  cache: KvCache,
  limits: Pick<GPUSupportedLimits, "maxStorageBuffersPerShaderStage">,
  layer: number,
  dtype: "f32" | "f16",
  heads: HeadsRopeQKOptions,
  decide: HeadsRopeQKOptions["decide"],
): DecodeAppendTarget | undefined {
  if (!cache.decodeAppendTarget || !headsRopeQKAppendFits(limits, heads)) {
    return undefined;
  }
  const decides = decide !== undefined && headsRopeQKAppendFits(limits, { ...heads, decide }, true);
  return cache.decodeAppendTarget(layer, dtype, decides);
}

/**
 * q/k preparation of a decode step ({@linkcode headsNormRopeQK}'s q and k: norms, the borrowed
 * neuron's channel zeroed, RoPE) with the new key and value stored into `target`.
 *
 * @param q `[B, 1, Hq, D]` queries (projection layout), f32 or f16, D even, 2 ≤ D ≤ 256.
 * @param k `[B, 1, Hkv, D]` keys, q's dtype.
 * @param v `[B, 1, Hkv, D]` values, q's dtype (copied into the cache as they are).
 * @param positions i32 `[B, 1]` or `[1]`: the RoPE positions.
 * @param invFreq f32 `[D/2]`.
 * @param opts Norms and neuron; `decide` (with the neuron) exactly when `target` has `slots`
 *   (see {@linkcode headsRopeQKAppendFits}).
 * @param target From `KvCache.decodeAppendTarget` of a cache with B·Hkv pages of head dim D in
 *   q's dtype.
 * @returns `q:[B, Hq, 1, D]`.
 * @throws {TypeError} When k or v does not have q's dtype.
 * @throws {RangeError} When T ≠ 1, a shape does not match (naming both), Hkv does not divide Hq
 *   with the neuron, or the options do not fit ({@linkcode headsRopeQKAppendFits}).
 */
export function headsNormRopeQKAppend(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  positions: Tensor,
  invFreq: Tensor,
  opts: HeadsRopeQKOptions,
  target: DecodeAppendTarget,
): Tensor<FloatDType> {
  const op = "headsNormRopeQKAppend()";
  const { qNorm, kNorm, neuron } = opts;
  const { shape: [B, T, Hq, D], batched } = checkHeadsRopeArgs(
    op,
    { name: "q", x: q },
    positions,
    invFreq,
    qNorm && { name: "qNorm", ...qNorm },
  );
  checkHeadsRopeArgs(
    op,
    { name: "k", x: k },
    positions,
    invFreq,
    kNorm && { name: "kNorm", ...kNorm },
  );
  const Hkv = k.shape[2];
  for (const [name, t] of [["k", k], ["v", v]] as const) {
    if (t.dtype !== q.dtype) {
      throw new TypeError(`${op} ${name}: expected q's dtype ${q.dtype}, got ${t.dtype}`);
    }
  }
  if (T !== 1) throw new RangeError(`${op}: a decode step has T = 1, got q ${fmtShape(q.shape)}`);
  const want = [B, 1, Hkv, D];
  for (const [name, t] of [["k", k], ["v", v]] as const) {
    if (t.rank !== 4 || t.shape.some((n, i) => n !== want[i])) {
      throw new RangeError(
        `${op} ${name}: expected [${B}, 1, Hkv, ${D}] to match q ${fmtShape(q.shape)} and k ` +
          `${fmtShape(k.shape)}, got ${fmtShape(t.shape)}`,
      );
    }
  }
  if (neuron && !(Hkv > 0 && Hq % Hkv === 0)) {
    throw new RangeError(
      `${op} neuron: the KV heads of k ${fmtShape(k.shape)} must divide the heads of q ${
        fmtShape(q.shape)
      }`,
    );
  }
  const gpu = q.gpu, dms = target.slots !== undefined;
  if (!headsRopeQKAppendFits(gpu.limits, opts, dms)) {
    throw new RangeError(
      `${op}: needs both or neither norms, ` +
        (dms ? "the neuron and decide (a DMS target)" : "no decide (a dense target)") +
        `, and ${headsRopeQKAppendBuffers(opts, dms)} storage buffers per stage (this device: ` +
        `${gpu.limits.maxStorageBuffersPerShaderStage})`,
    );
  }
  checkDecide(op, opts.decide);
  const outQ = output(gpu, [B, Hq, 1, D], q.dtype as FloatDType);
  // in @binding order after the inputs: out, v_in, lens (dense), table, kmeta, kpool, vpool,
  // ring and slots (DMS)
  const buffers = [outQ.buffer, v.buffer];
  if (!dms) buffers.push(target.lens);
  buffers.push(target.table, target.meta, target.k, target.v);
  if (target.slots) buffers.push(target.slots.ring, target.slots.dest);
  dispatchHeadsRopeQK(q, k, positions, invFreq, opts, {
    shader: "heads_rope_append",
    suffix: dms ? "_dms" : "_append",
    T: 1,
    batched,
    outputs: buffers,
    append: target,
  });
  return outQ;
}
