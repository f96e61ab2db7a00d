/**
 * Proves the package works when imported from a remote URL (as from JSR):
 * serves the checkout over a loopback HTTP server, imports `mod.ts` from it,
 * and runs a kernel whose WGSL is fetched over HTTP too.
 */
import assert from "node:assert/strict";
import { GPU_TEST } from "./_util.ts";
import { serveCheckout } from "./_serve.ts";

Deno.test({
  name: "mod.ts imported over HTTP loads its shaders over HTTP and runs a kernel",
  ...GPU_TEST,
  fn: async () => {
    const server = serveCheckout(/^\/(mod\.ts|src\/|shaders\/)/);
    try {
      const line = await server.evalChild(`
        const mod = await import("${server.origin}/mod.ts");
        const ops = await import("${server.origin}/src/ops/mod.ts");
        const gpu = await mod.getGpu();
        const a = mod.Tensor.fromArray(gpu, [1, 2, 3], [3]);
        const b = mod.Tensor.fromArray(gpu, [0.5, 0.25, 4], [3]);
        console.log(JSON.stringify([...(await ops.add(a, b).toArray())]));`);
      assert.deepEqual(JSON.parse(line), [1.5, 2.25, 7]);
      assert.ok(server.served.includes("/mod.ts"), "mod.ts came over HTTP");
      assert.ok(server.served.includes("/src/ops/mod.ts"), "src/ops/mod.ts came over HTTP");
      assert.ok(server.served.includes("/shaders/elementwise.wgsl"), "the shader came over HTTP");
    } finally {
      await server.close();
    }
  },
});
