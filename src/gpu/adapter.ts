/**
 * Adapter and device acquisition for {@linkcode ./device.ts}: the adapter request (with the
 * message that says how to get one), the features and limits the device asks for, what kind of
 * adapter it is ({@linkcode AdapterSummary}: a CPU driver? OpenGL without `shader-f16`?), the
 * one-line hint for the slow case ({@linkcode slowAdapterHint}), and the host's memory.
 *
 * Nothing here prints: `getGpu()` stays silent, and the entry points a person runs (the demo,
 * the test suite's preload) print {@linkcode slowAdapterHint} when it applies.
 *
 * @example Print the hint when WebGPU runs on llvmpipe through OpenGL
 * ```ts
 * import { getGpu } from "./device.ts";
 * import { slowAdapterHint } from "./adapter.ts";
 * const gpu = await getGpu();
 * const hint = slowAdapterHint(gpu.adapter);
 * if (hint) console.log(hint);
 * ```
 *
 * @module
 */

/** What kind of adapter the device runs on. */
export interface AdapterSummary {
  /** The adapter's description (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)", "NVIDIA H100"). */
  readonly description: string;
  /** True for a CPU driver (lavapipe, llvmpipe, SwiftShader, softpipe): memory is the host's. */
  readonly cpu: boolean;
  /** True when the adapter offers `shader-f16`. */
  readonly f16: boolean;
  /**
   * True for a CPU driver reached through OpenGL (Mesa's llvmpipe GL driver, which is what
   * WebGPU falls back to on Linux without a Vulkan driver): f32 only, and every kernel with
   * workgroup barriers takes seconds to minutes to compile on first use. Detected as a CPU
   * adapter without `shader-f16` (Mesa's Vulkan CPU driver, lavapipe, offers it), or as a CPU
   * adapter with `DENO_WEBGPU_BACKEND=gl` set, or forced with {@linkcode GpuOptions.cpuGl}.
   *
   * Kernels route to their barrier-free variants here (the first dispatch of each pipeline is
   * where llvmpipe GL compiles it; seconds measured with an empty shader cache by
   * `bench/first_dispatch.ts`): paged attention to `paged_simple` (the flash kernels: 182 s
   * prefill, 146 s decode), sampling to the `naive` twin (0.3-0.5 s against 7-13 s for the
   * `fast` kernel at WG 32, 164 s at WG 256 under top-k/top-p, 5 s for `split`), and products
   * of at most 2^24 multiply-adds with more than 8 rows to the `naive` matmul (0.03 s against
   * 2.7-5 s for `tiled`).
   */
  readonly cpuGl: boolean;
}

/** The package README's one extra step for machines without a GPU. */
export const VULKAN_CPU_DRIVER_INSTALL = "apt-get install -y mesa-vulkan-drivers";

/**
 * Summarises a WebGPU adapter's info and features.
 *
 * @param info `adapter.info`.
 * @param features `adapter.features`.
 */
