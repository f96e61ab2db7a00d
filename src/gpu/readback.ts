/**
 * Readback: byte ranges of several GPU buffers copied into one staging buffer, one submit, one
 * map (Deno pays ~10 ms per map, so `Gpu.readMany` in ./device.ts batches through this).
 *
 * @module
 */

import { align } from "./buffers.ts";

/** A byte range of a buffer to read: `size` bytes from `offset` (default 0). */
export interface ReadRange {
  /** The buffer (needs COPY_SRC usage). */
  buffer: GPUBuffer;
  /** Byte offset, a multiple of 4. */
  offset?: number;
  /** Bytes to read. */
  size: number;
}

/** What {@linkcode readRanges} needs from the device runtime that owns the command stream. */
export interface ReadbackHooks {
  /** The shared command encoder, with any open compute pass closed. */
  encoder(): GPUCommandEncoder;
  /** Submits everything recorded so far. */
  flush(): void;
  /** Raises any GPU error recorded so far (called after a successful map). */
  raiseErrors(): Promise<void>;
  /** Explains a failed map (device lost, validation) by throwing. */
  mapFailed(error: unknown): Promise<never>;
}

/**
 * Copies each range into one staging buffer, submits, maps it and returns one ArrayBuffer per
 * range (of exactly `size` bytes; copies are padded to 4 bytes).
 *
 * @param device The device the buffers belong to.
 */
export async function readRanges(
  device: GPUDevice,
  ranges: readonly ReadRange[],
  hooks: ReadbackHooks,
): Promise<ArrayBuffer[]> {
  const sizes = ranges.map((r) => align(r.size, 4));
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total === 0) return ranges.map(() => new ArrayBuffer(0));
  const staging = device.createBuffer({
    size: total,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const enc = hooks.encoder();
  let o = 0;
  ranges.forEach((r, i) => {
    if (sizes[i]) enc.copyBufferToBuffer(r.buffer, r.offset ?? 0, staging, o, sizes[i]);
    o += sizes[i];
  });
  hooks.flush();
  try {
    await staging.mapAsync(GPUMapMode.READ);
  } catch (e) {
    staging.destroy();
    return await hooks.mapFailed(e);
  }
  const all = staging.getMappedRange().slice(0);
  staging.unmap();
  staging.destroy();
  await hooks.raiseErrors();
  o = 0;
  return ranges.map((r, i) => {
    const out = all.slice(o, o + r.size);
    o += sizes[i];
    return out;
  });
}
