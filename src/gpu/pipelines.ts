/**
 * Kernels: the shader sources (preloaded from the manifest so pipelines can be
 * made synchronously), the compute pipeline cache with explicit per-entry-point
 * bind group layouts and uniform layouts, and the bind group cache.
 *
 * @module
 */

import { SHADER_FILES } from "./manifest.ts";
import {
  type BindingDecl,
  loadShaderSource,
  type ParamLayout,
  parseBindings,
  parseParamLayout,
  preprocess,
  resolveIncludes,
} from "./shader.ts";
import { UNIFORM_BYTES } from "./params.ts";

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
  /** The uniform struct the entry point reads (`undefined`: it takes no params). */
  readonly params: ParamLayout | undefined;
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

/** Records a pending error scope result under a label (see `Gpu`'s debug mode). */
export type TrackError = (scope: Promise<GPUError | null>, label: string) => void;

/** Shader sources and the pipelines built from them, one per distinct spec. */
export class PipelineCache {
  #device: GPUDevice;
  #track: TrackError;
  #pipelines = new Map<string, Kernel>();
  #shaders = new Map<string, { source?: string; error?: Error }>();

  /**
   * @param device Device to build pipelines on.
   * @param track Receives the validation scope of each pipeline creation.
   */
  constructor(device: GPUDevice, track: TrackError) {
    this.#device = device;
    this.#track = track;
  }

  /** Loads every shader of the manifest (a failure is kept and raised when that shader is used). */
  async preload(): Promise<void> {
    const results = await Promise.allSettled(SHADER_FILES.map((n) => loadShaderSource(n)));
    results.forEach((r, i) => {
      this.#shaders.set(
        SHADER_FILES[i],
        r.status === "fulfilled" ? { source: r.value } : { error: r.reason as Error },
      );
    });
  }

  /**
   * Returns (and caches) the pipeline for a kernel spec.
   *
   * @throws {Error} For a shader not in the manifest or one that failed to load.
   * @throws {SyntaxError} For bad bindings or an unsupported uniform struct.
   */
  kernel(spec: KernelSpec): Kernel {
    const key = specKey(spec);
    const hit = this.#pipelines.get(key);
    if (hit) return hit;
    const entry = this.#shaders.get(spec.shader);
    if (!entry) throw new Error(`Unknown shader "${spec.shader}" (not in src/gpu/manifest.ts)`);
    if (entry.error) throw entry.error;
    const source = resolveIncludes(entry.source!, (n) => this.#shaders.get(n)?.source);
    const code = preprocess(source, spec.defines);
    const label = `${spec.shader}:${spec.entry}` +
      (spec.defines ? ` ${JSON.stringify(spec.defines)}` : "") +
      (spec.constants ? ` ${JSON.stringify(spec.constants)}` : "");
    const bindings = parseBindings(code, spec.entry);
    let params: ParamLayout | undefined;
    if (bindings.some((b) => b.kind === "uniform")) {
      try {
        params = parseParamLayout(code, UNIFORM_BYTES);
      } catch (e) {
        throw new SyntaxError(`${label} (shaders/${spec.shader}.wgsl): ${(e as Error).message}`);
      }
    }
    const device = this.#device;
    const layout = device.createBindGroupLayout({
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
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ label, code });
    const pipeline = device.createComputePipeline({
      label,
      layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: spec.entry, constants: spec.constants },
    });
    this.#track(device.popErrorScope(), `creating ${label}`);
    const k: Kernel = { id: this.#pipelines.size, label, pipeline, layout, bindings, params };
    this.#pipelines.set(key, k);
    return k;
  }
}

/**
 * The cache key of a spec: shader, entry, then the defines and constants in their key order
 * (as `JSON.stringify` of them would order them), joined with separators no WGSL name or
 * number contains. Built per dispatch, so it avoids `JSON.stringify`.
 */
function specKey(spec: KernelSpec): string {
  let key = spec.shader + "\u0001" + spec.entry + "\u0001";
  const d = spec.defines, c = spec.constants;
  if (d) { for (const k in d) key += k + "\u0002" + d[k] + "\u0003"; }
  key += "\u0001";
  if (c) { for (const k in c) key += k + "\u0002" + c[k] + "\u0003"; }
  return key;
}

const MAX_CACHED_GROUPS = 8192;

/** One cached bind group and the key it was made for. */
interface GroupEntry {
  /** `[kernel id, uniform arena, then per storage binding: buffer id, offset, size]`. */
  readonly key: Float64Array;
  readonly hash: number;
  readonly group: GPUBindGroup;
}

/**
 * Bind groups cached by (kernel, uniform arena, buffers and ranges), keyed by numbers: the
 * kernel's id, the arena's index, and per storage binding the buffer's id (unique per
 * `GPUBuffer` object, never reused), offset and size. A lookup builds no string: it hashes the
 * numbers into a scratch key and compares it with the entries of that hash. When a buffer is
 * destroyed, {@linkcode BindGroupCache.evict} drops every group that binds it; the cache holds
 * at most 8192 groups (it starts over when full).
 */
export class BindGroupCache {
  #device: GPUDevice;
  #track: TrackError | undefined;
  #maxBinding: number;
  #byHash = new Map<number, GroupEntry[]>();
  #byBuffer = new Map<number, GroupEntry[]>();
  #size = 0;
  #scratch = new Float64Array(64);

  /**
   * @param device Device to create bind groups on.
   * @param track Receives the validation scope of each bind group creation (a buffer without
   *   STORAGE usage, a range past the buffer's end), labelled with the kernel's name.
   */
  constructor(device: GPUDevice, track?: TrackError) {
    this.#device = device;
    this.#track = track;
    this.#maxBinding = device.limits.maxStorageBufferBindingSize;
  }

