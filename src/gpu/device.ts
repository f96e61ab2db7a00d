/**
 * The GPU runtime: adapter and device acquisition, feature detection,
 * pipeline cache, buffer pool with live/peak accounting, a shared command
 * encoder (many dispatches, one submit), readback, debug error scopes and
 * timestamp profiling.
 *
 * @example Acquire the device and inspect it
 * ```ts
 * import { getGpu } from "./device.ts";
 * const gpu = await getGpu();
 * console.log(gpu.description, gpu.hasF16);
 * ```
 *
 * @module
 */

import { SHADER_FILES } from "./manifest.ts";
import { type BindingDecl, loadShaderSource, parseBindings, preprocess } from "./shader.ts";

/** Options for {@linkcode getGpu} / {@linkcode Gpu.create}. */
export interface GpuOptions {
  /** Wrap every dispatch in validation/out-of-memory error scopes and raise errors with the kernel's name. Default: `DMS_DEBUG=1` in the environment. */
  debug?: boolean;
  /** Request `shader-f16` when the adapter offers it. Default true. */
  allowF16?: boolean;
  /** Adapter power preference. */
  powerPreference?: GPUPowerPreference;
  /** Bytes of freed buffers kept for reuse before the oldest are destroyed. Default 512 MiB. */
  poolLimitBytes?: number;
}

/** A compute pipeline plus its explicit bind group layout. */
export interface Kernel {
  /** Index of the pipeline in the device's cache. */
  readonly id: number;
  /** `shader:entry` plus defines/constants, used in error messages. */
  readonly label: string;
  /** The compute pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** Explicit layout of `@group(0)`. */
  readonly layout: GPUBindGroupLayout;
  /** Declared bindings, in `@binding` order. */
  readonly bindings: readonly BindingDecl[];
}

/** Identifies a kernel: shader file, entry point, type aliases, override constants. */
export interface KernelSpec {
  /** File name in `shaders/` without `.wgsl`. */
  shader: string;
  /** Entry point function. */
  entry: string;
  /** Type aliases prepended to the source, e.g. `{ T: "f16" }`. */
  defines?: Record<string, string>;
  /** Values of `override` constants. */
  constants?: Record<string, number>;
}

/** A buffer (or a byte range of one) bound to a kernel. */
export type Binding = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };

/** GPU memory accounting in bytes. */
export interface MemoryStats {
  /** Bytes in buffers held by tensors and caches. */
  liveBytes: number;
  /** Highest `liveBytes` seen since the start or the last {@linkcode Gpu.resetPeak}. */
  peakBytes: number;
  /** Bytes in freed buffers kept for reuse. */
  pooledBytes: number;
}

const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
const UNIFORM_BYTES = 256;
const MAX_PENDING_DISPATCHES = 1024;
const ARENA_SLOTS = 256; // uniform blocks per arena buffer (64 KiB, the minimum maxUniformBufferBindingSize)
const MAX_CACHED_GROUPS = 8192;
const MAX_WORKGROUPS_PER_DIM = 65535;

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

/** Builds a 256-byte uniform block from scalar fields, in WGSL struct order. */
export class Params {
  #view = new DataView(new ArrayBuffer(UNIFORM_BYTES));
  #offset = 0;
  /** Appends a `u32`. */
  u32(v: number): this {
    this.#view.setUint32(this.#next(), v >>> 0, true);
    return this;
  }
  /** Appends an `i32`. */
  i32(v: number): this {
    this.#view.setInt32(this.#next(), v | 0, true);
    return this;
  }
  /** Appends an `f32`. */
  f32(v: number): this {
    this.#view.setFloat32(this.#next(), v, true);
    return this;
  }
  /** The packed bytes. */
  get bytes(): ArrayBuffer {
    return this.#view.buffer as ArrayBuffer;
  }
  #next(): number {
    const o = this.#offset;
    if (o + 4 > UNIFORM_BYTES) throw new RangeError(`Params exceed ${UNIFORM_BYTES} bytes`);
    this.#offset += 4;
    return o;
  }
}

