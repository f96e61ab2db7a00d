/**
 * The GPU runtime: adapter and device acquisition, feature detection, a shared
 * command encoder (many dispatches, one submit), dispatch with named uniforms,
 * readback and debug error scopes. The parts live beside it, one concept each:
 * `adapter.ts` (adapter and device request, what kind of adapter, the hint for a
 * slow one), `pipelines.ts` (kernels, pipeline and bind group caches), `params.ts`
 * (uniform packing by field name, uniform arenas), `buffers.ts` (buffer pool,
 * live/peak bytes), `readback.ts` (batched reads), `profiling.ts` (timestamp
 * queries), `command_stream.ts` (the encoder and the compute pass dispatches share),
 * `errors.ts` (error scopes, uncaptured errors, device loss), `step_trace.ts` (traced
 * steps and their replay); their public names are re-exported here.
 *
 * @example Acquire the device and inspect it
 * ```ts
 * import { getGpu } from "./device.ts";
 * const gpu = await getGpu();
 * console.log(gpu.description, gpu.hasF16);
 * ```
 *
 * @example Dispatch a kernel with named uniforms
 * ```ts
 * import { getGpu } from "./device.ts";
 * const gpu = await getGpu();
 * const k = gpu.kernel({ shader: "silu", entry: "silu", defines: { T: "f32" } });
 * const x = gpu.alloc(16), y = gpu.alloc(16);
 * gpu.dispatch(k, [x, y], [1], { n: 4 }); // fields of `struct Params` in shaders/silu.wgsl
 * await gpu.sync();
 * ```
 *
 * @module
 */

import {
  type AdapterSummary,
  type GpuOptions,
  hostMemoryBytes,
  readEnv,
  requestDevice,
} from "./adapter.ts";
import { BufferPool, type MemoryStats, writePadded } from "./buffers.ts";
import { assertNoParams, type ParamValues, UniformArenas } from "./params.ts";
import {
  BindGroupCache,
  type Binding,
  bufferCountMessage,
  type Kernel,
  type KernelSpec,
  PipelineCache,
} from "./pipelines.ts";
import { type KernelTime, TimestampRecorder } from "./profiling.ts";
import { readRanges } from "./readback.ts";
import { DeviceErrors } from "./errors.ts";
import { CommandStream } from "./command_stream.ts";
import { replayDispatches, type StepTrace, StepTracer, type TraceDelta } from "./step_trace.ts";

export {
  type AdapterSummary,
  type GpuOptions,
  hostMemoryBytes,
  slowAdapterHint,
} from "./adapter.ts";
export { align, type MemoryStats } from "./buffers.ts";
export type { ParamValues } from "./params.ts";
export type { Binding, Kernel, KernelSpec } from "./pipelines.ts";
export type { StepTrace, TracedDispatch, TraceDelta } from "./step_trace.ts";

const MAX_PENDING_DISPATCHES = 1024;
const MAX_WORKGROUPS_PER_DIM = 65535;
/** How long a failed readback waits for the device's `lost` promise before blaming validation. */
const LOST_GRACE_MS = 200;

let shared: Promise<Gpu> | undefined;

/**
 * Returns the process-wide {@linkcode Gpu}, creating it on first use.
 *
 * @throws {Error} When no WebGPU adapter exists, with instructions to get one.
 */
export function getGpu(options: GpuOptions = {}): Promise<Gpu> {
  if (!shared) {
    shared = Gpu.create(options);
    shared.catch(() => (shared = undefined));
  }
  return shared;
}

/** The WebGPU device with everything the ops need. Get it with {@linkcode getGpu}. */
export class Gpu {
  /** The WebGPU device. */
  readonly device: GPUDevice;
  /** The adapter's description (e.g. "llvmpipe", "NVIDIA H100"). */
  readonly description: string;
  /** The kind of adapter: `{ description, cpu, f16, cpuGl }` (see `slowAdapterHint`). */
  readonly adapter: AdapterSummary;
  /** True when `shader-f16` is enabled: f16 storage and arithmetic are available. */
  readonly hasF16: boolean;
  /** True when `timestamp-query` is enabled. */
  readonly hasTimestamps: boolean;
  /** Debug mode: error scopes around each dispatch. */
  readonly debug: boolean;
  /** Device limits (the adapter's own, as requested). */
  readonly limits: GPUSupportedLimits;
  /** The ops take their CPU-adapter routes: a CPU driver, {@linkcode GpuOptions.gpuRoutes} unset. */
  readonly cpuRoutes: boolean;

