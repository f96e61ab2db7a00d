/**
 * Step traces: what `Gpu.dispatch` recorded for one decode step (pipeline, bind group, uniform
 * block and grid of each dispatch), so that the next steps can be **replayed** without running
 * the ops' JavaScript again, WebGPU having no way to record a compute pass once and submit it
 * many times (no compute bundles). A replay re-encodes the same dispatches with the same bind
 * groups; only uniform words that change by a constant amount from step to step (a position, a
 * sampling step, a log column) are patched: `base + delta · k` for the k-th step after the trace.
 *
 * {@linkcode traceDelta} finds those words by comparing two traces of consecutive steps, and
 * refuses (undefined) when anything else differs: a kernel, a bind group (another buffer), a
 * grid, the uniform slots. {@linkcode sameDelta} checks the delta against a third trace: a word
 * that does not change linearly (a float field, a hash) would be caught there. Whether the step
 * may be replayed at all (no new cache block, no other plan) is the caller's to know: `generate`
 * asks the cache (`KvCache.replayDecodeStep`).
 *
 * @example Trace a step, replay it twice (the same uniforms)
 * ```ts
 * import { getGpu } from "./device.ts";
 * const gpu = await getGpu();
 * const k = gpu.kernel({ shader: "elementwise", entry: "scale", defines: { T: "f32" } });
 * const x = gpu.alloc(16), y = gpu.alloc(16);
 * gpu.write(x, new Float32Array([1, 2, 3, 4]));
 * gpu.flush();
 * gpu.beginTrace();
 * gpu.dispatch(k, [x, y], [1], { n: 4, m: 1, alpha: 2 });
 * const trace = gpu.endTrace();
 * gpu.flush();
 * gpu.replay(trace);
 * console.log(trace.clean, new Float32Array(await gpu.read(y, 16))); // true Float32Array [2, 4, 6, 8]
 * ```
 *
 * @module
 */

/** One dispatch of a trace: everything `Gpu.dispatch` encoded for it. */
export interface TracedDispatch {
  /** Kernel label (messages). */
  readonly label: string;
  /** The compute pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** The bind group (`undefined` for a dispatch of zero workgroups: only its uniform slot). */
  readonly group: GPUBindGroup | undefined;
  /** Uniform arena index, −1 when the kernel takes no uniform. */
  readonly arena: number;
  /** Byte offset of the uniform block in its arena (the dynamic offset), −1 without one. */
  readonly offset: number;
  /** The uniform block's bytes as packed (256), empty without one. */
  readonly params: Uint8Array;
  /** Workgroups `[x, y, z]` (0 in any: nothing dispatched, the slot still taken). */
  readonly workgroups: readonly [number, number, number];
}

/** The dispatches of one traced step (see {@linkcode TracedDispatch}). */
export interface StepTrace {
  /** The dispatches, in order. */
  readonly dispatches: readonly TracedDispatch[];
  /** The uniform slot of the first dispatch (replays must start there). */
  readonly firstSlot: number;
  /**
   * False when something during the trace cannot be replayed from it: a copy, clear or write
   * (encoder() or write()), a submit in the middle, debug scopes or profiling.
   */
  readonly clean: boolean;
}

/** Uniform words that change between consecutive steps: `word += delta` per step. */
export interface TraceDelta {
  /** Index of the dispatch in the trace. */
  readonly dispatch: Int32Array;
  /** Index of the 32-bit word in its uniform block. */
  readonly word: Int32Array;
  /** Change per step, as a 32-bit integer. */
  readonly delta: Int32Array;
}

/**
 * The per-step change from trace `a` to trace `b` of the next step, or undefined when the two
 * differ in anything but uniform words (kernels, bind groups, grids, slots) or either is not
 * clean.
 */
export function traceDelta(a: StepTrace, b: StepTrace): TraceDelta | undefined {
  if (!a.clean || !b.clean || a.firstSlot !== b.firstSlot) return undefined;
  if (a.dispatches.length !== b.dispatches.length) return undefined;
  const di: number[] = [], wi: number[] = [], dv: number[] = [];
  for (let i = 0; i < a.dispatches.length; i++) {
    const x = a.dispatches[i], y = b.dispatches[i];
    if (
      x.pipeline !== y.pipeline || x.group !== y.group || x.arena !== y.arena ||
      x.offset !== y.offset || x.params.length !== y.params.length ||
      x.workgroups[0] !== y.workgroups[0] || x.workgroups[1] !== y.workgroups[1] ||
      x.workgroups[2] !== y.workgroups[2]
    ) {
      return undefined;
    }
    const wx = words(x.params), wy = words(y.params);
    for (let w = 0; w < wx.length; w++) {
      if (wx[w] !== wy[w]) {
        di.push(i);
        wi.push(w);
        dv.push((wy[w] - wx[w]) | 0);
      }
    }
  }
  return { dispatch: Int32Array.from(di), word: Int32Array.from(wi), delta: Int32Array.from(dv) };
}

