/**
 * Timestamp profiling: a query set that dispatches write begin/end timestamps
 * into (one compute pass per dispatch while it is active), resolved into the
 * summed GPU time in milliseconds.
 *
 * @module
 */

/** Most dispatches one profile can time (a query set holds 4096 timestamps). */
export const MAX_PROFILED_DISPATCHES = 2048;

/** GPU time of one kernel summed over its dispatches in a profile. */
export interface KernelTime {
  /** Summed GPU milliseconds. */
  ms: number;
  /** Dispatches timed. */
  count: number;
}

/** Timestamp slots for the dispatches recorded while profiling. */
export class TimestampRecorder {
  #set: GPUQuerySet;
  #next = 0;
  #labels: string[] = [];
  #capacity: number;
  #untimed = 0;

  /**
   * @param device Device with the `timestamp-query` feature.
   * @param maxDispatches Dispatches to time, 1..{@linkcode MAX_PROFILED_DISPATCHES}.
   * @throws {RangeError} When `maxDispatches` is out of range.
   */
  constructor(device: GPUDevice, maxDispatches: number) {
    if (!(maxDispatches >= 1 && maxDispatches <= MAX_PROFILED_DISPATCHES)) {
      throw new RangeError(
        `profile(): maxDispatches must be in 1..2048 (a query set holds 4096), got ${maxDispatches}`,
      );
    }
    this.#capacity = maxDispatches * 2;
    this.#set = device.createQuerySet({ type: "timestamp", count: this.#capacity });
  }

  /**
   * Timestamp writes for the next dispatch's pass, or `undefined` once the set is full.
   *
   * @param label The kernel's name, for {@linkcode TimestampRecorder.resolve}'s per-kernel sums.
   */
  next(label = "?"): GPUComputePassTimestampWrites | undefined {
    if (this.#next + 2 > this.#capacity) {
      this.#untimed++;
      return undefined;
    }
    this.#labels.push(label);
    const w = {
      querySet: this.#set,
      beginningOfPassWriteIndex: this.#next,
      endOfPassWriteIndex: this.#next + 1,
    };
    this.#next += 2;
    return w;
  }

  /**
   * Resolves the written timestamps and returns the summed GPU time in ms; destroys the set.
   * Rejects (RangeError) when dispatches ran untimed past the set's capacity: the sum would be
   * short.
   *
   * @param device The device of the query set.
   * @param encoder Returns the shared encoder to record the resolve into.
   * @param read Reads a buffer back (submitting the encoder).
   * @param perKernel When given, receives each kernel's summed time and dispatch count.
   */
  async resolve(
    device: GPUDevice,
    encoder: () => GPUCommandEncoder,
    read: (buffer: GPUBuffer, size: number) => Promise<ArrayBuffer>,
    perKernel?: Map<string, KernelTime>,
  ): Promise<number> {
    const used = this.#next; // only slots that dispatches wrote hold timestamps
    if (used === 0) {
      this.#set.destroy();
      return 0;
    }
    const resolve = device.createBuffer({
      size: used * 8,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    encoder().resolveQuerySet(this.#set, 0, used, resolve, 0);
    const bytes = await read(resolve, used * 8);
    resolve.destroy();
    this.#set.destroy();
    const t = new BigUint64Array(bytes);
    let ns = 0n;
    for (let i = 0; i + 1 < used; i += 2) {
      const d = t[i + 1] > t[i] ? t[i + 1] - t[i] : 0n;
      ns += d;
      if (perKernel) {
        const label = this.#labels[i / 2], k = perKernel.get(label) ?? { ms: 0, count: 0 };
        k.ms += Number(d) / 1e6;
        k.count++;
        perKernel.set(label, k);
      }
    }
    const ms = Number(ns) / 1e6;
    if (this.#untimed > 0) {
      throw new RangeError(
        `profile(): fn recorded ${used / 2 + this.#untimed} dispatches, maxDispatches is ` +
          `${this.#capacity / 2}: ${this.#untimed} ran untimed and their time is not in the sum ` +
          `(${ms.toFixed(3)} ms); raise maxDispatches (at most 2048) or time fewer calls`,
      );
    }
    return ms;
  }
}