  #pipelines: PipelineCache;
  #groups: BindGroupCache;
  #uniforms: UniformArenas;
  #pool: BufferPool;
  #stream: CommandStream;
  #bufferId: (b: GPUBuffer) => number;
  #pending = 0;
  #errors: DeviceErrors;
  #profile: TimestampRecorder | undefined;
  #tracer = new StepTracer();

  private constructor(
    device: GPUDevice,
    adapter: AdapterSummary,
    hasF16: boolean,
    debug: boolean,
    poolLimit: number,
    memoryLimit: number,
    cpuRoutes: boolean,
  ) {
    this.device = device;
    this.adapter = adapter;
    this.cpuRoutes = cpuRoutes;
    this.description = adapter.description;
    this.hasF16 = hasF16;
    this.hasTimestamps = device.features.has("timestamp-query");
    this.debug = debug;
    this.limits = device.limits;
    this.#errors = new DeviceErrors(device);
    this.#stream = new CommandStream(device);
    this.#pipelines = new PipelineCache(device, (p, label) => this.#errors.track(p, label));
    this.#groups = new BindGroupCache(device, (p, label) => this.#errors.track(p, label));
    this.#uniforms = new UniformArenas(device);
    this.#pool = new BufferPool(device, poolLimit, {
      flush: () => this.flush(),
      destroyed: (id) => {
        this.#groups.evict(id);
        this.#tracer.destroyed();
      },
    }, memoryLimit);
    this.#bufferId = (b) => this.#pool.id(b);
  }

  /** Live GPU bytes the pool may hold (see {@linkcode GpuOptions.memoryLimitBytes}). */
  get memoryLimitBytes(): number {
    return this.#pool.capBytes;
  }

  /** Acquires an adapter and device with the adapter's own limits and preloads the kernels. */
  static async create(options: GpuOptions = {}): Promise<Gpu> {
    const { device, adapter } = await requestDevice(options);
    const debug = options.debug ?? readEnv("DMS_DEBUG") === "1";
    const gpu = new Gpu(
      device,
      adapter,
      device.features.has("shader-f16"),
      debug,
      options.poolLimitBytes ?? 512 * 1024 * 1024,
      options.memoryLimitBytes ?? (adapter.cpu ? hostMemoryBytes() : Infinity),
      adapter.cpu && !options.gpuRoutes,
    );
    await gpu.#pipelines.preload();
    return gpu;
  }

  /**
   * Returns (and caches) the pipeline for a kernel spec, with the layouts of its bindings and
   * of its uniform struct (see {@linkcode PipelineCache.kernel}).
   */
  kernel(spec: KernelSpec): Kernel {
    return this.#pipelines.kernel(spec);
  }

  /**
   * Encodes one compute dispatch into the shared encoder.
   *
   * @param kernel From {@linkcode Gpu.kernel}.
   * @param buffers Storage bindings in `@binding` order (after the uniform at 0, if the shader declares one).
   * @param workgroups Workgroup counts `[x, y?, z?]`.
   * @param params The fields of the shader's uniform `struct Params` by name, e.g.
   *   `{ rows, d, eps }` (omit, or `{}`, when the entry point uses no uniform).
   * @throws {TypeError} For a wrong number of buffers, or a missing, unknown or non-number param
   *   (naming the kernel and the field).
   * @throws {RangeError} For a workgroup count out of range, or a param out of its type's range
   *   (NaN, a negative or fractional u32, ...).
   */
  dispatch(
    kernel: Kernel,
    buffers: readonly Binding[],
    workgroups: readonly number[],
    params?: ParamValues,
  ): void {
    this.#errors.checkAlive();
    const x = workgroups[0], y = workgroups[1] ?? 1, z = workgroups[2] ?? 1;
    if (!(validCount(x) && validCount(y) && validCount(z))) {
      const bad = [x, y, z].find((n) => !validCount(n));
      throw new RangeError(`${kernel.label}: workgroup count ${bad} out of range 0..65535`);
    }
    // Bind group: cached by (kernel, uniform arena, buffers); the uniform block is a 256-byte
    // slot of a per-batch arena, selected by a dynamic offset, so the group can be reused.
    // (A kernel has a uniform struct layout exactly when its entry point binds the uniform.)
    let dynamicOffset = -1, arena = -1;
    if (kernel.params) {
      ({ arena, offset: dynamicOffset } = this.#uniforms.push(kernel.label, kernel.params, params));
    } else if (params) {
      assertNoParams(kernel.label, params);
    }
    if (kernel.bindings.length - (kernel.params ? 1 : 0) !== buffers.length) {
      throw new TypeError(bufferCountMessage(kernel, buffers.length));
    }
    const uniform = arena >= 0 ? this.#uniforms.buffer(arena) : undefined;
    const group = x && y && z
      ? this.#groups.get(kernel, buffers, arena, uniform, this.#bufferId)
      : undefined; // nothing to run, but the uniform slot is taken (a trace keeps it)
    if (this.#tracer.active) {
      const params = arena >= 0 ? this.#uniforms.block(arena, dynamicOffset) : new Uint8Array(0);
      const { label, pipeline } = kernel, offset = dynamicOffset, workgroups = [x, y, z] as const;
      this.#tracer.record({ label, pipeline, group, arena, offset, params, workgroups });
    }
    if (group) this.#encode(kernel.label, kernel.pipeline, group, dynamicOffset, x, y, z);
  }

  /** Encodes one dispatch (a pass of its own when profiling or debugging, else the shared one). */
  #encode(
    label: string,
    pipeline: GPUComputePipeline,
    group: GPUBindGroup,
    dynamicOffset: number,
    x: number,
    y: number,
    z: number,
  ): void {
    if (this.debug) {
      this.device.pushErrorScope("validation");
      this.device.pushErrorScope("out-of-memory");
    }
    const prof = this.#profile;
    if (prof || this.debug) {
      // One pass per dispatch: timestamps are per pass, and error scopes must see the dispatch.
      const timestampWrites = prof?.next(label);
      const pass = this.encoder().beginComputePass({ label, timestampWrites });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group, dynamicOffset >= 0 ? [dynamicOffset] : []);
      pass.dispatchWorkgroups(x, y, z);
      pass.end();
    } else {
      this.#stream.dispatch(pipeline, group, dynamicOffset, x, y, z); // the shared pass
    }
    if (this.debug) {
      this.#errors.track(this.device.popErrorScope(), label);
      this.#errors.track(this.device.popErrorScope(), label);
    }
    if (++this.#pending >= MAX_PENDING_DISPATCHES) this.flush();
  }

  /**
   * Starts a step trace: every dispatch until {@linkcode Gpu.endTrace} is kept with its
   * pipeline, bind group, uniform block and grid (see `step_trace.ts`), so that it can be
   * replayed with {@linkcode Gpu.replay}. A copy, clear or write in between, a submit, debug mode
   * or profiling leave the trace unclean (not replayable).
   */
  beginTrace(): void {
    this.#tracer.begin(this.#uniforms.slots, !this.debug && !this.#profile);
  }

  /** Ends the trace {@linkcode Gpu.beginTrace} started and returns it. */
  endTrace(): StepTrace {
    return this.#tracer.end(this.#pool.allocations);
  }

  /**
   * Whether {@linkcode Gpu.replay} takes `trace` now: it is clean, no pooled buffer has been
   * destroyed since it began nor handed out since it ended (one it binds might be: freed by the
   * traced step, it may hold someone else's data now), and the uniform batch is at its first slot.
   */
  canReplay(trace: StepTrace): boolean {
    return this.#tracer.refusal(trace, this.#uniforms.slots, this.#pool.allocations) === undefined;
  }

  /**
   * Encodes the dispatches of `trace` again: the same pipelines, bind groups and grids, the
   * uniform blocks as traced with `delta · times` added to the words that change per step; no op
   * code runs. A buffer the trace binds that was destroyed, or a pooled buffer handed out since
   * the trace ended, makes it refuse; buffers outside the pool are the caller's to keep.
   *
   * @throws {Error} When {@linkcode Gpu.canReplay} says no: an unclean trace, a pooled buffer
   *   destroyed or handed out since, or a uniform batch not at the trace's first slot (flush
   *   first, as before the traced step).
   */
  replay(trace: StepTrace, delta?: TraceDelta, times = 1): void {
    this.#errors.checkAlive();
    const refusal = this.#tracer.refusal(trace, this.#uniforms.slots, this.#pool.allocations);
    if (refusal) throw new Error(refusal);
    this.#tracer.dirty();
    replayDispatches(
      trace,
      delta,
      times,
      (d) => this.#uniforms.pushBlock(d.params, d.arena, d.offset),
      (d) => this.#encode(d.label, d.pipeline, d.group!, d.offset, ...d.workgroups),
    );
  }

  /**
   * The shared command encoder, for copies and clears recorded in order with
   * the dispatches (it closes the compute pass dispatches share);
   * {@linkcode Gpu.flush} submits it.
   */
  encoder(): GPUCommandEncoder {
    this.#tracer.dirty();
    return this.#stream.encoder();
  }

  /** Submits everything recorded so far. */
  flush(): void {
    if (!this.#stream.recording) return;
    this.#tracer.dirty();
    // Upload this batch's uniform blocks (queued before the submit that reads them, and after
    // every earlier submit that read the previous contents).
    this.#uniforms.upload();
    const cb = this.#stream.finish()!;
    this.#pending = 0;
    this.device.queue.submit([cb]);
  }

  /** Submits pending work, waits for the GPU, and raises any debug-mode error. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.#errors.raise();
  }

  /** Writes bytes into a buffer (submitting pending work first, so earlier dispatches see the old contents). */
  write(buffer: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    this.#errors.checkAlive();
    this.#tracer.dirty();
    this.flush();
    writePadded(this.device.queue, buffer, data, offset);
  }

  /**
   * Reads byte ranges of several buffers back to the CPU with one submit and
   * one map (Deno pays ~10 ms per readback, so batch them).
   */
  async readMany(
    ranges: readonly { buffer: GPUBuffer; offset?: number; size: number }[],
  ): Promise<ArrayBuffer[]> {
    this.#errors.checkAlive();
    return await readRanges(this.device, ranges, {
      encoder: () => this.encoder(),
      flush: () => this.flush(),
      raiseErrors: () => this.#errors.raise(),
      mapFailed: async (e) => {
        // A destroyed or lost device fails the map: say so rather than "validation error".
        const lost = await this.#errors.lostWithin(LOST_GRACE_MS);
        if (lost) throw new Error(`${lost} (while reading results back)`, { cause: e });
        await this.#errors.raise();
        throw e;
      },
    });
  }

  /** Reads one byte range of a buffer back to the CPU. */
  async read(buffer: GPUBuffer, size: number, offset = 0): Promise<ArrayBuffer> {
    return (await this.readMany([{ buffer, size, offset }]))[0];
  }

  /**
   * Allocates a storage buffer of at least `bytes` (rounded up to 16), reusing
   * a freed one of the same size when possible.
   *
   * @throws {RangeError} When the size exceeds the device's `maxBufferSize`.
   */
  alloc(bytes: number, label?: string): GPUBuffer {
    this.#errors.checkAlive();
    return this.#pool.alloc(bytes, label);
  }

  /** Returns a buffer from {@linkcode Gpu.alloc} to the pool. */
  release(buffer: GPUBuffer): void {
    this.#pool.release(buffer);
  }

  /** Destroys every pooled (freed) buffer. */
  trim(): void {
    this.#pool.trim();
  }

  /** Live, peak and pooled GPU bytes, and the number of live buffers. */
  memory(): MemoryStats {
    return this.#pool.memory();
  }

  /** Sets the peak to the current live bytes. */
  resetPeak(): void {
    this.#pool.resetPeak();
  }

  /**
   * Runs `fn`, timing every dispatch it records with timestamp queries, and
   * returns the summed GPU time of those dispatches in milliseconds.
   * Requires `timestamp-query` ({@linkcode Gpu.hasTimestamps}).
   *
   * @param maxDispatches The most dispatches `fn` may record (1..2048: a query set holds 4096
   *   timestamps). When `fn` records more, the extra ones run untimed and `profile` rejects
   *   (their time would be missing from the sum): size it for `fn`, or time fewer calls.
   * @param perKernel When given, receives each kernel's summed time and dispatch count.
   * @throws {RangeError} When `fn` recorded more than `maxDispatches` dispatches.
   */
  async profile(
    fn: () => void,
    maxDispatches = 2048,
    perKernel?: Map<string, KernelTime>,
  ): Promise<number> {
    if (!this.hasTimestamps) throw new Error("This device has no timestamp-query feature");
    const prof = new TimestampRecorder(this.device, maxDispatches);
    this.flush();
    this.#profile = prof;
    try {
      fn();
    } finally {
      this.#profile = undefined;
    }
    return await prof.resolve(
      this.device,
      () => this.encoder(),
      (b, n) => this.read(b, n),
      perKernel,
    );
  }

  /**
   * Splits `count` workgroups over x (and y when x would exceed 65535).
   * Kernels recover the linear index as `(wid.y * nwg.x + wid.x)`.
   */
  static grid(count: number): [number, number] {
    if (count <= MAX_WORKGROUPS_PER_DIM) return [Math.max(1, count), 1];
    const y = Math.ceil(count / MAX_WORKGROUPS_PER_DIM);
    return [Math.ceil(count / y), y];
  }
}

function validCount(n: number): boolean {
  return n >= 0 && n <= MAX_WORKGROUPS_PER_DIM && Number.isInteger(n);
}
