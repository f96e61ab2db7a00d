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

const MAX_CACHED_GROUPS = 8192;

/** Bind groups cached by (kernel, uniform arena, buffers and ranges). */
export class BindGroupCache {
  #device: GPUDevice;
  #track: TrackError | undefined;
  #groups = new Map<string, GPUBindGroup>();

  /**
   * @param device Device to create bind groups on.
   * @param track Receives the validation scope of each bind group creation (a buffer without
   *   STORAGE usage, a range past the buffer's end), labelled with the kernel's name.
   */
  constructor(device: GPUDevice, track?: TrackError) {
    this.#device = device;
    this.#track = track;
  }

  /**
   * The bind group for `key` (kernel id, uniform arena and buffer ids; built by `Gpu.dispatch`), created on a miss.
   *
   * @param uniform The uniform arena bound (with a dynamic offset) at the uniform binding.
   * @throws {RangeError} When a storage binding is larger than the device's
   *   `maxStorageBufferBindingSize` (naming the kernel, the binding and both sizes).
   */
  get(
    key: string,
    kernel: Kernel,
    buffers: readonly Binding[],
    uniform: GPUBuffer | undefined,
  ): GPUBindGroup {
    let group = this.#groups.get(key);
    if (group) return group;
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
        const bytes = b instanceof GPUBuffer ? b.size : (b.size ?? b.buffer.size - (b.offset ?? 0));
        const max = this.#device.limits.maxStorageBufferBindingSize;
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
    group = this.#device.createBindGroup({ label: kernel.label, layout: kernel.layout, entries });
    if (this.#track) {
      this.#track(this.#device.popErrorScope(), `${kernel.label} (binding its buffers)`);
    }
    if (this.#groups.size >= MAX_CACHED_GROUPS) this.#groups.clear();
    this.#groups.set(key, group);
    return group;
  }

  /** Forgets every cached group (a buffer they reference was destroyed). */
  clear(): void {
    this.#groups.clear();
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
