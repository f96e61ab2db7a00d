/**
 * The storage buffer pool: allocation rounded to 16 bytes, reuse of freed
 * buffers of the same size (lowest id first, so a program that allocates the
 * same way every step gets the same buffers and its cached bind groups hit),
 * a byte limit on what is kept, a cap on live bytes (an allocation past it, or past the
 * device's `maxBufferSize`, is refused before it is made, with the sizes in the message), and
 * live/peak/pooled accounting.
 *
 * @module
 */

/** GPU memory accounting in bytes. */
export interface MemoryStats {
  /** Bytes in buffers held by tensors and caches. */
  liveBytes: number;
  /** Highest `liveBytes` seen since the start or the last `Gpu.resetPeak()`. */
  peakBytes: number;
  /** Bytes in freed buffers kept for reuse. */
  pooledBytes: number;
  /** Buffers held by tensors and caches (allocated and not yet released): a leak check. */
  liveBuffers: number;
}

const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** Rounds `n` up to a multiple of `a`. */
export function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/**
 * Queues a write of `data` into `buffer` at `offset`; a length that is not a multiple of 4 gets
 * its last bytes zero-padded to 4 (WebGPU writes whole words).
 */
export function writePadded(
  queue: GPUQueue,
  buffer: GPUBuffer,
  data: ArrayBufferView,
  offset = 0,
): void {
  const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
  const n = bytes.byteLength & ~3;
  if (n) queue.writeBuffer(buffer, offset, bytes, 0, n);
  if (n !== bytes.byteLength) {
    const tail = new Uint8Array(4);
    tail.set(bytes.subarray(n));
    queue.writeBuffer(buffer, offset + n, tail);
  }
}

/** Hooks the pool calls before destroying a buffer (submit pending work, drop cached bind groups). */
export interface PoolHooks {
  /** Submits recorded work that may still use the buffer. */
  flush(): void;
  /** Forgets the cached bind groups that bind the buffer with this id (it is being destroyed). */
  destroyed(id: number): void;
}

/** Storage buffers by size, with a stable id per buffer. */
export class BufferPool {
  #device: GPUDevice;
  #hooks: PoolHooks;
  #limit: number;
  #cap: number;
  #pool = new Map<number, GPUBuffer[]>();
  #order = new Set<GPUBuffer>(); // freed buffers, oldest first
  #ids = new WeakMap<GPUBuffer, number>();
  #sizes = new WeakMap<GPUBuffer, number>(); // GPUBuffer.size is a native call: remember it
  #maxBufferSize: number;
  #nextId = 0;
  #allocs = 0;
  #live = 0;
  #liveCount = 0;
  #peak = 0;
  #pooled = 0;

  /**
   * @param device Device to create buffers on.
   * @param limitBytes Bytes of freed buffers kept before the oldest are destroyed.
   * @param hooks Called before a pooled buffer is destroyed.
   * @param capBytes Live bytes this pool may hold (default unbounded).
   */
  constructor(device: GPUDevice, limitBytes: number, hooks: PoolHooks, capBytes = Infinity) {
    this.#device = device;
    this.#limit = limitBytes;
    this.#hooks = hooks;
    this.#cap = capBytes;
    this.#maxBufferSize = device.limits.maxBufferSize; // device.limits builds a new object
  }

  /** Buffers handed out so far (a version: a freed buffer may be someone else's after it). */
  get allocations(): number {
    return this.#allocs;
  }

  /** Live bytes this pool may hold. */
  get capBytes(): number {
    return this.#cap;
  }

  /** A stable small integer for `b` (bind group cache keys; lowest-id reuse). */
  id(b: GPUBuffer): number {
    let id = this.#ids.get(b);
    if (id === undefined) this.#ids.set(b, id = this.#nextId++);
    return id;
  }

