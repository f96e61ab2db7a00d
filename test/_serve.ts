/**
 * Serves the checkout over a loopback HTTP server and runs a child `deno eval` that imports
 * from it, as a user importing the package from JSR would. Shared by the remote-import tests.
 */

const ROOT = new URL("../", import.meta.url);

/** A running loopback server over the checkout, and the paths it has served. */
export interface CheckoutServer {
  /** `http://127.0.0.1:<port>` (no trailing slash). */
  origin: string;
  /** Every path served with 200, in order. */
  served: string[];
  /** Runs `script` in a child `deno eval`; returns the last stdout line, throws with stderr. */
  evalChild(script: string): Promise<string>;
  /** Stops the server. */
  close(): Promise<void>;
}

/** Serves files of the checkout whose path matches `allowed` (a 404 otherwise, and for `..`). */
export function serveCheckout(allowed: RegExp): CheckoutServer {
  const served: string[] = [];
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    async (req) => {
      const path = decodeURIComponent(new URL(req.url).pathname);
      if (path.includes("..") || !allowed.test(path)) {
        return new Response("not found", { status: 404 });
      }
      try {
        const body = await Deno.readFile(new URL(`.${path}`, ROOT));
        served.push(path);
        const type = path.endsWith(".ts")
          ? "application/typescript"
          : path.endsWith(".json")
          ? "application/json"
          : path.endsWith(".wgsl")
          ? "text/plain"
          : "application/octet-stream";
        return new Response(body, { headers: { "content-type": type } });
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  const origin = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  return {
    origin,
    served,
    async evalChild(script) {
      // --no-lock: the loopback URLs never land in deno.lock. --reload=<origin>: Deno caches
      // remote modules by URL, so a port drawn again in a later run would otherwise import an
      // old cached copy without asking this server (a CI failure, and a stale test).
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["eval", "--no-lock", `--reload=${origin}`, script],
        cwd: ROOT,
        env: { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (out.code !== 0) {
        throw new Error(
          `child deno eval exited ${out.code}:\n${new TextDecoder().decode(out.stderr)}`,
        );
      }
      return new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!;
    },
    async close() {
      ac.abort();
      await server.finished;
    },
  };
}
