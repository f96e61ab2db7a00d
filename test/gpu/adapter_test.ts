/**
 * What kind of adapter WebGPU gives (src/gpu/adapter.ts): a CPU driver through OpenGL gets the
 * one-line hint to install Mesa's Vulkan CPU driver; lavapipe, a GPU, and llvmpipe with
 * `shader-f16` do not.
 */
import assert from "node:assert/strict";
import {
  probeAdapter,
  slowAdapterHint,
  summarizeAdapter,
  VULKAN_CPU_DRIVER_INSTALL,
} from "../../src/gpu/adapter.ts";
import { gpu } from "../_util.ts";

const info = (description: string, isFallbackAdapter = false) =>
  ({ description, vendor: "", architecture: "", device: "", isFallbackAdapter }) as GPUAdapterInfo;
const features = (...names: string[]) => new Set(names);

/** Runs `fn` with DENO_WEBGPU_BACKEND set to `value` (or unset), restoring it after. */
function withBackend<T>(value: string | undefined, fn: () => T): T {
  const old = Deno.env.get("DENO_WEBGPU_BACKEND");
  if (value === undefined) Deno.env.delete("DENO_WEBGPU_BACKEND");
  else Deno.env.set("DENO_WEBGPU_BACKEND", value);
  try {
    return fn();
  } finally {
    if (old === undefined) Deno.env.delete("DENO_WEBGPU_BACKEND");
    else Deno.env.set("DENO_WEBGPU_BACKEND", old);
  }
}

Deno.test("summarizeAdapter() tells a CPU driver through OpenGL from lavapipe and from a GPU", () => {
  withBackend(undefined, () => {
    const llvmpipeGl = summarizeAdapter(info("llvmpipe (LLVM 15.0.6, 256 bits)", true), features());
    assert.deepEqual(llvmpipeGl, {
      description: "llvmpipe (LLVM 15.0.6, 256 bits)",
      cpu: true,
      f16: false,
      cpuGl: true,
    });
    // lavapipe describes itself as llvmpipe too, but offers shader-f16
    const lavapipe = summarizeAdapter(
      info("llvmpipe (LLVM 15.0.6, 256 bits)", true),
      features(
        "shader-f16",
        "timestamp-query",
      ),
    );
    assert.equal(lavapipe.cpu, true);
    assert.equal(lavapipe.cpuGl, false);
    const gpuNoF16 = summarizeAdapter(info("NVIDIA GeForce GTX 1080"), features());
    assert.deepEqual([gpuNoF16.cpu, gpuNoF16.cpuGl], [false, false]);
    assert.equal(summarizeAdapter(info("SwiftShader Device"), features()).cpuGl, true);
    assert.equal(summarizeAdapter(info(""), features()).description, "unknown adapter");
    // Chromium leaves the description empty and names SwiftShader in the architecture
    const chrome = summarizeAdapter(
      { ...info(""), vendor: "google", architecture: "swiftshader" } as GPUAdapterInfo,
      features("shader-f16"),
    );
    assert.deepEqual(chrome, {
      description: "google swiftshader",
      cpu: true,
      f16: true,
      cpuGl: false,
    });
  });
  // DENO_WEBGPU_BACKEND=gl names the backend outright: a CPU adapter with f16 is then GL too
  withBackend("gl", () => {
    const a = summarizeAdapter(
      info("llvmpipe (LLVM 15.0.6, 256 bits)", true),
      features("shader-f16"),
    );
    assert.equal(a.cpuGl, true);
    assert.equal(summarizeAdapter(info("NVIDIA H100"), features("shader-f16")).cpuGl, false);
  });
});

Deno.test("slowAdapterHint() is one line naming the install step, only for a CPU GL adapter", () => {
  const gl = {
    description: "llvmpipe (LLVM 15.0.6, 256 bits)",
    cpu: true,
    f16: false,
    cpuGl: true,
  };
  const hint = slowAdapterHint(gl);
  assert.ok(hint);
  assert.equal(hint.split("\n").length, 1);
  assert.ok(hint.includes(VULKAN_CPU_DRIVER_INSTALL), hint);
  assert.ok(hint.includes("llvmpipe (LLVM 15.0.6, 256 bits)"), hint);
  assert.doesNotMatch(hint, /^(error|warning)/i);
  assert.equal(slowAdapterHint({ ...gl, f16: true, cpuGl: false }), undefined);
  assert.equal(
    slowAdapterHint({ description: "NVIDIA H100", cpu: false, f16: true, cpuGl: false }),
    undefined,
  );
});

Deno.test({
  name: "probeAdapter() and Gpu.adapter describe the same adapter as navigator.gpu",
  sanitizeResources: false,
  fn: async () => {
    const a = await navigator.gpu.requestAdapter();
    assert.ok(a);
    const probed = await probeAdapter();
    assert.ok(probed);
    assert.equal(probed.description, a.info.description);
    assert.equal(probed.f16, a.features.has("shader-f16"));
    assert.deepEqual(gpu.adapter, probed);
    assert.equal(gpu.description, probed.description);
  },
});
