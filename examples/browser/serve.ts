/**
 * `deno task browser`: bundles ./main.ts into ./bundle.js (`deno bundle --platform browser`) and
 * serves the repository root over HTTP, so that the page at `/examples/browser/index.html` loads
 * the bundle and the bundle fetches the kernels from `/shaders/` (the WGSL loader resolves them
 * relative to the module's URL, `../../shaders/` from the bundle, as from `src/gpu/`).
 *
 *   deno task browser [--port 8000]
 *
 * Open the printed address in a browser with WebGPU (Chrome/Chromium 113+).
 *
 * @module
 */

import { scriptArgs } from "../../src/cli/script_args.ts";

const ROOT = new URL("../../", import.meta.url);
const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  wgsl: "text/plain; charset=utf-8",
  json: "application/json",
  svg: "image/svg+xml",
};

/** Bundles ./main.ts into ./bundle.js with Deno's bundler. Throws with its output on failure. */
export async function bundle(): Promise<void> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform",
      "browser",
      "-o",
      new URL("bundle.js", import.meta.url).pathname,
      new URL("main.ts", import.meta.url).pathname,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (r.code !== 0) {
    const text = new TextDecoder().decode(r.stderr) + new TextDecoder().decode(r.stdout);
    throw new Error(`deno bundle examples/browser/main.ts failed (exit ${r.code}):\n${text}`);
  }
}

/**
 * Serves the repository root (read-only, GET only, no paths outside it) on `port` (0: any free
 * port) and returns the page's address and the server.
 */
export function serveRepo(port = 8000): { url: string; server: Deno.HttpServer } {
  const server = Deno.serve({ port, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (path === "/") return Response.redirect(new URL("/examples/browser/index.html", req.url));
    if (req.method !== "GET" || path.split("/").includes("..")) {
      return new Response("not found", { status: 404 });
    }
    try {
      const body = await Deno.readFile(new URL(`.${path}`, ROOT));
      const type = TYPES[path.split(".").pop() ?? ""] ?? "application/octet-stream";
      return new Response(body, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const addr = server.addr as Deno.NetAddr;
  return { url: `http://127.0.0.1:${addr.port}/examples/browser/index.html`, server };
}

if (import.meta.main) {
  const args = scriptArgs(
    "browser",
    `usage: deno task browser [--port N]

  --port N   the port to serve the page on (default 8000; 0: any free port)`,
    { port: { type: "string" } },
  );
  const port = args.int("port", 8000, 0, 65535);
  await bundle();
  const { url } = serveRepo(port);
  console.log(`DMS quickstart page: ${url} (needs a browser with WebGPU; Ctrl-C stops)`);
}
