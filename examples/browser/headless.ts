/**
 * Runs the page in headless Chromium and reads what it printed, through the DevTools protocol:
 * starts `chromium --headless=new` with WebGPU enabled on a CPU driver, opens the page, waits
 * until `<body data-status>` leaves "loading", and returns the status, the text of
 * `<pre id="out">`, the JSON of `<pre id="result">`, and the page's console messages and
 * exceptions. test/browser_test.ts uses it; run it alone to see the page's output:
 *
 *   deno run -A examples/browser/headless.ts [--flags "--use-webgpu-adapter=swiftshader ..."]
 *
 * @module
 */

import { scriptArgs } from "../../src/cli/script_args.ts";
import { bundle, serveRepo } from "./serve.ts";

/** Chromium flags that enable WebGPU without a GPU (the variants that were tried: README.md). */
export const WEBGPU_FLAGS: readonly string[] = [
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan,WebGPU",
  "--use-webgpu-adapter=swiftshader",
];

/** What the page showed. */
export interface PageResult {
  /** `document.body.dataset.status`: "done", "error", or "loading" on a timeout. */
  status: string;
  /** The text of `<pre id="out">`. */
  text: string;
  /** The JSON of `<pre id="result">` (a `QuickstartResult`), or undefined when absent. */
  result: unknown;
  /** Console messages and uncaught exceptions of the page, in order. */
  console: string[];
}

/** The Chromium binary on PATH (`chromium`, `chromium-browser`, `google-chrome`), if any. */
export function findChromium(): string | undefined {
  for (const name of ["chromium", "chromium-browser", "google-chrome"]) {
    for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
      try {
        if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
      } catch {
        // not there
      }
    }
  }
  return undefined;
}

/**
 * Opens `url` in headless Chromium with `flags` and waits up to `timeoutMs` for the page to
 * finish.
 *
 * @throws {Error} When Chromium does not start or its DevTools endpoint does not answer.
 */
export async function runPage(
  url: string,
  options: { chromium?: string; flags?: readonly string[]; timeoutMs?: number } = {},
): Promise<PageResult> {
  const bin = options.chromium ?? findChromium();
  if (!bin) throw new Error("no chromium on PATH (apt-get install -y chromium)");
  const profile = await Deno.makeTempDir({ prefix: "dms_chromium_" });
  const child = new Deno.Command(bin, {
    args: [
      "--headless=new",
      "--no-sandbox",
      "--no-first-run",
      "--remote-debugging-port=0",
      `--user-data-dir=${profile}`,
      ...(options.flags ?? WEBGPU_FLAGS),
      "about:blank",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    const ws = await devtoolsSocket(child.stderr);
    return await drive(ws, url, options.timeoutMs ?? 120_000);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}

/** Reads Chromium's stderr until it names its DevTools endpoint, then connects to a page. */
async function devtoolsSocket(stderr: ReadableStream<Uint8Array>): Promise<string> {
  const reader = stderr.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += value;
    const m = seen.match(/DevTools listening on (ws:\/\/[^\s]+)/);
    if (m) {
      // keep draining stderr so Chromium never blocks on a full pipe
      (async () => {
        while (!(await reader.read()).done) { /* drain */ }
      })().catch(() => {});
      const base = new URL(m[1]);
      const list = await (await fetch(`http://${base.host}/json/list`)).json() as {
        type: string;
        webSocketDebuggerUrl: string;
      }[];
      const page = list.find((t) => t.type === "page");
      if (!page) throw new Error("chromium: no page target");
      return page.webSocketDebuggerUrl;
    }
  }
  throw new Error(`chromium did not report a DevTools endpoint; its stderr:\n${seen}`);
}

async function drive(wsUrl: string, url: string, timeoutMs: number): Promise<PageResult> {
  const ws = new WebSocket(wsUrl);
  await new Promise((ok, fail) => {
    ws.onopen = ok;
    ws.onerror = () => fail(new Error(`cannot connect to ${wsUrl}`));
  });
  let id = 0;
  const waiting = new Map<number, (r: Record<string, unknown>) => void>();
  const messages: string[] = [];
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.id && waiting.has(msg.id)) {
      waiting.get(msg.id)!(msg);
      waiting.delete(msg.id);
    } else if (msg.method === "Runtime.consoleAPICalled") {
      const args = msg.params.args.map((a: { value?: unknown; description?: string }) =>
        a.value ?? a.description
      );
      messages.push(`console.${msg.params.type}: ${args.join(" ")}`);
    } else if (msg.method === "Runtime.exceptionThrown") {
      const d = msg.params.exceptionDetails;
      messages.push(`exception: ${d.exception?.description ?? d.text}`);
    } else if (msg.method === "Log.entryAdded") {
      messages.push(`log.${msg.params.entry.level}: ${msg.params.entry.text}`);
    }
  };
  const send = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<Record<string, unknown>>((ok) => {
      waiting.set(++id, ok);
      ws.send(JSON.stringify({ id, method, params }));
    });
  const evaluate = async (expression: string): Promise<unknown> => {
    const r = await send("Runtime.evaluate", { expression, returnByValue: true });
    return (r.result as { result?: { value?: unknown } })?.result?.value;
  };
  try {
    await send("Runtime.enable");
    await send("Log.enable");
    await send("Page.navigate", { url });
    const deadline = Date.now() + timeoutMs;
    let status = "loading";
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      status = String(await evaluate("document.body?.dataset.status ?? 'loading'"));
      if (status !== "loading") break;
    }
    const text = String(await evaluate("document.getElementById('out')?.textContent ?? ''"));
    const json = String(await evaluate("document.getElementById('result')?.textContent ?? ''"));
    return { status, text, result: json ? JSON.parse(json) : undefined, console: messages };
  } finally {
    ws.close();
  }
}

if (import.meta.main) {
  const args = scriptArgs(
    "headless",
    `usage: deno run -A examples/browser/headless.ts [--flags "..."]

  --flags "..."   Chromium's WebGPU flags, space-separated (default: ${WEBGPU_FLAGS.join(" ")})`,
    { flags: { type: "string" } },
  );
  const flagsArg = args.str("flags");
  await bundle();
  const { url, server } = serveRepo(0);
  try {
    const flags = flagsArg ? flagsArg.split(/\s+/).filter(Boolean) : WEBGPU_FLAGS;
    const r = await runPage(url, { flags });
    console.log(`status: ${r.status}\n${r.text}`);
    for (const m of r.console) console.log(m);
  } finally {
    await server.shutdown();
  }
}