  /** Bind groups cached now. */
  get size(): number {
    return this.#size;
  }

  /**
   * The bind group of `kernel` with `buffers` (storage bindings in `@binding` order) and the
   * uniform arena `arena` (index `arenaIndex`, or −1 when the entry point takes no uniform),
   * created on a miss.
   *
   * @param id A stable number per buffer object, never reused (`BufferPool.id`).
   * @throws {TypeError} When fewer buffers than storage bindings are given.
   * @throws {RangeError} When a storage binding is larger than the device's
   *   `maxStorageBufferBindingSize` (naming the kernel, the binding and both sizes).
   */
  get(
    kernel: Kernel,
    buffers: readonly Binding[],
    arenaIndex: number,
    arena: GPUBuffer | undefined,
    id: (b: GPUBuffer) => number,
  ): GPUBindGroup {
    const n = 2 + 3 * buffers.length;
    if (this.#scratch.length < n) this.#scratch = new Float64Array(2 * n);
    const key = this.#scratch;
    key[0] = kernel.id;
    key[1] = arenaIndex;
    let h = Math.imul(kernel.id + 1, 0x9e3779b1) ^ (arenaIndex + 2);
    for (let i = 0, j = 2; i < buffers.length; i++, j += 3) {
      const b = buffers[i];
      let bid: number, off: number, size: number;
      if (b instanceof GPUBuffer) {
        bid = id(b), off = 0, size = -1;
      } else {
        bid = id(b.buffer), off = b.offset ?? 0, size = b.size ?? -1;
      }
      key[j] = bid;
      key[j + 1] = off;
      key[j + 2] = size;
      h = Math.imul(h ^ bid, 0x85ebca6b) ^ Math.imul(off + 1, 0xc2b2ae35) ^ (size + 3);
    }
    const bucket = this.#byHash.get(h);
    if (bucket) {
      for (const e of bucket) {
        if (e.key.length !== n) continue;
        let same = true;
        for (let i = 0; i < n && same; i++) same = e.key[i] === key[i];
        if (same) return e.group;
      }
    }
    const group = this.#create(kernel, buffers, arena);
    if (this.#size >= MAX_CACHED_GROUPS) this.clear();
    const entry: GroupEntry = { key: key.slice(0, n), hash: h, group };
    const list = this.#byHash.get(h);
    if (list) list.push(entry);
    else this.#byHash.set(h, [entry]);
    for (let j = 2; j < n; j += 3) {
      const bid = entry.key[j], refs = this.#byBuffer.get(bid);
      if (!refs) this.#byBuffer.set(bid, [entry]);
      else if (refs[refs.length - 1] !== entry) refs.push(entry);
    }
    this.#size++;
    return group;
  }

  /** Drops every cached group that binds the buffer with id `bufferId` (it is being destroyed). */
  evict(bufferId: number): void {
    const refs = this.#byBuffer.get(bufferId);
    if (!refs) return;
    this.#byBuffer.delete(bufferId);
    for (const e of refs) {
      const bucket = this.#byHash.get(e.hash);
      const i = bucket ? bucket.indexOf(e) : -1;
      if (i < 0) continue; // already dropped through another of its buffers
      bucket!.splice(i, 1);
      if (!bucket!.length) this.#byHash.delete(e.hash);
      this.#size--;
    }
  }

  /** Forgets every cached group. */
  clear(): void {
    this.#byHash.clear();
    this.#byBuffer.clear();
    this.#size = 0;
  }

  #create(kernel: Kernel, buffers: readonly Binding[], uniform: GPUBuffer | undefined) {
    const entries: GPUBindGroupEntry[] = [];
    let j = 0;
    for (const decl of kernel.bindings) {
      if (decl.kind === "uniform") {
        entries.push({
          binding: decl.binding,
          resource: { buffer: uniform!, offset: 0, size: UNIFORM_BYTES },
        });
      } else {
        const b = buffers[j++];
        if (!b) throw new TypeError(bufferCountMessage(kernel, buffers.length));
        const bytes = b instanceof GPUBuffer ? b.size : (b.size ?? b.buffer.size - (b.offset ?? 0));
        const max = this.#maxBinding;
        if (bytes > max) {
          throw new RangeError(
            `${kernel.label}: @binding(${decl.binding}) is ${bytes} bytes, over this device's ` +
              `maxStorageBufferBindingSize (${max} bytes); bind it in ranges (row chunks)`,
          );
        }
        entries.push({
          binding: decl.binding,
          resource: b instanceof GPUBuffer ? { buffer: b } : b,
        });
      }
    }
    // The label puts the kernel's name into any later validation error about this group.
    if (this.#track) this.#device.pushErrorScope("validation");
    const group = this.#device.createBindGroup({
      label: kernel.label,
      layout: kernel.layout,
      entries,
    });
    if (this.#track) {
      this.#track(this.#device.popErrorScope(), `${kernel.label} (binding its buffers)`);
    }
    return group;
  }
}

/**
 * The message for a wrong number of storage buffers: which bindings the entry point uses.
 *
 * @param got Number of buffers passed.
 */
export function bufferCountMessage(kernel: Kernel, got: number): string {
  const used = kernel.bindings.filter((d) => d.kind !== "uniform").map((d) => d.binding);
  return `${kernel.label}: expected ${used.length} storage buffers, got ${got}. Each entry point ` +
    `binds only the variables it uses (here @binding ${used.join(", ")}), in @binding order; ` +
    `see parseBindings() in src/gpu/shader.ts`;
}