  /**
   * A storage buffer of at least `bytes` (rounded up to 16), reusing a freed one of the same
   * size when possible.
   *
   * @throws {RangeError} When the size is not a byte count, exceeds the device's
   *   `maxBufferSize`, or would take the live bytes past the pool's cap (nothing is allocated).
   */
  alloc(bytes: number, label?: string): GPUBuffer {
    const what = `Buffer${label ? ` "${label}"` : ""} of ${bytes} bytes`;
    if (!(Number.isSafeInteger(bytes) && bytes >= 0)) {
      throw new RangeError(`${what}: the size must be a whole number of bytes`);
    }
    const size = Math.max(16, align(bytes, 16));
    const max = this.#maxBufferSize;
    if (size > max) {
      throw new RangeError(`${what} exceeds this device's maxBufferSize (${max} bytes)`);
    }
    const list = this.#pool.get(size);
    if (!list?.length && this.#live + size > this.#cap) {
      throw new RangeError(
        `${what} would bring live GPU memory to ${this.#live + size} bytes, over the limit of ` +
          `${this.#cap} bytes (GpuOptions.memoryLimitBytes; ${this.#live} bytes live)`,
      );
    }
    let buf: GPUBuffer | undefined;
    if (list?.length) {
      let best = 0;
      for (let i = 1; i < list.length; i++) {
        if (this.id(list[i]) < this.id(list[best])) best = i;
      }
      buf = list[best];
      list[best] = list[list.length - 1];
      list.pop();
      this.#pooled -= size;
      this.#order.delete(buf);
    } else {
      buf = this.#device.createBuffer({ size, usage: STORAGE_USAGE, label });
      this.id(buf);
      this.#sizes.set(buf, size);
    }
    this.#allocs++;
    this.#live += size;
    this.#liveCount++;
    if (this.#live > this.#peak) this.#peak = this.#live;
    return buf;
  }

  /** Returns a buffer from {@linkcode BufferPool.alloc}; the oldest pooled ones beyond the limit are destroyed. */
  release(buffer: GPUBuffer): void {
    const size = this.#sizes.get(buffer) ?? buffer.size;
    this.#live -= size;
    this.#liveCount--;
    let list = this.#pool.get(size);
    if (!list) this.#pool.set(size, list = []);
    list.push(buffer);
    this.#order.add(buffer);
    this.#pooled += size;
    while (this.#pooled > this.#limit && this.#order.size) {
      const old = this.#order.values().next().value!;
      this.#order.delete(old);
      const oldSize = this.#sizes.get(old) ?? old.size;
      const l = this.#pool.get(oldSize)!;
      l.splice(l.indexOf(old), 1);
      this.#pooled -= oldSize;
      this.#hooks.flush();
      this.#hooks.destroyed(this.id(old));
      old.destroy();
    }
  }

  /** Destroys every pooled (freed) buffer. */
  trim(): void {
    this.#hooks.flush();
    for (const b of this.#order) {
      this.#hooks.destroyed(this.id(b));
      b.destroy();
    }
    this.#pool.clear();
    this.#order.clear();
    this.#pooled = 0;
  }

  /** Live, peak and pooled bytes, and the number of live buffers. */
  memory(): MemoryStats {
    return {
      liveBytes: this.#live,
      peakBytes: this.#peak,
      pooledBytes: this.#pooled,
      liveBuffers: this.#liveCount,
    };
  }

  /** Sets the peak to the current live bytes. */
  resetPeak(): void {
    this.#peak = this.#live;
  }
}

const COUNTERS = new WeakMap<GPUDevice, Map<string, GPUBuffer>>();

/**
 * A device's arrival counters named `label` (`bytes` of u32s): zero when created (WebGPU zeroes
 * new buffers) and, by the kernels' contract, set back to zero by the last workgroup of every
 * dispatch that counts in them, so successive dispatches share them (each reads and writes them,
 * so WebGPU orders those dispatches). Made outside the buffer pool: they live as long as the device
 * and are not counted among a caller's buffers. Used by the "last workgroup finishes the job"
 * kernels (`gemv16_rn`, the fused flash-decoding merge).
 *
 * @param device The device.
 * @param label Which counters (one buffer per label and device).
 * @param bytes Their size, a multiple of 4 (the first call for a label sets it).
 * @returns The buffer.
 */
export function deviceCounters(device: GPUDevice, label: string, bytes: number): GPUBuffer {
  let byLabel = COUNTERS.get(device);
  if (!byLabel) COUNTERS.set(device, byLabel = new Map());
  let b = byLabel.get(label);
  if (!b) {
    b = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE, label });
    byLabel.set(label, b);
  }
  return b;
}