export function summarizeAdapter(
  info: GPUAdapterInfo,
  features: { has(name: string): boolean },
): AdapterSummary {
  // Browsers leave `description` empty (Chromium on SwiftShader: vendor "google",
  // architecture "swiftshader").
  const description = info.description || `${info.vendor} ${info.architecture}`.trim() ||
    "unknown adapter";
  const cpu = (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true ||
    /llvmpipe|lavapipe|swiftshader|softpipe/i.test(`${info.description} ${info.architecture}`);
  const f16 = features.has("shader-f16");
  const forcedGl = /^gl/i.test(readEnv("DENO_WEBGPU_BACKEND") ?? "");
  return { description, cpu, f16, cpuGl: cpu && (!f16 || forcedGl) };
}

/**
 * The one line to print at the start of a command when the adapter is a CPU driver reached
 * through OpenGL (see {@linkcode AdapterSummary.cpuGl}), else undefined.
 *
 * @param adapter `gpu.adapter`.
 */
export function slowAdapterHint(adapter: AdapterSummary): string | undefined {
  if (!adapter.cpuGl) return undefined;
  return `note: WebGPU runs on ${adapter.description} through OpenGL: f32 only, and kernels ` +
    `with workgroup barriers compile for minutes (attention, sampling and small products ` +
    `avoid them here, the tests do not); for Mesa's Vulkan CPU driver, run as root: ` +
    VULKAN_CPU_DRIVER_INSTALL;
}

/** Options for `getGpu` / `Gpu.create` in ./device.ts, and for {@linkcode requestDevice}. */
export interface GpuOptions {
  /** Wrap every dispatch in validation/out-of-memory error scopes and raise errors with the kernel's name. Default: `DMS_DEBUG=1` in the environment. */
  debug?: boolean;
  /**
   * Treat the adapter as a CPU driver reached through OpenGL ({@linkcode AdapterSummary.cpuGl}),
   * so that kernels take their barrier-free routes, or not. Default: detected. The tests force
   * it on lavapipe (Vulkan) to run the OpenGL route where CI runs.
   */
  cpuGl?: boolean;
  /** Request `shader-f16` when the adapter offers it. Default true. */
  allowF16?: boolean;
  /**
   * Route the ops as on a GPU even on a CPU adapter (`Gpu.cpuRoutes` false): the fused GEMV
   * kernels, deferred norms and large matmul tiles a GPU takes, which a CPU adapter otherwise
   * leaves for the readable chains. Default false. The tests use it to run the GPU's decode path
   * where CI runs.
   */
  gpuRoutes?: boolean;
  /** Adapter power preference. */
  powerPreference?: GPUPowerPreference;
  /** Bytes of freed buffers kept for reuse before the oldest are destroyed. Default 512 MiB. */
  poolLimitBytes?: number;
  /**
   * Live GPU bytes the buffer pool may hold; an allocation past it is refused before it is made
   * (RangeError with the sizes). Default: on a CPU adapter (lavapipe, llvmpipe, SwiftShader),
   * whose memory is the host's, the host's total memory; elsewhere unbounded (WebGPU does not
   * report a GPU's memory: set it to that to have the pool refuse what cannot fit).
   */
  memoryLimitBytes?: number;
}

/**
 * Requests an adapter and a device with the adapter's own limits (those the kernels use),
 * `shader-f16` when offered and allowed, and `timestamp-query` when offered. Of `options`, only
 * `powerPreference`, `allowF16` and `cpuGl` apply here.
 *
 * @throws {Error} When WebGPU is missing or no adapter exists, saying how to get one.
 */
export async function requestDevice(
  options: GpuOptions = {},
): Promise<{ device: GPUDevice; adapter: AdapterSummary }> {
  if (typeof navigator === "undefined" || !("gpu" in navigator) || !navigator.gpu) {
    throw new Error(
      "WebGPU is not available in this runtime. Run with Deno 2 (npx -y deno@2.9.6 ...), " +
        "which ships WebGPU.",
    );
  }
  quietDisplayProbe();
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: options.powerPreference });
  if (!adapter) {
    throw new Error(
      "No WebGPU adapter found. Use a machine with a GPU and a Vulkan/Metal/D3D12 driver, or " +
        `install Mesa's CPU drivers: \`${VULKAN_CPU_DRIVER_INSTALL}\` (Vulkan, lavapipe) ` +
        "or Mesa's llvmpipe GL driver (select it with DENO_WEBGPU_BACKEND=gl).",
    );
  }
  const features: GPUFeatureName[] = [];
  if ((options.allowF16 ?? true) && adapter.features.has("shader-f16")) features.push("shader-f16");
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
  const summary = summarizeAdapter(adapter.info, adapter.features);
  const cpuGl = options.cpuGl ?? summary.cpuGl;
  return { device, adapter: { ...summary, cpuGl } };
}

/**
 * The summary of the adapter WebGPU offers here, without creating a device (or undefined when
 * there is none, or no WebGPU): what a command's preamble needs to print
 * {@linkcode slowAdapterHint}.
 */
export async function probeAdapter(): Promise<AdapterSummary | undefined> {
  if (typeof navigator === "undefined" || !("gpu" in navigator) || !navigator.gpu) return;
  quietDisplayProbe();
  const adapter = await navigator.gpu.requestAdapter();
  return adapter ? summarizeAdapter(adapter.info, adapter.features) : undefined;
}

/**
 * On a machine without a desktop session, the WebGPU backend's display probe (Wayland/X11 via
 * the Vulkan/GL loaders) prints `error: XDG_RUNTIME_DIR is invalid or not set` twice, although
 * compute works. When the variable is unset and the process may set it, point it at the
 * system's temporary folder for this process only (children inherit it), so a healthy run
 * prints no error.
 */
function quietDisplayProbe(): void {
  try {
    const ask = { name: "env", variable: "XDG_RUNTIME_DIR" } as const;
    if (Deno.permissions.querySync(ask).state !== "granted") return;
    if (Deno.env.get("XDG_RUNTIME_DIR")) return;
    Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("TMPDIR") ?? "/tmp");
  } catch {
    // not Deno, or no permission API: leave the environment alone
  }
}

/**
 * The host's total memory in bytes, or Infinity when the process may not read it (no `sys`
 * permission, or not Deno). A model's weights pass through it on their way to any device, so
 * it bounds what `createModel` / `loadModel` accept.
 */
export function hostMemoryBytes(): number {
  try {
    return Deno.systemMemoryInfo().total;
  } catch {
    return Infinity;
  }
}

/**
 * An environment variable, or undefined when unset, not granted (never prompts), or not in Deno.
 */
export function readEnv(name: string): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
      return undefined;
    }
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