/** Whether two deltas patch the same words by the same amounts. */
export function sameDelta(a: TraceDelta, b: TraceDelta): boolean {
  if (a.delta.length !== b.delta.length) return false;
  for (let i = 0; i < a.delta.length; i++) {
    if (a.dispatch[i] !== b.dispatch[i] || a.word[i] !== b.word[i] || a.delta[i] !== b.delta[i]) {
      return false;
    }
  }
  return true;
}

/**
 * Adds `delta · times` to the words of dispatch `i` in `block` (its uniform block, as 32-bit
 * words, wrapping around), starting at entry `j` of the delta (entries are in dispatch order);
 * returns the first entry of a later dispatch.
 */
export function applyDelta(
  block: Int32Array,
  delta: TraceDelta,
  i: number,
  j: number,
  times: number,
): number {
  const n = delta.dispatch.length;
  while (j < n && delta.dispatch[j] < i) j++;
  for (; j < n && delta.dispatch[j] === i; j++) {
    block[delta.word[j]] = (block[delta.word[j]] + delta.delta[j] * times) | 0;
  }
  return j;
}

/**
 * The trace being recorded and what tells a replayable trace from a stale one (the `Gpu`'s part
 * of step traces): the dispatches of the current trace, and how many pooled buffers had been
 * destroyed when each trace began (one it binds may be among those destroyed since).
 */
export class StepTracer {
  #current: { dispatches: TracedDispatch[]; firstSlot: number; clean: boolean } | undefined;
  #began = new WeakMap<StepTrace, number>();
  #ended = new WeakMap<StepTrace, number>();
  #destroyed = 0;

  /** Starts a trace at uniform slot `firstSlot` (unclean from the start when `clean` is false). */
  begin(firstSlot: number, clean: boolean): void {
    this.#current = { dispatches: [], firstSlot, clean };
    this.#began.set(this.#current, this.#destroyed);
  }

  /**
   * Ends the current trace and returns it.
   *
   * @param allocations The buffer pool's allocation count now (`BufferPool.allocations`).
   */
  end(allocations: number): StepTrace {
    const t = this.#current;
    if (!t) throw new Error("endTrace: no trace was begun (beginTrace)");
    this.#current = undefined;
    this.#ended.set(t, allocations);
    return t;
  }

  /** Whether a trace is being recorded (then `record` wants the dispatches). */
  get active(): boolean {
    return this.#current !== undefined;
  }

  /** Adds a dispatch to the current trace. */
  record(d: TracedDispatch): void {
    this.#current?.dispatches.push(d);
  }

  /** Something a trace cannot replay happened (a copy, a write, a submit): the trace is unclean. */
  dirty(): void {
    if (this.#current) this.#current.clean = false;
  }

  /** A pooled buffer was destroyed. */
  destroyed(): void {
    this.#destroyed++;
  }

  /**
   * Why `trace` cannot be replayed with the uniform batch at `slot` and the pool at
   * `allocations`, or undefined when it can.
   */
  refusal(trace: StepTrace, slot: number, allocations: number): string | undefined {
    if (!trace.clean) return "replay: the trace is not clean (see Gpu.beginTrace)";
    if (this.#began.get(trace) !== this.#destroyed) {
      return "replay: a pooled buffer was destroyed since the trace began";
    }
    if (this.#ended.get(trace) !== allocations) {
      // The step's temporaries went back to the pool when it ended; one handed out since may
      // hold someone else's data, which a replay would overwrite.
      return "replay: a pooled buffer was handed out since the trace ended";
    }
    if (slot !== trace.firstSlot) {
      return `replay: the trace starts at uniform slot ${trace.firstSlot}, the batch is at slot ` +
        `${slot} (flush() first)`;
    }
    return undefined;
  }
}

/**
 * Encodes the dispatches of `trace` again through `encode`, each uniform block written by
 * `pushBlock` (which returns the slot's words) with `delta · times` added.
 */
export function replayDispatches(
  trace: StepTrace,
  delta: TraceDelta | undefined,
  times: number,
  pushBlock: (d: TracedDispatch) => Int32Array,
  encode: (d: TracedDispatch) => void,
): void {
  let j = 0;
  for (let i = 0; i < trace.dispatches.length; i++) {
    const d = trace.dispatches[i];
    if (d.arena >= 0) {
      const block = pushBlock(d);
      if (delta) j = applyDelta(block, delta, i, j, times);
    }
    if (d.group) encode(d);
  }
}

function words(b: Uint8Array): Int32Array {
  return new Int32Array(b.buffer, b.byteOffset, b.byteLength >> 2);
}