/** The WebGPU device with everything the ops need. Get it with {@linkcode getGpu}. */
export class Gpu {
  /** The WebGPU device. */
  readonly device: GPUDevice;
  /** The adapter's description (e.g. "llvmpipe", "NVIDIA H100"). */
  readonly description: string;
  /** True when `shader-f16` is enabled: f16 storage and arithmetic are available. */
  readonly hasF16: boolean;
  /** True when `timestamp-query` is enabled. */
  readonly hasTimestamps: boolean;
  /** Debug mode: error scopes around each dispatch. */
  readonly debug: boolean;
  /** Device limits (the adapter's own, as requested). */
  readonly limits: GPUSupportedLimits;

  #pipelines = new Map<string, Kernel>();
  #shaders = new Map<string, { source?: string; error?: Error }>();
  #pool = new Map<number, GPUBuffer[]>();
  #poolOrder = new Set<GPUBuffer>(); // freed buffers, oldest first
  #poolLimit: number;
  #arenas: GPUBuffer[] = [];
  #staging: Uint8Array<ArrayBuffer>[] = [];
  #uniformSlots = 0;
  #groups = new Map<string, GPUBindGroup>();
  #ids = new WeakMap<GPUBuffer, number>();
  #nextId = 0;
  #encoder: GPUCommandEncoder | undefined;
  #pass: GPUComputePassEncoder | undefined;
  #pending = 0;
  #live = 0;
  #peak = 0;
  #pooled = 0;
  #errors: Promise<GPUError | null>[] = [];
  #errorLabels: string[] = [];
  #profile: { set: GPUQuerySet; next: number; capacity: number } | undefined;
  #lost: string | undefined;

  private constructor(
    device: GPUDevice,
    description: string,
    hasF16: boolean,
    debug: boolean,
    poolLimit: number,
  ) {
    this.device = device;
    this.description = description;
    this.hasF16 = hasF16;
    this.hasTimestamps = device.features.has("timestamp-query");
    this.debug = debug;
    this.limits = device.limits;
    this.#poolLimit = poolLimit;
    device.lost.then((info) => {
      this.#lost = `GPU device lost (${info.reason}): ${info.message}`;
    });
  }

  /** Acquires an adapter and device with the adapter's own limits and preloads the kernels. */
  static async create(options: GpuOptions = {}): Promise<Gpu> {
    if (typeof navigator === "undefined" || !("gpu" in navigator) || !navigator.gpu) {
      throw new Error(
        "WebGPU is not available in this runtime. Run with Deno 2 (npx -y deno@2.9.6 ...), " +
          "which ships WebGPU.",
      );
    }
    const adapter = await navigator.gpu.requestAdapter({
      powerPreference: options.powerPreference,
    });
    if (!adapter) {
      throw new Error(
        "No WebGPU adapter found. Use a machine with a GPU and a Vulkan/Metal/D3D12 driver, or " +
          "install Mesa's CPU drivers: `apt-get install -y mesa-vulkan-drivers` (Vulkan, lavapipe) " +
          "or Mesa's llvmpipe GL driver (select it with DENO_WEBGPU_BACKEND=gl).",
      );
    }
    const features: GPUFeatureName[] = [];
    const wantF16 = options.allowF16 ?? true;
    if (wantF16 && adapter.features.has("shader-f16")) features.push("shader-f16");
    if (adapter.features.has("timestamp-query")) features.push("timestamp-query");
    const l = adapter.limits;
    const requiredLimits: Record<string, number> = {
      maxBufferSize: l.maxBufferSize,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: l.maxComputeWorkgroupSizeY,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    };
    const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
    const debug = options.debug ?? readEnv("DMS_DEBUG") === "1";
    const gpu = new Gpu(
      device,
      adapter.info.description || adapter.info.vendor || "unknown adapter",
      device.features.has("shader-f16"),
      debug,
      options.poolLimitBytes ?? 512 * 1024 * 1024,
    );
    await gpu.#preload();
    return gpu;
  }

