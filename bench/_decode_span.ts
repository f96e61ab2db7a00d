/**
 * Host or GPU bound, for `bench/generate.ts`: the GPU's span over a run of decode steps, encoded
 * as generation encodes them, against the host's time to encode them.
 *
 * @example
 * ```ts ignore
 * import { decodeSpan } from "./_decode_span.ts";
 * // model: a loaded Model; cache: its cache after a prefill of 2048 tokens
 * const { spanGpuMsPerStep, spanHostMsPerStep } = await decodeSpan(model, cache, 2048 + 8);
 * ```
 *
 * @module
 */

import type { PagedKvCache } from "../src/cache/paged_kv_cache.ts";
import type { Model } from "../src/model/model.ts";
import { sample } from "../src/ops/sample.ts";
import { Tensor } from "../src/tensor/tensor.ts";

/** Milliseconds a decode step: the GPU's span and the host's encoding. */
export interface DecodeSpan {
  spanGpuMsPerStep: number;
  spanHostMsPerStep: number;
}

/**
 * Host or GPU bound? Encodes `K` decode steps the normal way (dispatches sharing compute passes,
 * no profiling) between two timestamp-only passes, timing the host's encoding (forward, sample,
 * the submits) on the CPU clock and the GPU's span between the two timestamps. The span holds
 * the barriers and gaps between dispatches that per-dispatch timestamps miss; when it is no longer
 * than the host's time the GPU waited for the host. The token and position stay fixed (the
 * numbers are timing only); `position` is past every stored token.
 */
export async function decodeSpan(
  model: Model,
  cache: PagedKvCache,
  position: number,
  K = 32,
): Promise<DecodeSpan> {
  const cfg = model.config, gpu = model.gpu;
  using ids = Tensor.fromArray(gpu, [1], [1, 1], "i32");
  using pos = Tensor.fromArray(gpu, [position], [1, 1], "i32");
  await cache.reserve(K + 4);
  await gpu.sync();
  const qs = gpu.device.createQuerySet({ type: "timestamp", count: 2 });
  const resolved = gpu.device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  try {
    gpu.encoder().beginComputePass({
      timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0 },
    }).end();
    const h0 = performance.now();
    for (let k = 0; k < K; k++) {
      const l = model.forward(ids, { mode: "inference", positions: pos, cache, logits: "last" })!;
      const logits = l.reshape([1, cfg.vocabSize]);
      l.dispose();
      sample(logits, { out: ids });
      logits.dispose();
    }
    gpu.encoder().beginComputePass({ timestampWrites: { querySet: qs, endOfPassWriteIndex: 1 } })
      .end();
    gpu.flush();
    const hostMs = performance.now() - h0;
    gpu.encoder().resolveQuerySet(qs, 0, 2, resolved, 0);
    const t = new BigUint64Array(await gpu.read(resolved, 16));
    return {
      spanGpuMsPerStep: Number(t[1] - t[0]) / 1e6 / K,
      spanHostMsPerStep: hostMs / K,
    };
  } finally {
    qs.destroy();
    resolved.destroy();
  }
}
