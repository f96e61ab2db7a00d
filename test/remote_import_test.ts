/**
 * Proves the package works when imported from a remote URL (as from JSR):
 * serves the checkout over a loopback HTTP server, imports `mod.ts` from it,
 * and runs a kernel whose WGSL is fetched over HTTP too.
 */
import assert from "node:assert/strict";
import { GPU_TEST } from "./_util.ts";

const ROOT = new URL("../", import.meta.url);
const TYPES: Record<string, string> = {
  ".ts": "application/typescript",
  ".wgsl": "text/plain",
  ".json": "application/json",
};

Deno.test({
  name: "mod.ts imported over HTTP loads its shaders over HTTP and runs a kernel",
  ...GPU_TEST,
  fn: async () => {
    const served: string[] = [];
    const ac = new AbortController();
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
      async (req) => {
        const path = decodeURIComponent(new URL(req.url).pathname);
        if (path.includes("..") || !/^\/(mod\.ts|src\/|shaders\/)/.test(path)) {
          return new Response("not found", { status: 404 });
        }
        try {
          const body = await Deno.readFile(new URL(`.${path}`, ROOT));
          served.push(path);
          const ext = path.slice(path.lastIndexOf("."));
          return new Response(body, {
            headers: { "content-type": TYPES[ext] ?? "application/octet-stream" },
          });
        } catch {
          return new Response("not found", { status: 404 });
        }
      },
    );
    try {
      const { port } = server.addr as Deno.NetAddr;
      // A child process imports mod.ts over HTTP (with --no-lock, so the loopback URLs never
      // land in deno.lock) and runs a kernel whose WGSL is fetched over HTTP too.
      const script = `
        const mod = await import("http://127.0.0.1:${port}/mod.ts");
        const ops = await import("http://127.0.0.1:${port}/src/ops/mod.ts");
        const gpu = await mod.getGpu();
        const a = mod.Tensor.fromArray(gpu, [1, 2, 3], [3]);
        const b = mod.Tensor.fromArray(gpu, [0.5, 0.25, 4], [3]);
        console.log(JSON.stringify([...(await ops.add(a, b).toArray())]));`;
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["eval", "--no-lock", script],
        cwd: ROOT,
        env: { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      assert.deepEqual(JSON.parse(text.trim().split("\n").at(-1)!), [1.5, 2.25, 7]);
      assert.ok(served.includes("/mod.ts"), "mod.ts came over HTTP");
      assert.ok(served.includes("/shaders/elementwise.wgsl"), "the shader came over HTTP");
    } finally {
      ac.abort();
      await server.finished;
    }
  },
});