  async #preload(): Promise<void> {
    const results = await Promise.allSettled(SHADER_FILES.map((n) => loadShaderSource(n)));
    results.forEach((r, i) => {
      this.#shaders.set(
        SHADER_FILES[i],
        r.status === "fulfilled" ? { source: r.value } : { error: r.reason as Error },
      );
    });
  }

  /** Returns (and caches) the pipeline for a kernel spec. */
  kernel(spec: KernelSpec): Kernel {
    const key = JSON.stringify([spec.shader, spec.entry, spec.defines ?? {}, spec.constants ?? {}]);
    const hit = this.#pipelines.get(key);
    if (hit) return hit;
    const entry = this.#shaders.get(spec.shader);
    if (!entry) throw new Error(`Unknown shader "${spec.shader}" (not in src/gpu/manifest.ts)`);
    if (entry.error) throw entry.error;
    const code = preprocess(entry.source!, spec.defines);
    const label = `${spec.shader}:${spec.entry}` +
      (spec.defines ? ` ${JSON.stringify(spec.defines)}` : "") +
      (spec.constants ? ` ${JSON.stringify(spec.constants)}` : "");
    const bindings = parseBindings(code, spec.entry);
    const layout = this.device.createBindGroupLayout({
      label,
      entries: bindings.map((b) => ({
        binding: b.binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: {
          type: b.kind === "uniform"
            ? "uniform"
            : (b.kind === "read" ? "read-only-storage" : "storage"),
          hasDynamicOffset: b.kind === "uniform",
        },
      })),
    });
    // Always (not only in debug mode): a WGSL compile error otherwise fails silently.
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ label, code });
    const pipeline = this.device.createComputePipeline({
      label,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: spec.entry, constants: spec.constants },
    });
    this.#track(this.device.popErrorScope(), `creating ${label}`);
    const k: Kernel = { id: this.#pipelines.size, label, pipeline, layout, bindings };
    this.#pipelines.set(key, k);
    return k;
  }

  /**
   * Encodes one compute dispatch into the shared encoder.
   *
   * @param kernel From {@linkcode Gpu.kernel}.
   * @param buffers Storage bindings in `@binding` order (after the uniform at 0, if the shader declares one).
   * @param workgroups Workgroup counts `[x, y?, z?]`.
   * @param params Uniform block for `@binding(0)` when the shader declares a uniform.
   */
  dispatch(
    kernel: Kernel,
    buffers: readonly Binding[],
    workgroups: readonly number[],
    params?: Params,
  ): void {
    this.#checkAlive();
    const [x, y = 1, z = 1] = workgroups;
    for (const n of [x, y, z]) {
      if (!(n >= 0 && n <= MAX_WORKGROUPS_PER_DIM && Number.isInteger(n))) {
        throw new RangeError(`${kernel.label}: workgroup count ${n} out of range 0..65535`);
      }
    }
    // Bind group: cached by (kernel, uniform arena, buffers); the uniform block is a 256-byte
    // slot of a per-batch arena, selected by a dynamic offset, so the group can be reused.
    let key = `${kernel.id}`;
    let dynamicOffset = -1, arena = -1;
    let bi = 0;
    for (const decl of kernel.bindings) {
      if (decl.kind === "uniform") {
        if (!params) throw new TypeError(`${kernel.label}: missing uniform params`);
        const slot = this.#uniformSlots++;
        arena = Math.floor(slot / ARENA_SLOTS);
        dynamicOffset = (slot % ARENA_SLOTS) * UNIFORM_BYTES;
        this.#arenaStaging(arena).set(new Uint8Array(params.bytes), dynamicOffset);
        key += `|u${arena}`;
      } else {
        const b = buffers[bi++];
        if (!b) throw new TypeError(this.#countMessage(kernel, buffers.length));
        key += b instanceof GPUBuffer
          ? `|${this.#bufferId(b)}`
          : `|${this.#bufferId(b.buffer)}:${b.offset ?? 0}:${b.size ?? -1}`;
      }
    }
    if (bi !== buffers.length) throw new TypeError(this.#countMessage(kernel, buffers.length));
    if (x === 0 || y === 0 || z === 0) return;
    if (this.debug) {
      this.device.pushErrorScope("validation");
      this.device.pushErrorScope("out-of-memory");
    }
    let group = this.#groups.get(key);
    if (!group) {
      const entries: GPUBindGroupEntry[] = [];
      let j = 0;
      for (const decl of kernel.bindings) {
        if (decl.kind === "uniform") {
          entries.push({
            binding: decl.binding,
            resource: { buffer: this.#arenas[arena], offset: 0, size: UNIFORM_BYTES },
          });
        } else {
          const b = buffers[j++];
          entries.push({
            binding: decl.binding,
            resource: b instanceof GPUBuffer ? { buffer: b } : b,
          });
        }
      }
      group = this.device.createBindGroup({ layout: kernel.layout, entries });
      if (this.#groups.size >= MAX_CACHED_GROUPS) this.#groups.clear();
      this.#groups.set(key, group);
    }
    const offsets = dynamicOffset >= 0 ? [dynamicOffset] : [];
    const prof = this.#profile;
    if (prof || this.debug) {
      // One pass per dispatch: timestamps are per pass, and error scopes must see the dispatch.
      let timestampWrites: GPUComputePassTimestampWrites | undefined;
      if (prof && prof.next + 2 <= prof.capacity) {
        timestampWrites = {
          querySet: prof.set,
          beginningOfPassWriteIndex: prof.next,
          endOfPassWriteIndex: prof.next + 1,
        };
        prof.next += 2;
      }
      const pass = this.encoder().beginComputePass({ label: kernel.label, timestampWrites });
      pass.setPipeline(kernel.pipeline);
      pass.setBindGroup(0, group, offsets);
      pass.dispatchWorkgroups(x, y, z);
      pass.end();
    } else {
      // Consecutive dispatches share one compute pass (storage writes of a dispatch are visible
      // to the next one in the same pass); copies and clears end it (see encoder()).
      if (!this.#pass) {
        this.#pass = this.#rawEncoder().beginComputePass();
      }
      this.#pass.setPipeline(kernel.pipeline);
      this.#pass.setBindGroup(0, group, offsets);
      this.#pass.dispatchWorkgroups(x, y, z);
    }
    if (this.debug) {
      this.#track(this.device.popErrorScope(), kernel.label);
      this.#track(this.device.popErrorScope(), kernel.label);
    }
    if (++this.#pending >= MAX_PENDING_DISPATCHES) this.flush();
  }

  /**
   * The shared command encoder, for copies and clears recorded in order with
   * the dispatches (it closes the compute pass dispatches share);
   * {@linkcode Gpu.flush} submits it.
   */
  encoder(): GPUCommandEncoder {
    this.#endPass();
    return this.#rawEncoder();
  }

  #rawEncoder(): GPUCommandEncoder {
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder();
    return this.#encoder;
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = undefined;
    }
  }

  /** Submits everything recorded so far. */
  flush(): void {
    this.#endPass();
    if (!this.#encoder) return;
    // Upload this batch's uniform blocks (queued before the submit that reads them, and after
    // every earlier submit that read the previous contents).
    for (let a = 0; a * ARENA_SLOTS < this.#uniformSlots; a++) {
      const used = Math.min(ARENA_SLOTS, this.#uniformSlots - a * ARENA_SLOTS) * UNIFORM_BYTES;
      this.device.queue.writeBuffer(
        this.#arenas[a],
        0,
        this.#staging[a] as Uint8Array<ArrayBuffer>,
        0,
        used,
      );
    }
    this.#uniformSlots = 0;
    const cb = this.#encoder.finish();
    this.#encoder = undefined;
    this.#pending = 0;
    this.device.queue.submit([cb]);
  }

  /** Submits pending work, waits for the GPU, and raises any debug-mode error. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.#raiseErrors();
  }

  /** Writes bytes into a buffer (submitting pending work first, so earlier dispatches see the old contents). */
  write(buffer: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    this.#checkAlive();
    this.flush();
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    const n = bytes.byteLength & ~3;
    if (n) this.device.queue.writeBuffer(buffer, offset, bytes, 0, n);
    if (n !== bytes.byteLength) {
      const tail = new Uint8Array(4);
      tail.set(bytes.subarray(n));
      this.device.queue.writeBuffer(buffer, offset + n, tail);
    }
  }

  /**
   * Reads byte ranges of several buffers back to the CPU with one submit and
   * one map (Deno pays ~10 ms per readback, so batch them).
   */
  async readMany(
    ranges: readonly { buffer: GPUBuffer; offset?: number; size: number }[],
  ): Promise<ArrayBuffer[]> {
    this.#checkAlive();
    const sizes = ranges.map((r) => align(r.size, 4));
    const total = sizes.reduce((a, b) => a + b, 0);
    if (total === 0) return ranges.map(() => new ArrayBuffer(0));
    const staging = this.device.createBuffer({
      size: total,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = this.encoder();
    let o = 0;
    ranges.forEach((r, i) => {
      if (sizes[i]) enc.copyBufferToBuffer(r.buffer, r.offset ?? 0, staging, o, sizes[i]);
      o += sizes[i];
    });
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e) {
      staging.destroy();
      await this.#raiseErrors();
      throw e;
    }
    const all = staging.getMappedRange().slice(0);
    staging.unmap();
    staging.destroy();
    await this.#raiseErrors();
    o = 0;
    return ranges.map((r, i) => {
      const out = all.slice(o, o + r.size);
      o += sizes[i];
      return out;
    });
  }

  /** Reads one byte range of a buffer back to the CPU. */
  async read(buffer: GPUBuffer, size: number, offset = 0): Promise<ArrayBuffer> {
    return (await this.readMany([{ buffer, size, offset }]))[0];
  }

  /**
   * Allocates a storage buffer of at least `bytes` (rounded up to 16), reusing
   * a freed one of the same size when possible.
   */
  alloc(bytes: number, label?: string): GPUBuffer {
    this.#checkAlive();
    const size = Math.max(16, align(bytes, 16));
    if (size > this.limits.maxBufferSize) {
      throw new RangeError(
        `Buffer of ${size} bytes exceeds this device's maxBufferSize (${this.limits.maxBufferSize})`,
      );
    }
    // Reuse the free buffer of this size created first (lowest id): a program that allocates
    // the same way every step (a decode step) then gets the same buffers every step, so its
    // cached bind groups hit.
    const list = this.#pool.get(size);
    let buf: GPUBuffer | undefined;
    if (list?.length) {
      let best = 0;
      for (let i = 1; i < list.length; i++) {
        if (this.#bufferId(list[i]) < this.#bufferId(list[best])) best = i;
      }
      buf = list[best];
      list[best] = list[list.length - 1];
      list.pop();
      this.#pooled -= size;
      this.#poolOrder.delete(buf);
    } else {
      buf = this.device.createBuffer({ size, usage: STORAGE_USAGE, label });
      this.#bufferId(buf);
    }
    this.#live += size;
    if (this.#live > this.#peak) this.#peak = this.#live;
    return buf;
  }

  /** Returns a buffer from {@linkcode Gpu.alloc} to the pool. */
  release(buffer: GPUBuffer): void {
    const size = buffer.size;
    this.#live -= size;
    let list = this.#pool.get(size);
    if (!list) this.#pool.set(size, list = []);
    list.push(buffer);
    this.#poolOrder.add(buffer);
    this.#pooled += size;
    while (this.#pooled > this.#poolLimit && this.#poolOrder.size) {
      const old = this.#poolOrder.values().next().value!;
      this.#poolOrder.delete(old);
      const l = this.#pool.get(old.size)!;
      l.splice(l.indexOf(old), 1);
      this.#pooled -= old.size;
      this.flush();
      old.destroy();
      this.#groups.clear(); // cached bind groups may reference it
    }
  }

  /** Destroys every pooled (freed) buffer. */
  trim(): void {
    this.flush();
    for (const b of this.#poolOrder) b.destroy();
    this.#groups.clear();
    this.#pool.clear();
    this.#poolOrder.clear();
    this.#pooled = 0;
  }

  /** Live, peak and pooled GPU bytes. */
  memory(): MemoryStats {
    return { liveBytes: this.#live, peakBytes: this.#peak, pooledBytes: this.#pooled };
  }

  /** Sets the peak to the current live bytes. */
  resetPeak(): void {
    this.#peak = this.#live;
  }

  /**
   * Runs `fn`, timing every dispatch it records with timestamp queries, and
   * returns the summed GPU time of those dispatches in milliseconds.
   * Requires `timestamp-query` ({@linkcode Gpu.hasTimestamps}).
   */
  async profile(fn: () => void, maxDispatches = 2048): Promise<number> {
    if (!this.hasTimestamps) throw new Error("This device has no timestamp-query feature");
    if (!(maxDispatches >= 1 && maxDispatches <= 2048)) {
      throw new RangeError(
        `profile(): maxDispatches must be in 1..2048 (a query set holds 4096), got ${maxDispatches}`,
      );
    }
    this.flush();
    const capacity = maxDispatches * 2;
    const set = this.device.createQuerySet({ type: "timestamp", count: capacity });
    const prof = { set, next: 0, capacity };
    this.#profile = prof;
    try {
      fn();
    } finally {
      this.#profile = undefined;
    }
    const used = prof.next; // only slots that dispatches wrote hold timestamps
    if (used === 0) {
      set.destroy();
      return 0;
    }
    const resolve = this.device.createBuffer({
      size: used * 8,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    this.encoder().resolveQuerySet(set, 0, used, resolve, 0);
    const bytes = await this.read(resolve, used * 8);
    resolve.destroy();
    set.destroy();
    const t = new BigUint64Array(bytes);
    let ns = 0n;
    for (let i = 0; i + 1 < used; i += 2) {
      if (t[i + 1] > t[i]) ns += t[i + 1] - t[i];
    }
    return Number(ns) / 1e6;
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

  #bufferId(b: GPUBuffer): number {
    let id = this.#ids.get(b);
    if (id === undefined) this.#ids.set(b, id = this.#nextId++);
    return id;
  }

  #arenaStaging(a: number): Uint8Array {
    while (this.#arenas.length <= a) {
      this.#arenas.push(this.device.createBuffer({
        size: ARENA_SLOTS * UNIFORM_BYTES,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        label: `uniform arena ${this.#arenas.length}`,
      }));
      this.#staging.push(new Uint8Array(ARENA_SLOTS * UNIFORM_BYTES));
    }
    return this.#staging[a];
  }

  #countMessage(kernel: Kernel, got: number): string {
    const used = kernel.bindings.filter((d) => d.kind !== "uniform").map((d) => d.binding);
    return `${kernel.label}: expected ${used.length} storage buffers, got ${got}. Each entry point ` +
      `binds only the variables it uses (here @binding ${used.join(", ")}), in @binding order; ` +
      `see parseBindings() in src/gpu/shader.ts`;
  }

  #track(p: Promise<GPUError | null>, label: string): void {
    this.#errors.push(p);
    this.#errorLabels.push(label);
  }

  async #raiseErrors(): Promise<void> {
    if (!this.#errors.length) return;
    const errs = await Promise.all(this.#errors);
    const labels = this.#errorLabels;
    this.#errors = [];
    this.#errorLabels = [];
    const i = errs.findIndex((e) => e);
    if (i >= 0) throw new Error(`GPU error in ${labels[i]}: ${errs[i]!.message}`);
  }

  #checkAlive(): void {
    if (this.#lost) throw new Error(this.#lost);
  }
}

/** Rounds `n` up to a multiple of `a`. */
export function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
